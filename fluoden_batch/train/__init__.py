"""Training denoisers (DnCNN, FFDNet): data (pairs, clean images, synthetic noise, noisy images for
self-supervised blind-spot training), loop, checkpoints, the ``fluoden train`` command.

Names are imported lazily so that ``fluoden --help`` and config checks do not load torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fluoden_batch.config.train import TrainConfig, TrainConfigError, load_train_config
    from fluoden_batch.train.inference import denoise_whole, resolve_device, validation_psnr
    from fluoden_batch.train.loop import TrainResult, train

_EXPORTS = {
    "TrainConfig": "config",
    "TrainConfigError": "config",
    "load_train_config": "config",
    "denoise_whole": "inference",
    "resolve_device": "inference",
    "validation_psnr": "inference",
    "TrainResult": "loop",
    "train": "loop",
}
__all__ = [
    "TrainConfig",
    "TrainConfigError",
    "TrainResult",
    "denoise_whole",
    "load_train_config",
    "resolve_device",
    "train",
    "validation_psnr",
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = _EXPORTS[name]
        package = (
            "fluoden_batch.config.train" if module == "config" else f"fluoden_batch.train.{module}"
        )
        return getattr(importlib.import_module(package), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
