"""The world file format: names, attributes and checks, in one place.

Both the writer (:func:`write_skeleton`) and the reader (:func:`read_spec`,
:func:`layer_extent`) use this module, so what is written is exactly what is
checked on open.

Layout (format version 2; version 1 files, without /history, open but
cannot take snapshots)::

    /                      root attributes: format name/version, world shape,
                           agent count, step, committed_step, library version
    /clock                 [step, committed_step] again, as a dataset: SWMR
                           readers see a dataset change after refreshing it
    /layers/               one dataset per layer, in spec order
    /layers/y, /layers/x   dimension scales (cell indices) of every grid
    /layers/agent          dimension scale of agent and observation layers
    /layers/<OBS>_channel, <OBS>_dy, <OBS>_dx
                           dimension scales of an observation layer
    /layers/<T>_coords, <T>_values, <T>_nnz
                           a temporal layer T in sparse (COO) form: (nnz, 2)
                           int32 (y, x) sorted row-major, (nnz,) values, and
                           the shared ``nnz`` dimension scale; empty while T
                           is dense. T's ``storage`` attribute says which form
                           holds the data (the dense dataset is zero while
                           sparse).
    /layers/yx             dimension scale of the coords' second axis
    /history/step, time    one entry per snapshot: the world's step and the
                           wall-clock time (Unix seconds); ``step`` is the
                           dimension scale of every history dataset's axis 0
    /history/y, x, ...     copies of the grid's dimension scales (netCDF
                           readers look in the group and its parents only)
    /history/<L>           layer L's state at each snapshot, (snapshots, *shape),
                           chunked (one snapshot, 512 x 512 cells per chunk),
                           gzip + shuffle
    /history/<T>_coords, <T>_values, <T>_start, <T>_row
                           a temporal layer T at each snapshot as COO: every
                           snapshot's cells appended, ``start[i]`` where
                           snapshot i's begin; each snapshot starts on a chunk
                           boundary (no chunk is shared by two snapshots, so
                           appending never rewrites committed data)

Every history dataset exists from creation (empty, extendible): HDF5's SWMR
writing mode cannot create objects, only extend them.

Every layer dataset is contiguous, uncompressed and allocated at creation, so
its bytes sit at one offset in the file and can be memory-mapped. Attributes
are plain numbers and strings (lists are JSON strings); nothing is pickled. A
layer's ``_FillValue`` and ``pad_value`` have the layer's type, but a bool
layer's are int8 0/1 (never HDF5 enum attributes, which netCDF tools cannot
save; files written before hold them so and still open).
"""

from __future__ import annotations

import contextlib
import json
import math
import uuid
from collections.abc import Iterator
from typing import Any

import h5py
import numpy as np

from ._version import __version__
from .errors import SpecError, WorldFormatError, WorldstoreError, WorldVersionError
from .spec import LayerSpec, WorldSpec

FORMAT_NAME = "worldstore"
FORMAT_VERSION = 2
#: libver bounds: superblock 3 (SWMR-capable), readable by HDF5 1.10 tools.
LIBVER = ("v110", "v110")
#: Bytes that hold the superblock wherever HDF5 may put it (at 0, 512, ... 4096).
SUPERBLOCK_SPAN = 4096 + 128
#: Objects of at least this size start on a page boundary, so mapped layers
#: are page-aligned (faster, and one mmap per layer with no slack).
ALIGNMENT = 4096
LAYERS_GROUP = "layers"
HISTORY_GROUP = "history"
#: Chunk edge of history datasets: a past window read decompresses a few chunks.
HISTORY_TILE = 512

ROOT_FORMAT = "worldstore_format"
ROOT_VERSION = "worldstore_format_version"
ROOT_STEP = "step"
ROOT_COMMITTED = "committed_step"
#: A new random hex string for every file a world is written into (create, compact): a journal records it, and
#: is replayed only into the file that bears it.
ROOT_WORLD_ID = "world_id"
#: ``[step, committed_step]`` as a dataset too: what SWMR readers can follow.
CLOCK = "clock"
#: The NAME netCDF gives a dimension scale that is a dimension only, not a variable (h5netcdf reads it so).
NETCDF_DIMENSION_ONLY = "This is a netCDF dimension but not a netCDF variable.         0"
COMMIT = "commit"

