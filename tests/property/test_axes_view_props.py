"""``AxesView`` (a TIFF read in NGFF order) indexes as NumPy indexes the transposed array,
for any axis order and any mix of integers and slices."""

from __future__ import annotations

import numpy as np
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st

from fluoden_batch.io.source import AxesView


@st.composite
def views_and_keys(draw):
    ndim = draw(st.integers(2, 5))
    shape = tuple(draw(st.lists(st.integers(1, 5), min_size=ndim, max_size=ndim)))
    order = tuple(draw(st.permutations(range(ndim))))
    key = []
    for size in (shape[o] for o in order):  # the view's shape
        if draw(st.booleans()):
            key.append(draw(st.integers(-size, size - 1)))
        else:
            start = draw(st.one_of(st.none(), st.integers(-size, size)))
            stop = draw(st.one_of(st.none(), st.integers(-size, size)))
            key.append(slice(start, stop, draw(st.sampled_from([None, 1, 2]))))
    return shape, order, tuple(key[: draw(st.integers(0, ndim))])


@settings(max_examples=150, deadline=None)
@given(views_and_keys())
def test_axes_view_indexes_as_the_transposed_array(case):
    shape, order, key = case
    data = np.arange(int(np.prod(shape)), dtype=np.int32).reshape(shape)
    stored = zarr.create_array(zarr.storage.MemoryStore(), shape=shape, dtype="int32")
    stored[...] = data
    view = AxesView(stored, order)
    expected = data.transpose(order)
    assert view.shape == expected.shape and view.ndim == expected.ndim
    np.testing.assert_array_equal(view[key], expected[key])
    np.testing.assert_array_equal(view[...], expected)
