"""Snapshots, past states (at), restore: a past state reads back exactly as it was live."""

from __future__ import annotations

import sys

import h5py
import numpy as np
import pytest

import worldstore
from conftest import every_class_spec
from worldstore import HistoryError, ReadOnlyWorldError

DENSE_KINDS = ("mapped", "memory")


def advance(world: worldstore.World, seed: int) -> None:
    """One deterministic simulation step touching every class of layer."""
    rng = np.random.default_rng(seed)
    height, width = world.shape
    for name, layer in world.layers.items():
        if layer.grid_class in ("resource", "environment", "agent", "observation"):
            where = tuple(rng.integers(0, extent, 6) for extent in layer.shape)
            if layer.dtype == bool:
                world[name][where] = rng.random(6) < 0.5
            elif layer.dtype.kind in "iu":
                world[name][where] = rng.integers(0, 100, 6).astype(layer.dtype)
            else:
                world[name][where] = rng.uniform(-4, 4, 6).astype(layer.dtype)
        elif layer.grid_class == "temporal":
            world.deposit(name, rng.integers(0, height, 8), rng.integers(0, width, 8), rng.uniform(0, 3, 8))
    world.step()


def live_state(world) -> dict[str, np.ndarray]:
    return {name: np.array(world[name].numpy(), copy=True) for name in world}


@pytest.mark.parametrize("kind", DENSE_KINDS)
@pytest.mark.parametrize("temporal", ["sparse", "dense"])
def test_at_step_equals_what_was_live_for_every_class(tmp_path, kind, temporal):
    spec = every_class_spec(storage=kind)
    if temporal == "sparse":
        spec = spec.with_storage({"temporal": "sparse"})
    path = tmp_path / "h.h5"
    recorded = {}
    positions = [[0, 0], [5, 7], [23, 19]]
    observed = {}
    with worldstore.create(path, spec) as world:
        for seed in range(7):
            advance(world, seed)
            if seed % 2 == 0:
                world.snapshot()
                recorded[world.current_step] = live_state(world)
                observed[world.current_step] = world.observe(positions)
        assert [s["step"] for s in world.history()] == sorted(recorded)
        live_at_end = live_state(world)
    with worldstore.open(path) as world:  # read-only, after reopening
        for step, state in recorded.items():
            past = world.at(step)
            assert past.step == step
            for name, values in state.items():
                np.testing.assert_array_equal(past[name].numpy(), values, err_msg=f"{name} at step {step}")
            np.testing.assert_array_equal(past["RES_F32"].window(slice(3, 9), slice(2, 15)),
                                          state["RES_F32"][3:9, 2:15])
            np.testing.assert_array_equal(past["HEAT"].window(slice(0, 24), slice(5, 6)), state["HEAT"][:, 5:6])
            np.testing.assert_array_equal(past.observe(positions), observed[step])
        for name, values in live_at_end.items():  # snapshots leave the live state alone
            np.testing.assert_array_equal(world[name].numpy(), values)


def test_history_lists_steps_times_and_bytes(tmp_path):
    with worldstore.create(tmp_path / "l.h5", every_class_spec()) as world:
        assert world.history() == []
        for seed in range(3):
            advance(world, seed)
            record = world.snapshot()
            assert record["index"] == seed and record["step"] == seed + 1
        listing = world.history()
    assert [s["step"] for s in listing] == [1, 2, 3]
    assert [s["index"] for s in listing] == [0, 1, 2]
    assert all(b["time"] >= a["time"] for a, b in zip(listing, listing[1:]))
    assert all(s["bytes"] > 0 for s in listing)


