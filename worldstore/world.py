"""Creating and opening worlds: one HDF5 file, layers as mapped or in-RAM arrays."""

from __future__ import annotations

import atexit
import dataclasses
import errno
import os
import uuid
import weakref
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import h5py
import numpy as np

from . import _native, _platform, _schema, recovery, temporal
from . import commit as _commit
from .errors import (DecayError, DepositError, DetachedWorldError, DiskFullError, HistoryError, ReadOnlyWorldError, SpecError,
                     WorldClosedError, WorldExistsError, WorldFormatError, WorldLockedError, WorldNotFoundError,
                     WorldPermissionError, WorldReplacedError, WorldstoreError)
from .layer import Layer
from .spec import DENSE_KINDS, STORAGE_KINDS, WorldSpec
from .storage import LayerStorage, MappedStorage, MemoryStorage, SparseStorage, hdf5journal

_MODES = ("r", "r+")


#: What World's methods hand over to the operations above it (worldstore.observe, worldstore.history,
#: worldstore.summary): each of those modules registers its functions here when it is imported, and
#: worldstore/__init__ imports them all. So this module never imports one above it (dependencies run one
#: way: storage, the commit engine, the world, then the operations).
OPERATIONS: dict[str, Callable[..., Any]] = {}


def _operation(name: str) -> Callable[..., Any]:
    try:
        return OPERATIONS[name]
    except KeyError:
        raise RuntimeError(f"worldstore's {name!r} operation is not registered: import worldstore (the package "
                           "imports the modules that provide it)") from None


