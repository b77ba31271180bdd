"""Per-agent observation windows and agent memories: the hot path of a simulation step.

:func:`observe` gathers, for N agents at integer positions ``(y, x)``, the
window rows ``y-R..y+R`` and columns ``x-R..x+R`` of each named channel into
one ``(N, C, S, S)`` batch (``S = 2R+1``); cells outside the world take the
channel layer's pad value. :func:`remember` copies what each agent sees into
its own agent layer, where VISIBILITY allows. ``World.observe`` and
``World.remember`` are the public entry points; this module holds the work.

How a channel is gathered, fastest first:

- the compiled kernel (``_kernels.c``: one copy per window row, straight from
  the mapped or in-RAM layer, converting to float32 on the way), for float32
  output;
- numpy over a strided view (``sliding_window_view``: one fancy index for all
  agents whose window lies inside the world, a slice copy per border agent)
  for other output dtypes or without the compiled kernels;
- for sparse layers, only the stored entries inside the windows (two binary
  searches per window row), never a dense copy.

``worldstore._windows`` is the plain per-agent loop the tests compare with.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from . import _extras, _native
from ._windows import check_positions, check_radius, window_slices
from .errors import ObserveError
from .storage import SparseStorage
from .temporal import as_array

from .world import OPERATIONS, World

#: Output dtypes observe() accepts.
OUTPUT_DTYPES = ("float16", "float32", "float64")


def check_agent_ids(agent_ids: Any, count: int, agents: int, needed: bool) -> np.ndarray | None:
    """Which agent layer each position reads: ``agent_ids`` checked, or ``arange(N)`` when N is the agent count."""
    if agent_ids is None:
        if not needed:
            return None
        if count != agents:
            raise ObserveError(f"an agent-layer channel needs one position per agent: this world has {agents} "
                               f"agents and {count} positions were given; pass agent_ids to say whose they are")
        return np.arange(count, dtype=np.int64)
    ids = as_array(agent_ids)
    if ids.shape != (count,) or (ids.size and ids.dtype.kind not in "iu"):
        raise ObserveError(f"agent_ids must be {count} integers (one per position), got shape {ids.shape} "
                           f"and dtype {ids.dtype}")
    ids = ids.astype(np.int64)
    if count and (ids.min() < 0 or ids.max() >= agents):
        raise ObserveError(f"agent_ids must lie in [0, {agents}), got values from {ids.min()} to {ids.max()}")
    return ids


class _Plan:
    """A checked observe() call: nothing is written until every argument passed."""

    def __init__(self, world: "World", positions: Any, radius: Any, channels: Any, agent_ids: Any, into: Any):
        self.observation = _observation_layer(world, into)
        defaults = self.observation
        if defaults is None and (radius is None or channels is None):
            observations = [name for name in world if world[name].grid_class == "observation"]
            defaults = world[observations[0]] if len(observations) == 1 else None
        if defaults is not None:
            radius = defaults.spec.radius if radius is None else radius
            channels = defaults.spec.channels if channels is None else channels
        if radius is None or channels is None:
            raise ObserveError("observe() needs radius and channels (this world has no single observation layer "
                               "to take them from)")
        self.radius = check_radius(radius)
        if isinstance(channels, str):
            channels = [channels]
        self.channels = [str(name) for name in channels]
        if not self.channels:
            raise ObserveError("observe() needs at least one channel")
        self.layers = []
        for name in self.channels:
            layer = world[name]  # LayerNotFoundError, listing the layers, for an unknown name
            if layer.grid_class == "observation":
                raise ObserveError(f"channel {name!r} is an observation layer; observe its own channels instead")
            self.layers.append(layer)
        self.positions = check_positions(positions, world.height, world.width)
        self.count = len(self.positions)
        needs_ids = any(layer.grid_class == "agent" for layer in self.layers)
        self.agent_ids = check_agent_ids(agent_ids, self.count, world.agents, needs_ids)
        if self.observation is not None:
            expected = self.observation.shape
            if (self.count, len(self.channels), 2 * self.radius + 1, 2 * self.radius + 1) != expected:
                raise ObserveError(f"observation layer {self.observation.name!r} holds {expected}; this observe() "
                                   f"would give ({self.count}, {len(self.channels)}, {2 * self.radius + 1}, "
                                   f"{2 * self.radius + 1})")

    @property
    def shape(self) -> tuple[int, int, int, int]:
        side = 2 * self.radius + 1
        return (self.count, len(self.channels), side, side)


def _observation_layer(world: "World", into: Any):
    """The observation layer to write into: ``into`` by name, ``True`` for the world's only one, else None."""
    if into is None or into is False:
        return None
    observations = [name for name in world if world[name].grid_class == "observation"]
    if into is True:
        if len(observations) != 1:
            raise ObserveError(f"into=True needs exactly one observation layer; this world has "
                               f"{len(observations)} ({', '.join(observations) or 'none'}): pass its name")
        into = observations[0]
    layer = world[into]
    if layer.grid_class != "observation":
        raise ObserveError(f"into={into!r}: that is a {layer.grid_class} layer, not an observation layer")
    if not world.writable:
        raise ObserveError(f"into={into!r}: the world is open read-only; observe into a buffer instead")
    world._check_owner()
    return layer


