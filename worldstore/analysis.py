"""Analysis at scale: a world's history (or its live layers) as a lazy ``xarray.Dataset`` over Dask arrays.

:func:`to_xarray` reads only the small index of a world file (its layers, the
snapshots' steps and times, the y/x dimension scales) and hands back Dask
arrays over the rest. Nothing else is read until ``compute()``, and then each
Dask task opens the file by path, reads its block and closes it: h5py objects
cannot be pickled, so this is what lets the tasks run in Dask worker processes
(``dask.distributed``), on as many cores or machines as see the file.

How each kind of layer becomes an array:

- dense layers in ``/history`` (every class but temporal): one Dask chunk per
  HDF5 chunk (one snapshot x 512 x 512 cells) with ``chunks="file"``, or whole
  multiples of them, so no HDF5 chunk is decompressed by two tasks;
- temporal layers in ``/history`` are stored as the non-zero cells of each
  snapshot (COO): each block is built densely by reading that snapshot's cells
  and scattering them into zeros, one block per snapshot by default (its
  cells are not chunked by place, so a task reads a whole snapshot's cells);
- live layers (``history=False``): the ``/layers`` datasets as the writer's
  last commit left them, sparse temporal layers scattered from their COO form
  the same way. Each block is read between two commits of a running writer
  (the ``/commit`` sequence number, :mod:`worldstore.commit`), so no block is
  torn; different blocks may come from different commits.

xarray and Dask are an optional extra (``pip install 'worldstore[analysis]'``):
this module imports them only when :func:`to_xarray` runs.
"""

from __future__ import annotations

import errno
import importlib
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Union

import h5py
import numpy as np

from . import _platform, _schema, recovery
from . import commit as _commit
from .commit import consistent
from .errors import HistoryError, WorldFormatError, WorldLockedError, WorldNotFoundError
from .history import snapshot_cells, snapshot_count
from .spec import WorldSpec

__all__ = ["to_xarray"]

PathLike = Union[str, "os.PathLike[str]"]

#: Attributes of a layer dataset carried to the variable (CF ones and worldstore's own).
_LAYER_ATTRS = ("long_name", "units", "description", "grid_class", _schema.A_PAD, _schema.A_DECAY,
                _schema.A_THRESHOLD, _schema.A_SWITCH, _schema.A_CHANNELS, _schema.A_RADIUS)
_ROOT_ATTRS = ("Conventions", "height", "width", "agents", _schema.ROOT_VERSION, "library_version")
_TIME_UNITS = "seconds since 1970-01-01 00:00:00 UTC"


