"""Per-agent windows of grid layers: the plain numpy reference.

Slow on purpose and obviously correct: one Python iteration per agent, each
copying the part of the agent's window that lies inside the world and leaving
the rest at the pad value. The fast ``observe()`` is tested against this
module, so it must stay simple; speed belongs elsewhere.

Conventions, shared with the design's ``observe()``:

* positions are integer rows of ``(y, x)``, each inside the world;
* the window of radius ``R`` around ``(y, x)`` covers rows ``y-R..y+R`` and
  columns ``x-R..x+R`` (side ``S = 2R+1``), so ``window[R, R]`` is the agent's
  own cell;
* a 2-D source ``(H, W)`` is shared by every agent; a 3-D source
  ``(N, H, W)`` is an agent layer, and agent ``i`` sees only ``source[i]``;
* cells outside the world take ``pad_value``.

>>> import numpy as np
>>> grid = np.arange(16, dtype=np.float32).reshape(4, 4)
>>> gather_windows(grid, np.array([[0, 0]]), 1, pad_value=-1)[0]
array([[-1., -1., -1.],
       [-1.,  0.,  1.],
       [-1.,  4.,  5.]], dtype=float32)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .errors import ObserveError
from .temporal import as_array


def window_slices(y: int, x: int, radius: int, height: int, width: int) -> tuple[slice, slice, slice, slice]:
    """Where the window around ``(y, x)`` overlaps the world.

    Returns ``(rows, cols, win_rows, win_cols)``: ``grid[rows, cols]`` is the
    part of the world inside the window and ``window[win_rows, win_cols]`` is
    where it goes in the ``(2R+1, 2R+1)`` window. The same slices serve a
    gather (world -> window) and a scatter (window -> world).

    >>> window_slices(0, 3, 1, 4, 4)
    (slice(0, 2, None), slice(2, 4, None), slice(1, 3, None), slice(0, 2, None))
    """
    top, bottom = max(y - radius, 0), min(y + radius + 1, height)
    left, right = max(x - radius, 0), min(x + radius + 1, width)
    return (slice(top, bottom), slice(left, right),
            slice(top - (y - radius), bottom - (y - radius)), slice(left - (x - radius), right - (x - radius)))


def check_positions(positions: Any, height: int, width: int) -> np.ndarray:
    """``(N, 2)`` int64 ``(y, x)`` inside the world (numpy or torch), or :class:`ObserveError` naming the problem."""
    array = as_array(positions)
    if array.ndim != 2 or array.shape[1] != 2:
        raise ObserveError(f"positions must have shape (N, 2) of (y, x) rows, got shape {array.shape}")
    if array.dtype.kind not in "iu" and not (array.size == 0 and array.dtype.kind == "f"):
        raise ObserveError(f"positions must be integers, got dtype {array.dtype}; round or cast them first")
    array = np.ascontiguousarray(array, dtype=np.int64)
    outside = (array[:, 0] < 0) | (array[:, 0] >= height) | (array[:, 1] < 0) | (array[:, 1] >= width)
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        raise ObserveError(f"positions: {int(outside.sum())} lie outside the {height}x{width} world, the first "
                           f"(y={int(array[i, 0])}, x={int(array[i, 1])}) at row {i}")
    return array


def check_radius(radius: Any) -> int:
    """``radius`` as an int >= 0, or :class:`ObserveError`."""
    if isinstance(radius, bool) or not isinstance(radius, (int, np.integer)) or radius < 0:
        raise ObserveError(f"radius must be an integer >= 0, got {radius!r}")
    return int(radius)


def pad_outside(out: np.ndarray, positions: np.ndarray, radius: int, height: int, width: int, pad) -> None:
    """Set the cells of each agent's window ``out[i]`` that lie outside the world to ``pad``.

    Vectorised: only the windows that cross the border are touched, a band
    of rows or columns at a time.
    """
    ys, xs = positions[:, 0], positions[:, 1]
    side = 2 * radius + 1
    crossing = np.flatnonzero((ys < radius) | (ys + radius >= height) | (xs < radius) | (xs + radius >= width))
    if not len(crossing):
        return
    offsets = np.arange(side) - radius
    outside_rows = (ys[crossing, None] + offsets < 0) | (ys[crossing, None] + offsets >= height)
    outside_cols = (xs[crossing, None] + offsets < 0) | (xs[crossing, None] + offsets >= width)
    mask = outside_rows[:, :, None] | outside_cols[:, None, :]
    windows = out[crossing]
    windows[mask] = pad
    out[crossing] = windows


def gather_windows(source: np.ndarray, positions: Any, radius: int, pad_value: Any,
                   out: np.ndarray | None = None, dtype: Any = np.float32) -> np.ndarray:
    """Copy each agent's window of ``source`` into ``out[i]`` (shape ``(N, S, S)``).

    ``source`` is ``(H, W)`` (shared) or ``(N, H, W)`` (agent ``i`` reads
    ``source[i]``). ``out`` may be any writable ``(N, S, S)`` array, including
    a strided view such as ``observation[:, c]``; values are cast to its dtype
    as numpy assignment does (``bool`` becomes 0/1). Without ``out`` a new
    array of ``dtype`` is returned.

    >>> import numpy as np
    >>> memory = np.stack([np.zeros((3, 3)), np.ones((3, 3))])
    >>> gather_windows(memory, [[1, 1], [1, 1]], 0, pad_value=9).ravel().tolist()
    [0.0, 1.0]
    """
    source = np.asarray(source)
    if source.ndim not in (2, 3):
        raise ValueError(f"source must be (H, W) or (N, H, W), got shape {source.shape}")
    height, width = source.shape[-2:]
    positions = check_positions(positions, height, width)
    count = len(positions)
    if source.ndim == 3 and source.shape[0] != count:
        raise ValueError(f"an agent layer of {source.shape[0]} agents cannot serve {count} positions")
    radius = check_radius(radius)
    side = 2 * radius + 1
    if out is None:
        out = np.empty((count, side, side), dtype=dtype)
    elif out.shape != (count, side, side):
        raise ValueError(f"out must have shape {(count, side, side)}, got {out.shape}")
    out[...] = pad_value
    for i, (y, x) in enumerate(positions):
        rows, cols, win_rows, win_cols = window_slices(int(y), int(x), int(radius), height, width)
        grid = source[i] if source.ndim == 3 else source
        out[i, win_rows, win_cols] = grid[rows, cols]
    return out


def gather_channels(sources: Sequence[tuple[np.ndarray, Any]], positions: Any, radius: int,
                    out: np.ndarray | None = None, dtype: Any = np.float32) -> np.ndarray:
    """Stack :func:`gather_windows` over channels: ``out[i, c]`` is agent ``i``'s window of channel ``c``.

    ``sources`` lists ``(array, pad_value)`` per channel, in channel order;
    the result has shape ``(N, C, S, S)``.

    >>> import numpy as np
    >>> walls = np.zeros((2, 2), dtype=bool)
    >>> gather_channels([(walls, True), (np.full((2, 2), 5.0), 0.0)], [[0, 0]], 1)[0, :, 0, 0].tolist()
    [1.0, 0.0]
    """
    positions = np.asarray(positions)
    side = 2 * int(radius) + 1
    shape = (len(positions), len(sources), side, side)
    if out is None:
        out = np.empty(shape, dtype=dtype)
    elif out.shape != shape:
        raise ValueError(f"out must have shape {shape}, got {out.shape}")
    for channel, (array, pad_value) in enumerate(sources):
        gather_windows(array, positions, radius, pad_value, out=out[:, channel])
    return out
