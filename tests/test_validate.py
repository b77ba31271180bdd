"""validate(): the self-test on temporary worlds, the read-only check of a world file, damaged files, the CLI."""

from __future__ import annotations

import json
import os

import h5py
import numpy as np
import pytest
from conftest import digest, every_class_spec, flip_byte, held_open, run_cli, run_python

import worldstore
from worldstore.commit import journal_path
from worldstore.validate import SCHEMA, validate

ROW_KEYS = {"check", "passed", "status", "figure", "figures", "detail", "seconds"}
FILE_CHECKS = ("superblock", "writer status", "opens read-only", "format and version", "world description", "clock",
               "HDF5 objects and attributes", "dimension scales", "dataset extents", "live layers",
               "sparse layers (COO)", "history index", "history snapshots", "chunks decompress", "library reads",
               "checksums")


def rows(report: dict) -> dict[str, dict]:
    return {row["check"]: row for row in report["checks"]}


def failed(report: dict) -> set[str]:
    return {row["check"] for row in report["checks"] if not row["passed"]}


@pytest.fixture
def world_file(tmp_path) -> str:
    """A closed world of every class with a sparse temporal layer and three snapshots."""
    path = str(tmp_path / "world.h5")
    spec = every_class_spec(height=40, width=36).with_storage({"HEAT": "sparse"})
    rng = np.random.default_rng(3)
    with worldstore.create(path, spec) as world:
        for round_no in range(3):
            world["RES_F32"][...] = rng.random((40, 36), dtype=np.float32)
            world["RES_I32"][5:9, 5:9] = round_no
            world["OBSTACLES"][...] = rng.random((40, 36)) < 0.2
            world["MEMORY"][1, :4, :4] = np.float16(round_no + 0.5)
            world.deposit("HEAT", rng.integers(0, 40, 30), rng.integers(0, 36, 30), 1.0 + round_no)
            world.deposit("HEAT16", [1, 2], [3, 4], 2.0)
            world.snapshot()
            world.step()
    return path


# -- the self-test ------------------------------------------------------------------------------
def test_self_test_on_temporary_worlds_passes(tmp_path):
    seen = []
    report = validate(size=(48, 40), agents=3, rounds=5, directory=tmp_path,
                      on_progress=lambda done, total: seen.append((done, total)))
    # Behaviour, not speed: every correctness check passes; the latency rows are measured (their pass/fail
    # depends on a noisy shared machine and is the user's reading, not this test's).
    failed = [(row["check"], row["detail"]) for row in report["checks"]
              if not row["passed"] and not row["check"].startswith("latency: ")]
    assert not failed, failed
    assert report["schema"] == SCHEMA and report["mode"] == "self-test" and report["path"] is None
    checks = rows(report)
    for name in ("new worlds: fill values", "environment grids: mapped", "environment grids: memory",
                 "agent layers: mapped", "agent layers: memory", "temporal dense: mapped", "temporal dense: memory",
                 "temporal sparse (COO)", "observe: mapped layers", "observe: memory layers", "history: snapshot / at",
                 "files read back", "file checks of the temporary worlds", "latency: window reads",
                 "latency: scatter writes", "latency: observe", "latency: deposit + step (temporal)",
                 "anonymous memory (RssAnon)"):
        assert name in checks, name
    for row in report["checks"]:
        assert set(row) == ROW_KEYS, row
        assert row["status"] in (("pass", "skip", "fail") if row["check"].startswith("latency: ") else ("pass", "skip"))
    for name, row in checks.items():
        if name.startswith("latency: "):
            figures = row["figures"]
            assert figures["ratio"] == pytest.approx(figures["mapped_s"] / figures["memory_s"], rel=1e-3)
            assert 0 < figures["ratio_min"] <= figures["ratio"] <= figures["ratio_max"]
            assert figures["mapped_s"] > 0 and figures["memory_s"] > 0 and figures["limit"] == 1.25
    memory = checks["anonymous memory (RssAnon)"]
    if memory["status"] == "pass":
        assert len(memory["figures"]["worlds"]) == 2
        assert all(w["growth_after_commit"] < memory["figures"]["bound_bytes"] for w in memory["figures"]["worlds"])
    assert seen[-1][0] == seen[-1][1] == len(report["checks"])
    assert os.listdir(tmp_path) == []  # the temporary worlds are gone
    json.dumps(report)  # JSON-able as it is


