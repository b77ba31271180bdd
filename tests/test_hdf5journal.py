"""HDF5's own writes go through a journal: a writer killed in the middle of one leaves HDF5's structures whole.

Linux cuts a killed process's ``write`` at a page (or folio) boundary: the
first part lands, the rest does not. ``benchmarks/soak.py`` once found a world
that no longer opened after such a kill ("incorrect metadata checksum"): an
HDF5 metadata entry, updated in place, half new and half old. These tests tear
HDF5's writes on purpose, at each point of the journal's protocol, in real
subprocesses killed with SIGKILL, and check that the world opens, for readers
(without writing the file) and writers, with every committed step.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal

import h5py
import numpy as np
import pytest

import worldstore
from conftest import posix_only, run_python
from worldstore import LayerSpec, WorldSpec, recovery
from worldstore.storage import hdf5journal

pytestmark = posix_only

SPEC = WorldSpec(64, 48, 0, [LayerSpec("A", "resource"),
                             LayerSpec("H", "temporal", decay=0.5, threshold=0.01, storage="sparse")])

#: argv: path, operation ("commit" or "snapshot"), where ("record": the journal record; "apply": HDF5's first
#: in-place write into the world file; "done": after the writes, before the record is marked done). Commits
#: step 2 (a sparse deposit: HDF5's structures change) and snapshots it; then is killed with SIGKILL inside the
#: HDF5 flush of the next commit (step 3), or of the snapshot of step 3 once it is committed.
TEAR = r"""
import os, signal, sys
import worldstore
from worldstore.storage import hdf5journal
path, operation, where = sys.argv[1:4]
world = worldstore.open(path, "r+", swmr=True)
world["A"][1, 1] = 2.0
world.deposit("H", [1, 2, 3], [4, 5, 6], 1.0)
world.step()
world.snapshot()
world["A"][2, 2] = 3.0
world.deposit("H", list(range(40)), list(range(40)), 1.0)
world.step()
if operation == "snapshot":
    world.commit()
file_inode = os.stat(path).st_ino
write_all, apply = hdf5journal._write_all, hdf5journal._apply

def die():
    os.kill(os.getpid(), signal.SIGKILL)

