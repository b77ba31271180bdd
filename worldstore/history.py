"""History: snapshots of a world's committed state, past states read back, and restores.

A snapshot appends every layer's committed state to /history (see
``_schema``): dense layers as one more entry along axis 0 of a chunked,
gzip-compressed dataset, temporal layers as their non-zero cells appended to
COO datasets with the snapshot's start offset. ``history.step`` and
``history.time`` index the snapshots. Nothing is ever created after the
world's creation, only extended, so snapshots also work in HDF5's SWMR
writing mode.

``World.at(step)`` gives a read-only :class:`PastWorld`: layer reads, windows
(which decompress only the chunks they touch) and ``observe`` work on it.
``World.restore(step)`` makes that state live again.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from typing import Any

import h5py
import numpy as np

from . import _extras, _schema
from .commit import checkpoint, release, reserve
from .errors import HistoryError, ReadOnlyWorldError, WorldFormatError
from .layer import coo_of
from .spec import LayerSpec, WorldSpec
from .storage import SparseStorage

from .observe import observe
from .world import OPERATIONS, World


def history_group(world: "World") -> h5py.Group:
    _schema.load_filters()
    with _schema.format_errors(world.path, "the history group"):
        group = world._file.get(_schema.HISTORY_GROUP)
    if not isinstance(group, h5py.Group):
        raise HistoryError(f"{world.path} has no history (it was written by an older worldstore, format 1): "
                           "create a new world to take snapshots")
    return group


def snapshots(world: "World") -> list[dict[str, Any]]:
    """Every snapshot, oldest first: ``index``, ``step``, ``time`` (Unix seconds) and ``bytes`` stored."""
    group = history_group(world)
    with _schema.format_errors(world.path, "the history"):
        count = snapshot_count(group)
        steps, times = group["step"][:count], group["time"][:count]
        sizes = _bytes_per_snapshot(world, group, count)
    return [{"index": i, "step": int(steps[i]), "time": float(times[i]), "bytes": int(sizes[i])}
            for i in range(len(steps))]


def snapshot_count(group: h5py.Group) -> int:
    """Complete snapshots: ``step`` is written last, after ``time`` and every layer, so an entry of
    ``step`` without its ``time`` (or layers) is a snapshot a killed writer left unfinished."""
    step, when = group["step"], group["time"]
    if step.ndim != 1 or when.ndim != 1:
        raise WorldFormatError(f"history step and time must be 1-D, got {step.shape} and {when.shape}")
    return min(step.shape[0], when.shape[0])


def _bytes_per_snapshot(world: "World", group: h5py.Group, count: int) -> np.ndarray:
    """Stored (compressed) bytes of each snapshot: its chunks of dense layers, its share of COO chunks."""
    sizes = np.zeros(count, dtype=np.int64)
    for layer in world.spec.layers:
        names = _schema.history_names(world.spec, layer.name)
        if layer.grid_class == "temporal":
            coords, values, start = (group[name] for name in names)
            total = len(values)
            if not total:
                continue
            stored = sum(_stored_bytes(dset) for dset in (coords, values))
            bounds = np.append(start[...], total)
            sizes += (stored * np.diff(bounds) // total).astype(np.int64)[:count]
            continue
        dset = group[names[0]]

        def add(info, dset=dset) -> None:
            if info.chunk_offset[0] < count:  # beyond: what an interrupted snapshot left; the next overwrites it
                sizes[info.chunk_offset[0]] += info.size

        dset.id.chunk_iter(add)
    return sizes


def _stored_bytes(dset: h5py.Dataset) -> int:
    total = [0]

    def add(info) -> None:
        total[0] += info.size

    dset.id.chunk_iter(add)
    return total[0]


def snapshot(world: "World", on_progress: Any = None, durable: bool = True) -> dict[str, Any]:
    """Commit, then append every layer's state to the history. Returns the snapshot's record.

    ``on_progress(done, total)`` is called after each layer. ``durable``: the
    commit and then the appended snapshot are fsync'd, as :meth:`World.commit` does.
    """
    world._check_writable()
    group = history_group(world)
    world.commit(durable=durable)
    reserve(world, _snapshot_bound(world, group), "the snapshot")
    index = _append_snapshot(world, group, on_progress)
    release(world)
    world._durable_pending = world._durable_pending or durable
    checkpoint(world)  # HDF5's structures changed: the file is fsync'd (if durable) and the journal goes
    return {"index": index, "step": world.current_step, "time": float(group["time"][index])}


def _append_snapshot(world: "World", group: h5py.Group, on_progress: Any) -> int:
    index = snapshot_count(group)  # an unfinished snapshot left by a killed writer is overwritten
    layers = world.layers
    for done, (name, layer) in enumerate(layers.items(), start=1):
        storage = world._storages[name]
        if layer.grid_class == "temporal":
            _append_coo(group, world.spec, name, index, *coo_of(storage))
        else:
            dset = group[name]
            dset.resize(index + 1, axis=0)
            dset[index] = storage.array
        if on_progress is not None:
            on_progress(done, len(layers))
    append_clock(group, index, time.time(), world.current_step)
    world._file.flush()
    return index


def append_clock(group: h5py.Group, index: int, when: float, step: int) -> None:
    """Record snapshot ``index``'s time and step; the step last: it completes the snapshot."""
    for dset_name, value in (("time", when), ("step", step)):
        dset = group[dset_name]
        dset.resize((index + 1,))
        dset[index] = value