def test_self_test_refuses_bad_settings(tmp_path):
    with pytest.raises(worldstore.SpecError, match="size"):
        validate(size="4x4", directory=tmp_path)
    with pytest.raises(worldstore.SpecError, match="agents"):
        validate(agents=0, directory=tmp_path)
    with pytest.raises(worldstore.WorldNotFoundError):
        validate(directory=tmp_path / "missing")


# -- checking a world file ------------------------------------------------------------------------
def test_file_check_passes_and_changes_nothing(world_file):
    before, mtime = digest(world_file), os.stat(world_file).st_mtime_ns
    report = validate(world_file)
    assert report["passed"], [(row["check"], row["detail"]) for row in report["checks"] if not row["passed"]]
    assert report["mode"] == "file" and report["path"] == os.path.abspath(world_file)
    assert [row["check"] for row in report["checks"]] == list(FILE_CHECKS)
    checks = rows(report)
    assert checks["history index"]["figures"]["snapshots"] == 3
    assert checks["history index"]["figures"]["steps"] == [0, 1, 2]
    assert checks["sparse layers (COO)"]["figures"]["sparse_layers"] == 1
    assert checks["chunks decompress"]["figures"]["chunks"] > 0
    assert checks["checksums"]["figures"]["superblock"] == 1
    assert checks["checksums"]["figures"]["chunks_deflate"] > 0
    assert len(checks["checksums"]["figures"]["digest"]) == 32
    assert checks["clock"]["figures"] == {"step": 3, "committed_step": 3}
    assert digest(world_file) == before and os.stat(world_file).st_mtime_ns == mtime
    assert validate(world_file)["checks"][-1]["figures"]["digest"] == checks["checksums"]["figures"]["digest"]


def test_file_check_of_a_fresh_agentfarm_world(tmp_path):
    path = tmp_path / "farm.h5"
    worldstore.create(path, worldstore.presets.classic(64, 48, 3)).close()
    report = validate(path)
    assert report["passed"], [(row["check"], row["detail"]) for row in report["checks"] if not row["passed"]]
    assert rows(report)["history snapshots"]["figures"]["snapshots"] == 0


def test_nan_in_a_float_layer_passes(world_file):
    with worldstore.open(world_file, "r+") as world:  # NaN is a value a float layer may hold
        world["RES_F32"][2, 3] = np.nan
        world["MEMORY"][0, 1, 1] = np.float16(np.nan)
        world.snapshot()
    report = validate(world_file)
    assert report["passed"], [(row["check"], row["detail"]) for row in report["checks"] if not row["passed"]]
    assert rows(report)["library reads"]["status"] == "pass"


def test_file_check_refuses_self_test_settings(world_file):
    with pytest.raises(worldstore.SpecError, match="self-test"):
        validate(world_file, size=(64, 64))


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(worldstore.WorldNotFoundError):
        validate(tmp_path / "nothing.h5")


def test_not_hdf5(tmp_path):
    path = tmp_path / "text.h5"
    path.write_bytes(b"not a world\n" * 100)
    report = validate(path)
    assert not report["passed"]
    assert "not an HDF5 file" in rows(report)["superblock"]["detail"]
    assert all(row["detail"].startswith("not run") for row in report["checks"][2:])


def test_truncated_layer_data(world_file):
    size = os.path.getsize(world_file)
    os.truncate(world_file, size - 5000)  # the file ends inside the data HDF5 allocated
    before = digest(world_file)
    report = validate(world_file)
    assert not report["passed"]
    assert "truncated" in rows(report)["superblock"]["detail"]
    assert digest(world_file) == before


