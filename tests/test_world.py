"""World and layer behaviour, with in-RAM numpy as the reference for every layer."""

from __future__ import annotations

import gc
import os

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import worldstore
from conftest import every_class_spec, needs_torch, run_python, torch

KINDS = ("mapped", "memory")


def random_values(rng: np.random.Generator, shape, dtype) -> np.ndarray:
    dtype = np.dtype(dtype)
    if dtype.kind == "b":
        return rng.random(shape) < 0.5
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return rng.integers(max(info.min, -1000), min(info.max, 1000), size=shape, endpoint=True).astype(dtype)
    return (rng.standard_normal(shape) * 10).astype(dtype)


def fill_world(world: worldstore.World, seed: int) -> dict[str, np.ndarray]:
    """Write random data into every layer through checked writes; return the reference."""
    rng = np.random.default_rng(seed)
    reference = {}
    for name, layer in world.layers.items():
        values = random_values(rng, layer.shape, layer.dtype)
        layer[...] = values
        reference[name] = values
    return reference


@pytest.mark.parametrize("kind", KINDS)
def test_round_trip_every_class_and_dtype(tmp_path, kind):
    path = tmp_path / "w.h5"
    spec = every_class_spec(storage=kind)
    with worldstore.create(path, spec) as world:
        assert {layer.storage for layer in world.layers.values()} == {kind}
        reference = fill_world(world, seed=1)
    for reopen_kind in KINDS:  # a file written with one kind reads the same with the other
        with worldstore.open(path, storage={c: reopen_kind for c in worldstore.GRID_CLASSES}) as world:
            for name, values in reference.items():
                layer = world[name]
                assert layer.storage == reopen_kind
                assert layer.dtype == values.dtype
                np.testing.assert_array_equal(layer.numpy(), values, err_msg=name)
    with h5py.File(path, "r") as f:  # and plain h5py reads the same bytes
        for name, values in reference.items():
            np.testing.assert_array_equal(f["layers"][name][...], values, err_msg=name)


@pytest.mark.parametrize("write_fill", [False, True])
@pytest.mark.parametrize("kind", KINDS)
def test_new_world_holds_fill_values(tmp_path, kind, write_fill):
    with worldstore.create(tmp_path / "w.h5", every_class_spec(storage=kind), write_fill=write_fill) as world:
        for layer in world.layers.values():
            assert (layer.numpy() == layer.fill_value).all(), layer.name
            assert layer.shape == world.spec.shape_of(layer.name)


def test_layer_shapes_follow_their_class(world_path):
    with worldstore.open(world_path) as world:
        assert world["RES_F32"].shape == (24, 20)
        assert world["MEMORY"].shape == (3, 24, 20)
        assert world["OBS"].shape == (3, 3, 5, 5)


def test_blocks_are_reserved_at_create(tmp_path):
    spec = worldstore.WorldSpec(512, 512, 0, [worldstore.LayerSpec("A", "resource"),
                                              worldstore.LayerSpec("B", "resource", "float32", 0.0)])
    path = tmp_path / "w.h5"
    worldstore.create(path, spec).close()
    assert os.stat(path).st_blocks * 512 >= 2 * 512 * 512 * 4


@needs_torch
@pytest.mark.parametrize("kind", KINDS)
def test_tensor_is_zero_copy_and_persists(tmp_path, kind):
    path = tmp_path / "w.h5"
    with worldstore.create(path, every_class_spec(storage=kind)) as world:
        layer = world["MEMORY"]
        tensor = layer.tensor()
        assert tensor.dtype == torch.float16 and tuple(tensor.shape) == layer.shape
        assert tensor.data_ptr() == layer.numpy().ctypes.data
        tensor[1, 2, 3] = 5.0
        assert layer[1, 2, 3] == 5.0
        world["OBSTACLES"].tensor()[0, 0] = True
    with worldstore.open(path) as world:
        assert world["MEMORY"][1, 2, 3] == 5.0
        assert world["OBSTACLES"][0, 0]


@needs_torch
@pytest.mark.parametrize("kind", KINDS)
def test_read_only_world_gives_read_only_views_and_private_tensors(world_path, kind):
    before = open(world_path, "rb").read()
    with worldstore.open(world_path, storage={c: kind for c in worldstore.GRID_CLASSES}) as world:
        view = world["RES_F32"].numpy()
        assert not view.flags.writeable
        with pytest.raises(ValueError):
            view[0, 0] = 1.0
        tensor = world["RES_F32"].tensor()
        tensor[0, 0] = 42.0  # must neither crash nor reach the file
        assert tensor[0, 0] == 42.0
        with pytest.raises(worldstore.ReadOnlyWorldError):
            world.step()
        world.flush()  # a no-op on a read-only world
    assert open(world_path, "rb").read() == before


def test_views_stay_valid_after_close(world_path):
    world = worldstore.open(world_path, "r+")
    view = world["RES_F32"].numpy()
    view[3, 4] = 9.0
    world.close()
    assert view[3, 4] == 9.0  # the mapping lives as long as the view
    del view
    gc.collect()
    with worldstore.open(world_path) as world:
        assert world["RES_F32"][3, 4] == 9.0
    with pytest.raises(worldstore.WorldClosedError):
        world["RES_F32"]
    world.close()  # closing twice is harmless


