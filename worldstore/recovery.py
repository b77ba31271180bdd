"""Recovery after a writer was killed: HDF5's status flags cleared, as ``h5clear -s`` does.

A file opened for writing with HDF5's 1.10 format carries "open for write"
flags in its superblock until it is closed. A writer killed by SIGKILL or a
scheduler never clears them, and HDF5 then refuses every later open ("file is
already open for write"). :func:`worldstore.recover` checks that no process holds the
file (HDF5 takes a ``flock`` on it while open), then sets the flags to zero
and rewrites the superblock's checksum (Bob Jenkins' lookup3, as HDF5
computes it). ``worldstore.open`` does this by itself when it meets such a
file; ``worldstore recover PATH`` does it explicitly and says what it did.

Live layers need no rolling back: the writer's changes reach the file only
through commits (see :mod:`worldstore.commit`), so the file holds the last
commit, except while one is being written; a commit the kill interrupted is
finished from its journal (``PATH-journal``) when it was whole, or discarded.
"""

from __future__ import annotations

import io
import os
from typing import Any

from . import _platform, _schema
from .errors import WorldFormatError, WorldLockedError, WorldReplacedError
from .storage import hdf5journal

_SIGNATURE = b"\x89HDF\r\n\x1a\n"
#: HDF5's superblock status flags of a file open for writing (H5F_SUPER_WRITE_ACCESS), for SWMR writing
#: (H5F_SUPER_SWMR_WRITE_ACCESS).
WRITE_FLAG = 0x01
SWMR_WRITE_FLAG = 0x04
_MASK = 0xFFFFFFFF


def _rot(value: int, bits: int) -> int:
    return ((value << bits) | (value >> (32 - bits))) & _MASK


def lookup3(data: bytes, initval: int = 0) -> int:
    """Bob Jenkins' lookup3 ``hashlittle``, byte by byte, as HDF5's ``H5_checksum_lookup3``."""
    length = len(data)
    a = b = c = (0xDEADBEEF + length + initval) & _MASK
    offset = 0
    while length > 12:
        a = (a + int.from_bytes(data[offset:offset + 4], "little")) & _MASK
        b = (b + int.from_bytes(data[offset + 4:offset + 8], "little")) & _MASK
        c = (c + int.from_bytes(data[offset + 8:offset + 12], "little")) & _MASK
        a = (a - c) & _MASK; a ^= _rot(c, 4); c = (c + b) & _MASK  # noqa: E702 - lookup3's mix, as written
        b = (b - a) & _MASK; b ^= _rot(a, 6); a = (a + c) & _MASK  # noqa: E702
        c = (c - b) & _MASK; c ^= _rot(b, 8); b = (b + a) & _MASK  # noqa: E702
        a = (a - c) & _MASK; a ^= _rot(c, 16); c = (c + b) & _MASK  # noqa: E702
        b = (b - a) & _MASK; b ^= _rot(a, 19); a = (a + c) & _MASK  # noqa: E702
        c = (c - b) & _MASK; c ^= _rot(b, 4); b = (b + a) & _MASK  # noqa: E702
        length -= 12
        offset += 12
    if length == 0:
        return c
    tail = data[offset:] + bytes(12 - length)
    a = (a + int.from_bytes(tail[0:4], "little")) & _MASK
    b = (b + int.from_bytes(tail[4:8], "little")) & _MASK
    c = (c + int.from_bytes(tail[8:12], "little")) & _MASK
    c ^= b; c = (c - _rot(b, 14)) & _MASK  # noqa: E702 - lookup3's final, as written
    a ^= c; a = (a - _rot(c, 11)) & _MASK  # noqa: E702
    b ^= a; b = (b - _rot(a, 25)) & _MASK  # noqa: E702
    c ^= b; c = (c - _rot(b, 16)) & _MASK  # noqa: E702
    a ^= c; a = (a - _rot(c, 4)) & _MASK  # noqa: E702
    b ^= a; b = (b - _rot(a, 14)) & _MASK  # noqa: E702
    c ^= b; c = (c - _rot(b, 24)) & _MASK  # noqa: E702
    return c


def _signature_offset(data: bytes) -> int | None:
    """Where the superblock's signature lies in the file's first bytes (HDF5 looks at 0, 512, ... 4096), or None."""
    for offset in (0, 512, 1024, 2048, 4096):
        if data[offset:offset + 8] == _SIGNATURE:
            return offset
    return None


