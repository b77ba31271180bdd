"""to_xarray: histories and live layers as lazy xarray Datasets over Dask, checked against numpy reads."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
from conftest import every_class_spec, held_open, posix_only, python_env, run_python
from test_history import advance
from test_validate import as_older_bool_attributes

import worldstore
from worldstore import (
    HistoryError,
    LayerNotFoundError,
    LayerSpec,
    WorldLockedError,
    WorldNotFoundError,
    WorldSpec,
)
from worldstore import recovery
from worldstore.analysis import _DenseBlocks, _TemporalHistoryBlocks, to_xarray

xr = pytest.importorskip("xarray")
da = pytest.importorskip("dask.array")

SNAPSHOTS = 4


def spec_with_sparse_heat() -> WorldSpec:
    """Every grid class and tested dtype; HEAT stored sparse, HEAT16 dense: both kinds of temporal history."""
    return every_class_spec().with_storage({"HEAT": "sparse"})


def build(path, seed: int, snapshots: int = SNAPSHOTS, spec: WorldSpec | None = None) -> list[dict[str, np.ndarray]]:
    """A world with ``snapshots`` snapshots, one step apart; returns each snapshot's live state (numpy copies)."""
    states = []
    with worldstore.create(path, spec or spec_with_sparse_heat()) as world:
        for index in range(snapshots):
            if index == 0 and "HEAT" in world:  # cell (0, 0) held in a snapshot that is not the last one
                world.deposit("HEAT", [0], [0], 40.0)
            advance(world, seed * 1000 + index)
            world.snapshot()
            states.append({name: np.array(world[name].numpy(), copy=True) for name in world})
    return states


@pytest.fixture(scope="module")
def worlds(tmp_path_factory):
    """Three worlds of one layout, each with four snapshots at steps 1..4, and their states."""
    directory = tmp_path_factory.mktemp("analysis")
    paths = [str(directory / f"world{i}.h5") for i in range(3)]
    return paths, [build(path, seed) for seed, path in enumerate(paths)]


def test_history_reads_exactly_what_numpy_reads(worlds):
    paths, states = worlds
    ds = to_xarray(paths[0])
    assert list(ds.data_vars) == [layer.name for layer in spec_with_sparse_heat().layers]
    computed = ds.compute()
    with h5py.File(paths[0], "r") as f, worldstore.open(paths[0]) as world:
        for index, record in enumerate(world.history()):
            past = world.at(record["step"])
            for name in world:
                got = computed[name].isel(step=index).values
                assert got.dtype == world[name].dtype, name
                np.testing.assert_array_equal(got, states[0][index][name], err_msg=name)
                np.testing.assert_array_equal(got, past[name].numpy(), err_msg=name)
                if world[name].grid_class != "temporal":
                    np.testing.assert_array_equal(got, f["history"][name][index], err_msg=name)
    assert computed["HEAT"].isel(step=0).values[0, 0] != 0  # past the snapshot's cells: the gap reads as zeros


@posix_only
def test_history_with_a_snapshot_cut_short_reads_the_whole_ones(tmp_path):
    """A writer killed after it wrote where its snapshot's cells begin, before the cells: the snapshots
    before read as world.at() reads them (the cut one's start lies past the cells stored)."""
    path = str(tmp_path / "cut.h5")
    states = build(path, 5, snapshots=2)
    code = ("import os, sys, worldstore\n"
            "from worldstore import _schema\n"
            "world = worldstore.open(sys.argv[1], 'r+', swmr=True)\n"
            "world.deposit('HEAT', [1, 2], [1, 2], 1.0)\n"
            "world.step()\n"
            "_schema.history_row_name = lambda name: os.kill(os.getpid(), 9)  # after the start, before cells\n"
            "world.snapshot()\n")
    assert run_python(code, path).returncode == -9
    recovery.clear_status_flags(path)  # as h5clear does; a writer's open would also end the cut snapshot
    with h5py.File(path, "r") as f:
        assert f["history/HEAT_start"][-1] > f["history/HEAT_values"].shape[0]
    heat = to_xarray(path)["HEAT"].values
    assert heat.shape[0] == 2
    for index in range(2):
        np.testing.assert_array_equal(heat[index], states[index]["HEAT"])