def to_xarray(paths: PathLike | Sequence[PathLike], *, layers: str | Sequence[str] | None = None,
              history: bool = True, chunks: str | Mapping[str, int] = "file", mask_fill: bool = False,
              join: str = "exact") -> Any:
    """A world's history (or live layers) as an ``xarray.Dataset`` of lazy, Dask-backed variables.

    ``paths``: one world file, or a sequence of them. One path gives one
    world's dataset; a sequence (even of one) gives the worlds concatenated
    along a new leading ``world`` dimension, labelled by the paths as given.
    The worlds must have the same layers (names, shapes, dtypes). For a list
    of separate datasets instead, call ``to_xarray`` once per path.

    ``layers``: a layer name or names (default: every layer, in spec order).

    ``history=True`` (default): the snapshots in ``/history``. Every variable
    has a leading ``step`` dimension, one entry per snapshot, labelled by the
    world's step (a step restored and snapshotted again appears twice) with
    ``time`` (the wall-clock time of each snapshot) beside it; then the
    layer's own dimensions: ``(y, x)``, ``(agent, y, x)`` or an observation
    layer's four. ``history=False``: the live layers as the writer's last
    commit (``flush``) left them in the file, without a ``step`` dimension;
    the dataset's ``step`` coordinate is the world's step when
    ``to_xarray`` ran. A block is never torn by a commit that lands while
    it is read, but blocks read at different times may be of different
    commits: for one consistent state, snapshot and read the history.

    ``chunks``: ``"file"`` (default) makes one Dask chunk of each HDF5 chunk
    of the history (one snapshot x 512 x 512 cells; live layers, contiguous
    in the file, take the same tiles so live and past line up); temporal
    layers get one chunk per snapshot (their cells are stored by snapshot, not
    by place). ``"auto"`` merges whole HDF5 chunks into blocks up to Dask's
    ``array.chunk-size`` (128 MiB), x first, then snapshots, then y: fewer,
    bigger tasks, and reductions over time that combine little across
    workers; the better choice for reductions over long histories. A
    mapping ``{dim: size}`` sets sizes per dimension (``-1``: the whole
    extent; dimensions it does not name keep ``"file"``'s); a dense history
    layer's sizes must be whole multiples of its HDF5 chunks, so no chunk is
    read by two tasks (a temporal layer takes any: each of its blocks reads
    its snapshots' cells and keeps those inside it).

    ``mask_fill``: in a worldstore file ``_FillValue`` is a layer's initial
    value (0 resources, no obstacle), a value cells really hold, not a
    missing-data marker; so by default nothing is masked and ``_FillValue``
    stays in the variable's attributes (``xarray.decode_cf`` applies CF's
    masking if that is what you want). ``mask_fill=True`` masks it as CF
    says: cells equal to the layer's ``_FillValue`` become NaN (integer and
    bool layers become float32, or float64 above 16 bits, as in xarray's CF
    decoding) and ``_FillValue`` moves to ``encoding``.

    ``join``: how the ``step`` labels of several worlds' histories are
    aligned (``xarray.concat``'s ``join``): ``"exact"`` (default) needs the
    same steps in every world and says which differ; ``"inner"`` keeps the
    steps all have; ``"outer"`` takes all of them, filling NaN (integer and
    bool layers then become float64).

    Attributes: each variable keeps its layer's ``long_name``, ``units``,
    ``description``, ``grid_class`` and ``pad_value`` (and ``decay``,
    ``threshold``, ``channels``... where the layer has them; a bool layer's
    ``_FillValue`` and ``pad_value`` are int8 0/1, so ``to_netcdf`` saves
    them); the dataset keeps the file's ``Conventions``, world size and
    format version.

    Files are opened read-only, once here and once per task. A world that a
    writer holds can be read while it runs in SWMR mode
    (``worldstore.open(path, "r+", swmr=True)``): readers then open the file
    in SWMR mode by themselves, and see the snapshots taken before
    ``to_xarray`` was called. HDF5 refuses readers of a file that a writer
    holds without SWMR (:class:`~worldstore.WorldLockedError`).

    Raises ``ImportError`` (naming ``pip install 'worldstore[analysis]'``)
    without xarray or Dask, :class:`~worldstore.WorldNotFoundError`,
    :class:`~worldstore.WorldFormatError`, :class:`~worldstore.HistoryError`
    (a file without history), :class:`~worldstore.LayerNotFoundError`, and
    ``ValueError`` for bad ``chunks``, ``join`` or worlds that do not match
    (``TypeError`` for ``chunks`` neither a string nor a mapping).

    >>> import os, tempfile, worldstore
    >>> from worldstore.analysis import to_xarray
    >>> path = os.path.join(tempfile.mkdtemp(), "world.h5")
    >>> spec = worldstore.WorldSpec(64, 64, 0, [worldstore.LayerSpec("FOOD", "resource", units="kg")])
    >>> with worldstore.create(path, spec) as world:
    ...     for step in range(3):
    ...         world["FOOD"][...] = float(step)
    ...         _ = world.step(); _ = world.snapshot()
    >>> ds = to_xarray(path)
    >>> ds["FOOD"].dims, ds["FOOD"].attrs["units"], ds["step"].values.tolist()
    (('step', 'y', 'x'), 'kg', [1, 2, 3])
    >>> float(ds["FOOD"].mean("step")[0, 0])          # computed by Dask, reading the file now
    1.0
    """
    xr, da = _dependencies()
    if join not in ("exact", "inner", "outer"):
        raise ValueError(f"join must be 'exact', 'inner' or 'outer', got {join!r}")
    if isinstance(paths, (str, os.PathLike)):
        return _world_dataset(xr, da, os.fspath(paths), layers, history, chunks, mask_fill)
    paths = [os.fspath(p) for p in paths]
    if not paths:
        raise ValueError("to_xarray needs at least one world path")
    datasets = [_world_dataset(xr, da, path, layers, history, chunks, mask_fill) for path in paths]
    _check_alike(paths, datasets, history, join)
    combined = xr.concat(datasets, dim="world", data_vars="all", coords="different", compat="equals",
                         join=join, combine_attrs="drop_conflicts")
    return combined.assign_coords(world=("world", paths, {"long_name": "world file"}))


