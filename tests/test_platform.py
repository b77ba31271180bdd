"""The platform module's fallbacks (worldstore/_platform.py), run on Linux: slower, never wrong.

CI also runs the whole suite with WORLDSTORE_PORTABLE=1, which picks every fallback; these tests check
what that run cannot show by itself.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import worldstore
from conftest import digest, posix_only, python_env
from worldstore import LayerSpec, WorldSpec, _platform, commit
from worldstore.storage.pages import LINE


def portable_env() -> dict[str, str]:
    env = python_env()
    env["WORLDSTORE_PORTABLE"] = "1"
    return env


#: Holds the world open for writing (argv[2]: "swmr" or not) until its stdin closes.
HOLDER = ("import sys, worldstore; w = worldstore.open(sys.argv[1], 'r+', swmr=sys.argv[2] == 'swmr'); "
          "print('ready', flush=True); sys.stdin.read(); w.close()")
SECOND = ("import sys, worldstore\n"
          "try:\n"
          "    worldstore.open(sys.argv[1], 'r+')\n"
          "    print('admitted')\n"
          "except worldstore.WorldLockedError as exc:\n"
          "    print('refused', exc)\n")


@pytest.mark.parametrize("swmr", ["swmr", "-"])
def test_portable_mode_refuses_a_second_writer(tmp_path, swmr):
    """HDF5 drops its own lock once a writer is in SWMR mode: the fallback's lock file must still refuse."""
    path = str(tmp_path / "w.h5")
    worldstore.create(path, WorldSpec(8, 8, 0, [LayerSpec("A", "resource")])).close()
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, path, swmr], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, env=portable_env())
    try:
        assert holder.stdout.readline().strip() == "ready"
        assert os.path.exists(path + _platform.LOCK_SUFFIX)
        second = subprocess.run([sys.executable, "-c", SECOND, path], capture_output=True, text=True, timeout=60,
                                env=portable_env())
        # Refused by HDF5's flags and lock, or by worldstore's: for a SWMR writer, whose flock HDF5 dropped, only
        # the fallback's lock tells a live writer from a dead one (whose flags a second writer would clear).
        assert second.stdout.startswith("refused") and ("has a writer already" in second.stdout
                                                        or "held open for writing" in second.stdout), \
            second.stdout + second.stderr
        assert worldstore.recovery.status_flags(path) != 0  # nobody cleared the live writer's flags
        alive = subprocess.run([sys.executable, "-c", "import sys; from worldstore import recovery; "
                                "print(recovery.writer_alive(sys.argv[1]))", path],
                               capture_output=True, text=True, timeout=60, env=portable_env())
        assert alive.stdout.strip() == "True", alive.stderr
    finally:
        holder.communicate("", timeout=60)
    assert holder.returncode == 0
    second = subprocess.run([sys.executable, "-c", SECOND, path], capture_output=True, text=True, timeout=60,
                            env=portable_env())
    assert second.stdout.strip() == "admitted", second.stderr  # released with the writer


def test_without_pagemap_a_one_cell_commit_journals_a_page_not_the_layer(tmp_path, monkeypatch):
    """No /proc/self/pagemap (macOS, Windows, portable mode): the written pages are found by comparing with the
    file, not taken to be every page (which journaled 4-8 MiB for one cell)."""
    monkeypatch.setattr(_platform, "PAGEMAP", False)
    monkeypatch.setattr(_platform, "BLOCK_COPIER", False)
    path = str(tmp_path / "w.h5")
    spec = WorldSpec(1024, 1024, 2, [LayerSpec("A", "resource"), LayerSpec("M", "agent", "float32")])
    with worldstore.create(path, spec) as world:
        assert world["A"]._storage._cow_id is None  # MAP_PRIVATE: the fallback's copies
        world["A"][512, 512] = 1.0
        world["M"][1, 3, 3] = 2.0
        world.step()
        changes = commit.collect(world)
        assert changes.nbytes == 2 * LINE, changes.nbytes  # the changed 64-byte line of each layer
        world.commit()
        world["A"][0, 0] = 3.0  # after the commit (whose copies could not be dropped without madvise, say)
        assert commit.collect(world).nbytes == LINE
    with worldstore.open(path) as world:
        assert float(world["A"][512, 512]) == 1.0 and float(world["A"][0, 0]) == 3.0
        assert float(world["M"][1, 3, 3]) == 2.0 and float(world["M"].numpy().sum()) == 2.0


