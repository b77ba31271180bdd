"""AgentFarm's memmap managers, over one world file per simulation.

AgentFarm (GitHub ``Dooders/AgentFarm``) keeps its large grids in
``numpy.memmap`` files through ``farm.core.memmap_manager.MemmapManager`` and
two managers built on it, ``EnvironmentalGridManager`` (OBSTACLES,
TERRAIN_COST, VISIBILITY) and ``TemporalGridManager`` (DAMAGE_HEAT, TRAILS,
ALLY_SIGNAL), configured by a ``MemmapConfig`` (``directory``, ``dtype``,
``mode``, ``delete_on_close``, ``use_for_resources/environmental/temporal``).
This module gives classes of the same names, methods and arguments, so a
simulation swaps them by configuration (import these instead). Behind them,
every manager of one simulation shares one world (:func:`simulation_world`),
made with :func:`worldstore.presets.agentfarm`: one HDF5 file instead of a
``.dat`` file per grid, committed whole at each flush, readable while it
runs, with history and crash recovery.

AgentFarm's semantics, kept: deposits add then clamp to ``clip_max`` and
skip events outside the world (``World.deposit(..., clip=(None, clip_max),
out_of_bounds="ignore")``); decay is ``v *= gamma`` with the gamma read from
the observation config at each decay (``gamma_dmg``, ``gamma_trail``,
``gamma_sig``, ``gamma_known``), no threshold (subnormals do flush to 0);
windows pad with 0, and ``normalize_by`` divides then clips to [0, 1].

Differences worth knowing:

- ``use_for_*`` choose the storage kind (``mapped`` when true, ``memory``
  when false): every grid is in the file either way, from the next flush;
- ``get`` returns a plain ndarray over the layer (AgentFarm returns its
  ``numpy.memmap``); it has no ``flush`` of its own: call the manager's;
- a manager's ``flush`` commits the whole world (all managers' grids, at
  once); deposits do not flush each time (AgentFarm's ``flush`` after every
  deposit would be a commit per event); ``apply_decay`` takes a world step
  and commits;
- a world's layers are fixed at creation: ``MemmapManager.create`` finds the
  layer of that name (``"resources"`` -> RESOURCES) rather than adding one.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Iterable
from typing import Any

import numpy as np

from .errors import LayerNotFoundError, LayerShapeError, ManagerError
from .presets import AGENTFARM_CHANNELS, agentfarm
from .slots import AgentId, AgentSlots
from .world import World, create, open as open_world

#: AgentFarm's environmental layers (``farm/core/environment_grids.py``).
ENVIRONMENTAL_LAYER_NAMES = ("OBSTACLES", "TERRAIN_COST", "VISIBILITY")
_MODES = ("w+", "r+")


@dataclasses.dataclass
class MemmapConfig:
    """AgentFarm's ``MemmapConfig`` fields, plus worldstore's own (after ``use_for_temporal``).

    ``agents``: agent slots (the world's agent count; AgentFarm's population
    may change below it, see :class:`worldstore.AgentSlots`);
    ``obs_radius``: ``ObservationConfig.R``; ``swmr``: let other processes
    read the file while the simulation runs; ``durable``: fsync each commit
    (survives a power cut, not only a killed process).

    >>> MemmapConfig(directory="/tmp", use_for_temporal=True).use_for_resources
    False
    """

    directory: str | None = None
    dtype: str = "float32"
    mode: str = "w+"
    delete_on_close: bool = False
    use_for_resources: bool = False
    use_for_environmental: bool = False
    use_for_temporal: bool = False
    agents: int = 64
    obs_radius: int = 6
    swmr: bool = True
    durable: bool = False


@dataclasses.dataclass(frozen=True)
class TemporalChannelSpec:
    """AgentFarm's description of one temporal channel (``farm/core/temporal_grids.py``)."""

    name: str
    storage_name: str
    config_gamma_key: str
    default_gamma: float


