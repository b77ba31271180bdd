"""Out of disk space: commits, snapshots and compaction fail cleanly; live state and history stay intact.

The disk fills in a subprocess whose file size limit (RLIMIT_FSIZE, with
SIGXFSZ ignored) sits just above the world's size: every write past it fails
with EFBIG, as writes to a full disk fail with ENOSPC.
"""

from __future__ import annotations

import json
import os

import numpy as np

import worldstore
from conftest import posix_only, run_python
from worldstore import LayerSpec, WorldSpec, commit

#: The disk fills through RLIMIT_FSIZE, and writers die of SIGKILL: POSIX only.
pytestmark = posix_only

SPEC = WorldSpec(512, 512, 0, [LayerSpec("A", "resource"),
                               LayerSpec("H", "temporal", decay=0.9, threshold=0.01, storage="sparse")])

#: argv: path, operation[, "no-retry"]. Changes the world, limits the file size, tries the operation, reports,
#: then (unless "no-retry") lifts the limit and tries again (the world must still work), and dies without closing.
FULL = r"""
import json, os, resource, signal, sys
import numpy as np
import worldstore
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
path, operation = sys.argv[1], sys.argv[2]
retry = "no-retry" not in sys.argv[3:]
world = worldstore.open(path, "r+", swmr=True)
rng = np.random.default_rng(1)
world["A"][...] = 7.0
world.deposit("H", rng.integers(0, 512, 50000), rng.integers(0, 512, 50000), 1.0)
world.step()
if operation == "compact":
    world.close()
elif operation == "snapshot":
    world.commit()  # the snapshot itself must run out of room, not its commit
limit = os.path.getsize(path) * 4 // 5 if operation == "compact" else os.path.getsize(path) + 4096
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
report = {}
try:
    {"commit": lambda: world.commit(), "snapshot": lambda: world.snapshot(),
     "compact": lambda: worldstore.compact(path, keep_last=1)}[operation]()
    report["error"] = None
except worldstore.DiskFullError as exc:
    report["error"] = str(exc)
# (Portable mode's writer lock file, PATH-lock, stays beside a world once it was opened for writing.)
# The live writer's HDF5 journal (PATH-hdf5journal) is there while it has the file open, its record marked done.
from worldstore.storage import hdf5journal
report["hdf5_pending"] = hdf5journal.pending(path)
report["leftovers"] = sorted(n for n in os.listdir(os.path.dirname(path))
                             if not n.endswith("-lock") and n != os.path.basename(hdf5journal.journal_path(path)))
resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
if operation != "compact" and retry:  # the world goes on once there is room again
    report["again"] = world.snapshot()["step"] if operation == "snapshot" else world.commit()
print(json.dumps(report), flush=True)
os.kill(os.getpid(), 9)
"""


def world_with_history(tmp_path) -> str:
    path = str(tmp_path / "w.h5")
    with worldstore.create(path, SPEC) as world:
        world["A"][...] = 1.0
        world.deposit("H", [1, 2], [3, 4], 1.0)
        world.step()
        world.snapshot()
    return path


def run_full(path: str, operation: str, *flags: str) -> dict:
    proc = run_python(FULL, path, operation, *flags)
    assert proc.returncode == -9, proc.stderr
    return json.loads(proc.stdout)


def assert_first_snapshot_intact(world) -> None:
    past = world.at(1)
    assert (past["A"].numpy() == 1.0).all()
    assert past["H"].coo()[0].tolist() == [[1, 3], [2, 4]]


def test_a_commit_without_room_fails_and_keeps_the_last_commit(tmp_path):
    path = world_with_history(tmp_path)
    report = run_full(path, "commit")
    assert "no room" in report["error"] and "world is as it was" in report["error"]
    assert report["leftovers"] == ["w.h5"] and not report["hdf5_pending"]  # no journal left behind
    assert report["again"] == 2  # with room again, the same changes commit
    with worldstore.open(path) as world:
        assert world.committed_step == 2 and (world["A"].numpy() == 7.0).all()
        assert_first_snapshot_intact(world)


def test_a_snapshot_without_room_fails_and_keeps_history(tmp_path):
    path = world_with_history(tmp_path)
    report = run_full(path, "snapshot")
    assert report["error"] and "the snapshot" in report["error"]
    assert report["again"] == 2
    with worldstore.open(path) as world:
        assert [record["step"] for record in world.history()] == [1, 2]
        assert_first_snapshot_intact(world)
        assert (world.at(2)["A"].numpy() == 7.0).all() and len(world.at(2)["H"].coo()[1]) == world["H"].nnz > 40000


def test_a_snapshot_interrupted_by_a_full_disk_leaves_a_readable_file(tmp_path):
    # The snapshot runs out of room and the writer dies: the file opens with the commit and the old history.
    path = world_with_history(tmp_path)
    report = run_full(path, "snapshot", "no-retry")
    assert report["error"] and "again" not in report
    with worldstore.open(path) as world:
        assert world.committed_step == 2 and (world["A"].numpy() == 7.0).all()
        assert [record["step"] for record in world.history()] == [1]
        assert_first_snapshot_intact(world)


def test_a_compaction_without_room_leaves_the_world_unchanged(tmp_path):
    path = world_with_history(tmp_path)
    report = run_full(path, "compact")
    assert report["error"] and ("unchanged" in report["error"] or "reserve" in report["error"])
    assert report["leftovers"] == ["w.h5"]  # the partial new file is gone
    with worldstore.open(path) as world:  # the world as the writer closed it, before the compaction
        assert world.committed_step == 2 and (world["A"].numpy() == 7.0).all() and world["H"].nnz > 40000
        assert [record["step"] for record in world.history()] == [1]
        assert_first_snapshot_intact(world)


def test_reserved_room_is_given_back(tmp_path):
    path = world_with_history(tmp_path)
    with worldstore.open(path, "r+") as world:
        world.deposit("H", np.arange(500), np.arange(500), 1.0)
        world.snapshot()
        size = os.path.getsize(path)
        assert size == worldstore.recovery.end_of_allocation(path)  # no reserved tail kept
    assert not os.path.exists(commit.journal_path(path))
