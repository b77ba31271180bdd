"""Worlds are readable by real HDF5 tools: h5dump/h5ls (HDF5 1.10), PyTables, xarray, plain h5py.

The first tests read the live layers of a world of every class and dtype; the
later ones read every dataset of a world with snapshots and a sparse temporal
layer (its live COO form and its history), each tool in its own way.
"""

from __future__ import annotations

import json
import subprocess

import h5py
import numpy as np
import pytest
from conftest import every_class_spec, have_tool, run_python
from test_world import fill_world, random_values

import worldstore


def tool(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run an HDF5 command-line tool; its output as text."""
    return subprocess.run(list(args), check=False, capture_output=True, text=True, timeout=timeout)


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
    """The value tokens h5dump prints for dataset /layers/NAME (or the dataset at an absolute /path)."""
    dataset = name if name.startswith("/") else f"/layers/{name}"
    dump = tool("h5dump", "-d", dataset, "-y", "-w", "0", "-A", "0", path)
    assert dump.returncode == 0, dump.stderr
    body = dump.stdout.split("DATA {", 1)[1].split("}", 1)[0]
    return body.replace(",", " ").split()


@needs_h5dump
def test_h5dump_reads_every_layer(written):
    path, reference = written
    header = tool("h5dump", "-H", path)
    assert header.returncode == 0, header.stderr
    for name in reference:
        assert f'DATASET "{name}"' in header.stdout
    assert "H5T_ENUM" in header.stdout  # bool layers
    listing = tool("h5ls", "-r", path)
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


# -- a world with history and a sparse layer: every dataset, every tool ---------------------------------
H, W, AGENTS = 24, 20, 3
SNAPSHOTS = 3


@pytest.fixture(scope="module")
def history_world(tmp_path_factory):
    """A closed world of every class, HEAT sparse, three snapshots; its live values and each snapshot's.

    Returns ``(path, live, snapshots)``: ``live`` maps layer names to their
    values at close, ``snapshots`` is ``[(step, {name: values})]``. Temporal
    deposits are sums of halves and the decays are 0.5 and 0.9, so sparse
    values are exact in every tool's text output for HEAT.
    """
    path = str(tmp_path_factory.mktemp("interop") / "history.h5")
    spec = every_class_spec(H, W, AGENTS).with_storage({"HEAT": "sparse"})
    rng = np.random.default_rng(11)
    snapshots = []
    with worldstore.create(path, spec) as world:
        for round_no in range(SNAPSHOTS):
            for layer in world.layers.values():
                if layer.grid_class != "temporal":
                    layer[...] = random_values(rng, layer.shape, layer.dtype)
            world["RES_F32"][0, :3] = 0.0  # cells at the fill value: CF readers mask them
            world["RES_I32"][1, :4] = -1
            world["TERRAIN_U8"][2, :5] = 3
            cells = rng.choice(H * W, 12, replace=False)
            world.deposit("HEAT", cells // W, cells % W, 1.0 + round_no)
            world.deposit("HEAT16", [1, 2, round_no], [3, 4, 5], 2.0)
            record = world.snapshot()
            snapshots.append((record["step"], {name: np.array(world[name].numpy()) for name in world}))
            world.step()
        live = {name: np.array(world[name].numpy()) for name in world}
    return path, live, snapshots


@pytest.fixture(scope="module")
def datasets(history_world) -> dict[str, dict]:
    """Every dataset of ``history_world``'s file by absolute name: its shape, dtype, whether it is a dimension
    scale, and its data (read once for the module; tests must not change them)."""
    found = {}
    with h5py.File(history_world[0], "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                found["/" + name] = {"shape": obj.shape, "dtype": obj.dtype,
                                     "scale": h5py.h5ds.is_scale(obj.id), "data": obj[...]}
        f.visititems(visit)
    return found


def coo_of(array: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    coords = np.argwhere(array)
    return coords, array[tuple(coords.T)]


def test_history_world_has_what_the_tools_read(history_world, datasets):
    _, live, snapshots = history_world
    assert {"/layers/HEAT_coords", "/layers/HEAT_values", "/history/HEAT_coords", "/history/HEAT_start",
            "/history/RES_F32", "/history/step", "/history/time", "/clock"} <= set(datasets)
    assert datasets["/history/step"]["data"].tolist() == [step for step, _ in snapshots]
    assert datasets["/layers/HEAT_values"]["shape"] == (np.count_nonzero(live["HEAT"]),)


@needs_h5dump
def test_h5dump_reads_every_dataset_of_the_world_and_its_history(history_world, datasets):
    path, live, snapshots = history_world
    for name in datasets:  # h5dump (HDF5 1.10) reads every dataset: layers, scales, COO, gzip history
        dump = tool("h5dump", "-d", name, "-w", "0", path)
        assert dump.returncode == 0, (name, dump.stderr)
        assert f'DATASET "{name}"' in dump.stdout and "DATA {" in dump.stdout, name
    whole = tool("h5dump", path, timeout=120)
    assert whole.returncode == 0, whole.stderr
    assert "h5dump error" not in whole.stderr
    # The values of a few: gzip + shuffle history, the bool enum, the step index, the live COO form.
    past_i32 = np.concatenate([state["RES_I32"].ravel() for _, state in snapshots])
    assert [int(t) for t in h5dump_values(path, "/history/RES_I32")] == past_i32.tolist()
    past_bool = np.concatenate([state["OBSTACLES"].ravel() for _, state in snapshots])
    assert [t == "TRUE" for t in h5dump_values(path, "/history/OBSTACLES")] == past_bool.tolist()
    assert [int(t) for t in h5dump_values(path, "/history/step")] == [step for step, _ in snapshots]
    coords, values = coo_of(live["HEAT"])
    assert [int(t) for t in h5dump_values(path, "HEAT_coords")] == coords.ravel().tolist()
    assert [float(t) for t in h5dump_values(path, "HEAT_values")] == values.tolist()
    starts = [int(t) for t in h5dump_values(path, "/history/HEAT_start")]
    past_values = [float(t) for t in h5dump_values(path, "/history/HEAT_values")]
    for start, (_, state) in zip(starts, snapshots):
        _, expected = coo_of(state["HEAT"])
        assert past_values[start:start + len(expected)] == expected.tolist()
    assert [int(t) for t in h5dump_values(path, "/clock")] == [SNAPSHOTS, SNAPSHOTS]


@needs_h5dump
def test_h5ls_reads_every_dataset(history_world, datasets):
    path, _, snapshots = history_world
    listing = tool("h5ls", "-r", "-d", path, timeout=120)
    assert listing.returncode == 0, listing.stderr
    assert listing.stdout.count("Data:") == len(datasets)  # every dataset's data printed
    for name in datasets:
        shown = [line for line in listing.stdout.splitlines() if line.split(" ", 1)[0] == name]
        assert len(shown) == 1 and "Dataset {" in shown[0], name
    for name, expected in (("/history/step", [step for step, _ in snapshots]),
                           ("/history/RES_I32", np.concatenate([s["RES_I32"].ravel() for _, s in snapshots]))):
        values = tool("h5ls", "-d", "-S", path + name)
        assert values.returncode == 0, values.stderr
        tokens = values.stdout.split("Data:", 1)[1].replace(",", " ").split()
        assert [int(t) for t in tokens] == list(expected), name


PYTABLES_WALKER = """
import json, sys, warnings
import numpy as np
import tables
warnings.simplefilter("ignore")
out = {"walk_nodes_error": None, "groups": [], "leaves": {}, "unloadable": {}}
with tables.open_file(sys.argv[1]) as f:
    try:
        for node in f.walk_nodes("/"):
            pass
    except Exception as exc:
        out["walk_nodes_error"] = type(exc).__name__ + ": " + str(exc)
    def walk(path):
        for name in f.get_node(path)._v_children.keys():  # names only: loading a child can fail
            child = path.rstrip("/") + "/" + name
            try:
                node = f.get_node(child)
            except Exception as exc:
                out["unloadable"][child] = type(exc).__name__ + ": " + str(exc)
                continue
            read_attributes(node, child)
            if isinstance(node, tables.Group):
                out["groups"].append(child)
                walk(child)
                continue
            data = np.asarray(node.read())
            out["leaves"][child] = {"shape": list(data.shape), "sum": float(data.astype(np.float64).sum()),
                                    "class": type(node).__name__}
    def read_attributes(node, path):
        # Each attribute's type and value, and whether PyTables warned it cannot read it (it then gives None).
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            attrs = node._v_attrs
            values = {name: getattr(attrs, name) for name in attrs._v_attrnames}
        unread = {name for w in caught for name in values if f"attribute '{name}'" in str(w.message)}
        out["attributes"][path] = {
            name: {"type": type(value).__name__, "value": value.tolist() if hasattr(value, "tolist") else repr(value),
                   "unread": name in unread or value is None}
            for name, value in values.items()}
    out["attributes"] = {}
    read_attributes(f.root, "/")
    walk("/")
print(json.dumps(out))
"""


def test_pytables_reads_every_node(history_world, datasets):
    """PyTables loads and reads every node but the dimension scales (see PyTables issue #132)."""
    path, _, _ = history_world
    result = run_python(PYTABLES_WALKER, path)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert set(seen["groups"]) == {"/layers", "/history"}
    scales = {name for name, info in datasets.items() if info["scale"]}
    for name, info in datasets.items():
        if name in seen["unloadable"]:
            # PyTables reads every attribute when it loads a node, and cannot read REFERENCE_LIST (a compound
            # holding object references) that HDF5 dimension scales carry: only scales may fail, this way.
            assert name in scales and "Reference" in seen["unloadable"][name], (name, seen["unloadable"][name])
            continue
        leaf = seen["leaves"][name]
        assert leaf["shape"] == list(info["shape"]), name
        assert leaf["sum"] == pytest.approx(float(info["data"].astype(np.float64).sum())), name
    assert set(seen["leaves"]) | set(seen["unloadable"]) == set(datasets)
    assert set(datasets) - scales <= set(seen["leaves"])
    if seen["unloadable"]:
        assert seen["walk_nodes_error"] is not None  # walk_nodes stops at the first scale


def test_xarray_labels_live_layers_with_cf_attributes(history_world):
    xarray = pytest.importorskip("xarray")
    pytest.importorskip("h5netcdf")
    path, live, _ = history_world
    with xarray.open_dataset(path, engine="h5netcdf", group="layers", phony_dims="access") as ds:
        assert ds["RES_F32"].dims == ("y", "x") and ds["HEAT16"].dims == ("y", "x")
        assert ds["MEMORY"].dims == ("agent", "y", "x")
        assert ds["OBS"].dims == ("agent", "OBS_channel", "OBS_dy", "OBS_dx")
        assert (ds["y"].attrs["axis"], ds["x"].attrs["axis"]) == ("Y", "X")
        np.testing.assert_array_equal(ds["OBS_dy"].values, np.arange(-2, 3))
        for name in live:
            assert {"units", "long_name"} <= set(ds[name].attrs), name
        # CF: cells equal to _FillValue are masked (NaN); integer layers become floats to hold the NaN.
        assert ds["RES_I32"].encoding["_FillValue"] == -1
        for name in ("RES_F32", "RES_I32", "TERRAIN_U8"):
            fill = ds[name].encoding["_FillValue"]
            masked = live[name] == fill
            assert masked.any(), name
            np.testing.assert_array_equal(np.isnan(ds[name].values), masked, err_msg=name)
            np.testing.assert_array_equal(ds[name].values[~masked], live[name][~masked], err_msg=name)
    with xarray.open_dataset(path, engine="h5netcdf", group="layers", phony_dims="access",
                             mask_and_scale=False) as raw:  # the stored values, dtypes kept
        for name in ("RES_F32", "RES_I32", "TERRAIN_U8", "HEAT16", "MEMORY", "SEEN", "OBS"):
            assert raw[name].dtype == live[name].dtype, name
            np.testing.assert_array_equal(raw[name].values, live[name], err_msg=name)
        np.testing.assert_array_equal(raw["OBSTACLES"].values.astype(bool), live["OBSTACLES"])


def test_xarray_reads_sparse_layers_as_coo_with_an_nnz_dimension(history_world):
    xarray = pytest.importorskip("xarray")
    pytest.importorskip("h5netcdf")
    path, live, _ = history_world
    coords, values = coo_of(live["HEAT"])
    with xarray.open_dataset(path, engine="h5netcdf", group="layers", phony_dims="access",
                             mask_and_scale=False) as ds:
        assert ds["HEAT"].attrs["storage"] == "sparse"
        assert ds["HEAT_coords"].dims == ("HEAT_nnz", "yx") and ds["HEAT_values"].dims == ("HEAT_nnz",)
        assert ds.sizes["HEAT_nnz"] == len(values) > 0 and ds.sizes["yx"] == 2
        assert "HEAT_nnz" not in ds.coords  # a dimension only (netCDF's marker), not a coordinate of zeros
        assert json.loads(ds["yx"].attrs["names"]) == ["y", "x"]
        np.testing.assert_array_equal(ds["HEAT_coords"].values, coords)
        np.testing.assert_array_equal(ds["HEAT_values"].values, values)
        assert not ds["HEAT"].values.any()  # while sparse, the dense dataset reads as zeros
        dense = np.zeros((ds.sizes["y"], ds.sizes["x"]), dtype=ds["HEAT_values"].dtype)
        dense[tuple(ds["HEAT_coords"].values.T)] = ds["HEAT_values"].values
        np.testing.assert_array_equal(dense, live["HEAT"])
        assert ds.sizes["HEAT16_nnz"] == 0  # HEAT16 is dense: its COO form is empty


def test_xarray_labels_history_by_step(history_world):
    xarray = pytest.importorskip("xarray")
    pytest.importorskip("h5netcdf")
    path, _, snapshots = history_world
    steps = [step for step, _ in snapshots]
    with xarray.open_dataset(path, engine="h5netcdf", group="history", phony_dims="access") as ds:
        assert ds["RES_F32"].dims == ("step", "y", "x") and ds["MEMORY"].dims == ("step", "agent", "y", "x")
        assert ds["OBS"].dims == ("step", "agent", "OBS_channel", "OBS_dy", "OBS_dx")
        assert ds["step"].values.tolist() == steps and ds["time"].dims == ("step",)
        assert np.issubdtype(ds["time"].dtype, np.datetime64)  # CF "seconds since 1970-01-01" decoded
        assert (np.diff(ds["time"].values) >= np.timedelta64(0, "ns")).all()
        assert ds["RES_F32"].attrs["long_name"] == "RES_F32, at each snapshot" and "units" in ds["RES_F32"].attrs
        for step, state in snapshots:
            past = ds.sel(step=step)
            for name in ("RES_F32", "RES_I32", "OBSTACLES", "TERRAIN_U8", "MEMORY", "SEEN", "OBS"):
                np.testing.assert_array_equal(past[name].values, state[name], err_msg=f"{name} at {step}")
        # Temporal layers: each snapshot's cells from HEAT_start on (rows between snapshots are never
        # written and read as (0, 0) = 0).
        starts = ds["HEAT_start"].values
        assert ds["HEAT_start"].dims == ("step",)
        assert ds["HEAT_coords"].dims == ("HEAT_row", "yx") and ds["HEAT_values"].dims == ("HEAT_row",)
        assert "HEAT_row" not in ds.coords  # a dimension only, never written
        coords, values = ds["HEAT_coords"].values, ds["HEAT_values"].values
        bounds = np.append(starts, len(values))
        for i, (step, state) in enumerate(snapshots):
            c, v = coords[bounds[i]:bounds[i + 1]], values[bounds[i]:bounds[i + 1]]
            dense = np.zeros((H, W), dtype=v.dtype)
            dense[tuple(c[v != 0].T)] = v[v != 0]
            np.testing.assert_array_equal(dense, state["HEAT"], err_msg=f"HEAT at {step}")


def test_xarray_datatree_holds_layers_and_history(history_world):
    xarray = pytest.importorskip("xarray")
    pytest.importorskip("h5netcdf")
    path, live, snapshots = history_world
    tree = xarray.open_datatree(path, engine="h5netcdf", phony_dims="access")
    try:
        assert set(tree.children) == {"layers", "history"}
        assert tree.attrs["worldstore_format"] == "worldstore" and tree.attrs["Conventions"] == "CF-1.8"
        assert (tree.attrs["height"], tree.attrs["width"], tree.attrs["agents"]) == (H, W, AGENTS)
        layers, history = tree["layers"].to_dataset(), tree["history"].to_dataset()
        assert layers["MEMORY"].dims == ("agent", "y", "x")
        assert history["MEMORY"].dims == ("step", "agent", "y", "x")
        assert history.sizes["step"] == len(snapshots)
        np.testing.assert_array_equal(layers["MEMORY"].values, live["MEMORY"])
        np.testing.assert_array_equal(history["MEMORY"].isel(step=-1).values, snapshots[-1][1]["MEMORY"])
    finally:
        tree.close()


# -- an agentfarm world with history: netCDF tools save it, PyTables reads every attribute -------------------
#: Attributes of the HDF5 dimension scale API (h5py writes them, not worldstore), which PyTables cannot read:
#: DIMENSION_LIST (variable-length object references) and REFERENCE_LIST (a compound holding them).
DIMENSION_SCALE_ATTRS = {"DIMENSION_LIST", "REFERENCE_LIST"}


@pytest.fixture(scope="module")
def farm_history(tmp_path_factory):
    """A closed agentfarm world (two bool layers, sparse signals) with three snapshots: its path and spec."""
    path = str(tmp_path_factory.mktemp("farm") / "farm.h5")
    spec = worldstore.presets.classic(24, 20, 3, obs_radius=2)
    rng = np.random.default_rng(5)
    with worldstore.create(path, spec) as world:
        for round_no in range(3):
            world["RESOURCES"][...] = rng.random((24, 20), dtype=np.float32)
            world["OBSTACLES"][...] = rng.random((24, 20)) < 0.2
            world["VISIBILITY"][round_no, :] = False
            world["AGENT_MEMORY"][...] = rng.random((3, 24, 20)).astype(np.float16)
            world.deposit("TRAILS", rng.integers(0, 24, 10), rng.integers(0, 20, 10), 1.0 + round_no)
            world.snapshot()
            world.step()
    return path, spec


def attribute_types(path: str) -> dict[str, tuple[int, str]]:
    """``"/object@attribute"``: (HDF5 type class, numpy dtype) of every attribute in the file, as h5py sees it."""
    found = {}
    with h5py.File(path, "r") as f:
        objects = [("/", f)]
        f.visititems(lambda name, obj: objects.append(("/" + name, obj)))
        for name, obj in objects:
            for key in obj.attrs:
                attr = obj.attrs.get_id(key)
                found[f"{name}@{key}"] = (attr.get_type().get_class(), attr.dtype.str)
    return found


def test_every_attribute_worldstore_writes_has_a_netcdf_type(farm_history):
    """Numbers and strings only: no HDF5 enum (h5py's bool), nothing that netCDF tools refuse to save."""
    path, _ = farm_history
    types = attribute_types(path)
    assert "/layers/OBSTACLES@_FillValue" in types and "/layers/VISIBILITY@pad_value" in types
    netcdf_classes = {h5py.h5t.INTEGER, h5py.h5t.FLOAT, h5py.h5t.STRING}
    for where, (type_class, dtype) in types.items():
        if where.rsplit("@", 1)[1] in DIMENSION_SCALE_ATTRS:
            continue
        assert type_class in netcdf_classes, (where, type_class, dtype)
    with h5py.File(path, "r") as f:  # bool layers: int8 0/1, the base type of h5py's bool enum
        for layer, expected in (("OBSTACLES", (0, 1)), ("VISIBILITY", (1, 0))):
            fill, pad = (f["layers"][layer].attrs[key] for key in ("_FillValue", "pad_value"))
            assert fill.dtype == pad.dtype == np.int8 and (int(fill), int(pad)) == expected, layer


def saved_again(ds, path) -> "object":
    """``ds`` saved with ``to_netcdf(engine="h5netcdf")`` and opened again (loaded, the file closed), not
    masked: a worldstore ``_FillValue`` is a value cells hold (CF masking would turn a bool layer's False to NaN)."""
    xarray = pytest.importorskip("xarray")
    ds.to_netcdf(path, engine="h5netcdf")
    with xarray.open_dataset(path, engine="h5netcdf", mask_and_scale=False) as back:
        return back.load()


def test_to_xarray_and_its_reductions_save_with_to_netcdf(farm_history, tmp_path):
    pytest.importorskip("xarray")
    pytest.importorskip("h5netcdf")
    path, _ = farm_history
    ds = worldstore.to_xarray(path)
    back = saved_again(ds, tmp_path / "all.nc")
    np.testing.assert_array_equal(back["OBSTACLES"].values.astype(bool), ds["OBSTACLES"].values)
    np.testing.assert_array_equal(back["RESOURCES"].values, ds["RESOURCES"].values)
    assert back["OBSTACLES"].attrs["pad_value"] == 1 and back["VISIBILITY"].attrs["pad_value"] == 0
    last = saved_again(ds.isel(step=-1), tmp_path / "last.nc")
    np.testing.assert_array_equal(last["VISIBILITY"].values.astype(bool), ds["VISIBILITY"].values[-1])
    mean = saved_again(ds[["OBSTACLES", "RESOURCES"]].mean("step", keep_attrs=True), tmp_path / "mean.nc")
    np.testing.assert_allclose(mean["OBSTACLES"].values, ds["OBSTACLES"].values.mean(axis=0))
    live = saved_again(worldstore.to_xarray(path, history=False), tmp_path / "live.nc")
    assert live["OBSTACLES"].shape == (24, 20)
    saved_again(worldstore.to_xarray(path, mask_fill=True), tmp_path / "masked.nc")


@pytest.mark.parametrize("group", [None, "layers", "history"])
@pytest.mark.parametrize("mask_and_scale", [True, False])
def test_every_group_opened_with_xarray_saves_with_to_netcdf(farm_history, tmp_path, group, mask_and_scale):
    xarray = pytest.importorskip("xarray")
    pytest.importorskip("h5netcdf")
    path, _ = farm_history
    with xarray.open_dataset(path, engine="h5netcdf", group=group, phony_dims="access",
                             mask_and_scale=mask_and_scale) as ds:
        back = saved_again(ds, tmp_path / "group.nc")
        assert set(back.data_vars) == set(ds.data_vars)
        if group is not None:
            if not mask_and_scale:  # masked, the bool layers are floats with NaN where they hold the fill
                np.testing.assert_array_equal(back["OBSTACLES"].values.astype(bool),
                                              ds["OBSTACLES"].values.astype(bool))
            saved_again(ds.isel(y=slice(0, 5)).mean("x", keep_attrs=True), tmp_path / "reduced.nc")


def test_pytables_reads_every_attribute(farm_history, history_world):
    """Every attribute of every node PyTables loads reads as a value, without a DataTypeWarning (an HDF5 enum
    attribute, as h5py writes a numpy bool, reads as None with one); dimension scales do not load (see
    ``test_pytables_reads_every_node``) and their API's own attributes are not worldstore's."""
    for path in (farm_history[0], history_world[0]):
        result = run_python(PYTABLES_WALKER, path)
        assert result.returncode == 0, result.stderr
        seen = json.loads(result.stdout)["attributes"]
        assert "/" in seen and "/layers/OBSTACLES" in seen and "/history/OBSTACLES" in seen
        unread = [(node, name, info) for node, attrs in seen.items() for name, info in attrs.items()
                  if info["unread"] and name not in DIMENSION_SCALE_ATTRS]
        assert not unread, unread
        obstacles = seen["/layers/OBSTACLES"]
        assert (obstacles["_FillValue"]["value"], obstacles["pad_value"]["value"]) == (0, 1)
        assert obstacles["_FillValue"]["type"] == obstacles["pad_value"]["type"] == "int8"
        assert seen["/"]["worldstore_format"]["value"] == "worldstore"
