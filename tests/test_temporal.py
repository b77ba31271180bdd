"""Temporal channels: deposit and decay give the same values in every storage kind.

The reference is plain numpy written here: np.add.at for "add", a sequential
loop for "max" and "set", and ``a *= decay; a[|a| < threshold] = 0`` per step.
"""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import worldstore
from worldstore import LayerSpec, WorldSpec

from conftest import needs_torch, torch

H, W = 7, 9
#: One layer per storage kind, plus one that switches automatically.
KINDS = {"MAPPED": "mapped", "MEMORY": "memory", "SPARSE": "sparse", "AUTO": "mapped"}


def temporal_spec(decay: float, threshold: float, dtype: str = "float32") -> WorldSpec:
    layers = [LayerSpec(name, "temporal", dtype, decay=decay, threshold=threshold, storage=kind,
                        switch_density=0.3 if name == "AUTO" else None)
              for name, kind in KINDS.items()]
    layers.append(LayerSpec("RESOURCES", "resource"))
    return WorldSpec(H, W, 0, layers)


class Reference:
    """The plain numpy model of one temporal layer."""

    def __init__(self, decay: float, threshold: float, dtype=np.float32):
        self.values = np.zeros((H, W), dtype=dtype)
        self.decay = decay
        self.threshold = threshold

    def deposit(self, ys, xs, values, mode):
        values = np.asarray(values, dtype=self.values.dtype)
        if mode == "add":
            np.add.at(self.values, (ys, xs), values)
        else:
            for y, x, v in zip(ys, xs, np.broadcast_to(values, np.shape(ys))):
                self.values[y, x] = max(self.values[y, x], v) if mode == "max" else v

    def step(self):
        self.values *= self.values.dtype.type(self.decay)
        # worldstore flushes subnormals to 0 whatever the threshold (see worldstore.temporal)
        self.values[np.abs(self.values) < max(self.threshold, np.finfo(self.values.dtype).tiny)] = 0


deposits = st.tuples(
    st.lists(st.tuples(st.integers(0, H - 1), st.integers(0, W - 1)), min_size=0, max_size=15),
    st.sampled_from(["add", "max", "set"]),
    st.integers(0, 2**16),
)
actions = st.one_of(deposits, st.just("step"), st.just("reopen"))


def run(tmp_path, actions_list, decay, threshold, value_of):
    """Apply the actions to a world and to the reference; return (world values by layer, reference)."""
    path = tmp_path / "t.h5"
    world = worldstore.create(path, temporal_spec(decay, threshold), overwrite=True)
    reference = Reference(decay, threshold)
    try:
        for action in actions_list:
            if action == "step":
                world.step()
                reference.step()
            elif action == "reopen":
                world.close()
                world = worldstore.open(path, "r+")
            else:
                cells, mode, seed = action
                ys = np.array([c[0] for c in cells], dtype=np.int64)
                xs = np.array([c[1] for c in cells], dtype=np.int64)
                values = value_of(np.random.default_rng(seed), len(cells))
                for name in KINDS:
                    world.deposit(name, ys, xs, values, mode=mode)
                reference.deposit(ys, xs, values, mode)
            for name in KINDS:  # every kind agrees exactly after every action
                np.testing.assert_array_equal(world[name].numpy(), world["MAPPED"].numpy(), err_msg=name)
            assert world["SPARSE"].nnz == world["MAPPED"].nnz
        world.close()
        with worldstore.open(path) as reopened:
            final = {name: reopened[name].numpy().copy() for name in KINDS}
            kinds = {name: reopened[name].storage for name in KINDS}
        return final, kinds, reference.values
    finally:
        world.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(actions_list=st.lists(actions, min_size=1, max_size=14),
       decay=st.sampled_from([0.25, 0.5, 1.0]), threshold=st.sampled_from([0.0, 0.125, 0.5, 1.0]))
