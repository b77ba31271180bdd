"""The worldstore command: create, inspect, demo; output formats, errors and exit codes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import posix_only, python_env, run_cli

import worldstore
from cli.main import main

LAYER_KEYS = {"name", "class", "dtype", "shape", "storage", "bytes_on_disk", "fill_value", "pad_value"}


try:
    RUNNER = CliRunner(mix_stderr=False)  # click 8.1 mixes stderr into stdout unless told not to
except TypeError:
    RUNNER = CliRunner()  # click >= 8.2 always keeps result.stdout and result.stderr apart


def cli(*args: str):
    """Run the command in-process (stdin, stdout and stderr are not terminals)."""
    return RUNNER.invoke(main, [str(arg) for arg in args], prog_name="worldstore")


def assert_one_line_error(stderr: str, *fragments: str) -> None:
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("worldstore: error: "), stderr
    assert "Traceback" not in stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, stderr)


def layers_by_name(info: dict) -> dict[str, dict]:
    return {layer["name"]: layer for layer in info["layers"]}


def test_version_and_help():
    result = cli("--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"worldstore {worldstore.__version__}"
    result = cli("--help")
    assert result.exit_code == 0
    for command in ("create", "inspect", "demo"):
        assert command in result.stdout


def test_create_then_inspect_json(tmp_path):
    path = tmp_path / "farm.h5"
    result = cli("create", path, "--size", "24x40", "--agents", "3")
    assert result.exit_code == 0, result.output
    assert result.stdout.count("\n") == 1
    assert str(path) in result.stdout and "24x40" in result.stdout and "3 agents" in result.stdout

    result = cli("inspect", path, "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["schema"] == "worldstore.inspect/1"
    assert (info["height"], info["width"], info["agents"]) == (24, 40, 3)
    assert info["step"] == info["committed_step"] == 0
    assert info == worldstore.inspect(path)
    layers = layers_by_name(info)
    assert list(layers) == list(worldstore.presets.classic(24, 40, 3).layer_names)
    for layer in info["layers"]:
        assert LAYER_KEYS <= set(layer), layer
    assert layers["RESOURCES"]["shape"] == [24, 40]
    assert layers["AGENT_MEMORY"]["shape"] == [3, 24, 40]
    assert layers["AGENT_MEMORY"]["dtype"] == "float16"
    assert layers["OBSTACLES"]["pad_value"] is True
    assert layers["RESOURCES"]["bytes_on_disk"] == 24 * 40 * 4


def test_create_json_prints_the_new_worlds_inspect(tmp_path):
    path = tmp_path / "farm.h5"
    result = cli("create", path, "--size", "8x8", "--agents", "2", "--obs-radius", "2", "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info == worldstore.inspect(path)
    assert layers_by_name(info)["OBSERVATION"]["shape"] == [2, 8, 5, 5]


def test_storage_per_class_and_per_layer(tmp_path):
    path = tmp_path / "farm.h5"
    result = cli("create", path, "--size", "16x16", "--agents", "2", "--storage", "temporal=memory",
                 "--storage", "TRAILS=mapped", "--storage", "agent=memory", "--storage", "RESOURCES=memory")
    assert result.exit_code == 0, result.output
    storage = {name: layer["storage"] for name, layer in layers_by_name(json.loads(
        cli("inspect", path, "--json").stdout)).items()}
    assert storage == {
        "RESOURCES": "memory", "OBSTACLES": "mapped", "TERRAIN_COST": "mapped", "VISIBILITY": "mapped",
        "DAMAGE_HEAT": "memory", "TRAILS": "mapped", "ALLY_SIGNAL": "memory", "AGENT_MEMORY": "memory",
        "OBSERVATION": "mapped",
    }


def test_inspect_table(tmp_path):
    path = tmp_path / "farm.h5"
    assert cli("create", path, "--size", "16x12", "--agents", "2", "--storage", "agent=memory").exit_code == 0
    result = cli("inspect", path)
    assert result.exit_code == 0, result.output
    text = result.stdout
    assert str(path) in text and "16x12" in text and "2 agents" in text and "committed 0" in text
    rows = {line.split()[0]: line.split() for line in text.splitlines() if line.split()}
    assert rows["AGENT_MEMORY"][1:5] == ["agent", "float16", "2x16x12", "memory"]
    assert rows["OBSTACLES"][-2:] == ["False", "True"]
    for name in worldstore.presets.classic(16, 12, 2).layer_names:
        assert name in rows


@pytest.mark.parametrize("size", ["64", "64by64", "0x8", "-3x8", "axb"])
def test_bad_size_is_a_usage_error(tmp_path, size):
    path = tmp_path / "farm.h5"
    result = cli("create", path, "--size", size, "--agents", "2")
    assert result.exit_code == 2
    assert "--size" in result.stderr
    assert not path.exists()


def test_unknown_preset_is_a_usage_error(tmp_path):
    result = cli("create", tmp_path / "x.h5", "--preset", "moonbase", "--size", "8x8", "--agents", "2")
    assert result.exit_code == 2
    assert "moonbase" in result.stderr and "agentfarm" in result.stderr


@pytest.mark.parametrize("choice, fragment", [("nonsense=memory", "'nonsense'"), ("agent=disk", "'disk'"),
                                              ("RESOURCE=memory", "'RESOURCE'")])
def test_unknown_storage_key_or_kind(tmp_path, choice, fragment):
    path = tmp_path / "x.h5"
    result = cli("create", path, "--size", "8x8", "--agents", "2", "--storage", choice)
    assert result.exit_code == 1
    assert_one_line_error(result.stderr, fragment)
    assert result.stdout == ""
    assert not path.exists()


def test_storage_without_equals_is_a_usage_error(tmp_path):
    result = cli("create", tmp_path / "x.h5", "--size", "8x8", "--agents", "2", "--storage", "memory")
    assert result.exit_code == 2
    assert "KEY=KIND" in result.stderr


def test_existing_file_needs_overwrite(tmp_path):
    path = tmp_path / "farm.h5"
    path.write_bytes(b"precious")
    result = cli("create", path, "--size", "8x8", "--agents", "2")
    assert result.exit_code == 1
    assert_one_line_error(result.stderr, str(path), "--overwrite")
    assert path.read_bytes() == b"precious"
    result = cli("create", path, "--size", "8x8", "--agents", "2", "--overwrite")
    assert result.exit_code == 0, result.output
    assert worldstore.inspect(path)["height"] == 8


def test_inspect_missing_and_foreign_files(tmp_path):
    missing = tmp_path / "missing.h5"
    result = cli("inspect", missing)
    assert result.exit_code == 1
    assert_one_line_error(result.stderr, str(missing))
    foreign = tmp_path / "notes.h5"
    foreign.write_text("not a world\n")
    result = cli("inspect", foreign, "--json")
    assert result.exit_code == 1
    assert_one_line_error(result.stderr, str(foreign), "not an HDF5 file")
    assert result.stdout == ""


def test_errors_in_a_real_process(tmp_path):
    foreign = tmp_path / "notes.h5"
    foreign.write_bytes(b"\x89HDF\r\n" + bytes(100))
    for args in (("inspect", tmp_path / "missing.h5"), ("inspect", foreign),
                 ("create", tmp_path / "x.h5", "--size", "8x8", "--agents", "2", "--storage", "agent=disk")):
        proc = run_cli(*args)
        assert proc.returncode == 1, (args, proc.stderr)
        assert_one_line_error(proc.stderr)
        assert proc.stdout == ""
    proc = run_cli("create", tmp_path / "x.h5", "--size", "8by8", "--agents", "2")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "Usage: worldstore create" in proc.stderr


def test_demo_json_world_has_every_class_written(tmp_path):
    path = tmp_path / "demo.h5"
    result = cli("demo", path, "--size", "12x12", "--agents", "20", "--steps", "5", "--seed", "1", "--json")
    assert result.exit_code == 0, result.output
    assert result.stderr == ""  # not a terminal: no progress bar, not even its label
    summary = json.loads(result.stdout)
    assert summary["step"] == 5 and summary["agents"] == 20 and len(summary["positions"]) == 20
    info = worldstore.inspect(path)
    assert info["step"] == info["committed_step"] == 5
    spec = worldstore.presets.classic(12, 12, 20)
    with worldstore.open(path) as world:
        changed = {name for name, layer in world.layers.items()
                   if not np.all(layer.numpy() == layer.fill_value)}
    assert {spec.layer(name).grid_class for name in changed} == set(worldstore.GRID_CLASSES)
    assert {"RESOURCES", "TRAILS", "DAMAGE_HEAT", "ALLY_SIGNAL", "AGENT_MEMORY", "OBSERVATION"} <= changed


def test_demo_in_a_pipe_prints_only_the_summary(tmp_path):
    proc = run_cli("demo", "demo.h5", "--size", "32x32", "--agents", "4", "--steps", "12", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    lines = proc.stdout.splitlines()
    assert len(lines) == 4
    assert lines[0].startswith("ran 12 steps of 4 agents on a 32x32 world")
    assert f"worldstore inspect {tmp_path / 'demo.h5'}" in lines[2]
    assert lines[3].startswith("snapshots at steps 0, 10;") and "worldstore history" in lines[3]
    assert worldstore.inspect(tmp_path / "demo.h5")["committed_step"] == 12
    with worldstore.open(tmp_path / "demo.h5") as world:
        assert [record["step"] for record in world.history()] == [0, 10]


def test_demo_refuses_an_existing_world(tmp_path):
    path = tmp_path / "demo.h5"
    assert cli("demo", path, "--size", "8x8", "--agents", "2", "--steps", "1").exit_code == 0
    result = cli("demo", path, "--size", "8x8", "--agents", "2", "--steps", "1")
    assert result.exit_code == 1
    assert_one_line_error(result.stderr, "--overwrite")
    result = cli("demo", path, "--size", "8x8", "--agents", "2", "--steps", "3", "--overwrite", "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["step"] == 3


def test_snapshot_history_restore(agentfarm_path):
    path = agentfarm_path
    listing = cli("history", path)
    assert listing.exit_code == 0 and "no snapshots yet" in listing.stdout
    with worldstore.open(path, "r+") as world:
        before = world["RESOURCES"].numpy().copy()
    taken = cli("snapshot", path, "--json")
    assert taken.exit_code == 0, taken.stderr
    assert json.loads(taken.stdout)["index"] == 0
    with worldstore.open(path, "r+") as world:
        world["RESOURCES"][:] = 7.0
        world.step()
    assert cli("snapshot", path).exit_code == 0
    records = json.loads(cli("history", path, "--json").stdout)
    assert [r["step"] for r in records] == [0, 1] and all(r["bytes"] > 0 for r in records)
    table = cli("history", path).stdout
    assert "index" in table and "step" in table and "bytes" in table
    restored = cli("restore", path, "0")
    assert restored.exit_code == 0 and "restored step 0" in restored.stdout
    with worldstore.open(path) as world:
        np.testing.assert_array_equal(world["RESOURCES"].numpy(), before)
        assert world.current_step == 0


def test_restore_of_an_unknown_step_is_a_one_line_error(agentfarm_path):
    proc = run_cli("restore", agentfarm_path, "42")
    assert proc.returncode == 1
    assert_one_line_error(proc.stderr, "no snapshot at step 42")


def test_compact_command(tmp_path):
    path = tmp_path / "demo.h5"
    assert cli("demo", path, "--size", "24x24", "--agents", "3", "--steps", "30").exit_code == 0
    result = cli("compact", path, "--keep-last", "1", "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["snapshots_before"] == 4 and report["snapshots_kept"] == [30] and report["checksums"] > 0
    text = cli("compact", path)
    assert text.exit_code == 0 and "1 of 1 snapshots kept" in text.stdout
    bad = cli("compact", path, "--keep-last", "0")
    assert bad.exit_code == 2


def test_render_command(tmp_path):
    path = tmp_path / "demo.h5"
    assert cli("demo", path, "--size", "24x24", "--agents", "3", "--steps", "20").exit_code == 0
    png = cli("render", path, "AGENT_MEMORY", "--agent", "1", "--step", "10", "-o", tmp_path / "m.png")
    assert png.exit_code == 0, png.stderr
    assert "wrote" in png.stdout and (tmp_path / "m.png").stat().st_size > 0
    gif = cli("render", path, "TRAILS", "--gif", "-o", tmp_path / "t.gif", "--json")
    assert gif.exit_code == 0, gif.stderr
    assert json.loads(gif.stdout)["steps"] == [0, 10, 20]
    proc = run_cli("render", path, "AGENT_MEMORY", "-o", tmp_path / "x.png")
    assert proc.returncode == 1
    assert_one_line_error(proc.stderr, "say which agent")


# -- Ctrl-C ------------------------------------------------------------------
# Each long command stops at the first SIGINT, between two whole steps of its loop, leaves its files
# whole, prints one line and exits with 130. (Python's own KeyboardInterrupt landed mostly in h5py's
# weakref callbacks, where it is printed as "Exception ignored" and dropped: the run went on.)

def start_cli(*args, cwd=None) -> subprocess.Popen:
    """``python -m cli.main ARGS`` running, with SIGINT at its default (a test runner may ignore it)."""
    return subprocess.Popen([sys.executable, "-m", "cli.main", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=python_env(), cwd=cwd,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_for(condition, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def interrupt(proc: subprocess.Popen, timeout: float = 10.0) -> tuple[str, str, float]:
    """Send ONE SIGINT; return stdout, stderr and the seconds it took to exit (130 asserted)."""
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"still running {timeout} s after one SIGINT; stderr: {err[-2000:]}")
    assert proc.returncode == 130, (proc.returncode, out, err)
    assert "Exception ignored" not in err and "Traceback" not in err and "Aborted" not in err, err
    return out, err, time.monotonic() - sent


def assert_whole(path, step: int) -> None:
    """The file is at a commit of ``step``: no journal, no "open for write" flags (h5py opens it), values sound."""
    assert not os.path.exists(f"{path}-journal")
    h5py.File(path, "r").close()  # flags a killed writer leaves would refuse this
    with worldstore.open(path) as world:
        assert world.current_step == world.committed_step == step
        resources = world["RESOURCES"].numpy()
        assert np.isfinite(resources).all() and 0 <= resources.min() and resources.max() <= 1
    report = worldstore.validate(path)
    assert report["passed"], [check for check in report["checks"] if check["status"] == "fail"]


@posix_only
def test_one_ctrl_c_stops_the_demo_at_a_whole_committed_step(tmp_path):
    path = tmp_path / "live.h5"
    proc = start_cli("demo", path, "--size", "512x512", "--steps", "100000")
    wait_for(path.exists, proc)  # created (create renames a finished file into place)
    time.sleep(0.5)  # some steps, and commits, under way
    out, err, seconds = interrupt(proc)
    assert seconds < 5 and out == ""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("worldstore: interrupted; "), err
    step = int(re.search(r"holds step (\d+)", lines[0]).group(1))
    assert step >= 1 and f"stopped after step {step} of 100000" in lines[0]
    assert_whole(path, step)


@posix_only
def test_one_ctrl_c_stops_the_self_test_and_removes_its_worlds(tmp_path):
    proc = start_cli("validate", "--size", "256x256", "--rounds", "2", "--dir", tmp_path)
    wait_for(lambda: any(tmp_path.iterdir()), proc)  # its temporary directory is there
    time.sleep(0.3)
    out, err, seconds = interrupt(proc)
    assert seconds < 5
    assert err.splitlines() == ["worldstore: interrupted; validation stopped: its temporary worlds were removed"]
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def python_sigint():
    """SIGINT handled as Python does by default, also where the test runner was started with it ignored."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_sigint_in_the_demo_loop_stops_it_after_that_step(tmp_path, monkeypatch, python_sigint):
    """In-process: SIGINT during step 3 (raised by the progress callback's caller) stops after step 3."""
    import importlib

    from worldstore.demo import run_demo as original

    def run_demo(*args, on_step, **kwargs):
        def hook(done, total):
            if done == 3:
                signal.raise_signal(signal.SIGINT)
            on_step(done, total)
        return original(*args, on_step=hook, **kwargs)

    monkeypatch.setattr(importlib.import_module("cli.demo"), "run_demo", run_demo)
    path = tmp_path / "demo.h5"
    result = cli("demo", path, "--size", "16x16", "--agents", "2", "--steps", "50", "--snapshot-every", "2")
    assert result.exit_code == 130, result.output
    assert result.stdout == ""
    assert result.stderr == (f"worldstore: interrupted; stopped after step 3 of 50; {path} holds step 3 "
                             "(the last whole step, committed on the way out)\n")
    with worldstore.open(path) as world:
        assert world.current_step == world.committed_step == 3
        assert [record["step"] for record in world.history()] == [0, 2]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back