def test_step_decays_temporal_layers_and_advances_the_clock(world_path):
    with worldstore.open(world_path, "r+") as world:
        world["HEAT"][0, :4] = np.array([1.0, 0.3, 0.15, -0.5], dtype=np.float32)
        world["RES_F32"][0, 0] = 1.0
        assert world.step() == 1
        np.testing.assert_allclose(world["HEAT"][0, :4], [0.5, 0.15, 0.0, -0.25])
        assert world["RES_F32"][0, 0] == 1.0  # only temporal layers decay
        assert world.current_step == 1 and world.committed_step == 0
    with worldstore.open(world_path) as world:
        assert world.current_step == world.committed_step == 1
        np.testing.assert_allclose(world["HEAT"][0, :4], [0.5, 0.15, 0.0, -0.25])


def test_checked_writes_accept_what_fits(world_path):
    with worldstore.open(world_path, "r+") as world:
        world["TERRAIN_U8"][0, 0] = 255                      # python int in range
        world["TERRAIN_U8"][1] = np.arange(20, dtype=np.int64)  # int64 values that fit
        world["RES_F32"][2:4, 2:4] = np.ones((2, 2))         # float64 into float32 (same kind)
        world["OBSTACLES"][world["TERRAIN_U8"].numpy() > 10] = True  # boolean mask, scalar
        world["MEMORY"][0] = torch.full((24, 20), 2.0) if torch is not None else 2.0  # a torch tensor, with torch
        assert world["TERRAIN_U8"][0, 0] == 255
        assert world["TERRAIN_U8"][1, 19] == 19
        assert world["RES_F32"][3, 3] == 1.0
        assert world["OBSTACLES"][1, 11] and not world["OBSTACLES"][1, 3]
        assert (world["MEMORY"][0] == 2.0).all()


def test_world_and_layer_reprs_say_what_they_hold(world_path):
    with worldstore.open(world_path) as world:
        assert repr(world).startswith('<worldstore world "') and "24x20" in repr(world)
        assert repr(world["MEMORY"]) == '<worldstore layer "MEMORY": agent, shape (3, 24, 20), float16, mapped>'
        assert list(world) == list(world.spec.layer_names)
        assert "OBS" in world and "NOPE" not in world


def test_describe_reports_every_layer(world_path):
    info = worldstore.inspect(world_path)
    assert info["schema"] == "worldstore.inspect/1"
    assert (info["height"], info["width"], info["agents"]) == (24, 20, 3)
    names = [layer["name"] for layer in info["layers"]]
    assert names == list(every_class_spec().layer_names)
    obs = info["layers"][-1]
    assert obs["channels"] == ["RES_F32", "OBSTACLES", "MEMORY"] and obs["radius"] == 2
    assert obs["dims"] == ["agent", "OBS_channel", "OBS_dy", "OBS_dx"]
    heat = info["layers"][4]
    assert heat["decay"] == 0.5 and heat["threshold"] == 0.1
    for layer in info["layers"]:
        assert layer["bytes_on_disk"] == layer["bytes"] > 0


def test_file_follows_the_conventions(world_path):
    with open(world_path, "rb") as raw:
        assert raw.read(9)[8] == 3  # superblock version 3: SWMR-capable, readable by HDF5 1.10
    with h5py.File(world_path, "r") as f:
        assert f.attrs["worldstore_format"] == "worldstore"
        layer = f["layers/MEMORY"]
        assert [dim.label or layer.dims[i][0].name.rsplit("/", 1)[-1] for i, dim in enumerate(layer.dims)] \
            == ["agent", "y", "x"]
        assert layer.attrs["long_name"] == "MEMORY" and "_FillValue" in layer.attrs
        assert f["layers/y"].shape == (24,) and f["layers/x"].shape == (20,)
        dcpl = f["layers/RES_F32"].id.get_create_plist()
        assert dcpl.get_layout() == h5py.h5d.CONTIGUOUS and dcpl.get_nfilters() == 0


def test_memory_layers_are_written_at_flush(tmp_path):
    path = tmp_path / "w.h5"
    world = worldstore.create(path, every_class_spec(storage="memory"))
    world["RES_F32"][0, 0] = 7.0
    offset = world._file["layers/RES_F32"].id.get_offset()

    def first_value_in_file() -> float:
        with open(path, "rb") as raw:
            raw.seek(offset)
            return float(np.frombuffer(raw.read(4), dtype=np.float32)[0])

    assert first_value_in_file() == 0.0  # held in RAM until flush
    world.flush()
    assert first_value_in_file() == 7.0
    world.close()
    with h5py.File(path, "r") as f:
        assert f["layers/RES_F32"][0, 0] == 7.0


# -- equivalence on random operation sequences ------------------------------

SIZE = (9, 7)
AGENTS = 2


