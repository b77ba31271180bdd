"""observe() and remember() against the plain per-agent numpy reference (worldstore._windows)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import worldstore
from worldstore import LayerSpec, ObserveError, WorldSpec, _native, _windows
from worldstore.storage import sparse as sparse_module

from conftest import linux_only, needs_torch, torch

H, W, AGENTS = 9, 13, 5
#: One layer per source dtype, and a temporal layer per storage kind (with a non-zero pad).
SOURCES = {
    "F32": LayerSpec("F32", "resource", "float32", pad_value=-1.5),
    "F64": LayerSpec("F64", "resource", "float64", pad_value=2.25),
    "F16": LayerSpec("F16", "resource", "float16", pad_value=0.5),
    "BOOL": LayerSpec("BOOL", "environment", "bool", False, pad_value=True),
    "U8": LayerSpec("U8", "environment", "uint8", pad_value=7),
    "I32": LayerSpec("I32", "environment", "int32", pad_value=-3),
    "HEAT": LayerSpec("HEAT", "temporal", "float32", decay=0.5, threshold=0.0, storage="sparse", pad_value=9.0),
    "TRAIL": LayerSpec("TRAIL", "temporal", "float32", decay=0.5, threshold=0.0, storage="memory"),
    "MEM": LayerSpec("MEM", "agent", "float16", pad_value=-2.0),
}


def make_world(tmp_path, storage: str, seed: int = 0) -> worldstore.World:
    layers = list(SOURCES.values()) + [
        LayerSpec("VISIBILITY", "environment", "bool", True, pad_value=False),
        LayerSpec("OBS", "observation", "float32", channels=("F32", "HEAT", "MEM"), radius=2),
    ]
    spec = WorldSpec(H, W, AGENTS, layers).with_storage({"resource": storage, "environment": storage,
                                                          "agent": storage})
    world = worldstore.create(tmp_path / f"o-{storage}.h5", spec, overwrite=True)
    rng = np.random.default_rng(seed)
    for name, layer in world.layers.items():
        if layer.grid_class in ("resource", "environment", "agent") and name != "VISIBILITY":
            values = rng.uniform(-100, 100, layer.shape)
            world[name][...] = values.astype(layer.dtype) if layer.dtype != bool else values > 0
    cells = rng.choice(H * W, 40, replace=False)
    for name in ("HEAT", "TRAIL"):
        world.deposit(name, cells // W, cells % W, rng.uniform(-4, 4, 40).astype(np.float32))
    return world


def reference(world: worldstore.World, positions, radius: int, channels, agent_ids=None, dtype=np.float32):
    """The plain loop: every channel's dense numpy copy, padded per agent by slices."""
    positions = np.asarray(positions)
    sources = []
    for name in channels:
        array = np.asarray(world[name].numpy())
        if array.ndim == 3:
            ids = np.arange(len(positions)) if agent_ids is None else np.asarray(agent_ids)
            array = array[ids]
        sources.append((array, world[name].pad_value))
    return _windows.gather_channels(sources, positions, radius, dtype=dtype)


positions_strategy = st.lists(st.tuples(st.integers(0, H - 1), st.integers(0, W - 1)), min_size=AGENTS,
                              max_size=AGENTS)
