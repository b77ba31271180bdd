"""HDF5's own writes, journaled: a writer killed at any instant leaves HDF5's structures whole.

HDF5 updates its metadata (object headers, chunk indexes, the superblock) in
place, and nothing in HDF5 makes those updates atomic. A ``kill -9`` does
tear them: Linux checks for a fatal signal between the pages (or large
folios) of one ``write`` call, so a killed process can leave the first part
of a write in the file and not the rest. A metadata entry that straddles
such a boundary is then half new, half old, and HDF5 refuses it ("incorrect
metadata checksum") at the next open. ``benchmarks/soak.py`` met this once
in about 1,700 kills, in a writer whose sparse layers change HDF5's
structures at every commit.

So a writer's HDF5 does not write the file directly. h5py opens it through
a :class:`JournaledFile` (h5py's ``fileobj`` driver), which keeps every
write to bytes the last consistent state can reach in memory, and serves
HDF5's reads of them from there. Writes past the end of that state's
allocation (new chunks, new metadata) go straight to the file: nothing
reachable refers to them until the in-place writes land. Whenever HDF5
finishes a flush (it calls the driver's ``flush``), the held writes go to
the file through one journal record:

1. write the record (its writes in HDF5's order, the end of file HDF5 asked
   for, a CRC-32) at the start of ``PATH-hdf5journal``;
2. apply the writes in order (the file first grown to the end HDF5 asked
   for, if longer; cut to it after, if shorter), the superblock written once,
   already marked with the flags this writer keeps (never first as HDF5 wrote
   it: a SWMR reader opening in between would read flags no writer keeps);
3. mark the record done: its first 8 bytes zeroed, one write within a page,
   which no kill can tear.

A kill during 1 leaves a record whose CRC fails: it is ignored, and the file
holds the state before, whole. A kill during 2 or 3 leaves a whole record:
:func:`finish` (run before anything opens the file for writing) or a
reader's :func:`overlay` applies it again; its writes are idempotent.

What this guards against is the death of the writing process (a kill, a
crash, an out-of-memory kill), whose page cache the kernel keeps. Nothing
here is fsync'd: a power cut between two checkpoints can still leave HDF5's
in-place writes half on disk, as it can for any HDF5 program (commits are
made durable by the commit journal and the checkpoint's fsync, see
:mod:`worldstore.commit`). Two fsyncs more per commit would close that too;
they would double the cost of a durable commit, so that is left as it is.

This module is the storage level: it knows files and byte ranges, not
worlds. Readers and SWMR readers never go through it: they read the file.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from typing import Callable, Iterable

from .. import _platform, _schema

SUFFIX = "-hdf5journal"
_MAGIC = b"WSH5JRN2"
_DONE = b"\0" * 8
#: magic, count of writes, end of file to truncate to (-1: none), the file's st_dev and st_ino, CRC-32
_HEAD = struct.Struct("<8sqqQQI")
_WRITE = struct.Struct("<qq")  # offset, length (then the bytes)


def journal_path(path: str) -> str:
    return path + SUFFIX


class HDF5JournalError(OSError):
    """An HDF5 journal record that cannot be applied (its file is shorter than it says, or unreadable)."""


class JournaledFile(io.RawIOBase):
    """The file object h5py opens a writer's world through (see the module's docstring).

    ``end_of_allocation(fd)`` reads the end of allocation of the superblock
    the file holds (``recovery.end_of_allocation``: the end of the state a
    kill would leave). ``commit()`` is called by HDF5's flush and by :meth:`close`;
    :meth:`blind` makes every later write go to an unlinked scratch file (a
    forked child, a replaced file).
    """

    def __init__(self, path: str, end_of_allocation: Callable[[int], int],
                 mark: Callable[[bytes, int], tuple[int, bytes] | None] | None = None, flags: int = 0):
        super().__init__()
        self.path = path
        self._end_of_allocation = end_of_allocation
        # The superblock's status flags, kept on disk as HDF5's POSIX driver keeps them (HDF5 marks no file
        # it opens through the fileobj driver): mark(first bytes, flags) gives the superblock so marked.
        self._mark = mark
        self.flags = flags
        self._flags_on_disk = 0
        self._fd: int | None = None
        self._journal_fd: int | None = None
        self._blinded = False
        self._journal_used = False  # this writer wrote PATH-hdf5journal (close() removes only its own)
        self._position = 0
        self._held: list[tuple[int, bytes]] = []  # (offset, bytes), in HDF5's order
        self._truncate: int | None = None
        self.journaled_bytes = 0  # bytes written to the journal so far (benchmarks)
        self._end: int | None = None  # read at the first write: HDF5 has checked the file by then
        self._locked = False
        fd = _platform.open_fd(path, os.O_RDWR)
        try:
            self._locked = _lock(fd)
        except BaseException:
            os.close(fd)
            super().close()  # closed, so that its finalizer has nothing to do (Python 3.13 reports what it raises)
            raise
        self._fd = fd

    # -- the file object h5py's fileobj driver uses --------------------------------------------------
    def readable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._fd

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if whence == os.SEEK_END:
            self._position = self._size() + offset
        else:
            self._position = (self._position if whence == os.SEEK_CUR else 0) + offset
        return self._position

    def tell(self) -> int:
        return self._position

    def _size(self) -> int:
        size = os.fstat(self._fd).st_size if self._truncate is None else self._truncate
        for offset, data in self._held:
            size = max(size, offset + len(data))
        return size

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        start = self._position
        count = _platform.readinto(self._fd, view, start)
        for offset, data in self._held:  # later writes over earlier ones, as in the file
            lo, hi = max(offset, start), min(offset + len(data), start + len(view))
            if lo < hi:
                view[lo - start:hi - start] = data[lo - offset:hi - offset]
                count = max(count, hi - start)
        self._position += count
        return count

    def write(self, buffer) -> int:
        data = memoryview(buffer).cast("B")
        start, length = self._position, len(data)
        if self._end is None:
            self._end = self._end_of_allocation(self._fd)
        split = min(max(self._end - start, 0), length)  # below: reachable from the state the file holds
        if split:
            self._held.append((start, bytes(data[:split])))
        if split < length:
            _platform.pwrite_all(self._fd, data[split:], start + split)
        self._position += length
        if self._truncate is not None:  # a truncation HDF5 asked for earlier ends where this write does, if later
            self._truncate = max(self._truncate, start + length)
        return length

    def truncate(self, size: int | None = None) -> int:
        self._truncate = self._position if size is None else size
        return self._truncate

    def flush(self) -> None:
        if not self.closed and self._fd is not None:
            self.commit()

    def close(self) -> None:
        if self.closed:
            return
        try:
            self.commit()
            if self._journal_used and not self._blinded and os.path.exists(journal_path(self.path)):
                os.unlink(journal_path(self.path))  # ours, and every record is marked done
        finally:
            fd, journal_fd, self._fd, self._journal_fd = self._fd, self._journal_fd, None, None
            os.close(fd)
            if journal_fd is not None:
                os.close(journal_fd)
            super().close()  # (its flush() finds no descriptor: nothing to commit twice)

    def unlock(self) -> None:
        """Let other HDF5 programs in (HDF5 drops its lock once a writer enters SWMR mode)."""
        if self._locked:
            _platform._fcntl().flock(self._fd, _platform._fcntl().LOCK_UN)
            self._locked = False

    def discard(self) -> None:
        """Forget the held writes (an open that failed: nothing of it reaches the file)."""
        self._held, self._truncate = [], None

    # -- the journal ----------------------------------------------------------------------------------
    def commit(self) -> None:
        """Write HDF5's held writes into the file through the journal (see the module's docstring)."""
        self._mark_superblock()
        if not self._held and self._truncate is None:
            return
        held, truncate = self._held, self._truncate
        record = encode(held, -1 if truncate is None else truncate, _platform.file_identity(self._fd))
        if self._journal_fd is None:
            self._journal_fd = _platform.open_fd(journal_path(self.path), os.O_RDWR | os.O_CREAT)
            self._journal_used = True
        _write_all(self._journal_fd, record, 0)
        self.journaled_bytes += len(record)
        _apply(self._fd, held, truncate)
        _platform.pwrite(self._journal_fd, _DONE, 0)
        self._held, self._truncate = [], None
        self._end = None  # the state the file holds now ends where its superblock says

    def _mark_superblock(self) -> None:
        """Hold the superblock as HDF5's writes leave it, with :attr:`flags`, if either changed it."""
        if self._mark is None:
            return
        touched = any(offset < _schema.SUPERBLOCK_SPAN for offset, _ in self._held)
        if not touched and self.flags == self._flags_on_disk:
            return
        first = bytearray(_platform.pread(self._fd, _schema.SUPERBLOCK_SPAN, 0))
        for offset, data in self._held:
            if offset < len(first):
                first[offset:offset + len(data)] = data[:len(first) - offset]
        marked = self._mark(bytes(first), self.flags)
        if marked is not None:
            # In place of HDF5's own writes of those bytes, not after them: applied one after the other, they
            # showed a SWMR reader opening meanwhile the superblock as HDF5 wrote it (flags HDF5 does not keep
            # through fileobj), whole and checksummed, and the reader refused the file ("not already open for
            # SWMR writing"), a to_xarray block beside a writer snapshotting in a loop.
            self._held = [*_outside(self._held, *marked), marked]
        self._flags_on_disk = self.flags

    def moved(self, path: str) -> None:
        """The file was renamed to ``path`` (``create`` renames the world it made into place): the journal
        goes with it, so that the next writer's open or ``recover`` finds it beside the file."""
        if self._journal_fd is not None:  # closed first: Windows renames no open file (reopened when needed)
            os.close(self._journal_fd)
            self._journal_fd = None
            if os.path.exists(journal_path(self.path)):
                os.replace(journal_path(self.path), journal_path(path))
        self.path = path

    def blind(self) -> None:
        """From now on, write nothing into the world file or its journal (a forked child; a replaced file)."""
        import tempfile

        self._held, self._truncate = [], None
        self._blinded = True
        with tempfile.TemporaryFile() as scratch:
            os.dup2(scratch.fileno(), self._fd)
            if self._journal_fd is not None:
                os.dup2(scratch.fileno(), self._journal_fd)