def torn_write_all(fd, data, offset):
    in_journal = os.fstat(fd).st_ino != file_inode
    if (where == "record") == in_journal and len(data) > 1:
        os.pwrite(fd, bytes(data)[:len(data) // 2], offset)  # the first part lands, as a killed write's does
        die()
    write_all(fd, data, offset)

def apply_then_die(fd, writes, truncate):
    apply(fd, writes, truncate)
    die()

if where == "done":
    hdf5journal._apply = apply_then_die
else:
    hdf5journal._write_all = torn_write_all
world.snapshot() if operation == "snapshot" else world.commit()
print("not killed", flush=True)
"""


def make_world(tmp_path) -> str:
    path = str(tmp_path / "w.h5")
    with worldstore.create(path, SPEC) as world:
        world["A"][0, 0] = 1.0
        world.step()
    return path


def digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.blake2b(f.read(), digest_size=16).hexdigest()


def every_dataset_reads(h5file: h5py.File) -> list[str]:
    """Read every dataset and attribute, as h5dump would: the names read."""
    names: list[str] = []

    def visit(name, obj) -> None:
        dict(obj.attrs)
        if isinstance(obj, h5py.Dataset):
            obj[...]
        names.append(name)

    h5file.visititems(visit)
    return names


@pytest.mark.parametrize("where", ["record", "apply", "done"])
@pytest.mark.parametrize("operation", ["commit", "snapshot"])
def test_a_writer_killed_inside_hdf5s_write_leaves_a_world_that_opens(tmp_path, operation, where):
    path = make_world(tmp_path)
    proc = run_python(TEAR, path, operation, where)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert "not killed" not in proc.stdout
    # A whole record is left when the kill lands after the record was written, and only then.
    assert hdf5journal.pending(path) == (where in ("apply", "done"))

    # A reader never writes the file. Killed inside a commit, the file holds no whole commit: the reader says
    # to recover. Killed inside the snapshot of a committed step, it reads that step, the record's writes
    # applied in what it reads.
    before = digest(path)
    if operation == "commit":
        with pytest.raises(worldstore.WorldLockedError, match="worldstore recover"):
            worldstore.open(path)
    else:
        with worldstore.open(path) as reader:
            assert reader.committed_step == 3
            assert [record["step"] for record in reader.history()] == [2]
            assert float(reader["A"][2, 2]) == 3.0 and float(reader.at(2)["A"][1, 1]) == 2.0
    assert digest(path) == before

    # The writer's open finishes the record, then replays the commit journal: step 3, as committed.
    report = worldstore.recover(path)
    assert report["hdf5_journal"] == ("replayed" if where in ("apply", "done") else "discarded")
    assert report["committed_step"] == 3 and report["snapshots"] == [2]
    assert not os.path.exists(hdf5journal.journal_path(path))
    with worldstore.open(path, "r+") as world:
        assert float(world["A"][2, 2]) == 3.0
        coords, values = world["H"].coo()
        assert set(map(tuple, coords.tolist())) == {(i, i) for i in range(40)} | {(1, 4), (2, 5), (3, 6)}
        assert float(world.at(2)["A"][1, 1]) == 2.0
        world.snapshot()
    with h5py.File(path, "r") as f:  # and any HDF5 program reads every object of it
        assert "layers/A" in every_dataset_reads(f)


def test_a_writer_holds_hdf5s_writes_until_the_flush_and_keeps_the_flags(tmp_path):
    path = make_world(tmp_path)
    world = worldstore.open(path, "r+")
    try:
        journal = world._file.hdf5_journal
        assert recovery.status_flags(path) == recovery.WRITE_FLAG  # marked open for writing, as HDF5 marks it
        world.deposit("H", [1], [1], 1.0)
        world.step()
        world.commit()
        assert journal.journaled_bytes > 0 and not hdf5journal.pending(path)
        with pytest.raises(worldstore.WorldLockedError, match="in this process"):
            worldstore.open(path, "r+")
        code = "import sys, h5py\ntry:\n    h5py.File(sys.argv[1], 'r')\nexcept OSError as e:\n    print(e)"
        refused = run_python(code, path)
        assert "lock" in refused.stdout or "already open" in refused.stdout, refused  # other HDF5 programs wait
    finally:
        world.close()
    assert recovery.status_flags(path) == 0
    assert not os.path.exists(hdf5journal.journal_path(path))


def test_a_swmr_writer_lets_hdf5_readers_in(tmp_path):
    path = make_world(tmp_path)
    with worldstore.open(path, "r+", swmr=True) as world:
        assert recovery.status_flags(path) == recovery.WRITE_FLAG | recovery.SWMR_WRITE_FLAG
        world["A"][3, 3] = 9.0
        world.step()
        world.commit()
        code = ("import sys, h5py\nf = h5py.File(sys.argv[1], 'r', swmr=True)\n"
                "print(float(f['layers/A'][3, 3]))")
        proc = run_python(code, path)
        assert proc.returncode == 0 and proc.stdout.strip() == "9.0", proc.stderr


def test_a_record_is_checked_whole():
    writes = [(0, b"superblock"), (4096, b"x" * 5000)]
    record = hdf5journal.encode(writes, 123, (7, 42))
    assert len(record) > 5010
    assert hdf5journal.decode(record) == (writes, 123) == hdf5journal.decode(record, (7, 42))
    for cut in (8, 30, 50, len(record) - 1):  # any byte changed: the CRC-32 says so
        body = bytearray(record)
        body[cut] ^= 0xFF
        assert hdf5journal.decode(bytes(body)) is None, cut
    assert hdf5journal.decode(record[:-1]) is None
    assert hdf5journal.decode(record, (7, 43)) is None  # written for another file


def test_reads_see_held_writes_and_writes_past_the_end_go_straight_to_the_file(tmp_path):
    path = str(tmp_path / "f.bin")
    with open(path, "wb") as f:
        f.write(bytes(range(256)) * 64)  # 16 KiB
    journal = hdf5journal.JournaledFile(path, lambda fd: 8192)  # the state the file holds ends at 8 KiB
    try:
        journal.seek(100)
        journal.write(b"\xff" * 10)
        journal.seek(9000)
        journal.write(b"\xee" * 10)
        with open(path, "rb") as f:
            data = f.read()
        assert data[100:110] == bytes(range(100, 110)) and data[9000:9010] == b"\xee" * 10
        buffer = bytearray(20)
        journal.seek(95)
        assert journal.readinto(buffer) == 20
        assert bytes(buffer) == bytes(range(95, 100)) + b"\xff" * 10 + bytes(range(110, 115))
        journal.truncate(12000)
        journal.seek(0, os.SEEK_END)
        assert journal.tell() == 12000
        journal.commit()
        with open(path, "rb") as f:
            data = f.read()
        assert len(data) == 12000 and data[100:110] == b"\xff" * 10
        assert json.dumps(hdf5journal.overlay(path)) == json.dumps([[], None])
    finally:
        journal.close()
    assert not os.path.exists(hdf5journal.journal_path(path))


def test_tearing_a_metadata_write_is_what_breaks_a_plain_hdf5_file(tmp_path):
    """The failure the journal exists for, shown on a plain HDF5 file: an object header half rewritten."""
    path = str(tmp_path / "plain.h5")
    with h5py.File(path, "w", libver="latest") as f:
        f.attrs["step"] = np.int64(1)
        f.create_dataset("d", data=np.arange(10))
    before = open(path, "rb").read()
    with h5py.File(path, "r+", libver="latest") as f:
        f.attrs["step"] = np.int64(2)
        f.attrs["note"] = "x" * 200  # the root object header is rewritten in place
    after = open(path, "rb").read()
    changed = [i for i in range(min(len(before), len(after))) if before[i] != after[i] and i >= 48]
    assert changed
    torn = bytearray(after)
    cut = (changed[0] + changed[-1]) // 2  # half of the rewrite lands: the header's checksum no longer holds
    torn[cut:len(before)] = before[cut:]
    with open(path, "wb") as f:
        f.write(torn)
    with pytest.raises(Exception):
        with h5py.File(path, "r") as f:
            every_dataset_reads(f)
            dict(f.attrs)


def test_a_created_worlds_journal_follows_it_to_its_name(tmp_path):
    # create() makes the world under a temporary name and renames it into place: its HDF5 journal goes too,
    # so that a writer killed after create is finished at PATH (a newcomer's trial found it left behind).
    path = str(tmp_path / "w.h5")
    code = ("import os, signal, sys, worldstore\n"
            "w = worldstore.create(sys.argv[1], worldstore.WorldSpec(16, 16, 0, "
            "[worldstore.LayerSpec('H', 'temporal', decay=0.5, storage='sparse')]), swmr=True)\n"
            "w.deposit('H', [1], [1], 1.0); w.step(); w.commit()\n"
            "print(sorted(n for n in os.listdir(os.path.dirname(sys.argv[1])) if not n.endswith('-lock')), "
            "flush=True)\n"
            "os.kill(os.getpid(), signal.SIGKILL)\n")
    proc = run_python(code, path)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert proc.stdout.split("\n")[0] == str(["w.h5", "w.h5-hdf5journal", "w.h5-journal"])
    assert not [name for name in os.listdir(tmp_path) if "creating" in name]
    assert worldstore.recover(path)["hdf5_journal"] == "discarded"  # its record was marked done
    assert sorted(name for name in os.listdir(tmp_path) if not name.endswith("-lock")) == ["w.h5"]


def test_a_record_applies_only_to_the_file_it_was_written_for(tmp_path):
    path = make_world(tmp_path)
    proc = run_python(TEAR, path, "snapshot", "apply")
    assert proc.returncode == -signal.SIGKILL and hdf5journal.pending(path)
    # The world is replaced (a copy over it: another inode) before anyone recovered it: the record is not
    # applied to the newcomer, whose bytes it would tear.
    journal = hdf5journal.journal_path(path)
    with open(journal, "rb") as f:
        record = f.read()
    os.rename(path, path + ".old")
    other = make_world(tmp_path)
    with open(journal, "wb") as f:  # the killed writer's journal, still beside the path
        f.write(record)
    assert other == path and not hdf5journal.pending(other)
    assert hdf5journal.pending(path + ".old") is False  # (its name is another one's now)
    assert worldstore.recover(other)["hdf5_journal"] == "discarded"
    with worldstore.open(other) as world:
        assert world.committed_step == 1 and float(world["A"][0, 0]) == 1.0


def test_a_refused_second_writer_leaves_the_live_writers_journal_alone(tmp_path):
    path = make_world(tmp_path)
    with worldstore.open(path, "r+", swmr=True) as world:
        world["A"][1, 1] = 5.0
        world.step()
        world.commit()
        journal = hdf5journal.journal_path(path)
        assert os.path.exists(journal)
        proc = run_python("import sys, worldstore\ntry:\n    worldstore.open(sys.argv[1], 'r+')\n"
                          "except worldstore.WorldLockedError as e:\n    print('refused')", path)
        assert proc.stdout.strip() == "refused", proc.stderr
        assert os.path.exists(journal)  # the refused open did not take the live writer's journal away


def test_a_journaled_file_refused_its_lock_leaves_its_finalizer_nothing_to_do(tmp_path, monkeypatch):
    # Python 3.13 reports what a file object's close() raises when it is collected; a JournaledFile whose
    # lock was refused once closed a descriptor and then raised EBADF from its finalizer (CI, Python 3.13).
    import fcntl
    import gc
    import sys

    path = make_world(tmp_path)
    seen = []
    monkeypatch.setattr(sys, "unraisablehook", lambda unraisable: seen.append(unraisable))
    holder = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX)  # as a live writer not in SWMR mode holds it
        with pytest.raises(OSError, match="unable to lock file"):
            hdf5journal.JournaledFile(path, lambda fd: 0)
        gc.collect()
    finally:
        os.close(holder)
    assert not seen, [str(u.exc_value) for u in seen]


def test_the_superblock_is_written_once_marked_never_first_as_hdf5_wrote_it(tmp_path):
    """HDF5's own writes of the superblock (flags HDF5 does not keep through fileobj) give way to the marked
    superblock: applied one after the other, a SWMR reader opening between them found the flags of a file no
    SWMR writer had open and refused it (a to_xarray block beside a writer snapshotting in a loop)."""
    path = make_world(tmp_path)
    writes = []
    original = hdf5journal._write_all
    with worldstore.open(path, "r+", swmr=True) as world:
        hdf5journal._write_all = lambda fd, data, offset: (writes.append((fd, offset, bytes(data))),
                                                           original(fd, data, offset))[1]
        try:
            for step in range(3):
                world.deposit("H", [step], [step], 1.0)
                world.step()
                world.snapshot()
        finally:
            hdf5journal._write_all = original
        fd = world._file.hdf5_journal.fileno()
        into_file = [(offset, data) for written_fd, offset, data in writes if written_fd == fd]
        touching = [(offset, data) for offset, data in into_file if offset <= 11 < offset + len(data)]
        assert touching and all(data[11 - offset] == recovery.WRITE_FLAG | recovery.SWMR_WRITE_FLAG
                                for offset, data in touching)


def test_a_write_another_write_covers_keeps_only_what_it_does_not_cover():
    writes = [(0, b"a" * 10), (5, b"b" * 20), (30, b"c" * 4), (8, b"d")]
    assert hdf5journal._outside(writes, 4, b"x" * 16) == [(0, b"aaaa"), (20, b"b" * 5), (30, b"cccc")]


def test_a_record_that_grows_the_file_grows_it_before_the_superblock_says_so(tmp_path):
    """HDF5 asked the file longer (its truncate): it is made so before the writes, one of which may be a
    superblock whose end of allocation says the file ends there; a record asking it shorter cuts it after."""
    path = str(tmp_path / "f.bin")
    with open(path, "wb") as f:
        f.write(b"\1" * 100)
    sizes = []
    original = hdf5journal._write_all
    fd = os.open(path, os.O_RDWR)
    try:
        hdf5journal._write_all = lambda fd, data, offset: (sizes.append(os.fstat(fd).st_size),
                                                           original(fd, data, offset))[1]
        hdf5journal._apply(fd, [(0, b"superblock")], 4096)
        assert sizes == [4096] and os.fstat(fd).st_size == 4096
        hdf5journal._apply(fd, [(0, b"superblock")], 200)
        assert sizes[-1] == 4096 and os.fstat(fd).st_size == 200
    finally:
        hdf5journal._write_all = original
        os.close(fd)
