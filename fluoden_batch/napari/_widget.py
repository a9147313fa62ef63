"""napari dock widgets that denoise or segment the selected image layer with fluoden.

The layer's level 0 goes through the Python API (:func:`fluoden_batch.denoise` or
:func:`fluoden_batch.segment` on a Dask array: one task per block), block after block in a
worker thread (:func:`napari.qt.threading.thread_worker`), so the progress bar moves per
block and napari stays responsive. The API's
:class:`~fluoden_batch.pipeline.progress.Reporter` reports store runs only (an output
path); an array run is lazy, so progress here is counted over the blocks of the lazy
result. The result is added as a new layer (an image, or labels) placed like the input;
an error shows as one line in a napari notification.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Generator
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
    SpinBox,
)
from magicgui.widgets.bases import create_widget
from napari.qt.threading import thread_worker
from napari.utils.notifications import show_error, show_info

import fluoden_batch
from fluoden_batch.models.weights import shipped_models

__all__ = ["OTHER_FILE", "DenoiseWidget", "SegmentWidget", "denoise_blocks", "segment_blocks"]

OTHER_FILE = "file..."
BLOCK_SIDE = 512  # Y/X chunks of an in-memory layer: progress steps on large planes
# what a widget's button runs: a generator of block progress returning the result, its
# arguments, the status line while it runs, and what to do with the result
Job = tuple[
    Callable[..., Generator[tuple[int, int], None, np.ndarray]],
    tuple[Any, ...],
    str,
    Callable[[np.ndarray], None],
]


def _lazy(data: Any) -> da.Array:
    """``data`` as a Dask array: a layer's own Dask array, or in-memory data in chunks of
    one plane of at most :data:`BLOCK_SIDE` px a side (so progress moves on large planes)."""
    if isinstance(data, da.Array):
        return data
    lead = (1,) * (data.ndim - 2)
    return da.from_array(np.asarray(data), chunks=(*lead, BLOCK_SIDE, BLOCK_SIDE))


def compute_blocks(lazy: da.Array) -> Generator[tuple[int, int], None, np.ndarray]:
    """Compute a lazy result block after block (in this thread).

    Yields
    ------
    done, total : int
        Blocks finished and all blocks (first ``0, total``).

    Returns
    -------
    numpy.ndarray
        The computed array (the generator's return value).
    """
    out = np.empty(lazy.shape, lazy.dtype)
    starts = [np.cumsum((0, *c)) for c in lazy.chunks]
    total = int(np.prod(lazy.numblocks))
    yield 0, total
    for done, index in enumerate(itertools.product(*map(range, lazy.numblocks)), 1):
        where = tuple(slice(s[i], s[i + 1]) for s, i in zip(starts, index, strict=True))
        out[where] = lazy.blocks[index].compute(scheduler="synchronous")
        yield done, total
    return out


def denoise_blocks(
    data: Any, model: str, axes: str | None, phase_split: bool = False
) -> Generator[tuple[int, int], None, np.ndarray]:
    """Denoise ``data`` block by block with :func:`fluoden_batch.denoise` (with
    ``phase_split``: its ``--phase-split``); progress and result as :func:`compute_blocks`."""
    lazy = fluoden_batch.denoise(_lazy(data), model=model, axes=axes, phase_split=phase_split)
    return (yield from compute_blocks(lazy))


def segment_blocks(
    data: Any, method: str, clusters: int, axes: str | None
) -> Generator[tuple[int, int], None, np.ndarray]:
    """Label ``data`` block by block with :func:`fluoden_batch.segment` (``method``
    ``kmeans``, ``dbscan`` or ``hdbscan``; ``clusters`` for K-means); progress and int32
    labels as :func:`compute_blocks`."""
    lazy = fluoden_batch.segment(_lazy(data), method=method, clusters=clusters, axes=axes)
    return (yield from compute_blocks(lazy))


class _LayerJob(Container):
    """An image-layer chooser, the caller's options, a run button, a progress bar and a
    status line; the button runs the job ``job(layer, data, axes)`` describes (a generator
    of block progress, its arguments, a status line, what to do with the result) in a
    worker thread."""

    def __init__(
        self,
        viewer: napari.viewer.Viewer,
        options: list[Any],
        button: str,
        job: Callable[[napari.layers.Image, Any, str | None], Job],
    ) -> None:
        self._viewer = viewer
        self._job = job
        self._layer = create_widget(annotation=napari.layers.Image, label="image")
        self._run = PushButton(text=button)
        self._progress = ProgressBar(label="blocks", min=0, max=1, value=0)
        self._status = Label(value="")
        widgets = [self._layer, *options, self._run, self._progress, self._status]
        super().__init__(widgets=widgets)
        self._run.changed.connect(self.start)
        self.worker: Any = None

    def chosen_layer(self) -> napari.layers.Image | None:
        """The chosen grey image layer, or None after an error notification."""
        layer = self._layer.value
        if layer is None:
            show_error(f"fluoden: choose an image layer to {self._run.text.lower()}")
            return None
        if layer.rgb:
            show_error(f"fluoden: {layer.name} is an RGB layer; fluoden works on grey planes")
            return None
        return layer

    def start(self) -> None:
        """Run the job on the chosen layer's level 0 in a worker thread (the button's
        action)."""
        layer = self.chosen_layer()
        if layer is None:
            return
        data = layer.data[0] if layer.multiscale else layer.data
        axes = layer.metadata.get("fluoden", {}).get("axes")  # as fluoden's reader set them
        function, arguments, status, done = self._job(layer, data, axes)
        self._run.enabled = False
        self._progress.value = 0
        self._status.value = status
        connect = {
            "yielded": self._step,
            "returned": done,
            "errored": self._failed,  # instead of re-raising in the Qt event loop
            "finished": self._finished,
        }
        worker = thread_worker(function, start_thread=False, connect=connect)
        self.worker = worker(*arguments)
        self.worker.start()

    def _step(self, progress: tuple[int, int]) -> None:
        done, total = progress
        self._progress.max = max(total, 1)
        self._progress.value = done

    def _added(self, name: str) -> None:
        self._status.value = f"added {name}"
        show_info(f"fluoden: added {name}")

    def _failed(self, exc: BaseException) -> None:
        line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        self._status.value = f"failed: {line}"
        show_error(f"fluoden: {line}")

    def _finished(self) -> None:
        self._run.enabled = True


class DenoiseWidget(_LayerJob):
    """Denoise the chosen image layer with a shipped model or a weights file.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        The viewer whose layers are offered and where the result is added.
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
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
        options = [self._model, self._file, self._split]
        super().__init__(viewer, options, "Denoise", self._denoise)
        self._model.changed.connect(self._show_file)
        self._show_file()

    def _show_file(self) -> None:
        self._file.visible = self._model.value == OTHER_FILE

    def model_choice(self) -> str:
        """The model argument of :func:`fluoden_batch.denoise`: a shipped name or a path."""
        if self._model.value == OTHER_FILE:
            return str(Path(self._file.value).expanduser())
        return str(self._model.value)

    def _denoise(self, layer: napari.layers.Image, data: Any, axes: str | None) -> Job:
        model, split = self.model_choice(), bool(self._split.value)
        status = f"denoising {layer.name} with {Path(model).name}"
        done = lambda out: self._add(layer, model, out, split)  # noqa: E731
        return denoise_blocks, (data, model, axes, split), status, done

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
        self._added(name)