def _snapshot_bound(world: "World", group: h5py.Group) -> int:
    """The most bytes a snapshot can add to the file: every chunk stored uncompressed, plus room."""
    total = 1 << 20
    for name, layer in world.layers.items():
        if layer.grid_class == "temporal":
            nnz = layer.nnz
            chunk = group[_schema.history_names(world.spec, name)[1]].chunks[0]
            total += (nnz + 2 * chunk) * (8 + layer.dtype.itemsize)
        else:
            chunks = group[name].chunks
            count = math.prod(-(-size // edge) for size, edge in zip(layer.shape, chunks[1:]))
            total += count * math.prod(chunks[1:]) * layer.dtype.itemsize
    return total + total // 64


def _append_coo(group: h5py.Group, spec: WorldSpec, name: str, index: int, coords: np.ndarray,
                values: np.ndarray) -> None:
    """Store snapshot ``index`` of temporal layer ``name`` (entries past ``index`` left by an interrupted
    snapshot are overwritten)."""
    coords_name, values_name, start_name = _schema.history_names(spec, name)
    start = group[start_name]
    # Start on a chunk boundary: the previous snapshot's last chunk is never written again (the gap
    # is never written either, so it takes no space).
    chunk = group[values_name].chunks[0]
    begin = -(-group[values_name].shape[0] // chunk) * chunk
    if 0 < index < start.shape[0] and int(start[index]) >= int(start[index - 1]):
        # A writer killed in this snapshot had written where it begins (before any of its cells), and
        # maybe some cells past it: begin there again. Beginning past those cells would hand them to the
        # snapshot before, which ends where this one begins.
        begin = int(start[index])
    end = begin + len(values)
    # Where this snapshot begins is written (and flushed) before its cells: a SWMR reader of the snapshot
    # before, which ends where this one begins, never takes these cells for its own (see read_state).
    start.resize((index + 1,))
    start[index] = begin
    group.file.flush()
    group[coords_name].resize((end, 2))
    group[values_name].resize((end,))
    rows = group.get(_schema.history_row_name(name))
    if rows is not None:  # the rows' dimension follows them (files before it have none)
        rows.resize((end,))
    if len(values):
        group[coords_name][begin:end] = np.asarray(coords, dtype=np.int32)
        group[values_name][begin:end] = values


def find(world: "World", step: Any) -> int:
    """The index of the latest snapshot taken at ``step``, or :class:`HistoryError` naming the steps there are."""
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)):
        raise HistoryError(f"a step is an integer, got {step!r}")
    with _schema.format_errors(world.path, "the history's steps"):
        group = history_group(world)
        steps = group["step"][:snapshot_count(group)]
    matches = np.flatnonzero(steps == step)
    if not len(matches):
        known = np.unique(steps)
        shown = ", ".join(str(int(s)) for s in known[:10]) + (", ..." if len(known) > 10 else "")
        raise HistoryError(f"no snapshot at step {step} in {world.path}; snapshots exist at steps: "
                           f"{shown or 'none (take one with snapshot())'}")
    return int(matches[-1])


def snapshot_cells(group: h5py.Group, spec: WorldSpec, name: str, index: int,
                   path: str) -> tuple[np.ndarray, np.ndarray]:
    """Temporal layer ``name``'s non-zero cells at snapshot ``index`` of ``group`` (/history): ``(coords, values)``.

    Checks that the snapshot's range fits the stored cells and that they lie
    inside the world (:class:`WorldFormatError`). A SWMR reader refreshes the
    datasets first (:func:`_refresh_cells`). Used by :func:`read_state`,
    ``to_xarray`` and ``validate``.
    """
    where = f"layer {name!r} at snapshot {index}"
    coords_name, values_name, start_name = _schema.history_names(spec, name)
    starts, values, coords_dset = group[start_name], group[values_name], group[coords_name]
    if group.file.swmr_mode and group.file.mode == "r":  # a SWMR reader: see the datasets as they are now
        _refresh_cells(values, coords_dset)
        starts.refresh()  # the cells' extent first, then the starts: cells seen are never newer than the starts
    total = values.shape[0]
    begin = int(starts[index])
    # Up to where the next snapshot begins (its start is written before its cells, which a writer
    # killed in between never wrote), or to the end.
    end = min(int(starts[index + 1]), total) if index + 1 < starts.shape[0] else total
    if not 0 <= begin <= end <= total or coords_dset.shape != (total, 2):
        raise WorldFormatError(f"{path}: {where}: its cells [{begin}, {end}) do not fit the {total} stored")
    coords = coords_dset[begin:end].astype(np.int64)
    if len(coords) and (coords.min() < 0 or coords[:, 0].max() >= spec.height or coords[:, 1].max() >= spec.width):
        raise WorldFormatError(f"{path}: {where}: coordinates lie outside the world")
    # Snapshots store non-zero cells only; the rows up to the next snapshot's chunk boundary were
    # never written and read as cell (0, 0) = 0: dropped.
    values = values[begin:end]
    keep = values != 0
    return coords[keep], values[keep]


#: How often a SWMR reader refreshes a temporal layer's history cells that a landing snapshot left of two sizes.
_REFRESH_TRIES = 100


def _refresh_cells(values: h5py.Dataset, coords: h5py.Dataset) -> None:
    """Refresh a temporal layer's history cells in a SWMR reader until their two datasets agree in extent. A
    snapshot that lands between the two refreshes (or, in a file opened afresh, between the two datasets'
    opens) leaves them of two sizes: the writer resizes both before one flush (580e2bb: the viewer; then
    ``to_xarray``'s blocks, which open the file for each read)."""
    for _ in range(_REFRESH_TRIES):
        values.refresh()
        coords.refresh()
        if coords.shape[0] == values.shape[0]:
            return
        time.sleep(0.001)


def read_state(world: "World", index: int, name: str) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Layer ``name`` at snapshot ``index``: a dense array, or ``(coords, values)`` of a temporal layer."""
    group = history_group(world)
    spec = world.spec
    where = f"layer {name!r} at snapshot {index}"
    with _schema.format_errors(world.path, where):
        if spec.layer(name).grid_class == "temporal":
            return snapshot_cells(group, spec, name, index, world.path)
        dset = group[name]
        if dset.shape[1:] != spec.shape_of(name) or dset.dtype != spec.layer(name).np_dtype:
            raise WorldFormatError(f"{world.path}: {where}: history dataset {dset.shape} {dset.dtype} disagrees "
                                   f"with the layer")
        return dset[index]


def restore(world: "World", step: Any) -> None:
    """Make the state of the snapshot at ``step`` live; the step counter goes back to ``step``."""
    world._check_owner()
    if not world.writable:
        raise ReadOnlyWorldError(f"restore() changes the world: {world.path} is open read-only; open it with "
                                 "mode 'r+'")
    index = find(world, step)
    for name, layer in world.layers.items():
        state = read_state(world, index, name)
        storage = world._storages[name]
        if layer.grid_class == "temporal":
            coords, values = state
            group = world._file[_schema.LAYERS_GROUP]
            replacement = SparseStorage.from_coo(group, world.spec, name, coords, values, True)
            if isinstance(storage, SparseStorage):
                world._replace_storage(name, replacement)
            else:
                array = storage.array
                array[...] = 0
                array[tuple(coords.T)] = values
        else:
            storage.array[...] = state
    world._step = int(step)
    world.commit()


class _PastStorage:
    """A past dense layer, read from the history when first asked for."""

    kind = "history"

    def __init__(self, world: "World", index: int, name: str):
        self._world, self._index, self._name = world, index, name
        self._array: np.ndarray | None = None

    @property
    def array(self) -> np.ndarray:
        if self._array is None:
            self._array = np.asarray(read_state(self._world, self._index, self._name))
            self._array.flags.writeable = False
        return self._array

    def window(self, rows: slice, cols: slice) -> np.ndarray:
        with _schema.format_errors(self._world.path, f"layer {self._name!r} at snapshot {self._index}"):
            return history_group(self._world)[self._name][self._index, rows, cols]


class PastLayer:
    """A layer of a :class:`PastWorld`: read-only, its state at one snapshot."""

    def __init__(self, world: "World", index: int, spec: LayerSpec, shape: tuple[int, ...]):
        self._spec = spec
        self._shape = shape
        if spec.grid_class == "temporal":
            coords, values = read_state(world, index, spec.name)
            self._storage: Any = SparseStorage.from_coo(None, world.spec, spec.name, coords, values, False)
        else:
            self._storage = _PastStorage(world, index, spec.name)

    name = property(lambda self: self._spec.name)
    spec = property(lambda self: self._spec)
    grid_class = property(lambda self: self._spec.grid_class)
    dtype = property(lambda self: self._spec.np_dtype)
    shape = property(lambda self: self._shape)
    ndim = property(lambda self: len(self._shape))
    pad_value = property(lambda self: self._spec.pad_value)
    fill_value = property(lambda self: self._spec.fill_value)
    storage = property(lambda self: "history")

    def _live(self):
        return self._storage

    def numpy(self) -> np.ndarray:
        """The whole layer (read-only)."""
        return self._storage.array

    def tensor(self):
        return _extras.torch("at(step)[name].tensor()").from_numpy(self.numpy().copy())

    def coo(self) -> tuple[np.ndarray, np.ndarray]:
        """``(coords, values)`` of the non-zero cells, row-major order (as :meth:`Layer.coo`)."""
        return coo_of(self._storage)

    def window(self, rows: slice, cols: slice) -> np.ndarray:
        """``[rows, cols]`` of a 2-D layer, decompressing only the chunks it touches."""
        if self.ndim != 2:
            raise HistoryError(f"layer {self.name!r}: window() reads 2-D layers; this one has shape {self._shape}")
        return self._storage.window(rows, cols)

    def __getitem__(self, index: Any) -> np.ndarray:
        return self.numpy()[index]

    def __array__(self, dtype=None, copy=None):
        array = self.numpy()
        return array.astype(dtype) if dtype is not None else (array.copy() if copy else array)

    def __repr__(self) -> str:
        return f"<worldstore past layer {self.name!r} {self.grid_class} {self._shape} {self.dtype}>"


class PastWorld:
    """A world's state at one snapshot, read-only: ``world.at(step)``.

    Layers are read from the history when first asked for; ``window`` reads
    decompress only the chunks they touch; ``observe`` works as on a live
    world (reading whole channels).
    """

    def __init__(self, world: "World", step: int):
        self._world = world
        self._index = find(world, step)
        self._step = int(step)
        self._layers: dict[str, PastLayer] = {}
        self._pinned: dict = {}

    @property
    def step(self) -> int:
        return self._step

    current_step = step
    spec = property(lambda self: self._world.spec)
    shape = property(lambda self: self._world.shape)
    height = property(lambda self: self._world.height)
    width = property(lambda self: self._world.width)
    agents = property(lambda self: self._world.agents)
    path = property(lambda self: self._world.path)
    writable = False

    def __getitem__(self, name: str) -> PastLayer:
        spec = self._world.spec.layer(name)  # LayerNotFoundError for an unknown name
        if name not in self._layers:
            self._layers[name] = PastLayer(self._world, self._index, spec, self._world.spec.shape_of(name))
        return self._layers[name]

    def __contains__(self, name: object) -> bool:
        return name in self._world

    def __iter__(self) -> Iterator[str]:
        return iter(self._world)

    def __repr__(self) -> str:
        return f"<worldstore past world {self._world.path!r} at step {self._step}>"

    def _check_writable(self) -> None:
        raise ReadOnlyWorldError(f"{self!r} is a past state: it cannot change; restore() it to change it")

    def observe(self, positions: Any, radius: Any = None, channels: Any = None, **options: Any) -> Any:
        """As :meth:`World.observe`, on the past state (``into=`` is refused: the past is read-only)."""

        return observe(self, positions, radius, channels, **options)


# World.snapshot, World.history, World.at and World.restore hand over to these
OPERATIONS.update(snapshot=snapshot, history=snapshots, at=PastWorld, restore=restore)
