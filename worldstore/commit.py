"""Commits: what a writer changed reaches the file whole or not at all, and readers never see half of one.

A writer's layers keep the file at the last commit: 2-D layers are copied
into the process 2 MiB block by block on first write (``worldstore/_cow.c``),
agent layers page by page by the kernel (``MAP_PRIVATE``); in-RAM and sparse
layers are the process's own memory anyway. :func:`commit` then

1. collects the changes: the 64-byte lines (whole 4 KiB pages where every
   line of one changed) of copied blocks (or, for
   ``MAP_PRIVATE`` mappings, of the pages ``/proc/self/pagemap`` shows as
   private copies) that differ from the file, the lines of in-RAM layers that
   differ from the file, the cells of sparse layers that changed, the step and
   each temporal layer's form;
2. reserves the room the COO datasets may need, then appends everything to the
   journal ``PATH-journal`` as one record ending with a CRC-32, and
   (``durable``) fsyncs the journal: this is the commit point;
3. makes the sequence number of ``/commit`` odd (a commit is being applied),
   writes the lines into the file, the COO datasets, the clock, flushes HDF5
   (to the page cache: readers see the commit now), and makes the sequence
   even again beside the committed step;
4. keeps the writer's copies (read-only) or lets them go (see ``storage.mapped``).

The journal is a log of commits, as SQLite's write-ahead log is: a durable
commit fsyncs only the journal, so it costs the bytes that changed, not the
pages they lie in. The file's pages reach the disk at a *checkpoint*
(:func:`checkpoint`: fsync the file, then remove the journal), taken when the
journal outgrows :data:`CHECKPOINT_BYTES`, after a commit that changed HDF5's
own structures (COO datasets, storage kinds), after a snapshot, and at close.
Every reader, HDF5 tool included, reads the file itself, which holds the last
commit at all times (through the page cache); only what a power cut could take
lives in the journal alone, until the next checkpoint.

A writer killed before a record is whole leaves the file at the previous
commit (what it wrote since lived only in its memory): the cut-short record is
discarded at the next open. Killed after, the journal's whole records are
replayed in order at the next open (:func:`replay`; writing the same bytes
again is harmless), which also restores after a power cut what the disk had
not yet received.

Readers read the sequence number, read, and read it again
(:func:`consistent`): a changed or odd number means a commit was being
applied, and they read again. A reader whose read keeps being spoiled takes a
shared lock the writer takes while applying, so the writer waits for that one
read; otherwise the writer never waits for readers.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import time
import zlib
from typing import Any, Callable, Iterator, Protocol, TypeVar

import h5py
import numpy as np

from . import _platform, _schema, recovery
from .errors import DiskFullError, WorldFormatError, WorldLockedError, WorldReplacedError
from .storage import hdf5journal
from .storage.pages import LINE, PAGE, PageSet



class World(Protocol):
    """What the commit engine needs of a writer; :class:`worldstore.world.World` is one. The engine sits
    below the world (storage, then this engine, then the world), so it names no class above it."""

    _path: str
    _fd: int
    _file: h5py.File
    _spec: Any
    _layers: dict[str, Any]
    _storages: dict[str, Any]
    _retired: list[Any]
    _step: int
    _committed: int
    _sequence: int
    _sequence_offset: int | None
    _world_id: str | None
    _session: str
    _journal_end: int
    _durable_pending: bool
    _file_state: "FileState | None"

    def _file_changed(self) -> bool: ...

T = TypeVar("T")

JOURNAL_SUFFIX = "-journal"
_MAGIC = b"WSJOURN4"  # 4: a set of lines may keep only their changed words; 3: each set names its unit
_MAGIC_OLDER = (b"WSJOURN3", b"WSJOURN2")  # replayed as before (2: pages only), so an older writer's journal is finished
_EMPTIED = bytes(8)  # a checkpointed journal's first bytes: no record
_END = b"WSJEND02"
_DIGEST = 4  # CRC-32: the journal guards against being cut short or torn, not against an adversary
_PIECE = 64 << 20  # bytes per read while checking or replaying a journal
#: Room reserved beyond the data itself (chunk indexes, metadata HDF5 writes at a flush).
_SLACK = 1 << 20
#: The journal is checkpointed (the file fsync'd, the journal emptied) once it holds this many bytes: it bounds
#: the replay after a crash and the disk the journal takes.
CHECKPOINT_BYTES = 64 << 20
#: A reader whose read a commit spoiled this many times in a row asks the writer to wait for it
#: (``recovery.APPLY_BYTE``: the writer holds it while it applies a commit, a starved reader while it reads).
_PATIENCE = 4
#: A reader that finds a commit in progress for this long checks whether the writer is still alive.
_STALL_S = 2.0


def journal_path(path: str) -> str:
    return path + JOURNAL_SUFFIX


_DISK_FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (an OSError, or an HDF5 error h5py raised) says the disk or file size limit was hit."""
    if getattr(exc, "errno", None) in _DISK_FULL:
        return True
    text = str(exc)
    return any(f"errno = {number}," in text for number in _DISK_FULL)


