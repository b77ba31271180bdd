"""Mesa property layers stored in a world: a Mesa grid whose layers are a world file's layers, zero-copy.

Mesa (``pip install 'worldstore[mesa]'``, Mesa >= 3.5, Python >= 3.12) keeps
each property layer of a ``mesa.discrete_space`` grid in a numpy array
``layer._data`` of shape ``(width, height)``, indexed ``[x, y]``. A world
layer is ``(height, width)``, indexed ``[y, x]``. So the Mesa array of a
backed layer is the transposed view ``world[name].numpy().T``: the same
memory, no copy, and every write Mesa makes (``layer.data = ...``,
``set_cells``, ``modify_cells``, a cell's ``cell.sugar = 0``) lands in the
world, mapped straight over the file.

:func:`attach` does it for a whole grid in one call: it creates the world (or
opens it), links every property layer (Mesa's own ``"empty"`` layer too),
re-points the grid's cell accessors (Mesa builds them as closures over the
array a layer had when it was added, so a layer re-pointed without them would
go on writing to its old array), and adds a step hook that commits the world
after every model step and snapshots it every ``snapshot_every`` steps.
:meth:`AttachedGrid.close` gives the grid plain numpy copies back, then closes
the world.

What this module guarantees: a linked layer is never silently unlinked.
Layers that cannot stay linked (sparse storage, a temporal layer that may
switch between dense and sparse, a legacy ``mesa.space`` layer, a dtype the
file cannot hold) are refused with :class:`MesaLinkError` or
:class:`MesaTypeError`; a layer moved to another dense storage kind is linked
again (values Mesa wrote meanwhile carried over). What it assumes: Mesa's
``PropertyLayer`` keeps its array in ``_data``, its grids build accessors with
``create_property_accessors`` and ``Model.schedule_recurring`` takes a
``Schedule`` and a ``Priority`` (true of Mesa 3.5; checked on import).

Mesa is an optional extra: ``import worldstore`` never imports this module,
and without Mesa every entry point raises :class:`~worldstore.MissingExtraError`.
README ("Mesa") has a runnable example.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import weakref
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from .errors import LayerDtypeError, MissingExtraError, ReadOnlyWorldError, WorldstoreError
from .spec import GRID_CLASSES, LAYER_DTYPES, RESERVED_NAMES, LayerSpec, WorldSpec
from .world import World, create, open as open_world

try:  # Mesa is an optional extra: this module imports without it, and says so when used.
    from mesa.discrete_space import PropertyLayer as _PropertyLayer
    from mesa.discrete_space.property_layer import create_property_accessors as _accessors
    from mesa.time import Priority as _Priority, Schedule as _Schedule
    _MESA_ERROR: ImportError | None = None
except ImportError as exc:  # no Mesa, or one older than 3.5 (no mesa.time)
    _PropertyLayer, _MESA_ERROR = object, exc  # type: ignore[assignment,misc]

__all__ = ["attach", "AttachedGrid", "WorldPropertyLayer", "world_name", "MesaLinkError", "MesaTypeError"]

#: Grid classes whose layers are (H, W) grids a Mesa layer can be.
_GRID_2D = ("resource", "environment", "temporal")
_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,62}$")


class MesaLinkError(WorldstoreError, ValueError):
    """A Mesa property layer and a world layer that cannot be (or stay) linked: sparse storage, a density switch,
    a shape, dtype or name that differs, a layer the world lacks."""


class MesaTypeError(WorldstoreError, TypeError):
    """An object worldstore.mesa cannot back: a legacy ``mesa.space`` grid or layer, a space that is not a 2-D
    ``mesa.discrete_space`` grid."""


def _require_mesa(feature: str) -> None:
    """Raise :class:`MissingExtraError` (an ImportError) naming the extra where Mesa >= 3.5 is missing."""
    if _MESA_ERROR is None:
        return
    try:
        found = f"Mesa {importlib.metadata.version('mesa')} is installed"
    except importlib.metadata.PackageNotFoundError:
        found = "Mesa is not installed"
    raise MissingExtraError(f"{feature} needs Mesa >= 3.5 (mesa.discrete_space and mesa.time), and {found} "
                            f"({_MESA_ERROR}): pip install 'worldstore[mesa]' (Mesa 3.5 needs Python >= 3.12). "
                            "Everything else in worldstore works without it") from _MESA_ERROR


def world_name(mesa_name: str) -> str:
    """The world layer name a Mesa layer gets by default: ``mesa_name`` itself where worldstore allows it.

    Mesa allows any string; a world layer name is 1-63 letters, digits or
    ``_`` starting with a letter, and not one of the names the file format
    uses (``y``, ``x``, ``agent``, ``yx``, the grid class names). Other
    characters become ``_``, and a name that is reserved or does not start
    with a letter gets the prefix ``mesa_`` (``"x"`` -> ``"mesa_x"``,
    ``"sugar level"`` -> ``"sugar_level"``). The Mesa name is kept in the
    world layer's ``long_name``, which :func:`attach` reads back.
    """
    if not isinstance(mesa_name, str) or not mesa_name:
        raise MesaLinkError(f"a Mesa property layer name must be a non-empty string, got {mesa_name!r}")
    name = re.sub(r"[^A-Za-z0-9_]", "_", mesa_name)
    if not name[0].isalpha() or not name.isascii() or name in RESERVED_NAMES or name in GRID_CLASSES:
        name = "mesa_" + name
    return name[:63]


def _check_dtype(mesa_name: str, dtype: np.dtype) -> str:
    if dtype.name not in LAYER_DTYPES:
        raise LayerDtypeError(f"Mesa property layer {mesa_name!r} has dtype {dtype.name}, which a world layer cannot "
                              f"hold (it holds {', '.join(LAYER_DTYPES)}), so it cannot be linked zero-copy: create "
                              f"the Mesa layer with one of those (int64 for integers, float64 for floats), or leave "
                              f"it out with attach(..., layers=[...])")
    return dtype.name


class WorldPropertyLayer(_PropertyLayer):  # type: ignore[misc,valid-type]
    """A Mesa ``PropertyLayer`` whose data is a world layer: ``data`` is ``world[world_name].numpy().T``.

    ``data`` has shape ``(width, height)`` and is indexed ``[x, y]`` as in
    Mesa; the world layer has shape ``(height, width)`` and is indexed
    ``[y, x]``. Same memory, same dtype (one of
    :data:`worldstore.LAYER_DTYPES`): what Mesa writes is in the world, and
    what the world restores (:meth:`World.restore`) is what Mesa reads.

    Usually made by :func:`attach`; made by hand, add it to a grid with
    ``grid.add_property_layer(layer)`` (pass ``dimensions=grid.dimensions``
    when the grid was built with a list). Raises :class:`MesaLinkError`
    for a world layer that is not a writable, dense (H, W) layer that stays
    dense (no ``switch_density``), ``LayerNotFoundError`` for an unknown
    name, ``MissingExtraError`` without Mesa. Pickling keeps the world's path
    and the layer's names: unpickling opens the world again for writing and
    writes the pickled values into it (so the file follows the unpickled model).
    """

    def __init__(self, world: World, layer: str, name: str | None = None, dimensions: Any = None):
        _require_mesa("worldstore.mesa.WorldPropertyLayer")
        owner = _attachment_of(world)
        self._link_fields(owner, layer, name if name is not None else owner._mesa_name_of(layer), dimensions)
        owner._layers[self.name] = self

    def _link_fields(self, owner: "AttachedGrid", layer: str, name: str, dimensions: Any) -> None:
        world = owner.world
        target = world[layer]
        _check_linkable(world, target)
        height, width = target.shape
        if dimensions is None:
            dimensions = (width, height)
        if tuple(dimensions) != (width, height):
            raise MesaLinkError(f"world layer {layer!r} of {world.path} is (height, width) = {target.shape}, so its "
                                f"Mesa layer has dimensions (width, height) = {(width, height)}, not "
                                f"{tuple(dimensions)}")
        self.name = name
        self.dimensions = dimensions
        self.world_name = layer
        self._owner: AttachedGrid | None = owner
        self._layer = target
        self._link(target.numpy())

    def _link(self, array: np.ndarray) -> None:
        self._array = array  # the world layer's ndarray, (H, W)
        self._data = array.T  # Mesa's view of it, (W, H): a transposed view, zero-copy

    @property
    def linked(self) -> bool:
        """Whether the data is the world layer's (False after :meth:`AttachedGrid.detach`)."""
        return self._owner is not None

    @property
    def path(self) -> str | None:
        """The world file's path (kept after a detach)."""
        return self._path if self._owner is None else self._owner.path

    @property
    def data(self) -> np.ndarray:
        """The layer's values, ``(width, height)``, indexed ``[x, y]`` (the world layer's memory while linked)."""
        if self._owner is not None and self._layer.numpy() is not self._array:
            self._owner._relink(self)  # World.set_storage moved it: follow, or refuse
        return self._data

    @data.setter
    def data(self, value: Any) -> None:
        self.data[:] = value  # in place, as Mesa's own setter

    def __repr__(self) -> str:
        where = f'world layer "{self.world_name}" of {self.path}'
        state = "" if self.linked else " (detached)"
        return (f'<worldstore.mesa property layer "{self.name}": {where}{state}, dimensions {tuple(self.dimensions)}, '
                f'{self._data.dtype.name}>')

    def _unlink(self) -> None:
        """Hold a plain copy of the values from now on (a detach)."""
        self._path = self._owner.path if self._owner is not None else None
        self._data = np.ascontiguousarray(self._data)
        self._array = self._layer = self._owner = None

    def __reduce__(self):
        values = np.ascontiguousarray(self._data)
        if self._owner is None:  # detached: a plain Mesa layer
            return _plain_layer, (self.name, self.dimensions, values)
        return _relinked_layer, (self._owner, self.world_name, self.name, self.dimensions, values)


