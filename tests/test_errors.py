"""Bad input: a specific error naming the problem, the file unchanged, never a crash."""

from __future__ import annotations

import os

import h5py
import numpy as np
import pytest

import worldstore
from worldstore import LayerSpec, SpecError, WorldSpec
from conftest import digest, every_class_spec, held_open, run_python


# -- writes -------------------------------------------------------------------

@pytest.mark.parametrize("name, values, message", [
    ("OBSTACLES", np.ones((2, 2)), "float64"),
    ("TERRAIN_U8", np.full((2, 2), 1.5), "float64"),
    ("TERRAIN_U8", np.full((2, 2), 300), "uint8"),
    ("TERRAIN_U8", -1, "uint8"),
    ("RES_I32", 2.5, "int32"),
    ("HEAT16", np.full((2, 2), 1e6), "overflow"),
    ("RES_F32", np.full((2, 2), "a"), "<U1"),
    ("RES_F32", np.ones((2, 2), dtype=np.complex64), "complex64"),
])
def test_wrong_dtype_writes_change_nothing(world_path, name, values, message):
    with worldstore.open(world_path, "r+") as world:
        before = world[name].numpy().copy()
        with pytest.raises(worldstore.LayerDtypeError, match=message) as info:
            world[name][:2, :2] = values
        assert isinstance(info.value, TypeError) and name in str(info.value)
        np.testing.assert_array_equal(world[name].numpy(), before)


@pytest.mark.parametrize("index, shape", [((slice(0, 2), slice(0, 2)), (3, 3)),
                                          ((0,), (19,)),
                                          ((Ellipsis,), (20, 24))])
def test_wrong_shape_writes_change_nothing(world_path, index, shape):
    with worldstore.open(world_path, "r+") as world:
        before = world["RES_F32"].numpy().copy()
        with pytest.raises(worldstore.LayerShapeError, match=r"shape \(") as info:
            world["RES_F32"][index] = np.ones(shape, dtype=np.float32)
        assert isinstance(info.value, ValueError)
        np.testing.assert_array_equal(world["RES_F32"].numpy(), before)


def test_unknown_layer_names_list_the_known_ones(world_path):
    with worldstore.open(world_path) as world:
        with pytest.raises(worldstore.LayerNotFoundError) as info:
            world["NOPE"]
        assert isinstance(info.value, KeyError)
        assert "'NOPE'" in str(info.value) and "RES_F32" in str(info.value)


def test_read_only_and_closed_worlds_refuse(world_path):
    before = digest(world_path)
    world = worldstore.open(world_path)
    with pytest.raises(worldstore.ReadOnlyWorldError, match="r\\+"):
        world["RES_F32"][0, 0] = 1.0
    layer = world["RES_F32"]
    world.close()
    with pytest.raises(worldstore.WorldClosedError):
        layer.numpy()
    with pytest.raises(worldstore.WorldClosedError):
        world.flush()
    assert digest(world_path) == before


# -- specs --------------------------------------------------------------------

def layer(**overrides):
    fields = {"name": "A", "grid_class": "resource"}
    fields.update(overrides)
    return LayerSpec(**fields)


@pytest.mark.parametrize("build, message", [
    (lambda: WorldSpec(0, 8, 0, [layer()]), "height"),
    (lambda: WorldSpec(8, -3, 0, [layer()]), "width"),
    (lambda: WorldSpec(8, 8, -1, [layer()]), "agents"),
    (lambda: WorldSpec(8, 8, 0, [layer(grid_class="agent")]), "agents >= 1"),
    (lambda: WorldSpec(8, 8, 0, []), "at least one layer"),
    (lambda: WorldSpec(8, 8, 0, [layer(), layer()]), "duplicate layer names: A"),
    (lambda: layer(grid_class="weather"), "'weather'"),
    (lambda: layer(storage="disk"), "'disk'"),
    (lambda: layer(dtype="complex64"), "complex64"),
    (lambda: layer(dtype="object"), "object"),
    (lambda: layer(dtype="nonsense"), "'nonsense'"),
    (lambda: layer(dtype="uint8", fill_value=300), "300"),
    (lambda: layer(dtype="int32", fill_value=1.5), "1.5"),
    (lambda: layer(fill_value=float("nan")), "nan"),
    (lambda: layer(dtype="bool", pad_value=2), "pad_value"),
    (lambda: layer(grid_class="temporal", decay=-0.1), "decay"),
    (lambda: layer(grid_class="temporal", decay=1.5), "1.5"),
    (lambda: layer(grid_class="temporal", threshold=-0.1), "-0.1"),
    (lambda: layer(grid_class="temporal", dtype="int32"), "float"),
    (lambda: layer(decay=0.5), "temporal layers only"),
    (lambda: layer(grid_class="observation", radius=2), "channels"),
    (lambda: layer(grid_class="observation", channels=("B",), radius=-1), "-1"),
    (lambda: WorldSpec(8, 8, 1, [layer(grid_class="observation", channels=("B",), radius=1)]), "'B'"),
    (lambda: layer(name=""), "''"),
    (lambda: layer(name="a/b"), "'a/b'"),
    (lambda: layer(name="1abc"), "'1abc'"),
    (lambda: layer(name="y"), "reserved"),
    (lambda: layer(name="agent"), "reserved"),
])
def test_invalid_specs_are_refused(build, message):
    with pytest.raises(SpecError, match=message.replace("(", r"\(").replace(".", r"\.")) as info:
        build()
    assert isinstance(info.value, ValueError)