def reserve(world: "World", nbytes: int, what: str) -> bool:
    """Reserve disk blocks for ``nbytes`` more past HDF5's end of allocation, or raise :class:`DiskFullError`.

    HDF5 records a file's new end before it has written what lies there: a
    write that runs out of space then leaves a file HDF5 calls truncated.
    Reserving first means the space is there, or the operation fails before
    anything is written. (Call after an HDF5 flush: the end is read from the
    superblock on disk.) Returns whether the file grew: what :func:`release` may give back.
    """
    end = recovery.end_of_allocation(world._fd) + nbytes
    size = os.fstat(world._fd).st_size
    if end <= size:
        return False
    try:
        _platform.reserve_blocks(world._fd, size, end - size)
    except OSError as exc:
        if exc.errno in _DISK_FULL:
            raise DiskFullError(exc.errno, f"{what} needs up to {nbytes} more bytes and there is no room: "
                                f"{os.strerror(exc.errno)}; nothing was written, the world is as it was",
                                world._path) from exc
        raise
    return True


def release(world: "World") -> None:
    """Give back what :func:`reserve` reserved and HDF5 did not use (after an HDF5 flush)."""
    end = recovery.end_of_allocation(world._fd)
    if os.fstat(world._fd).st_size > end:
        os.ftruncate(world._fd, end)


class Changes:
    """What one commit writes: layers' pages, COO forms, storage kinds, the step."""

    def __init__(self, step: int, sequence: int, world_id: str | None = None, session: str | None = None):
        self.world_id = world_id  # the file's identity (_schema.ROOT_WORLD_ID): a journal replays only into it
        self.session = session  # the writer's open that wrote the record (World._session)
        self.step = step
        self.sequence = sequence  # the even number the commit ends with
        self.pages: list[PageSet] = []
        self.coo: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.kinds: dict[str, str] = {}
        self.unjournaled: list[Callable[[], None]] = []  # writes of layers that cannot be patched
        self._encoded: list[tuple[str, int, np.ndarray]] | None = None  # the page sets' unit numbers, encoded

    @property
    def nbytes(self) -> int:
        """The bytes the commit writes into the layers: their lines and pages, and sparse layers' cells."""
        return sum(p.file_bytes for p in self.pages) + sum(c.nbytes + v.nbytes for c, v in self.coo.values())

    def header(self, sealed: bool = False) -> bytes:
        """The record's header, JSON. ``sealed``: the record's CRC covers the header only (:func:`write_journal`)."""
        fields = {
            "world": self.world_id,
            "session": self.session,
            "step": self.step,
            "sequence": self.sequence,
            "kinds": self.kinds,
            "pages": [[p.offset, p.nbytes, len(p.pages), p.journal_bytes, p.unit, code, base,
                       _WORDS if p.masks is not None else _UNITS]
                      for p, (code, base, _) in zip(self.pages, self._indexes())],
            "coo": [[name, len(values), values.dtype.str] for name, (_, values) in self.coo.items()],
        }
        if sealed:
            fields["check"] = _SEALED
        return json.dumps(fields).encode()

    def _indexes(self) -> list[tuple[str, int, np.ndarray]]:
        if self._encoded is None or len(self._encoded) != len(self.pages):
            self._encoded = [encode_index(page_set.pages) for page_set in self.pages]
        return self._encoded

    def blocks(self):
        for page_set, (_, _, index) in zip(self.pages, self._indexes()):
            yield _raw(index)
            if page_set.masks is not None:
                yield _raw(page_set.masks)
                yield _raw(page_set.words)
            else:
                yield _raw(page_set.data)
        for coords, values in self.coo.values():
            yield _raw(np.ascontiguousarray(coords, dtype=np.int32))
            yield _raw(np.ascontiguousarray(values))


#: A sealed record's header says so: its CRC covers the magic, the header's length and the header.
_SEALED = "header"

#: How a record stores a page set's data: its units whole, or (lines only) a mask byte per line and then the
#: 8-byte words its bits name (``PageSet.keep_words``).
_UNITS, _WORDS = "units", "w8"