def _outside(writes: list[tuple[int, bytes]], offset: int, data: bytes) -> list[tuple[int, bytes]]:
    """``writes`` without their bytes in ``[offset, offset + len(data))`` (what a later write of ``data`` there
    covers), in their order."""
    end = offset + len(data)
    kept = []
    for at, piece in writes:
        if at < offset:
            kept.append((at, piece[:offset - at]))
        if at + len(piece) > end:
            start = max(at, end)
            kept.append((start, piece[start - at:]))
    return [(at, piece) for at, piece in kept if piece]


def _lock(fd: int) -> bool:
    """Take HDF5's own lock as its POSIX driver does for a writer (``flock``, exclusive, not waiting), so that
    other HDF5 programs are refused while this writer is not in SWMR mode; False where there is no ``flock``
    or ``HDF5_USE_FILE_LOCKING`` turns locking off."""
    fcntl = _platform._fcntl()
    if fcntl is None or not hasattr(fcntl, "flock") or \
            os.environ.get("HDF5_USE_FILE_LOCKING", "").upper() in ("FALSE", "0"):
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        raise OSError(exc.errno, f"unable to lock file, errno = {exc.errno}, error message = "
                      f"'{os.strerror(exc.errno)}'") from exc
    return True


def encode(writes: list[tuple[int, bytes]], truncate: int, identity: tuple[int, int] = (0, 0)) -> bytes:
    body = b"".join(_WRITE.pack(offset, len(data)) + data for offset, data in writes)
    fields = struct.pack("<qqQQ", len(writes), truncate, *identity)
    return _HEAD.pack(_MAGIC, len(writes), truncate, *identity, zlib.crc32(body, zlib.crc32(fields))) + body