# Per-layer attributes (beyond the CF ones: _FillValue, long_name, units).
A_CLASS = "grid_class"
A_STORAGE = "storage"
A_PAD = "pad_value"
A_DESCRIPTION = "description"
A_DECAY = "decay"
A_THRESHOLD = "threshold"
A_CHANNELS = "channels"
A_RADIUS = "radius"
A_SWITCH = "switch_density"
#: Rows per chunk of the COO datasets.
COO_CHUNK = 16384


def _scale(group: h5py.Group, name: str, values: np.ndarray, **attrs: Any) -> h5py.Dataset:
    dset = group.create_dataset(name, data=values)
    dset.make_scale(name)
    for key, value in attrs.items():
        dset.attrs[key] = value
    return dset


def grid_scale_values(spec: WorldSpec) -> dict[str, np.ndarray]:
    """The values of the layers' dimension scales (y, x, agent, observation axes), by name, in creation order."""
    values = {"y": np.arange(spec.height, dtype=np.int32), "x": np.arange(spec.width, dtype=np.int32)}
    if any(layer.grid_class in ("agent", "observation") for layer in spec.layers):
        values["agent"] = np.arange(spec.agents, dtype=np.int32)
    for layer in spec.layers:
        if layer.grid_class == "observation":
            radius = int(layer.radius)  # type: ignore[arg-type]
            _, channel, dy, dx = spec.dims_of(layer.name)
            values[channel] = np.arange(len(layer.channels), dtype=np.int32)
            values[dy] = np.arange(-radius, radius + 1, dtype=np.int32)
            values[dx] = np.arange(-radius, radius + 1, dtype=np.int32)
    return values


def _grid_scales(group: h5py.Group, spec: WorldSpec) -> dict[str, h5py.Dataset]:
    """The dimension scales of the layers' axes (:func:`grid_scale_values`), created in ``group``."""
    attrs: dict[str, dict[str, Any]] = {
        "y": {"long_name": "row (cell index)", "axis": "Y", "units": "1"},
        "x": {"long_name": "column (cell index)", "axis": "X", "units": "1"},
        "agent": {"long_name": "agent id"},
    }
    for layer in spec.layers:
        if layer.grid_class == "observation":
            _, channel, dy, dx = spec.dims_of(layer.name)
            attrs[channel] = {"long_name": "channel index", "channels": json.dumps(list(layer.channels))}
            attrs[dy] = {"long_name": "row offset from the agent", "units": "1"}
            attrs[dx] = {"long_name": "column offset from the agent", "units": "1"}
    return {name: _scale(group, name, values, **attrs[name]) for name, values in grid_scale_values(spec).items()}


#: Compression of history datasets: gzip (any HDF5 tool reads it), blosc2 (Zstd through
#: Blosc2, much faster; other tools need the hdf5plugin filters), none.
HISTORY_CODECS = ("gzip", "blosc2", "none")


def history_filters(codec: str) -> dict[str, Any]:
    """h5py dataset options of a history codec."""
    if codec == "gzip":
        return {"compression": "gzip", "compression_opts": 4, "shuffle": True}
    if codec == "none":
        return {}
    if codec == "blosc2":
        load_filters()
        try:
            import hdf5plugin
        except ImportError as exc:
            raise SpecError("history codec 'blosc2' needs the hdf5plugin package: pip install hdf5plugin "
                            "(or pip install 'worldstore[blosc2]')") from exc
        # Zstd level 1: measured 2x the speed of level 3 on simulation fields for 15% more bytes.
        return dict(hdf5plugin.Blosc2(cname="zstd", clevel=1, filters=hdf5plugin.Blosc2.SHUFFLE))
    raise SpecError(f"unknown history codec {codec!r}; expected one of {', '.join(HISTORY_CODECS)}")