class World:
    """One simulated world: its layers, its step counter, its file.

    Get one from :func:`create` or :func:`open`; use it as a context manager
    so it is flushed and closed. Layers are looked up by name.

    >>> import worldstore, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "farm.h5")
    >>> with worldstore.create(path, worldstore.presets.agentfarm(64, 64, 4)) as world:
    ...     world["RESOURCES"][10, 10] = 2.0
    ...     _ = world.step()
    >>> with worldstore.open(path) as world:
    ...     float(world["RESOURCES"][10, 10]), world.current_step
    (2.0, 1)
    """

    def __init__(self, h5file: h5py.File, fd: int, path: str, mode: str, spec: WorldSpec,
                 layers: dict[str, Layer], storages: dict[str, LayerStorage], step: int, committed: int,
                 lock_fd: int | None = None):
        # Private: use worldstore.create / worldstore.open.
        _OPEN.add(self)
        self._file: h5py.File | None = h5file
        self._fd = fd
        # A writer's lock on the file, on a descriptor of its own (see recovery.hold_writer_lock).
        self._lock_fd = lock_fd
        # The process that opened the world: the only one that may commit, flush, close or recover it.
        self._pid = os.getpid()
        self._detached = False
        # The file's identity (_schema.ROOT_WORLD_ID), recorded in each journal.
        self._world_id = _schema.read_world_id(h5file)
        # Where the layers' bytes end in the file (a file now shorter was cut under us), and the count of
        # faults in cut-short mappings last seen (worldstore/_guard.c).
        self._layers_end = 0
        self._faults_seen = _native.faults_total()
        self._path = path
        self._mode = mode
        self._spec = spec
        self._layers = layers
        self._storages = storages
        self._step = step
        self._committed = committed
        # /commit: where its [sequence, committed step] lies (None in older files) and the sequence now.
        self._sequence_offset: int | None = None
        self._sequence = 0
        # A durable commit is in the journal whose file pages are not yet fsync'd (see commit.checkpoint),
        # and where the next record goes in it.
        self._durable_pending = False
        self._journal_end = 0
        # What the commits know of the file's HDF5 side (commit.FileState), made at the first commit.
        self._file_state = None
        # This open, named in the journal records it writes (a replaced file's journal is removed only by
        # the writer that wrote it).
        self._session = uuid.uuid4().hex
        # Storages replaced since the last commit (set_storage): their written pages are still to commit.
        self._retired: list[LayerStorage] = []
        # Page-locked host buffers of observe(device="cuda"), by shape and dtype.
        self._pinned: dict = {}
        # The storage overrides open() was given (refresh() applies them again).
        self._overrides: Mapping[str, str] | None = None
        # The dense kind a temporal layer returns to when it leaves sparse storage.
        self._dense_kind = {layer.name: layer.storage if layer.storage in DENSE_KINDS else "mapped"
                            for layer in spec.layers}

    # -- what it is -------------------------------------------------------
    @property
    def path(self) -> str:
        return self._path

    @property
    def mode(self) -> str:
        return self._mode

    @property
    def writable(self) -> bool:
        return self._mode == "r+"

    @property
    def closed(self) -> bool:
        return self._file is None

    @property
    def spec(self) -> WorldSpec:
        """The world's specification, with the storage kinds in use."""
        return self._spec

    @property
    def height(self) -> int:
        return self._spec.height

    @property
    def width(self) -> int:
        return self._spec.width

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)`` of the world's grids."""
        return (self._spec.height, self._spec.width)

    @property
    def agents(self) -> int:
        return self._spec.agents

    @property
    def current_step(self) -> int:
        """Steps taken since creation (advanced by :meth:`step`)."""
        return self._step

    @property
    def committed_step(self) -> int:
        """The step the file held at the last :meth:`commit`."""
        return self._committed

    @property
    def layers(self) -> Mapping[str, Layer]:
        """Layers by name, in spec order."""
        self._check_open()
        return dict(self._layers)

    def __getitem__(self, name: str) -> Layer:
        self._check_open()
        if name not in self._layers:
            self._spec.layer(name)  # raises LayerNotFoundError listing the names
        return self._layers[name]

    def __contains__(self, name: object) -> bool:
        return name in self._layers

    def __iter__(self) -> Iterator[str]:
        return iter(self._layers)

    def __len__(self) -> int:
        return len(self._layers)

    def __repr__(self) -> str:
        if self.closed:
            return f'<worldstore world "{self._path}" (closed)>'
        return (f'<worldstore world "{self._path}" ({self._mode}): {self.height}x{self.width}, '
                f'{self.agents} agents, {len(self._layers)} layers, step {self._step}>')

    def describe(self) -> dict[str, Any]:
        """The world as a JSON-able dictionary (the ``worldstore inspect --json`` schema)."""
        return _operation("describe")(self)

    # -- time -------------------------------------------------------------
    def deposit(self, layer: str, ys: Any, xs: Any, values: Any, mode: str = "add", *,
                clip: Any = None, out_of_bounds: str = "raise") -> None:
        """Deposit ``values`` at cells ``(ys[i], xs[i])`` of temporal layer ``layer``.

        ``mode``: ``"add"`` (repeated cells accumulate), ``"max"`` (the largest
        wins, against the cell's value too) or ``"set"`` (the last one wins).
        Inputs are numpy arrays, torch tensors or sequences of integer
        coordinates; ``values`` may be a scalar.

        ``clip=(lo, hi)`` clamps every cell the deposit touches to
        ``[lo, hi]`` after its update (either bound may be None), as
        AgentFarm's ``TemporalGridManager.deposit(..., clip_max=1.0)`` does
        (for "add" with non-negative values, the same as clamping after each
        event). ``out_of_bounds="ignore"`` drops coordinates outside the world,
        as AgentFarm does; the default ``"raise"`` refuses the deposit.

        Everything is checked first: coordinates outside the world (unless
        ignored), mismatched lengths, non-finite values, an unknown mode, a bad
        ``clip`` or a non-temporal layer raise :class:`DepositError` and change
        nothing.

        >>> import worldstore, tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "w.h5")
        >>> spec = worldstore.WorldSpec(8, 8, 0, [worldstore.LayerSpec("HEAT", "temporal", decay=0.5)])
        >>> with worldstore.create(path, spec) as world:
        ...     world.deposit("HEAT", [1, 1, 2], [3, 3, 4], [1.0, 2.0, 0.5])
        ...     float(world["HEAT"][1, 3]), world.step(), float(world["HEAT"][1, 3])
        ...     world.deposit("HEAT", [1, -1, 99], [3, 0, 0], 5.0, clip=(None, 2.0), out_of_bounds="ignore")
        ...     float(world["HEAT"][1, 3])
        (3.0, 1, 1.5)
        2.0
        """
        self._check_writable()
        target = self[layer]
        if target.grid_class != "temporal":
            raise DepositError(f"deposits go into temporal layers; {layer!r} is a {target.grid_class} layer")
        bounds = temporal.check_clip(layer, clip, target.dtype)
        cells, amounts = temporal.check_deposit(layer, self.shape, target.dtype, ys, xs, values, mode,
                                                out_of_bounds)
        cells, amounts = temporal.combine(cells, amounts, mode)
        storage = self._storages[layer]
        sparse = isinstance(storage, SparseStorage)
        if bounds is not None:  # the clamped values are computed here, then set: the same for every storage kind
            old = temporal.lookup(storage.cells, storage.values, cells) if sparse else storage.array.reshape(-1)[cells]
            amounts, mode = temporal.clamped(old, amounts, mode, bounds), "set"
        if sparse:
            storage.deposit(cells, amounts, mode)
        else:
            temporal.apply_dense(storage.array, cells, amounts, mode)

    def observe(self, positions: Any, radius: Any = None, channels: Any = None, *, out: Any = None,
                dtype: Any = None, agent_ids: Any = None, tensor: bool = False, device: Any = None,
                into: Any = None, normalize: Any = None, clip: Any = None) -> Any:
        """Each agent's window of each channel, batched: ``(N, C, S, S)``, ``S = 2 * radius + 1``.

        ``positions``: ``(N, 2)`` integer ``(y, x)`` rows inside the world
        (numpy or torch). Agent ``i``'s window covers rows ``y-radius..y+radius``
        and columns ``x-radius..x+radius`` of each layer named in
        ``channels``, in the order given; cells outside the world take the
        layer's pad value. Channels may be of any class but observation; a
        sparse layer is read from its stored cells only; an agent layer gives
        agent ``i`` its own layer (``agent_ids[i]``, by default ``i``, which
        then needs one position per agent). ``radius`` and ``channels``
        default to those of the world's observation layer.

        ``normalize={channel: n}`` divides that channel's windows by ``n``,
        then ``clip={channel: (lo, hi)}`` clamps them (either bound may be
        None), over the whole window, padding included: AgentFarm's resource
        windows are ``normalize={"RESOURCES": max_amount}`` with
        ``clip={"RESOURCES": (0, 1)}``.

        Output: float32 unless ``dtype`` says otherwise (float16/32/64, numpy
        or torch dtypes, or ``torch.bfloat16``, gathered in float32 and
        converted by torch into a new tensor or a bfloat16 ``out``). A new
        numpy array, or a zero-copy torch tensor over it with
        ``tensor=True``; or the caller's ``out`` (numpy array or CPU tensor of
        the right shape, filled and returned: no allocation in a steady loop);
        or, with ``into=True`` (or the layer's name), the world's mapped
        observation layer, which other processes can read. With ``into`` and
        ``agent_ids`` (agent slots, see :class:`worldstore.AgentSlots`),
        agent ``i``'s windows go to row ``agent_ids[i]`` of the observation
        layer, so a population smaller than the world's agent count fills its
        own slots (other rows keep what they held), and the batch of those
        rows is returned.
        ``device="cuda"`` gathers into a page-locked buffer kept by the world
        and returns the batch on the GPU (copied asynchronously, into ``out``
        if given). Bad arguments raise :class:`ObserveError` (or
        :class:`LayerNotFoundError`) before anything is written.

        >>> import worldstore, tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "w.h5")
        >>> spec = worldstore.WorldSpec(4, 4, 0, [worldstore.LayerSpec("FOOD", "resource", pad_value=-1.0)])
        >>> with worldstore.create(path, spec) as world:
        ...     world["FOOD"][:] = 1.0
        ...     world.observe([[0, 0]], radius=1, channels=["FOOD"])[0, 0].tolist()
        ...     world.observe([[0, 0]], 1, ["FOOD"], normalize={"FOOD": 2}, clip={"FOOD": (0, 1)})[0, 0, 1].tolist()
        [[-1.0, -1.0, -1.0], [-1.0, 1.0, 1.0], [-1.0, 1.0, 1.0]]
        [0.0, 0.5, 0.5]
        """
        self._check_open()
        return _operation("observe")(self, positions, radius, channels, out=out, dtype=dtype, agent_ids=agent_ids,
                                     tensor=tensor, device=device, into=into, normalize=normalize, clip=clip)

    def remember(self, agent_ids: Any, positions: Any, radius: Any, channels: Any, *,
                 visibility: Any = "default") -> None:
        """Copy what each agent sees into its own agent layer, where ``visibility`` allows.

        Agent ``agent_ids[i]`` at ``positions[i]`` sees its window of radius
        ``radius``; for each ``{agent_layer: source_layer}`` in ``channels``,
        the visible cells of that window are copied from the source layer into
        ``agent_layer[agent_ids[i]]`` (cast to its dtype); the rest of the
        agent's layer keeps what it remembered. ``visibility``: a boolean
        ``(H, W)`` layer name, by default ``"VISIBILITY"`` when the world has
        one, or ``None`` to see everything. Agent layers are mapped by
        default, so memory use follows the cells agents actually see. With a
        changing population, pass the agents' slots
        (:meth:`worldstore.AgentSlots.slots_of`) as ``agent_ids``.

        >>> import worldstore, tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "w.h5")
        >>> spec = worldstore.presets.classic(8, 8, 2)
        >>> with worldstore.create(path, spec) as world:
        ...     world["RESOURCES"][:] = 5.0
        ...     world["VISIBILITY"][2, :] = False
        ...     world.remember([0, 1], [[2, 2], [7, 7]], 1, {"AGENT_MEMORY": "RESOURCES"})
        ...     world["AGENT_MEMORY"][0, 1:4, 2].tolist(), float(world["AGENT_MEMORY"][1].sum())
        ([5.0, 0.0, 5.0], 20.0)
        """
        self._check_open()

        _operation("remember")(self, agent_ids, positions, radius, channels, visibility=visibility)

    # -- history ------------------------------------------------------------
    def snapshot(self, on_progress: Any = None, *, durable: bool = True) -> dict[str, Any]:
        """Commit, then append every layer's state to the world's history; return the snapshot's record.

        Dense layers are stored chunked and compressed (the world's history
        codec), temporal layers as their non-zero cells; the record has the
        snapshot's ``index``, ``step`` and wall-clock ``time``.
        ``on_progress(done, total)`` is called after each layer.
        ``durable`` as in :meth:`commit`: ``True`` fsyncs the commit and then
        the snapshot, so it survives a power cut; a killed process needs no fsync
        (a snapshot cut short is not counted: the step is written last).

        >>> import worldstore, tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "w.h5")
        >>> with worldstore.create(path, worldstore.presets.agentfarm(16, 16, 2)) as world:
        ...     world["RESOURCES"][:] = 1.0
        ...     first = world.snapshot()
        ...     world["RESOURCES"][:] = 2.0
        ...     world.step()
        ...     second = world.snapshot()
        ...     float(world.at(0)["RESOURCES"][3, 3]), [s["step"] for s in world.history()]
        1
        (1.0, [0, 1])
        """
        return _operation("snapshot")(self, on_progress, durable)

    def refresh(self) -> int:
        """In a SWMR reader: catch up with what the writer has committed; return the committed step.

        The clock, the history (snapshots), and the layers held in RAM or as
        sparse cells are read again; mapped layers are shared with the writer
        through the page cache all along. Layers taken from the world before
        are stale after a refresh: take them again. A writable world has
        nothing to catch up with and returns its step.

        If the path now names another file (``compact``, ``create
        --overwrite``, a copy renamed over it) or the file was rewritten or
        cut short in place, everything (layers, clock, history) is read again
        from the file there now, all at once; arrays handed out before keep
        what they held. A path with no file any more raises
        :class:`WorldReplacedError`, one that holds no world
        :class:`WorldFormatError` (and the world is closed).
        """
        self._check_open()
        if self.writable:
            return self._step
        try:
            changed = self._file_changed()
        except FileNotFoundError as exc:
            raise WorldReplacedError(f"{self._path} was removed since this reader opened it; what it read before "
                                     "stays valid. Open the world again when a file is there") from exc
        if changed:
            self._reopen()
            return self._committed
        fresh = _load(self._file, self._path, self._mode, self._overrides)
        for storage in self._storages.values():
            storage.close()
        os.close(self._fd)
        self._fd, self._layers, self._storages = fresh._fd, fresh._layers, fresh._storages
        self._spec, self._step, self._committed = fresh._spec, fresh._step, fresh._committed
        self._sequence_offset, self._sequence = fresh._sequence_offset, fresh._sequence
        for layer in self._layers.values():
            layer._guard = self._consistent_read
        fresh._discard()
        return self._committed

    def _reopen(self) -> None:
        """A reader whose path now names another file (compact, ``create --overwrite``, a copy), or whose file
        was rewritten in place: take everything, layers, clock and history, from the file there now, all at
        once. The old file is let go first: HDF5 shares one open per file within a process, and would serve
        a file rewritten in place from what it read before."""
        swmr = self._file.swmr_mode
        for storage in self._storages.values():
            storage.close()
        self._file.close()
        self._file = None  # closed, should the open below fail
        os.close(self._fd)
        fresh = open(self._path, "r", storage=self._overrides, swmr=swmr)
        self._file, self._fd, self._layers, self._storages = fresh._file, fresh._fd, fresh._layers, fresh._storages
        fresh._discard()  # its file, descriptor and storages are this world's now
        self._spec, self._step, self._committed = fresh._spec, fresh._step, fresh._committed
        self._sequence_offset, self._sequence = fresh._sequence_offset, fresh._sequence
        self._world_id, self._dense_kind = fresh._world_id, fresh._dense_kind
        self._layers_end, self._faults_seen = fresh._layers_end, fresh._faults_seen
        for layer in self._layers.values():
            layer._guard = self._consistent_read

    def history(self) -> list[dict[str, Any]]:
        """The snapshots, oldest first: ``index``, ``step``, ``time`` (Unix seconds), ``bytes`` stored."""
        self._check_open()
        return _operation("history")(self)

    def at(self, step: int) -> Any:
        """The world as it was at the snapshot of ``step`` (the latest, if several), read-only.

        Layer reads, ``window`` reads (which decompress only the chunks they
        touch) and ``observe`` work on it; an unknown step raises
        :class:`HistoryError` listing the steps there are.
        """
        self._check_open()
        return _operation("at")(self, step)

    def restore(self, step: int) -> None:
        """Make the state of the snapshot at ``step`` live, and set the step counter back to ``step``.

        Later snapshots stay in the history. The restored state is committed.
        """
        self._check_open()
        _operation("restore")(self, step)

    def step(self, layers: Any = None) -> int:
        """Advance one step: temporal layers decay, the step counter grows by one.

        ``layers``: the temporal layers to decay (a name or a list of names),
        by default all of them; the others keep their values this step (as
        AgentFarm's ``TemporalGridManager.apply_decay(name)`` decays one
        channel). Each is multiplied by its ``decay`` and cells whose
        magnitude falls below its ``threshold`` become 0 (sparse layers drop
        them); subnormal values always become 0, so a threshold of 0 lets
        cells reach 0 (see :mod:`worldstore.temporal`). A layer with a
        ``switch_density`` then changes form if its density crossed it: to
        sparse at or below half of it, to dense above it. Returns the new
        step. An unknown name raises :class:`LayerNotFoundError`, a layer that
        is not temporal :class:`DecayError`, before anything changes.

        >>> import worldstore, tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "w.h5")
        >>> spec = worldstore.WorldSpec(4, 4, 0, [worldstore.LayerSpec("A", "temporal", decay=0.5),
        ...                                       worldstore.LayerSpec("B", "temporal", decay=0.5)])
        >>> with worldstore.create(path, spec) as world:
        ...     world.deposit("A", [0], [0], 1.0); world.deposit("B", [0], [0], 1.0)
        ...     world.step(layers=["A"]), float(world["A"][0, 0]), float(world["B"][0, 0])
        (1, 0.5, 1.0)
        """
        self._check_writable()
        names = self._temporal_layers(layers, "step(layers=...)")
        cells = self.height * self.width
        for name in names:
            spec = self._layers[name].spec
            storage = self._storages[name]
            threshold = temporal.decay_threshold(spec.threshold, spec.np_dtype)
            if isinstance(storage, SparseStorage):
                nnz = storage.decay(spec.decay, threshold)
            else:
                nnz = temporal.decay_dense(storage.array, spec.decay, threshold)
            if spec.switch_density is not None:
                density = nnz / cells
                if storage.kind == "sparse" and density > spec.switch_density:
                    self.set_storage(name, self._dense_kind[name])
                elif storage.kind != "sparse" and density <= spec.switch_density / 2:
                    self.set_storage(name, "sparse")
        self._step += 1
        return self._step

    def _temporal_layers(self, layers: Any, what: str) -> list[str]:
        """The temporal layer names ``layers`` gives (all of them for None), checked."""
        if layers is None:
            return [name for name, layer in self._layers.items() if layer.grid_class == "temporal"]
        names = [layers] if isinstance(layers, str) else list(layers)
        for name in names:
            if not isinstance(name, str):
                raise DecayError(f"{what}: layer names are strings, got {name!r}")
            if self[name].grid_class != "temporal":  # LayerNotFoundError for an unknown name
                raise DecayError(f"{what}: {name!r} is a {self[name].grid_class} layer; only temporal layers "
                                 f"decay (this world's: {', '.join(self._temporal_layers(None, what)) or 'none'})")
        return list(dict.fromkeys(names))

    def set_decay(self, layer: str, decay: float | None = None, *, threshold: float | None = None) -> None:
        """Change temporal layer ``layer``'s decay rate and/or threshold from the next :meth:`step` on.

        ``decay`` in [0, 1], ``threshold`` >= 0 (None keeps the current one).
        The new values are written to the layer's ``decay`` and ``threshold``
        attributes, which reach the file with the next :meth:`commit` (as
        AgentFarm reads its gammas from its config each step, a simulation can
        follow its config here: the file says what the run last used).
        A bad value raises :class:`DecayError`; a layer that is not temporal
        too.

        >>> import worldstore, tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "w.h5")
        >>> spec = worldstore.WorldSpec(4, 4, 0, [worldstore.LayerSpec("HEAT", "temporal", decay=0.5)])
        >>> with worldstore.create(path, spec) as world:
        ...     world.set_decay("HEAT", 0.25, threshold=0.0)
        >>> worldstore.open(path)["HEAT"].spec.decay
        0.25
        """
        self._check_writable()
        [name] = self._temporal_layers([layer], "set_decay()")
        current = self._spec.layer(name)
        changes = {key: value for key, value in (("decay", decay), ("threshold", threshold)) if value is not None}
        try:
            updated = dataclasses.replace(current, **changes)
        except SpecError as exc:
            raise DecayError(f"set_decay({name!r}): {exc}") from None
        _schema.write_decay(self._file[_schema.LAYERS_GROUP], name, updated.decay, updated.threshold)
        self._spec = dataclasses.replace(self._spec, layers=tuple(updated if spec.name == name else spec
                                                                  for spec in self._spec.layers))
        self._layers[name]._spec = dataclasses.replace(self._layers[name].spec, decay=updated.decay,
                                                       threshold=updated.threshold)

    def set_storage(self, layer: str, kind: str) -> None:
        """Move layer ``layer`` to storage ``kind`` (``mapped``, ``memory`` or, for temporal layers, ``sparse``).

        Values are kept exactly. While a layer is sparse its dense dataset in
        the file holds zeros and its COO datasets hold the cells.
        """
        self._check_writable()
        target = self[layer]
        if kind not in STORAGE_KINDS:
            raise SpecError(f"unknown storage kind {kind!r}; expected one of {', '.join(STORAGE_KINDS)}")
        if kind == "sparse" and target.grid_class != "temporal":
            raise SpecError(f"sparse storage is for temporal layers only; {layer!r} is a {target.grid_class} layer")
        current = self._storages[layer]
        if kind == current.kind:
            return
        group = self._file[_schema.LAYERS_GROUP]
        if kind == "sparse":
            replacement: LayerStorage = SparseStorage.from_dense(group, self._spec, layer, current.array, True)
            self._dense_kind[layer] = current.kind
            current.array.fill(0)  # the dense dataset reads as zeros while the COO form holds the data
        else:
            # The new storage starts from the file's committed bytes: the values since come along.
            replacement = _dense_storage(group[layer], self._fd, kind, self.writable,
                                         f"{self._path}: layer {layer!r}", "use memory storage for it")
            dense = replacement.array
            if isinstance(current, SparseStorage):
                dense.fill(0)
                dense.reshape(-1)[current.cells] = current.values
            else:
                dense[...] = current.array
        self._replace_storage(layer, replacement)
        self._spec = self._spec.with_storage({layer: kind})

    def _replace_storage(self, layer: str, replacement: LayerStorage) -> None:
        # Its changes since the last commit (zeros written over a layer that became sparse, say) are
        # committed with the rest, before the replacement's; then it is closed.
        self._retired.append(self._storages[layer])
        self._storages[layer] = replacement
        self._layers[layer]._storage = replacement

    # -- persistence --------------------------------------------------------
    def commit(self, durable: bool = True) -> int:
        """Make the file hold the world as it is now, all at once; return the committed step.

        What changed since the last commit (the pages written in mapped
        layers, the pages of in-RAM layers that differ from the file, sparse
        layers' cells, the step) goes first to a journal beside the file
        (``PATH-journal``), then into the file, while readers that meet the
        commit half-way read again (see :meth:`read`). A writer killed at
        any instant leaves the file at its last commit, or at this one once
        the journal is whole (the next open finishes it). ``durable=True``
        also fsyncs journal and file, so a commit survives a power cut; a
        killed process needs no fsync. In a read-only world it does nothing.

        >>> import worldstore, tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "w.h5")
        >>> with worldstore.create(path, worldstore.presets.agentfarm(16, 16, 2)) as world:
        ...     world["RESOURCES"][3, 3] = 7.0
        ...     _ = world.step()
        ...     world.commit(), world.committed_step
        (1, 1)
        """
        self._check_open()
        if not self.writable:
            return self._committed
        self._check_owner()
        try:
            _commit.commit(self, durable)
        except WorldReplacedError:
            # HDF5 would write its view of the old file (superblock, metadata) into whatever is at the path
            # now when it flushes or closes: from here on it writes to a scratch file.
            _blind(self._file)
            raise
        self._committed = self._step
        return self._committed

    def flush(self) -> None:
        """Commit (durably): the name h5py and numpy users look for. See :meth:`commit`."""
        self.commit()

    def read(self, reader: Any) -> tuple[int | None, Any]:
        """Run ``reader(world)`` so that what it reads belongs to one committed step: ``(step, result)``.

        For readers beside a live writer: mapped layers show each commit as it
        lands, so a read that spans one could mix two steps. ``read`` checks
        the file's commit sequence before and after, and runs ``reader``
        again when a commit was written meanwhile; the writer never waits.
        ``reader`` must copy what it keeps (``layer[...]`` does). Layer reads
        with ``[...]`` in a read-only world are checked this way by
        themselves. The step is None for files written before this check existed.

        >>> import worldstore, tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "w.h5")
        >>> with worldstore.create(path, worldstore.presets.agentfarm(16, 16, 2)) as world:
        ...     world["RESOURCES"][:] = 2.0
        ...     _ = world.step()
        >>> with worldstore.open(path) as world:
        ...     world.read(lambda w: float(w["RESOURCES"].numpy().sum()))
        (1, 512.0)
        """
        self._check_open()
        if self.writable:
            return self._step, reader(self)
        result = _commit.consistent(self._path, self._fd, self._sequence_offset, lambda: reader(self))
        self._check_whole()
        return result

    def close(self) -> None:
        """Flush (in a writable world) and release the file. Closing twice is harmless.

        Arrays and tensors handed out earlier stay valid (they keep their
        memory alive), but are no longer part of the world.
        """
        if self._file is None:
            return
        if self.writable and os.getpid() != self._pid:
            self._detach()  # a forked child: release its copies, never commit the parent's world
        _OPEN.discard(self)
        try:
            if self.writable and not self._detached:
                self.commit()
                _commit.checkpoint(self, remove=True)
        finally:
            for storage in self._retired:
                storage.close()
            self._retired.clear()
            for layer in self._layers.values():
                layer._close()
            _commit.close_file(self._file)
            self._file = None
            os.close(self._fd)
            if self._lock_fd is not None:
                recovery.release_writer_lock(self._lock_fd)
                self._lock_fd = None

    def __enter__(self) -> "World":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown, or a flush that cannot succeed
            pass

    def _discard(self, release: bool = False) -> None:
        """Forget this world without closing its HDF5 file, which another world shares; ``release``:
        close its storages and descriptor too (a read that is done again), else they were taken over."""
        _OPEN.discard(self)
        self._file = None
        if release:
            for storage in self._storages.values():
                storage.close()
            os.close(self._fd)
            if self._lock_fd is not None:
                recovery.release_writer_lock(self._lock_fd)
                self._lock_fd = None

    def _consistent_read(self, read: Any) -> Any:
        """``read()``, run again until no commit landed while it ran (a read-only world's layer reads; see
        :meth:`read`)."""
        result = _commit.consistent(self._path, self._fd, self._sequence_offset, read)[1]
        self._check_whole()
        return result

    def _file_changed(self) -> bool:
        """Whether the path now names another file than the one this world has open, or that file was cut short
        under it (raises FileNotFoundError if the path names nothing now)."""
        return recovery.file_identity(self._path) != recovery.file_identity(self._fd) or self._cut_short()

    def _cut_short(self) -> bool:
        """Whether the file was made shorter than the world's layers while this process had it mapped
        (``truncate``, or ``cp`` of a smaller file over it): its mapped pages past the new end read zeros
        since (``worldstore/_guard.c``), where they would have ended the process with SIGBUS."""
        if os.fstat(self._fd).st_size < self._layers_end:
            return True
        if _native.faults_total() == self._faults_seen:
            return False
        return any(storage.cut_short() for storage in [*self._storages.values(), *self._retired])

    def _check_whole(self) -> None:
        """After a checked read: raise :class:`WorldReplacedError` if the file was cut short under it."""
        if _native.faults_total() != self._faults_seen and self._cut_short():
            raise WorldReplacedError(f"{self._path} was cut short while this process read it (truncated, or "
                                     "another file copied over it): the read saw zeros, not the world. "
                                     "refresh() reopens the file as it is now")

    def _check_open(self) -> None:
        if self._file is None:
            raise WorldClosedError(f"world {self._path} is closed; open it again with worldstore.open")

    def _check_writable(self) -> None:
        self._check_open()
        self._check_owner()
        if not self.writable:
            raise ReadOnlyWorldError(f"world {self._path} is open read-only; open it with mode='r+' to change it")

    def _check_owner(self) -> None:
        """Raise :class:`DetachedWorldError` in a process that did not open this writer (a forked child)."""
        if self.writable and (self._detached or os.getpid() != self._pid):
            self._detach()
            raise DetachedWorldError(_detached_message(self._path, self._pid))

    def _detach(self) -> None:
        """In a forked child: make this inherited writer the child's own, unable to reach the file.

        The child's copies of the mapped layers are its own memory already
        (copied blocks and ``MAP_PRIVATE`` pages are copy-on-write across
        fork; a write into a block not yet copied copies it in the child).
        What is left is HDF5: the child's HDF5 would write metadata, clear the
        "open for write" flags and drop the parent's ``flock`` when it closes
        the file (at exit, or when the object is collected). Its descriptor is
        pointed at a scratch file, so nothing it does reaches the world.
        Readers inherited across fork need none of this, and keep working.
        """
        if self._detached:
            return
        self._detached = True
        _OPEN.discard(self)  # the child's exit must not close, so commit, the parent's world
        if not self.writable or self._file is None:
            return
        _blind(self._file)
        message = _detached_message(self._path, self._pid)
        for layer in self._layers.values():
            layer._detach(message)