def test_exact_workloads_match_the_reference_exactly(tmp_path, actions_list, decay, threshold):
    """Values and decays on a dyadic grid: every result is exact, so equality is exact."""
    final, kinds, expected = run(tmp_path, actions_list, decay, threshold,
                                 lambda rng, n: rng.integers(-8, 9, n).astype(np.float32) / 4)
    assert kinds["SPARSE"] == "sparse" and kinds["MEMORY"] == "memory"
    for name, values in final.items():
        np.testing.assert_array_equal(values, expected, err_msg=name)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(actions_list=st.lists(actions, min_size=1, max_size=14),
       decay=st.floats(0.01, 1.0), threshold=st.floats(0.0, 2.0))
def test_random_workloads_match_the_reference_to_float32_tolerance(tmp_path, actions_list, decay, threshold):
    final, _, expected = run(tmp_path, actions_list, decay, threshold,
                             lambda rng, n: rng.uniform(-5, 5, n).astype(np.float32))
    for name, values in final.items():
        # A cell within rounding of the threshold may be zeroed in one and kept in the other.
        np.testing.assert_allclose(values, expected, rtol=1e-5, atol=threshold + 1e-5, err_msg=name)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(actions_list=st.lists(actions, min_size=1, max_size=20), decay=st.sampled_from([0.5, 1.0]),
       threshold=st.sampled_from([0.0, 0.25]), merge_every=st.sampled_from([1, 2, 3, 8]), run_min=st.sampled_from([1, 1000]), compact=st.sampled_from([1, 4, 99]),
       width=st.sampled_from([1, 16]), native=st.booleans())
def test_sparse_merges_and_tag_rebuilds_keep_values_exact(tmp_path, monkeypatch, actions_list, decay,
                                                             threshold, merge_every, run_min, compact, width, native):
    """Sparse storage under pressure: runs merged after every 1-8 deposits (or once they
    outgrow main), tags so few
    that most cells share a slot and they are rebuilt on almost every deposit,
    decay keeping fallen cells as zeros (compact=1) or compacting at once (99), and
    block lookups of one cell (width=1) or sixteen, with the compiled kernels or without."""
    from worldstore import _native
    from worldstore.storage import sparse
    if not native:  # the numpy twins of the compiled kernels
        monkeypatch.setattr(_native, "library", None)
    monkeypatch.setattr(sparse, "_MAX_RUNS", merge_every)
    monkeypatch.setattr(sparse, "_COMPACT_FRACTION", compact)
    monkeypatch.setattr(sparse, "_RUN_MIN", run_min)
    monkeypatch.setattr(sparse.CellTags, "MIN_BITS", 2)
    monkeypatch.setattr(sparse.BlockIndex, "WIDTH", width)  # 1: most lookups fall back to a binary search
    final, _, expected = run(tmp_path, actions_list, decay, threshold,
                             lambda rng, n: rng.integers(-8, 9, n).astype(np.float32) / 4)
    for name, values in final.items():
        np.testing.assert_array_equal(values, expected, err_msg=name)


def test_sparse_cells_stay_sorted_and_distinct_across_runs(tmp_path):
    rng = np.random.default_rng(11)
    spec = WorldSpec(64, 64, 0, [LayerSpec("T", "temporal", decay=1.0, threshold=0.0, storage="sparse")])
    reference = np.zeros((64, 64), np.float32)
    with worldstore.create(tmp_path / "s.h5", spec) as world:
        for _ in range(40):  # 40 deposits: more runs than are kept before a merge
            ys, xs = rng.integers(0, 64, 50), rng.integers(0, 64, 50)
            world.deposit("T", ys, xs, 1.0)
            np.add.at(reference, (ys, xs), 1.0)
            assert world["T"].nnz == np.count_nonzero(reference)
            np.testing.assert_array_equal(world["T"].window(slice(10, 30), slice(5, 60)), reference[10:30, 5:60])
        coords, _ = world["T"].coo()
        assert np.all(np.diff(coords[:, 0] * 64 + coords[:, 1]) > 0)
        np.testing.assert_array_equal(world["T"].numpy(), reference)