def observe(world: "World", positions: Any, radius: Any = None, channels: Any = None, *, out: Any = None,
            dtype: Any = None, agent_ids: Any = None, tensor: bool = False, device: Any = None,
            into: Any = None) -> Any:
    """See :meth:`worldstore.World.observe`."""
    plan = _Plan(world, positions, radius, channels, agent_ids, into)
    target, result = _target(world, plan, out, dtype, tensor, device)
    gather(plan.layers, plan.positions, plan.radius, target, plan.agent_ids)
    if device is not None and _is_cuda(device, out):
        return _to_device(world, target, result, device)
    return result


def _is_cuda(device: Any, out: Any) -> bool:
    return str(device).startswith("cuda") or (hasattr(out, "is_cuda") and out.is_cuda)


def _target(world: "World", plan: _Plan, out: Any, dtype: Any, tensor: bool, device: Any) -> tuple[np.ndarray, Any]:
    """The numpy array to gather into and what observe() returns."""
    if plan.observation is not None:
        if out is not None:
            raise ObserveError("pass either out= or into=, not both")
        array = plan.observation.numpy()
        return array, _maybe_tensor(array, tensor)
    if device is not None and str(device) != "cpu":
        return _pinned_buffer(world, plan.shape, dtype), out
    if out is None:
        dtype = np.dtype("float32" if dtype is None else dtype)
        _check_dtype(dtype)
        array = np.empty(plan.shape, dtype=dtype)
        return array, _maybe_tensor(array, tensor)
    if type(out).__module__.startswith("torch"):
        if out.device.type != "cpu":
            raise ObserveError(f"out is on {out.device}; pass device={str(out.device)!r} and no out, or a CPU tensor")
        array = out.numpy()  # shares memory
        result = out
    else:
        array, result = out, out
    if not isinstance(array, np.ndarray) or array.shape != plan.shape:
        raise ObserveError(f"out must be an array of shape {plan.shape}, got {getattr(array, 'shape', type(out))}")
    if dtype is not None and np.dtype(dtype) != array.dtype:
        raise ObserveError(f"out has dtype {array.dtype} but dtype={np.dtype(dtype)} was asked for")
    _check_dtype(array.dtype)
    if not array.flags.writeable:
        raise ObserveError("out is read-only")
    return array, result


def _check_dtype(dtype: np.dtype) -> None:
    if dtype.name not in OUTPUT_DTYPES:
        raise ObserveError(f"observations are floating point: dtype must be one of {', '.join(OUTPUT_DTYPES)}, "
                           f"got {dtype}")


def _maybe_tensor(array: np.ndarray, tensor: bool) -> Any:
    if not tensor:
        return array
    return _extras.torch("observe(tensor=True)").from_numpy(array)


