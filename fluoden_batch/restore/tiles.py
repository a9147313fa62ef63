"""Block and tile geometry.

A *block* is the unit of work of one task: a box aligned to the output's chunk (or shard)
grid, so that exactly one task writes each chunk. A *tile* is the unit of one forward pass
inside a task. Both are read with a *halo* of context pixels in Y/X, clipped at the image
border (where the network's own zero padding then acts exactly as in whole-image
inference), and cropped back after processing.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import overload

import numpy as np

from fluoden_batch.errors import InputError


@dataclass(frozen=True)
class Block:
    """One task's box in array coordinates.

    Attributes
    ----------
    index : tuple of int
        Position of the block in the block grid, one entry per axis.
    start, stop : tuple of int
        Half-open pixel bounds per axis.
    """

    index: tuple[int, ...]
    start: tuple[int, ...]
    stop: tuple[int, ...]

    @property
    def id(self) -> str:
        """Stable name used for markers and task keys, e.g. ``"0.2.1.3"``."""
        return ".".join(str(i) for i in self.index)

    @property
    def slices(self) -> tuple[slice, ...]:
        return tuple(slice(a, b) for a, b in zip(self.start, self.stop, strict=True))

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(b - a for a, b in zip(self.start, self.stop, strict=True))


def block_shape(shape: tuple[int, ...], chunks: tuple[int, ...], min_yx: int) -> tuple[int, ...]:
    """Block shape: the chunk shape, widened in Y/X by whole chunks to at least ``min_yx``.

    Grouping small chunks amortises the halo; the result stays a whole number of chunks so
    that blocks never share a chunk.
    """
    if len(shape) != len(chunks) or any(c <= 0 for c in chunks):
        raise InputError(f"invalid chunks {chunks} for shape {shape}")
    out = list(chunks)
    for ax in (-2, -1):
        factor = max(1, math.ceil(min_yx / chunks[ax]))
        out[ax] = min(chunks[ax] * factor, chunks[ax] * math.ceil(shape[ax] / chunks[ax]))
    return tuple(out)


class BlockGrid(Sequence[Block]):
    """The blocks of ``bshape`` covering ``shape`` (the last ones clipped at the edges), in
    C order, or the subset of them at the flat positions ``flat``.

    Blocks are made when asked for: a plan of any size holds one integer per block of a
    subset at most (a 10^6 x 10^6 image in 2048 px blocks is 239,121 blocks).
    """

    def __init__(
        self, shape: tuple[int, ...], bshape: tuple[int, ...], flat: np.ndarray | None = None
    ) -> None:
        self.shape, self.bshape = tuple(shape), tuple(bshape)
        self.counts = tuple(math.ceil(s / b) for s, b in zip(shape, bshape, strict=True))
        self.flat = flat

    def __len__(self) -> int:
        return math.prod(self.counts) if self.flat is None else len(self.flat)

    @overload
    def __getitem__(self, i: int) -> Block: ...

    @overload
    def __getitem__(self, i: slice) -> BlockGrid: ...

    def __getitem__(self, i: int | slice) -> Block | BlockGrid:
        if isinstance(i, slice):
            return BlockGrid(self.shape, self.bshape, self._positions()[i])
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"block {i} of {n}")
        i = int(i) % n
        return self._block(i if self.flat is None else int(self.flat[i]))

    def __iter__(self) -> Iterator[Block]:
        if self.flat is None:
            for index in itertools.product(*(range(n) for n in self.counts)):
                yield self._at(index)
        else:
            for i in self.flat.tolist():
                yield self._block(i)

    def _positions(self) -> np.ndarray:
        return np.arange(len(self)) if self.flat is None else self.flat

    def _block(self, flat: int) -> Block:
        index = []
        for n in reversed(self.counts):
            flat, i = divmod(flat, n)
            index.append(i)
        return self._at(tuple(reversed(index)))

    def _at(self, index: tuple[int, ...]) -> Block:
        start = tuple(i * b for i, b in zip(index, self.bshape, strict=True))
        stop = tuple(min(s + b, n) for s, b, n in zip(start, self.bshape, self.shape, strict=True))
        return Block(index, start, stop)

    def without(self, ids: Iterable[str]) -> BlockGrid:
        """These blocks less those named in ``ids`` (block ids; unknown ones are ignored)."""
        keep = np.ones(math.prod(self.counts), dtype=bool)
        for block_id in ids:
            index = tuple(int(i) for i in block_id.split("."))
            if len(index) == len(self.counts) and all(
                0 <= i < n for i, n in zip(index, self.counts, strict=True)
            ):
                keep[np.ravel_multi_index(index, self.counts)] = False
        positions = self._positions()
        return BlockGrid(self.shape, self.bshape, positions[keep[positions]])

    def pixels(self) -> int:
        """Pixels covered by these blocks (computed on arrays, not block by block)."""
        index = np.unravel_index(self._positions(), self.counts)
        sizes = np.ones(len(self), dtype=np.int64)
        for ax, idx in enumerate(index):
            start = idx.astype(np.int64) * self.bshape[ax]
            sizes *= np.minimum(start + self.bshape[ax], self.shape[ax]) - start
        return int(sizes.sum())


def plan_blocks(shape: tuple[int, ...], bshape: tuple[int, ...]) -> BlockGrid:
    """Cover ``shape`` with blocks of ``bshape`` (the last ones clipped at the edges)."""
    return BlockGrid(shape, bshape)


@dataclass(frozen=True)
class Window:
    """Where to read a region with its halo and how to crop the result.

    ``read`` are the (y, x) slices into the full plane (the region plus halo, clipped to
    the plane); ``crop`` are the slices into the read region that give back the region.
    """

    read: tuple[slice, slice]
    crop: tuple[slice, slice]


def halo_window(
    start: tuple[int, int],
    stop: tuple[int, int],
    plane: tuple[int, int],
    halo: int,
    align: int = 1,
) -> Window:
    """Read/crop slices for the Y/X box ``[start, stop)`` of a plane of shape ``plane``.

    The read region starts on a multiple of ``align`` (a network that works on 2x2 cells
    needs the plane's cell grid), reading up to ``align - 1`` more pixels than ``halo``.
    """
    read, crop = [], []
    for a, b, n in zip(start, stop, plane, strict=True):
        lo, hi = max(0, a - halo) // align * align, min(n, b + halo)
        read.append(slice(lo, hi))
        crop.append(slice(a - lo, a - lo + (b - a)))
    return Window((read[0], read[1]), (crop[0], crop[1]))


def tile_windows(
    plane: tuple[int, int], tile: int, halo: int, align: int = 1
) -> Iterator[tuple[Window, tuple[slice, slice]]]:
    """Tiles of at most ``tile`` px covering a plane, with their halo windows and output slices.

    Each axis is split into ``ceil(n / tile)`` near-equal parts (e.g. 1044 px with
    ``tile=384`` gives 348 + 348 + 348, not 384 + 384 + 276): fewer distinct shapes for
    the convolution library and no small, inefficient last tile. With ``align`` > 1 every
    tile and read region starts on a multiple of ``align``.
    """
    if tile <= 0:
        raise InputError(f"tile size must be positive, got {tile}")
    h, w = plane
    for y, y1 in _even_parts(h, tile, align):
        for x, x1 in _even_parts(w, tile, align):
            window = halo_window((y, x), (y1, x1), plane, halo, align)
            yield window, (slice(y, y1), slice(x, x1))


def _even_parts(n: int, most: int, align: int = 1) -> list[tuple[int, int]]:
    """``[start, stop)`` of ``ceil(n / most)`` near-equal parts of ``range(n)``, inner
    edges rounded to multiples of ``align`` (parts may then exceed ``most`` by ``align``)."""
    parts = max(1, math.ceil(n / most))
    edges = [round(i * n / parts / align) * align for i in range(parts)] + [n]
    return [(a, b) for a, b in itertools.pairwise(edges) if b > a]
