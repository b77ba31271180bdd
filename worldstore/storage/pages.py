"""Page sets: the pieces of one layer's file region that a commit writes, gathered and scattered by numpy.

A region is a layer's bytes in the file (``offset``, ``nbytes``), cut into
units of ``unit`` bytes: unit ``k`` covers bytes ``k * unit`` up to
``(k + 1) * unit`` (the last may be short). A commit's units are 64-byte lines
(:data:`LINE`, a cache line): the pages a writer wrote are compared with the
file, and only the lines that differ are journaled and written, so one changed
float costs 64 bytes, not a 4 KiB page (issue 15). A :class:`PageSet` holds the
unit numbers and their bytes, contiguous, so a commit journals them with one
write and writes them into the file with one numpy copy through a shared
mapping, however scattered they are: no per-unit Python or system call.
"""

from __future__ import annotations

import mmap

import numpy as np

from .. import _native, _platform
from ..errors import WorldFormatError

PAGE = mmap.PAGESIZE
#: What a commit journals and writes: 64-byte lines, the cache line of x86 and Arm (it divides every page size).
LINE = 64


class PageSet:
    """Units ``pages`` (sorted) of ``unit`` bytes of the region at ``offset`` (``nbytes`` long), with their
    bytes ``data``."""

    def __init__(self, offset: int, nbytes: int, pages: np.ndarray, data: np.ndarray, unit: int = PAGE):
        self.offset = offset
        self.nbytes = nbytes
        self.pages = np.ascontiguousarray(pages, dtype=np.int64)
        self.data = data
        self.unit = unit

    @classmethod
    def gather(cls, offset: int, region: np.ndarray, pages: np.ndarray, unit: int = PAGE) -> "PageSet":
        """The bytes of units ``pages`` of ``region`` (the region's bytes, a flat uint8 array), copied."""
        full, tail = _split(region, unit)
        inner = pages[pages < len(full)]
        parts = [full[inner].reshape(-1)]
        if len(inner) < len(pages):  # the last, short unit
            parts.append(tail)
        data = parts[0] if len(parts) == 1 else np.concatenate(parts)
        return cls(offset, len(region), pages, data, unit)

    @classmethod
    def changed(cls, fd: int, offset: int, region: np.ndarray,
                spans: list[tuple[int, int]] | None = None) -> "PageSet":
        """The 64-byte lines of ``region`` (this process's bytes for the file's region at ``offset``) that
        differ from the file, looked for within the ``(first, end)`` page ranges ``spans`` (default: everywhere)."""
        theirs = file_region(fd, offset, len(region), mmap.ACCESS_READ)
        if spans is None:
            spans = [(0, -(-len(region) // PAGE))]
        found = [_native.changed_lines(region[first * PAGE:end * PAGE], theirs[first * PAGE:end * PAGE], LINE)
                 + first * (PAGE // LINE) for first, end in spans]
        lines = np.unique(np.concatenate(found)) if found else np.empty(0, np.int64)
        return cls.gather(offset, region, lines, LINE)

    def scatter(self, region: np.ndarray) -> None:
        """Write the units into ``region`` (a flat, writable uint8 array of the region's bytes)."""
        full, tail = _split(region, self.unit)
        inner = self.pages[self.pages < len(full)]
        full[inner] = self.data[:len(inner) * self.unit].reshape(-1, self.unit)
        if len(inner) < len(self.pages):
            tail[...] = self.data[len(inner) * self.unit:]

    def write_into(self, fd: int) -> None:
        """Write the pages into the file behind ``fd``, through a temporary shared mapping of the region."""
        if len(self.pages):
            self.scatter(file_region(fd, self.offset, self.nbytes, mmap.ACCESS_WRITE))


def map_region(fd: int, offset: int, nbytes: int, access: int) -> tuple[mmap.mmap, int]:
    """Map ``nbytes`` of the file at ``offset``: ``(mapping, where they begin in it)`` (mmap offsets must be
    granularity-aligned).

    The mapping is guarded (``worldstore/_guard.c``): should the file be cut
    shorter while it is mapped, its pages past the end read zeros instead of
    ending the process with SIGBUS, and :func:`worldstore._native.cut_short` says so.
    """
    start = offset - offset % mmap.ALLOCATIONGRANULARITY
    mapping = mmap.mmap(fd, offset - start + nbytes, access=access, offset=start)
    if len(mapping):
        _native.guard(mapping, mapping_address(mapping), len(mapping))
    return mapping, offset - start


def mapping_address(mapping: mmap.mmap) -> int:
    """The address of a mapping's first byte."""
    return np.frombuffer(mapping, np.uint8, 1).ctypes.data


def read_into(fd: int, offset: int, region: np.ndarray) -> None:
    """Fill ``region`` (a flat, writable uint8 array) with the file's bytes from ``offset`` (positioned reads)."""
    view = memoryview(region)
    done = 0
    while done < len(view):
        count = _platform.readinto(fd, view[done:], offset + done)
        if count == 0:
            raise WorldFormatError(f"the file ends {len(view) - done} bytes before the end of a layer")
        done += count


def file_region(fd: int, offset: int, nbytes: int, access: int) -> np.ndarray:
    """The file's bytes ``[offset, offset + nbytes)`` as a flat uint8 array over a mapping of their own,
    unmapped when the array goes."""
    mapping, delta = map_region(fd, offset, nbytes, access)
    return np.frombuffer(mapping, np.uint8, nbytes, delta)


def _split(region: np.ndarray, unit: int) -> tuple[np.ndarray, np.ndarray]:
    """``region`` as whole units ``(n, unit)`` and the short last unit (possibly empty)."""
    whole = len(region) // unit * unit
    return region[:whole].reshape(-1, unit), region[whole:]


def runs(pages: np.ndarray) -> list[tuple[int, int]]:
    """Sorted page numbers as ``(first, end)`` runs of consecutive pages."""
    if not len(pages):
        return []
    breaks = np.flatnonzero(np.diff(pages) != 1) + 1
    starts = np.concatenate(([0], breaks))
    ends = np.concatenate((breaks, [len(pages)]))
    return list(zip(pages[starts].tolist(), (pages[ends - 1] + 1).tolist()))