#: How records and held writes are written (its own name: tests stand in for it to tear a write).
_write_all = _platform.pwrite_all


def _apply(fd: int, writes: Iterable[tuple[int, bytes]], truncate: int | None) -> None:
    """Apply a record: the file made as long as HDF5 asked first (the superblock written next may say it ends
    there: a SWMR reader opening between the two saw a file shorter than its superblock says, "truncated
    file", and gave up), then the writes in order, then the file cut to that length if HDF5 asked it shorter."""
    size = os.fstat(fd).st_size
    if truncate is not None and truncate > size:
        os.ftruncate(fd, truncate)
    for offset, data in writes:
        _write_all(fd, data, offset)
    if truncate is not None and 0 <= truncate < os.fstat(fd).st_size:
        os.ftruncate(fd, truncate)


def decode(data: bytes, identity: tuple[int, int] | None = None) -> tuple[list[tuple[int, bytes]], int] | None:
    """``(writes, truncate)`` of the record :func:`encode` made, or None: marked done, not whole (a writer
    killed while it wrote the record), which its CRC-32 tells, or written for a file other than
    ``identity`` (``(st_dev, st_ino)``; None: any)."""
    if len(data) < _HEAD.size:
        return None
    magic, count, truncate, device, inode, crc = _HEAD.unpack_from(data, 0)
    if identity is not None and (device, inode) != tuple(identity):
        return None
    if magic != _MAGIC or count < 0:
        return None
    body = memoryview(data)[_HEAD.size:]
    writes: list[tuple[int, bytes]] = []
    position = 0
    for _ in range(count):
        if position + _WRITE.size > len(body):
            return None
        offset, length = _WRITE.unpack_from(body, position)
        position += _WRITE.size
        if offset < 0 or length < 0 or position + length > len(body):
            return None
        writes.append((offset, bytes(body[position:position + length])))
        position += length
    if zlib.crc32(body[:position], zlib.crc32(struct.pack("<qqQQ", count, truncate, device, inode))) != crc:
        return None
    return writes, truncate


