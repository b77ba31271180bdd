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

After the gather, ``normalize={channel: n}`` divides a channel's windows by
``n`` and ``clip={channel: (lo, hi)}`` clamps them, in that order, over the
whole window (padding included): AgentFarm's ``MemmapManager.get_window(...,
normalize_by=max_amount)`` is ``normalize`` and ``clip=(0, 1)`` on a layer
padded with 0. ``dtype=torch.bfloat16`` gathers in float32 and converts with
torch (numpy has no bfloat16).

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


def _is_bfloat16(dtype: Any) -> bool:
    return dtype is not None and str(dtype) in ("torch.bfloat16", "bfloat16")


def _numpy_dtype(dtype: Any) -> np.dtype | None:
    """``dtype`` as a numpy dtype (torch dtypes by name), or :class:`ObserveError` naming the accepted ones."""
    if dtype is None:
        return None
    name = str(dtype)
    if name.startswith("torch."):
        name = name[len("torch."):]
    try:
        result = np.dtype(name if str(dtype).startswith("torch.") else dtype)
    except TypeError:
        result = None
    if result is None or result.name not in OUTPUT_DTYPES:
        raise ObserveError(f"observations are floating point: dtype must be one of {', '.join(OUTPUT_DTYPES)} "
                           f"(numpy or torch) or torch.bfloat16, got {dtype!r}")
    return result


def _per_channel(option: Any, label: str, channels: list[str]) -> dict[int, Any]:
    """``{channel index: value}`` from a ``{channel name: value}`` mapping (names must be observed channels)."""
    if option is None:
        return {}
    if not isinstance(option, Mapping):
        raise ObserveError(f"{label} must be a mapping {{channel name: value}}, got {option!r}")
    result = {}
    for name, value in option.items():
        if name not in channels:
            raise ObserveError(f"{label}: {name!r} is not one of the channels observed ({', '.join(channels)})")
        result[channels.index(name)] = value
    return result


def _check_post(normalize: Any, clip: Any, channels: list[str]) -> list[tuple[int, Any, Any, Any]]:
    """``(channel, divisor or None, lo, hi)`` for each channel that ``normalize``/``clip`` touch, checked."""
    divisors = _per_channel(normalize, "normalize", channels)
    bounds = _per_channel(clip, "clip", channels)
    for channel, divisor in divisors.items():
        if isinstance(divisor, bool) or not isinstance(divisor, (int, float, np.integer, np.floating)) \
                or not np.isfinite(divisor) or divisor <= 0:
            raise ObserveError(f"normalize[{channels[channel]!r}] must be a finite number > 0 (the channel's "
                               f"windows are divided by it), got {divisor!r}")
    for channel, pair in bounds.items():
        if isinstance(pair, (str, bytes)) or not isinstance(pair, Sequence) or len(pair) != 2:
            raise ObserveError(f"clip[{channels[channel]!r}] must be a pair (lo, hi), either of them None, "
                               f"got {pair!r}")
        for bound in pair:
            if bound is not None and (isinstance(bound, bool) or not isinstance(bound, (int, float, np.integer,
                                                                                         np.floating))
                                      or not np.isfinite(bound)):
                raise ObserveError(f"clip[{channels[channel]!r}]: bounds must be finite numbers or None, "
                                   f"got {pair!r}")
        if pair[0] is not None and pair[1] is not None and pair[0] > pair[1]:
            raise ObserveError(f"clip[{channels[channel]!r}]: lo {pair[0]!r} is above hi {pair[1]!r}")
    post = []
    for channel in sorted(set(divisors) | set(bounds)):
        lo, hi = bounds.get(channel, (None, None))
        post.append((channel, divisors.get(channel), lo, hi))
    return post


def _apply_post(post: list, batch: np.ndarray) -> None:
    """Divide and clamp the channels ``post`` names, in place (``batch``: ``(N, C, S, S)``)."""
    for channel, divisor, lo, hi in post:
        windows = batch[:, channel]
        if divisor is not None:
            np.divide(windows, divisor, out=windows)
        if lo is not None or hi is not None:
            np.clip(windows, lo, hi, out=windows)