@pytest.mark.parametrize("kind", DENSE_KINDS)
def test_restore_then_continue_is_the_same_run(tmp_path, kind):
    spec = every_class_spec(storage=kind).with_storage({"HEAT": "sparse"})
    straight, detour = tmp_path / "straight.h5", tmp_path / "detour.h5"
    with worldstore.create(straight, spec) as world:
        for seed in range(10):
            advance(world, seed)
        expected = live_state(world)
        expected_step = world.current_step
    with worldstore.create(detour, spec) as world:
        for seed in range(5):
            advance(world, seed)
        world.snapshot()
        for seed in range(100, 108):  # a different future, later abandoned
            advance(world, seed)
    with worldstore.open(detour, "r+") as world:
        world.restore(5)
        assert world.current_step == 5 and world.committed_step == 5
        for seed in range(5, 10):
            advance(world, seed)
        assert world.current_step == expected_step
        for name, values in expected.items():
            np.testing.assert_array_equal(world[name].numpy(), values, err_msg=name)
        assert world["HEAT"].storage == "sparse"


def test_restore_into_a_dense_temporal_layer_and_later_snapshots_stay(tmp_path):
    with worldstore.create(tmp_path / "r.h5", every_class_spec()) as world:
        world.deposit("HEAT", [1, 2], [3, 4], [5.0, 6.0])
        world.snapshot()
        world.deposit("HEAT", [7], [7], 9.0)
        world.step()
        world.snapshot()
        world.restore(0)
        assert world["HEAT"].storage == "mapped"
        assert float(world["HEAT"][1, 3]) == 5.0 and float(world["HEAT"][7, 7]) == 0.0
        assert [s["step"] for s in world.history()] == [0, 1]
        assert float(world.at(1)["HEAT"][7, 7]) == 4.5  # 9.0, decayed once (decay 0.5)


def test_bad_requests_are_refused_and_change_nothing(tmp_path):
    path = tmp_path / "b.h5"
    with worldstore.create(path, every_class_spec()) as world:
        advance(world, 0)
        world.snapshot()
        with pytest.raises(HistoryError, match="no snapshot at step 7.*steps: 1"):
            world.at(7)
        with pytest.raises(HistoryError, match="integer"):
            world.at("1")
        with pytest.raises(HistoryError, match="no snapshot at step 0"):
            world.restore(0)
        with pytest.raises(worldstore.LayerNotFoundError):
            world.at(1)["NOPE"]
        with pytest.raises(worldstore.ObserveError, match="read-only"):
            world.at(1).observe([[0, 0]], into=True)
        state = live_state(world)
    with worldstore.open(path) as world:
        with pytest.raises(ReadOnlyWorldError, match="read-only"):
            world.restore(1)
        with pytest.raises(ReadOnlyWorldError):
            world.snapshot()
        for name, values in state.items():
            np.testing.assert_array_equal(world[name].numpy(), values)


def test_a_format_1_file_without_history_says_so(tmp_path):
    path = tmp_path / "old.h5"
    worldstore.create(path, every_class_spec()).close()
    with h5py.File(path, "r+") as f:
        del f["history"]
        f.attrs["worldstore_format_version"] = np.int64(1)
    with worldstore.open(path, "r+") as world:
        with pytest.raises(HistoryError, match="no history"):
            world.snapshot()
        with pytest.raises(HistoryError, match="no history"):
            world.history()


def test_history_is_readable_by_h5py_and_xarray(tmp_path):
    xarray = pytest.importorskip("xarray")
    path = tmp_path / "x.h5"
    with worldstore.create(path, worldstore.presets.classic(16, 12, 2)) as world:
        for value in (1.0, 2.0):
            world["RESOURCES"][:] = value
            world.snapshot()
            world.step()
    with h5py.File(path, "r") as f:
        assert f["history/RESOURCES"].shape == (2, 16, 12)
        assert f["history/RESOURCES"].compression == "gzip"
        np.testing.assert_array_equal(f["history/step"][...], [0, 1])
    dataset = xarray.open_dataset(path, group="history", engine="h5netcdf", phony_dims="access")
    try:
        resources = dataset["RESOURCES"]
        assert resources.dims[0] == "step"
        assert float(resources.sel(step=1)[3, 3]) == 2.0
    finally:
        dataset.close()


