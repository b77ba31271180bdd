"""compact(): same content by checksum, smaller files, intact scales, safe when killed or locked."""

from __future__ import annotations

import os
import subprocess

import h5py
import numpy as np
import pytest

import worldstore
from conftest import every_class_spec, have_tool, held_open, posix_only, run_python
from test_history import advance, live_state
from worldstore import HistoryError, SpecError, compact
from worldstore.compaction import kept_snapshots

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def world_with_history(path, snapshots: int = 6, storage: str = "mapped") -> dict[int, dict[str, np.ndarray]]:
    """A world with ``snapshots`` snapshots; returns the state recorded at each snapshot's step."""
    recorded = {}
    spec = every_class_spec(height=64, width=48, storage=storage).with_storage({"HEAT": "sparse"})
    with worldstore.create(path, spec) as world:
        for seed in range(snapshots):
            advance(world, seed)
            world["RES_F32"][seed:seed + 8, :] = np.float32(seed)  # some bulk change per snapshot
            world.snapshot()
            recorded[world.current_step] = live_state(world)
        advance(world, 99)  # a live state past the last snapshot
        recorded["live"] = live_state(world)
    return recorded


def check_content(path, recorded, steps) -> None:
    with worldstore.open(path) as world:
        assert [r["step"] for r in world.history()] == steps
        for name, values in recorded["live"].items():
            np.testing.assert_array_equal(world[name].numpy(), values, err_msg=name)
        for step in steps:
            for name, values in recorded[step].items():
                np.testing.assert_array_equal(world.at(step)[name].numpy(), values, err_msg=f"{name}@{step}")


def test_kept_snapshots_follow_the_rules():
    steps = list(range(0, 100, 10))
    assert kept_snapshots(steps) == list(range(10))
    assert kept_snapshots(steps, keep_last=3) == [7, 8, 9]
    assert kept_snapshots(steps, keep_every=4) == [0, 4, 8]
    assert kept_snapshots(steps, keep_last=1, keep_every=5) == [0, 5, 9]
    assert kept_snapshots([], keep_last=2) == []
    for bad in (0, -1, 1.5, True):
        with pytest.raises(HistoryError, match="keep_last must be an integer >= 1"):
            kept_snapshots(steps, keep_last=bad)


@pytest.mark.parametrize("storage", ["mapped", "memory"])
def test_compact_keeps_content_and_drops_history(tmp_path, storage):
    path = tmp_path / "c.h5"
    recorded = world_with_history(path, storage=storage)
    everything = compact(path)
    assert everything["snapshots_kept"] == [1, 2, 3, 4, 5, 6] and everything["checksums"] > 0
    check_content(path, recorded, [1, 2, 3, 4, 5, 6])
    report = compact(path, keep_last=1, keep_every=4)
    assert report["snapshots_kept"] == [1, 5, 6]
    assert report["bytes_after"] < report["bytes_before"]
    check_content(path, recorded, [1, 5, 6])
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".compacting")]


