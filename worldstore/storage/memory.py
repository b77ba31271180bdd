"""``memory`` storage: the layer held in RAM, written to the file at commit.

This is the baseline every benchmark compares ``mapped`` against, and the way
to turn mapping off for a class or a layer. It also opens layers that cannot
be mapped (chunked or compressed by another tool such as h5repack).
"""

from __future__ import annotations

import os

import h5py
import numpy as np

from .pages import PAGE, FileView, PageSet, read_into


class MemoryStorage:
    """A layer read into an in-RAM ``ndarray`` at open and written back at flush."""

    kind = "memory"

    def __init__(self, dset: h5py.Dataset, writable: bool, fd: int | None = None, offset: int | None = None):
        self._dset = dset
        self._writable = writable
        # Where the dataset's bytes lie (contiguous datasets): commits patch the pages that changed.
        self._fd, self._offset = fd, offset
        # The writer's commits compare with and write through this mapping of the layer's bytes in the file.
        self._file_view = FileView(fd, offset, dset.size * dset.dtype.itemsize) \
            if writable and fd is not None and offset is not None else None
        self._data = np.empty(dset.shape, dtype=dset.dtype)
        if self._data.size and fd is not None and offset is not None:
            # The file's bytes themselves: HDF5 serves small contiguous datasets from its sieve buffer (64 KiB),
            # shared by every open of the file in a process, so a reader's read_direct could return the bytes
            # of an older commit than the one the reader's sequence check vouches for.
            read_into(fd, offset, self._data.reshape(-1).view(np.uint8))
        elif self._data.size:
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
        # A writer's array is its own already. A reader's RAM copy is what its layer's numpy(), [...],
        # window() and observe() read, so writes through a "private" array must go to a copy of it.
        return self._data if self._writable else self._data.copy()

    def own_array(self) -> np.ndarray:
        """The RAM array itself, writable even in a reader: for filling it in at open (a COO form)."""
        return self._data

    def patches(self) -> list[PageSet] | None:
        """The 64-byte lines that differ from the file, with their bytes; None if the dataset is not contiguous."""
        if not self._writable or not self._data.size:
            return []
        if self._fd is None or self._offset is None:
            return None
        region = self._data.reshape(-1).view(np.uint8)
        if os.fstat(self._fd).st_size < self._offset + len(region):  # shorter than at open: write it all
            return [PageSet.gather(self._offset, region, np.arange(-(-len(region) // PAGE)))]
        return PageSet.changed(self._fd, self._offset, region, view=self._file_view.array)

    def cut_short(self) -> bool:
        return False  # read with pread, which reports a short file itself

    def drop_private(self) -> None:
        pass

    def flush(self) -> None:
        """Write the whole layer through HDF5 (for datasets that ``patches`` cannot handle)."""
        if self._writable and self._data.size:
            self._dset.write_direct(self._data)

    def close(self) -> None:
        self._dset = None  # type: ignore[assignment]
        if self._file_view is not None:
            self._file_view.close()
