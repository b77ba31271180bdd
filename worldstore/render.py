"""Pictures of layers: a PNG (or JPEG, WebP...) of any layer at any step, a GIF across the history.

A picture is a title line, the layer with labelled y and x axes (rows down,
columns right, the origin cell (0, 0) marked in red at the top left), and a
legend under it. Values are mapped through a colormap between the plane's
minimum and maximum (over all frames, for a GIF, so colors mean the same in
every frame); the legend shows the ramp with both ends and the layer's units.
A bool layer is drawn in two colors (the colormap's ends), and its legend
shows the two, named False and True. Agent layers are drawn for one agent;
an observation layer as one agent's windows side by side, each channel named
and on its own color scale (channels hold unrelated quantities). Large
layers are thinned (every k-th cell) to ``max_size`` pixels a side; the axes
count cells of the world, not pixels. Reading only: rendering changes
nothing in the world.

The pieces (:func:`colorize`, :func:`lookup_table`, :func:`legend`,
:func:`picture`) are also what ``worldstore view`` draws its tiles and
legends with.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import RenderError

#: Anchor colors of each colormap (interpolated to 256 entries).
COLORMAPS: dict[str, Sequence[tuple[int, int, int]]] = {
    "viridis": [(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)],
    "magma": [(0, 0, 4), (81, 18, 124), (183, 55, 121), (252, 137, 97), (252, 253, 191)],
    "gray": [(0, 0, 0), (255, 255, 255)],
}
#: Height of the legend strip under a picture, and of the title line over it.
LEGEND_HEIGHT = 30
TITLE_HEIGHT = 16
#: Room for the x axis' tick labels over the picture.
AXIS_HEIGHT = 14
#: Small layers are drawn with k x k pixels per cell, to at least this many pixels a side.
MIN_SIZE = 256
#: The mark of the origin cell (0, 0).
ORIGIN_COLOR = (220, 30, 30)
#: Image formats by file extension; a path without one gets PNG.
FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".gif": "GIF", ".webp": "WEBP", ".tif": "TIFF",
           ".tiff": "TIFF", ".bmp": "BMP"}


def lookup_table(name: str) -> np.ndarray:
    """A ``(256, 3)`` uint8 table of colormap ``name``."""
    if name not in COLORMAPS:
        raise RenderError(f"unknown colormap {name!r}; choose one of {', '.join(COLORMAPS)}")
    anchors = np.array(COLORMAPS[name], dtype=np.float64)
    positions = np.linspace(0, 1, len(anchors))
    grid = np.linspace(0, 1, 256)
    return np.stack([np.interp(grid, positions, anchors[:, c]) for c in range(3)], axis=1).round().astype(np.uint8)


def image_format(out: str | os.PathLike, default: str = "PNG") -> str:
    """The image format ``out``'s extension names (PNG where it has none); :class:`RenderError` for others."""
    extension = os.path.splitext(os.fspath(out))[1].lower()
    if not extension:
        return default
    if extension not in FORMATS:
        raise RenderError(f"cannot tell an image format from the extension {extension!r} of {os.fspath(out)}; "
                          f"name the file with one of {', '.join(FORMATS)}")
    return FORMATS[extension]


@dataclass
class Panel:
    """One picture of a plane: its title, values, and where its cells lie in the world."""

    title: str
    plane: np.ndarray
    units: str = ""
    boolean: bool = False
    #: World cells per plane cell (thinning), and the world cell of plane[0, 0].
    stride: int = 1
    origin: tuple[int, int] = (0, 0)


def layer_panels(layer: Any, agent: int | None, world_agents: int) -> list[Panel]:
    """The pictures of ``layer`` (live or past): the layer, one agent's layer, or one per observation channel."""
    spec = layer.spec
    values = np.asarray(layer.numpy())
    if layer.grid_class in ("agent", "observation"):
        if agent is None:
            raise RenderError(f"layer {layer.name!r} holds one plane per agent ({layer.grid_class} class): say "
                              f"which agent to draw (0 to {world_agents - 1})")
        if isinstance(agent, bool) or not isinstance(agent, (int, np.integer)) or not 0 <= agent < world_agents:
            raise RenderError(f"agent {agent!r} is not an agent of this world (0 to {world_agents - 1})")
        values = values[int(agent)]
        if layer.grid_class == "observation":  # (C, S, S): each channel its own panel and scale
            channels = tuple(spec.channels or ()) or tuple(f"channel {c}" for c in range(values.shape[0]))
            # Axes count cells from the agent's own cell, -R..R.
            radius = values.shape[-1] // 2
            return [Panel(name, values[c], origin=(-radius, -radius)) for c, name in enumerate(channels)]
    elif agent is not None:
        raise RenderError(f"layer {layer.name!r} is the same for every agent: do not pass an agent")
    return [Panel(layer.name, values, units=units_of(spec), boolean=values.dtype == np.bool_)]