def test_sigint_abandons_a_snapshot_between_layers(tmp_path, monkeypatch, python_sigint):
    path = tmp_path / "demo.h5"
    assert cli("demo", path, "--size", "16x16", "--agents", "2", "--steps", "4", "--snapshot-every", "3").exit_code == 0
    before = worldstore.validate(path)
    original = worldstore.World.snapshot

    def snapshot(self, on_progress=None):
        def hook(done, total):
            if done == 2:
                signal.raise_signal(signal.SIGINT)
            on_progress(done, total)
        return original(self, on_progress=hook)

    monkeypatch.setattr(worldstore.World, "snapshot", snapshot)
    result = cli("snapshot", path)
    assert result.exit_code == 130, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "the snapshot was abandoned after 2 of" in lines[0], result.stderr
    assert f"{path} holds its last commit (step 4)" in lines[0]
    monkeypatch.setattr(worldstore.World, "snapshot", original)
    with worldstore.open(path) as world:
        assert [record["step"] for record in world.history()] == [0, 3]
    assert worldstore.validate(path)["passed"] and before["passed"]
    assert cli("snapshot", path).exit_code == 0  # the next one takes the abandoned one's place
    with worldstore.open(path) as world:
        assert [record["step"] for record in world.history()] == [0, 3, 4]