def test_labels_coordinates_and_attributes(worlds):
    paths, _ = worlds
    ds = to_xarray(paths[0])
    with worldstore.open(paths[0]) as world:
        records = world.history()
        spec = world.spec
    assert ds["RES_F32"].dims == ("step", "y", "x")
    assert ds["MEMORY"].dims == ("step", "agent", "y", "x")
    assert ds["OBS"].dims == ("step", "agent", "OBS_channel", "OBS_dy", "OBS_dx")
    assert ds["step"].values.tolist() == [r["step"] for r in records] == [1, 2, 3, 4]
    assert ds["time"].dims == ("step",) and ds["time"].dtype == np.dtype("datetime64[ns]")
    expected = np.array([r["time"] for r in records])
    assert np.allclose(ds["time"].values.astype(np.int64) / 1e9, expected, atol=1e-6, rtol=0)
    assert ds["y"].values.tolist() == list(range(spec.height)) and ds["x"].values.tolist() == list(range(spec.width))
    assert ds["y"].attrs["axis"] == "Y" and ds["x"].attrs["axis"] == "X"
    assert ds["OBS_dy"].values.tolist() == [-2, -1, 0, 1, 2]
    assert ds["OBS_channel_name"].values.tolist() == ["RES_F32", "OBSTACLES", "MEMORY"]
    attrs = ds["RES_I32"].attrs
    assert attrs["long_name"] == "RES_I32" and attrs["units"] == "" and attrs["grid_class"] == "resource"
    assert attrs["_FillValue"] == -1 and attrs["_FillValue"].dtype == np.int32 and attrs["pad_value"] == 0
    assert ds["HEAT"].attrs["decay"] == 0.5 and ds["HEAT"].attrs["threshold"] == 0.1
    assert ds.attrs["Conventions"] == "CF-1.8" and ds.attrs["height"] == spec.height
    assert ds.attrs["history_codec"] == "gzip" and ds.attrs["step"] == 4
    assert isinstance(ds["RES_F32"].data, da.Array)


def test_cf_units_and_masking(tmp_path):
    path = tmp_path / "farm.h5"
    spec = WorldSpec(6, 5, 0, [LayerSpec("FOOD", "resource", "float32", fill_value=0.0, units="kg",
                                         long_name="food"),
                               LayerSpec("LEVEL", "environment", "int16", fill_value=-1)])
    with worldstore.create(path, spec) as world:
        world["FOOD"][2, 3] = 1.5
        world["LEVEL"][1, 1] = 7
        world.step()
        world.snapshot()
    plain = to_xarray(path).compute()
    assert plain["FOOD"].attrs["units"] == "kg" and plain["FOOD"].attrs["long_name"] == "food"
    assert plain["LEVEL"].dtype == np.int16 and int(plain["LEVEL"][0, 0, 0]) == -1
    masked = to_xarray(path, mask_fill=True)
    assert "_FillValue" not in masked["FOOD"].attrs and masked["FOOD"].encoding["_FillValue"] == 0
    assert masked["LEVEL"].dtype == np.float32 and masked["FOOD"].dtype == np.float32
    level = masked["LEVEL"].values[0]
    assert level[1, 1] == 7 and np.isnan(level).sum() == level.size - 1
    food = masked["FOOD"].values[0]
    assert food[2, 3] == 1.5 and np.isnan(food).sum() == food.size - 1
    # what CF decoding of the plain attributes gives, xarray's own way
    decoded = xr.decode_cf(to_xarray(path))
    np.testing.assert_array_equal(decoded["LEVEL"].values[0], level)