def units_of(spec: Any) -> str:
    """A layer's units as a legend shows them: none for CF's dimensionless "1"."""
    units = getattr(spec, "units", "") or ""
    return "" if units == "1" else units


def layer_plane(layer: Any, agent: int | None, world_agents: int) -> np.ndarray:
    """The 2-D picture of ``layer``: one agent's layer, or an observation's channels side by side."""
    panels = layer_panels(layer, agent, world_agents)
    if len(panels) == 1:
        return panels[0].plane
    gap = np.full((panels[0].plane.shape[0], 1), np.nan)
    return np.concatenate([part for p in panels for part in (np.asarray(p.plane, dtype=np.float64), gap)][:-1],
                          axis=1)


def thin(plane: np.ndarray, max_size: int) -> np.ndarray:
    """Every k-th cell so that neither side exceeds ``max_size``."""
    return plane[::thinning(plane.shape, max_size), ::thinning(plane.shape, max_size)]


def thinning(shape: Sequence[int], max_size: int) -> int:
    """The k of :func:`thin`: world cells per drawn cell."""
    return max(1, -(-max(shape) // max_size))


def enlarge(plane: np.ndarray, min_size: int) -> np.ndarray:
    """Each cell as a k x k block, so that a small layer is drawn at least ``min_size`` pixels a side."""
    factor = enlargement(plane.shape, min_size)
    return np.repeat(np.repeat(plane, factor, axis=0), factor, axis=1) if factor > 1 else plane


def enlargement(shape: Sequence[int], min_size: int) -> int:
    """The k of :func:`enlarge`: pixels per drawn cell."""
    return max(1, min_size // max(1, max(shape)))


def value_range(planes: Sequence[np.ndarray]) -> tuple[float, float]:
    finite = [p[np.isfinite(p)] for p in (np.asarray(p, dtype=np.float64) for p in planes)]
    finite = [f for f in finite if f.size]
    if not finite:
        return 0.0, 1.0
    return float(min(f.min() for f in finite)), float(max(f.max() for f in finite))


def colorize(plane: np.ndarray, low: float, high: float, table: np.ndarray, boolean: bool = False) -> np.ndarray:
    """``(H, W, 3)`` uint8: values scaled to [low, high] through the table; NaN (gaps) white.

    ``boolean``: False and True are the table's two ends, whatever the range.
    """
    if boolean:
        return table[np.where(np.asarray(plane, dtype=bool), 255, 0)]
    values = np.asarray(plane, dtype=np.float64)
    span = high - low if high > low else 1.0
    index = np.clip((values - low) / span * 255, 0, 255)
    index = np.where(np.isfinite(index), index, 0).round().astype(np.intp)
    rgb = table[index]
    rgb[~np.isfinite(values)] = 255
    return rgb


def _font():
    from PIL import ImageFont

    return ImageFont.load_default()


def _text_width(text: str) -> int:
    from PIL import Image, ImageDraw

    return int(np.ceil(ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(text, font=_font())))


def legend(width: int, low: float, high: float, table: np.ndarray, units: str = "", boolean: bool = False):
    """The legend strip (a PIL image): the ramp with its two ends and the units, or False/True swatches."""
    from PIL import Image, ImageDraw

    strip = Image.new("RGB", (width, LEGEND_HEIGHT), "white")
    draw = ImageDraw.Draw(strip)
    font = _font()
    if boolean:
        x = 4
        for name, color in (("False", table[0]), ("True", table[255])):
            draw.rectangle((x, 6, x + 14, 20), fill=tuple(int(c) for c in color), outline="black")
            draw.text((x + 18, 7), name, fill="black", font=font)
            x += 18 + _text_width(name) + 14
        return strip
    unit_text = f" {units}" if units else ""
    high_text = f"{high:.4g}{unit_text}"
    bar_width = max(8, min(width - 8, 256) - 8)
    ramp = table[np.linspace(0, 255, bar_width).round().astype(int)]
    strip.paste(Image.fromarray(np.repeat(ramp[None], 10, axis=0)), (4, 3))
    draw.text((4, 15), f"{low:.4g}{unit_text}", fill="black", font=font)
    draw.text((max(4, 4 + bar_width - _text_width(high_text)), 15), high_text, fill="black", font=font)
    return strip


def _nice_step(extent: int, ticks: int = 5) -> int:
    """A round tick spacing (1, 2, 5 x 10^k cells) giving about ``ticks`` ticks over ``extent`` cells."""
    raw = max(1.0, extent / ticks)
    power = 10 ** int(np.floor(np.log10(raw)))
    return int(next(m * power for m in (1, 2, 5, 10) if m * power >= raw))


def _with_axes(body, panel: Panel, pixels_per_cell: float):
    """``body`` with the y axis' tick labels left of it, the x axis' over it, and the origin marked."""
    from PIL import Image, ImageDraw

    height, width = panel.plane.shape[:2]
    rows = (panel.origin[0], panel.origin[0] + height * panel.stride)
    cols = (panel.origin[1], panel.origin[1] + width * panel.stride)
    y_step, x_step = _nice_step(rows[1] - rows[0]), _nice_step(cols[1] - cols[0])
    y_ticks = range(-(-rows[0] // y_step) * y_step, rows[1], y_step)
    x_ticks = range(-(-cols[0] // x_step) * x_step, cols[1], x_step)
    left = max([_text_width(str(t)) for t in y_ticks] + [_text_width("y")]) + 8
    canvas = Image.new("RGB", (left + body.width + 12, AXIS_HEIGHT + body.height + 12), "white")
    canvas.paste(body, (left, AXIS_HEIGHT))
    draw = ImageDraw.Draw(canvas)
    font = _font()
    scale = pixels_per_cell / panel.stride  # pixels per world cell
    for tick in x_ticks:
        x = left + int((tick - cols[0]) * scale)
        draw.line((x, AXIS_HEIGHT - 3, x, AXIS_HEIGHT - 1), fill="black")
        draw.text((x + 1, 0), str(tick), fill="black", font=font)
    for tick in y_ticks:
        y = AXIS_HEIGHT + int((tick - rows[0]) * scale)
        draw.line((left - 3, y, left - 1, y), fill="black")
        draw.text((left - 4 - _text_width(str(tick)), y), str(tick), fill="black", font=font)
    # Axis names at the far ends: x grows to the right, y downwards.
    draw.text((left + body.width + 2, 0), "x", fill="black", font=font)
    draw.text((left - 4 - _text_width("y"), AXIS_HEIGHT + body.height), "y", fill="black", font=font)
    if panel.origin == (0, 0):  # a wedge pointing at the corner of cell (0, 0), outside the cells
        corner = (left - 1, AXIS_HEIGHT - 1)
        draw.polygon([corner, (corner[0] - 7, corner[1]), (corner[0], corner[1] - 7)], fill=ORIGIN_COLOR)
    return canvas, (left, AXIS_HEIGHT)


@dataclass
class Picture:
    """A drawn picture and where each panel's cells lie in it (``body``: left, top, width, height)."""

    image: Any
    title: str
    bodies: list[tuple[int, int, int, int]]


def picture(plane: np.ndarray, low: float, high: float, colormap: str, label: str, max_size: int = MIN_SIZE,
            *, units: str = "", boolean: bool = False, stride: int = 1):
    """One frame of one plane: the title, the plane with axes, the legend (a PIL image)."""
    panel = Panel(label, plane, units, boolean, stride)
    return compose(label, [(panel, low, high)], colormap, max_size).image


def compose(title: str, panels: Sequence[tuple[Panel, float, float]], colormap: str,
            max_size: int = MIN_SIZE) -> Picture:
    """The title over ``panels`` side by side, each with its axes, its name (if several) and its legend."""
    from PIL import Image, ImageDraw

    table = lookup_table(colormap)
    drawn = []
    for panel, low, high in panels:
        factor = enlargement(panel.plane.shape, min(max_size, max(96, MIN_SIZE // len(panels))))
        pixels = np.repeat(np.repeat(panel.plane, factor, axis=0), factor, axis=1) if factor > 1 else panel.plane
        body = Image.fromarray(colorize(pixels, low, high, table, panel.boolean))
        framed, (left, top) = _with_axes(body, panel, factor)
        heading = panel.title if len(panels) > 1 else ""
        width = max(framed.width, _text_width(heading) + 8, 160 if len(panels) == 1 else 0)
        head = TITLE_HEIGHT if heading else 0
        column = Image.new("RGB", (width, head + framed.height + LEGEND_HEIGHT), "white")
        if heading:
            ImageDraw.Draw(column).text((left, 2), heading, fill="black", font=_font())
        column.paste(framed, (0, head))
        column.paste(legend(width, low, high, table, panel.units, panel.boolean), (0, head + framed.height))
        drawn.append((column, (left, head + top, body.width, body.height)))
    width = max(sum(c.width for c, _ in drawn), _text_width(title) + 8)
    image = Image.new("RGB", (width, TITLE_HEIGHT + max(c.height for c, _ in drawn)), "white")
    ImageDraw.Draw(image).text((4, 2), title, fill="black", font=_font())
    bodies, x = [], 0
    for column, (left, top, w, h) in drawn:
        image.paste(column, (x, TITLE_HEIGHT))
        bodies.append((x + left, TITLE_HEIGHT + top, w, h))
        x += column.width
    return Picture(image, title, bodies)


def _title(layer: str, step: int | None, agent: int | None) -> str:
    where = "live" if step is None else f"step {step}"
    return f"{layer} ({where})" + ("" if agent is None else f", agent {agent}")


def _thinned(panels: list[Panel], max_size: int) -> list[Panel]:
    for panel in panels:
        panel.stride = thinning(panel.plane.shape, max_size)
        panel.plane = panel.plane[::panel.stride, ::panel.stride]
    return panels


def render(world: Any, layer: str, out: str | os.PathLike, *, step: int | None = None, agent: int | None = None,
           colormap: str = "viridis", max_size: int = 2048) -> dict[str, Any]:
    """Write a picture of ``layer`` (at ``step``'s snapshot, or live) to ``out``; return what was drawn.

    The format follows ``out``'s extension (``.png``, ``.jpg``, ``.webp``...; PNG without one).
    """
    lookup_table(colormap)
    kind = image_format(out)
    source = world if step is None else world.at(step)
    panels = _thinned(layer_panels(source[layer], agent, world.agents), max_size)
    ranges = [value_range([p.plane]) for p in panels]
    drawn = compose(_title(layer, step, agent), [(p, *r) for p, r in zip(panels, ranges)], colormap, max_size)
    drawn.image.save(os.fspath(out), format=kind)
    low, high = min(r[0] for r in ranges), max(r[1] for r in ranges)
    report = {"path": os.fspath(out), "format": kind, "layer": layer, "step": step, "agent": agent,
              "title": drawn.title, "width": drawn.image.width, "height": drawn.image.height, "min": low,
              "max": high, "body": list(drawn.bodies[0])}
    if len(panels) > 1:
        report["channels"] = [{"name": p.title, "min": r[0], "max": r[1], "body": list(b)}
                              for p, r, b in zip(panels, ranges, drawn.bodies)]
    return report


def render_gif(world: Any, layer: str, out: str | os.PathLike, *, agent: int | None = None,
               colormap: str = "viridis", max_size: int = 1024, frame_ms: int = 200,
               on_frame: Callable[[int, int], Any] | None = None) -> dict[str, Any]:
    """Write a GIF of ``layer`` across every snapshot (one frame each, the same color scale throughout)."""
    lookup_table(colormap)
    if image_format(out, "GIF") != "GIF":
        raise RenderError(f"an animation is written as a GIF: name the file {os.path.splitext(os.fspath(out))[0]}"
                          ".gif, not " + os.fspath(out))
    steps = [record["step"] for record in world.history()]
    if not steps:
        raise RenderError(f"{world.path} has no snapshots to animate; take some with world.snapshot() "
                          f"(or: worldstore snapshot {world.path})")
    frames_panels = []
    for done, step in enumerate(steps, start=1):
        frames_panels.append(_thinned(layer_panels(world.at(step)[layer], agent, world.agents), max_size))
        if on_frame:
            on_frame(done, len(steps))
    ranges = [value_range([frame[c].plane for frame in frames_panels]) for c in range(len(frames_panels[0]))]
    pictures = [compose(_title(layer, step, agent), [(p, *r) for p, r in zip(panels, ranges)], colormap, max_size)
                for panels, step in zip(frames_panels, steps)]
    frames = [p.image for p in pictures]
    frames[0].save(os.fspath(out), format="GIF", save_all=True, append_images=frames[1:], duration=frame_ms,
                   loop=0)
    low, high = min(r[0] for r in ranges), max(r[1] for r in ranges)
    return {"path": os.fspath(out), "layer": layer, "frames": len(frames), "steps": steps, "min": low, "max": high,
            "titles": [p.title for p in pictures]}