def _plain_layer(name: str, dimensions: Any, values: np.ndarray) -> Any:
    layer = _PropertyLayer.__new__(_PropertyLayer)
    layer.name, layer.dimensions, layer._data = name, dimensions, values
    return layer


def _relinked_layer(owner: "AttachedGrid", layer: str, name: str, dimensions: Any, values: np.ndarray) -> Any:
    """Unpickling a linked layer: link it to the world its attachment opened again, and give it its pickled values."""
    if owner.world is None:
        return _plain_layer(name, dimensions, values)
    linked = WorldPropertyLayer.__new__(WorldPropertyLayer)
    linked._link_fields(owner, layer, name, dimensions)
    linked._data[...] = values
    owner._layers[name] = linked
    return linked


def _check_linkable(world: World, layer: Any) -> None:
    """Raise unless ``layer`` of ``world`` can be a Mesa layer and stay one."""
    name, spec = layer.name, layer.spec
    if not world.writable:
        raise ReadOnlyWorldError(f"{world.path} is open read-only, so Mesa could not write layer {name!r}: open it "
                                 "with mode 'r+' (attach() does)")
    if spec.grid_class not in _GRID_2D:
        raise MesaLinkError(f"world layer {name!r} is an {spec.grid_class} layer of shape {layer.shape}; a Mesa "
                            f"property layer is a (height, width) grid: a {', '.join(_GRID_2D)} layer")
    if layer.storage == "sparse":
        raise MesaLinkError(f"world layer {name!r} is stored sparse (COO), which has no array Mesa could write in "
                            f"place; make it dense first: world.set_storage({name!r}, 'mapped')")
    if spec.switch_density is not None:
        raise MesaLinkError(f"world layer {name!r} switches to sparse storage when its density falls to "
                            f"{spec.switch_density / 2:g} (switch_density={spec.switch_density:g}), and Mesa's array "
                            "could not follow it there; create the world layer without switch_density")


