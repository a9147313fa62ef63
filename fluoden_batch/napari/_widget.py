"""A napari dock widget that denoises the selected image layer with fluoden.

The layer's level 0 goes through the Python API (:func:`fluoden_batch.denoise` on a Dask
array: one task per block), block after block in a worker thread
(:func:`napari.qt.threading.thread_worker`), so the progress bar moves per block and napari
stays responsive. The API's :class:`~fluoden_batch.pipeline.progress.Reporter` reports
store runs only (an output path); an array run is lazy, so progress here is counted over
the blocks of the lazy result. The result is added as a new image layer placed like the
input; an error shows as one line in a napari notification.
"""

from __future__ import annotations

import itertools
from collections.abc import Generator
from pathlib import Path
from typing import Any

import dask.array as da
import napari
import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    Label,
    ProgressBar,
    PushButton,
)
from magicgui.widgets.bases import create_widget
from napari.qt.threading import thread_worker
from napari.utils.notifications import show_error, show_info

import fluoden_batch
from fluoden_batch.models.weights import shipped_models

__all__ = ["OTHER_FILE", "DenoiseWidget", "denoise_blocks"]

OTHER_FILE = "file..."
BLOCK_SIDE = 512  # Y/X chunks of an in-memory layer: progress steps on large planes


def denoise_blocks(
    data: Any, model: str, axes: str | None, phase_split: bool = False
) -> Generator[tuple[int, int], None, np.ndarray]:
    """Denoise ``data`` block by block with :func:`fluoden_batch.denoise` (with
    ``phase_split``: its ``--phase-split``).

    Yields
    ------
    done, total : int
        Blocks finished and all blocks (first ``0, total``).

    Returns
    -------
    numpy.ndarray
        The denoised array (the generator's return value).
    """
    if not isinstance(data, da.Array):
        lead = (1,) * (data.ndim - 2)
        data = da.from_array(np.asarray(data), chunks=(*lead, BLOCK_SIDE, BLOCK_SIDE))
    lazy = fluoden_batch.denoise(data, model=model, axes=axes, phase_split=phase_split)
    out = np.empty(lazy.shape, lazy.dtype)
    starts = [np.cumsum((0, *c)) for c in lazy.chunks]
    total = int(np.prod(lazy.numblocks))
    yield 0, total
    for done, index in enumerate(itertools.product(*map(range, lazy.numblocks)), 1):
        where = tuple(slice(s[i], s[i + 1]) for s, i in zip(starts, index, strict=True))
        out[where] = lazy.blocks[index].compute(scheduler="synchronous")
        yield done, total
    return out


class DenoiseWidget(Container):
    """Denoise the chosen image layer with a shipped model or a weights file.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        The viewer whose layers are offered and where the result is added.
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self._viewer = viewer
        self._layer = create_widget(annotation=napari.layers.Image, label="image")
        models = list(shipped_models())
        self._model = ComboBox(label="model", choices=[*models, OTHER_FILE])
        self._file = FileEdit(label="weights file", mode="r", filter="*.safetensors *.zip")
        self._split = CheckBox(
            text="phase split",
            value=False,
            tooltip="denoise the four stride-2 phases of each plane (fluoden denoise "
            "--phase-split): for a camera with strongly correlated noise the model was not "
            "trained on; loses detail on white noise",
        )
        self._run = PushButton(text="Denoise")
        self._progress = ProgressBar(label="blocks", min=0, max=1, value=0)
        self._status = Label(value="")
        super().__init__(
            widgets=[
                self._layer,
                self._model,
                self._file,
                self._split,
                self._run,
                self._progress,
                self._status,
            ]
        )
        self._model.changed.connect(self._show_file)
        self._run.changed.connect(self.start)
        self._show_file()
        self.worker: Any = None

    def _show_file(self) -> None:
        self._file.visible = self._model.value == OTHER_FILE

    def model_choice(self) -> str:
        """The model argument of :func:`fluoden_batch.denoise`: a shipped name or a path."""
        if self._model.value == OTHER_FILE:
            return str(Path(self._file.value).expanduser())
        return str(self._model.value)

    def start(self) -> None:
        """Denoise the chosen layer in a worker thread (the button's action)."""
        layer = self._layer.value
        if layer is None:
            show_error("fluoden: choose an image layer to denoise")
            return
        if layer.rgb:
            show_error(f"fluoden: {layer.name} is an RGB layer; fluoden denoises grey planes")
            return
        data = layer.data[0] if layer.multiscale else layer.data
        axes = layer.metadata.get("fluoden", {}).get("axes")
        model = self.model_choice()
        split = bool(self._split.value)
        self._run.enabled = False
        self._progress.value = 0
        self._status.value = f"denoising {layer.name} with {Path(model).name}"
        connect = {
            "yielded": self._step,
            "returned": lambda out: self._add(layer, model, out, split),
            "errored": self._failed,  # instead of re-raising in the Qt event loop
            "finished": self._finished,
        }
        worker = thread_worker(denoise_blocks, start_thread=False, connect=connect)
        self.worker = worker(data, model, axes, split)
        self.worker.start()

    def _step(self, progress: tuple[int, int]) -> None:
        done, total = progress
        self._progress.max = max(total, 1)
        self._progress.value = done

    def _add(
        self, layer: napari.layers.Image, model: str, out: np.ndarray, split: bool = False
    ) -> None:
        name = f"{layer.name} denoised"
        self._viewer.add_image(
            out,
            name=name,
            scale=layer.scale,
            translate=layer.translate,
            colormap=layer.colormap,
            contrast_limits=layer.contrast_limits,
            blending=layer.blending,
            metadata={
                "fluoden": {"model": model, "source_layer": layer.name, "phase_split": split}
            },
        )
        self._status.value = f"added {name}"
        show_info(f"fluoden: added {name}")

    def _failed(self, exc: BaseException) -> None:
        line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        self._status.value = f"failed: {line}"
        show_error(f"fluoden: {line}")

    def _finished(self) -> None:
        self._run.enabled = True