def test_reservation_without_fallocate_writes_zeros_and_create_writes_fills(tmp_path, monkeypatch):
    """Where posix_fallocate is missing (macOS without F_PREALLOCATE, Windows, portable mode), the room past the
    end is written as zeros, and create writes every layer's fill so that its blocks exist."""
    monkeypatch.setattr(_platform, "PORTABLE", True)
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT)
    try:
        os.write(fd, b"abc")
        assert _platform.reserve_blocks(fd, 0, 10_000) is False  # holes inside the file: not reserved
        assert os.fstat(fd).st_size == 10_000 and _platform.pread(fd, 4, 0) == b"abc\0"
        assert _platform.reserve_blocks(fd, 10_000, 5) is True  # wholly past the end: reserved
        assert os.fstat(fd).st_size == 10_005
    finally:
        os.close(fd)
    path = str(tmp_path / "w.h5")
    with worldstore.create(path, WorldSpec(256, 256, 0, [LayerSpec("A", "resource")])) as world:
        np.testing.assert_array_equal(world["A"].numpy(), 0)
    blocks = os.stat(path).st_blocks * 512
    assert blocks >= 256 * 256 * 4  # the layer's blocks were written, not left a hole


def test_positioned_io_fallback_reads_and_writes_at_offsets(tmp_path, monkeypatch):
    monkeypatch.setattr(_platform, "_POSITIONED", False)
    fd = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT)
    try:
        assert _platform.pwrite(fd, b"hello", 100) == 5
        assert _platform.pread(fd, 5, 100) == b"hello" and _platform.pread(fd, 10, 103) == b"lo"
        buffer = bytearray(3)
        assert _platform.readinto(fd, memoryview(buffer), 101) == 3 and bytes(buffer) == b"ell"
    finally:
        os.close(fd)


def test_the_mechanisms_in_use_are_reported():
    described = _platform.describe()
    assert set(described) >= {"portable", "ofd_locks", "pagemap", "madvise", "block_copier", "positioned_io"}
    if described["portable"]:
        assert not any(described[key] for key in ("ofd_locks", "pagemap", "madvise", "block_copier",
                                                  "positioned_io"))


NO_FCNTL = r"""
import os, sys
sys.modules["fcntl"] = None  # what 'import fcntl' meets on Windows (and msvcrt is not here either)
import worldstore
from worldstore import LayerSpec, WorldSpec, _platform
path = sys.argv[1]
with worldstore.create(path, WorldSpec(64, 64, 0, [LayerSpec("A", "resource"),
                                                   LayerSpec("H", "temporal", storage="sparse")])) as world:
    world["A"][3, 4] = 5.0
    world.step()
    world.deposit("H", [1], [2], 7.0)
    world.commit()
    try:
        worldstore.open(path, "r+")
        print("second writer admitted")
    except worldstore.WorldLockedError:
        print("second writer refused")
    print("alive while open", _platform.writer_alive(path))
    if os.fork() == 0:  # a child that inherits the writer, and exits: the parent keeps its lock
        sys.exit(0)
    os.wait()
    print("alive after a child exited", _platform.writer_alive(path))
print("alive after close", _platform.writer_alive(path))
with worldstore.open(path, "r+") as world:
    print(world.committed_step, float(world["A"][3, 4]), float(world["H"][1, 2]))
"""


@posix_only
def test_worldstore_works_where_fcntl_cannot_be_imported(tmp_path):
    proc = subprocess.run([sys.executable, "-c", NO_FCNTL, str(tmp_path / "w.h5")], capture_output=True, text=True,
                          timeout=120, env=python_env())
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["second writer refused", "alive while open True",
                                        "alive after a child exited True", "alive after close False",
                                        "1 5.0 7.0"], proc.stdout


@pytest.mark.parametrize("operation", ["compact", "create --overwrite"])
def test_a_file_windows_will_not_replace_gets_our_error_and_stays_as_it_was(tmp_path, monkeypatch, operation):
    """Windows refuses to replace a file that any process has open or mapped (a reader, a viewer). That is
    replayed here: os.replace raises what it raises there. The world stays as it was, nothing is left behind."""
    path = str(tmp_path / "w.h5")
    with worldstore.create(path, WorldSpec(32, 32, 0, [LayerSpec("A", "resource")])) as world:
        world["A"][1, 2] = 3.0
        world.commit()
        world.snapshot()
    before = digest(path)
    replace = os.replace

    def refused(source, target):
        if os.path.abspath(target) == os.path.abspath(path):
            raise PermissionError(13, "Access is denied", source, 5, target)
        replace(source, target)

    monkeypatch.setattr(_platform, "WINDOWS", True)
    monkeypatch.setattr(os, "replace", refused)
    with pytest.raises(worldstore.WorldLockedError, match="Windows cannot replace a file that a process has open"):
        if operation == "compact":
            worldstore.compact(path, keep_last=1)
        else:
            worldstore.create(path, WorldSpec(8, 8, 0, [LayerSpec("B", "resource")]), overwrite=True)
    assert digest(path) == before
    # nothing left behind: no new file, no lock file of one (the fallback's own PATH-lock stays by design)
    assert sorted(os.listdir(tmp_path)) == ["w.h5"] + (["w.h5" + _platform.LOCK_SUFFIX] if _platform.LOCK_FILES else [])
    with worldstore.open(path) as world:
        assert world["A"][1, 2] == 3.0 and list(world.layers) == ["A"]
