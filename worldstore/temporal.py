"""Temporal channels: deposits and decay, the same values in dense and sparse form.

Cells are addressed by their row-major linear index ``y * W + x``. A deposit
is first checked (nothing changes on bad input), then its repeated cells are
combined (:func:`combine`), so dense and sparse storage apply exactly the same
per-cell update and give bit-identical values:

- ``add``: the cell gains the sum of its deposits;
- ``max``: the cell becomes the max of itself and its deposits;
- ``set``: the cell takes the last of its deposits.

Decay (``step``): ``v <- v * decay``, then cells with ``|v| < threshold``
become 0. Both use the layer's own float dtype for the arithmetic.

Two options come from AgentFarm's temporal grids (``farm/core/temporal_grids.py``),
whose deposits skip events outside the world and clamp the cell to ``clip_max``:

- ``out_of_bounds="ignore"`` drops coordinates outside the world instead of
  refusing the whole deposit;
- ``clip=(lo, hi)`` clamps each touched cell after its update (either bound
  may be None). The cell is computed as ``clip(update(old, combined))``: for
  "add" with non-negative amounts that is what clamping after every single
  event gives, as AgentFarm does.

Subnormal values are flushed to zero at every decay, whatever the threshold
(:func:`decay_threshold`): with a threshold of 0 a decaying cell would
otherwise never reach 0, since the smallest subnormal times any decay >= 0.5
rounds back to itself (float32: 1.4e-45; nnz would never fall). Only values
below ``finfo(dtype).tiny`` (1.2e-38 in float32) are affected.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import DepositError

MODES = ("add", "max", "set")
#: What a deposit does with coordinates outside the world.
OUT_OF_BOUNDS = ("raise", "ignore")
#: Elements per block of the dense decay: small enough to stay in L2, so the
#: multiply, the threshold test and the zeroing cost one pass over memory.
_DECAY_BLOCK = 1 << 16


def as_array(values: Any) -> np.ndarray:
    """An ndarray of ``values``; a torch tensor is moved to the CPU first (torch need not be imported)."""
    if type(values).__module__.startswith("torch") and hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    return np.asarray(values)


def check_deposit(name: str, shape: tuple[int, int], dtype: np.dtype, ys: Any, xs: Any, values: Any,
                  mode: str, out_of_bounds: str = "raise") -> tuple[np.ndarray, np.ndarray]:
    """Validate a deposit; return ``(linear indices int64, values in the layer dtype)``.

    ``out_of_bounds="ignore"`` leaves out the coordinates outside the world (and their values).
    """
    if mode not in MODES:
        raise DepositError(f"deposit into {name!r}: mode must be one of {', '.join(MODES)}, got {mode!r}")
    if not isinstance(out_of_bounds, str) or out_of_bounds not in OUT_OF_BOUNDS:
        raise DepositError(f"deposit into {name!r}: out_of_bounds must be one of {', '.join(OUT_OF_BOUNDS)}, "
                           f"got {out_of_bounds!r}")
    ys, xs, values = as_array(ys), as_array(xs), as_array(values)
    for label, coords in (("ys", ys), ("xs", xs)):
        if coords.ndim != 1:
            raise DepositError(f"deposit into {name!r}: {label} must be 1-D, got shape {coords.shape}")
        if coords.dtype.kind not in "iu" and not (coords.size == 0 and coords.dtype.kind == "f"):
            raise DepositError(f"deposit into {name!r}: {label} must be integers, got dtype {coords.dtype}")
    if len(ys) != len(xs):
        raise DepositError(f"deposit into {name!r}: ys and xs differ in length ({len(ys)} and {len(xs)})")
    if values.ndim == 0:
        values = np.broadcast_to(values, ys.shape)
    elif values.shape != ys.shape:
        raise DepositError(f"deposit into {name!r}: values of shape {values.shape} do not match "
                           f"{len(ys)} coordinates")
    if values.dtype.kind not in "biuf":
        raise DepositError(f"deposit into {name!r}: values must be numbers, got dtype {values.dtype}")
    height, width = shape
    ys = ys.astype(np.int64, copy=False)
    xs = xs.astype(np.int64, copy=False)
    if len(ys):
        bad = (ys < 0) | (ys >= height) | (xs < 0) | (xs >= width)
        if out_of_bounds == "ignore" and bad.any():
            keep = ~bad
            ys, xs, values = ys[keep], xs[keep], values[keep]
        elif bad.any():
            first = int(np.argmax(bad))
            raise DepositError(f"deposit into {name!r}: {int(bad.sum())} coordinates lie outside the "
                               f"{height}x{width} world, the first (y={int(ys[first])}, x={int(xs[first])}) "
                               f"at position {first}; nothing was deposited")
    with np.errstate(over="ignore", invalid="ignore"):
        converted = values.astype(dtype)
    finite = np.isfinite(converted)
    if not finite.all():
        first = int(np.argmin(finite))
        raise DepositError(f"deposit into {name!r}: value {values[first]!r} at position {first} is not a "
                           f"finite {dtype.name}; nothing was deposited")
    return ys * width + xs, converted


def check_clip(name: str, clip: Any, dtype: np.dtype) -> tuple[Any, Any] | None:
    """``clip`` as ``(lo, hi)`` scalars of ``dtype`` (either may be None), or None for no clamp."""
    if clip is None:
        return None
    if isinstance(clip, (str, bytes)) or not hasattr(clip, "__len__") or len(clip) != 2:
        raise DepositError(f"deposit into {name!r}: clip must be a pair (lo, hi), either of them None, "
                           f"got {clip!r}")
    bounds = []
    for label, bound in zip(("lo", "hi"), clip):
        if bound is None:
            bounds.append(None)
            continue
        if isinstance(bound, bool) or not isinstance(bound, (int, float, np.integer, np.floating)) \
                or not np.isfinite(bound):
            raise DepositError(f"deposit into {name!r}: clip {label} must be a finite number or None, "
                               f"got {bound!r}")
        bounds.append(dtype.type(bound))
    lo, hi = bounds
    if lo is None and hi is None:
        return None
    if lo is not None and hi is not None and lo > hi:
        raise DepositError(f"deposit into {name!r}: clip lo {clip[0]!r} is above hi {clip[1]!r}; "
                           "give (lo, hi) with lo <= hi")
    return lo, hi


def clamped(old: np.ndarray, amounts: np.ndarray, mode: str, bounds: tuple[Any, Any]) -> np.ndarray:
    """The cells' values after a deposit of (combined) ``amounts`` and the clamp: ``clip(update(old))``."""
    new = np.array(old, dtype=amounts.dtype)
    update(new, slice(None), amounts, mode)
    lo, hi = bounds
    np.clip(new, lo, hi, out=new)
    return new