def load_filters() -> None:
    """Register hdf5plugin's filters (Blosc2...) with h5py where installed, so compressed history reads.

    Blosc2 compresses with ``BLOSC_NTHREADS`` threads; unless the user set it,
    worldstore sets it to the CPUs this process may use (at most 8) before
    hdf5plugin loads: one thread reaches half the speed on two cores.
    """
    import os

    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    os.environ.setdefault("BLOSC_NTHREADS", str(max(1, min(available, 8))))
    try:
        import hdf5plugin  # noqa: F401
    except ImportError:
        pass


def write_skeleton(f: h5py.File, spec: WorldSpec, history_codec: str = "gzip") -> None:
    """Create every dataset, scale and attribute of a new world in ``f``.

    Layer storage is allocated (early) but never written by HDF5: the caller
    reserves the blocks and writes fill values through the mapping.
    """
    root = f.attrs
    root[ROOT_FORMAT] = FORMAT_NAME
    root[ROOT_VERSION] = np.int64(FORMAT_VERSION)
    root["height"] = np.int64(spec.height)
    root["width"] = np.int64(spec.width)
    root["agents"] = np.int64(spec.agents)
    root[ROOT_STEP] = np.int64(0)
    root[ROOT_COMMITTED] = np.int64(0)
    root["library_version"] = __version__
    root["Conventions"] = "CF-1.8"
    root[ROOT_WORLD_ID] = uuid.uuid4().hex
    clock = f.create_dataset(CLOCK, data=np.zeros(2, dtype=np.int64), maxshape=(2,), chunks=(2,))
    clock.attrs["long_name"] = "[step, committed_step]: the root attributes, as a dataset SWMR readers can refresh"
    write_commit_dataset(f)

    group = f.create_group(LAYERS_GROUP, track_order=True)
    scales = _grid_scales(group, spec)

    temporal = [layer for layer in spec.layers if layer.grid_class == "temporal"]
    if temporal:
        scales["yx"] = _scale(group, "yx", np.arange(2, dtype=np.int32), long_name="coordinate axis",
                              names=json.dumps(["y", "x"]))
    for layer in temporal:
        coords_name, values_name, nnz_name = spec.coo_names_of(layer.name)
        nnz = group.create_dataset(nnz_name, shape=(0,), dtype=np.int32, maxshape=(None,),
                                   chunks=(COO_CHUNK,))
        # A dimension without values (netCDF's own marker for one): xarray shows T_nnz as a dimension of
        # the COO datasets, not as a coordinate of zeros (its values are never written).
        nnz.make_scale(NETCDF_DIMENSION_ONLY)
        coords = group.create_dataset(coords_name, shape=(0, 2), dtype=np.int32, maxshape=(None, 2),
                                      chunks=(COO_CHUNK, 2))
        values = group.create_dataset(values_name, shape=(0,), dtype=layer.np_dtype, maxshape=(None,),
                                      chunks=(COO_CHUNK,))
        coords.dims[0].attach_scale(nnz)
        coords.dims[1].attach_scale(scales["yx"])
        values.dims[0].attach_scale(nnz)
        coords.attrs["long_name"] = f"(y, x) of the non-zero cells of {layer.name} while it is sparse"
        values.attrs["long_name"] = f"values of the non-zero cells of {layer.name} while it is sparse"

    write_history_skeleton(f, spec, history_codec)

    for layer in spec.layers:
        dtype = layer.np_dtype
        dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
        dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
        fill = np.array(layer.fill_value, dtype=dtype)
        dset = group.create_dataset(layer.name, shape=spec.shape_of(layer.name), dtype=dtype,
                                    fillvalue=fill, fill_time="never", dcpl=dcpl)
        for axis, dim in enumerate(spec.dims_of(layer.name)):
            dset.dims[axis].attach_scale(scales[dim])
        attrs = dset.attrs
        attrs[A_CLASS] = layer.grid_class
        attrs[A_STORAGE] = layer.storage
        attrs["_FillValue"] = value_attribute(layer.fill_value, dtype)
        attrs[A_PAD] = value_attribute(layer.pad_value, dtype)
        attrs["long_name"] = layer.long_name or layer.name
        attrs["units"] = layer.units
        attrs[A_DESCRIPTION] = layer.description
        if layer.grid_class == "temporal":
            attrs[A_DECAY] = np.float64(layer.decay)
            attrs[A_THRESHOLD] = np.float64(layer.threshold)
            if layer.switch_density is not None:
                attrs[A_SWITCH] = np.float64(layer.switch_density)
        if layer.grid_class == "observation":
            attrs[A_CHANNELS] = json.dumps(list(layer.channels))
            attrs[A_RADIUS] = np.int64(layer.radius)


