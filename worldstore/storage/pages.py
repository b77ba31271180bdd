"""Page sets: the pieces of one layer's file region that a commit writes, gathered and scattered by numpy.

A region is a layer's bytes in the file (``offset``, ``nbytes``), cut into
units of ``unit`` bytes: unit ``k`` covers bytes ``k * unit`` up to
``(k + 1) * unit`` (the last may be short). A commit's units are 64-byte lines
(:data:`LINE`, a cache line): the pages a writer wrote are compared with the
file, and only the lines that differ are journaled and written, so one changed
float costs 64 bytes, not a 4 KiB page (issue 15). A 4 KiB page whose first
8 lines all changed is kept whole (:data:`WHOLE`, see
``_native.changed_lines``), so a dense change is a list of pages rather than
of 64 lines each. The journal holds less still: of each
changed line, only its 8-byte words that differ from the file, after a byte
that says which (:meth:`PageSet.keep_words`), so one changed float32 costs
the journal 9 bytes and its line number, and the file its 64-byte line.
A :class:`PageSet` holds the
unit numbers and their bytes, contiguous, so a commit journals them with one
write and writes them into the file with one numpy copy through a shared
mapping, however scattered they are: no per-unit Python or system call.
"""

from __future__ import annotations

import concurrent.futures
import mmap

import numpy as np

from .. import _native, _platform
from ..errors import WorldFormatError

PAGE = mmap.PAGESIZE
#: What a commit journals and writes: 64-byte lines, the cache line of x86 and Arm (it divides every page size),
#: and whole 4 KiB pages whose first 8 lines changed (a dense change).
LINE = 64
WHOLE = _native.WHOLE_PAGE
#: The journal's unit within a changed line: a line has LINE // WORD words, one bit each in its mask byte.
WORD = 8


#: A run of whole pages at least this long is written into the file by ``pwrite`` (see :meth:`PageSet.write_into`).
_PWRITE_BYTES = 1 << 20
#: A commit compares at least this many bytes with the file on several threads (2 MiB blocks each).
_PARALLEL_BYTES = 4 << 20
_POOL: concurrent.futures.ThreadPoolExecutor | None = None


def pool() -> concurrent.futures.ThreadPoolExecutor:
    """The threads commits share (one per core the compiled kernels use)."""
    return _pool()


def _pool() -> concurrent.futures.ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = concurrent.futures.ThreadPoolExecutor(_native.threads, thread_name_prefix="worldstore-commit")
    return _POOL


