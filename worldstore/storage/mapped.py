"""``mapped`` storage: an ndarray view straight over the file's bytes.

The layer is a contiguous, uncompressed dataset whose blocks were reserved at
creation, so its bytes sit at one file offset. We ``mmap`` that range and hand
out a plain ``numpy.ndarray`` over it (not a ``numpy.memmap``, whose subclass
overhead makes slicing ~2.7x slower): reads and writes cost what in-RAM numpy
costs once pages are resident, and pages only read are page cache, not
anonymous memory, so a process's RSS follows what it touches.

Readers map ``MAP_SHARED`` read-only and see each commit as it lands. A
writer keeps the file at the last commit by copying what it writes:

- 2-D layers are mapped shared but read-only and handed to the block copier
  (``worldstore/_cow.c``): the first write into a 2 MiB block copies it into
  anonymous memory on huge pages. :meth:`MappedStorage.patches` compares the
  copied blocks with the file to find the changed pages.
- Agent layers (and every layer where the compiled library is missing, or
  the copier has no room) are mapped copy-on-write (``MAP_PRIVATE``): the
  kernel copies 4 KiB pages, found through ``/proc/self/pagemap`` (present and
  no longer the file's page).

The commit journals and writes the 64-byte lines of those pages that differ
from the file (see ``worldstore.commit``). :meth:`MappedStorage.drop_private`
then keeps a writer's 2 MiB copies, read-only, while they fit in the budget
(:data:`KEEP_BYTES`): the next write into one only marks it written again, with
no copy (issue 15). Past the budget, and for ``MAP_PRIVATE`` pages, the copies
go and read the file again.
"""

from __future__ import annotations

import ctypes
import math
import mmap
import os

import numpy as np

from .. import _native, _platform
from .pages import PAGE, FileView, PageSet, map_region, runs

#: The blocks a writer copies on first write (worldstore/_cow.c): 2 MiB, a huge page.
_BLOCK = 2 << 20
#: Dirty-block arrays of registered mappings, kept alive while the C side may write them.
_REGISTERED: dict[int, np.ndarray] = {}
#: Block states in those arrays (worldstore/_cow.c): the file's pages, a copy written since the last commit,
#: a copy kept after a commit (read-only, equal to the file).
_FILE, _WRITTEN, _KEPT = 0, 1, 2


def _keep_bytes() -> int:
    """How much memory a writer's kept copies may take: ``WORLDSTORE_KEEP_COPIES`` (bytes; 0 keeps none),
    else a quarter of the machine's memory."""
    setting = os.environ.get("WORLDSTORE_KEEP_COPIES")
    if setting is not None:
        return max(int(setting), 0)
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 4
    except (ValueError, OSError, AttributeError):
        return 1 << 30


#: The most memory (bytes) the 2 MiB copies kept after commits may take in one process, all layers together.
#: Kept copies make the next step's first writes cost a fault instead of a 2 MiB copy each; past this they
#: are dropped at commit, as before, so a world larger than memory still runs in what it touches per step.
KEEP_BYTES = _keep_bytes()
#: Bytes of copies each registered mapping keeps (by its id in worldstore/_cow.c).
_KEPT_BYTES: dict[int, int] = {}

_PRESENT, _SWAPPED, _FILE_PAGE = np.uint64(1 << 63), np.uint64(1 << 62), np.uint64(1 << 61)


def private_pages(address: int, nbytes: int) -> np.ndarray | None:
    """Indices of the pages of ``[address, address + nbytes)`` that are this process's own copies.

    In a ``MAP_PRIVATE`` file mapping those are exactly the pages written
    since they were last dropped. None where ``/proc/self/pagemap`` cannot be read.
    """
    if not _platform.PAGEMAP:
        return None
    first, count = address // PAGE, -(-(address + nbytes) // PAGE) - address // PAGE
    try:
        fd = os.open("/proc/self/pagemap", os.O_RDONLY)
    except OSError:
        return None
    try:
        entries = np.frombuffer(_platform.pread(fd, count * 8, first * 8), np.uint64)
    except OSError:
        return None
    finally:
        os.close(fd)
    if len(entries) != count:
        return None
    own = ((entries & _PRESENT) != 0) & ((entries & _FILE_PAGE) == 0)
    return np.flatnonzero(own | ((entries & _SWAPPED) != 0))