# -- opening ------------------------------------------------------------------

def test_missing_path(tmp_path):
    with pytest.raises(worldstore.WorldNotFoundError) as info:
        worldstore.open(tmp_path / "absent.h5")
    assert isinstance(info.value, FileNotFoundError) and "absent.h5" in str(info.value)


def test_bad_mode(world_path):
    with pytest.raises(ValueError, match="'w'"):
        worldstore.open(world_path, "w")


def make_empty(path):
    open(path, "wb").close()


def make_text(path):
    with open(path, "w") as f:
        f.write("resources,obstacles\n1,0\n" * 100)


def make_foreign_hdf5(path):
    with h5py.File(path, "w") as f:
        f["data"] = np.arange(10)


def make_directory(path):
    os.mkdir(path)


@pytest.mark.parametrize("make, message", [
    (make_empty, "empty"),
    (make_text, "not an HDF5 file"),
    (make_foreign_hdf5, "not a worldstore world"),
    (make_directory, "directory"),
])
def test_files_that_are_not_worlds(tmp_path, make, message):
    path = str(tmp_path / "thing.h5")
    make(path)
    before = None if os.path.isdir(path) else digest(path)
    with pytest.raises(worldstore.WorldFormatError, match=message) as info:
        worldstore.open(path, "r+")
    assert isinstance(info.value, OSError)
    if before is not None:
        assert digest(path) == before


def edit_attribute(path, where, name, value):
    with h5py.File(path, "r+") as f:
        f[where].attrs[name] = value


@pytest.mark.parametrize("where, name, value, error, message", [
    ("/", "worldstore_format_version", 999, worldstore.WorldVersionError, "999"),
    ("/", "worldstore_format", "zarr", worldstore.WorldFormatError, "'zarr'"),
    ("/", "height", "tall", worldstore.WorldFormatError, "height"),
    ("/", "height", 25, worldstore.WorldFormatError, "shape"),
    ("/layers/OBS", "channels", "not json", worldstore.WorldFormatError, "JSON"),
    ("/layers/OBS", "channels", '["RES_F32", "NOPE"]', worldstore.WorldFormatError, "'NOPE'"),
    ("/layers/RES_F32", "grid_class", "weather", worldstore.WorldFormatError, "'weather'"),
    ("/layers/HEAT", "decay", 7.0, worldstore.WorldFormatError, "decay"),
])
def test_worlds_with_bad_attributes(world_path, where, name, value, error, message):
    edit_attribute(world_path, where, name, value)
    before = digest(world_path)
    with pytest.raises(error, match=message):
        worldstore.open(world_path, "r+")
    assert digest(world_path) == before