def _dependencies() -> tuple[Any, Any]:
    """xarray and dask.array, imported now (``import worldstore`` must not need them)."""
    try:
        xr = importlib.import_module("xarray")
        da = importlib.import_module("dask.array")
    except ImportError as exc:
        raise ImportError(f"worldstore.to_xarray needs xarray and Dask ({exc.name or exc} cannot be imported): "
                          "pip install 'worldstore[analysis]'", name=exc.name) from exc
    return xr, da


# -- opening -----------------------------------------------------------------------------------------
def _open(path: str) -> h5py.File:
    """Open a world file read-only, as a reader beside a running SWMR writer where there is one."""
    _schema.load_filters()  # Blosc2 history, in worker processes too
    try:
        shared = _commit.shared_file(path)
        if shared is not None:
            return shared
        if _swmr_writer_flags(path):  # a SWMR writer's file: a plain open would be refused (or, while the
            return _open_swmr_reader(path, None)  # writer grows it, find it shorter than its superblock says)
        return h5py.File(path, "r")
    except FileNotFoundError as exc:
        raise WorldNotFoundError(errno.ENOENT, "no such world file", path) from exc
    except OSError as exc:
        message = str(exc).lower()
        if not os.path.exists(path):
            raise WorldNotFoundError(errno.ENOENT, "no such world file", path) from exc
        if "already open for write" in message:
            return _open_swmr_reader(path, exc)
        if "unable to lock file" in message and ("errno = 11" in message or "temporarily unavailable" in message):
            raise WorldLockedError(f"{path} is held open for writing by another process, not in SWMR mode: HDF5 "
                                   "lets readers in only while the writer runs in SWMR mode "
                                   "(worldstore.open(path, 'r+', swmr=True))") from exc
        if "unable to lock file" not in message and "file locking" not in message:
            # HDF5 would say "not an HDF5 file", "truncated file: ... sblock->base_addr" (no lock: sb-lock)...
            raise WorldFormatError(f"{path} cannot be opened as HDF5: {exc}") from exc
    # File systems without locks, or this process already holds the file with the other locking flag.
    try:
        return h5py.File(path, "r", locking=False)
    except OSError as exc:
        raise WorldFormatError(f"{path} cannot be opened as HDF5: {exc}") from exc


def _swmr_writer_flags(path: str) -> bool:
    """Whether the superblock says a SWMR writer has the file open (False for a file that is not a world's, or
    not HDF5: the plain open then says what is wrong)."""
    try:
        return bool(recovery.status_flags(path) & recovery.SWMR_WRITE_FLAG)
    except WorldFormatError:
        return False


def _open_swmr_reader(path: str, first: OSError | None) -> h5py.File:
    try:
        return h5py.File(path, "r", swmr=True)
    except OSError as exc:
        raise WorldLockedError(f"{path} is marked open for writing, but not by a SWMR writer: a writer killed "
                               "before it closed the file left it so (worldstore.recover(path) clears it), "
                               f"or one is running without SWMR ({first or exc})") from exc


