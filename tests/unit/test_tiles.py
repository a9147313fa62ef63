import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fluoden_batch.errors import InputError
from fluoden_batch.restore.tiles import block_shape, halo_window, plan_blocks, tile_windows


@given(
    shape=st.tuples(st.integers(1, 3), st.integers(1, 90), st.integers(1, 90)),
    chunks=st.tuples(st.integers(1, 2), st.integers(1, 40), st.integers(1, 40)),
    min_yx=st.integers(1, 64),
)
def test_blocks_cover_every_pixel_once_and_align_to_chunks(shape, chunks, min_yx):
    bshape = block_shape(shape, chunks, min_yx)
    count = np.zeros(shape, dtype=int)
    for b in plan_blocks(shape, bshape):
        count[b.slices] += 1
        for ax in range(3):
            assert b.start[ax] % chunks[ax] == 0  # never shares a chunk with another block
    assert (count == 1).all()
    for ax in (-2, -1):
        assert bshape[ax] % chunks[ax] == 0


def test_block_ids_are_unique_and_stable():
    blocks = plan_blocks((2, 10, 10), (1, 4, 4))
    assert len({b.id for b in blocks}) == len(blocks) == 2 * 3 * 3
    assert blocks[0].id == "0.0.0" and blocks[-1].id == "1.2.2"


def test_halo_window_clips_at_borders_and_crops_back():
    w = halo_window((0, 10), (8, 20), (30, 25), halo=5)
    assert w.read == (slice(0, 13), slice(5, 25))
    region = np.arange(30 * 25).reshape(30, 25)[w.read]
    assert (region[w.crop] == np.arange(30 * 25).reshape(30, 25)[0:8, 10:20]).all()


@given(h=st.integers(1, 70), w=st.integers(1, 70), tile=st.integers(1, 30), halo=st.integers(0, 9))
def test_tiles_partition_the_plane(h, w, tile, halo):
    seen = np.zeros((h, w), dtype=int)
    for window, dest in tile_windows((h, w), tile, halo):
        seen[dest] += 1
        ry, rx = window.read
        assert ry.start >= 0 and rx.start >= 0 and ry.stop <= h and rx.stop <= w
    assert (seen == 1).all()


def test_bad_chunks_and_tiles_are_refused():
    with pytest.raises(InputError, match="chunks"):
        block_shape((10, 10), (0, 5), 4)
    with pytest.raises(InputError, match="tile"):
        list(tile_windows((10, 10), 0, 2))