def _check_grid(grid: Any) -> None:
    """Raise :class:`MesaTypeError` unless ``grid`` is a 2-D ``mesa.discrete_space`` grid with property layers."""
    module = type(grid).__module__
    if module == "mesa.space" or module.startswith("mesa.space."):
        raise MesaTypeError(f"{type(grid).__name__} is a legacy mesa.space grid: its PropertyLayer.modify_cells "
                            "replaces the layer's array, so no world could stay linked to it. Use a "
                            "mesa.discrete_space grid (OrthogonalMooreGrid, OrthogonalVonNeumannGrid, HexGrid)")
    if not isinstance(getattr(grid, "_mesa_property_layers", None), dict) or not hasattr(grid, "cell_klass"):
        raise MesaTypeError(f"expected a mesa.discrete_space grid with property layers, got {type(grid).__name__}")
    dimensions = getattr(grid, "dimensions", None)
    if dimensions is None or len(dimensions) != 2:
        raise MesaTypeError(f"a world holds 2-D grids; this {type(grid).__name__} has dimensions {dimensions!r}")
    for name, layer in grid._mesa_property_layers.items():
        if not isinstance(layer, _PropertyLayer):
            raise MesaTypeError(f"property layer {name!r} of the grid is a {type(layer).__module__}."
                                f"{type(layer).__name__}, not a mesa.discrete_space PropertyLayer (a legacy "
                                "mesa.space layer replaces its array in modify_cells); create it with "
                                "grid.create_property_layer()")