def test_bool_layers_attributes_save_with_to_netcdf_in_new_and_older_files(tmp_path):
    """A bool layer's ``_FillValue`` and ``pad_value`` are int8 0/1 (netCDF writers refuse numpy bools), also
    when an older file holds them as HDF5 enum attributes; an agentfarm world with history saves."""
    pytest.importorskip("h5netcdf")
    new, old = str(tmp_path / "new.h5"), str(tmp_path / "old.h5")
    build(new, seed=5, snapshots=2, spec=worldstore.presets.classic(20, 16, 2, obs_radius=1))
    shutil.copyfile(new, old)
    as_older_bool_attributes(old)
    expected = {"OBSTACLES": (0, 1), "VISIBILITY": (1, 0)}
    for path in (new, old):
        ds = to_xarray(path)
        for name, (fill, pad) in expected.items():
            attrs = ds[name].attrs
            assert (attrs["_FillValue"], attrs["pad_value"]) == (fill, pad), (path, name)
            assert attrs["_FillValue"].dtype == attrs["pad_value"].dtype == np.int8, (path, name)
        ds.to_netcdf(tmp_path / "all.nc", engine="h5netcdf")
        ds.isel(step=-1).to_netcdf(tmp_path / "last.nc", engine="h5netcdf")
        ds[list(expected)].mean(["y", "x"], keep_attrs=True).to_netcdf(tmp_path / "mean.nc", engine="h5netcdf")
        to_xarray(path, mask_fill=True).to_netcdf(tmp_path / "masked.nc", engine="h5netcdf")
        with xr.open_dataset(tmp_path / "all.nc", engine="h5netcdf", mask_and_scale=False) as back:
            for name in expected:
                np.testing.assert_array_equal(back[name].values.astype(bool), ds[name].values, err_msg=name)
    xr.testing.assert_identical(to_xarray(old, history=False).drop_attrs(deep=False).compute(),
                                to_xarray(new, history=False).drop_attrs(deep=False).compute())


def test_reading_is_lazy(worlds, monkeypatch):
    paths, _ = worlds
    reads = []
    original = _DenseBlocks._read, _TemporalHistoryBlocks._read
    monkeypatch.setattr(_DenseBlocks, "_read", lambda self, f, b: reads.append(self.dataset) or original[0](self, f, b))
    monkeypatch.setattr(_TemporalHistoryBlocks, "_read",
                        lambda self, f, b: reads.append(self.dataset) or original[1](self, f, b))
    ds = to_xarray(paths, layers=["RES_F32", "HEAT"])
    mean = ds["RES_F32"].mean("step") + ds["HEAT"].max("step")
    assert reads == []
    mean.compute(scheduler="synchronous")
    assert "/history/RES_F32" in reads and "/history/HEAT" in reads


def test_live_layers_are_read_when_computed(tmp_path):
    path = tmp_path / "live.h5"
    states = build(path, 5, snapshots=1)
    ds = to_xarray(path, history=False)
    assert ds["RES_F32"].dims == ("y", "x") and int(ds["step"]) == 1
    with worldstore.open(path, "r+") as world:
        for name in world:
            np.testing.assert_array_equal(ds[name].values, states[0][name], err_msg=name)
        world["RES_F32"][0, 0] = 123.0
        world.deposit("HEAT", [3], [4], 9.0)  # sparse: reread from its COO datasets after the flush
        world.flush()
        expected = {name: np.array(world[name].numpy(), copy=True) for name in ("RES_F32", "HEAT")}
    for name, values in expected.items():  # the same Dataset, built before the writes
        np.testing.assert_array_equal(ds[name].values, values, err_msg=name)


