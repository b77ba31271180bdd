"""The worldstore command: create, inspect, demo; output formats, errors and exit codes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import run_cli

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
    assert list(layers) == list(worldstore.presets.agentfarm(24, 40, 3).layer_names)
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
    for name in worldstore.presets.agentfarm(16, 12, 2).layer_names:
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
    spec = worldstore.presets.agentfarm(12, 12, 20)
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