#: Worlds not yet closed. At interpreter exit they are closed (so flushed) while h5py and numpy
#: still work: a world left to the garbage collector at shutdown would flush half-way (resized
#: datasets, unwritten data) once h5py's own exit handler had closed its files.
_OPEN: "weakref.WeakSet[World]" = weakref.WeakSet()


@atexit.register  # registered after h5py's import, so it runs before h5py's exit handler
def _close_open_worlds() -> None:
    for world in list(_OPEN):
        try:
            world.close()
        except Exception:  # noqa: BLE001 - exit goes on; the other worlds still get closed
            pass


def _detach_inherited() -> None:
    """After fork, in the child: every world it inherited belongs to the parent (see :meth:`World._detach`)."""
    recovery.forget_writer_locks()
    for world in list(_OPEN):
        try:
            world._detach()
        except Exception:  # noqa: BLE001 - a fork must not fail; commit() and close() check the pid again
            pass


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(after_in_child=_detach_inherited)


def _detached_message(path: str, pid: int) -> str:
    return (f"world {path} was opened for writing by process {pid}; this process (pid {os.getpid()}) inherited it "
            "by fork, so it cannot write, commit or close it into the file: its writes stay in this process. "
            "Open the world again here (worldstore.open(path) to read; mode='r+' once the parent closed it)")