def test_a_swmr_reader_sees_new_snapshots_after_refresh(tmp_path):
    """A writer in SWMR mode snapshots while a reader process holds the file open."""
    import subprocess
    import sys

    path = tmp_path / "swmr.h5"
    worldstore.create(path, every_class_spec().with_storage({"HEAT": "sparse", "RES_I32": "memory"})).close()
    writer = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, worldstore\n"
         "w = worldstore.open(sys.argv[1], 'r+', swmr=True)\n"
         "for i in range(3):\n"
         "    w['RES_F32'][:] = float(i + 1)\n"
         "    w['RES_I32'][:] = i + 1\n"
         "    w.deposit('HEAT', [i], [i], 10.0)\n"
         "    w.snapshot()\n"
         "    w.step()\n"
         "    print('snapshot', i, flush=True)\n"
         "    sys.stdin.readline()\n"
         "w.close()\n", str(path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**__import__("os").environ, "PYTHONPATH": __import__("os").path.dirname(
            __import__("os").path.dirname(__import__("os").path.abspath(__file__)))})
    try:
        assert writer.stdout.readline().strip() == "snapshot 0"
        with worldstore.open(path, "r", swmr=True) as reader:
            assert [s["step"] for s in reader.history()] == [0]
            for i in (1, 2):
                writer.stdin.write("\n")
                writer.stdin.flush()
                assert writer.stdout.readline().strip() == f"snapshot {i}"
                assert reader.refresh() == i  # the step of the snapshot just committed
                assert [s["step"] for s in reader.history()] == list(range(i + 1))
                past = reader.at(i)
                assert float(past["RES_F32"][0, 0]) == i + 1 and int(past["RES_I32"][3, 3]) == i + 1
                assert past["HEAT"].numpy()[i, i] == 10.0
                assert int(reader["RES_I32"][0, 0]) == i + 1  # an in-RAM layer, read again
                assert reader["HEAT"].nnz == i + 1  # a sparse layer, read again
        writer.stdin.write("\n")
        writer.stdin.flush()
    finally:
        out, err = writer.communicate(timeout=60)
    assert writer.returncode == 0, err


@pytest.mark.parametrize("durable", [True, False])
def test_a_durable_snapshot_is_fsynced_after_it_is_appended(tmp_path, monkeypatch, durable):
    """Issue 15: snapshot() wrote the history and never fsync'd it (seen with strace), so a power cut could
    lose a snapshot that a durable commit would have kept. Now durable=True syncs after the append."""
    from worldstore import _platform, history

    events = []
    monkeypatch.setattr(_platform, "durable_sync", lambda fd: events.append("sync"))
    append_clock = history.append_clock
    monkeypatch.setattr(history, "append_clock", lambda *args: (append_clock(*args), events.append("appended")))
    with worldstore.create(str(tmp_path / "w.h5"), worldstore.presets.classic(16, 16, 2)) as world:
        world["RESOURCES"][:] = 1.0
        events.clear()
        world.snapshot(durable=durable)
        if durable:  # the commit's syncs (journal, file), then the snapshot's
            assert events[-2:] == ["appended", "sync"] and events.count("sync") >= 2, events
        else:
            assert events == ["appended"]


def test_a_swmr_reader_reads_past_sparse_cells_while_snapshots_land(tmp_path):
    # The writer resizes a temporal layer's history cells (coords, then values) before one flush: a reader
    # refreshing the two between them saw two sizes and called the file damaged (CI, the viewer's test).
    import time as clock

    from conftest import snapshotting_writer

    path = str(tmp_path / "w.h5")
    with snapshotting_writer(path) as writer:
        reads = 0
        with worldstore.open(path, swmr=True) as reader:
            while writer.poll() is None:
                reader.refresh()
                coords, values = reader.at(0)["H"].coo()
                assert coords.tolist() == [[1, 1]] and values.tolist() == [1.0]
                reads += 1
                clock.sleep(0.001)
    assert reads > 10