#: AgentFarm's temporal channels, with its default gammas.
DEFAULT_TEMPORAL_CHANNEL_SPECS = (
    TemporalChannelSpec("DAMAGE_HEAT", "damage_heat", "gamma_dmg", 0.85),
    TemporalChannelSpec("TRAILS", "trails", "gamma_trail", 0.90),
    TemporalChannelSpec("ALLY_SIGNAL", "ally_signal", "gamma_sig", 0.92),
)
#: KNOWN_EMPTY, which AgentFarm decays per agent with ``gamma_known``; add it to ``channel_specs`` to decay it.
KNOWN_EMPTY_CHANNEL_SPEC = TemporalChannelSpec("KNOWN_EMPTY", "known_empty", "gamma_known", 0.98)


@dataclasses.dataclass(frozen=True)
class MemmapArrayInfo:
    """What AgentFarm's ``MemmapManager.info`` returns: here the array is a layer of the world file ``path``."""

    name: str
    path: str
    shape: tuple[int, int]
    dtype: np.dtype
    mode: str

    @property
    def size_bytes(self) -> int:
        return int(np.prod(self.shape)) * int(self.dtype.itemsize)


class SimulationWorld:
    """The one world of a simulation, which its managers share; its agent slots.

    Get it from :func:`simulation_world` (the managers do). ``world`` is the
    :class:`worldstore.World`; ``slots`` the :class:`worldstore.AgentSlots`
    of its agent layers.
    """

    def __init__(self, world: World, config: Any):
        self.world = world
        self.path = world.path
        self.slots = AgentSlots(world.agents)
        self._durable = bool(getattr(config, "durable", False))
        self._users = 0

    def __repr__(self) -> str:
        return f"<worldstore AgentFarm simulation world {self.world!r}, {len(self.slots)} agents>"

    def add_agent(self, agent: AgentId) -> int:
        """Give ``agent`` a slot (:class:`AgentSlotError` when all are taken); its agent-layer rows are cleared."""
        slot = self.slots.add(agent)
        for name, layer in self.world.layers.items():
            if layer.grid_class == "agent":
                layer.numpy()[slot] = layer.spec.fill_value
        return slot

    def remove_agent(self, agent: AgentId) -> int:
        """Free ``agent``'s slot for the next agent (:class:`UnknownAgentError` if it has none)."""
        return self.slots.remove(agent)

    def observe(self, agents: Iterable[AgentId], positions: Any, *, max_resource_amount: float | None = None,
                dtype: Any = None, into: bool = False) -> Any:
        """AgentFarm's observation of each of ``agents`` at ``positions`` ((N, 2) ``(y, x)``): ``(N, 13, S, S)``.

        Channels in AgentFarm's registry order, every pad 0; RESOURCES divided
        by ``max_resource_amount`` and clipped to [0, 1] when given, as
        AgentFarm's resource windows are. ``dtype``: float32 by default, or
        ``torch.bfloat16``. ``into=True`` also writes each agent's rows of
        the OBSERVATION layer (its slot), for readers of the file.
        """
        slots = self.slots.slots_of(agents)
        normalize = clip = None
        if max_resource_amount is not None:
            normalize, clip = {"RESOURCES": max_resource_amount}, {"RESOURCES": (0.0, 1.0)}
        return self.world.observe(positions, channels=list(AGENTFARM_CHANNELS), agent_ids=slots, dtype=dtype,
                                  into="OBSERVATION" if into else None, normalize=normalize, clip=clip)

    def commit(self) -> int:
        """Commit the world (every manager's grids at once); return the committed step."""
        return self.world.commit(durable=self._durable)

    def _release(self, delete_file: bool) -> None:
        self._users -= 1
        if self._users > 0:
            return
        _OPEN.pop(self.path, None)
        self.world.close()
        if delete_file and os.path.exists(self.path):
            os.remove(self.path)