#: How a record stores a page set's unit numbers: bytes per number. "d2": 16-bit steps from the previous
#: number (the first from the entry's base), what scattered and dense changes both fit; "u4", "i8": the numbers.
_INDEX_BYTES = {"d2": 2, "u4": 4, "i8": 8}


def encode_index(units: np.ndarray) -> tuple[str, int, np.ndarray]:
    """``(code, base, array)``: sorted unit numbers as compactly as :data:`_INDEX_BYTES` allows (an 8-byte
    number per 64-byte line was an eighth more bytes than the line itself)."""
    if len(units) and units[0] >= 0:
        steps = np.diff(units)
        if not len(steps) or (steps.max() < 1 << 16 and steps.min() > 0):
            return "d2", int(units[0]), np.concatenate(([0], steps)).astype(np.uint16)
        if units[-1] < 1 << 32:
            return "u4", 0, units.astype(np.uint32)
    return "i8", 0, np.ascontiguousarray(units, np.int64)


def decode_index(code: str, base: int, raw: bytes) -> np.ndarray:
    if code == "d2":
        return np.cumsum(np.frombuffer(raw, np.uint16), dtype=np.int64) + base
    if code == "u4":
        return np.frombuffer(raw, np.uint32).astype(np.int64)
    return np.frombuffer(raw, np.int64)


def _raw(array: np.ndarray) -> memoryview:
    """A contiguous array's bytes (empty arrays too, which memoryview.cast refuses)."""
    return memoryview(array.reshape(-1).view(np.uint8))


# -- the writer --------------------------------------------------------------
class FileState:
    """What a writer's commits know of the file's HDF5 side, so that a steady commit looks nothing up: the
    layers group, and each temporal layer's stored kind and COO rows as the last commit left them."""

    def __init__(self, h5file: h5py.File):
        self.file = h5file
        self.group = h5file[_schema.LAYERS_GROUP]
        self.kinds: dict[str, str] = {}
        self.coo_rows: dict[str, int] = {}
        self.clock = _schema.Clock(h5file)
        self._coo: dict[str, tuple[h5py.Dataset, ...]] = {}

    def coo(self, spec, name: str) -> tuple[h5py.Dataset, ...]:
        """Temporal layer ``name``'s COO datasets, looked up once."""
        if name not in self._coo:
            self._coo[name] = _schema.coo_datasets(self.group, spec, name)
        return self._coo[name]

    def rows(self, spec, name: str) -> int:
        if name not in self.coo_rows:
            self.coo_rows[name] = self.group[spec.coo_names_of(name)[1]].shape[0]
        return self.coo_rows[name]


def file_state(world: "World") -> FileState:
    """The world's :class:`FileState`, made again whenever the world has another HDF5 file object."""
    state = world._file_state
    if state is None or state.file is not world._file:
        state = world._file_state = FileState(world._file)
    return state


def collect(world: "World") -> Changes:
    """The changes since the last commit (nothing is written)."""
    state = file_state(world)
    changes = Changes(world._step, world._sequence + 2, world._world_id, world._session)
    for storage in [*world._retired, *world._storages.values()]:
        found = storage.patches()
        if found is None:  # an in-RAM layer that cannot be patched (chunked in the file)
            changes.unjournaled.append(storage.flush)  # type: ignore[attr-defined]
        else:
            changes.pages.extend(page_set for page_set in found if len(page_set.pages))
    spec = world._spec
    for name, storage in world._storages.items():
        if world._layers[name].grid_class != "temporal":
            continue
        changes.kinds[name] = storage.kind
        if storage.kind == "sparse":
            if storage.changed:  # type: ignore[attr-defined]
                changes.coo[name] = storage.coo()
        elif state.rows(spec, name):
            changes.coo[name] = (np.empty((0, 2), np.int32), np.empty(0, world._layers[name].dtype))
    return changes


#: How a record is written (its own name: tests stand in for it to kill a commit part way).
_write_all = _platform.pwrite_all