def _pinned_buffer(world: "World", shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """A page-locked host buffer for GPU copies, kept per shape and dtype (no allocation in a steady loop)."""
    torch = _extras.torch("observe(device=...)")

    dtype = np.dtype("float32" if dtype is None else dtype)
    _check_dtype(dtype)
    key = (shape, dtype.name)
    cache = world._pinned
    if key not in cache:
        cache.clear()
        cache[key] = torch.empty(shape, dtype=getattr(torch, dtype.name), pin_memory=True)
    return cache[key].numpy()


def _to_device(world: "World", host: np.ndarray, out: Any, device: Any) -> Any:
    """Copy the pinned batch to the GPU asynchronously (into ``out`` when given)."""
    pinned = _extras.torch("observe(device=...)").from_numpy(host)
    if out is not None:
        out.copy_(pinned, non_blocking=True)
        return out
    return pinned.to(device, non_blocking=True)


def gather(layers: list, positions: np.ndarray, radius: int, out: np.ndarray, agent_ids: np.ndarray | None) -> None:
    """Agent ``i``'s window of ``layers[c]`` into ``out[i, c]`` (``out``: ``(N, C, S, S)``).

    Every dense channel the compiled kernel can read goes to it in one call
    (agents split over threads); the rest one channel at a time.
    """
    compiled = []
    for channel, layer in enumerate(layers):
        storage = layer._live()
        pad = layer.pad_value
        if isinstance(storage, SparseStorage):
            storage.gather_windows(positions, radius, out[:, channel], pad)
            continue
        source = storage.array
        if _native.can_gather(source, out):
            compiled.append((channel, source, pad))
        else:
            gather_strided(source, positions, radius, out[:, channel], pad, agent_ids if source.ndim == 3 else None)
    _native.gather_f32(compiled, positions, radius, out, agent_ids)


def gather_strided(source: np.ndarray, positions: np.ndarray, radius: int, out: np.ndarray, pad,
                   layers: np.ndarray | None = None) -> None:
    """numpy's fastest way: one fancy index over a strided window view for the windows inside the world.

    Windows that cross the border are copied slice by slice (they are few
    unless the radius is large next to the world).
    """
    height, width = source.shape[-2:]
    ys, xs = positions[:, 0], positions[:, 1]
    side = 2 * radius + 1
    inside = (ys >= radius) & (ys + radius < height) & (xs >= radius) & (xs + radius < width)
    middle = np.flatnonzero(inside)
    if len(middle) and height >= side and width >= side:
        view = sliding_window_view(source, (side, side), axis=(-2, -1))
        if layers is None:
            out[middle] = view[ys[middle] - radius, xs[middle] - radius]
        else:
            out[middle] = view[layers[middle], ys[middle] - radius, xs[middle] - radius]
    for i in np.flatnonzero(~inside):
        rows, cols, win_rows, win_cols = window_slices(int(ys[i]), int(xs[i]), radius, height, width)
        grid = source[layers[i]] if layers is not None else source
        window = out[i]
        window[...] = pad
        window[win_rows, win_cols] = grid[rows, cols]


# -- remember -----------------------------------------------------------------------------
def _pairs(channels: Any) -> list[tuple[str, str]]:
    if isinstance(channels, Mapping):
        return [(str(target), str(source)) for target, source in channels.items()]
    if isinstance(channels, Iterable) and not isinstance(channels, str):
        pairs = []
        for item in channels:
            if not (isinstance(item, Sequence) and not isinstance(item, str) and len(item) == 2):
                raise ObserveError("remember() channels: give a mapping {agent_layer: source_layer} or "
                                   f"(agent_layer, source_layer) pairs, got item {item!r}")
            pairs.append((str(item[0]), str(item[1])))
        return pairs
    raise ObserveError(f"remember() channels: give a mapping {{agent_layer: source_layer}}, got {channels!r}")


def remember(world: "World", agent_ids: Any, positions: Any, radius: Any, channels: Any, *,
             visibility: Any = "default") -> None:
    """See :meth:`worldstore.World.remember`."""
    positions = check_positions(positions, world.height, world.width)
    radius = check_radius(radius)
    ids = check_agent_ids(agent_ids, len(positions), world.agents, True)
    if ids is not None and len(np.unique(ids)) != len(ids):
        raise ObserveError("remember() agent_ids must be distinct: one position per agent")
    pairs = _pairs(channels)
    if not pairs:
        raise ObserveError("remember() needs at least one (agent_layer, source_layer) pair")
    for target, source in pairs:
        world[target], world[source]  # LayerNotFoundError for unknown names
        if world[target].grid_class != "agent":
            raise ObserveError(f"remember() writes agent layers; {target!r} is a {world[target].grid_class} layer")
        if world[source].ndim != 2:
            raise ObserveError(f"remember() copies a world layer of shape (H, W); {source!r} has shape "
                               f"{world[source].shape}")
    if visibility == "default":
        visibility = "VISIBILITY" if "VISIBILITY" in world else None
    if visibility is not None:
        if world[visibility].ndim != 2:
            raise ObserveError(f"visibility layer {visibility!r} must have shape (H, W), has {world[visibility].shape}")
    world._check_writable()
    visible = None if visibility is None else world[visibility]
    height, width = world.shape
    for target, source in pairs:
        memory = world[target].numpy()
        layer = world[source]
        storage = layer._live()
        for agent, (y, x) in zip(ids, positions):
            rows, cols, _, _ = window_slices(int(y), int(x), radius, height, width)
            seen = storage.window(rows, cols) if isinstance(storage, SparseStorage) else storage.array[rows, cols]
            where = True if visible is None else _window_of(visible, rows, cols)
            np.copyto(memory[agent, rows, cols], seen, casting="unsafe", where=where)


def _window_of(layer, rows: slice, cols: slice) -> np.ndarray:
    storage = layer._live()
    if isinstance(storage, SparseStorage):
        return storage.window(rows, cols) != 0
    return storage.array[rows, cols].astype(bool, copy=False)


OPERATIONS.update(observe=observe, remember=remember)  # World.observe and World.remember hand over to these