def lookup(held_cells: np.ndarray, held_values: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """The values of sorted unique ``cells`` in a sparse layer's sorted ``held_cells`` (0 where not held)."""
    out = np.zeros(len(cells), dtype=held_values.dtype)
    if not len(held_cells) or not len(cells):
        return out
    at = np.minimum(np.searchsorted(held_cells, cells), len(held_cells) - 1)
    found = held_cells[at] == cells
    out[found] = held_values[at[found]]
    return out


def decay_threshold(threshold: float, dtype: np.dtype) -> float:
    """The threshold decay applies: the layer's, but at least the dtype's smallest normal value
    (subnormals flush to zero; see the module's docstring)."""
    return max(float(threshold), float(np.finfo(dtype).tiny))


def combine(cells: np.ndarray, values: np.ndarray, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique cells and one value each: the sum, the max, or the last given."""
    if len(cells) == 0:
        return cells, values
    order = stable_order(cells)  # stable: "last given" stays last within a cell
    cells, values = cells[order], values[order]
    starts = np.flatnonzero(np.r_[True, cells[1:] != cells[:-1]])
    if len(starts) == len(cells):
        return cells, values
    if mode == "add":
        combined = np.add.reduceat(values, starts)
    elif mode == "max":
        combined = np.maximum.reduceat(values, starts)
    else:
        ends = np.r_[starts[1:], len(cells)] - 1
        combined = values[ends]
    return cells[starts], combined.astype(values.dtype, copy=False)


def stable_order(cells: np.ndarray) -> np.ndarray:
    """``np.argsort(cells, kind="stable")`` for non-negative int64 cells, several times faster.

    Each cell is packed with its position into one int64 key (cell in the
    high bits, position in the low ones) and the keys are sorted by value,
    which numpy does with its vectorised sort: equal cells keep their order
    because their positions do. Falls back to a stable argsort when the key
    would overflow.
    """
    if not len(cells):
        return np.empty(0, dtype=np.int64)
    shift = max(1, len(cells) - 1).bit_length()
    if int(cells.max()) >= (1 << (62 - shift)):
        return np.argsort(cells, kind="stable")
    keys = np.sort((cells << shift) | np.arange(len(cells), dtype=np.int64))
    return keys & ((1 << shift) - 1)


def update(target: np.ndarray, at: np.ndarray, amounts: np.ndarray, mode: str) -> None:
    """The per-cell update of one deposit mode, at unique positions ``at`` of a 1-D array.

    Dense layers (positions = cells) and sparse ones (positions = entries)
    both go through here, which is what makes them agree bit for bit.
    """
    if mode == "add":
        target[at] += amounts
    elif mode == "max":
        target[at] = np.maximum(target[at], amounts)
    else:
        target[at] = amounts


def apply_dense(array: np.ndarray, cells: np.ndarray, values: np.ndarray, mode: str) -> None:
    """Apply combined deposits (unique cells) to a dense C-contiguous layer."""
    update(array.reshape(-1), cells, values, mode)  # reshape is a view: layers are C-contiguous


def decay_dense(array: np.ndarray, decay: float, threshold: float) -> int:
    """Decay a dense layer in place, block by block; return its number of non-zero cells.

    Cells below the threshold are zeroed by multiplying with the keep-mask
    (branch-free: a masked copy slows down as the mask gets mixed).
    """
    flat = array.reshape(-1)
    factor = array.dtype.type(decay)
    block = min(_DECAY_BLOCK, flat.size)
    magnitude = np.empty(block, dtype=array.dtype)
    keep = np.empty(block, dtype=bool)
    nonzero = 0
    for start in range(0, flat.size, block):
        chunk = flat[start:start + block]
        n = len(chunk)
        if factor != 1:
            np.multiply(chunk, factor, out=chunk)
        if threshold > 0:
            np.abs(chunk, out=magnitude[:n])
            np.greater_equal(magnitude[:n], threshold, out=keep[:n])
            np.multiply(chunk, keep[:n], out=chunk)
            nonzero += int(np.count_nonzero(keep[:n]))
        else:
            nonzero += int(np.count_nonzero(chunk))
    return nonzero