def write_journal(path: str, changes: Changes, durable: bool, start: int = 0) -> int:
    """Write ``changes`` as one checksummed record at ``start`` in ``path``'s journal; return where it ends.

    Records follow one another from the journal's start, their sequences 2 apart; a checkpoint starts the
    chain again at 0 over the old bytes (whose records the chain no longer reaches). A record ends with a
    CRC-32 and an end mark. A small record's CRC covers all of it. A *sealed* one (data of
    :data:`SEALED_BYTES` or more, a dense change) has a CRC of its header only, written after its data is
    whole (``durable``: after an fsync of the data), as ext4's journal writes its commit block: a kill
    stops a write between pages but never lets a later write land before an earlier one, so an end whose
    CRC matches this header (its sequence, its session) says every byte before it landed, without the
    32 ms a CRC of 256 MiB costs. On any error the record is left cut short where it is (the next attempt
    writes over it; replay stops before it), or the journal removed if it held nothing else, and the error
    is re-raised.
    """
    journal = journal_path(path)
    created = not os.path.exists(journal)
    fd = _platform.open_fd(journal, os.O_WRONLY | os.O_CREAT, 0o666)
    try:
        try:
            blocks = [*changes.blocks()]
            sealed = sum(len(block) for block in blocks) >= SEALED_BYTES
            header = changes.header(sealed)
            head = [memoryview(_MAGIC), memoryview(len(header).to_bytes(8, "little")), memoryview(header)]
            end = start + sum(len(part) for part in head + blocks) + _DIGEST + len(_END)
            size = os.fstat(fd).st_size
            if end > size:  # room ahead, reserved in one call: writing over reserved blocks is many times
                _platform.reserve_blocks(fd, size, max(end, 2 * size) - size)  # faster than growing the file
            crc = 0
            for part in head if sealed else head + blocks:
                crc = zlib.crc32(part, crc)
            position = start
            for part in head + blocks:
                position = _write_all(fd, part, position)
            if sealed and durable:  # the data on the disk before the end that vouches for it
                _platform.durable_sync(fd)
            position = _write_all(fd, memoryview(crc.to_bytes(_DIGEST, "little") + _END), position)
            if durable:
                _platform.durable_sync(fd)
                if created:  # the journal's name too, or a power cut could lose the file it is in
                    _platform.sync_directory(os.path.dirname(os.path.abspath(journal)))
        except BaseException:
            if created:
                os.unlink(journal)
            raise
        return position
    finally:
        os.close(fd)


#: A record whose data reach this many bytes is sealed (see :func:`write_journal`): its CRC covers its header.
SEALED_BYTES = 8 << 20


def checkpoint_bytes(world: "World") -> int:
    """How large the journal may grow before a checkpoint: :data:`CHECKPOINT_BYTES`, or the world's dense
    layers' bytes if more, so that a layer rewritten every step (a decay) reaches the disk once per several
    commits, not once per commit (its pages are written back once, however often they changed)."""
    dense = sum(storage.array.nbytes for storage in world._storages.values() if storage.kind != "sparse")
    return max(CHECKPOINT_BYTES, dense)