def test_sigint_does_not_cut_a_restore_short(tmp_path, monkeypatch, python_sigint):
    """A command with no safe point inside finishes its one operation, then reports the interrupt."""
    path = tmp_path / "demo.h5"
    assert cli("demo", path, "--size", "16x16", "--agents", "2", "--steps", "6", "--snapshot-every", "3").exit_code == 0
    with worldstore.open(path) as world:
        at_3 = world.at(3)["RESOURCES"].numpy().copy()
    original = worldstore.World.restore

    def restore(self, step):
        signal.raise_signal(signal.SIGINT)  # would have landed half-way through the layers
        return original(self, step)

    monkeypatch.setattr(worldstore.World, "restore", restore)
    result = cli("restore", path, "3")
    assert result.exit_code == 130
    assert result.stdout == f"{path}: restored step 3\n"
    assert result.stderr == "worldstore: interrupted; the command had finished first (its output stands)\n"
    with worldstore.open(path) as world:
        assert world.committed_step == 3
        np.testing.assert_array_equal(world["RESOURCES"].numpy(), at_3)


def test_sigint_guard_flag_checkpoint_and_finalizers(python_sigint):
    """The mechanism: a flag while guarded; raised at checkpoints; an interrupt a finalizer swallows is kept."""
    import weakref

    from cli.options import Interrupted, checkpoint, sigint

    class Thing:
        pass

    with sigint.installed():
        checkpoint(1)  # nothing asked yet
        signal.raise_signal(signal.SIGINT)  # no exception here: only the flag
        assert sigint.requested
        with pytest.raises(Interrupted) as caught:
            checkpoint(7)
        assert caught.value.done == 7
    with sigint.installed():
        assert not sigint.requested
        with pytest.raises(Interrupted) as caught:
            with sigint.anywhere("nothing changed"):
                signal.raise_signal(signal.SIGINT)  # code that only reads stops at once
        assert caught.value.message == "nothing changed"
    with sigint.installed():
        seen = []
        default_hook = sys.unraisablehook
        sys.unraisablehook = seen.append  # (the guard wraps whatever hook is there)
        try:
            with sigint.installed():
                thing = Thing()
                ref = weakref.ref(thing, lambda _: (_ for _ in ()).throw(KeyboardInterrupt))  # noqa: F841
                del thing  # the callback's KeyboardInterrupt is "unraisable"
                assert sigint.requested and seen == []
        finally:
            sys.unraisablehook = default_hook
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