def _superblock(data: bytes, path: str) -> tuple[int, int, int, int]:
    """``(offset, length before the checksum, status flags, size of offsets)`` of a version 2 or 3 superblock."""
    offset = _signature_offset(data)
    if offset is None:
        raise WorldFormatError(f"{path}: no HDF5 superblock signature found")
    if len(data) < offset + 12:
        raise WorldFormatError(f"{path}: the file ends inside its superblock ({len(data)} bytes)")
    version = data[offset + 8]
    if version not in (2, 3):
        raise WorldFormatError(f"{path}: superblock version {version}; only versions 2 and 3 carry status flags")
    size_of_offsets = data[offset + 9]
    if size_of_offsets not in (2, 4, 8, 16):
        raise WorldFormatError(f"{path}: superblock has an invalid size of offsets ({size_of_offsets})")
    length = 12 + 4 * size_of_offsets
    if len(data) < offset + length + 4:
        raise WorldFormatError(f"{path}: the file ends inside its superblock ({len(data)} bytes)")
    stored = int.from_bytes(data[offset + length:offset + length + 4], "little")
    if lookup3(data[offset:offset + length]) != stored:
        raise WorldFormatError(f"{path}: the superblock's checksum is wrong: the file is damaged, not just "
                               "left open by a killed writer")
    return offset, length, data[offset + 11], size_of_offsets




def _read_superblock(file: int | str | os.PathLike) -> tuple[bytes, tuple[int, int, int, int]]:
    """The first bytes of the file (a path, or an open descriptor) and :func:`_superblock` of them."""
    if isinstance(file, int):
        data = _platform.pread(file, _schema.SUPERBLOCK_SPAN, 0)
        return data, _superblock(data, f"file descriptor {file}")
    path = os.fspath(file)
    with open(path, "rb") as f:
        data = f.read(_schema.SUPERBLOCK_SPAN)
    return data, _superblock(data, path)


def status_flags(path: str | os.PathLike) -> int:
    """The superblock's status flags: 0 when no writer has the file open (or left it so)."""
    return _read_superblock(path)[1][2]


def end_of_allocation(file: int | str | os.PathLike) -> int:
    """The superblock's end-of-allocation address (HDF5's EOA), of a path or of an open descriptor (a writer's:
    its path may name another file by now)."""
    data, (offset, _, _, size) = _read_superblock(file)
    return _end_of_allocation(data, offset, size)


def _end_of_allocation(data: bytes, offset: int, size: int) -> int:
    """The end-of-allocation address of the version 2 or 3 superblock at ``offset`` with ``size``-byte offsets."""
    field = offset + 12 + 2 * size  # base address, superblock extension address, then the EOA
    return int.from_bytes(data[field:field + size], "little")


#: The files this process holds as a writer, by ``(st_dev, st_ino)``, with the descriptor that holds each
#: lock: a second open in the same process is told that this process holds the file, not another one.
_HELD: dict[tuple[int, int], int] = {}


def hold_writer_lock(fd: int, path: str) -> int:
    """Mark this process as the writer of the file ``fd`` has open (at ``path``); return the descriptor that
    holds the mark (:func:`release_writer_lock` releases it).

    The lock is ``_platform.hold_writer``'s: an OFD lock on a descriptor of
    its own (mappings keep duplicates of the descriptors they were made from
    alive, and a lock on one of those would outlive ``World.close()``), or
    the fallback's lock file. HDF5's own lock cannot say this: HDF5 drops it
    once a writer enters SWMR mode.
    """
    identity = file_identity(fd)
    try:
        lock_fd = _platform.hold_writer(path)
    except _platform.LockBusy as exc:
        if identity in _HELD:
            raise held_here(path) from exc
        raise WorldLockedError(f"{path} has a writer already (another process opened it with mode='r+'); "
                               "one writer per file") from exc
    if file_identity(path) != identity:
        _platform.release_writer(lock_fd)
        raise WorldReplacedError(f"{path} was replaced while it was being opened; open it again")
    _HELD[identity] = lock_fd
    return lock_fd


def held_here(path: str) -> WorldLockedError:
    return WorldLockedError(f"{path} is open for writing in this process already (a world not yet closed); close "
                            "that world, or use it, before opening the file again with mode='r+'")


def held_by_this_process(path: str) -> bool:
    """Whether a world this process opened for writing holds ``path``."""
    try:
        return file_identity(path) in _HELD
    except OSError:
        return False


def release_writer_lock(lock_fd: int) -> None:
    """Release the lock :func:`hold_writer_lock` returned: the file has no writer in this process now."""
    for identity, held in list(_HELD.items()):
        if held == lock_fd:
            del _HELD[identity]
    _platform.release_writer(lock_fd)


def forget_writer_locks() -> None:
    """In a forked child: the writer locks are the parent's (the child shares them, never holds them)."""
    _HELD.clear()
    _platform.forget_inherited_locks()


file_identity = _platform.file_identity


def writer_alive(path: str | os.PathLike) -> bool:
    """Whether a worldstore writer process holds ``path`` (its lock from :func:`hold_writer_lock`)."""
    return _platform.writer_alive(os.fspath(path))


def in_use(path: str | os.PathLike) -> bool:
    """Whether a process holds the file: a worldstore writer, or anyone through HDF5 (its ``flock``)."""
    return writer_alive(path) or _platform.hdf5_lock_held(os.fspath(path))


