"""The plugin without a viewer: its npe2 manifest, found through the package's entry
point, and the widgets' block-by-block denoising and segmentation (needs napari installed,
no display)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from napari_support import noisy_planes

pytest.importorskip("napari")  # the widget's module imports napari
npe2 = pytest.importorskip("npe2")

import fluoden_batch as fb  # noqa: E402
from conftest import make_tiny_weights  # noqa: E402
from fluoden_batch.napari import _widget  # noqa: E402


def test_manifest_is_registered_and_names_the_reader_and_widget() -> None:
    manifest = npe2.PluginManifest.from_distribution("fluoden-batch")
    manifest.validate_imports()  # every python_name imports
    assert manifest.name == "fluoden-batch"
    (reader,) = manifest.contributions.readers
    assert reader.command == "fluoden-batch.get_reader" and reader.accepts_directories
    widgets = {w.display_name: w.command for w in manifest.contributions.widgets}
    assert widgets == {
        "Denoise (fluoden)": "fluoden-batch.denoise_widget",
        "Segment (fluoden)": "fluoden-batch.segment_widget",
    }


def test_denoise_blocks_reports_each_block_and_equals_the_api(tmp_path: Path) -> None:
    weights = str(make_tiny_weights(tmp_path / "tiny.safetensors"))
    noisy = noisy_planes(2, 96)
    steps = _widget.denoise_blocks(noisy, weights, "zyx")
    progress = []
    with pytest.raises(StopIteration) as stop:
        while True:
            progress.append(next(steps))
    assert progress == [(0, 2), (1, 2), (2, 2)]  # one block per 96 px plane
    expected = fb.denoise(noisy, model=weights, axes="zyx")
    assert not np.array_equal(expected, noisy)
    np.testing.assert_array_equal(stop.value.value, expected)


def test_denoise_blocks_with_phase_split_equals_the_api(tmp_path: Path) -> None:
    weights = str(make_tiny_weights(tmp_path / "tiny.safetensors"))
    noisy = noisy_planes(1, 96)
    steps = _widget.denoise_blocks(noisy, weights, "zyx", phase_split=True)
    with pytest.raises(StopIteration) as stop:
        while True:
            next(steps)
    expected = fb.denoise(noisy, model=weights, axes="zyx", phase_split=True)
    assert not np.array_equal(expected, fb.denoise(noisy, model=weights, axes="zyx"))
    np.testing.assert_array_equal(stop.value.value, expected)


@pytest.mark.parametrize(("method", "clusters"), [("kmeans", 3), ("dbscan", 3)])
def test_segment_blocks_reports_each_block_and_equals_the_api(method, clusters) -> None:
    """Labels block by block, as `fb.segment` gives them for the same chunks (K-means
    centres fitted over the whole array; DBSCAN per block)."""
    noisy = noisy_planes(2, 96)
    steps = _widget.segment_blocks(noisy, method, clusters, "zyx")
    progress = []
    with pytest.raises(StopIteration) as stop:
        while True:
            progress.append(next(steps))
    assert progress == [(0, 2), (1, 2), (2, 2)]
    labels = stop.value.value
    expected = fb.segment(noisy, method=method, clusters=clusters, axes="zyx")
    assert labels.dtype == np.int32 and len(np.unique(labels)) > 1
    np.testing.assert_array_equal(labels, expected)