def _blind(h5file: h5py.File) -> None:
    """Point ``h5file``'s HDF5 descriptor at an unlinked scratch file: whatever HDF5 writes, flushes or
    unlocks on it from now on reaches neither the world file nor its locks (a forked child's inherited
    writer; a writer whose file was replaced)."""
    import tempfile

    journal = getattr(h5file, "hdf5_journal", None)
    if journal is not None:
        journal.blind()
        return
    try:
        handle = h5file.id.get_vfd_handle()
    except Exception:  # noqa: BLE001 - a driver without a descriptor: nothing shared to protect
        return
    with tempfile.TemporaryFile() as scratch:
        os.dup2(scratch.fileno(), int(handle))


def create(path: str | os.PathLike, spec: WorldSpec, *, overwrite: bool = False,
           write_fill: bool = False, history_codec: str = "gzip", swmr: bool = False) -> World:
    """Create a world file for ``spec`` and open it for writing.

    Every layer is allocated and its disk blocks reserved now, so a full disk
    fails here (:class:`DiskFullError`, no file left behind) rather than
    mid-run. Layers start at their fill value.

    Zero-filled layers are reserved (``posix_fallocate``) but not written,
    so creating takes ~0.2 s per GiB here; the first write to each page of
    such a layer then also converts the file system's extent (measured on
    ext4 with 2 MiB pages: +0.1-0.5 s per GiB, once). ``write_fill=True``
    writes every layer's fill value at creation instead (~2 s per GiB here),
    for runs whose first steps must be as fast as later ones. Layers with a
    non-zero fill value are always written.

    ``history_codec`` compresses snapshots: ``"gzip"`` (any HDF5 tool reads
    it), ``"blosc2"`` (Zstd through Blosc2, much faster; needs the
    hdf5plugin package here and its filters in other tools) or ``"none"``.

    ``swmr=True`` returns the writer in SWMR mode, as ``open(path, "r+",
    swmr=True)`` would: readers can open the file while it writes. The world
    is opened before it is put in place, so no reader can come between.
    ``overwrite=True`` refuses (:class:`WorldLockedError`) a file a live
    writer holds.

    >>> import worldstore, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "w.h5")
    >>> spec = worldstore.WorldSpec(32, 32, 0, [worldstore.LayerSpec("TERRAIN_COST", "environment",
    ...                                                             fill_value=1.0)])
    >>> world = worldstore.create(path, spec)
    >>> float(world["TERRAIN_COST"].numpy().mean())
    1.0
    >>> world.close()
    """
    if not isinstance(spec, WorldSpec):
        raise TypeError(f"spec must be a WorldSpec, got {type(spec).__name__}")
    path = os.fspath(path)
    _schema.history_filters(history_codec)  # an unknown codec, or blosc2 without hdf5plugin: fail first
    if os.path.exists(path) and not overwrite:
        raise WorldExistsError(errno.EEXIST, "a file exists there; pass overwrite=True to replace it", path)
    if os.path.isfile(path) and recovery.writer_alive(path):
        raise WorldLockedError(f"{path} is open for writing by a running process; it cannot be replaced under it. "
                               "Stop that writer first (or create the world under another name)")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise WorldNotFoundError(errno.ENOENT, "the directory does not exist", directory)
    # Build under a temporary name and rename at the end: a failed create
    # leaves neither a partial world nor a damaged previous file.
    # The writer opens it under that name too, so that it holds the file (and its lock) before any reader
    # can open it at ``path``.
    partial = os.path.join(directory, f".{os.path.basename(path)}.creating-{os.getpid()}")
    world = None
    try:
        _write_new_file(partial, spec, write_fill, history_codec)
        world = open(partial, "r+", swmr=swmr)
        world._file.hdf5_journal.moved(path)  # its HDF5 journal first: a record there names this file's inode
        _platform.replace_file(partial, path)
    except BaseException:
        if world is not None:
            world.close()  # nothing to commit: it was just opened
        if os.path.exists(partial):
            os.unlink(partial)
        _remove_lock_file(partial)
        raise
    world._path = path
    if _platform.LOCK_FILES:  # the fallback's lock is a file named after the path: take the new name's
        held = world._lock_fd
        world._lock_fd = recovery.hold_writer_lock(world._fd, path)
        recovery.release_writer_lock(held)
        _remove_lock_file(partial)
    return world