def test_a_cell_brought_to_zero_is_not_persisted(tmp_path):
    spec = WorldSpec(4, 4, 0, [LayerSpec("T", "temporal", decay=1.0, threshold=0.0, storage="sparse")])
    with worldstore.create(tmp_path / "z.h5", spec) as world:
        world.deposit("T", [1, 2], [1, 2], [3.0, 4.0])
        world.deposit("T", [1], [1], [-3.0])
        assert world["T"].nnz == 1
        np.testing.assert_array_equal(world["T"].coo()[0], [[2, 2]])
    with h5py.File(tmp_path / "z.h5", "r") as f:
        np.testing.assert_array_equal(f["layers/T_values"][...], [4.0])
    with worldstore.open(tmp_path / "z.h5", "r+") as world:
        world.deposit("T", [0], [0], [5.0], mode="set")
        world.deposit("T", [0], [0], [0.0], mode="set")
        world.step()
        assert world["T"].nnz == 1


def test_float16_layers_agree_across_kinds(tmp_path):
    spec = temporal_spec(0.9, 0.01, dtype="float16")
    rng = np.random.default_rng(3)
    with worldstore.create(tmp_path / "h.h5", spec) as world:
        for _ in range(20):
            ys, xs = rng.integers(0, H, 30), rng.integers(0, W, 30)
            values = rng.uniform(-2, 2, 30)
            for name in KINDS:
                world.deposit(name, ys, xs, values, mode="add")
            world.step()
            for name in KINDS:
                assert world[name].dtype == np.float16
                np.testing.assert_array_equal(world[name].numpy(), world["MAPPED"].numpy())


def test_repeated_cells_in_one_deposit(tmp_path):
    with worldstore.create(tmp_path / "r.h5", temporal_spec(1.0, 0.0)) as world:
        for name in KINDS:
            world.deposit(name, [2, 2, 2], [3, 3, 3], [1.0, 5.0, 2.0], mode="add")
            world.deposit(name, [4, 4, 4], [1, 1, 1], [1.0, 5.0, 2.0], mode="max")
            world.deposit(name, [5, 5, 5], [0, 0, 0], [1.0, 5.0, 2.0], mode="set")
            world.deposit(name, [6], [8], [-3.0], mode="max")  # an empty cell holds 0, which is larger
            layer = world[name]
            assert (layer[2, 3], layer[4, 1], layer[5, 0], layer[6, 8]) == (8.0, 5.0, 2.0, 0.0), name


def test_step_decays_and_thresholds_every_kind(tmp_path):
    with worldstore.create(tmp_path / "d.h5", temporal_spec(0.5, 0.3)) as world:
        for name in KINDS:
            world.deposit(name, [0, 0, 0], [0, 1, 2], [1.0, 0.5, -2.0])
        world["RESOURCES"][0, 0] = 1.0
        assert world.step() == 1
        for name in KINDS:
            np.testing.assert_array_equal(world[name][0, :3], [0.5, 0.0, -1.0])
            assert world[name].nnz == 2
        assert world["RESOURCES"][0, 0] == 1.0  # only temporal layers decay


def test_switching_storage_preserves_values_exactly(tmp_path):
    path = tmp_path / "s.h5"
    rng = np.random.default_rng(5)
    with worldstore.create(path, temporal_spec(0.9, 0.0)) as world:
        world.deposit("MAPPED", rng.integers(0, H, 20), rng.integers(0, W, 20), rng.standard_normal(20))
        expected = world["MAPPED"].numpy().copy()
        for kind in ["sparse", "memory", "sparse", "mapped", "memory", "mapped", "sparse"]:
            world.set_storage("MAPPED", kind)
            assert world["MAPPED"].storage == kind
            np.testing.assert_array_equal(world["MAPPED"].numpy(), expected, err_msg=kind)
    with worldstore.open(path) as world:
        assert world["MAPPED"].storage == "sparse"
        np.testing.assert_array_equal(world["MAPPED"].numpy(), expected)
    with worldstore.open(path, storage={"temporal": "mapped"}) as world:  # read-only: served from RAM
        np.testing.assert_array_equal(world["MAPPED"].numpy(), expected)
    with worldstore.open(path, "r+", storage={"MAPPED": "mapped"}) as world:
        assert world["MAPPED"].storage == "mapped"
        np.testing.assert_array_equal(world["MAPPED"].numpy(), expected)
    with h5py.File(path, "r") as f:  # written back dense: the COO form is empty again
        assert f["layers/MAPPED_coords"].shape == (0, 2)
        np.testing.assert_array_equal(f["layers/MAPPED"][...], expected)