class _Plan:
    """A checked observe() call: nothing is written until every argument passed."""

    def __init__(self, world: "World", positions: Any, radius: Any, channels: Any, agent_ids: Any, into: Any,
                 normalize: Any = None, clip: Any = None):
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
        self.agent_ids = check_agent_ids(agent_ids, self.count, world.agents, needs_ids or agent_ids is not None)
        self.post = _check_post(normalize, clip, self.channels)
        #: into= with agent_ids: the observation layer's rows (agent slots) the batch's rows go to.
        self.rows = None
        if self.observation is not None:
            expected = self.observation.shape
            side = 2 * self.radius + 1
            if agent_ids is not None:
                if len(np.unique(self.agent_ids)) != self.count:
                    raise ObserveError("observe(into=..., agent_ids=...) writes row agent_ids[i] of the observation "
                                       "layer: agent_ids must be distinct")
                identity = self.count == expected[0] and np.array_equal(self.agent_ids, np.arange(self.count))
                self.rows = None if identity else self.agent_ids
                if (len(self.channels), side, side) != expected[1:]:
                    raise ObserveError(f"observation layer {self.observation.name!r} holds {expected}; this "
                                       f"observe() gives windows of ({len(self.channels)}, {side}, {side})")
            elif (self.count, len(self.channels), side, side) != expected:
                raise ObserveError(f"observation layer {self.observation.name!r} holds {expected}; this observe() "
                                   f"would give ({self.count}, {len(self.channels)}, {side}, {side}); with fewer "
                                   "agents than slots, pass agent_ids (their slots) to write their rows only")

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
            into: Any = None, normalize: Any = None, clip: Any = None) -> Any:
    """See :meth:`worldstore.World.observe`."""
    if _is_bfloat16(dtype) or _is_bfloat16(getattr(out, "dtype", None)):
        return _observe_bfloat16(world, positions, radius, channels, out, dtype, agent_ids, device, into,
                                 normalize, clip)
    dtype = _numpy_dtype(dtype)
    plan = _Plan(world, positions, radius, channels, agent_ids, into, normalize, clip)
    target, result = _target(world, plan, out, dtype, tensor, device)
    if plan.rows is not None:  # a batch of some agents' rows: gathered apart, then written to their slots
        batch = np.empty((plan.count, *target.shape[1:]), dtype=target.dtype)
        gather(plan.layers, plan.positions, plan.radius, batch, plan.agent_ids)
        _apply_post(plan.post, batch)
        target[plan.rows] = batch
        return _maybe_tensor(batch, tensor)
    gather(plan.layers, plan.positions, plan.radius, target, plan.agent_ids)
    _apply_post(plan.post, target)
    if device is not None and _is_cuda(device, out):
        return _to_device(world, target, result, device)
    return result


def _observe_bfloat16(world: "World", positions: Any, radius: Any, channels: Any, out: Any, dtype: Any,
                      agent_ids: Any, device: Any, into: Any, normalize: Any, clip: Any) -> Any:
    """Gather in float32, convert with torch: a bfloat16 tensor (the caller's ``out``, if given)."""
    torch = _extras.torch("observe(dtype=torch.bfloat16)")
    if into is not None and into is not False:
        raise ObserveError("into= writes the world's observation layer, which holds its own dtype; bfloat16 "
                           "exists only as a torch tensor: observe into a buffer instead (out= or no out)")
    if out is not None and not (isinstance(out, torch.Tensor) and out.dtype == torch.bfloat16):
        raise ObserveError(f"dtype=torch.bfloat16 needs out to be a bfloat16 torch tensor (or no out), got "
                           f"{getattr(out, 'dtype', type(out).__name__)}")
    if dtype is not None and not _is_bfloat16(dtype):
        raise ObserveError(f"out is a bfloat16 tensor but dtype={dtype!r} was asked for")
    plan = _Plan(world, positions, radius, channels, agent_ids, None, normalize, clip)
    if out is not None and tuple(out.shape) != plan.shape:
        raise ObserveError(f"out must be a tensor of shape {plan.shape}, got {tuple(out.shape)}")
    batch = np.empty(plan.shape, dtype=np.float32)
    gather(plan.layers, plan.positions, plan.radius, batch, plan.agent_ids)
    _apply_post(plan.post, batch)
    converted = torch.from_numpy(batch)
    if out is not None:
        out.copy_(converted, non_blocking=True)
        return out
    if device is not None and str(device) != "cpu":
        converted = converted.to(device)
    return converted.to(torch.bfloat16)


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
    if dtype is not None and dtype != array.dtype:
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