def test_chunks_follow_the_hdf5_chunks(tmp_path):
    path = tmp_path / "big.h5"
    spec = WorldSpec(1030, 600, 0, [LayerSpec("FOOD", "resource", "float32"),
                                    LayerSpec("SCENT", "temporal", "float32", storage="sparse")])
    rng = np.random.default_rng(1)
    with worldstore.create(path, spec) as world:
        for _ in range(2):
            world["FOOD"][...] = rng.random((1030, 600), dtype=np.float32)
            world.deposit("SCENT", rng.integers(0, 1030, 50), rng.integers(0, 600, 50), 1.0)
            world.step()
            world.snapshot()
    with h5py.File(path, "r") as f:
        assert f["history/FOOD"].chunks == (1, 512, 512)
        food = f["history/FOOD"][...]
    ds = to_xarray(path)
    assert ds["FOOD"].chunks == ((1, 1), (512, 512, 6), (512, 88))
    assert ds["SCENT"].chunks == ((1, 1), (1030,), (600,))  # a snapshot's cells are one block
    auto = to_xarray(path, chunks="auto")
    assert auto["FOOD"].chunks == ((2,), (1030,), (600,))
    bands = to_xarray(path, chunks={"y": 1024, "x": -1, "step": 2})
    assert bands["FOOD"].chunks == ((2,), (1024, 6), (600,))
    assert bands["SCENT"].chunks == ((2,), (1024, 6), (600,))
    live = to_xarray(path, history=False)
    assert live["FOOD"].chunks == ((512, 512, 6), (512, 88))
    for dataset in (ds, auto, bands):
        np.testing.assert_array_equal(dataset["FOOD"].values, food)
        np.testing.assert_array_equal(dataset["SCENT"].values, ds["SCENT"].values)
    with pytest.raises(ValueError, match=r"chunks\['y'\] = 300 is not a whole multiple of the HDF5 chunk \(512\)"):
        to_xarray(path, chunks={"y": 300})
    with pytest.raises(ValueError, match="no selected layer has"):
        to_xarray(path, chunks={"agent": 2})
    with pytest.raises(ValueError, match="chunks must be"):
        to_xarray(path, chunks="big")


def test_several_worlds_stack_along_world(worlds):
    paths, states = worlds
    ds = to_xarray(paths, layers=["RES_F32", "OBSTACLES", "HEAT"])
    assert ds["world"].values.tolist() == paths
    assert ds["RES_F32"].dims == ("world", "step", "y", "x")
    assert ds["time"].dims == ("world", "step")  # each world's own wall-clock times
    assert ds["step"].values.tolist() == [1, 2, 3, 4]
    values = ds.compute()
    for w, path in enumerate(paths):
        for name in ("RES_F32", "OBSTACLES", "HEAT"):
            expected = np.stack([state[name] for state in states[w]])
            np.testing.assert_array_equal(values[name].sel(world=path).values, expected, err_msg=name)
    assert values["OBSTACLES"].dtype == bool


def test_worlds_with_other_steps_need_a_join(worlds, tmp_path):
    paths, _ = worlds
    shorter = str(tmp_path / "shorter.h5")
    build(shorter, 9, snapshots=3)
    with pytest.raises(ValueError, match=r"different steps \(\[1, 2, 3, 4\] and \[1, 2, 3\]\).*join='inner'"):
        to_xarray([paths[0], shorter])
    inner = to_xarray([paths[0], shorter], layers=["RES_I32"], join="inner")
    assert inner["step"].values.tolist() == [1, 2, 3] and inner["RES_I32"].dtype == np.int32
    other = str(tmp_path / "other.h5")
    build(other, 3, snapshots=4, spec=every_class_spec(height=10))
    with pytest.raises(ValueError, match="only worlds of one layout"):
        to_xarray([paths[0], other])


def test_mean_over_three_histories_on_a_local_cluster(worlds):
    distributed = pytest.importorskip("dask.distributed")
    paths, states = worlds
    ds = to_xarray(paths, layers=["RES_F32", "HEAT", "MEMORY"])
    means = {name: ds[name].mean("step") for name in ds.data_vars}
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        results = dict(zip(means, client.compute([m.data for m in means.values()], sync=True)))
        pids = set(client.run(os.getpid).values())
    assert os.getpid() not in pids and len(pids) == 2
    for name, result in results.items():
        expected = np.stack([np.stack([s[name] for s in world_states]) for world_states in states]).mean(axis=1)
        assert result.shape == expected.shape
        np.testing.assert_allclose(result, expected, rtol=1e-6, atol=1e-2 if name == "MEMORY" else 0, err_msg=name)


def test_a_swmr_writer_can_be_read_while_it_runs_and_another_writer_is_refused(worlds, tmp_path):
    paths, states = worlds
    with held_open(paths[1], swmr=True):
        values = to_xarray(paths[1], layers=["RES_F32"])["RES_F32"].values
        np.testing.assert_array_equal(values, np.stack([s["RES_F32"] for s in states[1]]))
    with held_open(paths[2]), pytest.raises(WorldLockedError, match="not in SWMR mode"):
        to_xarray(paths[2])