def clear_status_flags(path: str | os.PathLike) -> bool:
    """Clear the "open for write" flags a killed writer left; False if there were none.

    As ``h5clear -s -i`` does, the end-of-allocation address is also moved up
    to the end of the file where the writer had written past it: a writer
    killed in the middle of HDF5's flush can leave the superblock's EOA older
    than the objects the flush already wrote, which HDF5 then refuses to
    read ("addr overflow"). Refuses (:class:`WorldLockedError`) while a
    process holds the file.
    """
    path = os.fspath(path)
    if in_use(path):
        raise WorldLockedError(f"{path} is held open by another process; recovery is for files whose writer is "
                               "gone")
    fd = _platform.open_fd(path, os.O_RDWR)
    try:
        first = _platform.pread(fd, _schema.SUPERBLOCK_SPAN, 0)
        cleared = cleared_superblock(first, os.fstat(fd).st_size, path)
        if cleared is None:
            return False
        _platform.pwrite(fd, cleared[1], cleared[0])
        _platform.durable_sync(fd)
        return True
    finally:
        os.close(fd)


def marked_superblock(data: bytes, flags: int, path: str) -> tuple[int, bytes]:
    """``(offset, bytes)`` of the superblock in ``data`` (the file's first bytes) with status ``flags`` and its
    checksum anew: what HDF5's POSIX driver writes as a writer opens (``WRITE_FLAG``), enters SWMR mode (and
    ``SWMR_WRITE_FLAG``) and closes (0). A writer that HDF5 drives through an HDF5 journal writes them itself
    (:class:`.storage.hdf5journal.JournaledFile`): HDF5 does not mark a file it opens through h5py's
    ``fileobj`` driver."""
    offset, length, _, _ = _superblock(data, path)
    block = bytearray(data[offset:offset + length])
    block[11] = flags
    return offset, bytes(block) + lookup3(bytes(block)).to_bytes(4, "little")


def cleared_superblock(data: bytes, file_size: int, path: str) -> tuple[int, bytes] | None:
    """``(offset, bytes)`` of the superblock in ``data`` (the file's first bytes) as :func:`clear_status_flags`
    writes it: flags 0, end of allocation at least ``file_size``, checksum anew. None if its flags are 0."""
    offset, length, flags, size = _superblock(data, path)
    if flags == 0:
        return None
    block = bytearray(data[offset:offset + length])
    block[11] = 0
    field = 12 + 2 * size  # the end-of-file (allocation) address, relative to the base address (0 here)
    end = int.from_bytes(block[field:field + size], "little")
    block[field:field + size] = max(end, file_size - offset).to_bytes(size, "little")
    return offset, bytes(block) + lookup3(bytes(block)).to_bytes(4, "little")


class CleanView(io.RawIOBase):
    """A read-only file object over a world file whose writer died, that shows its superblock cleared.

    HDF5 refuses to open a file whose "open for write" flags are set, and
    clearing them means writing the file, which a reader must never do (it
    may not even be allowed to). h5py opens this object instead (its
    ``fileobj`` driver): every byte is the file's, except those of HDF5's
    writes the writer was applying when it died (its HDF5 journal's whole
    record, :mod:`.storage.hdf5journal`), read as they will be once applied,
    and the superblock, which reads as :func:`clear_status_flags` would
    write it.
    """

    def __init__(self, path: str):
        super().__init__()
        self._fd = _platform.open_fd(path, os.O_RDONLY)
        self._position = 0
        try:
            # HDF5's writes a killed writer was applying (its HDF5 journal's whole record), then the
            # superblock as it reads with the flags cleared.
            self._patches, end = hdf5journal.overlay(path)
            self._size = os.fstat(self._fd).st_size if end is None else end
            self._size = max([self._size, *(start + len(patch) for start, patch in self._patches)])
            first = bytearray(_platform.pread(self._fd, _schema.SUPERBLOCK_SPAN, 0))
            self._patch_into(first, 0)
            cleared = cleared_superblock(bytes(first), self._size, path)
            if cleared is not None:
                self._patches.append(cleared)
        except BaseException:
            os.close(self._fd)
            raise

    def _patch_into(self, view, position: int) -> None:
        for start, patch in self._patches:
            lo, hi = max(start, position), min(start + len(patch), position + len(view))
            if lo < hi:
                view[lo - position:hi - position] = patch[lo - start:hi - start]

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._position, os.SEEK_END: self._size}[whence]
        self._position = base + offset
        return self._position

    def tell(self) -> int:
        return self._position

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        count = max(0, min(len(view), self._size - self._position))
        data = _platform.pread(self._fd, count, self._position)
        view[:len(data)] = data
        view[len(data):count] = bytes(count - len(data))  # past the file's end, within a record's writes
        self._patch_into(view[:count], self._position)
        self._position += count
        return count

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()
