"""The napari plugin in a real (headless) napari viewer: the reader through napari's
plugin manager, the denoise widget in its worker thread, and the README's screenshot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

napari = pytest.importorskip("napari")
pytest.importorskip("pytestqt")

from napari_support import make_output, noisy_planes, x_display  # noqa: E402

from fluoden_batch.models.weights import shipped_models  # noqa: E402
from fluoden_batch.napari._widget import OTHER_FILE, DenoiseWidget, SegmentWidget  # noqa: E402

pytestmark = pytest.mark.napari

SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "napari_screenshot.png"
DEFAULT_MODEL = "dncnn-fmd"


@pytest.fixture(scope="session", autouse=True)
def _display() -> None:
    """An X display before Qt starts (autouse: before pytest-qt's ``qapp``); without
    one, skip (a QApplication without a display aborts the process)."""
    if not x_display():
        pytest.skip("napari needs an OpenGL canvas: no X display and no Xvfb here")


@pytest.fixture
def viewer(make_napari_viewer):
    """A napari viewer shown on the X display (a hidden canvas draws nothing)."""
    return make_napari_viewer(show=True)


def _finish(qtbot, widget: DenoiseWidget | SegmentWidget) -> None:
    """Press its button and wait until its worker has finished (the button is re-enabled)."""
    widget._run.clicked.emit()
    assert not widget._run.enabled
    qtbot.waitUntil(lambda: widget._run.enabled, timeout=60_000)


def test_napari_opens_output_with_the_plugin(viewer, tmp_path: Path) -> None:
    out = make_output(tmp_path)
    layers = viewer.open(str(out), plugin="fluoden-batch")
    assert [layer.name for layer in layers] == ["DAPI", "GFP", "clusters-c0", "clusters-c1"]
    dapi, labels = viewer.layers["DAPI"], viewer.layers["clusters-c0"]
    assert dapi.multiscale and len(dapi.data) == 2
    assert labels.multiscale and isinstance(labels, napari.layers.Labels)
    assert list(dapi.scale) == [0.5, 0.5]
    np.testing.assert_allclose(dapi.colormap.colors[-1], [0, 0, 1, 1])
    assert len(dapi.metadata["fluoden"]["metrics"]) == 8
    np.testing.assert_allclose(labels.colormap.map(0), [0, 0, 0, 0])  # background


def test_widget_denoises_layer_and_saves_screenshot(viewer, qtbot) -> None:
    noisy = noisy_planes(1, 128, seed=1)[0]
    layer = viewer.add_image(noisy, name="noisy", contrast_limits=[0, 250])
    _, widget = viewer.window.add_plugin_dock_widget("fluoden-batch", "Denoise (fluoden)")
    assert isinstance(widget, DenoiseWidget)  # made by napari from the manifest
    assert widget._model.choices == (*shipped_models(), OTHER_FILE)
    widget._layer.value = layer
    widget._model.value = DEFAULT_MODEL
    _finish(qtbot, widget)
    result = viewer.layers["noisy denoised"]
    assert result.data.shape == noisy.shape and result.data.dtype == noisy.dtype
    assert result.metadata["fluoden"]["phase_split"] is False  # the checkbox's default
    assert widget._progress.value == widget._progress.max == 1
    # a trained DnCNN removes most of the noise (sigma 12) of a smooth scene
    residual = noisy.astype(float) - result.data
    assert 6 < residual.std() < 16
    assert (
        np.abs(np.diff(result.data.astype(float), axis=1)).mean()
        < 0.5 * np.abs(np.diff(noisy.astype(float), axis=1)).mean()
    )
    grid = viewer.canvas.grid if hasattr(viewer, "canvas") else viewer.grid  # napari >= 0.9
    grid.enabled = True  # input and output side by side
    viewer.reset_view()
    image = viewer.screenshot(canvas_only=True, size=(300, 600), flash=False)
    halves = image[..., :3].astype(float).reshape(300, 2, 300, 3)
    assert halves.std(axis=(0, 2, 3)).min() > 10  # both images drawn, not a blank canvas
    from PIL import Image

    Image.fromarray(image[..., :3]).save(SCREENSHOT, optimize=True)
    assert SCREENSHOT.stat().st_size < 300_000


def test_widget_reports_a_bad_model_in_one_line(viewer, qtbot, tmp_path: Path) -> None:
    from napari.utils.notifications import notification_manager

    viewer.add_image(noisy_planes(1, 64)[0], name="noisy")
    widget = DenoiseWidget(viewer)
    widget._model.value = OTHER_FILE
    widget._file.value = tmp_path / "missing.safetensors"
    shown: list = []
    notification_manager.notification_ready.connect(shown.append)
    _finish(qtbot, widget)
    assert "noisy denoised" not in viewer.layers
    messages = [n.message for n in shown]
    assert any(m.startswith("fluoden: ") and "missing.safetensors" in m for m in messages)
    assert all("\n" not in m for m in messages)
    assert widget._run.enabled


def test_segment_widget_adds_the_labels_of_the_api(viewer, qtbot) -> None:
    import fluoden_batch as fb

    noisy = noisy_planes(1, 128, seed=1)[0]
    layer = viewer.add_image(noisy, name="noisy", scale=(0.5, 0.5))
    _, widget = viewer.window.add_plugin_dock_widget("fluoden-batch", "Segment (fluoden)")
    assert isinstance(widget, SegmentWidget)
    widget._layer.value = layer
    widget._clusters.value = 2
    _finish(qtbot, widget)
    labels = viewer.layers["noisy clusters"]
    assert isinstance(labels, napari.layers.Labels) and list(labels.scale) == [0.5, 0.5]
    np.testing.assert_array_equal(labels.data, fb.segment(noisy, clusters=2))
    assert set(np.unique(labels.data)) == {0, 1}
    assert labels.metadata["fluoden"] == {
        "method": "kmeans",
        "clusters": 2,
        "source_layer": "noisy",
    }
    widget._method.value = "dbscan"
    assert not widget._clusters.visible  # K is K-means' only