def test_a_live_block_is_never_torn_by_a_commit(tmp_path):
    """A SWMR writer fills a layer with 1, 2, 3... committing each; every block read must hold one value."""
    path = str(tmp_path / "busy.h5")
    worldstore.create(path, WorldSpec(1024, 1024, 0, [LayerSpec("FIELD", "resource")])).close()
    code = ("import sys, time, worldstore\n"
            "w = worldstore.open(sys.argv[1], 'r+', swmr=True)\n"
            "a = w['FIELD'].numpy()\n"
            "print('ready', flush=True)\n"
            "k, end = 0, time.time() + 2.5\n"
            "while time.time() < end:\n"
            "    k += 1\n"
            "    a[...] = k\n"
            "    w.flush()\n"
            "w.close()\n"
            "print(k, flush=True)\n")
    writer = subprocess.Popen([sys.executable, "-c", code, path], stdout=subprocess.PIPE, text=True,
                              env=python_env())
    try:
        assert writer.stdout.readline().strip() == "ready"
        field = to_xarray(path, history=False, chunks={"y": -1, "x": -1})["FIELD"]
        seen = set()
        end = time.monotonic() + 1.5
        while time.monotonic() < end:
            values = field.values
            assert np.all(values == values.flat[0]), "a block mixes two commits"
            seen.add(float(values.flat[0]))
    finally:
        commits = int(writer.communicate(timeout=60)[0].strip())
    assert commits > 1 and len(seen) > 1  # the reads did meet a writer that was committing


def test_bad_requests_say_what_is_wrong(worlds, tmp_path):
    paths, _ = worlds
    with pytest.raises(WorldNotFoundError):
        to_xarray(tmp_path / "missing.h5")
    with pytest.raises(LayerNotFoundError, match="NOPE"):
        to_xarray(paths[0], layers=["NOPE"])
    with pytest.raises(ValueError, match="join"):
        to_xarray(paths, join="left")
    with pytest.raises(ValueError, match="at least one"):
        to_xarray([])
    old = tmp_path / "format1.h5"
    build(old, 1, snapshots=1)
    with h5py.File(old, "r+") as f:
        del f["history"]
    with pytest.raises(HistoryError, match="history=False"):
        to_xarray(old)
    assert to_xarray(old, history=False)["RES_F32"].shape == (24, 20)


def test_a_world_without_snapshots_gives_an_empty_step_axis(tmp_path):
    path = tmp_path / "empty.h5"
    worldstore.create(path, spec_with_sparse_heat()).close()
    ds = to_xarray(path, chunks="auto")
    assert ds.sizes["step"] == 0 and ds["HEAT"].shape == (0, 24, 20)
    assert ds["RES_F32"].values.shape == (0, 24, 20)


@pytest.mark.parametrize("module", ["xarray", "dask.array"])
def test_without_xarray_or_dask_the_error_names_the_extra(worlds, monkeypatch, module):
    monkeypatch.setitem(sys.modules, module, None)  # what an import of a missing module meets
    with pytest.raises(ImportError, match=r"pip install 'worldstore\[analysis\]'"):
        to_xarray(worlds[0][0])


def test_importing_worldstore_needs_neither_xarray_nor_dask():
    proc = run_python("import sys, worldstore, worldstore.analysis; "
                      "print(sorted(m for m in sys.modules if m.split('.')[0] in ('xarray', 'dask', 'distributed')))")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_a_temporal_history_block_reads_while_snapshots_land(tmp_path):
    """The kind of 580e2bb's fault, in to_xarray: a block opens the file afresh, and a snapshot landing between
    its opens of a temporal layer's history coords and values showed them of two sizes (the writer resizes
    both before one flush), a plain open found the file shorter than its superblock says, and the superblock
    showed flags no SWMR writer keeps: each read was refused as a damaged or locked file."""
    from conftest import snapshotting_writer

    path = str(tmp_path / "w.h5")
    with snapshotting_writer(path) as writer:
        first = to_xarray(path, history=True)["H"][0]
        reads = 0
        while writer.poll() is None:
            block = first.values
            assert block[1, 1] == 1.0 and np.count_nonzero(block) == 1
            reads += 1
    assert reads > 10