def test_compacted_file_keeps_dimension_scales_and_reads_in_tools(tmp_path):
    xarray = pytest.importorskip("xarray")
    path = tmp_path / "s.h5"
    world_with_history(path, snapshots=3)
    compact(path, keep_last=2)
    with h5py.File(path, "r") as f:
        assert f["layers/RES_F32"].dims[0][0].name == "/layers/y"
        assert f["history/RES_F32"].dims[0][0].name == "/history/step"
        assert f["history/RES_F32"].dims[2][0].name == "/history/x"
    for group in ("layers", "history"):
        dataset = xarray.open_dataset(path, group=group, engine="h5netcdf", phony_dims="access")
        try:
            assert dataset["RES_F32"].dims[-2:] == ("y", "x")
            assert list(dataset["y"].values[:3]) == [0, 1, 2]
        finally:
            dataset.close()
    if have_tool("h5dump"):
        proc = subprocess.run(["h5dump", "-H", str(path)], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0 and "history" in proc.stdout, proc.stderr


def test_temporal_layers_become_sparse_or_dense_by_density(tmp_path):
    path = tmp_path / "t.h5"
    spec = every_class_spec(height=40, width=40).with_storage({"HEAT": "mapped", "HEAT16": "sparse"})
    with worldstore.create(path, spec) as world:
        world.deposit("HEAT", [1, 2], [3, 4], 5.0)          # 2 of 1,600 cells: sparse after compaction
        cells = np.arange(0, 1600, 2)
        world.deposit("HEAT16", cells // 40, cells % 40, 1.0)  # half the cells: dense after compaction
        heat, heat16 = world["HEAT"].numpy().copy(), world["HEAT16"].numpy().copy()
    compact(path)
    with worldstore.open(path) as world:
        assert world["HEAT"].storage == "sparse" and world["HEAT16"].storage == "mapped"
        np.testing.assert_array_equal(world["HEAT"].numpy(), heat)
        np.testing.assert_array_equal(world["HEAT16"].numpy(), heat16)


def test_blosc2_codec_is_smaller_than_none_and_reads_back(tmp_path):
    pytest.importorskip("hdf5plugin")
    path = tmp_path / "b.h5"
    recorded = world_with_history(path, snapshots=3)
    plain = compact(path, codec="none")["bytes_after"]
    blosc = compact(path, codec="blosc2")
    assert blosc["bytes_after"] < plain
    with h5py.File(path, "r") as f:
        assert f["history"].attrs["codec"] == "blosc2"
    check_content(path, recorded, [1, 2, 3])


def test_bad_requests_change_nothing(tmp_path):
    path = tmp_path / "bad.h5"
    recorded = world_with_history(path, snapshots=2)
    with pytest.raises(SpecError, match="unknown history codec"):
        compact(path, codec="lz4")
    with pytest.raises(HistoryError, match="keep_every must be an integer >= 1"):
        compact(path, keep_every=0)
    with pytest.raises(worldstore.WorldNotFoundError):
        compact(tmp_path / "missing.h5")
    check_content(path, recorded, [1, 2])


@pytest.mark.parametrize("swmr", [False, True])
def test_compact_refuses_a_file_a_writer_holds(tmp_path, swmr):
    path = tmp_path / "held.h5"
    recorded = world_with_history(path, snapshots=2)
    with held_open(path, swmr=swmr):  # a SWMR writer lets readers in, and compaction reads: it must still refuse
        with pytest.raises(worldstore.WorldLockedError, match="open for writing by a running process"):
            compact(path, keep_last=1)
    check_content(path, recorded, [1, 2])


@posix_only
def test_a_compaction_killed_midway_leaves_the_original_intact(tmp_path):
    path = tmp_path / "killed.h5"
    recorded = world_with_history(path, snapshots=4)
    proc = run_python(
        "import os, sys, worldstore\n"
        "def stop(done, total):\n"
        "    if done == total // 2:\n"
        "        os.kill(os.getpid(), 9)\n"
        "worldstore.compact(sys.argv[1], keep_last=1, on_progress=stop)\n", str(path))
    assert proc.returncode == -9, proc.stderr
    check_content(path, recorded, [1, 2, 3, 4])
    assert compact(path, keep_last=1)["snapshots_kept"] == [4]  # a later run replaces the leftover
    check_content(path, recorded, [4])
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".compacting")]


@pytest.mark.parametrize("target", ["live", "past"])
def test_a_copy_that_differs_fails_the_check_and_changes_nothing(tmp_path, monkeypatch, target):
    from worldstore import compaction

    path = tmp_path / "v.h5"
    recorded = world_with_history(path, snapshots=2)
    if target == "live":
        original = compaction._copy_live

        def corrupt(source, world, name):
            original(source, world, name)
            if name == "RES_F32":
                world["RES_F32"][0, 0] += 1

        monkeypatch.setattr(compaction, "_copy_live", corrupt)
    else:
        original_copy = compaction._copy_past

        def damaged(source, world, group, index, name, raw):  # one byte of the copied chunk flipped
            original_copy(source, world, group, index, name, raw)
            if name == "RES_F32":
                dset = group[name]
                offset = (dset.shape[0] - 1, 0, 0)
                mask, data = dset.id.read_direct_chunk(offset)
                dset.id.write_direct_chunk(offset, data[:-1] + bytes([data[-1] ^ 1]), filter_mask=mask)

        monkeypatch.setattr(compaction, "_copy_past", damaged)
    with pytest.raises(HistoryError, match="compaction check failed"):
        compact(path)
    check_content(path, recorded, [1, 2])
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".compacting")]