corner_positions = [[0, 0], [0, W - 1], [H - 1, 0], [H - 1, W - 1], [H // 2, W // 2]]


@pytest.mark.parametrize("storage", ["mapped", "memory"])
@pytest.mark.parametrize("native", [True, False], ids=["compiled", "numpy"])
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(positions=positions_strategy, radius=st.integers(0, 7),
       channels=st.lists(st.sampled_from(sorted(SOURCES)), min_size=1, max_size=5),
       dtype=st.sampled_from(["float32", "float64", "float16"]), corners=st.booleans())
def test_observe_equals_the_reference(tmp_path, monkeypatch, storage, native, positions, radius, channels, dtype,
                                      corners):
    if not native:
        monkeypatch.setattr(_native, "library", None)
    positions = corner_positions if corners else positions
    with make_world(tmp_path, storage) as world:
        got = world.observe(positions, radius, channels, dtype=dtype)
        want = reference(world, positions, radius, channels, dtype=np.dtype(dtype))
        assert got.shape == (AGENTS, len(channels), 2 * radius + 1, 2 * radius + 1) and got.dtype == dtype
        np.testing.assert_array_equal(got, want)


def test_sparse_channel_reads_only_windows_and_merges_many_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(sparse_module, "_RUNS_PER_READ", 2)
    rng = np.random.default_rng(4)
    with make_world(tmp_path, "mapped") as world:
        for _ in range(6):  # six runs in the log
            cells = rng.choice(H * W, 5, replace=False)
            world.deposit("HEAT", cells // W, cells % W, 1.0)
        got = world.observe(corner_positions, 3, ["HEAT", "HEAT"])
        np.testing.assert_array_equal(got, reference(world, corner_positions, 3, ["HEAT", "HEAT"]))
        assert world["HEAT"].storage == "sparse"


def test_radius_larger_than_the_world_and_radius_zero(tmp_path):
    with make_world(tmp_path, "mapped") as world:
        for radius in (0, 1, 20):
            for channels in (["F32"], ["U8", "HEAT", "MEM"]):
                np.testing.assert_array_equal(world.observe(corner_positions, radius, channels),
                                              reference(world, corner_positions, radius, channels))


def test_agent_channel_reads_each_agents_own_layer_and_agent_ids_pick_it(tmp_path):
    with make_world(tmp_path, "mapped") as world:
        ids = [4, 0, 2]
        got = world.observe(corner_positions[:3], 2, ["MEM"], agent_ids=ids)
        np.testing.assert_array_equal(got, reference(world, corner_positions[:3], 2, ["MEM"], agent_ids=ids))
        assert got[0, 0, 2, 2] == np.float32(world["MEM"][4, 0, 0])


def test_defaults_come_from_the_observation_layer_and_into_writes_it(tmp_path):
    path = tmp_path / "o-mapped.h5"
    with make_world(tmp_path, "mapped") as world:
        batch = world.observe(corner_positions)
        assert batch.shape == world["OBS"].shape
        result = world.observe(corner_positions, into=True)
        assert np.shares_memory(result, world["OBS"].numpy())
        np.testing.assert_array_equal(world["OBS"].numpy(), batch)
        if torch is not None:  # tensor=True: the worldstore[torch] extra
            as_tensor = world.observe(corner_positions, into="OBS", tensor=True)
            assert isinstance(as_tensor, torch.Tensor) and as_tensor.data_ptr() == world["OBS"].numpy().ctypes.data
        expected = batch.copy()
    import h5py
    with h5py.File(path, "r") as f:  # what another process reads once the writer has flushed
        np.testing.assert_array_equal(f["layers/OBS"][...], expected)


@needs_torch
def test_numpy_and_torch_outputs_are_identical_and_buffers_are_reused(tmp_path):
    with make_world(tmp_path, "memory") as world:
        channels = ["F32", "BOOL", "HEAT", "MEM"]
        array = world.observe(corner_positions, 3, channels)
        tensor = world.observe(corner_positions, 3, channels, tensor=True)
        assert isinstance(tensor, torch.Tensor) and tensor.dtype == torch.float32
        np.testing.assert_array_equal(tensor.numpy(), array)
        buffer = np.full(array.shape, np.nan, np.float32)
        assert world.observe(corner_positions, 3, channels, out=buffer) is buffer
        np.testing.assert_array_equal(buffer, array)
        torch_buffer = torch.full(array.shape, float("nan"))
        assert world.observe(corner_positions, 3, channels, out=torch_buffer) is torch_buffer
        np.testing.assert_array_equal(torch_buffer.numpy(), array)
        positions = torch.tensor(corner_positions)
        np.testing.assert_array_equal(world.observe(positions, 3, channels), array)


def test_large_perception_radius_64(tmp_path):
    spec = WorldSpec(200, 150, 0, [LayerSpec("F", "resource", pad_value=-1.0)])
    rng = np.random.default_rng(1)
    with worldstore.create(tmp_path / "big.h5", spec) as world:
        world["F"][...] = rng.random((200, 150), dtype=np.float32)
        positions = np.stack([rng.integers(0, 200, 40), rng.integers(0, 150, 40)], axis=1)
        got = world.observe(positions, 64, ["F"])
        np.testing.assert_array_equal(got, reference(world, positions, 64, ["F"]))


@pytest.mark.parametrize("call, error, message", [
    (dict(positions=[[0, 0], [H, 0]]), ObserveError, "outside"),
    (dict(positions=[[0, -1]]), ObserveError, "outside"),
    (dict(positions=[0, 0]), ObserveError, "shape (N, 2)"),
    (dict(positions=[[0, 0, 0]]), ObserveError, "shape (N, 2)"),
    (dict(positions=[[0.0, 1.0]]), ObserveError, "integers"),
    (dict(radius=-1), ObserveError, "radius must be an integer >= 0"),
    (dict(radius=1.5), ObserveError, "radius must be an integer >= 0"),
    (dict(channels=["NOPE"]), worldstore.LayerNotFoundError, "NOPE"),
    (dict(channels=["OBS"]), ObserveError, "observation layer"),
    (dict(channels=[]), ObserveError, "at least one channel"),
    (dict(positions=[[0, 0]] * 3, channels=["MEM"]), ObserveError, "one position per agent"),
    (dict(agent_ids=[0, 1, 2, 3, 9], channels=["MEM"]), ObserveError, "agent_ids must lie in"),
    (dict(dtype="int32"), ObserveError, "dtype must be one of"),
    (dict(out=np.zeros((AGENTS, 1, 3, 3), np.float32)), ObserveError, "out must be an array of shape"),
    (dict(into="F32"), ObserveError, "not an observation layer"),
    (dict(into=True, radius=1), ObserveError, "holds"),
])
def test_bad_input_is_refused_before_anything_is_written(tmp_path, call, error, message):
    with make_world(tmp_path, "mapped") as world:
        arguments = dict(positions=corner_positions, radius=2, channels=["F32", "HEAT", "MEM"])
        arguments.update(call)
        before = world["OBS"].numpy().copy()
        out = np.full((AGENTS, 3, 5, 5), 123.0, np.float32)
        if not {"out", "into", "dtype"} & set(call):
            arguments["out"] = out
        with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
            world.observe(**arguments)
        assert (out == 123.0).all()
        np.testing.assert_array_equal(world["OBS"].numpy(), before)


# -- remember ---------------------------------------------------------------------------------
def remember_reference(memory, source, visible, agent_ids, positions, radius):
    memory = memory.copy()
    height, width = source.shape
    for agent, (y, x) in zip(agent_ids, positions):
        for yy in range(max(0, y - radius), min(height, y + radius + 1)):
            for xx in range(max(0, x - radius), min(width, x + radius + 1)):
                if visible is None or visible[yy, xx]:
                    memory[agent, yy, xx] = source[yy, xx]
    return memory


@pytest.mark.parametrize("storage", ["mapped", "memory"])
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(positions=positions_strategy, radius=st.integers(0, 5), source=st.sampled_from(["F32", "F64", "HEAT", "U8"]),
       seed=st.integers(0, 1000), use_visibility=st.booleans())
def test_remember_then_observe_equals_the_reference(tmp_path, storage, positions, radius, source, seed,
                                                    use_visibility):
    rng = np.random.default_rng(seed)
    with make_world(tmp_path, storage) as world:
        world["VISIBILITY"][...] = rng.random((H, W)) < 0.6
        ids = list(rng.permutation(AGENTS))
        before = world["MEM"].numpy().copy()
        visible = world["VISIBILITY"].numpy().copy() if use_visibility else None
        want = remember_reference(before, world[source].numpy(), visible, ids, positions, radius)
        world.remember(ids, positions, radius, {"MEM": source}, visibility="VISIBILITY" if use_visibility else None)
        np.testing.assert_array_equal(world["MEM"].numpy(), want)
        got = world.observe(positions, radius, ["MEM"], agent_ids=ids)
        np.testing.assert_array_equal(got, reference(world, positions, radius, ["MEM"], agent_ids=ids))


@pytest.mark.parametrize("call, error, message", [
    (dict(agent_ids=[0, 0, 1, 2, 3]), ObserveError, "distinct"),
    (dict(agent_ids=[0, 1]), ObserveError, "agent_ids must be 5 integers"),
    (dict(positions=[[0, 0]] * 4 + [[H, 0]]), ObserveError, "outside"),
    (dict(radius=-2), ObserveError, "radius"),
    (dict(channels={"F32": "F64"}), ObserveError, "writes agent layers"),
    (dict(channels={"MEM": "MEM"}), ObserveError, "shape (H, W)"),
    (dict(channels={"MEM": "NOPE"}), worldstore.LayerNotFoundError, "NOPE"),
    (dict(channels="MEM"), ObserveError, "mapping"),
    (dict(visibility="NOPE"), worldstore.LayerNotFoundError, "NOPE"),
])
def test_remember_refuses_bad_input_and_writes_nothing(tmp_path, call, error, message):
    with make_world(tmp_path, "mapped") as world:
        arguments = dict(agent_ids=list(range(AGENTS)), positions=corner_positions, radius=1, channels={"MEM": "F32"})
        arguments.update(call)
        before = world["MEM"].numpy().copy()
        with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
            world.remember(**arguments)
        np.testing.assert_array_equal(world["MEM"].numpy(), before)


@linux_only
def test_many_agents_with_large_mapped_memories_touch_only_what_they_see(tmp_path):
    """1,000 agents x 512 x 512 float16 agent layers (0.5 GiB, mapped): RSS grows with the windows seen."""
    spec = WorldSpec(512, 512, 1000, [LayerSpec("FOOD", "resource"), LayerSpec("MEM", "agent", "float16")])
    rng = np.random.default_rng(2)
    with worldstore.create(tmp_path / "agents.h5", spec) as world:
        assert world["MEM"].storage == "mapped"
        world["FOOD"][...] = 1.0
        positions = np.stack([rng.integers(0, 512, 1000), rng.integers(0, 512, 1000)], axis=1)
        before = _rss_anon()
        world.remember(np.arange(1000), positions, 8, {"MEM": "FOOD"})
        grown = _rss_anon() - before
        seen = world.observe(positions, 8, ["MEM"])
        assert (seen[:, 0, 8, 8] == 1.0).all()
    assert grown < 64 << 20, f"anonymous memory grew by {grown / 2**20:.0f} MiB for a 0.5 GiB mapped layer"


def _rss_anon() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    return 0


@needs_torch
@pytest.mark.skipif(torch is None or not torch.cuda.is_available(), reason="no CUDA device here: the GPU path "
                    "(pinned buffer, asynchronous copy) runs on machines with one")
def test_cuda_delivery_through_pinned_memory(tmp_path):
    with make_world(tmp_path, "mapped") as world:
        channels = ["F32", "HEAT", "MEM"]
        on_gpu = world.observe(corner_positions, 2, channels, device="cuda")
        assert on_gpu.is_cuda
        np.testing.assert_array_equal(on_gpu.cpu().numpy(), world.observe(corner_positions, 2, channels))
        out = torch.empty(on_gpu.shape, device="cuda")
        assert world.observe(corner_positions, 2, channels, device="cuda", out=out) is out
        torch.cuda.synchronize()
        assert torch.equal(out, on_gpu)


@pytest.mark.parametrize("threads, chunk_rows", [(2, 1), (3, 100), (7, 1), (2, 1 << 20)])
def test_threads_split_agents_and_give_the_same_batch(tmp_path, monkeypatch, threads, chunk_rows):
    """Threads take chunks of agents (one agent each with chunk_rows=1; 100 rows: an agent or two): same batch."""
    if _native.library is None:
        pytest.skip("the C kernels were not built: the numpy path has no threads")
    monkeypatch.setattr(_native, "threads", threads)
    monkeypatch.setattr(_native, "THREADED_BYTES", 0)
    monkeypatch.setattr(_native, "CHUNK_ROWS", chunk_rows)
    rng = np.random.default_rng(threads)
    positions = np.stack([rng.integers(0, H, 11), rng.integers(0, W, 11)], axis=1)
    with make_world(tmp_path, "mapped") as world:
        channels = ["F32", "F16", "U8", "I32", "HEAT", "F64"]
        np.testing.assert_array_equal(world.observe(positions, 4, channels),
                                      reference(world, positions, 4, channels))
        ids = rng.permutation(AGENTS)
        np.testing.assert_array_equal(world.observe(positions[:AGENTS], 4, ["MEM", "F32"], agent_ids=ids),
                                      reference(world, positions[:AGENTS], 4, ["MEM", "F32"], agent_ids=ids))


# -- normalize/clip per channel, bfloat16, into= with agent slots (issue 16) ------------------------------------
def test_normalize_and_clip_per_channel_against_the_reference(tmp_path):
    spec = WorldSpec(6, 5, 3, [LayerSpec("FOOD", "resource", pad_value=0.0), LayerSpec("WALL", "environment",
                                                                                         pad_value=1.0)])
    rng = np.random.default_rng(3)
    with worldstore.create(tmp_path / "w.h5", spec) as world:
        world["FOOD"][...] = rng.uniform(0, 10, (6, 5))
        world["WALL"][...] = rng.uniform(0, 1, (6, 5))
        positions = np.array([[0, 0], [3, 2], [5, 4]])
        got = world.observe(positions, 2, ["FOOD", "WALL"], normalize={"FOOD": 4.0}, clip={"FOOD": (0, 1),
                                                                                             "WALL": (None, 0.5)})
        food = np.clip(_windows.gather_windows(world["FOOD"][...], positions, 2, 0.0) / np.float32(4.0), 0, 1)
        wall = np.minimum(_windows.gather_windows(world["WALL"][...], positions, 2, 1.0), 0.5)
        np.testing.assert_array_equal(got[:, 0], food)
        np.testing.assert_array_equal(got[:, 1], wall)
        for bad, match in (({"normalize": {"FOOD": 0}}, "> 0"), ({"normalize": {"NOPE": 1}}, "not one of"),
                           ({"clip": {"FOOD": (2, 1)}}, "above"), ({"clip": {"FOOD": 1}}, "pair"),
                           ({"normalize": 4.0}, "mapping"), ({"dtype": "int8"}, "bfloat16"),
                           ({"dtype": np.complex64}, "floating")):
            with pytest.raises(worldstore.ObserveError, match=match):
                world.observe(positions, 2, ["FOOD", "WALL"], **bad)


def test_into_with_agent_ids_writes_those_slots_only(tmp_path):
    spec = WorldSpec(6, 6, 4, [LayerSpec("FOOD", "resource"), LayerSpec("MEM", "agent"),
                               LayerSpec("OBS", "observation", channels=("FOOD", "MEM"), radius=1)])
    with worldstore.create(tmp_path / "w.h5", spec) as world:
        world["FOOD"][...] = 1.0
        world["MEM"].numpy()[2] = 7.0
        world["OBS"].numpy()[...] = -5.0
        batch = world.observe([[2, 2]], agent_ids=[2], into=True)
        assert batch.shape == (1, 2, 3, 3) and (batch[0, 1] == 7.0).all()
        np.testing.assert_array_equal(world["OBS"][2], batch[0])
        assert (world["OBS"][[0, 1, 3]] == -5.0).all()
        with pytest.raises(worldstore.ObserveError, match="distinct"):
            world.observe([[2, 2], [1, 1]], agent_ids=[2, 2], into=True)
        with pytest.raises(worldstore.ObserveError, match="pass agent_ids"):
            world.observe([[2, 2]], into=True)


@needs_torch
def test_bfloat16_output(tmp_path):
    spec = WorldSpec(5, 5, 0, [LayerSpec("FOOD", "resource")])
    with worldstore.create(tmp_path / "w.h5", spec) as world:
        world["FOOD"][...] = np.arange(25, dtype=np.float32).reshape(5, 5) / 7
        positions = [[0, 0], [2, 3]]
        reference = torch.from_numpy(world.observe(positions, 1, ["FOOD"])).to(torch.bfloat16)
        assert torch.equal(world.observe(positions, 1, ["FOOD"], dtype=torch.bfloat16), reference)
        out = torch.empty((2, 1, 3, 3), dtype=torch.bfloat16)
        assert world.observe(positions, 1, ["FOOD"], out=out) is out and torch.equal(out, reference)
        assert world.observe(positions, 1, ["FOOD"], dtype=torch.float64).dtype == np.float64
        with pytest.raises(worldstore.ObserveError, match="bfloat16"):
            world.observe(positions, 1, ["FOOD"], dtype=torch.bfloat16, out=torch.empty((2, 1, 3, 3)))
        with pytest.raises(worldstore.ObserveError, match="shape"):
            world.observe(positions, 1, ["FOOD"], out=torch.empty((1, 1, 3, 3), dtype=torch.bfloat16))