#: Open simulation worlds by path: every manager of a simulation shares its world.
_OPEN: dict[str, SimulationWorld] = {}


def world_path(directory: str | None, simulation_id: str | None) -> str:
    """Where a simulation's world lives: ``agentfarm_<simulation_id>.h5`` (``agentfarm_p<pid>.h5`` without an id,
    so simulations of several processes never share a file by accident, as AgentFarm's filenames)."""
    directory = directory or tempfile.gettempdir()
    if simulation_id:
        safe = "".join(c if c.isalnum() or c in "-_" else "-" for c in str(simulation_id))[:64]
        return os.path.join(directory, f"agentfarm_{safe}.h5")
    return os.path.join(directory, f"agentfarm_p{os.getpid()}.h5")


def simulation_world(height: int, width: int, *, memmap_config: Any = None, simulation_id: str | None = None,
                     directory: str | None = None, mode: str | None = None) -> SimulationWorld:
    """The world of simulation ``simulation_id``: the one already open, or a new one.

    A new world is :func:`worldstore.presets.agentfarm` of ``height`` x
    ``width``, with ``memmap_config``'s dtype, agent slots, observation radius
    and storage (``use_for_*``: mapped, else in RAM). ``mode`` (by default the
    config's): ``"w+"`` creates it, replacing a file there; ``"r+"`` opens the
    file there (or creates it). Each call counts as one user; the world closes
    when every manager using it has closed.

    >>> import tempfile
    >>> config = MemmapConfig(directory=tempfile.mkdtemp(), agents=4, use_for_temporal=True)
    >>> sim = simulation_world(32, 32, memmap_config=config, simulation_id="run1")
    >>> sim.world["TRAILS"].storage, sim.world["RESOURCES"].storage, sim.world.agents
    ('mapped', 'memory', 4)
    >>> sim._release(delete_file=True)
    """
    path = world_path(directory or getattr(memmap_config, "directory", None), simulation_id)
    shared = _OPEN.get(path)
    if shared is not None and not shared.world.closed:
        if shared.world.shape != (int(height), int(width)):
            raise ManagerError(f"simulation world {path} is {shared.world.height}x{shared.world.width}; a manager "
                               f"asked for {int(height)}x{int(width)}: one world per simulation, of one size")
        shared._users += 1
        return shared
    mode = mode or getattr(memmap_config, "mode", "w+") or "w+"
    if mode not in _MODES:
        raise ManagerError(f"memmap mode {mode!r}: a simulation world is created ('w+') or reopened ('r+')")
    swmr = bool(getattr(memmap_config, "swmr", True))
    if mode == "r+" and os.path.exists(path):
        world = open_world(path, "r+", swmr=swmr)
        if world.shape != (int(height), int(width)):
            world.close()
            raise ManagerError(f"{path} holds a {world.height}x{world.width} world, not {height}x{width}")
    else:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        world = create(path, agentfarm(int(height), int(width), int(getattr(memmap_config, "agents", 64)),
                                       obs_radius=int(getattr(memmap_config, "obs_radius", 6)),
                                       dtype=str(getattr(memmap_config, "dtype", "float32") or "float32"),
                                       storage=_storage(memmap_config)),
                       overwrite=True, swmr=swmr)
    shared = SimulationWorld(world, memmap_config)
    shared._users = 1
    _OPEN[path] = shared
    return shared


def _storage(config: Any) -> dict[str, str]:
    """AgentFarm's memmap targets as storage kinds: mapped where ``use_for_*`` is true, in RAM otherwise."""
    def kind(flag: str) -> str:
        return "mapped" if getattr(config, flag, False) else "memory"
    return {"resource": kind("use_for_resources"), "environment": kind("use_for_environmental"),
            "temporal": kind("use_for_temporal")}