def value_attribute_dtype(dtype: np.dtype) -> np.dtype:
    """The type of a layer's value attributes (``_FillValue``, ``pad_value``): the layer's own, as CF says.

    Except bool: h5py stores a bool layer as an HDF5 enum over int8, and an
    enum attribute is what netCDF tools (xarray's ``to_netcdf``) refuse to
    save and PyTables cannot read. So a bool layer's value attributes are
    int8, the enum's base type, holding 0 or 1.

    >>> value_attribute_dtype(np.dtype(bool)), value_attribute_dtype(np.dtype("float16"))
    (dtype('int8'), dtype('float16'))
    """
    return np.dtype(np.int8) if dtype.kind == "b" else dtype


def value_attribute(value: Any, dtype: np.dtype) -> np.ndarray:
    """``value`` (a layer's fill or pad value) as the attribute that stores it: see :func:`value_attribute_dtype`.

    >>> value_attribute(True, np.dtype(bool))
    array(1, dtype=int8)
    """
    return np.array(value, dtype=value_attribute_dtype(np.dtype(dtype)))


def _text(value: Any, where: str) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        raise WorldFormatError(f"{where} should be a string, found {value!r}")
    return value


def _integer(value: Any, where: str) -> int:
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value[()]
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise WorldFormatError(f"{where} should be an integer, found {value!r}")
    return int(value)


def _number(value: Any, where: str) -> float | int | bool:
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value[()]
    if isinstance(value, np.generic):
        value = value.item()
    if not isinstance(value, (bool, int, float)) or (isinstance(value, float) and not math.isfinite(value)):
        raise WorldFormatError(f"{where} should be a finite number, found {value!r}")
    return value


def _layer_value(value: Any, dtype: np.dtype, where: str) -> float | int | bool:
    """A layer's fill or pad value read back: a bool layer's is a Python bool, stored as the int8 0/1 of
    :func:`value_attribute` or, in files written before it, as an HDF5 enum (bool) attribute."""
    number = _number(value, where)
    if dtype.kind != "b":
        return number
    if isinstance(number, float) or number not in (0, 1):
        raise WorldFormatError(f"{where} of a bool layer should be 0 or 1 (or False or True), found {value!r}")
    return bool(number)


def history_names(spec: WorldSpec, name: str) -> tuple[str, ...]:
    """The /history datasets of layer ``name``: one dense one, or a temporal layer's three COO ones."""
    if spec.layer(name).grid_class == "temporal":
        return (f"{name}_coords", f"{name}_values", f"{name}_start")
    return (name,)


def history_row_name(name: str) -> str:
    """The dimension of the rows of temporal layer ``name``'s COO history (files before it lack it)."""
    return f"{name}_row"


def history_chunks(shape: tuple[int, ...]) -> tuple[int, ...]:
    """One snapshot per chunk, tiles of the last two axes, one along any others."""
    tile = tuple(min(HISTORY_TILE, extent) for extent in shape[-2:])
    return (1,) + (1,) * (len(shape) - 2) + tile