def test_automatic_switching_follows_density_with_hysteresis(tmp_path):
    with worldstore.create(tmp_path / "a.h5", temporal_spec(1.0, 0.5)) as world:
        auto = world["AUTO"]
        assert auto.storage == "mapped"
        world.step()  # empty: density 0 <= 0.3 / 2
        assert auto.storage == "sparse"
        cells = np.arange(H * W)[: int(0.4 * H * W)]
        world.deposit("AUTO", cells // W, cells % W, 1.0)
        world.step()  # density 0.4 > 0.3
        assert auto.storage == "mapped"
        half = cells[: int(0.2 * H * W)]
        rest = cells[len(half):]
        world.deposit("AUTO", rest // W, rest % W, -0.8)  # those cells now hold 0.2 < threshold
        world.step()  # density 12/63 = 0.19: below 0.3 but above 0.15, so it stays dense
        assert auto.nnz == len(half) and auto.storage == "mapped"
        world.deposit("AUTO", half[1:] // W, half[1:] % W, -0.8)
        world.step()  # density 1/63 <= 0.15
        assert auto.nnz == 1 and auto.storage == "sparse"
        np.testing.assert_array_equal(np.flatnonzero(auto.numpy()), [0])


def test_sparse_state_is_persisted_as_coo(tmp_path):
    path = tmp_path / "c.h5"
    with worldstore.create(path, temporal_spec(1.0, 0.0)) as world:
        world.deposit("SPARSE", [6, 0, 3], [8, 2, 3], [3.0, 1.0, 2.0])
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["layers/SPARSE_coords"][...], [[0, 2], [3, 3], [6, 8]])
        np.testing.assert_array_equal(f["layers/SPARSE_values"][...], [1.0, 2.0, 3.0])
        assert f["layers/SPARSE_nnz"].shape == (3,)
        assert f["layers/SPARSE"].attrs["storage"] == "sparse"
        assert not f["layers/SPARSE"][...].any()  # the dense form is zero while sparse
    info = worldstore.inspect(path)
    sparse = next(layer for layer in info["layers"] if layer["name"] == "SPARSE")
    assert sparse["storage"] == "sparse" and sparse["nnz"] == 3
    assert sparse["density"] == pytest.approx(3 / (H * W))


@needs_torch
@pytest.mark.parametrize("kind", ["mapped", "memory", "sparse"])
def test_dense_reads_sparse_tensors_and_windows(tmp_path, kind):
    rng = np.random.default_rng(11)
    with worldstore.create(tmp_path / "w.h5", temporal_spec(1.0, 0.0)) as world:
        world.set_storage("MAPPED", kind)
        world.deposit("MAPPED", rng.integers(0, H, 25), rng.integers(0, W, 25), rng.uniform(1, 2, 25))
        layer = world["MAPPED"]
        dense = layer.numpy().copy()
        assert torch.equal(layer.tensor(), torch.from_numpy(dense))
        sparse = layer.sparse_tensor()
        assert sparse.is_sparse and sparse.is_coalesced()
        assert torch.equal(sparse.to_dense(), torch.from_numpy(dense))
        coords, values = layer.coo()
        np.testing.assert_array_equal(coords, np.argwhere(dense))
        for rows, cols in [(slice(0, 3), slice(0, 4)), (slice(5, 7), slice(7, 9)), (slice(-2, None), slice(None)),
                           (slice(3, 3), slice(0, 9)), (slice(0, 100), slice(2, 50))]:
            np.testing.assert_array_equal(layer.window(rows, cols), dense[rows, cols])


@needs_torch
def test_deposit_accepts_torch_and_scalars(tmp_path):
    with worldstore.create(tmp_path / "t.h5", temporal_spec(1.0, 0.0)) as world:
        world.deposit("SPARSE", torch.tensor([1, 2]), torch.tensor([3, 4]), torch.tensor([0.5, 1.5]))
        world.deposit("MAPPED", [1, 2], [3, 4], 2.0)
        assert world["SPARSE"][2, 4] == 1.5 and world["MAPPED"][1, 3] == 2.0


# -- bad input -----------------------------------------------------------------

@pytest.mark.parametrize("name, args, kwargs, message", [
    ("SPARSE", ([0, H], [0, 0], [1.0, 1.0]), {}, "outside"),
    ("MAPPED", ([-1], [0], [1.0]), {}, "outside"),
    ("MEMORY", ([0], [W], [1.0]), {}, "outside"),
    ("SPARSE", ([0, 1], [0], [1.0, 1.0]), {}, "differ in length"),
    ("MAPPED", ([0, 1], [0, 1], [1.0]), {}, "do not match"),
    ("MEMORY", ([0, 1], [0, 1], [1.0, np.nan]), {}, "nan"),
    ("SPARSE", ([0, 1], [0, 1], [np.inf, 1.0]), {}, "inf"),
    ("MAPPED", ([0], [0], [1e6]), {}, ""),  # fits float32: accepted (control)
    ("SPARSE", ([0.5], [0], [1.0]), {}, "integers"),
    ("MAPPED", ([[0]], [[0]], [[1.0]]), {}, "1-D"),
    ("SPARSE", ([0], [0], [1.0]), {"mode": "multiply"}, "'multiply'"),
    ("RESOURCES", ([0], [0], [1.0]), {}, "resource layer"),
])
def test_bad_deposits_change_nothing(tmp_path, name, args, kwargs, message):
    with worldstore.create(tmp_path / "b.h5", temporal_spec(0.9, 0.0)) as world:
        world.deposit("SPARSE", [1], [1], [4.0])
        before = {layer: world[layer].numpy().copy() for layer in world}
        if not message:
            world.deposit(name, *args, **kwargs)
            return
        with pytest.raises(worldstore.DepositError, match=message) as info:
            world.deposit(name, *args, **kwargs)
        assert isinstance(info.value, ValueError)
        for layer in world:
            np.testing.assert_array_equal(world[layer].numpy(), before[layer], err_msg=layer)


def test_unknown_layer_and_read_only_world(tmp_path):
    path = tmp_path / "u.h5"
    worldstore.create(path, temporal_spec(0.9, 0.0)).close()
    with worldstore.open(path, "r+") as world:
        with pytest.raises(worldstore.LayerNotFoundError):
            world.deposit("NOPE", [0], [0], [1.0])
        with pytest.raises(worldstore.DepositError, match="deposit"):
            world["SPARSE"][0, 0] = 1.0
    with worldstore.open(path) as world:
        with pytest.raises(worldstore.ReadOnlyWorldError):
            world.deposit("SPARSE", [0], [0], [1.0])
        with pytest.raises(worldstore.ReadOnlyWorldError):
            world.set_storage("SPARSE", "mapped")


@pytest.mark.parametrize("overrides, message", [
    ({"decay": -1e-9}, "decay"), ({"decay": 1.01}, "decay"), ({"decay": -0.5}, "decay"),
    ({"threshold": -1e-3}, "threshold"), ({"switch_density": 0.0}, "switch_density"),
    ({"switch_density": 2.0}, "switch_density"), ({"fill_value": 1.0}, "fill_value"),
])
def test_bad_temporal_specs(overrides, message):
    with pytest.raises(worldstore.SpecError, match=message):
        LayerSpec("HEAT", "temporal", **overrides)


def test_sparse_storage_is_for_temporal_layers_only(tmp_path):
    with pytest.raises(worldstore.SpecError, match="temporal layers only"):
        LayerSpec("FOOD", "resource", storage="sparse")
    with worldstore.create(tmp_path / "x.h5", temporal_spec(0.9, 0.0)) as world:
        with pytest.raises(worldstore.SpecError, match="temporal layers only"):
            world.set_storage("RESOURCES", "sparse")


def test_a_world_left_open_at_exit_is_flushed_whole(tmp_path):
    """At interpreter exit worldstore closes open worlds before h5py shuts down (a half-done flush
    there once emptied sparse layers: resized COO datasets whose data was never written)."""
    from conftest import run_python

    path = tmp_path / "exit.h5"
    spec = WorldSpec(16, 16, 0, [LayerSpec("HEAT", "temporal", storage="sparse"),
                                 LayerSpec("FOOD", "resource", storage="memory")])
    worldstore.create(path, spec).close()
    proc = run_python("import sys, worldstore\n"
                      "w = worldstore.open(sys.argv[1], 'r+')\n"
                      "w.deposit('HEAT', [1, 2, 3], [4, 5, 6], [1.0, 2.0, 3.0])\n"
                      "w['FOOD'][2, 2] = 7.0\n", str(path))
    assert proc.returncode == 0, proc.stderr
    with worldstore.open(path) as world:
        assert world["HEAT"].nnz == 3 and float(world["HEAT"][3, 6]) == 3.0
        assert float(world["FOOD"][2, 2]) == 7.0


# -- AgentFarm's options (issue 16): clamp, ignore out-of-world cells, decay 0, step a subset, change rates ------
@pytest.mark.parametrize("kind", ["mapped", "memory", "sparse"])
def test_clip_and_out_of_bounds_options(tmp_path, kind):
    spec = WorldSpec(4, 4, 0, [LayerSpec("T", "temporal", decay=0.5, threshold=0.0, storage=kind)])
    with worldstore.create(tmp_path / "w.h5", spec) as world:
        world.deposit("T", [0, 0, 1, 9, -1], [0, 0, 1, 0, 2], [0.75, 0.75, -3.0, 1.0, 1.0], clip=(-1.0, 1.0),
                      out_of_bounds="ignore")
        assert world["T"][0, 0] == 1.0 and world["T"][1, 1] == -1.0 and world["T"].nnz == 2
        world.deposit("T", [0], [0], 5.0, mode="max", clip=(None, 2.0))
        world.deposit("T", [2], [2], 0.25, mode="set", clip=(0.5, None))
        assert world["T"][0, 0] == 2.0 and world["T"][2, 2] == 0.5
        for bad, match in ((dict(clip=(2, 1)), "above"), (dict(clip=(0, float("nan"))), "finite"),
                           (dict(clip=5), "pair"), (dict(out_of_bounds="clip"), "out_of_bounds"),
                           (dict(), "outside")):
            with pytest.raises(worldstore.DepositError, match=match):
                world.deposit("T", [0, 7], [0, 0], 1.0, **bad)
        assert world["T"][0, 0] == 2.0  # nothing changed


def test_decay_zero_step_subsets_and_set_decay(tmp_path):
    spec = WorldSpec(4, 4, 0, [LayerSpec("A", "temporal", decay=0.0, threshold=0.0),
                               LayerSpec("B", "temporal", decay=0.5, threshold=0.0, storage="sparse"),
                               LayerSpec("R", "resource")])
    path = tmp_path / "w.h5"
    with worldstore.create(path, spec) as world:
        world.deposit("A", [1], [1], 3.0)
        world.deposit("B", [1], [1], 3.0)
        assert world.step(layers="B") == 1 and world["A"][1, 1] == 3.0 and world["B"][1, 1] == 1.5
        assert world.step(layers=[]) == 2 and world["B"][1, 1] == 1.5
        world.step(layers=["A"])
        assert world["A"].nnz == 0
        with pytest.raises(worldstore.DecayError, match="'R' is a resource layer"):
            world.step(layers=["B", "R"])
        with pytest.raises(worldstore.LayerNotFoundError):
            world.step(layers=["NOPE"])
        assert world.current_step == 3 and world["B"][1, 1] == 1.5
        world.set_decay("B", 0.25)
        world.set_decay("A", threshold=0.5)
        for bad in (dict(decay=1.5), dict(decay=-0.1), dict(threshold=-1.0)):
            with pytest.raises(worldstore.DecayError):
                world.set_decay("B", **bad)
        with pytest.raises(worldstore.DecayError):
            world.set_decay("R", 0.5)
        world.step()
        assert world["B"][1, 1] == 0.375 and world.spec.layer("B").decay == 0.25
    with worldstore.open(path) as world:
        assert world["B"].spec.decay == 0.25 and world["A"].spec.threshold == 0.5 and world["A"].spec.decay == 0.0
