"""Commits: whole or not at all, whatever instant the writer dies at; readers never see half of one."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
import zlib

import h5py
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import worldstore
from conftest import ROOT, digest, held_open, posix_only, python_env, run_python
from worldstore import LayerSpec, WorldSpec, _platform, commit, recovery
from worldstore.storage.pages import LINE, PAGE as PAGE_BYTES


def spec() -> WorldSpec:
    return WorldSpec(64, 48, 2, [
        LayerSpec("MAPPED", "resource", "float32"),
        LayerSpec("INRAM", "resource", "int32", storage="memory"),
        LayerSpec("HEAT", "temporal", "float32", decay=0.5, threshold=0.01, storage="sparse"),
        LayerSpec("TRAIL", "temporal", "float32", decay=0.5, threshold=0.01),
        LayerSpec("MEMORY", "agent", "float16"),
    ])


def state(world) -> dict[str, np.ndarray]:
    return {name: world[name].numpy().copy() for name in world}


#: A writer that commits step 1, then changes everything and dies before (or while) committing step 2.
#: argv: path, where to die ("before", "journal": while writing the journal, "apply": while writing the file).
WRITER = r"""
import os, sys, json
import numpy as np
import worldstore
from worldstore import commit

path, where = sys.argv[1], sys.argv[2]
world = worldstore.open(path, "r+", swmr=True)
def change(value):
    world["MAPPED"][...] = value
    world["MAPPED"][5, :7] = -value
    world["INRAM"][::3, ::5] = int(value)
    world.deposit("HEAT", [1, 2, 60], [3, 4, 40], value)
    world.deposit("TRAIL", [9], [9], value)
    world["MEMORY"][1, 10:20, 10:20] = value
    world.step()
change(1.0)
world.commit()
print(json.dumps({n: world[n].numpy().tolist() for n in world}), flush=True)
change(2.0)
world.set_storage("TRAIL", "sparse")
print(json.dumps({n: world[n].numpy().tolist() for n in world}), flush=True)
calls = {"n": 0}
def dying(original, after):
    def wrapped(*args):
        calls["n"] += 1
        if calls["n"] > after:
            os.kill(os.getpid(), 9)
        return original(*args)
    return wrapped
if where == "journal":
    commit._write_all = dying(commit._write_all, 2)   # magic and length written, header not
elif where == "apply":
    commit.PageSet.write_into = dying(commit.PageSet.write_into, 1)  # one layer's pages written into the file
else:
    os.kill(os.getpid(), 9)