def _window(array: np.ndarray, pad: Any, y0: int, y1: int, x0: int, x1: int, out_dtype: Any,
            normalize_by: float | None = None) -> np.ndarray:
    """``array[y0:y1, x0:x1]``, a new array, ``pad`` outside the world; divided by ``normalize_by`` and clipped
    to [0, 1] when it is > 0 (AgentFarm's ``get_zero_padded_window_2d`` and ``get_window``)."""
    y0, y1, x0, x1 = int(y0), int(y1), int(x0), int(x1)
    height, width = array.shape
    out = np.full((max(0, y1 - y0), max(0, x1 - x0)), pad, dtype=np.dtype(out_dtype))
    top, bottom, left, right = max(0, y0), min(height, y1), max(0, x0), min(width, x1)
    if out.size and bottom > top and right > left:
        out[top - y0:bottom - y0, left - x0:right - x0] = array[top:bottom, left:right]
    if normalize_by is not None and normalize_by > 0:
        np.divide(out, float(normalize_by), out=out)
        np.clip(out, 0.0, 1.0, out=out)
    return out


def _layer_name(name: str) -> str:
    return str(name).upper()


class _Manager:
    """What the three managers share: a simulation world and a set of its layers."""

    _sim: SimulationWorld | None

    def _world(self) -> World:
        if self._sim is None:
            raise ManagerError(f"{type(self).__name__} is closed (or has created no array yet)")
        return self._sim.world

    def _layer(self, name: str):
        layer_name = _layer_name(name)
        if layer_name not in self._names:
            raise LayerNotFoundError(f"{name!r} is not registered in this {type(self).__name__} (known: "
                                     f"{sorted(self._names)})")
        return self._world()[layer_name]

    @property
    def world(self) -> World:
        """The simulation's :class:`worldstore.World`."""
        return self._world()

    @property
    def simulation(self) -> SimulationWorld:
        """The simulation's :class:`SimulationWorld` (its agent slots, AgentFarm observations)."""
        self._world()
        return self._sim  # type: ignore[return-value]

    @property
    def has_memmap(self) -> bool:
        """Whether the layers are mapped over the file (AgentFarm: memmap-backed) rather than in RAM."""
        return self._sim is not None and all(self._world()[_layer_name(n)].storage == "mapped" for n in self._names)

    def get(self, name: str) -> np.ndarray:
        """The layer's array, ``(height, width)``, written in place (a plain ndarray over the file)."""
        return self._layer(name).numpy()

    def get_window(self, name: str, y0: int, y1: int, x0: int, x1: int, *, normalize_by: float | None = None,
                   out_dtype: Any = np.float32) -> np.ndarray:
        """A new ``(y1 - y0, x1 - x0)`` array of ``name``'s cells, 0 outside the world (the layer's pad);
        divided by ``normalize_by`` and clipped to [0, 1] when it is > 0."""
        layer = self._layer(name)
        return _window(layer.numpy(), layer.pad_value, y0, y1, x0, x1, out_dtype, normalize_by)

    def total_size_bytes(self) -> int:
        """Bytes of the layers this manager holds."""
        return sum(self._layer(name).numpy().nbytes for name in self._names) if self._sim else 0

    def flush(self, name: str | None = None) -> None:
        """Commit the simulation's world (every manager's grids at once; ``name`` is accepted and changes
        nothing: a commit is of the whole world)."""
        if name is not None:
            self._layer(name)
        if self._sim is not None:
            self._sim.commit()

    def close(self, *, delete_files: bool = False) -> None:
        """Commit and let go of the world (closed when its last manager lets go; ``delete_files`` then
        removes the file)."""
        if self._sim is not None:
            sim, self._sim = self._sim, None
            sim._release(delete_files)


