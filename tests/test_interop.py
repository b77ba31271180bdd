"""Worlds are readable by real HDF5 tools: h5dump/h5ls (HDF5 1.10), PyTables, xarray, plain h5py."""

from __future__ import annotations

import json
import subprocess

import h5py
import numpy as np
import pytest

import worldstore
from conftest import every_class_spec, have_tool, run_python
from test_world import fill_world

needs_h5dump = pytest.mark.skipif(not have_tool("h5dump") or not have_tool("h5ls"),
                                  reason="Debian hdf5-tools (h5dump, h5ls) not installed; .ci/run installs it")


@pytest.fixture(params=["mapped", "memory"])
def written(request, tmp_path):
    """A closed world of every class and dtype, and the values written into it."""
    path = str(tmp_path / f"{request.param}.h5")
    with worldstore.create(path, every_class_spec(storage=request.param)) as world:
        reference = fill_world(world, seed=7)
    return path, reference


def test_h5py_reads_what_was_written(written):
    path, reference = written
    with h5py.File(path, "r") as f:
        for name, values in reference.items():
            data = f["layers"][name][...]
            assert data.dtype == values.dtype, name
            np.testing.assert_array_equal(data, values, err_msg=name)


def h5dump_values(path: str, name: str) -> list[str]:
    """The value tokens h5dump prints for dataset /layers/NAME."""
    dump = subprocess.run(["h5dump", "-d", f"/layers/{name}", "-y", "-w", "0", "-A", "0", path],
                          capture_output=True, text=True, timeout=60)
    assert dump.returncode == 0, dump.stderr
    body = dump.stdout.split("DATA {", 1)[1].split("}", 1)[0]
    return body.replace(",", " ").split()


@needs_h5dump
def test_h5dump_reads_every_layer(written):
    path, reference = written
    header = subprocess.run(["h5dump", "-H", path], capture_output=True, text=True, timeout=60)
    assert header.returncode == 0, header.stderr
    for name in reference:
        assert f'DATASET "{name}"' in header.stdout
    assert "H5T_ENUM" in header.stdout  # bool layers
    listing = subprocess.run(["h5ls", "-r", path], capture_output=True, text=True, timeout=60)
    assert listing.returncode == 0
    for name in reference:
        assert f"/layers/{name}" in listing.stdout
    # h5dump's values of integer layers equal what was written.
    for name in ("RES_I32", "TERRAIN_U8", "SEEN"):
        numbers = [int(tok) for tok in h5dump_values(path, name)]
        np.testing.assert_array_equal(numbers, reference[name].ravel(), err_msg=name)


@needs_h5dump
def test_h5dump_reads_float16_and_bool_values(written):
    path, reference = written
    for name, parse in (("MEMORY", float), ("OBSTACLES", lambda tok: tok == "TRUE")):
        values = [parse(tok) for tok in h5dump_values(path, name)]
        np.testing.assert_array_equal(np.array(values, dtype=reference[name].dtype), reference[name].ravel())


PYTABLES_READER = """
import json, sys, warnings
import numpy as np
import tables
warnings.simplefilter("ignore")
out = {}
with tables.open_file(sys.argv[1]) as f:
    for name in json.loads(sys.argv[2]):
        node = f.get_node("/layers/" + name)
        data = node.read()
        out[name] = {"shape": list(data.shape), "sum": float(np.asarray(data, dtype=np.float64).sum()),
                     "first": float(np.asarray(data).ravel()[0]), "last": float(np.asarray(data).ravel()[-1])}
print(json.dumps(out))
"""


def test_pytables_reads_every_layer(written):
    path, reference = written
    result = run_python(PYTABLES_READER, path, json.dumps(list(reference)))
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    for name, values in reference.items():
        as_float = values.astype(np.float64)
        assert seen[name]["shape"] == list(values.shape), name
        assert seen[name]["sum"] == pytest.approx(float(as_float.sum())), name
        assert seen[name]["first"] == float(as_float.ravel()[0]), name
        assert seen[name]["last"] == float(as_float.ravel()[-1]), name


def test_xarray_labels_every_layer(written):
    xarray = pytest.importorskip("xarray")
    pytest.importorskip("h5netcdf")
    path, reference = written
    with xarray.open_dataset(path, engine="h5netcdf", group="layers", mask_and_scale=False,
                             phony_dims="access") as ds:  # /clock (2,) has no dimension scale
        assert ds["RES_F32"].dims == ("y", "x")
        assert ds["HEAT"].dims == ("y", "x")
        assert ds["MEMORY"].dims == ("agent", "y", "x")
        assert ds["OBS"].dims == ("agent", "OBS_channel", "OBS_dy", "OBS_dx")
        assert ds.sizes["y"] == 24 and ds.sizes["x"] == 20 and ds.sizes["agent"] == 3
        np.testing.assert_array_equal(ds["y"].values, np.arange(24))
        assert ds["RES_F32"].attrs["long_name"] == "RES_F32"
        for name in ("RES_F32", "RES_I32", "TERRAIN_U8", "HEAT", "MEMORY", "SEEN", "OBS"):
            np.testing.assert_array_equal(ds[name].values, reference[name], err_msg=name)
        np.testing.assert_array_equal(ds["OBSTACLES"].values.astype(bool), reference["OBSTACLES"])


def test_root_attributes_describe_the_world(written):
    path, _ = written
    with h5py.File(path, "r") as f:
        attrs = f.attrs
        assert attrs["worldstore_format"] == "worldstore"
        assert attrs["worldstore_format_version"] == 2
        assert (attrs["height"], attrs["width"], attrs["agents"]) == (24, 20, 3)
        assert attrs["library_version"] == worldstore.__version__
        for value in attrs.values():  # plain numbers and strings only
            assert isinstance(value, (str, bytes, np.integer, np.floating, int, float)), value