class PageSet:
    """Units ``pages`` (sorted) of ``unit`` bytes of the region at ``offset`` (``nbytes`` long), with their
    bytes ``data``."""

    def __init__(self, offset: int, nbytes: int, pages: np.ndarray, data: np.ndarray | None, unit: int = PAGE,
                 view: np.ndarray | None = None):
        self.offset = offset
        self.nbytes = nbytes
        self.pages = np.ascontiguousarray(pages, dtype=np.int64)
        self.data = data  # the units' bytes, packed; None for a set read back in word form (masks, words)
        self.unit = unit
        self.view = view  # the region's bytes in the file, writable (a storage's FileView), or None
        self.masks: np.ndarray | None = None  # word form: a byte per line, bit w set if word w changed
        self.words: np.ndarray | None = None  # word form: the changed words' bytes, line by line (uint8)

    @classmethod
    def from_words(cls, offset: int, nbytes: int, pages: np.ndarray, masks: np.ndarray,
                   words: np.ndarray) -> "PageSet":
        """64-byte lines held as their changed words only (what a journal record keeps: see :meth:`keep_words`),
        which :meth:`scatter` writes over the region's other bytes."""
        page_set = cls(offset, nbytes, pages, None, LINE)
        if len(masks) != len(page_set.pages) or len(words) != WORD * _bits(masks):
            raise WorldFormatError("a journal record's changed words do not match its masks")
        if len(page_set.pages) and (page_set.pages[0] < 0 or (page_set.pages[-1] + 1) * LINE > nbytes):
            raise WorldFormatError("a journal record's lines lie beyond the end of their layer")
        page_set.masks, page_set.words = masks, words
        return page_set

    @property
    def file_bytes(self) -> int:
        """The bytes these units write into the file."""
        return self.data.nbytes if self.data is not None else len(self.pages) * self.unit

    @property
    def journal_bytes(self) -> int:
        """The bytes of the units' data in a journal record: the words and masks, or the units whole."""
        if self.masks is not None:
            return self.masks.nbytes + self.words.nbytes  # type: ignore[union-attr]
        return self.data.nbytes  # type: ignore[union-attr]

    def keep_words(self, theirs: np.ndarray) -> None:
        """For a set of whole 64-byte lines: note, line by line, the 8-byte words that differ from ``theirs`` (the
        file's bytes of the region, which the commit has not written yet), so the journal keeps those words and
        a byte of mask per line instead of whole lines (issue 15: the bytes a scattered commit writes, journal
        and file together, stay within twice the changed lines). The set itself still holds whole lines, which
        the commit writes into the file. A set with the region's short last line stays as it is."""
        count = len(self.pages)
        if self.unit != LINE or not count or (self.pages[-1] + 1) * LINE > len(theirs):
            return
        full, _ = _split(theirs, LINE)
        self.masks, self.words = _native.line_words(self.data.reshape(count, LINE), full,  # type: ignore[union-attr]
                                                    self.pages)

    @classmethod
    def gather(cls, offset: int, region: np.ndarray, pages: np.ndarray, unit: int = PAGE,
               view: np.ndarray | None = None) -> "PageSet":
        """The bytes of units ``pages`` of ``region`` (the region's bytes, a flat uint8 array), copied."""
        full, tail = _split(region, unit)
        inner = pages[pages < len(full)]
        if len(inner) == len(pages) and len(pages) > 1 and _one_run(pages):
            # One run (a dense change): its bytes are the region's own, which nothing writes until the
            # commit has journaled and applied them; a view spares the copy of a whole layer.
            return cls(offset, len(region), pages, full[pages[0]:pages[-1] + 1].reshape(-1), unit, view)
        parts = [_native.gather_units(full, inner).reshape(-1)]
        if len(inner) < len(pages):  # the last, short unit
            parts.append(tail)
        data = parts[0] if len(parts) == 1 else np.concatenate(parts)
        return cls(offset, len(region), pages, data, unit, view)

    @classmethod
    def changed(cls, fd: int, offset: int, region: np.ndarray, spans: list[tuple[int, int]] | None = None,
                view: np.ndarray | None = None) -> list["PageSet"]:
        """What of ``region`` (this process's bytes for the file's region at ``offset``) differs from the
        file, looked for within the ``(first, end)`` page ranges ``spans`` (default: everywhere): the 4 KiB
        pages taken whole (their first 8 lines changed), and the 64-byte lines that changed in the others,
        as up to two page sets. ``view``: the file's region already mapped (:class:`FileView`), which the
        commit then writes through."""
        theirs = view if view is not None else file_region(fd, offset, len(region), mmap.ACCESS_READ)
        if spans is None:
            spans = [(0, -(-len(region) // PAGE))]

        def search(span: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
            first, end = span
            pages, lines = _native.changed_lines(region[first * PAGE:end * PAGE], theirs[first * PAGE:end * PAGE],
                                                 LINE)
            return pages + first * (PAGE // WHOLE), lines + first * (PAGE // LINE)

        searched = sum(end - first for first, end in spans) * PAGE
        if len(spans) > 1 and searched >= _PARALLEL_BYTES and _native.threads > 1:  # memory-bound: every core
            found = list(_pool().map(search, spans))  # the compiled search runs without the GIL
        else:
            found = [search(span) for span in spans]
        sets = []
        for unit, column in ((WHOLE, 0), (LINE, 1)):
            units = np.concatenate([pair[column] for pair in found]) if found else np.empty(0, np.int64)
            if len(units) > 1 and not (units[1:] > units[:-1]).all():  # spans that overlap (sorted already else)
                units = np.unique(units)
            if len(units):
                sets.append(cls.gather(offset, region, units, unit, view))
                sets[-1].keep_words(theirs)
        return sets

    def scatter(self, region: np.ndarray) -> None:
        """Write the units into ``region`` (a flat, writable uint8 array of the region's bytes)."""
        if self.data is None:  # word form: each changed word at its line and slot
            lines, slots = np.nonzero(np.unpackbits(self.masks[:, None], axis=1, bitorder="little"))
            starts = self.pages[lines] * LINE + slots * WORD
            region[starts[:, None] + np.arange(WORD)] = self.words.reshape(-1, WORD)
            return
        full, tail = _split(region, self.unit)
        inner = self.pages[self.pages < len(full)]
        _native.scatter_units(full, inner, self.data[:len(inner) * self.unit].reshape(-1, self.unit))
        if len(inner) < len(self.pages):
            tail[...] = self.data[len(inner) * self.unit:]

    def write_into(self, fd: int) -> None:
        """Write the units into the file behind ``fd``, through the storage's mapping of the region (or a
        temporary one: a replay). One long run of whole pages (a dense change) goes by positioned writes
        instead: pages written back (by a checkpoint, or by the kernel between commits) are write-protected
        in a shared mapping, and a copy through it faults on each of them (measured in persist.py's dense
        case: 77 ms for a 256 MiB layer, 16 ms where no page had been written back), where ``pwrite`` dirties
        them in the page cache without a fault (27 ms, whichever)."""
        if self.data is not None and self.data.nbytes >= _PWRITE_BYTES and self.unit == WHOLE and \
                _one_run(self.pages) and self.data.flags.c_contiguous:
            _platform.pwrite_all(fd, memoryview(self.data), self.offset + int(self.pages[0]) * self.unit)
            return
        if len(self.pages):
            view = self.view if self.view is not None else file_region(fd, self.offset, self.nbytes,
                                                                       mmap.ACCESS_WRITE)
            self.scatter(view)


class FileView:
    """A writer's lasting shared mapping of one layer's bytes in the file, which its commits compare with and
    write through: a mapping made for each commit faults on every page it touches again (measured: 2.4 ms of
    a 12 ms step on a 2048 x 2048 loop), a lasting one only where the kernel cleaned a page it wrote back."""

    def __init__(self, fd: int, offset: int, nbytes: int):
        self._fd, self._offset, self._nbytes = fd, offset, nbytes
        self._array: np.ndarray | None = None

    @property
    def array(self) -> np.ndarray:
        """The region's bytes, a flat writable uint8 array (mapped on first use, by :func:`file_region`)."""
        if self._array is None:
            self._array = file_region(self._fd, self._offset, self._nbytes, mmap.ACCESS_WRITE)
        return self._array

    def close(self) -> None:
        """Let the mapping go (it is unmapped with the last array over it: a commit's page sets may hold one)."""
        self._array = None


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


def _one_run(units: np.ndarray) -> bool:
    """Whether sorted, distinct unit numbers (at least one) are consecutive: one run."""
    return bool(units[-1] - units[0] == len(units) - 1)


def _bits(masks: np.ndarray) -> int:
    """How many bits are set in a uint8 array."""
    return int(np.unpackbits(masks).sum()) if len(masks) else 0


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
