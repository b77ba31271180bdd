"""Building blocks of sparse storage: finding cells among sorted, row-major linear indices.

- :class:`CellTags`: where a cell may be held, if anywhere (a hash table of
  one-byte tags, never wrong about a held cell), so that most deposits on
  empty cells need no search at all and the others search one place;
- :class:`BlockIndex`: where a cell is in a large sorted array, with one or
  two cache misses instead of a binary search's dozen;
- :class:`RunLog`: recent cells, appended as sorted runs into one growing
  buffer, so that one search and one decay pass cover every run;
- :func:`no_hugepages`: large temporary arrays without transparent huge pages.

All of them are O(number of cells held) in memory, none O(grid size).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np

from .._native import block_starts, hash_slots, locate_sorted, tags_mark


#: Cells per chunk where a pass over many cells is split to keep its temporaries small.
_CHUNK = 1 << 16


class CellTags:
    """Where each held cell may be: one tag byte per hash slot, at most a quarter of the slots set.

    A slot's tag is ``EMPTY`` (no held cell hashes there: the cell is
    absent), ``MAIN``, ``FIRST_RUN + k`` (run ``k`` of the log) or
    ``SEVERAL`` (cells in different places share the slot: look everywhere).
    It is never wrong about a held cell; an absent one finds ``EMPTY`` with
    probability above 3/4 while no more cells were added than it was sized
    for (then :meth:`add` asks for a rebuild). Cells that leave keep their
    tag until the next rebuild: that only costs a lookup. Size: 4 bytes per
    cell it was sized for (held + growth), rounded up to a power of two.
    """

    EMPTY, MAIN, FIRST_RUN, SEVERAL = 0, 1, 2, 255
    #: Runs that have a tag of their own.
    MAX_RUNS = SEVERAL - FIRST_RUN
    #: At least 2**MIN_BITS slots (tests lower it to force collisions and rebuilds).
    MIN_BITS = 12

    def __init__(self, main: np.ndarray, runs: list[np.ndarray], growth: int):
        held = len(main) + sum(len(cells) for cells in runs)
        self._bits = max(self.MIN_BITS, int(4 * (held + growth) - 1).bit_length())
        self._room = (1 << self._bits) // 4 - held
        # Random access all over it: huge pages (numpy's default) save a TLB miss per lookup.
        self._slots = np.zeros(1 << self._bits, dtype=np.uint8)
        for tag, cells in [(self.MAIN, main)] + [(self.FIRST_RUN + run, cells) for run, cells in enumerate(runs)]:
            for start in range(0, len(cells), _CHUNK):  # in chunks: small temporaries where numpy does it
                self._mark(cells[start:start + _CHUNK], tag)

    def lookup(self, cells: np.ndarray) -> np.ndarray:
        """The tag of each cell's slot (uint8)."""
        return self._slots[hash_slots(cells, self._bits)]

    def _mark(self, cells: np.ndarray, tag: int) -> None:
        tags_mark(self._slots, self._bits, cells, tag, self.SEVERAL)

    def add(self, cells: np.ndarray, run: int) -> bool:
        """Tag ``cells`` as held in run ``run``; False once more cells were added than it was sized for."""
        self._mark(cells, self.FIRST_RUN + run)
        self._room -= len(cells)
        return self._room >= 0