def write_history_skeleton(f: h5py.File, spec: WorldSpec, codec: str = "gzip") -> None:
    """Create /history, empty: snapshots only extend its datasets.

    It has its own copies of the grid's dimension scales: netCDF readers
    (xarray) look for a dimension in the group and its parents only.
    """
    filters = history_filters(codec)
    group = f.create_group(HISTORY_GROUP, track_order=True)
    group.attrs["codec"] = codec
    scales = _grid_scales(group, spec)
    # One entry per chunk: appending a snapshot never rewrites a chunk an earlier one is in, so a
    # writer killed mid-snapshot cannot damage what was committed before.
    step = group.create_dataset("step", shape=(0,), dtype=np.int64, maxshape=(None,), chunks=(1,))
    step.make_scale("step")
    step.attrs["long_name"] = "world step of the snapshot"
    when = group.create_dataset("time", shape=(0,), dtype=np.float64, maxshape=(None,), chunks=(1,))
    when.attrs["long_name"] = "wall-clock time of the snapshot"
    when.attrs["units"] = "seconds since 1970-01-01 00:00:00 UTC"
    when.dims[0].attach_scale(step)
    if any(layer.grid_class == "temporal" for layer in spec.layers):
        scales["yx"] = _scale(group, "yx", np.arange(2, dtype=np.int32), long_name="coordinate axis",
                              names=json.dumps(["y", "x"]))
    for layer in spec.layers:
        if layer.grid_class == "temporal":
            coords_name, values_name, start_name = history_names(spec, layer.name)
            coords = group.create_dataset(coords_name, shape=(0, 2), dtype=np.int32, maxshape=(None, 2),
                                          chunks=(COO_CHUNK, 2), **filters)
            values = group.create_dataset(values_name, shape=(0,), dtype=layer.np_dtype, maxshape=(None,),
                                          chunks=(COO_CHUNK,), **filters)
            # The rows' dimension (netCDF's "dimension only" marker: never written, it takes no space),
            # so xarray labels coords (T_row, yx) and values (T_row,).
            rows = group.create_dataset(history_row_name(layer.name), shape=(0,), dtype=np.int8, maxshape=(None,),
                                        chunks=(COO_CHUNK,))
            rows.make_scale(NETCDF_DIMENSION_ONLY)
            for dset in (coords, values):
                dset.dims[0].attach_scale(rows)
            coords.dims[1].attach_scale(scales["yx"])
            start = group.create_dataset(start_name, shape=(0,), dtype=np.int64, maxshape=(None,), chunks=(1,))
            start.dims[0].attach_scale(step)
            coords.attrs["long_name"] = f"(y, x) of the non-zero cells of {layer.name}, snapshot after snapshot"
            values.attrs["long_name"] = f"values of the non-zero cells of {layer.name}, snapshot after snapshot"
            start.attrs["long_name"] = f"where each snapshot's cells of {layer.name} begin in its coords and values"
            continue
        shape = spec.shape_of(layer.name)
        dset = group.create_dataset(layer.name, shape=(0,) + shape, dtype=layer.np_dtype,
                                    maxshape=(None,) + shape, chunks=history_chunks(shape),
                                    fillvalue=np.array(layer.fill_value, dtype=layer.np_dtype), **filters)
        dset.dims[0].attach_scale(step)
        for axis, dim in enumerate(spec.dims_of(layer.name), start=1):
            dset.dims[axis].attach_scale(scales[dim])
        dset.attrs["long_name"] = f"{layer.long_name or layer.name}, at each snapshot"
        dset.attrs["units"] = layer.units


@contextlib.contextmanager
def format_errors(path: str, what: str) -> Iterator[None]:
    """Turn what HDF5 raises on a damaged file (OSError, KeyError, ValueError...) into WorldFormatError.

    worldstore's own errors pass through unchanged.
    """
    try:
        yield
    except WorldstoreError:
        raise
    except (OSError, KeyError, ValueError, RuntimeError, TypeError, IndexError) as exc:
        raise WorldFormatError(f"{path}: {what}: the file is damaged ({exc})") from exc


def check_format(f: h5py.File, path: str) -> None:
    """Refuse files that are not worldstore worlds, or are of a newer format."""
    attrs = f.attrs
    if ROOT_FORMAT not in attrs:
        raise WorldFormatError(f"{path} is an HDF5 file but not a worldstore world "
                               f"(no {ROOT_FORMAT!r} attribute on /)")
    name = _text(attrs[ROOT_FORMAT], f"{path}: attribute /{ROOT_FORMAT}")
    if name != FORMAT_NAME:
        raise WorldFormatError(f"{path} is not a worldstore world (format {name!r})")
    version = _integer(attrs.get(ROOT_VERSION), f"{path}: attribute /{ROOT_VERSION}")
    if version > FORMAT_VERSION:
        raise WorldVersionError(f"{path} has world format version {version}, newer than the {FORMAT_VERSION} "
                                f"this worldstore {__version__} reads; upgrade worldstore to open it")
    if version < 1:
        raise WorldFormatError(f"{path}: invalid world format version {version}")