world.commit()
"""


def kill_writer(path: str, where: str) -> tuple[dict, dict]:
    proc = run_python(WRITER, path, where)
    assert proc.returncode == -9, proc.stderr
    first, second = (json.loads(line) for line in proc.stdout.splitlines())
    return first, second


def assert_state(world, expected: dict) -> None:
    for name, values in expected.items():
        np.testing.assert_array_equal(world[name].numpy(), np.array(values, dtype=world[name].dtype), err_msg=name)


@posix_only
@pytest.mark.parametrize("where", ["before", "journal"])
def test_a_writer_killed_before_its_commit_leaves_the_last_commit(tmp_path, where):
    path = str(tmp_path / "w.h5")
    worldstore.create(path, spec()).close()
    committed, _ = kill_writer(path, where)
    assert any(commit.journal_records(path)) == (where == "journal")  # a record cut short, or nothing pending
    before = digest(path)
    with worldstore.open(path) as world:  # a reader reads the last commit and writes nothing
        assert world.committed_step == world.current_step == 1
        assert_state(world, committed)
        assert world["HEAT"].storage == "sparse" and world["TRAIL"].storage == "mapped"
    assert digest(path) == before
    assert any(commit.journal_records(path)) == (where == "journal")  # a record cut short, or nothing pending
    with worldstore.open(path, "r+") as world:  # a writer's open discards the cut-short journal
        assert world.committed_step == 1
        assert_state(world, committed)
    assert not os.path.exists(commit.journal_path(path))


@posix_only
def test_a_reader_of_a_commit_cut_short_in_the_file_says_to_recover_and_writes_nothing(tmp_path):
    path = str(tmp_path / "w.h5")
    worldstore.create(path, spec()).close()
    kill_writer(path, "apply")
    before = digest(path)
    with pytest.raises(worldstore.WorldLockedError, match="worldstore recover"):
        worldstore.open(path)
    assert digest(path) == before and commit.read_journal(path) is not None


@posix_only
def test_a_commit_killed_while_writing_the_file_is_finished_at_open(tmp_path):
    path = str(tmp_path / "w.h5")
    worldstore.create(path, spec()).close()
    _, pending = kill_writer(path, "apply")
    assert commit.read_journal(path) is not None  # whole: the commit happened
    with h5py.File(path, "r", swmr=True) as f:  # the file is half-written, under an odd sequence
        assert f["commit"][0] % 2 == 1
    with worldstore.open(path, "r+") as world:
        assert world.committed_step == 2
        assert_state(world, pending)
        assert world["TRAIL"].storage == "sparse"
    assert not os.path.exists(commit.journal_path(path))


@pytest.mark.parametrize("where, outcome, step", [("apply", "replayed", 2), ("journal", "discarded", 1)])
def test_recover_finishes_or_discards_and_says_which(tmp_path, where, outcome, step):
    path = str(tmp_path / "w.h5")
    worldstore.create(path, spec()).close()
    kill_writer(path, where)
    report = worldstore.recover(path)
    assert report["journal"] == outcome and report["committed_step"] == step and report["flags_cleared"]
    assert worldstore.recover(path)["journal"] is None


def test_commit_writes_only_the_lines_written(tmp_path):
    path = str(tmp_path / "big.h5")
    big = WorldSpec(1024, 1024, 0, [LayerSpec("A", "resource", "float32"), LayerSpec("B", "resource", "float32")])
    with worldstore.create(path, big) as world:
        world["A"][10, 10] = 1.0
        world["A"][700, :] = 2.0  # one row: 4 KiB, 64 lines
        changes = commit.collect(world)
        assert changes.nbytes == 4096 + LINE  # the lines that changed, not the pages (issue 15)
        assert world.commit() == 0
        assert commit.collect(world).nbytes == 0  # committed pages read the file again: nothing left
        world["A"][10, 11] = 3.0
    with worldstore.open(path) as world:
        assert world["A"][10, 10] == 1.0 and world["A"][10, 11] == 3.0 and (world["A"][700] == 2.0).all()
        assert not world["B"].numpy().any()


def test_memory_layers_commit_the_pages_that_differ(tmp_path):
    path = str(tmp_path / "m.h5")
    small = WorldSpec(512, 512, 0, [LayerSpec("M", "resource", "float64", storage="memory")])
    with worldstore.create(path, small) as world:
        world["M"][100, 3] = 5.0
        assert commit.collect(world).nbytes == LINE
        world.commit(durable=False)
        assert commit.collect(world).nbytes == 0
    with worldstore.open(path) as world:
        assert world["M"][100, 3] == 5.0 and world["M"].numpy().sum() == 5.0


def test_storage_changes_before_a_commit_are_kept(tmp_path):
    path = str(tmp_path / "s.h5")
    worldstore.create(path, spec()).close()
    with worldstore.open(path, "r+") as world:
        world.deposit("TRAIL", [3, 4], [5, 6], 1.0)
        world.set_storage("TRAIL", "sparse")
        world.deposit("TRAIL", [7], [8], 2.0)
        world.set_storage("TRAIL", "memory")
        world["MAPPED"][1, 1] = 4.0
        world.set_storage("MAPPED", "memory")
        world["MAPPED"][2, 2] = 5.0
        world.set_storage("MAPPED", "mapped")
        expected = state(world)
    with worldstore.open(path) as world:
        for name, values in expected.items():
            np.testing.assert_array_equal(world[name].numpy(), values, err_msg=name)


def test_readers_get_copies_of_one_committed_step(tmp_path):
    path = str(tmp_path / "r.h5")
    with worldstore.create(path, spec()) as world:
        world["MAPPED"][...] = 3.0
        world.step()
    with worldstore.open(path) as world:
        part = world["MAPPED"][2:4]
        assert part.base is None or not np.shares_memory(part, world["MAPPED"].numpy())  # a copy
        step, total = world.read(lambda w: float(w["MAPPED"].numpy().sum()))
        assert (step, total) == (1, 3.0 * 64 * 48)
        assert world["MAPPED"].window(slice(0, 2), slice(0, 2)).tolist() == [[3.0, 3.0], [3.0, 3.0]]


def test_a_file_without_a_commit_sequence_opens_and_gets_one(tmp_path):
    path = str(tmp_path / "old.h5")
    with worldstore.create(path, spec()) as world:
        world["MAPPED"][0, 0] = 1.0
    with h5py.File(path, "r+") as f:
        del f["commit"]
    with worldstore.open(path) as world:
        assert world.read(lambda w: float(w["MAPPED"][0, 0])) == (None, 1.0)  # unchecked: no sequence
    with worldstore.open(path, "r+") as world:
        world["MAPPED"][0, 0] = 2.0
    with worldstore.open(path) as world:
        assert world.read(lambda w: float(w["MAPPED"][0, 0])) == (0, 2.0)


def test_a_second_swmr_writer_is_refused(tmp_path):
    # HDF5 drops its own file lock once a writer enters SWMR mode; the writer's lock still stands.
    path = str(tmp_path / "w.h5")
    worldstore.create(path, spec()).close()
    with held_open(path, swmr=True):
        assert recovery.writer_alive(path) and recovery.in_use(path)
        with pytest.raises(worldstore.WorldLockedError):
            worldstore.open(path, "r+")
        with pytest.raises(worldstore.WorldLockedError, match="held open"):
            worldstore.recover(path)
        with worldstore.open(path, "r", swmr=True) as reader:  # readers are welcome
            assert reader.committed_step == 0
    assert not recovery.writer_alive(path)


@posix_only
def test_files_and_journals_follow_the_umask(tmp_path):
    code = ("import os, sys, worldstore\n"
            "from worldstore import commit\n"
            "os.umask(0o027)\n"
            "spec = worldstore.WorldSpec(8, 8, 0, [worldstore.LayerSpec('A', 'resource')])\n"
            "w = worldstore.create(sys.argv[1], spec)\n"
            "w['A'][0, 0] = 1.0\n"
            "original = commit.apply\n"
            "def apply(*args):\n"
            "    print(oct(os.stat(commit.journal_path(sys.argv[1])).st_mode & 0o777))\n"
            "    original(*args)\n"
            "commit.apply = apply\n"
            "w.close()\n")
    path = str(tmp_path / "u.h5")
    proc = run_python(code, path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["0o640"]  # the journal
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640


def test_nothing_is_pickled_or_evaluated():
    # Attributes are plain numbers and strings; the code never unpickles or evaluates what it reads.
    package = os.path.join(ROOT, "worldstore")
    for name in os.listdir(package):
        if name.endswith(".py"):
            with open(os.path.join(package, name)) as f:
                text = f.read()
            for word in ("import pickle", "pickle.load", "eval(", "exec(", "allow_pickle=True"):
                assert word not in text, f"{name} uses {word}"


@posix_only
def test_a_snapshot_cut_short_leaves_the_commit_before_it(tmp_path):
    path = str(tmp_path / "w.h5")
    worldstore.create(path, spec()).close()
    code = ("import os, sys, worldstore\n"
            "from worldstore import history\n"
            "world = worldstore.open(sys.argv[1], 'r+', swmr=True)\n"
            "world.deposit('HEAT', [1], [1], 1.0)\n"
            "history._append_snapshot = lambda *args: os.kill(os.getpid(), 9)\n"
            "world.snapshot()\n")
    proc = run_python(code, path)
    assert proc.returncode == -9, proc.stderr
    with worldstore.open(path, "r", swmr=True) as reader:
        assert reader.read(lambda w: float(w["HEAT"][1, 1]))[1] == 1.0  # committed before the snapshot began
        assert reader.history() == []


def test_a_starved_reader_holds_the_writer_back_for_one_read(tmp_path, monkeypatch):
    # A read slower than the time between commits would never finish between two: after a few spoiled
    # tries the reader takes the apply lock shared, and the writer waits for it.
    path = str(tmp_path / "w.h5")
    worldstore.create(path, spec()).close()
    writer = subprocess.Popen([sys.executable, "-c",
                               "import sys, worldstore\n"
                               "w = worldstore.open(sys.argv[1], 'r+', swmr=True)\n"
                               "print('ready', flush=True)\n"
                               "for step in range(1, 400):\n"
                               "    w['MAPPED'][...] = step\n"
                               "    w.step()\n"
                               "    w.commit(durable=False)\n", path],
                              stdout=subprocess.PIPE, text=True, env=python_env())
    try:
        assert writer.stdout.readline().strip() == "ready"
        with worldstore.open(path, "r", swmr=True) as reader:
            calls = []

            def slow(world):
                calls.append(1)
                first = world["MAPPED"].numpy().copy()
                time.sleep(0.02)  # several commits land meanwhile
                return first, world["MAPPED"].numpy().copy()

            step, (first, second) = reader.read(slow)
            assert (first == second).all() and (first == step).all()
            assert len(calls) <= commit._PATIENCE + 1
    finally:
        writer.wait(timeout=120)
    assert writer.returncode == 0


def test_restoring_an_older_snapshot_of_a_dense_temporal_layer_keeps_every_cell(tmp_path):
    # Snapshot 0's stored cells are followed by never-written rows (up to the next chunk boundary) that
    # read as cell (0, 0) = 0: they must not overwrite the real (0, 0).
    path = str(tmp_path / "w.h5")
    worldstore.create(path, spec()).close()
    with worldstore.open(path, "r+") as world:
        world.deposit("TRAIL", [0, 5], [0, 6], [2.5, 1.0])
        world.snapshot()
        world.step()
        world.snapshot()
        world.restore(0)
        assert world["TRAIL"][0, 0] == 2.5 and world["TRAIL"][5, 6] == 1.0
        coords, values = world.at(0)["TRAIL"].coo()
        assert coords.tolist() == [[0, 0], [5, 6]] and values.tolist() == [2.5, 1.0]


needs_blocks = pytest.mark.skipif(worldstore._native.cow_library is None or not _platform.BLOCK_COPIER,
                                  reason="the block copier (_cow.c) is not built, or portable mode: the kernel "
                                         "copies 4 KiB pages instead")


@needs_blocks
def test_a_writer_copies_2mib_blocks_keeps_them_and_commits_only_changed_lines(tmp_path):
    path = str(tmp_path / "blocks.h5")
    grid = WorldSpec(2048, 2048, 4, [LayerSpec("A", "resource"), LayerSpec("M", "agent", "float16")])
    with worldstore.create(path, grid) as world:
        storage = world._storages["A"]
        assert storage._cow_id is not None and world._storages["M"]._cow_id is None  # agent layers: 4 KiB
        world["A"][5, 5] = 1.0
        world["A"][2047, 2047] = 2.0
        assert np.flatnonzero(storage._dirty).tolist() == [0, len(storage._dirty) - 1]
        assert commit.collect(world).nbytes == 2 * LINE  # the two changed lines, not the pages or blocks
        world.commit()
        assert storage._dirty.tolist() == [2] + [0] * (len(storage._dirty) - 2) + [2]  # kept, read-only
        assert commit.collect(world).nbytes == 0  # kept copies are not compared again
        world["A"][5, 6] = 3.0  # a kept copy, written again: no new copy, marked written
        assert storage._dirty[0] == 1 and storage._dirty[-1] == 2
        assert commit.collect(world).nbytes == LINE
        with worldstore.open(path, swmr=True) as reader:  # the file still holds the commit, not the write
            assert reader["A"][5, 6] == 0.0 and reader["A"][5, 5] == 1.0
    with worldstore.open(path) as world:
        assert world["A"][5, 5] == 1.0 and world["A"][5, 6] == 3.0 and world["A"][2047, 2047] == 2.0


@needs_blocks
def test_copies_past_the_budget_are_dropped_at_commit(tmp_path, monkeypatch):
    """Kept copies are bounded (KEEP_BYTES): past it they read the file again, as a world larger than memory
    needs; the next write copies again. Values stay right either way."""
    from worldstore.storage import mapped

    path = str(tmp_path / "budget.h5")
    with worldstore.create(path, WorldSpec(2048, 2048, 0, [LayerSpec("A", "resource")])) as world:
        storage = world._storages["A"]
        world["A"][0, 0] = 1.0
        world.commit()
        assert storage._dirty[0] == 2  # within the budget: kept
        monkeypatch.setattr(mapped, "KEEP_BYTES", mapped._KEPT_BYTES[storage._cow_id])  # room for that one only
        world["A"][1024, 1024] = 2.0
        world.commit()
        assert not storage._dirty.any()  # two blocks: past it, both dropped
        world["A"][0, 1] = 3.0
        assert storage._dirty[0] == 1
    with worldstore.open(path) as world:
        assert world["A"][0, 0] == 1.0 and world["A"][1024, 1024] == 2.0 and world["A"][0, 1] == 3.0


@needs_blocks
def test_threads_writing_the_same_blocks_lose_nothing(tmp_path):
    import threading

    path = str(tmp_path / "threads.h5")
    with worldstore.create(path, WorldSpec(1024, 1024, 0, [LayerSpec("A", "resource", "float64")])) as world:
        array = world["A"].numpy()

        def write(column: int) -> None:
            for row in range(0, 1024, 3):
                array[row, column::8] = row + column

        threads = [threading.Thread(target=write, args=(column,)) for column in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        expected = array.copy()
    rows = np.arange(0, 1024, 3)
    assert (expected[rows] == rows[:, None] + (np.arange(1024) % 8)[None, :]).all()
    with worldstore.open(path) as world:
        np.testing.assert_array_equal(world["A"].numpy(), expected)


@needs_blocks
def test_views_kept_after_close_still_take_writes_that_never_reach_the_file(tmp_path):
    path = str(tmp_path / "kept.h5")
    with worldstore.create(path, WorldSpec(512, 512, 0, [LayerSpec("A", "resource")])) as world:
        kept = world["A"].numpy()
        kept[0, 0] = 1.0
    kept[1, 1] = 2.0  # after close: the process's own copy
    with worldstore.open(path) as world:
        assert world["A"][0, 0] == 1.0 and world["A"][1, 1] == 0.0
    assert kept[1, 1] == 2.0


@posix_only
def test_a_snapshot_killed_after_some_cells_never_hands_them_to_the_snapshot_before(tmp_path):
    path = str(tmp_path / "w.h5")
    with worldstore.create(path, spec()) as world:
        world.deposit("HEAT", [1, 2], [3, 4], 1.0)
        world.snapshot()
        before = world.at(0)["HEAT"].coo()
    code = ("import os, sys, worldstore\n"
            "from worldstore import history\n"
            "world = worldstore.open(sys.argv[1], 'r+', swmr=True)\n"
            "world.deposit('HEAT', [5, 6, 7], [8, 9, 10], 2.0)\n"
            "world.step()\n"
            "original = history._append_coo\n"
            "def dying(group, *args):\n"
            "    original(group, *args)\n"
            "    group.file.flush()  # the cells' extent reaches the file (HDF5 may flush it any time)\n"
            "    os.kill(os.getpid(), 9)\n"
            "history._append_coo = dying\n"
            "world.snapshot()\n")
    proc = run_python(code, path)
    assert proc.returncode == -9, proc.stderr
    with worldstore.open(path, "r+") as world:  # the cells of the cut-short snapshot are in the file
        assert [record["step"] for record in world.history()] == [0]
        world.snapshot()
        for step, expected in ((0, before), (1, world["HEAT"].coo())):
            coords, values = world.at(step)["HEAT"].coo()
            assert coords.tolist() == expected[0].tolist() and values.tolist() == expected[1].tolist(), step


@needs_blocks
def test_a_layer_the_block_copier_cannot_take_is_mapped_private(tmp_path, monkeypatch):
    # Out of regions (or mprotect refused): the layer falls back to the kernel's 4 KiB copies.
    monkeypatch.setattr(worldstore._native.cow_library, "ws_cow_register", lambda *args: -1)
    path = str(tmp_path / "fallback.h5")
    with worldstore.create(path, WorldSpec(256, 256, 0, [LayerSpec("A", "resource")])) as world:
        assert world._storages["A"]._cow_id is None
        world["A"][3, 4] = 5.0
        world.commit()
        assert world._storages["A"]._written.size == 0  # its private pages were dropped at the commit
        world["A"][3, 5] = 6.0  # committed by close()
    with worldstore.open(path) as world:
        assert world["A"][3, 4] == 5.0 and world["A"][3, 5] == 6.0


def leave_record(path: str, magic: bytes, fields: dict, data: bytes) -> None:
    """Leave ``path``'s journal holding one whole record, as a killed writer of format ``magic`` would have."""
    header = json.dumps({"kinds": {}, "coo": [], **fields}).encode()
    record = magic + len(header).to_bytes(8, "little") + header + data
    with open(commit.journal_path(path), "wb") as f:
        f.write(record + zlib.crc32(record).to_bytes(4, "little") + b"WSJEND02")