# -- demo as a SWMR writer -----------------------------------------------------

@posix_only
def test_a_running_demo_can_be_watched_from_another_process(tmp_path):
    """demo writes as a SWMR writer by default: a reader here opens it while it runs and follows its commits."""
    path = tmp_path / "live.h5"
    proc = start_cli("demo", path, "--size", "128x128", "--agents", "8", "--steps", "100000")
    try:
        wait_for(path.exists, proc)
        time.sleep(0.3)  # past create's own open (a plain writer, which HDF5's lock keeps readers from)
        deadline = time.monotonic() + 30
        while True:
            try:
                world = worldstore.open(path, "r", swmr=True)
                break
            except worldstore.WorldLockedError:
                assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
                time.sleep(0.05)
        with world:
            seen = [world.committed_step]
            while len(set(seen)) < 3:
                assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
                time.sleep(0.05)
                seen.append(world.refresh())
            assert seen == sorted(seen)  # the committed step only advances
            step, (resources, trails) = world.read(lambda w: (w["RESOURCES"][...], w["TRAILS"][...]))
            assert step >= seen[-1] > 0
            assert np.isfinite(resources).all() and 0 <= resources.min() and resources.max() <= 1
            assert trails.max() > 0  # the agents' deposits
            assert world.history()[0]["step"] == 0
    finally:
        out, err, _ = interrupt(proc)
    assert len(err.splitlines()) == 1 and "stopped after step" in err
    assert_whole(path, int(re.search(r"holds step (\d+)", err).group(1)))