#: The attachment of each world (by id; the value checks it is the same world): a world links one grid.
_ATTACHMENTS: "weakref.WeakValueDictionary[int, AttachedGrid]" = weakref.WeakValueDictionary()


def _attachment_of(world: World) -> "AttachedGrid":
    if not isinstance(world, World):
        raise TypeError(f"expected a worldstore World, got {type(world).__name__}")
    found = _ATTACHMENTS.get(id(world))
    if found is not None and found.world is world:
        return found
    return AttachedGrid(world, owns_world=False)


class AttachedGrid:
    """A Mesa grid whose property layers are a world's layers, committed after every model step.

    Made by :func:`attach`. ``grid.sugar.data`` and ``world["sugar"].numpy().T``
    are the same memory; ``layers`` maps Mesa names to the grid's
    :class:`WorldPropertyLayer` objects and ``names`` Mesa names to world
    layer names. After each step of ``model`` the world takes a step
    (:meth:`World.step`: its counter, and any temporal layers' decay) and
    commits (a snapshot every ``snapshot_every`` steps): the world's step
    counts the model's steps from the attach on.

    Use it as a context manager, or call :meth:`close`: it detaches the grid
    (each layer gets a plain numpy copy of its values, and the hook stops),
    then closes the world if :func:`attach` opened it. Pickling (the grid,
    or the model holding it) keeps the path, the names and the values;
    unpickling opens the world for writing again (``WorldLockedError`` while
    another writer holds it, this process's original included) and writes
    the pickled values into it.
    """

    def __init__(self, world: World, *, owns_world: bool, durable: bool = False, snapshot_every: int | None = None,
                 swmr: bool = True):
        self._world: World | None = world
        self._path = world.path
        self._owns_world = owns_world
        self._swmr = swmr  # how unpickling opens the world again
        self._durable = durable
        self._snapshot_every = snapshot_every
        self._grid: Any = None
        self._model: Any = None
        self._hook: Any = None  # the model's EventGenerator running _after_step
        self._layers: dict[str, WorldPropertyLayer] = {}
        found = _ATTACHMENTS.get(id(world))
        if found is not None and found.world is world and found.grid is not None and found._layers:
            raise MesaLinkError(f"{world.path} already backs a Mesa grid ({found!r}); detach that one first")
        _ATTACHMENTS[id(world)] = self

    # -- what it is -------------------------------------------------------
    @property
    def world(self) -> World | None:
        """The world (None after :meth:`close`)."""
        return self._world

    @property
    def path(self) -> str:
        return self._path

    @property
    def grid(self) -> Any:
        return self._grid

    @property
    def model(self) -> Any:
        return self._model

    @property
    def layers(self) -> Mapping[str, WorldPropertyLayer]:
        """The linked layers by Mesa name."""
        return dict(self._layers)

    @property
    def names(self) -> dict[str, str]:
        """Mesa layer name -> world layer name, for the linked layers."""
        return {name: layer.world_name for name, layer in self._layers.items()}

    @property
    def attached(self) -> bool:
        return bool(self._layers)

    def __repr__(self) -> str:
        if not self._layers:
            return f"<worldstore.mesa attached grid: {self._path} (detached)>"
        names = ", ".join(f"{m}->{w}" if m != w else m for m, w in self.names.items())
        return f"<worldstore.mesa attached grid: {self._path}, layers {names}>"

    def _mesa_name_of(self, layer: str) -> str:
        long_name = self._world[layer].spec.long_name
        return long_name if long_name and world_name(long_name) == layer else layer

    # -- the step hook ------------------------------------------------------
    def _after_step(self) -> None:
        """Run by Mesa after each model step: check the links, step the world, commit (or snapshot)."""
        world = self._world
        if world is None:
            return
        for layer in self._layers.values():
            if layer._layer.numpy() is not layer._array:
                self._relink(layer)
        step = world.step()
        if self._snapshot_every and step % self._snapshot_every == 0:
            world.snapshot(durable=self._durable)
        else:
            world.commit(durable=self._durable)

    def _start_hook(self, model: Any) -> None:
        if not hasattr(model, "schedule_recurring"):
            raise MesaTypeError(f"model must be a mesa.Model (Mesa >= 3.5, with schedule_recurring), got "
                                f"{type(model).__name__}")
        # Mesa holds scheduled callbacks weakly (a callback nobody keeps is dropped without a word): the
        # generator, which the model keeps, keeps this attachment. LOW priority: after the model's own step,
        # which Mesa runs at the same time with HIGH priority.
        generator = model.schedule_recurring(self._after_step, _Schedule(interval=1, start=model.time + 1),
                                             _Priority.LOW)
        generator._worldstore_attachment = self
        self._hook, self._model = generator, model

    # -- the world's operations, kept linked -------------------------------
    def commit(self) -> int:
        """Commit the world now (the hook does it after each step); return the committed step."""
        return self._live().commit(durable=self._durable)

    def snapshot(self) -> dict[str, Any]:
        """Commit, then snapshot the world (see :meth:`World.snapshot`)."""
        return self._live().snapshot(durable=self._durable)

    def restore(self, step: int) -> None:
        """Make the snapshot of ``step`` live: Mesa's layers (and cell accessors) read it at once.

        Only the grids go back: the model's agents, its ``steps`` and its
        random state do not (put them back yourself, or unpickle a model
        pickled at that step). The world's step counter becomes ``step``.
        """
        world = self._live()
        world.restore(step)
        for layer in self._layers.values():
            if layer._layer.numpy() is not layer._array:
                self._relink(layer)

    def set_storage(self, name: str, kind: str) -> None:
        """Move the world layer of Mesa layer ``name`` to storage ``kind`` (``"mapped"`` or ``"memory"``), linked.

        ``"sparse"`` raises :class:`MesaLinkError` (Mesa needs an array to
        write in place) and changes nothing.
        """
        world = self._live()
        layer = self._layers.get(name)
        if layer is None:
            raise MesaLinkError(f"no linked Mesa layer named {name!r}; linked: {', '.join(self._layers) or 'none'}")
        if kind == "sparse":
            raise MesaLinkError(f"Mesa layer {name!r} cannot be stored sparse: Mesa writes its array in place, and a "
                                "sparse layer has none. Nothing was changed")
        world.set_storage(layer.world_name, kind)
        self._relink(layer)

    def _relink(self, layer: WorldPropertyLayer) -> None:
        """The world layer of ``layer`` has another array now: link Mesa to it, carrying over what Mesa wrote to
        the old one since, or refuse (and keep Mesa's values) when it has no array Mesa could write."""
        target = layer._layer
        if self._grid is None:
            raise MesaLinkError(f"world layer {layer.world_name!r} (Mesa layer {layer.name!r}) was moved to another "
                                "storage, and a layer made by hand cannot re-point its grid's cell accessors; link "
                                "whole grids with worldstore.mesa.attach(), which follows such moves")
        if target.storage == "sparse":
            raise MesaLinkError(f"world layer {layer.world_name!r} (Mesa layer {layer.name!r}) was moved to sparse "
                                f"storage, which Mesa cannot write in place; Mesa's values are kept in its old array. "
                                f"Move it back with world.set_storage({layer.world_name!r}, 'mapped'), and change "
                                "the storage of linked layers with AttachedGrid.set_storage()")
        array = target.numpy()
        array[...] = layer._array
        layer._link(array)
        self._rebind(layer)

    def _rebind(self, layer: Any) -> None:
        """Point the grid's cell accessor of ``layer`` at its present array (Mesa's accessors capture the array)."""
        if self._grid is not None and self._grid._mesa_property_layers.get(layer.name) is layer:
            setattr(self._grid.cell_klass, layer.name,
                    _accessors(layer._data, docstring=f"accessor for {layer.name}"))

    def _live(self) -> World:
        if self._world is None:
            raise MesaLinkError(f"this attachment of {self._path} is closed; attach the grid again")
        return self._world

    # -- the end --------------------------------------------------------------
    def detach(self) -> None:
        """Give each linked layer a plain numpy copy of its values and stop the step hook; the world stays open.

        The grid then runs as stock Mesa; :func:`attach` links it again.
        Detaching twice is harmless.
        """
        if self._hook is not None:
            self._hook.stop()
            self._hook.__dict__.pop("_worldstore_attachment", None)
            self._hook = None
        for layer in self._layers.values():
            layer._unlink()
            self._rebind(layer)
        self._layers.clear()

    def close(self) -> None:
        """Commit, detach (the grid keeps plain copies), then close the world if :func:`attach` opened it."""
        world = self._world
        if world is None:
            return
        try:
            if self._layers and not world.closed and world.writable:
                world.commit(durable=self._durable)
        finally:
            self.detach()
            self._world = None
            if _ATTACHMENTS.get(id(world)) is self:
                del _ATTACHMENTS[id(world)]
            if self._owns_world:
                world.close()

    def __enter__(self) -> "AttachedGrid":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # -- pickling -----------------------------------------------------------
    def __reduce__(self):
        open_again = self._world is not None and bool(self._layers)
        args = (self._path, open_again, self._durable, self._snapshot_every, self._swmr)
        return _reopened, args, {"grid": self._grid, "model": self._model, "hook": self._hook}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._grid, self._model, self._hook = state["grid"], state["model"], state["hook"]


