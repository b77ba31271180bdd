"""``memory`` storage: the layer held in RAM, written to the file at commit.

This is the baseline every benchmark compares ``mapped`` against, and the way
to turn mapping off for a class or a layer. It also opens layers that cannot
be mapped (chunked or compressed by another tool such as h5repack).
"""

from __future__ import annotations

import os

import h5py
import numpy as np

from .pages import PAGE, PageSet


class MemoryStorage:
    """A layer read into an in-RAM ``ndarray`` at open and written back at flush."""

    kind = "memory"

    def __init__(self, dset: h5py.Dataset, writable: bool, fd: int | None = None, offset: int | None = None):
        self._dset = dset
        self._writable = writable
        # Where the dataset's bytes lie (contiguous datasets): commits patch the pages that changed.
        self._fd, self._offset = fd, offset
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

    def patches(self) -> list[PageSet] | None:
        """The pages that differ from the file, with their bytes; None if the dataset is not contiguous."""
        if not self._writable or not self._data.size:
            return []
        if self._fd is None or self._offset is None:
            return None
        region = self._data.reshape(-1).view(np.uint8)
        if os.fstat(self._fd).st_size < self._offset + len(region):  # shorter than at open: write it all
            return [PageSet.gather(self._offset, region, np.arange(-(-len(region) // PAGE)))]
        return [PageSet.changed(self._fd, self._offset, region)]

    def drop_private(self) -> None:
        pass

    def flush(self) -> None:
        """Write the whole layer through HDF5 (for datasets that ``patches`` cannot handle)."""
        if self._writable and self._data.size:
            self._dset.write_direct(self._data)

    def close(self) -> None:
        self._dset = None  # type: ignore[assignment]
