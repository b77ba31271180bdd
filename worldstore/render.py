"""Pictures of layers: a PNG of any layer at any step, a GIF across the history.

Values are mapped through a colormap between the layer's minimum and maximum
(over all frames, for a GIF, so colors mean the same in every frame); a bool
layer uses the colormap's two ends. A legend strip under the picture shows
the colormap with its minimum and maximum. Agent layers are drawn for one
agent; an observation layer as one agent's windows side by side. Large
layers are thinned (every k-th cell) to ``max_size`` pixels a side.
Reading only: rendering changes nothing in the world.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .errors import RenderError

#: Anchor colors of each colormap (interpolated to 256 entries).
COLORMAPS: dict[str, Sequence[tuple[int, int, int]]] = {
    "viridis": [(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)],
    "magma": [(0, 0, 4), (81, 18, 124), (183, 55, 121), (252, 137, 97), (252, 253, 191)],
    "gray": [(0, 0, 0), (255, 255, 255)],
}
LEGEND_HEIGHT = 28
#: Small layers are drawn with k x k pixels per cell, to at least this many pixels a side.
MIN_SIZE = 256


def lookup_table(name: str) -> np.ndarray:
    """A ``(256, 3)`` uint8 table of colormap ``name``."""
    if name not in COLORMAPS:
        raise RenderError(f"unknown colormap {name!r}; choose one of {', '.join(COLORMAPS)}")
    anchors = np.array(COLORMAPS[name], dtype=np.float64)
    positions = np.linspace(0, 1, len(anchors))
    grid = np.linspace(0, 1, 256)
    return np.stack([np.interp(grid, positions, anchors[:, c]) for c in range(3)], axis=1).round().astype(np.uint8)


def layer_plane(layer: Any, agent: int | None, world_agents: int) -> np.ndarray:
    """The 2-D picture of ``layer`` (live or past): the layer itself, one agent's layer, or its windows."""
    values = np.asarray(layer.numpy())
    if layer.grid_class in ("agent", "observation"):
        if agent is None:
            raise RenderError(f"layer {layer.name!r} holds one plane per agent ({layer.grid_class} class): say "
                              f"which agent to draw (0 to {world_agents - 1})")
        if isinstance(agent, bool) or not isinstance(agent, (int, np.integer)) or not 0 <= agent < world_agents:
            raise RenderError(f"agent {agent!r} is not an agent of this world (0 to {world_agents - 1})")
        values = values[int(agent)]
        if layer.grid_class == "observation":  # (C, S, S): the channels side by side, one column apart
            channels, side, _ = values.shape
            gap = np.full((side, 1), np.nan)
            values = np.concatenate([part for c in range(channels) for part in (values[c], gap)][:-1], axis=1)
    elif agent is not None:
        raise RenderError(f"layer {layer.name!r} is the same for every agent: do not pass an agent")
    return values