def read_spec(f: h5py.File, path: str) -> WorldSpec:
    """Rebuild the :class:`WorldSpec` stored in ``f``, checking every attribute."""
    check_format(f, path)
    root = f.attrs
    try:
        height = _integer(root.get("height"), f"{path}: attribute /height")
        width = _integer(root.get("width"), f"{path}: attribute /width")
        agents = _integer(root.get("agents"), f"{path}: attribute /agents")
        group = f.get(LAYERS_GROUP)
        if not isinstance(group, h5py.Group):
            raise WorldFormatError(f"{path}: the /{LAYERS_GROUP} group is missing")
        layers = []
        for name, obj in group.items():
            if not isinstance(obj, h5py.Dataset) or A_CLASS not in obj.attrs:
                continue  # dimension scales
            layers.append(_read_layer(obj, f"{path}: layer {name!r}"))
        spec = WorldSpec(height, width, agents, tuple(layers))
    except SpecError as exc:
        raise WorldFormatError(f"{path}: the stored world description is invalid: {exc}") from exc
    for layer in spec.layers:
        dset = group[layer.name]
        shape = spec.shape_of(layer.name)
        if dset.shape != shape:
            raise WorldFormatError(f"{path}: layer {layer.name!r} has shape {dset.shape}, but the world "
                                   f"description needs {shape}")
    return spec


def _read_layer(dset: h5py.Dataset, where: str) -> LayerSpec:
    attrs = dset.attrs
    try:
        dtype = dset.dtype
    except (TypeError, ValueError) as exc:
        raise WorldFormatError(f"{where} has a datatype this library cannot read: {exc}") from exc
    if dtype.kind not in "biuf" or not dtype.isnative:
        raise WorldFormatError(f"{where} has datatype {dtype.str!r}; layers must be native-endian bool, "
                               "integer or float")
    fields: dict[str, Any] = {
        "name": dset.name.rsplit("/", 1)[-1],
        "grid_class": _text(attrs[A_CLASS], f"{where}: attribute {A_CLASS}"),
        "dtype": dtype.name,
        "storage": _text(attrs.get(A_STORAGE, "mapped"), f"{where}: attribute {A_STORAGE}"),
        "long_name": _text(attrs.get("long_name", ""), f"{where}: attribute long_name"),
        "units": _text(attrs.get("units", ""), f"{where}: attribute units"),
        "description": _text(attrs.get(A_DESCRIPTION, ""), f"{where}: attribute {A_DESCRIPTION}"),
    }
    if "_FillValue" in attrs:
        fields["fill_value"] = _layer_value(attrs["_FillValue"], dtype, f"{where}: attribute _FillValue")
    if A_PAD in attrs:
        fields["pad_value"] = _layer_value(attrs[A_PAD], dtype, f"{where}: attribute {A_PAD}")
    if fields["grid_class"] == "temporal":
        fields["decay"] = _number(attrs.get(A_DECAY), f"{where}: attribute {A_DECAY}")
        fields["threshold"] = _number(attrs.get(A_THRESHOLD), f"{where}: attribute {A_THRESHOLD}")
        if A_SWITCH in attrs:
            fields["switch_density"] = _number(attrs[A_SWITCH], f"{where}: attribute {A_SWITCH}")
    if fields["grid_class"] == "observation":
        raw = _text(attrs.get(A_CHANNELS), f"{where}: attribute {A_CHANNELS}")
        try:
            channels = json.loads(raw)
        except ValueError as exc:
            raise WorldFormatError(f"{where}: attribute {A_CHANNELS} is not JSON: {raw!r}") from exc
        if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
            raise WorldFormatError(f"{where}: attribute {A_CHANNELS} should be a JSON list of names")
        fields["channels"] = tuple(channels)
        fields["radius"] = _integer(attrs.get(A_RADIUS), f"{where}: attribute {A_RADIUS}")
    try:
        return LayerSpec(**fields)
    except SpecError as exc:
        raise WorldFormatError(f"{where}: {exc}") from exc


