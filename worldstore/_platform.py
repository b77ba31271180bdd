"""Every OS-specific mechanism worldstore uses, behind one small interface, each with a portable fallback.

The platform is chosen here, once. On Linux the native mechanisms run:
open-file-description locks, ``posix_fallocate``, ``/proc/self/pagemap``,
``madvise``, the compiled block copier. Elsewhere, or everywhere with
``WORLDSTORE_PORTABLE=1`` (which CI sets for a run of the whole suite on
Linux), the fallbacks run. They are slower, never wrong:

======================  ===============================  ==============================================
mechanism               native (Linux)                   fallback
======================  ===============================  ==============================================
writer lock             OFD lock on a byte past the end  ``flock`` / ``msvcrt.locking`` on ``PATH-lock``;
                                                         with no file locks at all, ``PATH-lock.pid``
                                                         (created exclusively; stale once its pid is gone)
commit-apply lock       OFD lock (a starved reader       ``lockf`` on byte 1 of ``PATH-lock``
                        holds the writer back)           (``msvcrt.locking`` on Windows)
block reservation       ``posix_fallocate``              ``F_PREALLOCATE`` (macOS); else zeros written
                                                         past the end, and fill values written at create
written pages           ``/proc/self/pagemap``           compared with the file
writer's copies         2 MiB block copier (``_cow.c``)  ``MAP_PRIVATE`` (the kernel's page copies)
dropping copies         ``madvise(MADV_DONTNEED)``       kept (the next commit compares them again)
huge-page advice        ``madvise(MADV_HUGEPAGE)``       none
positioned I/O          ``os.pread`` / ``os.pwrite``     ``lseek`` + ``read`` / ``write`` under a lock
durable sync            ``fsync``                        ``F_FULLFSYNC`` (macOS); ``fsync``
                                                         (``FlushFileBuffers`` on Windows)
directory sync          ``fsync`` of the directory       none where a directory cannot be opened
replacing a file        ``os.replace`` (rename(2))       ``os.replace`` (MoveFileEx); on Windows it fails
                                                         while the file is open or mapped anywhere:
                                                         ``WorldLockedError`` says so
======================  ===============================  ==============================================

Nothing OS-specific is imported at module level: ``fcntl`` and ``msvcrt``
are imported by the functions that use them, so ``import worldstore`` works
where they do not exist.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import struct
import sys
import threading
from collections.abc import Iterator
from typing import Any

#: Forced portable mode: every fallback, on any platform.
PORTABLE = os.environ.get("WORLDSTORE_PORTABLE", "0") == "1"
LINUX = sys.platform.startswith("linux")
MACOS = sys.platform == "darwin"
WINDOWS = sys.platform == "win32"

#: Open files as bytes, never text (Windows' O_BINARY; 0 elsewhere).
O_BINARY = getattr(os, "O_BINARY", 0)


def _fcntl() -> Any | None:
    try:
        import fcntl
    except ImportError:
        return None
    return fcntl


#: OFD locks: Linux's, whose struct layout is the one packed below (macOS has the constants from Python 3.13 on,
#: with another layout: the fallback runs there).
OFD_LOCKS = not PORTABLE and LINUX and _fcntl() is not None and hasattr(_fcntl(), "F_OFD_SETLK")
#: /proc/self/pagemap says which pages of a MAP_PRIVATE mapping are the process's own copies.
PAGEMAP = not PORTABLE and LINUX and os.path.exists("/proc/self/pagemap")
#: madvise: huge-page advice and dropping private copies.
MADVISE = not PORTABLE and hasattr(mmap.mmap, "madvise")
#: The compiled block copier (worldstore/_cow.c) may be used.
BLOCK_COPIER = not PORTABLE and LINUX
#: The writer lock is a lock file named after the world's path (the fallback), not a lock on the file itself.
LOCK_FILES = not OFD_LOCKS


def open_fd(path: str | os.PathLike, flags: int, mode: int = 0o666) -> int:
    """``os.open`` in binary mode."""
    return os.open(path, flags | O_BINARY, mode)


# -- positioned I/O ------------------------------------------------------------------------------------
_SEEK_LOCK = threading.Lock()  # the fallback moves a descriptor's offset: one positioned call at a time
_POSITIONED = not PORTABLE and hasattr(os, "pread") and hasattr(os, "preadv")


def pread(fd: int, count: int, offset: int) -> bytes:
    """Up to ``count`` bytes of the file at ``offset`` (fewer at its end)."""
    if _POSITIONED:
        return os.pread(fd, count, offset)
    with _SEEK_LOCK:
        os.lseek(fd, offset, os.SEEK_SET)
        return os.read(fd, count)


def pwrite(fd: int, data: bytes | memoryview, offset: int) -> int:
    """Write ``data`` at ``offset``; the count written."""
    if _POSITIONED:
        return os.pwrite(fd, data, offset)
    with _SEEK_LOCK:
        os.lseek(fd, offset, os.SEEK_SET)
        return os.write(fd, data)


def pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> int:
    """Write all of ``data`` at ``offset`` (a positioned write may write less); return where it ends."""
    view = memoryview(data).cast("B")
    while len(view):
        written = pwrite(fd, view, offset)
        view, offset = view[written:], offset + written
    return offset


def file_identity(fd_or_path: int | str | os.PathLike) -> tuple[int, int]:
    """``(st_dev, st_ino)``: which file a descriptor or a path names now."""
    info = os.fstat(fd_or_path) if isinstance(fd_or_path, int) else os.stat(fd_or_path)
    return info.st_dev, info.st_ino


def readinto(fd: int, buffer: memoryview, offset: int) -> int:
    """Read into ``buffer`` from ``offset``; the count read (0 at the end of the file)."""
    if _POSITIONED:
        return os.preadv(fd, [buffer], offset)
    data = pread(fd, len(buffer), offset)
    buffer[:len(data)] = data
    return len(data)


# -- durability ----------------------------------------------------------------------------------------
def durable_sync(fd: int) -> None:
    """Make what was written to ``fd`` survive a power cut: ``F_FULLFSYNC`` on macOS, whose ``fsync`` leaves it
    in the drive's cache; ``fsync`` elsewhere (``FlushFileBuffers`` on Windows)."""
    fcntl = _fcntl()
    if MACOS and fcntl is not None and hasattr(fcntl, "F_FULLFSYNC"):
        try:
            fcntl.fcntl(fd, fcntl.F_FULLFSYNC)
            return
        except OSError:  # a file system without it: fsync is the best there is
            pass
    os.fsync(fd)