def _reopened(path: str, open_again: bool, durable: bool, snapshot_every: int | None, swmr: bool) -> AttachedGrid:
    """Unpickling an attachment: open its world for writing again (its layers link to it as they unpickle)."""
    _require_mesa("unpickling a Mesa grid backed by a world")
    if not open_again:
        attachment = AttachedGrid.__new__(AttachedGrid)
        attachment.__dict__.update(_world=None, _path=path, _owns_world=False, _durable=durable, _swmr=swmr,
                                   _snapshot_every=snapshot_every, _grid=None, _model=None, _hook=None, _layers={})
        return attachment
    world = open_world(path, "r+", swmr=swmr)
    return AttachedGrid(world, owns_world=True, durable=durable, snapshot_every=snapshot_every, swmr=swmr)


def attach(grid: Any, world: str | os.PathLike | World, *, model: Any = None, layers: Iterable[str] | None = None,
           names: Mapping[str, str] | None = None, source: str = "grid", snapshot_every: int | None = None,
           durable: bool = False, storage: str = "mapped", swmr: bool = True) -> AttachedGrid:
    """Back the property layers of a Mesa grid with a world's layers, zero-copy; return the :class:`AttachedGrid`.

    ``grid``: a 2-D ``mesa.discrete_space`` grid (``OrthogonalMooreGrid``,
    ``OrthogonalVonNeumannGrid``, ``HexGrid``) of dimensions
    ``(width, height)``. ``world``: a path, or a :class:`World` open with
    ``mode="r+"``. A path with no file gets a new world of
    ``height x width`` cells with one layer per Mesa layer: ``resource``
    layers (``environment`` for bool ones) of the Mesa layer's dtype,
    stored ``storage`` (``"mapped"`` or ``"memory"``), opened in SWMR mode
    (``swmr``) so other processes can read it while the model runs. A path
    with a world opens it; that world must already have a layer for each
    Mesa layer, of shape ``(height, width)`` and the same dtype.

    ``layers``: the Mesa layer names to link (default: all, ``"empty"``
    included). ``names``: world layer names for Mesa names (default
    :func:`world_name`, or the layer whose ``long_name`` is the Mesa name).
    ``source="grid"`` copies the grid's values into the world;
    ``source="world"`` leaves the world's values, which Mesa then reads.

    ``model``: a ``mesa.Model``: after each of its steps the world takes a
    step and commits (``durable=True`` fsyncs each commit: survives a power
    cut, not only a crash), and every ``snapshot_every`` steps it snapshots
    instead. The hook is held by the model, not weakly as Mesa holds
    callbacks. Without ``model``, call :meth:`AttachedGrid.commit` yourself.

    Raises :class:`MesaTypeError` (a ``TypeError``) for a legacy
    ``mesa.space`` grid or layer and for other spaces; ``LayerDtypeError`` for
    a dtype a world cannot hold (``uint64``, ``object``...);
    :class:`MesaLinkError` (a ``ValueError``) for a world layer that is
    missing, of another shape or dtype, sparse, or set to switch density,
    and for names that collide; ``MissingExtraError`` without Mesa. Nothing
    is linked when it raises, and a world it created is removed.
    """
    _require_mesa("worldstore.mesa.attach()")
    _check_grid(grid)
    if source not in ("grid", "world"):
        raise ValueError(f"source must be 'grid' or 'world', got {source!r}")
    if snapshot_every is not None and (isinstance(snapshot_every, bool) or not isinstance(snapshot_every, int)
                                       or snapshot_every < 1):
        raise ValueError(f"snapshot_every must be an integer >= 1 or None, got {snapshot_every!r}")
    if storage not in ("mapped", "memory"):
        raise MesaLinkError(f"storage must be 'mapped' or 'memory' (Mesa writes its layers in place, so not "
                            f"'sparse'), got {storage!r}")
    available = grid._mesa_property_layers
    chosen = list(available) if layers is None else list(layers)
    unknown = [name for name in chosen if name not in available]
    if unknown:
        raise MesaLinkError(f"the grid has no property layer named {', '.join(map(repr, unknown))}; it has "
                            f"{', '.join(map(repr, available))}")
    for name in chosen:
        _check_dtype(name, np.asarray(available[name].data).dtype)
    width, height = (int(d) for d in grid.dimensions)
    owns, created = False, None
    if isinstance(world, World):
        target = world
    else:
        path = os.fspath(world)
        if os.path.exists(path):
            target, owns = open_world(path, "r+", swmr=swmr), True
        else:
            mapping = _new_names(chosen, names)
            target = create(path, _world_spec(grid, height, width, chosen, mapping, storage), swmr=swmr)
            owns, created = True, path
    try:
        if target.shape != (height, width):
            raise MesaLinkError(f"{target.path} holds a world of (height, width) = {target.shape}; the grid's "
                                f"dimensions (width, height) = {(width, height)} need {(height, width)}")
        attachment = AttachedGrid(target, owns_world=owns, durable=durable, snapshot_every=snapshot_every, swmr=swmr)
        try:
            mapping = _resolve_names(target, chosen, names)
            linked = [_new_layer(attachment, grid, name, mapping[name]) for name in chosen]
        except BaseException:
            _ATTACHMENTS.pop(id(target), None)
            raise
    except BaseException:
        if owns:
            target.close()
        if created is not None:
            os.unlink(created)
        raise
    # Nothing raises from here on: the grid is changed only now.
    attachment._grid = grid
    for layer in linked:
        old = available[layer.name]
        if source == "grid":
            layer._data[...] = old.data
        old._data = layer._data  # a layer object kept from before the attach reads and writes the world too
        available[layer.name] = layer
        attachment._layers[layer.name] = layer
        attachment._rebind(layer)
    if model is not None:
        attachment._start_hook(model)
    return attachment


