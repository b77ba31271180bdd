"""``sparse`` storage: a temporal layer as its non-zero cells only (COO).

State in RAM is O(nnz): the sorted row-major linear indices of the non-zero
cells (int64) and their values. Deposits merge into it with a binary search,
decay is a multiply and a filter over the values, and ``flush`` writes the
coordinates and values to the layer's COO datasets: work and bytes follow the
number of active cells, not the grid size. A dense array is built only when
asked for (``array``), never kept.
"""

from __future__ import annotations

import h5py
import numpy as np

from .. import _schema
from ..temporal import update
from ..spec import WorldSpec


class SparseStorage:
    """A temporal layer held as sorted (cell, value) pairs, persisted as COO datasets.

    New cells first go to a small sorted *delta* beside the main arrays and
    are merged into them only when the delta outgrows ``_delta_limit``: a
    merge copies every entry, so doing it once per many deposits instead of
    once per deposit is what keeps a step's cost near the deposit's own size.
    Main and delta never share a cell; every value is in exactly one of them.
    """

    kind = "sparse"

    def __init__(self, group: h5py.Group | None, spec: WorldSpec, name: str, cells: np.ndarray,
                 values: np.ndarray, writable: bool):
        self._group = group
        self._spec = spec
        self._name = name
        self._shape = (spec.height, spec.width)
        self._dtype = spec.layer(name).np_dtype
        order = np.argsort(cells, kind="stable")
        self._cells = np.asarray(cells, dtype=np.int64)[order]
        self._values = np.asarray(values, dtype=self._dtype)[order]
        self._delta_cells = np.empty(0, dtype=np.int64)
        self._delta_values = np.empty(0, dtype=self._dtype)
        self._writable = writable

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

    # -- reading ----------------------------------------------------------
    @property
    def cells(self) -> np.ndarray:
        """Sorted row-major linear indices of the non-zero cells."""
        self._settle()
        return self._cells

    @property
    def values(self) -> np.ndarray:
        """Values of the non-zero cells, in the order of :attr:`cells`."""
        self._settle()
        return self._values

    @property
    def nnz(self) -> int:
        return len(self._cells) + len(self._delta_cells)

    @property
    def array(self) -> np.ndarray:
        """A dense copy (read-only: writes to it would not reach the layer)."""
        dense = self.private_array()
        dense.flags.writeable = False
        return dense

    def private_array(self) -> np.ndarray:
        dense = np.zeros(self._shape, dtype=self._dtype)
        flat = dense.reshape(-1)
        flat[self._cells] = self._values
        flat[self._delta_cells] = self._delta_values
        return dense

    def coords(self) -> np.ndarray:
        """``(nnz, 2)`` int64 ``(y, x)`` of the non-zero cells, row-major order."""
        return np.stack(np.divmod(self.cells, self._shape[1]), axis=1)

    def window(self, rows: slice, cols: slice) -> np.ndarray:
        """Dense copy of ``[rows, cols]``, touching only the entries inside the window.

        Per window row, two binary searches find that row's run of entries.
        """
        height, width = self._shape
        r0, r1, _ = rows.indices(height)
        c0, c1, _ = cols.indices(width)
        out = np.zeros((max(0, r1 - r0), max(0, c1 - c0)), dtype=self._dtype)
        if out.size == 0:
            return out
        row_starts = np.arange(r0, r1, dtype=np.int64) * width
        for cells, values in ((self._cells, self._values), (self._delta_cells, self._delta_values)):
            lo = np.searchsorted(cells, row_starts + c0)
            hi = np.searchsorted(cells, row_starts + c1)
            counts = hi - lo
            total = int(counts.sum())
            if total == 0:
                continue
            picks = np.repeat(lo - np.cumsum(np.r_[0, counts[:-1]]), counts) + np.arange(total)
            inside = cells[picks]
            out[inside // width - r0, inside % width - c0] = values[picks]
        return out

    # -- changing ---------------------------------------------------------
    def deposit(self, cells: np.ndarray, values: np.ndarray, mode: str) -> None:
        """Apply combined deposits (sorted unique cells) as the dense layer would."""
        if not len(cells):
            return
        hit_main, at_main = _locate(self._cells, cells)
        update(self._values, at_main[hit_main], values[hit_main], mode)
        rest = ~hit_main
        cells, values = cells[rest], values[rest]
        hit_delta, at_delta = _locate(self._delta_cells, cells)
        update(self._delta_values, at_delta[hit_delta], values[hit_delta], mode)
        new = ~hit_delta
        if new.any():
            fresh = values[new]
            if mode == "max":  # an absent cell holds 0
                fresh = np.maximum(fresh, self._dtype.type(0))
            self._delta_cells, self._delta_values = _merge(self._delta_cells, self._delta_values,
                                                           at_delta[new], cells[new], fresh)
        if len(self._delta_cells) > max(_DELTA_MIN, len(self._cells) // _DELTA_FRACTION):
            self._settle()

    def _settle(self) -> None:
        """Merge the delta into the main arrays."""
        if len(self._delta_cells):
            at = np.searchsorted(self._cells, self._delta_cells)
            self._cells, self._values = _merge(self._cells, self._values, at, self._delta_cells,
                                               self._delta_values)
            self._delta_cells = self._delta_cells[:0]
            self._delta_values = self._delta_values[:0]

    def decay(self, decay: float, threshold: float) -> int:
        """``v <- v * decay``; drop cells with ``|v| < threshold`` (and zeros). Returns nnz."""
        factor = self._dtype.type(decay)
        self._cells, self._values = _decay(self._cells, self._values, factor, threshold)
        self._delta_cells, self._delta_values = _decay(self._delta_cells, self._delta_values, factor, threshold)
        return self.nnz

    def flush(self) -> None:
        if self._writable:
            _schema.write_coo(self._group, self._spec, self._name, self.coords(), self.values)

    def close(self) -> None:
        self._group = None


#: The delta is merged into the main arrays when it holds more than
#: max(_DELTA_MIN, main / _DELTA_FRACTION) cells.
_DELTA_MIN = 1 << 16
_DELTA_FRACTION = 8


def _locate(sorted_cells: np.ndarray, cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For sorted ``cells``: which are in ``sorted_cells``, and their insertion positions."""
    at = np.searchsorted(sorted_cells, cells)
    hit = at < len(sorted_cells)
    hit[hit] = sorted_cells[at[hit]] == cells[hit]
    return hit, at


def _merge(cells: np.ndarray, values: np.ndarray, at: np.ndarray, new_cells: np.ndarray,
           new_values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Insert sorted ``new_cells`` before positions ``at``, one placement for both arrays."""
    count = len(cells) + len(new_cells)
    placed = at + np.arange(len(new_cells))  # where the new cells land in the merged arrays
    old = np.ones(count, dtype=bool)
    old[placed] = False
    merged_cells = np.empty(count, dtype=np.int64)
    merged_values = np.empty(count, dtype=values.dtype)
    merged_cells[placed] = new_cells
    merged_cells[old] = cells
    merged_values[placed] = new_values
    merged_values[old] = values
    return merged_cells, merged_values


def _decay(cells: np.ndarray, values: np.ndarray, factor, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    if factor != 1:
        np.multiply(values, factor, out=values)
    keep = np.abs(values) >= threshold  # with threshold > 0 this also drops zeros
    if threshold <= 0:
        keep &= values != 0
    if keep.all():
        return cells, values
    return cells[keep], values[keep]