def small_spec(kind: str) -> worldstore.WorldSpec:
    layers = [
        worldstore.LayerSpec("F32", "resource", "float32"),
        worldstore.LayerSpec("F16", "temporal", "float16", decay=0.5, threshold=0.25),
        worldstore.LayerSpec("I32", "environment", "int32", 5),
        worldstore.LayerSpec("U8", "environment", "uint8"),
        worldstore.LayerSpec("B", "environment", "bool", True),
        worldstore.LayerSpec("AG", "agent", "float32"),
    ]
    return worldstore.WorldSpec(*SIZE, AGENTS, layers).with_storage({c: kind for c in worldstore.GRID_CLASSES})


LAYER_SHAPES = {"F32": SIZE, "F16": SIZE, "I32": SIZE, "U8": SIZE, "B": SIZE, "AG": (AGENTS, *SIZE)}


@st.composite
def operations(draw):
    name = draw(st.sampled_from(sorted(LAYER_SHAPES)))
    shape = LAYER_SHAPES[name]
    op = draw(st.sampled_from(["window", "scalar", "update", "scatter", "step", "flush", "reopen"]))
    lo = [draw(st.integers(0, n - 1)) for n in shape]
    hi = [draw(st.integers(a + 1, n)) for a, n in zip(lo, shape)]
    seed = draw(st.integers(0, 2**16))
    return op, name, tuple(slice(a, b) for a, b in zip(lo, hi)), seed


def apply(op, name, index, seed, arrays, layer=None):
    """Apply one operation to ``arrays[name]`` (the reference) or to a layer."""
    rng = np.random.default_rng(seed)
    target = arrays[name]
    dtype = target.dtype
    selection_shape = target[index].shape
    if op == "window":
        values = random_values(rng, selection_shape, dtype)
        if layer is None:
            target[index] = values
        else:
            layer[index] = values
    elif op == "scalar":
        value = random_values(rng, (), dtype)[()]
        if layer is None:
            target[index] = value
        else:
            layer[index] = value
    elif op == "update" and dtype.kind != "b":
        np.add(target, np.asarray(1, dtype=dtype), out=target)  # whole-layer elementwise update
    elif op == "scatter" and dtype.kind != "b":
        cells = tuple(rng.integers(0, n, size=20) for n in target.shape)
        np.add.at(target, cells, np.asarray(1, dtype=dtype))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(operations(), min_size=1, max_size=12))
def test_mapped_and_memory_match_numpy_on_random_operations(tmp_path_factory, ops):
    base = tmp_path_factory.mktemp("ops")
    reference = {name: np.full(shape, small_spec("mapped").layer(name).fill_value,
                               dtype=small_spec("mapped").layer(name).np_dtype)
                 for name, shape in LAYER_SHAPES.items()}
    worlds = {kind: worldstore.create(base / f"{kind}.h5", small_spec(kind)) for kind in KINDS}
    try:
        for op, name, index, seed in ops:
            if op in ("window", "scalar"):
                apply(op, name, index, seed, reference)
                for world in worlds.values():
                    apply(op, name, index, seed, {name: world[name].numpy()}, layer=world[name])
            elif op in ("update", "scatter"):
                for arrays in [reference] + [{name: w[name].numpy()} for w in worlds.values()]:
                    apply(op, name, index, seed, arrays)
            elif op == "step":
                f16 = reference["F16"]
                f16 *= np.float16(0.5)
                f16[np.abs(f16) < 0.25] = 0
                for world in worlds.values():
                    world.step()
            elif op == "flush":
                for world in worlds.values():
                    world.flush()
            elif op == "reopen":
                for kind in KINDS:
                    worlds[kind].close()
                    worlds[kind] = worldstore.open(base / f"{kind}.h5", "r+")
            for kind, world in worlds.items():
                for layer_name, expected in reference.items():
                    np.testing.assert_array_equal(world[layer_name].numpy(), expected,
                                                  err_msg=f"{kind} {layer_name} after {op}")
    finally:
        for world in worlds.values():
            world.close()
    for kind in KINDS:  # and the files hold the same after close
        with worldstore.open(base / f"{kind}.h5") as world:
            for layer_name, expected in reference.items():
                np.testing.assert_array_equal(world[layer_name].numpy(), expected)


def test_tensors_without_torch_name_the_extra(world_path):
    """Without torch (simulated: the import fails), a tensor asked for raises MissingExtraError naming the extra;
    everything else works."""
    code = ("import sys\n"
            "sys.modules['torch'] = None  # what 'import torch' meets where it is not installed\n"
            "import worldstore\n"
            "with worldstore.open(sys.argv[1]) as world:\n"
            "    for ask in (lambda: world['RES_F32'].tensor(), lambda: world['HEAT'].sparse_tensor(),\n"
            "                lambda: world.observe([[1, 1]], 1, ['RES_F32'], tensor=True)):\n"
            "        try:\n"
            "            ask()\n"
            "        except ImportError as exc:\n"
            "            print(type(exc).__name__, 'worldstore[torch]' in str(exc))\n"
            "    print(float(world['RES_F32'][0, 0]), world.observe([[1, 1]], 1, ['RES_F32']).shape)\n")
    proc = run_python(code, world_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["MissingExtraError True"] * 3 + ["0.0 (1, 1, 3, 3)"]