# -- what the file holds ---------------------------------------------------------------------------------
def _plain(value: Any) -> Any:
    """An HDF5 attribute value as plain Python (str, int, float, bool)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value[()]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _world_dataset(xr: Any, da: Any, path: str, layers: str | Sequence[str] | None, history: bool,
                   chunks: str | Mapping[str, int], mask_fill: bool) -> Any:
    """One world's Dataset: its index read now, its layers as Dask arrays over the file."""
    path = os.path.abspath(path)  # the tasks may run where the working directory differs
    with _open(path) as f, _schema.format_errors(path, "reading the world's index"):
        spec = _schema.read_spec(f, path)
        step, committed = _schema.read_clock(f, path)
        names = _layer_names(spec, layers)
        attrs = {key: _plain(f.attrs[key]) for key in _ROOT_ATTRS if key in f.attrs}
        attrs.update(step=step, committed_step=committed, source=path)
        live = f[_schema.LAYERS_GROUP]
        layer_attrs = {name: _variable_attrs(live[name]) for name in names}
        if history:
            group = f.get(_schema.HISTORY_GROUP)
            if not isinstance(group, h5py.Group):
                raise HistoryError(f"{path} has no history (it was written by an older worldstore, format 1): "
                                   "read its live layers with history=False")
            attrs["history_codec"] = _plain(group.attrs.get("codec", "gzip"))
            count = snapshot_count(group)
            steps = np.asarray(group["step"][:count], dtype=np.int64)
            times = np.asarray(group["time"][:count], dtype=np.float64)
            arrays = {name: _history_array(path, group, spec, name, steps) for name in names}
        else:
            group = live
            arrays = {name: _live_array(path, live, spec, name) for name in names}
        dims = {name: (("step",) if history else ()) + spec.dims_of(name) for name in names}
        coords = _grid_coords(group, spec, names)
    _check_chunk_dims(chunks, dims)
    stamp = _stamp(path)
    data_vars = {}
    for name in names:
        source = arrays[name]
        block = _block_shape(source, dims[name], chunks)
        array = da.from_array(source, chunks=block, name=f"worldstore-{name}-{_token(stamp, source, block)}",
                              lock=False, asarray=False, fancy=False, inline_array=False,
                              meta=np.empty((0,) * source.ndim, dtype=source.dtype))
        var_attrs, encoding = dict(layer_attrs[name]), {}
        if mask_fill and "_FillValue" in var_attrs:
            fill = var_attrs.pop("_FillValue")
            encoding["_FillValue"] = fill
            array = da.where(array == fill, np.nan, array.astype(_masked_dtype(source.dtype)))
        variable = xr.Variable(dims[name], array, var_attrs)
        variable.encoding.update(encoding)
        data_vars[name] = variable
    if history:
        coords["step"] = xr.Variable(("step",), steps, {"long_name": "world step of the snapshot"})
        when = xr.Variable(("step",), _datetimes(times), {"long_name": "wall-clock time of the snapshot"})
        when.encoding["units"] = _TIME_UNITS
        when.encoding["dtype"] = np.dtype(np.float64)  # as the file keeps it: to_netcdf saves it so, unwarned
        coords["time"] = when
    else:
        coords["step"] = xr.Variable((), np.int64(step), {"long_name": "world step of the live layers"})
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)


def _layer_names(spec: WorldSpec, layers: str | Sequence[str] | None) -> list[str]:
    if layers is None:
        return [layer.name for layer in spec.layers]
    names = [layers] if isinstance(layers, str) else list(layers)
    for name in names:
        spec.layer(name)  # LayerNotFoundError naming the known layers
    if len(set(names)) != len(names):
        raise ValueError(f"layers names a layer twice: {names}")
    return names


def _variable_attrs(dset: h5py.Dataset) -> dict[str, Any]:
    """A layer's attributes for its variable, as netCDF can save them (``to_netcdf``).

    ``_FillValue`` keeps the file's type (CF: the variable's); a bool layer's
    ``_FillValue`` and ``pad_value`` are int8 0/1 as in new files, also when
    an older file holds them as HDF5 enum (bool) attributes, which netCDF
    writers refuse.
    """
    attrs = {key: _plain(dset.attrs[key]) for key in _LAYER_ATTRS if key in dset.attrs}
    for key in ("_FillValue", _schema.A_PAD):
        if key in dset.attrs and (key == "_FillValue" or dset.dtype.kind == "b"):
            stored = np.asarray(dset.attrs[key]).reshape(())
            attrs[key] = _schema.value_attribute(stored, dset.dtype)[()]
    return attrs