class MemmapManager(_Manager):
    """AgentFarm's generic ``MemmapManager``: named ``(H, W)`` arrays, here the layers of a simulation world.

    ``create(name, shape)`` finds the world's layer ``name.upper()``
    (``"resources"`` -> RESOURCES) and, in mode ``"w+"``, fills it with
    ``fill``; the first ``create`` makes (or joins) the world, of ``shape``.
    ``memmap_config`` (worldstore's addition) gives the world's agent slots,
    storage and so on; ``delete_on_close`` is read from it at ``close_all``.

    >>> import tempfile
    >>> manager = MemmapManager(tempfile.mkdtemp(), simulation_id="demo")
    >>> grid = manager.create("resources", (16, 16))
    >>> manager.add_at("resources", 3, 4, 0.75, clip_max=0.5); manager.add_at("resources", -1, 99, 1.0)
    >>> manager.get_window("resources", 2, 5, 3, 6, normalize_by=0.5)[1].tolist()
    [0.0, 1.0, 0.0]
    >>> manager.close_all(delete_files=True)
    """

    def __init__(self, directory: str | None = None, *, simulation_id: str | None = None,
                 namespace: str | None = None, default_dtype: Any = "float32", default_mode: str = "w+",
                 memmap_config: Any = None):
        self.directory = directory or getattr(memmap_config, "directory", None) or tempfile.gettempdir()
        self.simulation_id = simulation_id
        self.namespace = namespace
        self.default_dtype = np.dtype(default_dtype)
        self.default_mode = default_mode
        self._config = memmap_config
        self._sim = None
        self._names: dict[str, str] = {}  # layer name -> the mode it was created with

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and _layer_name(name) in self._names

    def has(self, name: str) -> bool:
        return name in self

    def names(self) -> tuple[str, ...]:
        return tuple(self._names)

    def create(self, name: str, shape: tuple[int, int], *, dtype: Any = None, mode: str | None = None,
               fill: float | None = 0.0) -> np.ndarray:
        """The world's layer ``name`` (:class:`ManagerError` if created twice or of another shape or dtype)."""
        layer_name = _layer_name(name)
        if layer_name in self._names:
            raise ManagerError(f"array {name!r} already exists in this manager")
        mode = mode or self.default_mode
        height, width = (int(v) for v in shape)
        if self._sim is None:
            self._sim = simulation_world(height, width, memmap_config=self._config, simulation_id=self.simulation_id,
                                         directory=self.directory, mode=mode)
        world = self._world()
        if layer_name not in world:
            raise LayerNotFoundError(f"{name!r}: the AgentFarm world has no layer {layer_name!r}; its layers are "
                                     f"fixed at creation: {', '.join(world)}")
        layer = world[layer_name]
        if layer.shape != (height, width):
            raise ManagerError(f"array {name!r}: shape {tuple(shape)} differs from the world's layer "
                               f"{layer.shape}")
        wanted = np.dtype(dtype) if dtype is not None else self.default_dtype
        if wanted != layer.dtype:
            raise ManagerError(f"array {name!r}: dtype {wanted} differs from the world's {layer.dtype}; set "
                               "MemmapConfig.dtype")
        self._names[layer_name] = mode
        if fill is not None and mode == "w+":
            layer.numpy()[...] = fill
        return layer.numpy()

    def info(self, name: str) -> MemmapArrayInfo:
        layer = self._layer(name)
        return MemmapArrayInfo(name, self._world().path, layer.shape, layer.dtype, self._names[layer.name])

    def write(self, name: str, data: Any) -> None:
        self.get(name)[...] = data

    def fill(self, name: str, value: float) -> None:
        self.get(name)[...] = value

    def scale(self, name: str, factor: float) -> None:
        array = self.get(name)
        np.multiply(array, factor, out=array)

    def add_at(self, name: str, y: int, x: int, value: float, clip_max: float | None = None) -> None:
        """``arr[y, x] += value``, clamped to ``clip_max``; coordinates outside the world are ignored."""
        layer = self._layer(name)
        if layer.grid_class == "temporal":
            self._world().deposit(layer.name, [int(y)], [int(x)], [value], clip=(None, clip_max),
                                  out_of_bounds="ignore")
            return
        height, width = layer.shape
        if 0 <= y < height and 0 <= x < width:
            array = layer.numpy()
            new = float(array[y, x]) + float(value)
            array[y, x] = new if clip_max is None else min(new, clip_max)

    def close(self, name: str | None = None, *, delete_file: bool = False, delete_files: bool = False) -> None:
        """Drop ``name`` from this manager (AgentFarm's ``close(name)``); with no name, as :meth:`close_all`."""
        if name is None:
            self.close_all(delete_files=delete_files or delete_file)
            return
        self._layer(name)
        del self._names[_layer_name(name)]

    def close_all(self, *, delete_files: bool | None = None) -> None:
        """Let go of every array and of the world (``delete_files``: by default the config's ``delete_on_close``)."""
        if delete_files is None:
            delete_files = bool(getattr(self._config, "delete_on_close", False))
        self._names.clear()
        super().close(delete_files=delete_files)


