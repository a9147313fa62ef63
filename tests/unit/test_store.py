import numpy as np
import zarr

from conftest import die_mid_chunk_write, file_bytes
from fluoden_batch.io.store import PROVENANCE_KEY, remove_partial_writes, stored_parameter


def _out(tmp_path, parameters):
    out = tmp_path / "out.zarr"
    group = zarr.open_group(str(out), mode="w")
    group.attrs[PROVENANCE_KEY] = {"parameters": parameters}
    return out


def test_stored_parameter_is_reused_only_for_the_same_parameters(tmp_path):
    out = _out(tmp_path, {"k": 3, "model": "m", "centres": [[1.0, 2.0, 3.0]]})
    assert stored_parameter(out, {"k": 3, "model": "m"}, "centres", False) == [[1.0, 2.0, 3.0]]
    assert stored_parameter(out, {"k": 4, "model": "m"}, "centres", False) is None
    assert stored_parameter(out, {"k": 3, "tile": 256}, "centres", False) is None
    assert stored_parameter(out, {"k": 3}, "centres", True) is None  # --overwrite
    assert stored_parameter(out, {"k": 3}, "noise", False) is None  # key never stored


def test_stored_parameter_of_a_missing_or_foreign_output_is_none(tmp_path):
    assert stored_parameter(tmp_path / "absent.zarr", {}, "centres", False) is None
    foreign = tmp_path / "foreign.zarr"
    zarr.open_group(str(foreign), mode="w")
    assert stored_parameter(foreign, {}, "centres", False) is None
    (tmp_path / "file.txt").write_text("not zarr")
    assert stored_parameter(tmp_path / "file.txt", {}, "centres", False) is None


def test_remove_partial_writes_clears_only_zarrs_temporaries(tmp_path):
    out = tmp_path / "out.zarr"
    group = zarr.open_group(str(out), mode="w")
    array = group.create_array("0", shape=(64, 64), chunks=(32, 32), dtype="uint16")
    array[:] = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64)
    (out / "notes.partial").write_text("a user's file")  # not zarr's form: kept
    before = file_bytes(out)

    die_mid_chunk_write(out / "0")
    left = sorted(set(file_bytes(out)) - set(before))
    assert len(left) == 1 and left[0].endswith(".partial"), left  # zarr's temporary file

    assert remove_partial_writes(out) == 1
    assert file_bytes(out) == before
    np.testing.assert_array_equal(
        zarr.open_array(str(out / "0"))[:2, :3], [[0, 1, 2], [64, 65, 66]]
    )
    assert remove_partial_writes(out) == 0
