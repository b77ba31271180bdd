"""``mapped`` storage: an ndarray view straight over the file's bytes.

The layer is a contiguous, uncompressed dataset whose blocks were reserved at
creation, so its bytes sit at one file offset. We ``mmap`` that range with
``MAP_SHARED`` and hand out a plain ``numpy.ndarray`` over it (not a
``numpy.memmap``, whose subclass overhead makes slicing ~2.7x slower): reads
and writes cost what in-RAM numpy costs once pages are resident, and resident
pages are page cache, not anonymous memory, so a process's RSS follows what it
touches.
"""

from __future__ import annotations

import math
import mmap

import numpy as np


def _map(fd: int, offset: int, nbytes: int, access: int) -> tuple[mmap.mmap, int]:
    """Map ``nbytes`` at ``offset``; mmap offsets must be granularity-aligned."""
    start = offset - offset % mmap.ALLOCATIONGRANULARITY
    return mmap.mmap(fd, offset - start + nbytes, access=access, offset=start), offset - start


def _prefer_huge_pages(mapping: mmap.mmap) -> None:
    """Ask for 2 MiB pages where the kernel maps files with them (ext4 on Linux >= 6.16).

    Random window reads and scatters over a large layer are TLB-bound: with
    4 KiB pages they measured ~1.2x in-RAM numpy (which gets transparent huge
    pages), with 2 MiB pages ~1.0x. Elsewhere the advice is a harmless no-op.
    """
    try:
        mapping.madvise(mmap.MADV_HUGEPAGE)
    except (AttributeError, OSError):
        pass


class MappedStorage:
    """A layer mapped from the file (``MAP_SHARED``; read-only worlds map read-only)."""

    kind = "mapped"

    def __init__(self, fd: int, offset: int, shape: tuple[int, ...], dtype: np.dtype, writable: bool):
        self._fd = fd
        self._offset = offset
        self._shape = shape
        self._dtype = np.dtype(dtype)
        self._count = math.prod(shape)
        self._writable = writable
        access = mmap.ACCESS_WRITE if writable else mmap.ACCESS_READ
        self._map, delta = _map(fd, offset, self._count * self._dtype.itemsize, access)
        _prefer_huge_pages(self._map)
        self._array = np.frombuffer(self._map, self._dtype, self._count, delta).reshape(shape)
        self._private: np.ndarray | None = None

    @property
    def array(self) -> np.ndarray:
        return self._array

    def private_array(self) -> np.ndarray:
        if self._writable:
            return self._array
        if self._private is None:
            # MAP_PRIVATE: untouched pages still show the file; written pages
            # become this process's own copies, so a tensor over a read-only
            # world can be written without a fault and without changing the file.
            private, delta = _map(self._fd, self._offset, self._count * self._dtype.itemsize,
                                  mmap.ACCESS_COPY)
            _prefer_huge_pages(private)
            self._private = np.frombuffer(private, self._dtype, self._count, delta).reshape(self._shape)
        return self._private

    def flush(self) -> None:
        if self._writable:
            self._map.flush()  # msync(MS_SYNC) of the dirty pages

    def close(self) -> None:
        mapping = self._map
        self._array = self._private = None  # type: ignore[assignment]
        try:
            mapping.close()
        except BufferError:
            # The caller still holds views: the mapping stays alive (and valid)
            # until the last of them is garbage-collected.
            pass