class EnvironmentalGridManager(_Manager):
    """AgentFarm's ``EnvironmentalGridManager``: OBSTACLES, TERRAIN_COST and VISIBILITY of the simulation world.

    >>> import tempfile, numpy as np
    >>> config = MemmapConfig(directory=tempfile.mkdtemp(), use_for_environmental=True)
    >>> grids = EnvironmentalGridManager(10, 8, memmap_config=config, simulation_id="demo")
    >>> grids.set("OBSTACLES", np.eye(10, 8, dtype=np.float32))
    >>> grids.get_window("OBSTACLES", -1, 2, -1, 2).tolist(), grids.has_memmap
    ([[0.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], True)
    >>> grids.close(delete_files=True)
    """

    def __init__(self, height: int, width: int, *, memmap_config: Any = None, simulation_id: str | None = None,
                 layer_names: Iterable[str] = ENVIRONMENTAL_LAYER_NAMES):
        self.shape = (int(height), int(width))
        self.layer_names = tuple(layer_names)
        self._names = {_layer_name(name): "w+" for name in self.layer_names}
        self._sim = simulation_world(height, width, memmap_config=memmap_config, simulation_id=simulation_id)
        for name in self.layer_names:
            self._layer(name)  # LayerNotFoundError now for a name the world lacks
        self._delete = bool(getattr(memmap_config, "delete_on_close", False))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self.layer_names

    def names(self) -> tuple[str, ...]:
        return self.layer_names

    def set(self, name: str, data: np.ndarray) -> None:
        """Replace layer ``name``'s cells with ``data`` of shape ``(height, width)`` (:class:`LayerShapeError`)."""
        array = self.get(name)
        data = np.asarray(data)
        if data.shape != array.shape:
            raise LayerShapeError(f"cannot set layer {name!r}: expected shape {array.shape}, got {data.shape}")
        array[...] = data

    def fill(self, name: str, value: float) -> None:
        self.get(name)[...] = value

    def close(self, *, delete_files: bool | None = None) -> None:
        super().close(delete_files=self._delete if delete_files is None else delete_files)