def read_clock(f: h5py.File, path: str) -> tuple[int, int]:
    """``(step, committed_step)``: from /clock where the file has it (SWMR readers see a dataset
    change after refreshing it, not an attribute), else from the root attributes."""
    clock = f.get(CLOCK)
    if isinstance(clock, h5py.Dataset) and clock.shape == (2,) and clock.dtype.kind == "i":
        step, committed = (int(v) for v in clock[...])
    else:
        step = _integer(f.attrs.get(ROOT_STEP), f"{path}: attribute /{ROOT_STEP}")
        committed = _integer(f.attrs.get(ROOT_COMMITTED), f"{path}: attribute /{ROOT_COMMITTED}")
    if step < 0 or committed < 0:
        raise WorldFormatError(f"{path}: negative step counters ({step}, {committed})")
    return step, committed


def read_world_id(f: h5py.File) -> str | None:
    """The file's :data:`ROOT_WORLD_ID`; None in files written before it existed."""
    value = f.attrs.get(ROOT_WORLD_ID)
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return value if isinstance(value, str) else None


def write_clock(f: h5py.File, step: int, committed: int) -> None:
    f.attrs[ROOT_STEP] = np.int64(step)
    f.attrs[ROOT_COMMITTED] = np.int64(committed)
    clock = f.get(CLOCK)
    if isinstance(clock, h5py.Dataset):
        clock[...] = np.array([step, committed], dtype=np.int64)


class Clock:
    """The step counters of an open file (:func:`write_clock`), opened once so that each commit writes them
    without looking them up: setting an attribute by name costs HDF5 about 30 us, writing an open one 5."""

    def __init__(self, f: h5py.File):
        self._file = f
        self._attrs: list[h5py.h5a.AttrID] = []
        self._clock: h5py.Dataset | None = None
        self._open()

    def _open(self) -> None:
        try:
            self._attrs = [h5py.h5a.open(self._file.id, name.encode()) for name in (ROOT_STEP, ROOT_COMMITTED)]
        except KeyError:  # written before the attributes existed: the first write by name creates them
            self._attrs = []
        clock = self._file.get(CLOCK)
        self._clock = clock if isinstance(clock, h5py.Dataset) else None

    def write(self, step: int, committed: int) -> None:
        if not self._attrs:
            write_clock(self._file, step, committed)
            self._open()
            return
        values = np.array([step, committed], dtype=np.int64)
        for attr, value in zip(self._attrs, values):
            attr.write(np.array(value))
        if self._clock is not None:
            self._clock.write_direct(values)


def write_commit_dataset(f: h5py.File) -> None:
    """``/commit``: [sequence, committed step], contiguous so readers can read it with one pread.

    The sequence is odd while a commit is being applied (see :mod:`worldstore.commit`).
    """
    dset = f.create_dataset(COMMIT, data=np.zeros(2, dtype=np.int64))
    dset.attrs["long_name"] = ("[sequence, committed_step]: the sequence is odd while a commit is being written "
                               "into the file; readers that see it odd or changed read again")


def commit_offset(f: h5py.File, file_size: int, path: str) -> int | None:
    """Where ``/commit``'s 16 bytes lie; None in files without it (written before it existed)."""
    dset = f.get(COMMIT)
    if dset is None:
        return None
    where = f"{path}: dataset /{COMMIT}"
    if not isinstance(dset, h5py.Dataset) or dset.shape != (2,) or dset.dtype != np.int64:
        raise WorldFormatError(f"{where} must be two int64 values")
    extent = layer_extent(dset, file_size, where)
    if extent is None:
        raise WorldFormatError(f"{where} must be stored contiguous and allocated")
    return extent[0]