def read_record(path: str) -> tuple[list[tuple[int, bytes]], int] | None:
    """The whole record in ``path``'s HDF5 journal, not yet marked done, written for the file at ``path``:
    ``(writes, truncate)`` (-1: none), or None (no journal, a record marked done, one its writer did not
    finish, or one of a file that ``path`` no longer names)."""
    try:
        fd = _platform.open_fd(journal_path(path), os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        data = _platform.pread(fd, os.fstat(fd).st_size, 0)
    finally:
        os.close(fd)
    try:
        identity = _platform.file_identity(path)  # a record applies only to the file it was written for
    except FileNotFoundError:
        return None
    return decode(data, identity)


def pending(path: str) -> bool:
    """Whether ``path`` has a whole HDF5 journal record not yet marked done (its writer died applying it)."""
    return read_record(path) is not None


def finish(path: str) -> str | None:
    """Apply a whole record a killed writer left, fsync, and remove the journal; say what was done
    (``"replayed"``, ``"discarded"`` for a record cut short or already applied, None: no journal). The file
    must not be held by a live writer."""
    journal = journal_path(path)
    if not os.path.exists(journal):
        return None
    record = read_record(path)
    if record is None:
        os.unlink(journal)
        return "discarded"
    writes, truncate = record
    fd = _platform.open_fd(path, os.O_RDWR)
    try:
        _apply(fd, writes, truncate)
        _platform.durable_sync(fd)
    finally:
        os.close(fd)
    os.unlink(journal)
    return "replayed"


def overlay(path: str) -> tuple[list[tuple[int, bytes]], int | None]:
    """What a reader must see on top of the file's bytes without writing it: a whole record's writes and
    its end of file (None: the file's), as :func:`finish` would apply them."""
    record = read_record(path)
    if record is None:
        return [], None
    writes, truncate = record
    return writes, (truncate if truncate >= 0 else None)
