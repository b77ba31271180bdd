"""``memory`` storage: the layer held in RAM, written to the file at flush.

This is the baseline every benchmark compares ``mapped`` against, and the way
to turn mapping off for a class or a layer. It also opens layers that cannot
be mapped (chunked or compressed by another tool such as h5repack).
"""

from __future__ import annotations

import h5py
import numpy as np


class MemoryStorage:
    """A layer read into an in-RAM ``ndarray`` at open and written back at flush."""

    kind = "memory"

    def __init__(self, dset: h5py.Dataset, writable: bool):
        self._dset = dset
        self._writable = writable
        self._data = np.empty(dset.shape, dtype=dset.dtype)
        if self._data.size:
            dset.read_direct(self._data)
        if writable:
            self._array = self._data
        else:
            self._array = self._data.view()
            self._array.flags.writeable = False

    @property
    def array(self) -> np.ndarray:
        return self._array

    def private_array(self) -> np.ndarray:
        # In a read-only world nothing is ever written back, so the RAM copy
        # itself is private to this process.
        return self._data

    def flush(self) -> None:
        if self._writable and self._data.size:
            self._dset.write_direct(self._data)

    def close(self) -> None:
        self._dset = None  # type: ignore[assignment]