class BlockIndex:
    """Where each block of ``2**shift`` consecutive cells starts in a sorted cell array.

    The block size is chosen so that a block holds about four cells on
    average; :meth:`locate` then compares a cell with the (at most
    ``WIDTH``) cells of its block in one vectorised step, touching one or
    two cache lines, and binary-searches only cells of crowded blocks.
    Memory: one int64 per block, about 2 bytes per cell held.
    """

    #: Cells compared per lookup before falling back to a binary search.
    WIDTH = 8

    def __init__(self, cells: np.ndarray, grid_cells: int):
        self._cells = cells
        blocks_wanted = max(1, len(cells) // 4)
        self._shift = max(0, (grid_cells // blocks_wanted).bit_length() - 1)
        blocks = (grid_cells >> self._shift) + 1
        self._starts = block_starts(cells, self._shift, blocks)

    def locate(self, cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For ``cells``: which are held, and their positions (as a binary search would give them)."""
        if not len(self._cells):
            return np.zeros(len(cells), dtype=bool), np.zeros(len(cells), dtype=np.int64)
        block = cells >> self._shift
        lo, hi = self._starts[block], self._starts[block + 1]
        counts = hi - lo
        hit = np.zeros(len(cells), dtype=bool)
        at = lo.copy()
        small = counts <= self.WIDTH
        if small.any():
            q, base, n = cells[small], lo[small], counts[small]
            offsets = np.arange(self.WIDTH)
            inside = offsets < n[:, None]
            # Positions past a block's end are clipped to a valid index and masked out.
            probe = self._cells[np.minimum(base[:, None] + offsets, max(0, len(self._cells) - 1))]
            below = (probe < q[:, None]) & inside
            position = base + below.sum(axis=1)
            found = ((probe == q[:, None]) & inside).any(axis=1)
            hit[small], at[small] = found, position
        crowded = np.flatnonzero(~small)
        if len(crowded):
            hit[crowded], at[crowded] = locate_sorted(self._cells, cells[crowded])
        return hit, at


class RunLog:
    """Sorted runs of cells and values, one after the other in two growing buffers.

    A cell of run ``k`` is stored as the key ``k << cell_bits | cell``: run
    after run, the keys are sorted, so one binary search finds cells in any
    runs (:meth:`find`) however many runs there are.
    """

    def __init__(self, dtype: np.dtype, grid_cells: int):
        self._cell_bits = max(1, int(grid_cells - 1).bit_length())
        self._mask = (1 << self._cell_bits) - 1
        self._keys = np.empty(0, dtype=np.int64)
        self._values = np.empty(0, dtype=dtype)
        self._starts = [0]

    def __len__(self) -> int:
        return self._starts[-1]

    @property
    def runs(self) -> int:
        return len(self._starts) - 1

    def append(self, cells: np.ndarray, values: np.ndarray) -> int:
        """Add sorted ``cells`` as a new run; return its number."""
        end = self._starts[-1]
        need = end + len(cells)
        if need > len(self._keys):
            capacity = max(need, 2 * len(self._keys), 1024)
            with no_hugepages():
                grown_keys = np.empty(capacity, dtype=np.int64)
                grown_values = np.empty(capacity, dtype=self._values.dtype)
            grown_keys[:end] = self._keys[:end]
            grown_values[:end] = self._values[:end]
            self._keys, self._values = grown_keys, grown_values
        run = self.runs
        np.bitwise_or(cells, run << self._cell_bits, out=self._keys[end:need])
        self._values[end:need] = values
        self._starts.append(need)
        return run

    def find(self, runs: np.ndarray, cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For each ``(run, cell)``: is the cell in that run, and its position in :attr:`values`."""
        keys = self._keys[:len(self)]
        query = (runs.astype(np.int64) << self._cell_bits) | cells
        order = np.argsort(query)
        sorted_hit, sorted_at = locate_sorted(keys, query[order])  # sorted: one forward pass
        hit, at = np.empty_like(sorted_hit), np.empty_like(sorted_at)
        hit[order], at[order] = sorted_hit, sorted_at
        return hit, at

    @property
    def cells(self) -> np.ndarray:
        """Every run's cells (each run sorted), a new array."""
        return self._keys[:len(self)] & self._mask

    def cells_by_run(self) -> list[np.ndarray]:
        cells = self.cells
        return [cells[start:end] for start, end in zip(self._starts[:-1], self._starts[1:])]

    @property
    def values(self) -> np.ndarray:
        """Every run's values (a view: changes reach the log)."""
        return self._values[:len(self)]

    def entries_in(self, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every run's entries with ``lo[q] <= cell < hi[q]``: their cells, values and query ``q``."""
        prefixes = (np.arange(self.runs, dtype=np.int64) << self._cell_bits)[:, None]
        keys, values, query = entries_in(self._keys[:len(self)], self.values, (prefixes + lo).ravel(),
                                         (prefixes + hi).ravel())
        return keys & self._mask, values, query % len(lo)  # one query per range and run

    def clear(self) -> None:
        """Forget every run; the buffers are kept for the next ones."""
        self._starts = [0]


def entries_in(cells: np.ndarray, values: np.ndarray, lo: np.ndarray,
               hi: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Entries of sorted ``cells`` with ``lo[q] <= cell < hi[q]``: their cells, values and query ``q``."""
    first, last = np.searchsorted(cells, lo), np.searchsorted(cells, hi)
    picks = ranges(first, last)
    return cells[picks], values[picks], np.repeat(np.arange(len(lo)), last - first)


def ranges(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """The concatenation of ``arange(lo[i], hi[i])`` over ``i``."""
    counts = hi - lo
    total = int(counts.sum())
    return np.repeat(lo - np.cumsum(np.r_[0, counts[:-1]]), counts) + np.arange(total)


@contextlib.contextmanager
def no_hugepages() -> Iterator[None]:
    """Allocate without numpy's transparent-huge-page hint while inside.

    numpy asks the kernel for huge pages for every array of 4 MiB or more.
    For short-lived arrays that costs more than it saves: on the machines we
    measured, a merge of a million cells took 17-26 ms with the hint and
    5-10 ms without, the difference being page faults that zero or compact
    2 MiB pages. The setting is numpy's own (process-wide); it is restored
    on exit, and left alone where numpy does not offer it.
    """
    try:
        from numpy._core import multiarray
        setter = multiarray._set_madvise_hugepage
    except (ImportError, AttributeError):  # another numpy: nothing to change
        yield
        return
    previous = setter(False)
    try:
        yield
    finally:
        setter(previous)