def replace_file(source: str, target: str) -> None:
    """Put the file ``source`` in place of ``target`` in one step (``os.replace``), then make it durable.

    POSIX renames over a file that other processes hold open or mapped; they keep the old file. Windows
    refuses while any process has ``target`` open or mapped (a reader, a viewer, views this process still
    holds): that PermissionError becomes :class:`~worldstore.errors.WorldLockedError`, ``target`` is
    unchanged, and ``source`` is left for the caller to remove.
    """
    try:
        os.replace(source, target)
    except PermissionError as error:
        if not WINDOWS:
            raise
        from .errors import WorldLockedError
        raise WorldLockedError(errno.EACCES, "Windows cannot replace a file that a process has open or mapped "
                               "(a reader, a viewer, layer views kept after close()); it is unchanged. Close "
                               f"those and run again ({error})", target) from error
    sync_directory(os.path.dirname(os.path.abspath(target)))


def sync_directory(path: str) -> None:
    """Make a rename in directory ``path`` durable (where a directory can be opened: not on Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# -- disk blocks ---------------------------------------------------------------------------------------
def reserve_blocks(fd: int, offset: int, length: int) -> bool:
    """Reserve disk blocks for ``[offset, offset + length)``, so writes there cannot meet a full disk.

    True where every block is reserved, holes inside the file included
    (``posix_fallocate``; ``F_PREALLOCATE`` on macOS). False where only the
    part past the end of the file could be, by writing zeros there: holes
    inside the file must then be written by the caller (create writes the
    layers' fill values). Raises OSError (ENOSPC, EFBIG, EDQUOT) when there
    is no room.
    """
    if length <= 0:
        return True
    if not PORTABLE and hasattr(os, "posix_fallocate"):
        os.posix_fallocate(fd, offset, length)
        return True
    if not PORTABLE and MACOS and _preallocate_macos(fd, offset, length):
        return True
    size = os.fstat(fd).st_size
    end = offset + length
    zeros = bytes(1 << 20)
    position = max(size, offset)
    while position < end:
        position += pwrite(fd, zeros[:min(len(zeros), end - position)], position)
    return offset >= size


def _preallocate_macos(fd: int, offset: int, length: int) -> bool:
    """``F_PREALLOCATE`` (``struct fstore``: flags, posmode, offset, length, bytes allocated), then extend the
    file over the range; False where the call is refused."""
    fcntl = _fcntl()
    if fcntl is None or not hasattr(fcntl, "F_PREALLOCATE"):
        return False
    f_allocateall, f_peofposmode = 0x4, 3
    store = struct.pack("IiqqQ", f_allocateall, f_peofposmode, 0, offset + length, 0)
    try:
        fcntl.fcntl(fd, fcntl.F_PREALLOCATE, store)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
            raise
        return False
    if os.fstat(fd).st_size < offset + length:
        os.ftruncate(fd, offset + length)
    return True


# -- memory mappings -----------------------------------------------------------------------------------
def advise_huge_pages(mapping: mmap.mmap) -> None:
    """Ask for 2 MiB pages (a no-op where there is no madvise, or no such advice)."""
    if MADVISE and hasattr(mmap, "MADV_HUGEPAGE"):
        try:
            mapping.madvise(mmap.MADV_HUGEPAGE)
        except OSError:
            pass


def drop_private_pages(mapping: mmap.mmap, start: int = 0, length: int | None = None) -> bool:
    """Let the private copies of a ``MAP_PRIVATE`` mapping's pages go, so they read the file again; False where
    they cannot be dropped (they stay: correct, since they hold what the file now holds)."""
    if not MADVISE:
        return False
    if length is None:
        mapping.madvise(mmap.MADV_DONTNEED)
    else:
        mapping.madvise(mmap.MADV_DONTNEED, start, length)
    return True


# -- locks ---------------------------------------------------------------------------------------------
#: The byte (far past any file's end) a writer keeps an OFD write lock on while it lives.
WRITER_BYTE = 1 << 62
#: The byte after it: the writer holds it while it applies a commit, a starved reader while it reads.
APPLY_BYTE = WRITER_BYTE + 1
#: struct flock on Linux x86-64 / arm64: l_type, l_whence, l_start, l_len, l_pid (+ padding).
_FLOCK = "hhqqi4x"
LOCK_SUFFIX = "-lock"

SHARED, EXCLUSIVE, UNLOCK = "shared", "exclusive", "unlock"


class LockBusy(OSError):
    """The lock is held by someone else (a non-blocking request)."""


def _one_byte(fcntl: Any, kind: str, byte: int) -> bytes:
    lock_type = {SHARED: fcntl.F_RDLCK, EXCLUSIVE: fcntl.F_WRLCK, UNLOCK: fcntl.F_UNLCK}[kind]
    return struct.pack(_FLOCK, lock_type, os.SEEK_SET, byte, 1, 0)


def _ofd(fd: int, byte: int, kind: str, wait: bool) -> None:
    fcntl = _fcntl()
    try:
        fcntl.fcntl(fd, fcntl.F_OFD_SETLKW if wait else fcntl.F_OFD_SETLK, _one_byte(fcntl, kind, byte))
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            raise LockBusy(exc.errno, "locked") from exc
        raise


def hold_writer(path: str) -> int:
    """Take the writer lock of the world at ``path`` (non-blocking); a descriptor that holds it until closed
    (:func:`release_writer`). :class:`LockBusy` if another holds it.

    Native: an OFD lock on a byte far past the end of the world file itself,
    on a descriptor of its own (Python's mmap dups the descriptors it maps,
    and a lock on one of those would outlive the world). Fallback: an
    exclusive ``flock`` (``msvcrt.locking`` on Windows) on ``PATH-lock``.
    Neither is released by closing other descriptors, nor by a forked child
    closing its copy.
    """
    if OFD_LOCKS:
        fd = open_fd(path, os.O_RDWR)
        try:
            _ofd(fd, WRITER_BYTE, EXCLUSIVE, wait=False)
        except BaseException:
            os.close(fd)
            raise
        return fd
    if not _os_locks():
        return _hold_pid_file(path)
    fd = open_fd(path + LOCK_SUFFIX, os.O_RDWR | os.O_CREAT)
    try:
        _whole_file_lock(fd, EXCLUSIVE)
    except BaseException:
        os.close(fd)
        raise
    return fd


def release_writer(fd: int) -> None:
    """Release the writer lock :func:`hold_writer` took (closing its descriptor releases it)."""
    pid_file = _PID_FILES.pop(fd, None)
    if pid_file is not None:
        os.unlink(pid_file)
    os.close(fd)


def _os_locks() -> bool:
    """Whether the system has file locks (``fcntl`` or ``msvcrt``)."""
    if _fcntl() is not None:
        return True
    try:
        import msvcrt  # noqa: F401
    except ImportError:
        return False
    return True


#: The last resort where the system has no file locks at all: ``PATH-lock.pid``, created exclusively, holding
#: the writer's pid; one whose process is gone is stale. By descriptor, the pid files this process holds.
_PID_FILES: dict[int, str] = {}
PID_SUFFIX = LOCK_SUFFIX + ".pid"


def forget_inherited_locks() -> None:
    """In a forked child: the pid files are the parent's; releasing its copies must not remove them."""
    _PID_FILES.clear()


def _hold_pid_file(path: str) -> int:
    pid_file = path + PID_SUFFIX
    for _ in range(2):
        try:
            fd = open_fd(pid_file, os.O_RDWR | os.O_CREAT | os.O_EXCL)
        except FileExistsError:
            if _pid_file_alive(pid_file):
                raise LockBusy(errno.EEXIST, "locked") from None
            os.unlink(pid_file)  # its writer is gone
            continue
        os.write(fd, str(os.getpid()).encode())
        _PID_FILES[fd] = pid_file
        return fd
    raise LockBusy(errno.EEXIST, "locked")


def _pid_file_alive(pid_file: str) -> bool:
    try:
        with open(pid_file, "rb") as f:
            pid = int(f.read() or b"0")
    except (FileNotFoundError, ValueError):
        return False
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def writer_alive(path: str) -> bool:
    """Whether a process holds the writer lock of the world at ``path``."""
    if OFD_LOCKS:
        fcntl = _fcntl()
        fd = open_fd(path, os.O_RDONLY)
        try:
            answer = fcntl.fcntl(fd, fcntl.F_OFD_GETLK, _one_byte(fcntl, EXCLUSIVE, WRITER_BYTE))
        finally:
            os.close(fd)
        return struct.unpack(_FLOCK, answer)[0] != fcntl.F_UNLCK
    if not _os_locks():
        return _pid_file_alive(path + PID_SUFFIX)
    try:
        fd = open_fd(path + LOCK_SUFFIX, os.O_RDONLY)
    except FileNotFoundError:
        return False
    except PermissionError:  # a lock file this user may not read: ask the world file's lock instead
        return hdf5_lock_held(path)
    try:
        _whole_file_lock(fd, SHARED)
    except LockBusy:
        return True
    else:
        _whole_file_lock(fd, UNLOCK)
        return False
    finally:
        os.close(fd)


def _whole_file_lock(fd: int, kind: str) -> None:
    """A non-blocking whole-file lock (``flock``; the first byte with ``msvcrt.locking`` on Windows)."""
    fcntl = _fcntl()
    if fcntl is not None:
        operation = {SHARED: fcntl.LOCK_SH | fcntl.LOCK_NB, EXCLUSIVE: fcntl.LOCK_EX | fcntl.LOCK_NB,
                     UNLOCK: fcntl.LOCK_UN}[kind]
        try:
            fcntl.flock(fd, operation)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
                raise LockBusy(exc.errno, "locked") from exc
            raise
        return
    import msvcrt  # Windows: byte-range locks, exclusive only

    os.lseek(fd, 0, os.SEEK_SET)
    try:
        msvcrt.locking(fd, msvcrt.LK_UNLCK if kind == UNLOCK else msvcrt.LK_NBLCK, 1)
    except OSError as exc:
        if kind == UNLOCK:
            return
        raise LockBusy(errno.EACCES, "locked") from exc


@contextlib.contextmanager
def apply_locked(fd: int, path: str, kind: str) -> Iterator[None]:
    """Inside: the lock a writer holds (``EXCLUSIVE``) while it applies a commit, and a starved reader
    (``SHARED``) while it reads, so that the writer waits for that one read. Waits for it.

    Native: an OFD lock on a byte past the end of the world file (``fd``).
    Fallback: a POSIX record lock (``lockf``) on byte 1 of ``PATH-lock``
    (``msvcrt.locking`` on Windows, exclusive only), on a descriptor opened
    for the purpose and closed after; where there is no lock file (no
    writer), nothing. Readers check their reads by the commit sequence all
    the same: the lock only keeps them from starving.
    """
    if OFD_LOCKS:
        _ofd(fd, APPLY_BYTE, kind, wait=True)
        try:
            yield
        finally:
            _ofd(fd, APPLY_BYTE, UNLOCK, wait=False)
        return
    try:
        if not _os_locks():
            raise FileNotFoundError(path + LOCK_SUFFIX)  # no locks at all: the sequence check alone
        lock_fd = open_fd(path + LOCK_SUFFIX, os.O_RDWR if kind == EXCLUSIVE else os.O_RDONLY)
    except OSError:  # no lock file (no writer yet), or one this user may not open: the sequence check alone
        yield
        return
    try:
        fcntl = _fcntl()
        if fcntl is not None:
            fcntl.lockf(lock_fd, fcntl.LOCK_EX if kind == EXCLUSIVE else fcntl.LOCK_SH, 1, 1)
        else:
            import msvcrt

            os.lseek(lock_fd, 1, os.SEEK_SET)
            msvcrt.locking(lock_fd, msvcrt.LK_LOCK, 1)
        yield
    finally:
        os.close(lock_fd)  # releases it (a POSIX record lock goes with any descriptor of the file closed)


def hdf5_lock_held(path: str) -> bool:
    """Whether a process holds HDF5's own lock on the file (its ``flock``, taken by every HDF5 program that has
    the file open); False where ``flock`` does not exist."""
    fcntl = _fcntl()
    if fcntl is None or not hasattr(fcntl, "flock"):
        return False
    fd = open_fd(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
            return True
        raise
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def describe() -> dict[str, Any]:
    """Which mechanism each point uses here (for bug reports, and the tests of portable mode)."""
    return {"portable": PORTABLE, "platform": sys.platform, "ofd_locks": OFD_LOCKS, "pagemap": PAGEMAP,
            "madvise": MADVISE, "block_copier": BLOCK_COPIER, "positioned_io": _POSITIONED}