def layer_extent(dset: h5py.Dataset, file_size: int, where: str) -> tuple[int, int] | None:
    """``(offset, nbytes)`` of a mappable layer, checked against the file size.

    Returns ``None`` when the dataset is stored in a way that cannot be mapped
    (chunked, compressed, not allocated): such a layer can still be used with
    ``memory`` storage. Raises :class:`WorldFormatError` when the recorded
    extent does not fit inside the file, so nothing past the end is mapped.
    """
    dcpl = dset.id.get_create_plist()
    if dcpl.get_layout() != h5py.h5d.CONTIGUOUS or dcpl.get_nfilters() != 0:
        return None
    offset = dset.id.get_offset()
    if offset is None:
        return None
    nbytes = int(np.prod(dset.shape, dtype=np.int64)) * dset.dtype.itemsize
    stored = dset.id.get_storage_size()
    if stored != nbytes:
        raise WorldFormatError(f"{where}: {stored} bytes are stored, but shape {dset.shape} of "
                               f"{dset.dtype} needs {nbytes}")
    if offset < 0 or offset + nbytes > file_size:
        raise WorldFormatError(f"{where}: data at bytes {offset}..{offset + nbytes} lies beyond the end of "
                               f"the file ({file_size} bytes); the file is truncated or corrupt")
    return offset, nbytes


def write_storage_kind(group: h5py.Group, name: str, kind: str) -> bool:
    """Record which storage kind (so which form, dense or COO) holds layer ``name``; whether it changed."""
    dset = group[name]
    if dset.attrs.get(A_STORAGE) != kind:
        dset.attrs[A_STORAGE] = kind
        return True
    return False


def write_decay(group: h5py.Group, name: str, decay: float, threshold: float) -> None:
    """Record temporal layer ``name``'s decay rate and threshold (attributes of a fixed size: SWMR allows it)."""
    attrs = group[name].attrs
    attrs[A_DECAY] = np.float64(decay)
    attrs[A_THRESHOLD] = np.float64(threshold)


def coo_datasets(group: h5py.Group, spec: WorldSpec, name: str) -> tuple[h5py.Dataset, ...]:
    """Temporal layer ``name``'s COO datasets: coords, values, and the nnz dimension scale."""
    return tuple(group[dset_name] for dset_name in spec.coo_names_of(name))


def write_coo(group: h5py.Group, spec: WorldSpec, name: str, coords: np.ndarray, values: np.ndarray,
              datasets: tuple[h5py.Dataset, ...] | None = None) -> None:
    """Store the COO form of temporal layer ``name``: O(nnz) work and bytes. ``datasets``: its
    :func:`coo_datasets`, looked up already (each lookup costs HDF5 about 20 us)."""
    coords_dset, values_dset, nnz_dset = datasets if datasets is not None else coo_datasets(group, spec, name)
    count = len(values)
    for dset, shape in ((coords_dset, (count, 2)), (values_dset, (count,)), (nnz_dset, (count,))):
        if dset.shape != shape:
            dset.resize(shape)
    if count:
        coords_dset.write_direct(np.ascontiguousarray(coords, dtype=np.int32))
        values_dset.write_direct(np.ascontiguousarray(values))


def read_coo(group: h5py.Group, spec: WorldSpec, name: str, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Read and check the COO form of temporal layer ``name``: ``(coords, values)``."""
    coords_name, values_name, _ = spec.coo_names_of(name)
    for dset_name in (coords_name, values_name):
        if not isinstance(group.get(dset_name), h5py.Dataset):
            raise WorldFormatError(f"{where} is stored sparse, but dataset {dset_name!r} is missing")
    coords_dset, values_dset = group[coords_name], group[values_name]
    if coords_dset.ndim != 2 or coords_dset.shape[1:] != (2,) or values_dset.ndim != 1 \
            or coords_dset.shape[0] != values_dset.shape[0]:
        raise WorldFormatError(f"{where}: COO datasets disagree: coords {coords_dset.shape}, "
                               f"values {values_dset.shape}")
    if coords_dset.dtype.kind not in "iu" or values_dset.dtype != spec.layer(name).np_dtype:
        raise WorldFormatError(f"{where}: COO datasets have dtypes {coords_dset.dtype} and {values_dset.dtype}")
    coords = coords_dset[...].astype(np.int64, copy=False)
    values = values_dset[...]
    height, width = spec.height, spec.width
    if len(coords) and ((coords < 0).any() or coords[:, 0].max() >= height or coords[:, 1].max() >= width):
        raise WorldFormatError(f"{where}: COO coordinates lie outside the {height}x{width} world")
    return coords, values