def _grid_coords(group: h5py.Group, spec: WorldSpec, names: list[str]) -> dict[str, Any]:
    """The dimension scales of the layers' axes (y, x, agent, ...), read from ``group``, as coordinates."""
    coords: dict[str, Any] = {}
    for name in names:
        for dim in spec.dims_of(name):
            if dim in coords:
                continue
            scale = group.get(dim)
            if not isinstance(scale, h5py.Dataset) or scale.ndim != 1:
                raise WorldFormatError(f"{group.file.filename}: dimension scale {group.name}/{dim} is missing")
            attrs = {key: _plain(scale.attrs[key]) for key in ("long_name", "units", "axis") if key in scale.attrs}
            coords[dim] = (dim, scale[...], attrs)
            if "channels" in scale.attrs:  # an observation layer's channel names, beside their indices
                channel_names = json.loads(_plain(scale.attrs["channels"]))
                coords[f"{dim}_name"] = (dim, np.array(channel_names, dtype=str), {"long_name": "channel layer"})
    return coords


def _datetimes(seconds: np.ndarray) -> np.ndarray:
    """Unix seconds as datetime64[ns], as xarray's CF decoding gives them."""
    return np.round(seconds * 1e9).astype(np.int64).astype("datetime64[ns]")


def _masked_dtype(dtype: np.dtype) -> np.dtype:
    if dtype.kind == "f":
        return dtype
    return np.dtype(np.float32) if dtype.itemsize <= 2 else np.dtype(np.float64)


def _stamp(path: str) -> tuple[Any, ...]:
    """What makes two reads of a path the same file for Dask's task names: a rewritten file gets new names."""
    info = os.stat(path)
    return os.path.realpath(path), info.st_ino, info.st_size, info.st_mtime_ns


def _token(stamp: tuple[Any, ...], source: _Blocks, block: tuple[int, ...]) -> str:
    from dask.base import tokenize

    return tokenize(stamp, type(source).__name__, source.dataset, source.shape, block,
                    getattr(source, "steps", None))


# -- chunks ---------------------------------------------------------------------------------------------------
def _check_chunk_dims(chunks: str | Mapping[str, int], dims: dict[str, tuple[str, ...]]) -> None:
    if isinstance(chunks, str):
        if chunks not in ("file", "auto"):
            raise ValueError(f"chunks must be 'file', 'auto' or a mapping {{dim: size}}, got {chunks!r}")
        return
    if not isinstance(chunks, Mapping):
        raise TypeError(f"chunks must be 'file', 'auto' or a mapping {{dim: size}}, got {chunks!r}")
    known = sorted({dim for names in dims.values() for dim in names})
    for dim, size in chunks.items():
        if dim not in known:
            raise ValueError(f"chunks names dimension {dim!r}, which no selected layer has; "
                             f"dimensions: {', '.join(known)}")
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or (size < 1 and size != -1):
            raise ValueError(f"chunks[{dim!r}] must be a positive integer or -1 (the whole extent), got {size!r}")


def _block_shape(source: _Blocks, dims: tuple[str, ...], chunks: str | Mapping[str, int]) -> tuple[int, ...]:
    """The Dask block of ``source``: its file chunk, whole multiples of it, or what ``chunks`` asks."""
    shape, base, unit = source.shape, source.file_chunks, source.read_unit
    if chunks == "file":
        return base
    if chunks == "auto":
        return _auto_block(shape, base, source.dtype.itemsize, dims[0] == "step")
    block = list(base)
    for axis, dim in enumerate(dims):
        if dim not in chunks:
            continue
        size = int(chunks[dim])
        if size == -1 or size >= shape[axis]:
            block[axis] = max(shape[axis], 1)
        elif size % unit[axis]:
            raise ValueError(f"chunks[{dim!r}] = {size} is not a whole multiple of the HDF5 chunk "
                             f"({unit[axis]}) along {dim!r} of {source.dataset}: each chunk would be read "
                             f"by two tasks; use {max(unit[axis], size // unit[axis] * unit[axis])} or "
                             f"{(size // unit[axis] + 1) * unit[axis]}")
        else:
            block[axis] = size
    return tuple(block)