class TemporalGridManager(_Manager):
    """AgentFarm's ``TemporalGridManager``: decaying channels of the simulation world.

    ``deposit`` adds (or sets, ``accumulate=False``) each ``(y, x,
    intensity)`` event, clamps to ``clip_max`` and ignores events outside the
    world; ``apply_decay`` multiplies by each channel's gamma, read from
    ``observation_config`` (``gamma_dmg`` ...) at every call, else the spec's
    default: the world's ``decay`` attribute follows it
    (:meth:`worldstore.World.set_decay`). ``apply_decay()`` decays every
    channel of this manager in one world step (``World.step(layers=...)``;
    the world's other temporal layers, KNOWN_EMPTY by default, keep their
    values) and commits; ``apply_decay(name)`` is a step of that channel
    alone.

    >>> import tempfile
    >>> config = MemmapConfig(directory=tempfile.mkdtemp())
    >>> grids = TemporalGridManager(8, 8, memmap_config=config, simulation_id="demo")
    >>> grids.deposit("DAMAGE_HEAT", [(1, 1, 0.75), (1, 1, 0.75), (-1, 3, 1.0)])
    >>> float(grids.get("DAMAGE_HEAT")[1, 1]), grids.has_any_data("TRAILS")
    (1.0, False)
    >>> grids.apply_decay(); round(float(grids.get("DAMAGE_HEAT")[1, 1]), 4)
    0.85
    >>> grids.close(delete_files=True)
    """

    def __init__(self, height: int, width: int, *, memmap_config: Any = None, simulation_id: str | None = None,
                 channel_specs: Iterable[TemporalChannelSpec] = DEFAULT_TEMPORAL_CHANNEL_SPECS,
                 observation_config: Any = None):
        self.shape = (int(height), int(width))
        self._specs = {spec.name: spec for spec in channel_specs}
        self._names = {_layer_name(name): "w+" for name in self._specs}
        self._observation_config = observation_config
        self._has_data = {name: False for name in self._specs}
        self._sim = simulation_world(height, width, memmap_config=memmap_config, simulation_id=simulation_id)
        for name in self._specs:
            if self._layer(name).grid_class != "temporal":
                raise ManagerError(f"channel {name!r} is a {self._layer(name).grid_class} layer of the world, not "
                                   "a temporal one")
        self._delete = bool(getattr(memmap_config, "delete_on_close", False))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._specs

    def channel_names(self) -> tuple[str, ...]:
        return tuple(self._specs)

    def deposit(self, name: str, events: Iterable[tuple[int, int, float]], *, accumulate: bool = True,
                clip_max: float | None = 1.0) -> None:
        """Deposit ``(y, x, intensity)`` events: added (or set), clamped to ``clip_max``, outside ones ignored."""
        layer = self._layer(name)
        rows = list(events)
        if not rows:
            return
        ys, xs, values = (np.asarray(column) for column in zip(*rows))
        self._world().deposit(layer.name, ys.astype(np.int64), xs.astype(np.int64), values.astype(np.float64),
                              mode="add" if accumulate else "set", clip=(None, clip_max), out_of_bounds="ignore")
        self._has_data[name] = True

    def has_any_data(self, name: str) -> bool:
        """Whether channel ``name`` may hold non-zero cells (True from its first deposit, until :meth:`clear_all`)."""
        return self._has_data.get(name, False)

    def gamma_for(self, name: str) -> float:
        """Channel ``name``'s decay: the observation config's (``spec.config_gamma_key``), else the default."""
        spec = self._specs[name]
        value = getattr(self._observation_config, spec.config_gamma_key, None)
        return float(spec.default_gamma if value is None else value)

    def apply_decay(self, name: str | None = None) -> None:
        """Decay one channel, or all of this manager's, by their gammas in one world step; then commit."""
        names = list(self._specs) if name is None else [name]
        world = self._world()
        for channel in names:
            layer = self._layer(channel)
            gamma = self.gamma_for(channel)
            if layer.spec.decay != gamma:
                world.set_decay(layer.name, gamma)
        world.step(layers=[_layer_name(channel) for channel in names])
        self._sim.commit()  # type: ignore[union-attr]

    def clear_all(self) -> None:
        """Zero every channel of this manager."""
        world = self._world()
        for name in self._specs:
            layer = world[_layer_name(name)]
            if layer.storage == "sparse":  # a sparse layer changes only through deposits
                world.deposit(layer.name, *np.nonzero(layer[...]), 0.0, mode="set")
            else:
                layer.numpy().fill(0)
        self._has_data = {name: False for name in self._specs}

    def close(self, *, delete_files: bool | None = None) -> None:
        super().close(delete_files=self._delete if delete_files is None else delete_files)
        self._has_data = {name: False for name in self._specs}