def _new_layer(attachment: AttachedGrid, grid: Any, name: str, layer: str) -> WorldPropertyLayer:
    linked = WorldPropertyLayer.__new__(WorldPropertyLayer)
    linked._link_fields(attachment, layer, name, grid.dimensions)
    dtype = np.asarray(grid._mesa_property_layers[name].data).dtype
    if linked._data.dtype != dtype:
        raise MesaLinkError(f"world layer {layer!r} of {attachment.path} is {linked._data.dtype.name}, Mesa layer "
                            f"{name!r} is {dtype.name}: a zero-copy link needs one dtype. Use another world file, or "
                            f"create the Mesa layer with dtype {linked._data.dtype.name}")
    return linked


def _new_names(chosen: list[str], names: Mapping[str, str] | None) -> dict[str, str]:
    mapping = {name: (names or {}).get(name) or world_name(name) for name in chosen}
    seen: dict[str, str] = {}
    for mesa_name, layer in mapping.items():
        if layer in seen:
            raise MesaLinkError(f"Mesa layers {seen[layer]!r} and {mesa_name!r} would both be world layer {layer!r}; "
                                f"name one of them with attach(..., names={{{mesa_name!r}: 'ANOTHER_NAME'}})")
        seen[layer] = mesa_name
    return mapping


