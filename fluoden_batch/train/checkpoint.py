"""Training checkpoints as safetensors files (no pickle) that resume a run exactly.

Tensors: the model's state dict under ``model.``, the optimizer's per-parameter state
under ``optim.<param index>.<name>`` and the torch RNG states under ``rng.``. Everything
else (step, optimizer hyper-parameters, LR scheduler state, NumPy generator state and the
caller's JSON state such as loss history and config) is one JSON document in the header
under ``"fluoden_checkpoint"``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open
from safetensors.torch import save as serialise

from fluoden_batch.errors import ModelError
from fluoden_batch.models.weights import write_file

__all__ = ["latest_checkpoint", "load_checkpoint", "read_state", "save_checkpoint"]

HEADER_KEY = "fluoden_checkpoint"
_PREFIX = "ckpt_"
_KEEP = 2


def checkpoint_path(directory: Path, step: int) -> Path:
    """File name of the checkpoint taken after ``step`` optimisation steps."""
    return directory / f"{_PREFIX}{step:09d}.safetensors"


def latest_checkpoint(directory: Path) -> Path | None:
    """The checkpoint with the highest step in ``directory``, or None."""
    found = sorted(directory.glob(f"{_PREFIX}*.safetensors")) if directory.is_dir() else []
    return found[-1] if found else None


def save_checkpoint(
    directory: Path,
    *,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    rng: np.random.Generator,
    state: dict[str, Any],
) -> Path:
    """Write a checkpoint atomically and keep only the newest two in ``directory``.

    ``state`` must be JSON-serialisable (floats round-trip exactly through JSON).
    """
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    opt = optimizer.state_dict()
    scalars: dict[str, dict[str, Any]] = {}
    for index, param_state in opt["state"].items():
        for name, value in param_state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{index}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[name] = value
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        for i, cuda_state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = cuda_state
    header = {
        "step": step,
        "optimizer_groups": opt["param_groups"],
        "optimizer_scalars": scalars,
        "scheduler": scheduler.state_dict(),
        "numpy_rng": rng.bit_generator.state,
        "state": state,
    }
    directory.mkdir(parents=True, exist_ok=True)
    path = checkpoint_path(directory, step)
    # atomic, with the umask's mode (safetensors' save_file would force 0600)
    write_file(path, serialise(tensors, metadata={HEADER_KEY: json.dumps(header)}))
    for old in sorted(directory.glob(f"{_PREFIX}*.safetensors"))[:-_KEEP]:
        old.unlink()
    return path


def _read_header(path: Path) -> dict[str, Any]:
    try:
        with safe_open(str(path), framework="pt") as f:
            return json.loads((f.metadata() or {})[HEADER_KEY])
    except (SafetensorError, OSError, ValueError, KeyError) as exc:
        raise ModelError(f"{path}: not a fluoden training checkpoint ({exc})") from exc


def read_state(path: Path) -> dict[str, Any]:
    """The caller's JSON state of a checkpoint, without loading its tensors."""
    return _read_header(path)["state"]


def load_checkpoint(
    path: Path,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    rng: np.random.Generator,
) -> tuple[int, dict[str, Any]]:
    """Restore everything saved by :func:`save_checkpoint` in place.

    Returns
    -------
    step : int
        Optimisation steps already done.
    state : dict
        The caller's JSON state.

    Raises
    ------
    ModelError
        The file is not a readable checkpoint or does not fit ``model``/``optimizer``.
    """
    header = _read_header(path)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise ModelError(f"{path}: unreadable checkpoint tensors ({exc})") from exc
    model_state = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    try:
        model.load_state_dict(model_state)
    except RuntimeError as exc:
        raise ModelError(f"{path}: checkpoint does not fit the model: {exc}") from exc
    per_param: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            per_param.setdefault(int(index), {})[name] = value
    for index, values in header["optimizer_scalars"].items():
        per_param.setdefault(int(index), {}).update(values)
    groups = header["optimizer_groups"]
    for saved, current in zip(groups, optimizer.param_groups, strict=True):
        for name, value in current.items():  # JSON turned tuples (Adam betas) into lists
            if isinstance(value, tuple) and name in saved:
                saved[name] = tuple(saved[name])
    optimizer.load_state_dict({"state": per_param, "param_groups": groups})
    scheduler.load_state_dict(header["scheduler"])
    torch.set_rng_state(tensors["rng.torch"])
    n_cuda = sum(k.startswith("rng.cuda.") for k in tensors)
    cuda_states = [tensors[f"rng.cuda.{i}"] for i in range(n_cuda)]
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states)
    rng.bit_generator.state = header["numpy_rng"]
    return int(header["step"]), header["state"]