def _prefer_huge_pages(mapping: mmap.mmap) -> None:
    """Ask for 2 MiB pages where the kernel maps files with them (ext4 on Linux >= 6.16).

    Random window reads and scatters over a large layer are TLB-bound: with
    4 KiB pages they measured ~1.2x in-RAM numpy (which gets transparent huge
    pages), with 2 MiB pages ~1.0x. Elsewhere the advice is a harmless no-op.
    """
    _platform.advise_huge_pages(mapping)


class MappedStorage:
    """A layer mapped from the file: copy-on-write in the writer, shared read-only in readers."""

    kind = "mapped"

    def __init__(self, fd: int, offset: int, shape: tuple[int, ...], dtype: np.dtype, writable: bool):
        self._fd = fd
        self._offset = offset
        self._shape = shape
        self._dtype = np.dtype(dtype)
        self._count = math.prod(shape)
        self._writable = writable
        # A writer copies written blocks of 2 MiB itself (worldstore/_cow.c), so they stay huge pages, for
        # 2-D grids (where random access over the whole grid is the rule). Agent layers (a plane per agent,
        # each written in small windows) and worlds without the compiled library: the kernel copies 4 KiB
        # pages (MAP_PRIVATE), so memory follows the windows written. Readers map the file read-only.
        self._cow_id: int | None = None
        self._private: np.ndarray | None = None
        self._written = np.empty(0, np.int64)  # mapping pages found written by the last patches()
        # The writer's commits compare with and write through this mapping of the layer's bytes in the file.
        self._file_view = FileView(fd, offset, self._count * self._dtype.itemsize) if writable else None
        if writable and _native.cow_library is not None and _platform.BLOCK_COPIER and len(shape) == 2:
            self._mapping(mmap.ACCESS_WRITE)
            if self._start_blocks():
                return
        self._mapping(mmap.ACCESS_COPY if writable else mmap.ACCESS_READ)

    def _mapping(self, access: int) -> None:
        nbytes = self._count * self._dtype.itemsize
        self._map, delta = map_region(self._fd, self._offset, nbytes, access)
        _prefer_huge_pages(self._map)
        self._array = np.frombuffer(self._map, self._dtype, self._count, delta).reshape(self._shape)
        # The mapping's first byte, and where the layer's bytes lie in it.
        self._address = self._array.__array_interface__["data"][0] - delta
        self._begin, self._end = delta, delta + nbytes

    def _start_blocks(self) -> bool:
        """Hand the (shared, writable) mapping to the block copier; False if it could not take it."""
        library = _native.cow_library
        self._dirty = np.zeros(library.ws_cow_blocks(self._address, len(self._map)), dtype=np.uint8)
        cow_id = library.ws_cow_register(self._address, len(self._map), self._fd, self._offset - self._begin,
                                         self._dirty.ctypes.data)
        if cow_id < 0:  # no room for another region, or mprotect refused: map it MAP_PRIVATE instead
            self._array = None  # type: ignore[assignment]
            self._map.close()  # writable and shared: nothing may be written through it
            return False
        self._cow_id = cow_id
        _REGISTERED[cow_id] = self._dirty  # alive as long as the registration
        return True

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
            private, delta = map_region(self._fd, self._offset, self._count * self._dtype.itemsize,
                                  mmap.ACCESS_COPY)
            _prefer_huge_pages(private)
            self._private = np.frombuffer(private, self._dtype, self._count, delta).reshape(self._shape)
        return self._private

    def patches(self) -> list[PageSet]:
        """The 64-byte lines of the layer written since the last commit (found in the pages written), with their
        bytes."""
        if not self._writable:
            return []
        if self._cow_id is not None:
            return self._block_patches()
        mapping_pages = -(-self._end // PAGE)
        private = private_pages(self._address, self._end)
        region = self._array.reshape(-1).view(np.uint8)
        if private is None:  # no pagemap: the pages that differ from the file are the ones written
            self._written = np.arange(mapping_pages)
            return PageSet.changed(self._fd, self._offset, region, view=self._file_view.array)
        self._written = private
        # The layer's page k (from its first byte) spans mapping pages (begin + k*PAGE) // PAGE to that of
        # its last byte; one of them written makes it written (the same page when the layer is aligned).
        written = np.zeros(mapping_pages, dtype=bool)
        written[private] = True
        nbytes = self._end - self._begin
        first = np.arange(-(-nbytes // PAGE), dtype=np.int64) * PAGE + self._begin
        last = np.minimum(first + PAGE, self._end) - 1
        pages = np.flatnonzero(written[first // PAGE] | written[last // PAGE])
        return PageSet.changed(self._fd, self._offset, region, runs(pages), self._file_view.array)

    def _block_patches(self) -> list[PageSet]:
        """Lines of the blocks copied since the last commit that differ from the file."""
        blocks = np.flatnonzero(self._dirty == _WRITTEN)
        if not len(blocks):
            return []
        nbytes = self._end - self._begin
        skew = self._address % _BLOCK  # where the mapping starts within its first block
        spans = []
        for block in blocks.tolist():
            lo = max(block * _BLOCK - skew - self._begin, 0)  # the block's bytes, from the layer's first
            hi = min((block + 1) * _BLOCK - skew - self._begin, nbytes)
            if lo < hi:
                spans.append((lo // PAGE, -(-hi // PAGE)))
        return PageSet.changed(self._fd, self._offset, self._array.reshape(-1).view(np.uint8), spans,
                                self._file_view.array)

    def cut_short(self) -> bool:
        """Whether the file was cut shorter under this layer's mappings (see ``worldstore/_guard.c``)."""
        mappings = [(self._address, self._end)]
        if self._private is not None:
            mappings.append((self._private.__array_interface__["data"][0], self._private.nbytes))
        return any(_native.cut_short(address, nbytes) for address, nbytes in mappings)

    def drop_private(self) -> None:
        """After a commit: the copies are kept, read-only (within :data:`KEEP_BYTES`), or read the file again
        (which now holds the same bytes)."""
        if self._cow_id is not None:
            library, cow_id = _native.cow_library, self._cow_id
            kept = library.ws_cow_keep(cow_id) if KEEP_BYTES else -1
            if kept < 0 or kept + sum(_KEPT_BYTES.values()) - _KEPT_BYTES.get(cow_id, 0) > KEEP_BYTES:
                if library.ws_cow_reset(cow_id) != 0:
                    raise OSError(ctypes.get_errno(), "cannot map a committed block of a layer back from the file")
                kept = 0
            _KEPT_BYTES[cow_id] = kept
            return
        written, self._written = self._written, np.empty(0, np.int64)
        # Where copies cannot be dropped (no madvise), they stay: they hold what the file now holds, and the
        # next commit compares them with the file again.
        if len(written) > 64:  # one call for the whole mapping (clean pages just map again when touched)
            _platform.drop_private_pages(self._map)
            return
        for first, end in runs(written):
            _platform.drop_private_pages(self._map, first * PAGE, min(end * PAGE, len(self._map)) - first * PAGE)

    def close(self) -> None:
        if self._file_view is not None:
            self._file_view.close()
        mapping = self._map
        self._array = self._private = None  # type: ignore[assignment]
        try:
            mapping.close()
        except BufferError:
            # The caller still holds views: the mapping stays alive (and valid)
            # until the last of them is garbage-collected; a writer's stays registered, so writes
            # through them still go to the process's own copies (and never to the file).
            return
        if self._cow_id is not None:
            _native.cow_library.ws_cow_unregister(self._cow_id)
            _REGISTERED.pop(self._cow_id, None)
            _KEPT_BYTES.pop(self._cow_id, None)
            self._cow_id = None
