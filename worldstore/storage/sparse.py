"""``sparse`` storage: a temporal layer as its non-zero cells only (COO).

State in RAM is O(nnz): the row-major linear indices of the non-zero cells
(int64), their values, and small structures to find them (about 4 bytes per
cell, see :mod:`._cells`). A deposit costs about what its own events cost,
decay is a multiply and a threshold test over the values, and a commit
writes the coordinates and values to the layer's COO datasets: work and bytes
follow the number of active cells, not the grid size. A dense array is built
only when asked for (``array``), never kept.
"""

from __future__ import annotations

import h5py
import numpy as np

from .. import _native
from ..spec import WorldSpec
from ..temporal import stable_order, update
from .._windows import pad_outside
from ._cells import BlockIndex, CellTags, RunLog, entries_in, no_hugepages


class SparseStorage:
    """A temporal layer held as sorted (cell, value) arrays, persisted as COO datasets.

    The cells live in a large sorted *main* array (with a :class:`BlockIndex`)
    and a :class:`RunLog` of recent *runs*, each the sorted cells that one
    deposit added; no cell is in both. A deposit asks :class:`CellTags` where
    its cells may be held: only those cells are looked up, each in the one
    place its tag names, and the rest (at low density, nearly all) are
    appended as a new run without touching main. The runs are merged into
    main (:meth:`_settle`) when they hold more cells than main or there are
    ``_MAX_RUNS`` of them, and before anything reads the cells in order: a
    merge copies every cell, so doing it once per many deposits keeps a
    step's cost near the size of its deposit.

    Cells that decay below the threshold become zeros in place (one multiply,
    no copy); main is compacted when a quarter of it is zeros, the runs when
    they are merged. ``nnz`` counts the non-zero cells exactly.
    """

    kind = "sparse"

    def __init__(self, group: h5py.Group | None, spec: WorldSpec, name: str, cells: np.ndarray,
                 values: np.ndarray, writable: bool):
        self._group = group
        self._spec = spec
        self._name = name
        self._shape = (spec.height, spec.width)
        self._dtype = spec.layer(name).np_dtype
        cells = np.asarray(cells, dtype=np.int64)
        values = np.asarray(values, dtype=self._dtype)
        keep = values != 0
        cells, values = cells[keep], values[keep]
        order = stable_order(cells)
        self._set_main(cells[order], values[order], len(cells))
        self._log = RunLog(self._dtype, self._shape[0] * self._shape[1])
        #: Entries holding 0: cells that fell below the threshold, zeroed in
        #: place rather than removed, or that a deposit brought to exactly 0.
        self._zeros = 0
        self._tags = CellTags(self._main_cells, [], max(_RUN_MIN, len(cells)))
        self._writable = writable
        #: Whether the cells differ from what the file's COO datasets hold (unknown, so yes, at first).
        self.changed = True

    @classmethod
    def from_dense(cls, group, spec: WorldSpec, name: str, array: np.ndarray, writable: bool) -> "SparseStorage":
        flat = array.reshape(-1)
        cells = np.flatnonzero(flat)
        return cls(group, spec, name, cells, flat[cells], writable)

    @classmethod
    def from_coo(cls, group, spec: WorldSpec, name: str, coords: np.ndarray, values: np.ndarray,
                 writable: bool) -> "SparseStorage":
        cells = coords[:, 0].astype(np.int64) * spec.width + coords[:, 1]
        return cls(group, spec, name, cells, values, writable)

    def _set_main(self, cells: np.ndarray, values: np.ndarray, count: int) -> None:
        """Main is the first ``count`` entries of the buffers ``cells`` and ``values``."""
        self._cells_buffer, self._values_buffer = cells, values
        self._main_cells, self._main_values = cells[:count], values[:count]
        self._index = BlockIndex(self._main_cells, self._shape[0] * self._shape[1])

    # -- reading ----------------------------------------------------------
    @property
    def cells(self) -> np.ndarray:
        """Sorted row-major linear indices of the stored cells (zeros included until merged)."""
        self._settle()
        return self._main_cells

    @property
    def values(self) -> np.ndarray:
        """Values of the stored cells, in the order of :attr:`cells`."""
        self._settle()
        return self._main_values

    @property
    def nnz(self) -> int:
        return len(self._main_cells) + len(self._log) - self._zeros

    @property
    def array(self) -> np.ndarray:
        """A dense copy (read-only: writes to it would not reach the layer)."""
        dense = self.private_array()
        dense.flags.writeable = False
        return dense

    def private_array(self) -> np.ndarray:
        dense = np.zeros(self._shape, dtype=self._dtype)
        flat = dense.reshape(-1)
        flat[self._main_cells] = self._main_values
        flat[self._log.cells] = self._log.values
        return dense

    def coo(self) -> tuple[np.ndarray, np.ndarray]:
        """``(nnz, 2)`` int64 ``(y, x)`` of the non-zero cells, row-major order, and a copy of their values."""
        self._settle()  # also drops the zeros
        return np.stack(np.divmod(self._main_cells, self._shape[1]), axis=1), self._main_values.copy()

    def window(self, rows: slice, cols: slice) -> np.ndarray:
        """Dense copy of ``[rows, cols]``, touching only the entries inside the window.

        Per window row, binary searches in main and in the runs find that
        row's entries.
        """
        height, width = self._shape
        r0, r1, _ = rows.indices(height)
        c0, c1, _ = cols.indices(width)
        out = np.zeros((max(0, r1 - r0), max(0, c1 - c0)), dtype=self._dtype)
        if out.size == 0:
            return out
        row_starts = np.arange(r0, r1, dtype=np.int64) * width
        cells, values, _ = self.entries_in(row_starts + c0, row_starts + c1)
        out[cells // width - r0, cells % width - c0] = values
        return out

    def entries_in(self, lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Stored entries with ``lo[q] <= cell < hi[q]`` (ranges not overlapping): cells, values, ``q``.

        With many runs, they are merged into main first: each run costs a
        search per range, a merge costs one pass over main.
        """
        if self._log.runs > _RUNS_PER_READ:
            self._settle()
        parts = [entries_in(self._main_cells, self._main_values, lo, hi)]
        if len(self._log):
            parts.append(self._log.entries_in(lo, hi))
        return tuple(np.concatenate(column) for column in zip(*parts))

    def gather_windows(self, positions: np.ndarray, radius: int, out: np.ndarray, pad) -> None:
        """Each agent's window into ``out[i]`` (``(N, S, S)``, any strides): only the entries inside them.

        Cells outside the world take ``pad``; the rest are 0 but for the
        stored entries, found per window row by two binary searches.
        """
        height, width = self._shape
        side = 2 * radius + 1
        ys, xs = positions[:, 0], positions[:, 1]
        rows = ys[:, None] - radius + np.arange(side)  # (N, S) world rows of each window row
        inside = (rows >= 0) & (rows < height)
        left, right = np.maximum(xs - radius, 0), np.minimum(xs + radius + 1, width)
        out[...] = 0
        pad_outside(out, positions, radius, height, width, pad)
        agent_rows = np.flatnonzero(inside.ravel())  # agent * S + window row, for rows inside the world
        agents = agent_rows // side
        starts = rows.ravel()[agent_rows] * width
        cells, values, query = self.entries_in(starts + left[agents], starts + right[agents])
        agent, row = agents[query], agent_rows[query] % side
        out[agent, row, cells % width - (xs[agent] - radius)] = values

    # -- changing ---------------------------------------------------------
    def deposit(self, cells: np.ndarray, values: np.ndarray, mode: str) -> None:
        """Apply combined deposits (sorted unique cells) as the dense layer would."""
        self.changed = True
        if not len(cells):
            return
        tags = self._tags.lookup(cells)
        new = tags == CellTags.EMPTY
        known = np.flatnonzero(~new)
        if len(known):
            found = self._update_held(tags[known], cells[known], values[known], mode)
            new[known[~found]] = True
        fresh_cells, fresh = cells[new], values[new]
        if mode == "max":  # an absent cell holds 0
            fresh = np.maximum(fresh, self._dtype.type(0))
        nonzero = fresh != 0
        if not nonzero.all():
            fresh_cells, fresh = fresh_cells[nonzero], fresh[nonzero]
        if not len(fresh_cells):
            return
        run = self._log.append(fresh_cells, fresh)
        if not self._tags.add(fresh_cells, run):  # full: rebuild, sized for twice what it holds
            self._tags = CellTags(self._main_cells, self._log.cells_by_run(), self.nnz)
        if (self._log.runs >= _MAX_RUNS or len(self._log) > max(_RUN_MIN, len(self._main_cells))
                or self._zeros > self.nnz):
            self._settle()

    def _update_held(self, tags: np.ndarray, cells: np.ndarray, amounts: np.ndarray, mode: str) -> np.ndarray:
        """Update the cells that their tags say may be held; return which were."""
        found = np.zeros(len(cells), dtype=bool)
        several = tags == CellTags.SEVERAL
        in_main = np.flatnonzero((tags == CellTags.MAIN) | several)
        if len(in_main):
            hit, at = self._index.locate(cells[in_main])
            self._update(self._main_values, at[hit], amounts[in_main[hit]], mode)
            found[in_main[hit]] = True
        if not len(self._log):
            return found
        in_run = np.flatnonzero((tags >= CellTags.FIRST_RUN) & ~several)
        everywhere = np.flatnonzero(several & ~found)
        asked = np.concatenate([in_run, np.repeat(everywhere, self._log.runs)])
        runs = np.concatenate([tags[in_run].astype(np.int64) - CellTags.FIRST_RUN,
                               np.tile(np.arange(self._log.runs), len(everywhere))])
        hit, at = self._log.find(runs, cells[asked])
        self._update(self._log.values, at[hit], amounts[asked[hit]], mode)  # a cell is in one run at most
        found[asked[hit]] = True
        return found

    def _update(self, values: np.ndarray, at: np.ndarray, amounts: np.ndarray, mode: str) -> None:
        """:func:`update` at positions ``at`` of ``values``, keeping the count of zeros."""
        if len(at):
            was_zero = int(np.count_nonzero(values[at] == 0))
            update(values, at, amounts, mode)
            self._zeros += int(np.count_nonzero(values[at] == 0)) - was_zero

    def _settle(self) -> None:
        """Merge the runs into main, dropping zeros (the tags already know the cells).

        The merge works in place in main's buffers, which grow by half when
        full: fresh memory costs page faults, and those would cost more than
        the merge itself.
        """
        if not len(self._log) and not self._zeros:
            return
        count = len(self._main_cells)
        cells, values = self._cells_buffer, self._values_buffer
        with no_hugepages():
            if len(self._log):
                run_cells, run_values = self._log.cells, self._log.values
                order = stable_order(run_cells)  # the runs' cells are distinct: any order of ties will do
                run_cells, run_values = run_cells[order], run_values[order]
                need = count + len(run_cells)
                if need > len(cells):
                    capacity = need + need // 2
                    cells, values = np.empty(capacity, np.int64), np.empty(capacity, self._dtype)
                    cells[:count], values[:count] = self._main_cells, self._main_values
                _native.merge_into(cells, values, count, run_cells, run_values)
                count = need
            if self._zeros:
                count = _native.compact(cells, values, count)
            if 4 * count < len(cells) and len(cells) > _RUN_MIN:  # mostly empty: give memory back
                cells, values = cells[:count].copy(), values[:count].copy()
            self._set_main(cells, values, count)
        self._log.clear()
        self._zeros = 0
        # Fresh tags: about as cheap as retagging every slot MAIN, and cells that left lose theirs.
        self._tags = CellTags(self._main_cells, [], max(_RUN_MIN, count))

    def decay(self, decay: float, threshold: float) -> int:
        """``v <- v * decay``; cells with ``|v| < threshold`` become 0. Returns nnz."""
        self.changed = True
        factor = self._dtype.type(decay)
        main_zeros = _native.decay(self._main_values, factor, threshold)
        if main_zeros * _COMPACT_FRACTION > len(self._main_values):
            count = _native.compact(self._cells_buffer, self._values_buffer, len(self._main_cells))
            self._set_main(self._cells_buffer, self._values_buffer, count)
            main_zeros = 0
        self._zeros = main_zeros + _native.decay(self._log.values, factor, threshold)
        return self.nnz

    def patches(self) -> list:
        """Nothing: a sparse layer's cells reach the file as its COO form (``coo``) at each commit."""
        return []

    def cut_short(self) -> bool:
        return False  # read through HDF5, which reports a short file itself

    def drop_private(self) -> None:
        self.changed = False  # committed

    def close(self) -> None:
        self._group = None


#: Runs are merged into main when there are _MAX_RUNS of them, or when they
#: hold more than max(_RUN_MIN, main) cells: a merge copies main, so the more
#: cells the runs gather first, the less a merge costs per cell.
_MAX_RUNS = CellTags.MAX_RUNS
_RUN_MIN = 1 << 16
#: Reads of many ranges (windows, observations) merge the runs first when there are more.
_RUNS_PER_READ = 8
#: Decay compacts main when more than 1/_COMPACT_FRACTION of it is zeros.
_COMPACT_FRACTION = 4