def test_demo_no_swmr_and_the_help_says_why_swmr_is_the_default(tmp_path):
    result = cli("demo", "--help")
    assert "--swmr / --no-swmr" in result.stdout and "watched" in result.stdout
    for flag, swmr in (("--no-swmr", False), ("--swmr", True)):
        path = tmp_path / f"{flag}.h5"
        result = cli("demo", path, "--size", "16x16", "--agents", "2", "--steps", "12", flag, "--json")
        assert result.exit_code == 0, result.output
        summary = json.loads(result.stdout)
        assert summary["swmr"] is swmr and summary["step"] == summary["committed_step"] == 12
        assert worldstore.validate(path)["passed"]


# -- as found in issue 17 ("CLI and pictures"): each of these failed before its fix --------------------

def test_gif_of_a_world_without_snapshots_names_the_snapshot_command(tmp_path):
    path = tmp_path / "w.h5"
    assert cli("create", path, "--size", "8x8", "--agents", "2").exit_code == 0
    result = cli("render", path, "RESOURCES", "--gif", "-o", tmp_path / "r.gif")
    assert result.exit_code == 1
    assert_one_line_error(result.stderr, f"take one with: worldstore snapshot {path}")
    assert "snapshot()" not in result.stderr and not (tmp_path / "r.gif").exists()