def test_a_layer_moved_past_the_end_of_the_file_is_refused_before_mapping(world_path):
    """A dataset whose recorded extent runs past the end of the file (chopped raw data)."""
    with h5py.File(world_path, "r") as f:
        dset = f["layers/MEMORY"]
        end = dset.id.get_offset() + dset.id.get_storage_size()
    size = os.path.getsize(world_path)
    assert end <= size
    # HDF5 itself refuses files shorter than its recorded end-of-file; our own
    # check is the second line of defence, exercised on a file HDF5 accepts:
    # the opener must never map bytes that do not exist.
    code = """
import sys, worldstore, worldstore._schema as s
real = s.layer_extent
def shrunk(dset, file_size, where):
    return real(dset, file_size // 2, where)
s.layer_extent = shrunk
try:
    worldstore.open(sys.argv[1])
except worldstore.WorldFormatError as exc:
    print(type(exc).__name__, exc)
"""
    result = run_python(code, world_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("WorldFormatError") and "beyond the end" in result.stdout


@pytest.mark.parametrize("fraction", [0.001, 0.01, 0.3, 0.5, 0.9, 0.999])
def test_truncated_worlds_fail_cleanly_in_a_subprocess(world_path, tmp_path, fraction):
    size = os.path.getsize(world_path)
    cut = str(tmp_path / "cut.h5")
    with open(world_path, "rb") as src, open(cut, "wb") as dst:
        dst.write(src.read(max(1, int(size * fraction))))
    before = digest(cut)
    code = """
import sys, worldstore
try:
    with worldstore.open(sys.argv[1]) as world:
        for layer in world.layers.values():
            layer.numpy().sum()
    print("opened")
except worldstore.WorldstoreError as exc:
    print(type(exc).__name__)
"""
    result = run_python(code, cut)
    assert result.returncode == 0, f"child died with {result.returncode}: {result.stderr[-2000:]}"
    assert result.stdout.strip() == "WorldFormatError"
    assert digest(cut) == before


# -- creating -----------------------------------------------------------------

def test_create_refuses_to_overwrite(world_path):
    before = digest(world_path)
    with pytest.raises(worldstore.WorldExistsError) as info:
        worldstore.create(world_path, every_class_spec())
    assert isinstance(info.value, FileExistsError) and "overwrite=True" in str(info.value)
    assert digest(world_path) == before


def test_create_into_a_missing_directory(tmp_path):
    with pytest.raises(worldstore.WorldNotFoundError, match="directory"):
        worldstore.create(tmp_path / "no" / "such" / "w.h5", every_class_spec())


def test_failed_create_leaves_no_file_and_keeps_the_old_one(tmp_path, monkeypatch, world_path):
    before = digest(world_path)
    listing = sorted(os.listdir(tmp_path))

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(worldstore._platform, "reserve_blocks", fail)
    with pytest.raises(worldstore.DiskFullError, match="reserve"):
        worldstore.create(world_path, every_class_spec(), overwrite=True)
    with pytest.raises(worldstore.DiskFullError):
        worldstore.create(tmp_path / "new.h5", every_class_spec())
    assert sorted(os.listdir(tmp_path)) == listing
    assert digest(world_path) == before


def test_create_needs_a_spec(tmp_path):
    with pytest.raises(TypeError, match="WorldSpec"):
        worldstore.create(tmp_path / "w.h5", {"height": 8})


def test_a_second_writer_gets_world_locked_error(world_path):
    with held_open(world_path) as holder:
        for mode, says in (("r+", "held open"), ("r", "not in SWMR mode")):
            with pytest.raises(worldstore.WorldLockedError, match=says) as info:
                worldstore.open(world_path, mode)
            assert world_path in str(info.value) and isinstance(info.value, OSError)
    assert holder.returncode == 0
    worldstore.open(world_path, "r+").close()  # released: opens again


# -- a layer HDF5 stores chunked (rewritten by h5repack, say) --------------------

def test_a_chunked_layer_cannot_be_mapped_and_the_errors_say_what_to_do(tmp_path):
    path = str(tmp_path / "w.h5")
    with worldstore.create(path, every_class_spec()) as world:
        world["RES_F32"][...] = np.arange(24 * 20, dtype=np.float32).reshape(24, 20)
        before = world["RES_F32"].numpy().copy()
    with h5py.File(path, "r+") as f:  # the layer's bytes rewritten chunked, its attributes kept
        data, attrs = f["layers/RES_F32"][...], dict(f["layers/RES_F32"].attrs)
        del f["layers/RES_F32"]
        dset = f["layers"].create_dataset("RES_F32", data=data, chunks=(8, 8), compression="gzip")
        dset.attrs.update({key: value for key, value in attrs.items() if key != "DIMENSION_LIST"})
    unchanged = digest(path)
    with pytest.raises(worldstore.WorldFormatError, match=r"'RES_F32' is stored chunked or compressed "
                       r"\(for example by h5repack\) and cannot be mapped; open with storage=\{'RES_F32': "
                       r"'memory'\}"):
        worldstore.open(path, "r+")
    assert digest(path) == unchanged
    with worldstore.open(path, "r+", storage={"RES_F32": "memory"}) as world:
        with pytest.raises(worldstore.WorldFormatError, match="'RES_F32' is stored chunked or compressed and "
                           "cannot be mapped; use memory storage for it"):
            world.set_storage("RES_F32", "mapped")
        assert world["RES_F32"].storage == "memory"
        np.testing.assert_array_equal(world["RES_F32"].numpy(), before)
    with worldstore.open(path, storage={"RES_F32": "memory"}) as world:  # the layer as it was, still chunked
        np.testing.assert_array_equal(world["RES_F32"].numpy(), before)
    with h5py.File(path, "r") as f:
        assert f["layers/RES_F32"].chunks == (8, 8)
