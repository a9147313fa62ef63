"""The napari reader on a real fluoden output (no napari needed: it returns layer data)."""

from __future__ import annotations

from pathlib import Path

import dask.array as da
import numpy as np
import pandas as pd
import pytest
import zarr
from napari_support import make_output

from fluoden_batch.napari._reader import get_reader, read_output


@pytest.fixture(scope="module")
def output(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_output(tmp_path_factory.mktemp("napari-reader"))


def test_reader_opens_pyramid_channels_labels_and_metrics(output: Path) -> None:
    reader = get_reader(str(output))
    assert reader is read_output
    layers = reader(str(output))
    assert [(kw["name"], kind) for _, kw, kind in layers] == [
        ("DAPI", "image"),
        ("GFP", "image"),
        ("clusters-c0", "labels"),
        ("clusters-c1", "labels"),
    ]
    stored = zarr.open_group(str(output), mode="r")
    for c, (data, kwargs, _) in enumerate(layers[:2]):
        assert kwargs["multiscale"] is True
        assert all(isinstance(level, da.Array) for level in data)
        assert [level.shape for level in data] == [(96, 96), (48, 48)]
        np.testing.assert_array_equal(data[0].compute(), stored["0"][c])
        np.testing.assert_array_equal(data[1].compute(), stored["1"][c])
        assert kwargs["scale"] == [0.5, 0.5]
        assert kwargs["contrast_limits"] == [0.0, 250.0]
        assert kwargs["blending"] == "additive"
        meta = kwargs["metadata"]["fluoden"]
        assert (meta["axes"], meta["channel"]) == ("yx", c)
        assert isinstance(meta["metrics"], pd.DataFrame)
        assert len(meta["metrics"]) == 8  # 2 channels x 2 x 2 blocks of 48 px
        assert meta["provenance"]["complete"] is True
    colormap = layers[1][1]["colormap"]
    assert colormap["name"] == "#00FF00"
    np.testing.assert_array_equal(colormap["colors"][-1], [0.0, 1.0, 0.0, 1.0])
    for c, (data, kwargs, _) in enumerate(layers[2:]):
        assert [level.shape for level in data] == [(96, 96), (48, 48)]
        np.testing.assert_array_equal(data[0].compute(), stored[f"labels/clusters-c{c}/0"][:])
        assert kwargs["colormap"][0] == [0.0, 0.0, 0.0, 0.0]  # background transparent
        assert kwargs["colormap"][1][3] == 1.0
        assert kwargs["scale"] == [0.5, 0.5]


def test_reader_declines_other_paths(output: Path, tmp_path: Path) -> None:
    assert get_reader(str(output.parent / "in.ome.zarr")) is None  # OME-Zarr, not fluoden's
    assert get_reader(str(output / "metrics.parquet")) is None
    assert get_reader([str(output), str(output)]) is None
    assert get_reader(str(tmp_path)) is None