def test_render_writes_the_format_its_extension_names(tmp_path):
    path = tmp_path / "w.h5"
    assert cli("create", path, "--size", "8x8", "--agents", "2").exit_code == 0
    assert cli("render", path, "RESOURCES", "-o", tmp_path / "r.jpg").exit_code == 0
    assert (tmp_path / "r.jpg").read_bytes()[:2] == b"\xff\xd8"


def test_recover_words_its_errors_as_the_other_commands(tmp_path):
    foreign = tmp_path / "notes.h5"
    foreign.write_text("not a world\n")
    broken = tmp_path / "broken.h5"
    broken.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(200))
    for target in (tmp_path / "missing.h5", foreign):
        recovered, inspected = cli("recover", target), cli("inspect", target)
        assert recovered.exit_code == inspected.exit_code == 1
        assert recovered.stderr == inspected.stderr, (recovered.stderr, inspected.stderr)
    result = cli("recover", broken)
    assert_one_line_error(result.stderr, f"{broken} cannot be opened as HDF5:")


def test_restore_json(agentfarm_path):
    assert cli("snapshot", agentfarm_path).exit_code == 0
    result = cli("restore", agentfarm_path, "0", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == {"path": str(agentfarm_path), "restored_step": 0, "committed_step": 0,
                                         "snapshots": [0]}


def test_every_option_has_help_and_storage_names_sparse():
    for command in ("render", "view"):
        text = cli(command, "--help").stdout
        assert re.search(r"--colormap \[[a-z|]+\]\s+\S", text), text  # help text after the choices
    assert "sparse" in cli("create", "--help").stdout


def test_a_held_world_is_a_short_error_that_says_what_to_do(agentfarm_path):
    from conftest import held_open

    with held_open(agentfarm_path):
        for args, again in ((("snapshot",), f"worldstore snapshot {agentfarm_path}"),
                            (("restore", "0"), None), (("recover",), f"worldstore recover {agentfarm_path}")):
            proc = run_cli(args[0], agentfarm_path, *args[1:])
            assert proc.returncode == 1
            assert_one_line_error(proc.stderr, "open for writing in another process", "stop that one first")
            assert len(proc.stderr) < 200 + len(str(agentfarm_path)) * 2
            assert "mode='r'" not in proc.stderr
            if again:
                assert proc.stderr.strip().endswith(again)