def test_a_journal_of_whole_pages_left_by_an_older_writer_is_replayed(tmp_path):
    """Journals now hold 64-byte lines (WSJOURN3). One that a writer of the page-journal format (WSJOURN2)
    left when it was killed must still be finished, not discarded: it holds a commit."""
    import json
    import zlib

    path = str(tmp_path / "w.h5")
    with worldstore.create(path, spec()) as world:
        world.commit()
        storage = world._storages["MAPPED"]
        offset, sequence, world_id = storage._offset, world._sequence, world._world_id
        page = np.asarray(world["MAPPED"].numpy()).reshape(-1).view(np.uint8)[:PAGE_BYTES].copy()
    page.view(np.float32)[3] = 5.0  # the commit that never reached the file: MAPPED's cell 3 of its first page
    leave_record(path, b"WSJOURN2", {"world": world_id, "step": 7, "sequence": sequence + 2,
                                     "pages": [[offset, PAGE_BYTES, 1, PAGE_BYTES]]},
                 np.int64(0).tobytes() + page.tobytes())
    assert worldstore.recover(path)["journal"] == "replayed"
    with worldstore.open(path) as world:
        assert world["MAPPED"].numpy().reshape(-1)[3] == 5.0 and world.committed_step == 7


# -- the write-ahead journal (issue 15) ----------------------------------------------------------------
def test_durable_commits_fsync_the_journal_and_the_file_only_at_a_checkpoint(tmp_path, monkeypatch):
    """A durable commit's fsync is the journal's (the commit point); the file's pages reach the disk at a
    checkpoint: a structural commit, a snapshot, the journal past its bound, and close."""
    synced = []
    monkeypatch.setattr(_platform, "durable_sync", lambda fd: synced.append(fd))
    path = str(tmp_path / "w.h5")
    world = worldstore.create(path, WorldSpec(256, 256, 0, [LayerSpec("A", "resource")]))
    file_fd = world._fd
    synced.clear()
    for step in range(3):
        world["A"][step, step] = step + 1.0
        world.step()
        world.commit()
    assert len(synced) == 3 and file_fd not in synced  # the journal, once per commit
    assert [record["step"] for record in commit.journal_records(path)[0]] == [1, 2, 3]
    synced.clear()
    world.snapshot()  # a checkpoint: the file, and the journal is emptied
    assert file_fd in synced and commit.journal_records(path) == ([], False)
    world["A"][9, 9] = 9.0
    world.commit()
    assert [record["step"] for record in commit.journal_records(path)[0]] == [3]  # a new chain, from 0
    synced.clear()
    world.close()
    assert synced == [file_fd] and not os.path.exists(commit.journal_path(path))
    with worldstore.open(path) as world:
        assert [float(world["A"][i, i]) for i in (0, 1, 2, 9)] == [1.0, 2.0, 3.0, 9.0]