def _remove_lock_file(path: str) -> None:
    """Remove the fallback's lock file of a temporary world name nobody else knows (a create, a compaction)."""
    try:
        os.unlink(path + _platform.LOCK_SUFFIX)
    except FileNotFoundError:
        pass


_FILL_CHUNK = 8 << 20  # bytes per pwrite when writing fill values


def _write_new_file(path: str, spec: WorldSpec, write_fill: bool, history_codec: str = "gzip") -> None:
    with h5py.File(path, "w", libver=_schema.LIBVER, alignment_threshold=_schema.ALIGNMENT,
                   alignment_interval=_schema.ALIGNMENT) as f:
        _schema.write_skeleton(f, spec, history_codec)
        f.flush()  # HDF5 extends the file to cover the early-allocated layers
        fd = _platform.open_fd(path, os.O_RDWR)
        try:
            size = os.fstat(fd).st_size
            try:
                # Where holes inside the file cannot be reserved (no posix_fallocate), writing the fill
                # values of every layer reserves their blocks.
                reserved = _platform.reserve_blocks(fd, 0, size)
                group = f[_schema.LAYERS_GROUP]
                for layer in spec.layers:
                    if write_fill or not reserved or layer.fill_value != 0:
                        _write_fill(fd, group[layer.name], layer.fill_value)
            except OSError as exc:
                if _commit.is_disk_full(exc):
                    raise DiskFullError(exc.errno, f"cannot reserve {size} bytes for the world: "
                                        f"{os.strerror(exc.errno)}", path) from exc
                raise
        finally:
            os.close(fd)