def thin(plane: np.ndarray, max_size: int) -> np.ndarray:
    """Every k-th cell so that neither side exceeds ``max_size``."""
    step = max(1, -(-max(plane.shape) // max_size))
    return plane[::step, ::step]


def enlarge(plane: np.ndarray, min_size: int) -> np.ndarray:
    """Each cell as a k x k block, so that a small layer is drawn at least ``min_size`` pixels a side."""
    factor = max(1, min_size // max(1, max(plane.shape)))
    return np.repeat(np.repeat(plane, factor, axis=0), factor, axis=1) if factor > 1 else plane


def value_range(planes: Sequence[np.ndarray]) -> tuple[float, float]:
    finite = [p[np.isfinite(p)] for p in (np.asarray(p, dtype=np.float64) for p in planes)]
    finite = [f for f in finite if f.size]
    if not finite:
        return 0.0, 1.0
    return float(min(f.min() for f in finite)), float(max(f.max() for f in finite))


def colorize(plane: np.ndarray, low: float, high: float, table: np.ndarray) -> np.ndarray:
    """``(H, W, 3)`` uint8: values scaled to [low, high] through the table; NaN (gaps) white."""
    values = np.asarray(plane, dtype=np.float64)
    span = high - low if high > low else 1.0
    index = np.clip((values - low) / span * 255, 0, 255)
    index = np.where(np.isfinite(index), index, 0).round().astype(np.intp)
    rgb = table[index]
    rgb[~np.isfinite(values)] = 255
    return rgb


def _legend(width: int, low: float, high: float, table: np.ndarray, label: str):
    from PIL import Image, ImageDraw

    legend = Image.new("RGB", (width, LEGEND_HEIGHT), "white")
    bar_width = max(1, width // 2)
    ramp = table[np.linspace(0, 255, bar_width).round().astype(int)]
    legend.paste(Image.fromarray(np.repeat(ramp[None], 10, axis=0)), (4, 4))
    draw = ImageDraw.Draw(legend)
    draw.text((4, 15), f"{low:.4g}", fill="black")
    text = f"{high:.4g}"
    draw.text((max(4, bar_width + 4 - 6 * len(text)), 15), text, fill="black")
    draw.text((bar_width + 10, 2), label[: max(0, (width - bar_width - 12) // 6)], fill="black")
    return legend


def picture(plane: np.ndarray, low: float, high: float, colormap: str, label: str, max_size: int = MIN_SIZE):
    """One frame: the colored plane with its legend under it (a PIL image)."""
    from PIL import Image

    table = lookup_table(colormap)
    body = Image.fromarray(colorize(enlarge(plane, min(MIN_SIZE, max_size)), low, high, table))
    width = max(body.width, 160)
    frame = Image.new("RGB", (width, body.height + LEGEND_HEIGHT), "white")
    frame.paste(body, (0, 0))
    frame.paste(_legend(width, low, high, table, label), (0, body.height))
    return frame


def render(world: Any, layer: str, out: str | os.PathLike, *, step: int | None = None, agent: int | None = None,
           colormap: str = "viridis", max_size: int = 2048) -> dict[str, Any]:
    """Write a PNG of ``layer`` (at ``step``'s snapshot, or live) to ``out``; return what was drawn."""
    lookup_table(colormap)
    source = world if step is None else world.at(step)
    target = source[layer]
    plane = thin(layer_plane(target, agent, world.agents), max_size)
    low, high = value_range([plane])
    where = "live" if step is None else f"step {step}"
    label = f"{layer} ({where})" + ("" if agent is None else f", agent {agent}")
    image = picture(plane, low, high, colormap, label, max_size)
    image.save(os.fspath(out), format="PNG")
    return {"path": os.fspath(out), "layer": layer, "step": step, "agent": agent, "width": image.width,
            "height": image.height, "min": low, "max": high}


def render_gif(world: Any, layer: str, out: str | os.PathLike, *, agent: int | None = None,
               colormap: str = "viridis", max_size: int = 1024, frame_ms: int = 200,
               on_frame: Callable[[int, int], Any] | None = None) -> dict[str, Any]:
    """Write a GIF of ``layer`` across every snapshot (one frame each, the same color scale throughout)."""
    lookup_table(colormap)
    steps = [record["step"] for record in world.history()]
    if not steps:
        raise RenderError(f"{world.path} has no snapshots to animate; take some with snapshot()")
    planes = []
    for done, step in enumerate(steps, start=1):
        planes.append(thin(layer_plane(world.at(step)[layer], agent, world.agents), max_size))
        if on_frame:
            on_frame(done, len(steps))
    low, high = value_range(planes)
    frames = [picture(plane, low, high, colormap, f"{layer} step {step}", max_size)
              for plane, step in zip(planes, steps)]
    frames[0].save(os.fspath(out), format="GIF", save_all=True, append_images=frames[1:], duration=frame_ms,
                   loop=0)
    return {"path": os.fspath(out), "layer": layer, "frames": len(frames), "steps": steps, "min": low, "max": high}