def commit(world: "World", durable: bool = True) -> int:
    """Commit ``world`` (see the module's docstring); returns the bytes journaled."""
    check_identity(world)
    changes = collect(world)
    if not (changes.pages or changes.coo or changes.unjournaled) and world._step == world._committed:
        return 0
    # Sparse layers' cells may need more room in their COO datasets: reserve it before anything is written.
    coo_bytes = sum(c.nbytes + v.nbytes for c, v in changes.coo.values())
    extended = reserve(world, coo_bytes * 2 + _SLACK if changes.coo else _SLACK // 16, "the commit")
    try:
        end = write_journal(world._path, changes, durable, world._journal_end)
    except OSError as exc:
        if exc.errno in _DISK_FULL:
            raise DiskFullError(exc.errno, f"no room for the commit's journal ({changes.nbytes} bytes): "
                                f"{os.strerror(exc.errno)}; the file keeps step {world._committed}, and the "
                                "changes are still in this process: free space and commit again",
                                journal_path(world._path)) from exc
        raise
    world._durable_pending = world._durable_pending or durable
    with _platform.apply_locked(world._fd, world._path, _platform.EXCLUSIVE):  # waits for a starved reader
        structural = apply(world._file, world._fd, world._spec, changes, False, world._sequence_offset,
                           file_state(world))
    world._journal_end = end  # only now: a commit that failed to apply is written again, over its record
    if extended:
        release(world)
    world._sequence = changes.sequence
    for storage in [*world._retired, *world._storages.values()]:
        storage.drop_private()
    for storage in world._retired:
        storage.close()
    world._retired.clear()
    if structural or end >= checkpoint_bytes(world):
        checkpoint(world)
    return changes.nbytes


def checkpoint(world: "World", remove: bool = False) -> None:
    """Make the disk hold every commit so far, then empty the journal (SQLite's checkpoint).

    The file is fsync'd if a durable commit is in the journal (commits made with ``durable=False`` promise
    nothing against a power cut). The journal is then emptied by overwriting its first record's magic
    (the next commit's record goes there, and the old records after it are out of the chain), so its pages
    are reused rather than allocated again; should a power cut undo that write, the old records are
    replayed, each writing bytes the file already holds. ``remove``: the journal goes (at close).
    """
    if world._durable_pending:
        _platform.durable_sync(world._fd)
        world._durable_pending = False
    world._journal_end = 0
    journal = journal_path(world._path)
    try:
        if remove:
            os.unlink(journal)
            return
        fd = _platform.open_fd(journal, os.O_WRONLY)
    except FileNotFoundError:
        return
    try:
        _platform.pwrite(fd, _EMPTIED, 0)
    finally:
        os.close(fd)


def check_identity(world: "World") -> None:
    """Raise :class:`WorldReplacedError` if the world's path no longer names the file the world has open.

    ``create --overwrite``, ``compact`` or a rename put another file there, or
    a copy rewrote this one in place (its commit sequence is not the one this
    writer left): this world's journal and commits would go into a file that
    is not the world they belong to.
    """
    try:
        replaced = world._file_changed()  # renamed over, or truncated under us (its mapped pages read zeros)
    except FileNotFoundError:  # removed
        replaced = True
    if not replaced and world._sequence_offset is not None:  # the same file, rewritten in place (cp over it)?
        try:
            replaced = read_sequence(world._fd, world._sequence_offset)[0] != world._sequence
        except WorldFormatError:  # shorter than the world: cut, or another file's bytes
            replaced = True
    if replaced:
        _forget_journal(world)
        raise WorldReplacedError(f"{world._path} now names another file (renamed over, removed, rewritten in "
                                 "place or cut short since this world opened it), so nothing was committed: the "
                                 "file there keeps its own state, and "
                                 f"this writer's changes since step {world._committed} are only in this process. "
                                 "Save what you need with layer.numpy(), close this world, and open the file again")


def _forget_journal(world: "World") -> None:
    """Remove the journal beside the path if this writer wrote it: its records belong to the file this world
    has open, which the path no longer names, and replayed into the file there now they would mix two
    worlds (or two versions of one, a backup copied over it). A journal another writer wrote stays."""
    records, _ = journal_records(world._path)
    if records and records[0].get("session") == world._session:
        try:
            os.unlink(journal_path(world._path))
        except FileNotFoundError:
            pass


def apply(h5file, fd: int, spec, changes: Changes, durable: bool, sequence_offset: int | None,
          state: FileState | None = None) -> bool:
    """Write ``changes`` into the file, between an odd and an even sequence number (``durable``: fsync'd
    before the even one). Returns whether HDF5's own structures changed (COO datasets written or a
    storage kind), which a checkpoint should follow. ``state``: the writer's :class:`FileState` (None in a
    replay: everything is looked up)."""
    if sequence_offset is not None:
        write_sequence(fd, sequence_offset, changes.sequence - 1, changes.step)
    for page_set in changes.pages:
        page_set.write_into(fd)
    for write in changes.unjournaled:
        write()
    group = state.group if state is not None else h5file[_schema.LAYERS_GROUP]
    structural = bool(changes.unjournaled or changes.coo)
    for name, (coords, values) in changes.coo.items():
        _schema.write_coo(group, spec, name, coords, values, state.coo(spec, name) if state is not None else None)
        if state is not None:
            state.coo_rows[name] = len(values)
    for name, kind in changes.kinds.items():
        if state is not None and state.kinds.get(name) == kind:
            continue
        structural = _schema.write_storage_kind(group, name, kind) or structural
        if state is not None:
            state.kinds[name] = kind
    if state is not None:
        state.clock.write(changes.step, changes.step)
    else:
        _schema.write_clock(h5file, changes.step, changes.step)
    h5file.flush()
    if durable:
        _platform.durable_sync(fd)
    if sequence_offset is not None:
        write_sequence(fd, sequence_offset, changes.sequence, changes.step)
    return structural


# -- the sequence number -----------------------------------------------------
def read_sequence(fd: int, offset: int) -> tuple[int, int]:
    """``(sequence, committed step)`` from ``/commit``."""
    data = _platform.pread(fd, 16, offset)
    if len(data) != 16:
        raise WorldFormatError("the /commit dataset lies beyond the end of the file")
    return int.from_bytes(data[:8], "little", signed=True), int.from_bytes(data[8:], "little", signed=True)


def write_sequence(fd: int, offset: int, sequence: int, step: int) -> None:
    _platform.pwrite(fd, sequence.to_bytes(8, "little", signed=True) + step.to_bytes(8, "little", signed=True), offset)


def consistent(path: str, fd: int, offset: int | None, read: Callable[[], T],
               discard: Callable[[T], None] | None = None) -> tuple[int | None, T]:
    """Run ``read`` until no commit was applied while it ran; return ``(committed step, its result)``.

    ``offset`` is where ``/commit`` lies (None for files without one: the read
    runs once, unprotected, and the step is None). ``discard`` is given each
    result that is thrown away.
    """
    if offset is None:
        return None, read()
    waited = 0.0
    pause = 0.0001
    spoiled = 0
    while True:
        if spoiled >= _PATIENCE:  # commits keep landing mid-read: hold the writer back for one read
            return _read_holding_writer(path, fd, offset, read, discard)
        before, step = read_sequence(fd, offset)
        if before % 2 == 0:
            try:
                result = read()
            except Exception:
                if read_sequence(fd, offset)[0] == before:
                    raise
                spoiled += 1
                continue  # the file changed under the read (a COO dataset resized, say): read again
            if read_sequence(fd, offset)[0] == before:
                return step, result
            if discard is not None:
                discard(result)
            spoiled += 1
            continue
        if waited == 0.0 or waited > _STALL_S:  # at once, then every so often: no writer will ever finish it
            if not recovery.writer_alive(path):
                raise _interrupted(path)
            waited = 0.0
        time.sleep(pause)
        waited += pause
        pause = min(pause * 2, 0.01)


def _interrupted(path: str) -> WorldLockedError:
    return WorldLockedError(f"{path}: its writer died in the middle of a commit, so no whole commit can be read "
                            "until it is finished; someone allowed to write the file must run: "
                            f"worldstore recover {path}")


def _read_holding_writer(path: str, fd: int, offset: int, read: Callable[[], T],
                         discard: Callable[[T], None] | None = None) -> tuple[int, T]:
    """Run ``read`` holding the apply lock shared: no commit is applied meanwhile (the writer waits).

    The read is checked by the sequence all the same, and run again should
    a commit have landed (a lock the platform cannot give, see ``_platform``).
    """
    while True:
        with _platform.apply_locked(fd, path, _platform.SHARED):
            before, step = read_sequence(fd, offset)
            if before % 2:  # no live writer applies while we hold the lock: one died applying
                if not recovery.writer_alive(path):
                    raise _interrupted(path)
            else:
                result = read()
                if read_sequence(fd, offset)[0] == before:
                    return step, result
                if discard is not None:
                    discard(result)
        time.sleep(0.001)


# -- replay ------------------------------------------------------------------
def _record_bytes(header: dict[str, Any]) -> int:
    """The bytes of a record's data blocks, as its header describes them."""
    pages = sum(int(entry[2]) * _INDEX_BYTES[entry[5] if len(entry) > 5 else "i8"] + int(entry[3])
                for entry in header["pages"])
    coo = sum(int(count) * (8 + np.dtype(dtype).itemsize) for _, count, dtype in header["coo"])
    return pages + coo


def journal_records(path: str) -> tuple[list[dict[str, Any]], bool]:
    """The chain of whole records at the start of ``path``'s journal (their headers, each with ``_data``:
    where its data starts; their sequences 2 apart), and whether a record begins after them that is not
    whole (one its writer did not finish). Reserved room (zeros) and older records a checkpoint left behind
    end the chain without being one."""
    journal = journal_path(path)
    try:
        fd = _platform.open_fd(journal, os.O_RDONLY)
    except FileNotFoundError:
        return [], False
    records: list[dict[str, Any]] = []
    try:
        size = os.fstat(fd).st_size
        position = 0
        if _platform.pread(fd, 8, 0) == _EMPTIED:  # checkpointed: what follows is out of the chain
            return [], False
        while position < size:
            start = _platform.pread(fd, 16, position)
            if len(start) < 8 or (start[:8] != _MAGIC and start[:8] not in _MAGIC_OLDER):
                # reserved room (zeros) or, after a record, older bytes: no record begins here; anything
                # else at the start is not a journal this library wrote whole
                return records, bool(position == 0 and start[:8].strip(b"\0"))
            header_length = int.from_bytes(start[8:], "little")
            if len(start) < 16 or position + 16 + header_length + _DIGEST + len(_END) > size:
                return records, True
            try:
                header = json.loads(_platform.pread(fd, header_length, position + 16))
                end = position + 16 + header_length + _record_bytes(header)
            except (ValueError, KeyError, TypeError, IndexError):
                return records, True
            if end + _DIGEST + len(_END) > size:
                return records, True
            crc = 0
            at = position
            covered = position + 16 + header_length if header.get("check") == _SEALED else end
            while at < covered:
                piece = _platform.pread(fd, min(_PIECE, covered - at), at)
                crc = zlib.crc32(piece, crc)
                at += len(piece)
            if _platform.pread(fd, _DIGEST + len(_END), end) != crc.to_bytes(_DIGEST, "little") + _END:
                return records, True  # begun, not finished: a record its writer did not finish (or torn)
            if records and header.get("sequence") != records[-1].get("sequence", 0) + 2:
                return records, False  # an older record a checkpoint left behind, not the next commit
            header["_data"] = position + 16 + header_length
            records.append(header)
            position = end + _DIGEST + len(_END)
        return records, False
    finally:
        os.close(fd)


def read_journal(path: str) -> dict[str, Any] | None:
    """The header of the journal's last record if every byte of the journal is whole records, else None."""
    records, cut_short = journal_records(path)
    return records[-1] if records and not cut_short else None


def _read_record(jfd: int, header: dict[str, Any], file_size: int, journal: str, path: str) -> Changes:
    position = header["_data"]
    changes = Changes(int(header["step"]), int(header["sequence"]))
    changes.kinds = {str(k): str(v) for k, v in header["kinds"].items()}
    for offset, nbytes, count, length, *rest in header["pages"]:
        unit = int(rest[0]) if rest else PAGE  # a WSJOURN2 journal: pages of this machine's size
        code, base = (str(rest[1]), int(rest[2])) if len(rest) > 2 else ("i8", 0)
        form = str(rest[3]) if len(rest) > 3 else _UNITS
        if offset < 0 or offset + nbytes > file_size or unit <= 0 or code not in _INDEX_BYTES:
            raise WorldFormatError(f"{journal}: a layer's pages lie beyond the end of {path}")
        if form not in (_UNITS, _WORDS) or (form == _WORDS and unit != LINE):
            raise WorldFormatError(f"{journal}: a record holds lines in a form this version cannot read ({form!r}, "
                                   f"{unit}-byte units); recover it with the worldstore version that wrote it")
        index_bytes = count * _INDEX_BYTES[code]
        pages = decode_index(code, base, _platform.pread(jfd, index_bytes, position))
        data = np.frombuffer(_platform.pread(jfd, length, position + index_bytes), np.uint8)
        if form == _WORDS:
            changes.pages.append(PageSet.from_words(int(offset), int(nbytes), pages, data[:count], data[count:]))
        else:
            changes.pages.append(PageSet(int(offset), int(nbytes), pages, data, unit))
        position += index_bytes + length
    for name, count, dtype in header["coo"]:
        coords = np.frombuffer(_platform.pread(jfd, count * 8, position), np.int32).reshape(count, 2)
        position += count * 8
        values_dtype = np.dtype(dtype)
        values = np.frombuffer(_platform.pread(jfd, count * values_dtype.itemsize, position), values_dtype)
        position += count * values_dtype.itemsize
        changes.coo[str(name)] = (coords, values)
    return changes


def journaled_file(path: str) -> h5py.File:
    """``path`` opened for writing through an HDF5 journal (:mod:`.storage.hdf5journal`): a kill in the
    middle of HDF5's flush cannot leave a metadata entry torn. The file object is the h5py.File's
    ``hdf5_journal``; close it after the h5py.File (:func:`close_file`)."""
    if recovery.held_by_this_process(path):
        raise recovery.held_here(path)
    journal = hdf5journal.JournaledFile(path, _end_of_allocation, _marker(path), recovery.WRITE_FLAG)
    h5file = None
    try:
        if _flags_set(path):  # as HDF5 refuses it (the flags are ours to keep: see JournaledFile)
            raise OSError(errno.EBUSY, "unable to open file: file is already open for write (may use <h5clear "
                          "file> to clear file consistency flags)")
        h5file = h5py.File(journal, "r+", libver=_schema.LIBVER)
        journal.commit()  # the superblock marked open for writing, as HDF5 marks it
    except BaseException:
        journal.discard()
        if h5file is not None:
            h5file.close()
            journal.discard()
        journal.flags = 0
        journal.close()
        raise
    h5file.hdf5_journal = journal
    _WRITERS[recovery.file_identity(journal.fileno())] = h5file
    return h5file


def _end_of_allocation(fd: int) -> int:
    """Where the state the file holds ends; for a superblock without that field where this reads it (versions
    0 and 1: not a world's), no end: every write HDF5 makes is journaled."""
    try:
        return recovery.end_of_allocation(fd)
    except WorldFormatError:
        return 1 << 62


def _marker(path: str) -> Callable[[bytes, int], tuple[int, bytes] | None]:
    """How a JournaledFile marks the superblock's flags: None for a superblock without flags (versions 0
    and 1: not a world's, which HDF5's open of it goes on to say)."""
    def mark(data: bytes, flags: int) -> tuple[int, bytes] | None:
        try:
            return recovery.marked_superblock(data, flags, path)
        except WorldFormatError:
            return None
    return mark


def _flags_set(path: str) -> bool:
    try:
        return recovery.status_flags(path) != 0
    except WorldFormatError:  # not HDF5, or damaged: HDF5's open says which
        return False


#: The files this process writes through an HDF5 journal, by ``(st_dev, st_ino)`` (:func:`shared_file`).
_WRITERS: dict[tuple[int, int], h5py.File] = {}


def shared_file(path: str) -> h5py.File | None:
    """The file at ``path`` opened again from this process's writer of it, if it has one; else None.

    HDF5 serves every open of one file within a process from one open file,
    so a reader beside a writer in the same process sees the writer's state.
    A writer that writes through its HDF5 journal is open through another
    driver, which HDF5 cannot match with a path: readers in its process get
    a second identifier of the writer's file instead (``H5Freopen``), as
    HDF5 would have given them. Closing it leaves the writer's open.
    """
    try:
        writer = _WRITERS.get(recovery.file_identity(path))
    except OSError:
        return None
    if writer is None or not writer.id.valid:
        return None
    return h5py.File(writer.id.reopen())


def start_swmr(h5file: h5py.File) -> None:
    """Enter SWMR mode (HDF5 flushes, then SWMR readers may open the file); mark the superblock as HDF5 does."""
    journal = h5file.hdf5_journal
    journal.flags = recovery.WRITE_FLAG | recovery.SWMR_WRITE_FLAG
    h5file.swmr_mode = True
    journal.unlock()


def close_file(h5file: h5py.File) -> None:
    """Close an h5py.File, then its HDF5 journal (which writes what HDF5 wrote as it closed)."""
    journal = getattr(h5file, "hdf5_journal", None)
    shared = journal is not None and h5py.h5f.get_obj_count(h5file.id, h5py.h5f.OBJ_FILE) > 1
    if journal is not None:
        _WRITERS.pop(recovery.file_identity(journal.fileno()), None)
    h5file.close()
    if journal is not None:
        journal.flags = 0  # closed: the superblock's flags cleared, as HDF5 clears them
        if shared:  # readers in this process still have HDF5's file open (shared_file): HDF5 writes through
            journal.commit()  # the journal until the last of them closes it, which lets the journal go
        else:
            journal.close()


@contextlib.contextmanager
def closing_journaled(path: str) -> Iterator[h5py.File]:
    h5file = journaled_file(path)
    try:
        yield h5file
    finally:
        close_file(h5file)


def finish_hdf5_journal(path: str) -> str | None:
    """Finish what a killed writer's HDF5 left in its journal (:func:`.storage.hdf5journal.finish`):
    ``"replayed"``, ``"discarded"`` or None (there was none). Refuses a file a live process holds."""
    if not os.path.exists(hdf5journal.journal_path(path)):
        return None
    if recovery.in_use(path):
        raise WorldLockedError(f"{path} is held open by another process; recovery is for files whose writer is "
                               "gone")
    return hdf5journal.finish(path)


def replay(path: str) -> dict[str, Any]:
    """Apply the journal's whole records in order, discard a record cut short, fsync, remove the journal; say
    what was done. The file must not be held by a live writer."""
    journal = journal_path(path)
    if not os.path.exists(journal):
        return {"journal": None}
    records, cut_short = journal_records(path)
    if not records:
        os.unlink(journal)
        return {"journal": "discarded" if cut_short else None}
    with h5py.File(path, "r", libver=_schema.LIBVER) as h5file:
        world_id = _schema.read_world_id(h5file)
    foreign = [record.get("world") for record in records if record.get("world") != world_id]
    if foreign:  # the world was replaced (create --overwrite, compact) after its writer died
        os.unlink(journal)
        return {"journal": "discarded", "reason": f"it belongs to another world file (id {foreign[0]}), "
                f"not to the one now at {path} (id {world_id})"}
    jfd = _platform.open_fd(journal, os.O_RDONLY)
    fd = _platform.open_fd(path, os.O_RDWR)
    try:
        file_size = os.fstat(fd).st_size
        with closing_journaled(path) as h5file:
            spec = _schema.read_spec(h5file, path)
            offset = _schema.commit_offset(h5file, file_size, path)
            for record in records:
                changes = _read_record(jfd, record, file_size, journal, path)
                apply(h5file, fd, spec, changes, False, offset)
        _platform.durable_sync(fd)
    finally:
        os.close(jfd)
        os.close(fd)
    os.unlink(journal)
    result: dict[str, Any] = {"journal": "replayed", "step": changes.step, "commits": len(records)}
    if cut_short:
        result["discarded"] = "a record its writer did not finish"
    return result