def test_flipped_bytes_in_a_history_chunk(world_file):
    with h5py.File(world_file, "r") as f:
        info = f["history/RES_F32"].id.get_chunk_info(0)
    flip_byte(world_file, info.byte_offset + info.size // 2, 0x5A)
    flip_byte(world_file, info.byte_offset + info.size // 2 + 1, 0x5A)
    before = digest(world_file)
    report = validate(world_file)
    assert {"chunks decompress", "checksums"} <= failed(report)
    assert "/history/RES_F32" in rows(report)["chunks decompress"]["detail"]
    assert {"superblock", "live layers", "history index", "sparse layers (COO)"}.isdisjoint(failed(report))
    assert digest(world_file) == before


def test_coo_coordinate_out_of_range(world_file):
    with h5py.File(world_file, "r+") as f:
        coords = f["layers/HEAT_coords"]
        coords[0] = (40 + 5, 1)
    report = validate(world_file)
    assert "sparse layers (COO)" in failed(report)
    assert "outside the 40x36 world" in rows(report)["sparse layers (COO)"]["detail"]
    assert "library reads" in failed(report)  # the library refuses it too


def test_history_coo_coordinate_out_of_range(world_file):
    with h5py.File(world_file, "r+") as f:
        start = int(f["history/HEAT_start"][1])
        f["history/HEAT_coords"][start] = (3, -2)
    report = validate(world_file)
    assert "history snapshots" in failed(report)
    assert "HEAT snapshot 1" in rows(report)["history snapshots"]["detail"]
    assert "sparse layers (COO)" not in failed(report)


def test_bool_layer_with_a_value_other_than_0_and_1(world_file):
    with h5py.File(world_file, "r") as f:
        offset = f["layers/OBSTACLES"].id.get_offset()
    with open(world_file, "r+b") as out:
        out.seek(offset + 17)
        out.write(b"\x07")
    report = validate(world_file)
    assert failed(report) == {"live layers"}
    assert "OBSTACLES" in rows(report)["live layers"]["detail"]


def as_older_bool_attributes(path) -> None:
    """Rewrite the bool layers' ``_FillValue`` and ``pad_value`` as worldstore wrote them before they were int8:
    numpy bools, which h5py stores as HDF5 enum attributes."""
    with h5py.File(path, "r+") as f:
        for dset in f["layers"].values():
            if dset.dtype == bool and "grid_class" in dset.attrs:
                for key in ("_FillValue", "pad_value"):
                    dset.attrs[key] = np.bool_(int(dset.attrs[key]))
                    assert dset.attrs.get_id(key).get_type().get_class() == h5py.h5t.ENUM


def world_state(path) -> tuple[worldstore.WorldSpec, dict[str, np.ndarray]]:
    with worldstore.open(path) as world:
        return world.spec, {name: np.array(world[name].numpy()) for name in world}


def test_bool_layers_value_attributes_are_int8(world_file):
    with h5py.File(world_file, "r") as f:
        attrs = f["layers/OBSTACLES"].attrs
        assert attrs["_FillValue"].dtype == attrs["pad_value"].dtype == np.int8
        assert (int(attrs["_FillValue"]), int(attrs["pad_value"])) == (0, 1)
    spec, _ = world_state(world_file)
    assert spec.layer("OBSTACLES").fill_value is False and spec.layer("OBSTACLES").pad_value is True


def test_a_file_with_older_bool_value_attributes_opens_the_same_and_passes(world_file):
    spec, values = world_state(world_file)
    as_older_bool_attributes(world_file)
    old_spec, old_values = world_state(world_file)
    assert old_spec == spec
    assert old_spec.layer("OBSTACLES").fill_value is False and old_spec.layer("OBSTACLES").pad_value is True
    for name, expected in values.items():
        np.testing.assert_array_equal(old_values[name], expected, err_msg=name)
    report = validate(world_file)
    assert report["passed"], [(row["check"], row["detail"]) for row in report["checks"] if not row["passed"]]
    with worldstore.open(world_file) as world:  # observations pad with the value read back
        window = world.observe([[0, 0]], 1, ["OBSTACLES"])
        assert float(window[0, 0, 0, 0]) == 1.0


@pytest.mark.parametrize("value", [np.int8(2), np.float32(1.0), np.int8(-1)])
def test_a_bool_layer_value_attribute_other_than_0_or_1_is_refused(world_file, value):
    with h5py.File(world_file, "r+") as f:
        f["layers/OBSTACLES"].attrs["pad_value"] = value
    with pytest.raises(worldstore.WorldFormatError, match="pad_value"):
        worldstore.open(world_file).close()
    assert "world description" in failed(validate(world_file))


def test_damaged_superblock_checksum(world_file):
    flip_byte(world_file, 20, 0x5A)  # inside the superblock: its lookup3 checksum no longer matches
    report = validate(world_file)
    assert "checksum" in rows(report)["superblock"]["detail"]
    assert not report["passed"]


def test_killed_writer_flags_are_reported_not_cleared(world_file):
    code = ("import h5py, os, sys; f = h5py.File(sys.argv[1], 'r+', libver=('v110', 'v110')); f.flush(); "
            "os._exit(0)")
    assert run_python(code, world_file, timeout=60).returncode == 0
    from worldstore import recovery

    assert recovery.status_flags(world_file)
    before = digest(world_file)
    report = validate(world_file)
    assert "writer status" in failed(report)
    assert "worldstore recover" in rows(report)["writer status"]["detail"]
    assert digest(world_file) == before and recovery.status_flags(world_file)


def test_a_writer_holding_the_file_is_reported(world_file):
    with held_open(world_file):
        before = digest(world_file)
        report = validate(world_file)
        assert digest(world_file) == before
    assert "writer status" in failed(report)
    assert "holds the file open for writing" in rows(report)["writer status"]["detail"]
    assert rows(report)["opens read-only"]["detail"].startswith("not run: a writer holds the file")


def test_a_directory_is_not_a_world(tmp_path):
    with pytest.raises(worldstore.WorldFormatError, match="directory"):
        validate(tmp_path)


def test_pending_journal_is_reported_not_replayed(world_file):
    journal = journal_path(world_file)
    with open(journal, "wb") as f:
        f.write(b"WSJOURN1 cut short")
    before = digest(world_file)
    report = validate(world_file)
    assert "writer status" in failed(report)
    assert "journal" in rows(report)["writer status"]["detail"]
    assert rows(report)["library reads"]["status"] == "skip"
    assert digest(world_file) == before and os.path.exists(journal)


# -- the command ------------------------------------------------------------------------------------
def test_cli_table_and_exit_code_0(world_file):
    result = run_cli("validate", world_file)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("worldstore validate ") and world_file in lines[0]
    assert any(line.split()[:3] == ["check", "result", "figures"] for line in lines)
    for name in FILE_CHECKS:
        assert any(line.startswith(name) and " PASS " in line for line in lines), name
    assert lines[-1].startswith("PASSED: 16 of 16 checks passed")


def test_cli_json_and_exit_code_1_on_a_damaged_file(world_file):
    with h5py.File(world_file, "r+") as f:
        f["layers/HEAT_coords"][0] = (-1, 0)
    result = run_cli("validate", world_file, "--json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["schema"] == SCHEMA and not report["passed"]
    assert "sparse layers (COO)" in failed(report)
    table = run_cli("validate", world_file)
    assert table.returncode == 1
    assert any(line.startswith("sparse layers (COO)") and " FAIL " in line for line in table.stdout.splitlines())
    assert "outside the 40x36 world" in table.stdout
    assert table.stdout.splitlines()[-1].startswith("FAILED: ")


def test_cli_self_test(tmp_path):
    result = run_cli("validate", "--size", "32x40", "--agents", "2", "--rounds", "5", "--dir", tmp_path)
    # Only a latency row may fail (a noisy moment on a shared machine): everything else must pass.
    failed = [line for line in result.stdout.splitlines() if " FAIL " in line]
    assert all(line.startswith("latency: ") for line in failed), result.stdout + result.stderr
    assert result.returncode == (1 if failed else 0), result.stdout + result.stderr
    assert "temporary worlds of 32x40, 2 agents" in result.stdout
    assert "latency: observe" in result.stdout and "anonymous memory (RssAnon)" in result.stdout
    assert result.stdout.splitlines()[-1].startswith("FAILED: " if failed else "PASSED: ")
    assert result.stderr == ""  # no progress bar in a pipe
    assert os.listdir(tmp_path) == []


def test_cli_errors(tmp_path, world_file):
    missing = run_cli("validate", tmp_path / "nothing.h5")
    assert missing.returncode == 1
    assert missing.stderr.startswith("worldstore: error: ") and len(missing.stderr.splitlines()) == 1
    usage = run_cli("validate", world_file, "--size", "64x64")
    assert usage.returncode == 2 and "self-test" in usage.stderr