def _resolve_names(world: World, chosen: list[str], names: Mapping[str, str] | None) -> dict[str, str]:
    """World layer names for Mesa names in an existing world: ``names``, then a layer whose long_name is the Mesa
    name, then :func:`world_name`."""
    by_long_name = {world[layer].spec.long_name: layer for layer in world}
    mapping = {}
    for name in chosen:
        mapping[name] = (names or {}).get(name) or by_long_name.get(name) or world_name(name)
    missing = {name: layer for name, layer in mapping.items() if layer not in world}
    if missing:
        listed = ", ".join(f"{name!r} (as {layer!r})" for name, layer in missing.items())
        raise MesaLinkError(f"{world.path} has no layer for Mesa layers {listed}; it has {', '.join(world)}. Map them "
                            "with names={...}, leave them out with layers=[...], or attach to a new path")
    return _new_names(chosen, mapping)


def _world_spec(grid: Any, height: int, width: int, chosen: list[str], mapping: dict[str, str],
                storage: str) -> WorldSpec:
    specs = []
    for name in chosen:
        dtype = np.asarray(grid._mesa_property_layers[name].data).dtype
        specs.append(LayerSpec(mapping[name], "environment" if dtype.kind == "b" else "resource", dtype.name,
                               storage=storage, long_name=name,
                               description=f"Mesa property layer {name!r}: Mesa indexes it [x, y] with shape "
                                           f"(width, height); this dataset is (y, x)"))
    return WorldSpec(height, width, 0, specs)
