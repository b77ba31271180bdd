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
from ..spec import WorldSpec


class SparseStorage:
    """A temporal layer held as sorted (cell, value) pairs, persisted as COO datasets."""

    kind = "sparse"

    def __init__(self, group: h5py.Group | None, spec: WorldSpec, name: str, cells: np.ndarray,
                 values: np.ndarray, writable: bool):
        self._group = group
        self._spec = spec
        self._name = name
        self._shape = (spec.height, spec.width)
        self._dtype = spec.layer(name).np_dtype
        order = np.argsort(cells, kind="stable")
        self.cells = np.asarray(cells, dtype=np.int64)[order]
        self.values = np.asarray(values, dtype=self._dtype)[order]
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
    def nnz(self) -> int:
        return len(self.cells)

    @property
    def array(self) -> np.ndarray:
        """A dense copy (read-only: writes to it would not reach the layer)."""
        dense = self.private_array()
        dense.flags.writeable = False
        return dense

    def private_array(self) -> np.ndarray:
        dense = np.zeros(self._shape, dtype=self._dtype)
        dense.reshape(-1)[self.cells] = self.values
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
        if out.size == 0 or not self.nnz:
            return out
        row_starts = np.arange(r0, r1, dtype=np.int64) * width
        lo = np.searchsorted(self.cells, row_starts + c0)
        hi = np.searchsorted(self.cells, row_starts + c1)
        counts = hi - lo
        if counts.sum() == 0:
            return out
        picks = np.repeat(lo - np.cumsum(np.r_[0, counts[:-1]]), counts) + np.arange(counts.sum())
        cells = self.cells[picks]
        out[cells // width - r0, cells % width - c0] = self.values[picks]
        return out

    # -- changing ---------------------------------------------------------
    def deposit(self, cells: np.ndarray, values: np.ndarray, mode: str) -> None:
        """Apply combined deposits (sorted unique cells) as the dense layer would."""
        if not len(cells):
            return
        at = np.searchsorted(self.cells, cells)
        found = at < len(self.cells)
        found[found] = self.cells[at[found]] == cells[found]
        hit = at[found]
        if mode == "add":
            self.values[hit] += values[found]
        elif mode == "max":
            self.values[hit] = np.maximum(self.values[hit], values[found])
        else:
            self.values[hit] = values[found]
        new = ~found
        if new.any():
            fresh = values[new]
            if mode == "max":  # an absent cell holds 0
                fresh = np.maximum(fresh, self._dtype.type(0))
            self._insert(at[new], cells[new], fresh)

    def _insert(self, at: np.ndarray, cells: np.ndarray, values: np.ndarray) -> None:
        """Insert sorted ``cells`` before positions ``at``: one merge pass for both arrays.

        (``np.insert`` on each array would build the same placement twice.)
        """
        count = len(self.cells) + len(cells)
        placed = at + np.arange(len(cells))  # where the new cells land in the merged arrays
        old = np.ones(count, dtype=bool)
        old[placed] = False
        merged_cells = np.empty(count, dtype=np.int64)
        merged_values = np.empty(count, dtype=self._dtype)
        merged_cells[placed] = cells
        merged_cells[old] = self.cells
        merged_values[placed] = values
        merged_values[old] = self.values
        self.cells, self.values = merged_cells, merged_values

    def decay(self, decay: float, threshold: float) -> int:
        """``v <- v * decay``; drop cells with ``|v| < threshold`` (and zeros). Returns nnz."""
        factor = self._dtype.type(decay)
        if factor != 1:
            np.multiply(self.values, factor, out=self.values)
        keep = np.abs(self.values) >= threshold
        keep &= self.values != 0
        if not keep.all():
            self.cells = self.cells[keep]
            self.values = self.values[keep]
        return self.nnz

    def flush(self) -> None:
        if self._writable:
            _schema.write_coo(self._group, self._spec, self._name, self.coords(), self.values)

    def close(self) -> None:
        self._group = None
