"""Writers killed with SIGKILL: the file opens again by itself, committed steps, live layers and snapshots intact."""

from __future__ import annotations

import json
import os
import random
import sys

import pytest

import worldstore
from conftest import ROOT, every_class_spec, held_open, posix_only, run_cli, run_python
from worldstore import recovery

#: Writers killed with SIGKILL: POSIX only.
pytestmark = posix_only

KILLS = 50

sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import soak  # noqa: E402  (the writer and its reports, shared with benchmarks/soak.py)


def test_lookup3_matches_the_reference_vectors():
    assert recovery.lookup3(b"") == 0xDEADBEEF
    assert recovery.lookup3(b"Four score and seven years ago") == 0x17770551
    assert recovery.lookup3(b"Four score and seven years ago", 1) == 0xCD628161


def test_a_clean_file_has_no_flags_and_recover_says_so(tmp_path):
    path = tmp_path / "clean.h5"
    worldstore.create(path, every_class_spec()).close()
    assert recovery.status_flags(path) == 0
    report = worldstore.recover(path)
    assert report["flags_cleared"] is False and report["committed_step"] == 0


def test_writers_killed_at_random_instants_reopen_with_their_committed_step(tmp_path):
    path = str(tmp_path / "crash.h5")
    worldstore.create(path, soak.spec()).close()
    rng = random.Random(6)
    state = {"committed": 0, "snapshots": {}}
    recovered = 0
    for _ in range(KILLS):
        soak.kill_writer(path, rng, state)
        committed = state["committed"]
        recovered += recovery.status_flags(path) != 0
        with worldstore.open(path, "r+") as world:  # recovers by itself
            # A commit that had not returned when the kill came may or may not have reached the file.
            assert world.committed_step in (committed, committed + 1)
            state["committed"] = world.committed_step
            assert world.current_step == world.committed_step
            assert soak.live_matches(world, state)  # the committed step, whole, and nothing after it
            steps = [record["step"] for record in world.history()]
            for step in state["snapshots"]:  # every reported snapshot is there and reads whole
                assert step in steps
                past = world.at(step)
                for name in world:
                    past[name].numpy()
            # Their content against the writer's checksums is what benchmarks/soak.py counts.
    assert state["committed"] > KILLS  # the writers made progress
    assert recovered > KILLS // 2  # most kills left HDF5's flags behind, and opening cleared them


def test_recover_refuses_a_file_a_live_writer_holds(tmp_path):
    path = tmp_path / "held.h5"
    worldstore.create(path, every_class_spec()).close()
    with held_open(path):
        with pytest.raises(worldstore.WorldLockedError, match="held open"):
            worldstore.recover(path)
        with pytest.raises(worldstore.WorldLockedError):
            worldstore.open(path, "r+")


def test_recover_command_reports_what_it_did(tmp_path):
    path = tmp_path / "killed.h5"
    worldstore.create(path, every_class_spec()).close()
    proc = run_python("import os, sys, worldstore; w = worldstore.open(sys.argv[1], 'r+'); w.step(); "
                      "w.flush(); os.kill(os.getpid(), 9)", path)
    assert proc.returncode == -9, proc.stderr
    assert recovery.status_flags(path) != 0
    run = run_cli("recover", path, "--json", cwd=ROOT)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert report["flags_cleared"] is True and report["committed_step"] == 1
    assert recovery.status_flags(path) == 0


def test_recover_words_its_errors_as_open_does(tmp_path):
    with pytest.raises(worldstore.WorldNotFoundError, match="no such world file"):
        worldstore.recover(tmp_path / "missing.h5")
    text = tmp_path / "notes.h5"
    text.write_text("not a world\n" * 100)
    with pytest.raises(worldstore.WorldFormatError, match="cannot be opened as HDF5"):
        worldstore.recover(text)
    with pytest.raises(worldstore.WorldFormatError, match="directory"):
        worldstore.recover(tmp_path)