def _write_fill(fd: int, dset: h5py.Dataset, value) -> None:
    """Write ``value`` over the dataset's bytes with pwrite (not through a mapping: see create)."""
    offset = dset.id.get_offset()
    nbytes = dset.id.get_storage_size()
    chunk = np.full(max(1, min(nbytes, _FILL_CHUNK) // dset.dtype.itemsize), value, dtype=dset.dtype).tobytes()
    end = offset + nbytes
    while offset < end:
        offset += _platform.pwrite(fd, chunk[:end - offset], offset)


def open(path: str | os.PathLike, mode: str = "r", *, storage: Mapping[str, str] | None = None,
         swmr: bool = False) -> World:
    """Open an existing world: ``mode="r"`` to read, ``"r+"`` to read and write.

    ``storage`` overrides the stored storage kinds per grid class or layer
    name, for example ``{"agent": "memory"}``.

    A file whose writer was killed (HDF5's "open for write" flags left set,
    no process holding it) is recovered on the way by a writer (``"r+"``):
    the flags are cleared, as ``h5clear -s`` does, and an interrupted commit
    is finished or discarded (see :func:`worldstore.recover`). A reader
    (``"r"``) never writes the file: it reads the last commit as it is, or,
    if the writer died while writing a commit into the file, raises
    :class:`WorldLockedError` saying to run ``worldstore recover``.

    ``swmr=True`` uses HDF5's single-writer / multiple-reader mode: a writer
    opened so (``"r+"``) lets readers in other processes open the file while
    it writes; a reader sees what the writer has committed (``flush``,
    ``snapshot``) after :meth:`World.refresh`. A reader opens a live SWMR
    writer's file as a SWMR reader whether or not it passed ``swmr=True``; a
    live writer not in SWMR mode lets no reader in (:class:`WorldLockedError`
    says how to start it so that it does). Every dataset a world needs exists
    from its creation, which SWMR requires.

    A world belongs to the process that opened it: in a child made by
    ``fork`` an inherited writer cannot write or commit
    (:class:`DetachedWorldError`), and its exit changes nothing in the file.

    Everything is checked before anything is mapped: a file that is missing,
    not HDF5, not a world, of a newer format, or truncated raises a specific
    error naming the problem; ``"r+"`` by a user who may not write the file
    raises :class:`WorldPermissionError`.

    >>> import worldstore, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "w.h5")
    >>> worldstore.create(path, worldstore.presets.classic(16, 16, 2)).close()
    >>> with worldstore.open(path, storage={"agent": "memory"}) as world:
    ...     world["AGENT_MEMORY"].storage
    'memory'
    """
    if mode not in _MODES:
        raise ValueError(f"mode must be 'r' or 'r+', got {mode!r}")
    path = check_path(path)
    if os.path.getsize(path) == 0:  # checked first: HDF5 would write a superblock into it in "r+"
        raise WorldFormatError(f"{path} is empty, not a world file")
    if mode == "r+":
        _check_may_write(path)
        _finish_commit(path)  # a reader never writes the file: it reads the last commit, or says to recover
    try:
        h5file = _open_file(path, mode, swmr)
    except WorldstoreError:
        raise
    except OSError as exc:
        raise _open_error(path, exc) from exc
    try:
        world = _load(h5file, path, mode, storage)
    except BaseException:
        _commit.close_file(h5file)
        raise
    if swmr and mode == "r+":
        try:
            _commit.start_swmr(h5file)
        except BaseException:
            world.close()
            raise
    return world


def check_path(path: str | os.PathLike) -> str:
    """``path`` as a string, if a file is there (:class:`WorldNotFoundError`, or a directory: :class:`WorldFormatError`)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise WorldNotFoundError(errno.ENOENT, "no such world file", path)
    if os.path.isdir(path):
        raise WorldFormatError(errno.EISDIR, "is a directory, not a world file", path)
    return path


def _load(h5file: h5py.File, path: str, mode: str, overrides: Mapping[str, str] | None) -> World:
    """The world in ``h5file``; a reader reads again until no commit landed while it read."""
    swmr = h5file.swmr_mode and mode == "r"
    if swmr:  # every dataset once; inside a retry, only those a commit changes
        h5file.visititems(lambda _, obj: obj.refresh() if isinstance(obj, h5py.Dataset) else None)

    def attempt() -> World:
        if swmr:  # after the sequence was read: extents as new as the commit the read belongs to
            _refresh_committed(h5file)
        with _schema.format_errors(path, "reading the world"):
            stored = _schema.read_spec(h5file, path)
            step, committed = _schema.read_clock(h5file, path)
            if mode == "r+" and _schema.COMMIT not in h5file:  # a file written before commits had a sequence
                _schema.write_commit_dataset(h5file)
                h5file.flush()
            if mode == "r+" and _schema.read_world_id(h5file) is None:  # ... or an identity
                h5file.attrs[_schema.ROOT_WORLD_ID] = uuid.uuid4().hex
                h5file.flush()
            world = _attach(h5file, path, mode, stored, stored.with_storage(overrides), step, committed)
        world._overrides = overrides
        return world

    if mode == "r+":
        return attempt()
    with _schema.format_errors(path, "reading the world"):
        offset = _schema.commit_offset(h5file, os.path.getsize(path), path)
    fd = _platform.open_fd(path, os.O_RDONLY)
    try:
        return _commit.consistent(path, fd, offset, attempt, discard=lambda world: world._discard(release=True))[1]
    finally:
        os.close(fd)


def _refresh_committed(h5file: h5py.File) -> None:
    """SWMR: see the datasets a commit changes again (the clock and the COO forms of temporal layers)."""
    h5file[_schema.CLOCK].refresh()
    group = h5file[_schema.LAYERS_GROUP]
    for name in group:
        dset = group[name]
        if isinstance(dset, h5py.Dataset) and dset.maxshape and dset.maxshape[0] is None:
            dset.refresh()


def _check_may_write(path: str) -> None:
    """Raise :class:`WorldPermissionError`, saying what this user can do instead, if it may not write ``path``."""
    if os.access(path, os.W_OK):
        return
    if recovery.status_flags(path) and not recovery.in_use(path):
        raise WorldPermissionError(errno.EACCES, "its writer died without closing it, and this user may not write "
                                   "the file; open it with mode='r' to read its last commit, or have someone "
                                   f"allowed to write it run: worldstore recover {path}", path)
    raise WorldPermissionError(errno.EACCES, "this user may not write the file; open it with mode='r' to read it",
                               path)


def _finish_commit(path: str) -> None:
    """Finish HDF5's writes and replay or discard the journal of a commit its writer did not finish (no live
    process holds the file)."""
    hdf5, commits = (os.path.exists(name) for name in (hdf5journal.journal_path(path), _commit.journal_path(path)))
    if not (hdf5 or commits) or not os.access(path, os.W_OK) or recovery.in_use(path):
        return
    if hdf5:  # (no live process holds it: checked above)
        hdf5journal.finish(path)
    if commits:
        recovery.clear_status_flags(path)
        _commit.replay(path)


def _open_file(path: str, mode: str, swmr: bool) -> h5py.File:
    """h5py.File; a writer recovers by itself a file whose writer was killed (see :mod:`.recovery`), a reader
    reads it as it is (see :func:`_open_for_reading`)."""
    try:
        if mode == "r+":
            return _commit.journaled_file(path)
        return _commit.shared_file(path) or h5py.File(path, mode, libver=_schema.LIBVER, swmr=swmr)
    except OSError as exc:
        message = str(exc).lower()
        if mode == "r" and "unable to lock file" in message and recovery.writer_alive(path):
            raise _not_swmr(path) from exc  # a writer not in SWMR mode holds HDF5's lock
        if "already open for write" not in message:
            raise
        if mode == "r":
            return _open_for_reading(path, exc)
        if recovery.in_use(path):  # a live writer: HDF5's error stands
            raise
        recovery.clear_status_flags(path)  # flags left by a writer that was killed
        return _commit.journaled_file(path)



def _open_for_reading(path: str, refused: OSError) -> h5py.File:
    """A reader's open of a file HDF5 calls "already open for write", without writing it.

    A live SWMR writer: read as a SWMR reader, whether or not ``swmr=True``
    was passed (the CLI and every reader can follow a running world). A live
    writer not in SWMR mode lets no reader in: say how to start it so it
    does. A writer that died: read its last commit through a view of the
    file whose superblock shows the flags cleared; the file is not touched
    (it may not even be writable by this user).
    """
    flags = recovery.status_flags(path)
    # A dead writer that was applying HDF5's writes (a whole HDF5 journal record) is read through CleanView.
    if flags & recovery.SWMR_WRITE_FLAG and (not hdf5journal.pending(path) or recovery.writer_alive(path)):
        try:
            return h5py.File(path, "r", libver=_schema.LIBVER, swmr=True)
        except OSError:
            if recovery.writer_alive(path):
                raise
    if recovery.writer_alive(path) or recovery.in_use(path):
        raise _not_swmr(path) from refused
    try:
        return h5py.File(recovery.CleanView(path), "r", libver=_schema.LIBVER)
    except OSError as exc:
        raise WorldFormatError(f"{path}: its writer died without closing it, and the file cannot be read as it is "
                               f"({exc}); someone allowed to write the file must run: worldstore recover {path}") \
            from exc


def _not_swmr(path: str) -> WorldLockedError:
    return WorldLockedError(f"{path} is being written by a live writer that is not in SWMR mode, so readers cannot "
                            "open it; start the writer with worldstore.open(path, 'r+', swmr=True) (worldstore "
                            "demo --swmr) to let readers in")


def _open_error(path: str, exc: OSError) -> OSError:
    message = str(exc)
    lowered = message.lower()
    if not h5py.is_hdf5(path):
        return WorldFormatError(f"{path} is not an HDF5 file, so not a world file")
    if "truncated file" in lowered:
        return WorldFormatError(f"{path} is truncated (shorter than HDF5 recorded): {message}")
    if "unable to lock file" in lowered or "already open for write" in lowered:
        # Not HDF5's words: they suggest h5clear, which would damage a file a live process is writing.
        return WorldLockedError(f"{path} is held open for writing by another process (a worldstore writer or "
                                "another HDF5 program); one writer per file: stop that one first, or open the "
                                "world with mode='r' to read it")
    return WorldFormatError(f"{path} cannot be opened as HDF5: {message}")


def _attach(h5file: h5py.File, path: str, mode: str, stored: WorldSpec, spec: WorldSpec, step: int,
            committed: int) -> World:
    """Build each layer's storage; ``stored`` says which form (dense or COO) the file holds."""
    writable = mode == "r+"
    fd = _platform.open_fd(path, os.O_RDWR if writable else os.O_RDONLY)
    storages: dict[str, LayerStorage] = {}
    lock_fd = None
    try:
        if writable:
            lock_fd = recovery.hold_writer_lock(fd, path)
        group = h5file[_schema.LAYERS_GROUP]
        for layer in spec.layers:
            dset = group[layer.name]
            where = f"{path}: layer {layer.name!r}"
            in_file_sparse = stored.layer(layer.name).storage == "sparse"
            coo = _schema.read_coo(group, spec, layer.name, where) if in_file_sparse else None
            if layer.storage == "sparse":
                if coo is not None:
                    storages[layer.name] = SparseStorage.from_coo(group, spec, layer.name, *coo, writable)
                    storages[layer.name].changed = False  # what the file holds
                else:
                    storages[layer.name] = SparseStorage.from_dense(group, spec, layer.name, dset[...], writable)
                continue
            kind = layer.storage
            if coo is not None and not writable:
                kind = "memory"  # a read-only mapping cannot receive the COO cells
            storage = _dense_storage(dset, fd, kind, writable, where,
                                     f"open with storage={{{layer.name!r}: 'memory'}}", " (for example by h5repack)")
            if coo is not None:
                dense = storage.array if writable else storage.own_array()  # a reader's: memory (above)
                dense.fill(0)
                dense.reshape(-1)[coo[0][:, 0] * spec.width + coo[0][:, 1]] = coo[1]
            storages[layer.name] = storage
    except BaseException:
        for storage in storages.values():
            storage.close()
        os.close(fd)
        if lock_fd is not None:
            recovery.release_writer_lock(lock_fd)
        raise
    world = World(h5file, fd, path, mode, spec, {}, storages, step, committed, lock_fd)
    guard = None if writable else world._consistent_read
    world._layers.update((layer.name, Layer(layer, spec.shape_of(layer.name), storages[layer.name], writable, guard))
                         for layer in spec.layers)
    size = os.fstat(fd).st_size
    world._sequence_offset = _schema.commit_offset(h5file, size, path)
    extents = (_schema.layer_extent(group[layer.name], size, path) for layer in spec.layers)
    world._layers_end = max((offset + nbytes for offset, nbytes in filter(None, extents)), default=0)
    if world._sequence_offset is not None:
        world._sequence = _commit.read_sequence(fd, world._sequence_offset)[0]
    return world


def _dense_storage(dset: h5py.Dataset, fd: int, kind: str, writable: bool, where: str, remedy: str,
                   example: str = "") -> LayerStorage:
    """A dense layer's storage of ``kind`` (mapped or memory) over ``dset``; a chunked dataset cannot be mapped
    (the error says ``remedy``)."""
    extent = _schema.layer_extent(dset, os.fstat(fd).st_size, where)
    if kind == "memory":
        return MemoryStorage(dset, writable, fd, None if extent is None else extent[0])
    if extent is None:
        raise WorldFormatError(f"{where} is stored chunked or compressed{example} and cannot be mapped; {remedy}")
    return MappedStorage(fd, extent[0], dset.shape, dset.dtype, writable)


def recover(path: str | os.PathLike) -> dict[str, Any]:
    """Make a world whose writer was killed open again; say what was done.

    Returns ``path``, ``flags_cleared`` (whether the killed writer's flags
    were there), ``journal`` (None, ``"replayed"``: the journal's whole
    commit records since the last checkpoint were written into the file again,
    ``journal_commits`` of them, which finishes a commit the kill interrupted and
    restores what a power cut took; or ``"discarded"``: the only record was cut
    short before it was whole, so the file keeps the commit before, or the
    journal belongs to another world file, said in ``journal_reason``),
    ``hdf5_journal`` where the writer left an HDF5 journal (``"replayed"``:
    HDF5's writes the kill interrupted were written into the file again;
    ``"discarded"``: the kill cut their record short, before any of them
    reached the file; see :mod:`.storage.hdf5journal`), ``committed_step``
    and the ``snapshots`` there are.
    """
    path = check_path(path)
    try:
        hdf5_journal = _commit.finish_hdf5_journal(path)
        cleared = recovery.clear_status_flags(path)
    except WorldFormatError as exc:  # the superblock is read first: say it as open() and inspect do
        reason = str(exc).removeprefix(f"{path}: ")
        if reason == str(exc):
            raise
        raise WorldFormatError(f"{path} cannot be opened as HDF5: {reason}") from exc
    journal = _commit.replay(path)
    with open(path, "r+") as world:  # a writer's open also ends a snapshot the kill cut short
        committed = world.committed_step
        try:
            snapshots = [record["step"] for record in world.history()]
        except HistoryError:  # a format 1 file
            snapshots = []
    report = {
        "path": path,
        "flags_cleared": cleared,
        "journal": journal["journal"],
        "committed_step": committed,
        "snapshots": snapshots,
    }
    if hdf5_journal is not None:
        report["hdf5_journal"] = hdf5_journal
    if "reason" in journal:
        report["journal_reason"] = journal["reason"]
    if "commits" in journal:
        report["journal_commits"] = journal["commits"]
    return report