class SegmentWidget(_LayerJob):
    """Label the chosen image layer by clustering its pixels (``fluoden segment``):
    K-means into K intensity clusters, or DBSCAN / HDBSCAN (K not used).

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        The viewer whose layers are offered and where the labels layer is added.
    """

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        self._method = ComboBox(label="method", choices=["kmeans", "dbscan", "hdbscan"])
        self._clusters = SpinBox(
            label="clusters", value=3, min=2, max=16, tooltip="K of K-means (0 = darkest)"
        )
        super().__init__(viewer, [self._method, self._clusters], "Segment", self._segment)
        self._method.changed.connect(self._show_clusters)

    def _show_clusters(self) -> None:
        self._clusters.visible = self._method.value == "kmeans"

    def _segment(self, layer: napari.layers.Image, data: Any, axes: str | None) -> Job:
        method, clusters = str(self._method.value), int(self._clusters.value)
        status = f"segmenting {layer.name} ({method})"
        done = lambda out: self._add(layer, method, clusters, out)  # noqa: E731
        return segment_blocks, (data, method, clusters, axes), status, done

    def _add(self, layer: napari.layers.Image, method: str, clusters: int, out: np.ndarray) -> None:
        name = f"{layer.name} clusters"
        # fb.segment's labels as they are: 0 (K-means' darkest cluster, napari's
        # transparent background) up, -1 DBSCAN/HDBSCAN noise, as the reader shows them
        self._viewer.add_labels(
            out,
            name=name,
            scale=layer.scale,
            translate=layer.translate,
            metadata={
                "fluoden": {
                    "method": method,
                    "clusters": clusters if method == "kmeans" else None,
                    "source_layer": layer.name,
                }
            },
        )
        self._added(name)