def _auto_block(shape: tuple[int, ...], base: tuple[int, ...], itemsize: int, history: bool) -> tuple[int, ...]:
    """Grow ``base`` by whole multiples up to Dask's ``array.chunk-size``: x first (whole rows), then the
    snapshots (history), then y, then the other axes.

    Snapshots before rows: a reduction over time then adds up whole blocks
    inside one task, and combines few, small partial results across workers
    (measured: a mean over 8 snapshots of 4096 x 4096 took half the time of
    one over blocks one snapshot deep).
    """
    import dask
    from dask.utils import parse_bytes

    limit = parse_bytes(dask.config.get("array.chunk-size"))
    block = list(base)
    last = len(shape) - 1
    first = 1 if history else 0  # axis 0 of a history array is the snapshots
    order = [last] + ([0] if history and last > 0 else []) + list(range(last - 1, first - 1, -1))
    for axis in order:
        if not shape[axis]:
            break
        wanted = math.ceil(shape[axis] / block[axis])
        allowed = max(1, limit // (math.prod(block) * itemsize))
        factor = min(wanted, allowed)
        block[axis] = min(block[axis] * factor, shape[axis])
        if factor < wanted:
            break
    return tuple(block)


# -- reading blocks (inside Dask tasks) --------------------------------------------------------------------------
class _Blocks:
    """A layer's array in a world file, read a block at a time by Dask.

    It holds the path, never an h5py object: each read opens the file, reads
    and closes it, so the object pickles to Dask's worker processes. ``dtype``,
    ``shape`` and ``ndim`` are what ``dask.array.from_array`` needs;
    ``file_chunks`` the default Dask block, ``read_unit`` what a block's
    sizes must be whole multiples of.
    """

    def __init__(self, path: str, dataset: str, shape: tuple[int, ...], dtype: np.dtype,
                 file_chunks: tuple[int, ...], read_unit: tuple[int, ...]):
        self.path, self.dataset = path, dataset
        self.shape, self.dtype = tuple(int(n) for n in shape), np.dtype(dtype)
        self.file_chunks = tuple(max(1, int(n)) for n in file_chunks)
        self.read_unit = tuple(max(1, int(n)) for n in read_unit)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    #: Live layers change at each commit of a running writer; history entries never change once written.
    live = False

    def __getitem__(self, key: tuple[slice, ...]) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        bounds = [k.indices(n) for k, n in zip(key, self.shape)]
        if any(step != 1 for _, _, step in bounds):
            raise ValueError(f"{type(self).__name__} reads contiguous blocks, got {key!r}")
        bounds = [(start, stop) for start, stop, _ in bounds]

        def read() -> np.ndarray:
            with _open(self.path) as f, _schema.format_errors(self.path, f"reading {self.dataset}"):
                return self._read(f, bounds)

        return _between_commits(self.path, read) if self.live else read()

    def _read(self, f: h5py.File, bounds: list[tuple[int, int]]) -> np.ndarray:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<worldstore blocks {self.dataset} of {self.path!r}: {self.shape} {self.dtype}>"


class _DenseBlocks(_Blocks):
    """A dense dataset: a live layer, or a layer's history. ``steps``: the snapshots expected, checked at
    each read, so a file compacted or replaced since :func:`to_xarray` is refused, not misread."""

    def __init__(self, *args: Any, steps: np.ndarray | None = None):
        super().__init__(*args)
        self.steps = steps

    def _read(self, f: h5py.File, bounds: list[tuple[int, int]]) -> np.ndarray:
        if self.steps is not None:
            _check_steps(f, self.path, self.steps, *bounds[0])
        dset = f[self.dataset]
        if dset.dtype != self.dtype or len(dset.shape) != self.ndim or dset.shape[1:] != self.shape[1:]:
            raise WorldFormatError(f"{self.path}: {self.dataset} is now {dset.shape} {dset.dtype}, not "
                                   f"{self.shape} {self.dtype}: the file changed; call to_xarray again")
        out = np.empty([stop - start for start, stop in bounds], dtype=self.dtype)
        if out.size:
            dset.read_direct(out, tuple(slice(start, stop) for start, stop in bounds))
        return out


class _TemporalHistoryBlocks(_Blocks):
    """A temporal layer's history, (snapshots, H, W): each snapshot's non-zero cells scattered into zeros."""

    def __init__(self, *args: Any, steps: np.ndarray, spec: WorldSpec, name: str):
        super().__init__(*args)
        self.steps, self.spec, self.name = steps, spec, name

    def _read(self, f: h5py.File, bounds: list[tuple[int, int]]) -> np.ndarray:
        (first, last), rows, cols = bounds
        _check_steps(f, self.path, self.steps, first, last)
        group = f[_schema.HISTORY_GROUP]
        out = np.zeros((last - first, rows[1] - rows[0], cols[1] - cols[0]), dtype=self.dtype)
        for i in range(last - first):
            coords, values = snapshot_cells(group, self.spec, self.name, first + i, self.path)
            _scatter(out[i], coords, values, rows, cols)
        return out


class _LiveTemporalBlocks(_Blocks):
    """A live temporal layer: its dense dataset, or its COO datasets while its ``storage`` says sparse
    (looked at when the block is read: the writer may have switched it since)."""

    live = True

    def __init__(self, *args: Any, spec: WorldSpec, name: str):
        super().__init__(*args)
        self.spec, self.name = spec, name

    def _read(self, f: h5py.File, bounds: list[tuple[int, int]]) -> np.ndarray:
        rows, cols = bounds
        dense = f[self.dataset]
        if _plain(dense.attrs.get(_schema.A_STORAGE, "mapped")) != "sparse":
            return dense[rows[0]:rows[1], cols[0]:cols[1]]
        out = np.zeros((rows[1] - rows[0], cols[1] - cols[0]), dtype=self.dtype)
        coords, values = _schema.read_coo(f[_schema.LAYERS_GROUP], self.spec, self.name,
                                          f"{self.path}: {self.dataset}")
        _scatter(out, coords, values, rows, cols)
        return out


def _between_commits(path: str, read: Callable[[], np.ndarray]) -> np.ndarray:
    """``read()`` with no commit of a running writer applied while it ran (the ``/commit`` sequence number,
    see :mod:`worldstore.commit`): a live block is never half of one commit and half of the next. Each
    try opens the file afresh, so HDF5 serves no bytes it cached before."""
    with _open(path) as f, _schema.format_errors(path, "reading /commit"):
        offset = _schema.commit_offset(f, os.path.getsize(path), path)
    fd = _platform.open_fd(path, os.O_RDONLY)  # (offset None, a file from before commits: consistent() reads once)
    try:
        return consistent(path, fd, offset, read)[1]
    finally:
        os.close(fd)


def _check_steps(f: h5py.File, path: str, steps: np.ndarray, first: int, last: int) -> None:
    stored = f[f"{_schema.HISTORY_GROUP}/step"]
    if stored.shape[0] < last or not np.array_equal(stored[first:last], steps[first:last]):
        raise WorldFormatError(f"{path}: the history's snapshots {first}..{last - 1} are not the ones "
                               "to_xarray found (the file was compacted or replaced since): call to_xarray again")


def _scatter(out: np.ndarray, coords: np.ndarray, values: np.ndarray, rows: tuple[int, int],
             cols: tuple[int, int]) -> None:
    """Write the cells (checked to lie inside the world) that fall inside ``rows`` x ``cols`` into ``out``."""
    ys, xs = coords[:, 0], coords[:, 1]
    keep = (ys >= rows[0]) & (ys < rows[1]) & (xs >= cols[0]) & (xs < cols[1])
    out[ys[keep] - rows[0], xs[keep] - cols[0]] = values[keep]


def _history_array(path: str, group: h5py.Group, spec: WorldSpec, name: str, steps: np.ndarray) -> _Blocks:
    count = len(steps)
    layer = spec.layer(name)
    shape = (count,) + spec.shape_of(name)
    if layer.grid_class == "temporal":
        values = group[_schema.history_names(spec, name)[1]]
        if values.dtype != layer.np_dtype:
            raise WorldFormatError(f"{path}: history of {name!r} holds {values.dtype}, not {layer.np_dtype}")
        grid = spec.shape_of(name)
        return _TemporalHistoryBlocks(path, f"/{_schema.HISTORY_GROUP}/{name}", shape, layer.np_dtype,
                                      (1,) + grid, (1,) * len(shape), steps=steps, spec=spec, name=name)
    dset = group[name]
    if dset.shape[1:] != shape[1:] or dset.shape[0] < count or dset.dtype != layer.np_dtype:
        raise WorldFormatError(f"{path}: history dataset of {name!r} is {dset.shape} {dset.dtype}; the layer "
                               f"needs ({count}, ...{shape[1:]}) {layer.np_dtype}")
    file_chunks = dset.chunks or _schema.history_chunks(spec.shape_of(name))
    return _DenseBlocks(path, dset.name, shape, layer.np_dtype, file_chunks, file_chunks, steps=steps)


def _live_array(path: str, group: h5py.Group, spec: WorldSpec, name: str) -> _Blocks:
    layer = spec.layer(name)
    shape = spec.shape_of(name)
    dset = group[name]
    if dset.chunks is None:  # contiguous (as worldstore writes them): the history's tiles, any block reads well
        file_chunks, unit = _schema.history_chunks(shape)[1:], (1,) * len(shape)
    else:
        file_chunks = unit = dset.chunks
    if layer.grid_class == "temporal":
        return _LiveTemporalBlocks(path, dset.name, shape, layer.np_dtype, shape, (1,) * len(shape), spec=spec,
                                   name=name)
    source = _DenseBlocks(path, dset.name, shape, layer.np_dtype, file_chunks, unit)
    source.live = True
    return source


# -- several worlds ------------------------------------------------------------------------------------------
def _check_alike(paths: list[str], datasets: list[Any], history: bool, join: str) -> None:
    """Refuse worlds that cannot be stacked, saying how they differ (xarray's own errors are vaguer)."""
    first = datasets[0]
    for path, ds in zip(paths[1:], datasets[1:]):
        for name in set(first.data_vars) | set(ds.data_vars):
            if name not in ds.data_vars or name not in first.data_vars:
                raise ValueError(f"worlds {paths[0]} and {path} do not have the same layers: "
                                 f"{sorted(first.data_vars)} and {sorted(ds.data_vars)}; pass layers=[...]")
            a, b = first[name], ds[name]
            if a.dims != b.dims or a.shape[history:] != b.shape[history:] or a.dtype != b.dtype:
                raise ValueError(f"layer {name!r} differs between {paths[0]} ({a.shape} {a.dtype}) and {path} "
                                 f"({b.shape} {b.dtype}): only worlds of one layout stack along 'world'")
        if history and join == "exact" and not np.array_equal(first["step"].values, ds["step"].values):
            raise ValueError(f"worlds {paths[0]} and {path} have snapshots at different steps "
                             f"({_steps_text(first)} and {_steps_text(ds)}): pass join='inner' to keep the "
                             "steps all worlds have, join='outer' to keep every step (NaN where a world has "
                             "none), or open the worlds one by one")


def _steps_text(ds: Any) -> str:
    steps = ds["step"].values.tolist()
    return "[" + ", ".join(map(str, steps[:8])) + (", ..." if len(steps) > 8 else "") + "]"
