"""``sparse`` storage: a temporal layer as its non-zero cells only (COO).

State in RAM is O(nnz): the row-major linear indices of the non-zero cells
(int64), their values, and a small membership filter (about 4 bytes per
cell). Deposits find their cells through the filter and a binary search,
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
from ..temporal import stable_order, update


class SparseStorage:
    """A temporal layer held as sorted (cell, value) runs, persisted as COO datasets.

    The cells live in *parts*: a large sorted *main* part and a short list of
    sorted *runs*, each holding the cells that one deposit added. No cell is
    in two parts. A deposit asks the :class:`_Filter` which of its cells may
    already be present; only those are binary-searched, and the rest (at low
    density, nearly all) are appended as one new run without touching main.
    The runs are merged into main (:meth:`_settle`) when there are
    ``_MAX_RUNS`` of them or they hold more than half as many cells as main,
    and before anything reads the cells in order: a merge copies every cell,
    so doing it once per many deposits is what keeps a step's cost near the
    size of its deposit.
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
        order = np.argsort(cells, kind="stable")
        self._parts: list[tuple[np.ndarray, np.ndarray]] = [(cells[order], values[order])]
        #: Entries holding 0: cells that decayed below the threshold but were
        #: zeroed in place rather than removed, or that a deposit brought to 0.
        self._zeros = len(values) - int(np.count_nonzero(values))
        self._filter = _Filter(self._parts, max(_RUN_MIN, len(cells)))
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
        return self._parts[0][0]

    @property
    def values(self) -> np.ndarray:
        """Values of the non-zero cells, in the order of :attr:`cells`."""
        self._settle()
        return self._parts[0][1]

    @property
    def nnz(self) -> int:
        return sum(len(cells) for cells, _ in self._parts) - self._zeros

    @property
    def array(self) -> np.ndarray:
        """A dense copy (read-only: writes to it would not reach the layer)."""
        dense = self.private_array()
        dense.flags.writeable = False
        return dense

    def private_array(self) -> np.ndarray:
        dense = np.zeros(self._shape, dtype=self._dtype)
        flat = dense.reshape(-1)
        for cells, values in self._parts:
            flat[cells] = values
        return dense

    def coo(self) -> tuple[np.ndarray, np.ndarray]:
        """``(nnz, 2)`` int64 ``(y, x)`` of the non-zero cells, row-major order, and a copy of their values."""
        cells, values = self.cells, self.values
        if self._zeros:
            cells, values = _nonzero(cells, values)
        else:
            values = values.copy()
        return np.stack(np.divmod(cells, self._shape[1]), axis=1), values

    def window(self, rows: slice, cols: slice) -> np.ndarray:
        """Dense copy of ``[rows, cols]``, touching only the entries inside the window.

        Per window row and part, two binary searches find that row's entries.
        """
        height, width = self._shape
        r0, r1, _ = rows.indices(height)
        c0, c1, _ = cols.indices(width)
        out = np.zeros((max(0, r1 - r0), max(0, c1 - c0)), dtype=self._dtype)
        if out.size == 0:
            return out
        row_starts = np.arange(r0, r1, dtype=np.int64) * width
        for cells, values in self._parts:
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
        new = ~self._filter.may_hold(cells)
        maybe = np.flatnonzero(~new)
        if len(maybe):
            asked, amounts = cells[maybe], values[maybe]
            found = np.zeros(len(maybe), dtype=bool)
            for part_cells, part_values in self._parts:
                hit, at = _locate(part_cells, asked)
                if hit.any():
                    at = at[hit]
                    was_zero = int(np.count_nonzero(part_values[at] == 0))
                    update(part_values, at, amounts[hit], mode)
                    self._zeros += int(np.count_nonzero(part_values[at] == 0)) - was_zero
                    found |= hit
            new[maybe[~found]] = True
        fresh_cells, fresh = cells[new], values[new]
        if mode == "max":  # an absent cell holds 0
            fresh = np.maximum(fresh, self._dtype.type(0))
        nonzero = fresh != 0
        if not nonzero.all():
            fresh_cells, fresh = fresh_cells[nonzero], fresh[nonzero]
        if len(fresh_cells):
            self._parts.append((fresh_cells, fresh))
            if not self._filter.add(fresh_cells):
                self._filter = _Filter(self._parts, self.nnz)  # twice the cells it holds
            in_runs = sum(len(run_cells) for run_cells, _ in self._parts[1:])
            if len(self._parts) > _MAX_RUNS or in_runs > max(_RUN_MIN, len(self._parts[0][0]) // 2):
                self._settle()

    def _settle(self) -> None:
        """Merge the runs into main (the filter already knows their cells) and drop zeros."""
        if len(self._parts) == 1 and not self._zeros:
            return
        if self._zeros:
            self._parts = [_nonzero(cells, values) for cells, values in self._parts]
            self._zeros = 0
        main_cells, main_values = self._parts[0]
        if len(self._parts) == 1:
            return
        cells = np.concatenate([part_cells for part_cells, _ in self._parts[1:]])
        values = np.concatenate([part_values for _, part_values in self._parts[1:]])
        order = stable_order(cells)  # the runs' cells are distinct: any order of ties will do
        cells, values = cells[order], values[order]
        if len(main_cells):
            cells = np.concatenate([main_cells, cells])
            values = np.concatenate([main_values, values])
            order = np.argsort(cells, kind="stable")  # two sorted runs: one merge pass (timsort)
            cells, values = cells[order], values[order]
        self._parts = [(cells, values)]

    def decay(self, decay: float, threshold: float) -> int:
        """``v <- v * decay``; cells with ``|v| < threshold`` become 0. Returns nnz.

        A part where few cells fell below keeps them as zeros (one multiply by
        the keep-mask, no copy); one where many did is compacted. Zeros leave
        for good when the runs are merged.
        """
        factor = self._dtype.type(decay)
        decayed = [_decay(cells, values, factor, threshold) for cells, values in self._parts]
        self._parts = [(cells, values) for index, (cells, values, _) in enumerate(decayed)
                       if index == 0 or len(cells)]
        self._zeros = sum(zeros for _, _, zeros in decayed)
        return self.nnz

    def flush(self) -> None:
        if self._writable:
            _schema.write_coo(self._group, self._spec, self._name, *self.coo())

    def close(self) -> None:
        self._group = None


#: Runs are merged into main when there are more than _MAX_RUNS of them, or
#: when they hold more than max(_RUN_MIN, main / 2) cells.
_MAX_RUNS = 16
_RUN_MIN = 1 << 16
#: The filter has at least 2**_FILTER_MIN_BITS slots.
_FILTER_MIN_BITS = 12
#: Decay compacts a part when more than 1/_COMPACT_FRACTION of it is zeros.
_COMPACT_FRACTION = 4


class _Filter:
    """Which cells may be held: one bit per hash slot, at most an eighth of the slots set.

    ``may_hold`` is never wrong about a held cell; for an absent one it says
    "maybe" with probability below the load (<= 1/8 while no more cells were
    added than it was sized for; then ``add`` asks for a rebuild). Cells that
    decay away keep their bit until the next rebuild: that only costs a
    binary search. Size: 8 bits per cell it was sized for (held + growth),
    rounded up to a power of two: 1 to 2 bytes per cell.
    """

    _MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing: odd, bits well mixed

    def __init__(self, parts: list[tuple[np.ndarray, np.ndarray]], growth: int):
        held = sum(len(cells) for cells, _ in parts)
        self._bits = max(_FILTER_MIN_BITS, int(8 * (held + growth) - 1).bit_length())
        self._shift = np.uint64(64 - self._bits)
        self._room = (1 << self._bits) // 8 - held
        slots = np.zeros(1 << self._bits, dtype=np.uint8)  # one byte per bit while building
        for cells, _ in parts:
            slots[self._hash(cells)] = 1
        self._words = np.packbits(slots, bitorder="little")

    def _hash(self, cells: np.ndarray) -> np.ndarray:
        return (cells.view(np.uint64) * self._MULTIPLIER) >> self._shift

    def may_hold(self, cells: np.ndarray) -> np.ndarray:
        slot = self._hash(cells)
        bit = (slot & np.uint64(7)).astype(np.uint8)
        return ((self._words[slot >> np.uint64(3)] >> bit) & np.uint8(1)).view(bool)

    def add(self, cells: np.ndarray) -> bool:
        """Mark ``cells`` held; False once more cells were added than it was sized for.

        The slots are sorted and each byte is written once with the OR of its
        bits: faster than ``np.bitwise_or.at``, and the writes go in address order.
        """
        if len(cells):
            slots = np.sort(self._hash(cells))
            words = slots >> np.uint64(3)
            bits = np.left_shift(np.uint8(1), (slots & np.uint64(7)).astype(np.uint8))
            starts = np.flatnonzero(np.r_[True, words[1:] != words[:-1]])
            self._words[words[starts]] |= np.bitwise_or.reduceat(bits, starts)
        self._room -= len(cells)
        return self._room >= 0


def _locate(sorted_cells: np.ndarray, cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For sorted ``cells``: which are in ``sorted_cells``, and their positions there."""
    at = np.searchsorted(sorted_cells, cells)
    hit = at < len(sorted_cells)
    hit[hit] = sorted_cells[at[hit]] == cells[hit]
    return hit, at


def _nonzero(cells: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keep = values != 0
    return cells[keep], values[keep]


def _decay(cells: np.ndarray, values: np.ndarray, factor,
           threshold: float) -> tuple[np.ndarray, np.ndarray, int]:
    """Decay one part in place; return it (compacted if many of it are zeros) and its zeros."""
    if not len(values):
        return cells, values, 0
    if factor != 1:
        np.multiply(values, factor, out=values)
    # Nothing falls below when every value is at or above the threshold (or at
    # or below minus it): two reductions instead of building a mask.
    if threshold > 0 and (values.min() >= threshold or values.max() <= -threshold):
        return cells, values, 0
    keep = np.abs(values) >= threshold if threshold > 0 else values != 0  # zeros fail both
    zeros = len(values) - int(np.count_nonzero(keep))
    if zeros * _COMPACT_FRACTION > len(values):
        return cells[keep], values[keep], 0
    if zeros:
        np.multiply(values, keep, out=values)  # zero in place: no copy of the part
    return cells, values, zeros