def test_the_journal_is_checkpointed_past_its_bound_and_never_replays_older_records(tmp_path, monkeypatch):
    monkeypatch.setattr(commit, "checkpoint_bytes", lambda world: 600)  # about two records (281 bytes each)
    path = str(tmp_path / "w.h5")
    with worldstore.create(path, WorldSpec(256, 256, 0, [LayerSpec("A", "resource")])) as world:
        ends = []
        for step in range(5):
            world["A"][step, :16] = step + 1.0  # one line a commit
            world.step()
            world.commit()
            ends.append(world._journal_end)
        assert 0 in ends  # checkpointed on the way
        records, _ = commit.journal_records(path)
        assert [r["step"] for r in records] == list(range(5 - len(records) + 1, 6)) and len(records) < 5


RESTORED_DISK = r"""
import os, shutil, signal, sys
import worldstore
path = sys.argv[1]
world = worldstore.open(path, "r+")
shutil.copyfile(path, path + ".disk")  # what the disk holds: the last checkpoint
for step in range(1, 6):
    world["A"][step, :] = step
    world.step()
    world.commit()  # durable: the journal is fsync'd, the file's pages wait for a checkpoint
print(len(worldstore.commit.journal_records(path)[0]), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


@posix_only
def test_a_power_cut_before_a_checkpoint_loses_no_durable_commit(tmp_path):
    """Replayed as a test can: the writer commits 5 steps durably and is killed; then the file is put back
    as the disk held it at the last checkpoint (none of the 5 commits' pages), as after a power cut. The
    journal's 5 records bring every commit back."""
    path = str(tmp_path / "w.h5")
    worldstore.create(path, WorldSpec(64, 64, 0, [LayerSpec("A", "resource")])).close()
    proc = run_python(RESTORED_DISK, path)
    assert proc.returncode == -9 and proc.stdout.strip() == "5", proc.stderr
    os.replace(path + ".disk", path)
    with worldstore.open(path) as reader:  # before recovery: the checkpoint's state, and it says so
        assert reader.committed_step == 0
    report = worldstore.recover(path)
    assert report["journal"] == "replayed" and report["journal_commits"] == 5
    with worldstore.open(path) as world:
        assert world.committed_step == 5
        np.testing.assert_array_equal(world["A"].numpy()[1:6], np.repeat(np.arange(1, 6, dtype=np.float32), 64)
                                      .reshape(5, 64))


@settings(max_examples=80, deadline=None)
@given(st.lists(st.integers(0, 2**40), max_size=200, unique=True))
def test_a_records_unit_numbers_decode_to_themselves(numbers):
    """Records store unit numbers as 16-bit steps, 32-bit or 64-bit numbers, whichever fits."""
    units = np.array(sorted(numbers), dtype=np.int64)
    code, base, raw = commit.encode_index(units)
    assert commit.decode_index(code, base, raw.tobytes()).tolist() == units.tolist()
    assert raw.itemsize == commit._INDEX_BYTES[code]
    if len(units) > 1 and np.diff(units).max() < 1 << 16:
        assert code == "d2"


#: A writer of a 2048 x 2048 float32 layer (16 MiB: its dense records are sealed) commits it rewritten, is
#: checkpointed (its next record goes over the first), rewrites it again and dies: "data" after the new record's
#: data but before its end, "end" after its end (before it wrote the file). argv: path, where.
SEALED_WRITER = r"""
import os, signal, sys
import numpy as np
import worldstore
from worldstore import commit
path, where = sys.argv[1], sys.argv[2]
world = worldstore.open(path, "r+")
world["A"].numpy()[...] = 1.0
world.step()
world.commit()
commit.checkpoint(world)
world["A"].numpy()[...] = 2.0
world.step()
original = commit._write_all
def writing(fd, part, position):
    if len(part) == commit._DIGEST + len(commit._END) and bytes(part).endswith(commit._END):  # the end
        if where == "data":
            os.kill(os.getpid(), signal.SIGKILL)
        end = original(fd, part, position)
        os.kill(os.getpid(), signal.SIGKILL)
    return original(fd, part, position)
commit._write_all = writing
world.commit()
"""


@posix_only
@pytest.mark.parametrize("where, step, value", [("data", 1, 1.0), ("end", 2, 2.0)])
def test_a_sealed_record_counts_only_once_its_end_is_written(tmp_path, where, step, value):
    """A dense record's CRC covers its header only; its end, written after its data, says it is whole. Killed
    before that end, the record is discarded, though the end of the older record it was written over lies
    where its own would be; killed after it, it is replayed."""
    path = str(tmp_path / "w.h5")
    worldstore.create(path, WorldSpec(2048, 2048, 0, [LayerSpec("A", "resource")])).close()
    proc = run_python(SEALED_WRITER, path, where)
    assert proc.returncode == -9, proc.stderr
    records, cut_short = commit.journal_records(path)
    assert (len(records), cut_short) == ((0, True) if where == "data" else (1, False))
    if records:
        assert records[0]["check"] == "header"
    worldstore.recover(path)
    with worldstore.open(path) as world:
        assert world.committed_step == step
        assert (world["A"].numpy() == value).all()


def test_a_durable_sealed_record_is_synced_before_its_end_is_written(tmp_path, monkeypatch):
    """A power cut must not leave an end on the disk without the data it vouches for: the data is fsync'd,
    then the end written and fsync'd. A small record is written whole, then fsync'd once."""
    events = []
    monkeypatch.setattr(_platform, "durable_sync", lambda fd: events.append("sync"))
    original = commit._write_all
    monkeypatch.setattr(commit, "_write_all", lambda fd, part, position: (
        events.append("end" if bytes(part[-len(commit._END):]) == commit._END and len(part) == 12 else "write"),
        original(fd, part, position))[1])
    path = str(tmp_path / "w.h5")
    with worldstore.create(path, WorldSpec(2048, 2048, 0, [LayerSpec("A", "resource")])) as world:
        world["A"].numpy()[...] = 3.0
        events.clear()
        world.commit()
        assert events[-4:] == ["write", "sync", "end", "sync"], events
        world["A"][5, 5] = 4.0
        events.clear()
        world.commit()
        assert events[-3:] == ["write", "end", "sync"] and events.count("sync") == 1, events


def test_a_dense_change_is_journaled_from_the_layer_itself_and_replays(tmp_path):
    # One run of whole pages (a whole layer rewritten) is journaled from the layer's bytes, not a copy.
    path = str(tmp_path / "w.h5")
    with worldstore.create(path, WorldSpec(512, 512, 0, [LayerSpec("A", "resource")])) as world:
        world["A"][...] = np.arange(512 * 512, dtype=np.float32).reshape(512, 512)
        world.step()
        changes = commit.collect(world)
        whole = [page_set for page_set in changes.pages if page_set.unit == 4096]
        assert len(whole) == 1 and whole[0].data.base is not None  # a view
        assert np.shares_memory(whole[0].data, world._storages["A"].array)
        world.commit()
    with worldstore.open(path) as world:
        np.testing.assert_array_equal(world["A"].numpy().ravel(), np.arange(512 * 512, dtype=np.float32))


# -- a scattered commit's journal keeps changed words, not whole lines (issue 15) ---------------------------
@settings(max_examples=120, deadline=None)
@given(st.integers(1, 3 * PAGE_BYTES + 200), st.data())
def test_lines_kept_as_changed_words_rebuild_the_new_bytes(nbytes, data):
    """What a record keeps of a set of lines (a mask byte per line, the words its bits name), written over the
    file's old bytes, gives the new bytes: numpy's copy of the region is the reference."""
    from worldstore.storage.pages import PageSet

    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    old = rng.integers(0, 256, nbytes, dtype=np.uint8)
    new = old.copy()
    changed = data.draw(st.lists(st.integers(0, nbytes - 1), max_size=60))
    new[changed] = new[changed] + rng.integers(1, 255, len(changed), dtype=np.uint8)
    file = old.copy()
    for page_set in PageSet.changed(-1, 0, new, view=file):
        if page_set.masks is not None:
            assert page_set.unit == LINE and page_set.journal_bytes == len(page_set.pages) + page_set.words.nbytes
            page_set = PageSet.from_words(0, nbytes, page_set.pages, page_set.masks, page_set.words)
        page_set.scatter(file)
    np.testing.assert_array_equal(file, new)


def test_a_scattered_commit_writes_at_most_twice_its_changed_lines(tmp_path):
    """10,000 random float32 cells: the record (header, line numbers, masks, words) and the lines written into
    the file come to at most twice the changed 64-byte lines (the record held whole lines before: 2.03x). A
    writer killed after the record replays it into the file."""
    path = str(tmp_path / "w.h5")
    size = 1024
    rng = np.random.default_rng(15)
    ys, xs = rng.integers(0, size, 10_000), rng.integers(0, size, 10_000)
    with worldstore.create(path, WorldSpec(size, size, 0, [LayerSpec("A", "resource")])) as world:
        world.commit()
        world["A"].numpy()[ys, xs] += 1.0
        world.step()
        changes = commit.collect(world)
        end = commit.write_journal(path, changes, False, world._journal_end)
        changed = len(np.unique((ys * size + xs) * 4 // LINE)) * LINE
        assert changes.nbytes == changed  # whole lines go into the file
        assert (end - world._journal_end) + changes.nbytes <= 2 * changed, (end, changed)
        expected = world["A"].numpy().copy()
        world.commit()
    # The same record, left by a writer killed before it wrote the file: replayed.
    proc = run_python(KILLED_AFTER_RECORD, path, str(size))
    assert proc.returncode == -9, proc.stderr
    assert worldstore.recover(path)["journal"] == "replayed"
    with worldstore.open(path) as world:
        expected[ys, xs] += 1.0
        np.testing.assert_array_equal(world["A"].numpy(), expected)
        assert world.committed_step == 2


#: Commits 10,000 scattered cells' record to the journal, then dies before writing them into the file.
KILLED_AFTER_RECORD = r"""
import os, signal, sys
import numpy as np
import worldstore
from worldstore import commit
path, size = sys.argv[1], int(sys.argv[2])
rng = np.random.default_rng(15)
ys, xs = rng.integers(0, size, 10_000), rng.integers(0, size, 10_000)
world = worldstore.open(path, "r+")
world["A"].numpy()[ys, xs] += 1.0
world.step()
def dead(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)
commit.apply = dead
world.commit()
"""


def committed_world(path: str) -> tuple[dict, tuple[int, int], np.ndarray]:
    """A world of :func:`spec` at ``path``, committed and closed: the fields of a record of its next commit
    (step 4), where MAPPED lies in the file, and MAPPED's bytes."""
    with worldstore.create(path, spec()) as world:
        world.commit()
        storage = world._storages["MAPPED"]
        fields = {"world": world._world_id, "step": 4, "sequence": world._sequence + 2}
        layer = np.asarray(world["MAPPED"].numpy()).reshape(-1).view(np.uint8).copy()
        return fields, (storage._offset, storage.array.nbytes), layer


def test_a_journal_of_whole_lines_left_by_an_older_writer_is_replayed(tmp_path):
    """A WSJOURN3 record (whole 64-byte lines, no form field) left by a killed writer is still finished."""
    path = str(tmp_path / "w.h5")
    fields, (offset, nbytes), layer = committed_world(path)
    line = layer[LINE:2 * LINE].copy()
    line.view(np.float32)[1] = 7.0  # cell 17 of MAPPED
    leave_record(path, b"WSJOURN3", {**fields, "pages": [[offset, nbytes, 1, LINE, LINE, "i8", 0]]},
                 np.int64(1).tobytes() + line.tobytes())
    assert worldstore.recover(path)["journal"] == "replayed"
    with worldstore.open(path) as world:
        assert world["MAPPED"].numpy().reshape(-1)[17] == 7.0 and world.committed_step == 4


def test_a_record_in_a_form_this_version_cannot_read_is_refused_by_name(tmp_path):
    path = str(tmp_path / "w.h5")
    fields, (offset, nbytes), _ = committed_world(path)
    leave_record(path, commit._MAGIC, {**fields, "pages": [[offset, nbytes, 1, LINE, LINE, "i8", 0, "zz"]]},
                 np.int64(1).tobytes() + bytes(LINE))
    before = digest(path)
    with pytest.raises(worldstore.WorldFormatError, match="'zz'"):
        worldstore.recover(path)
    assert digest(path) == before


def test_the_clock_is_written_through_open_attributes_and_created_where_a_file_lacks_them(tmp_path):
    """_schema.Clock: the step counters a commit writes without looking them up by name; a file without them
    (written before they existed) gets them at the first write, then through the opened attributes."""
    from worldstore import _schema

    with h5py.File(str(tmp_path / "c.h5"), "w", libver="latest") as f:
        clock = _schema.Clock(f)
        clock.write(3, 2)
        assert (int(f.attrs[_schema.ROOT_STEP]), int(f.attrs[_schema.ROOT_COMMITTED])) == (3, 2)
        clock.write(4, 4)
        assert (int(f.attrs[_schema.ROOT_STEP]), int(f.attrs[_schema.ROOT_COMMITTED])) == (4, 4)
