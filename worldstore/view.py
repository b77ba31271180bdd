"""``worldstore view``: a local web viewer that follows a running world.

It serves on 127.0.0.1 only, reads the world as a SWMR reader (the writer
never waits for it: readers of a SWMR file take no lock the writer needs), and
shows every layer as a picture drawn by :mod:`worldstore.render`, the live
state following commits, any snapshot of the history, and the values of every
layer at the cell under the mouse.

What it guarantees: it only reads. Every request is checked first (layer
name, step, agent, zoom level, tile) and a bad one gets an error page
(HTTP 400 or 404) and changes nothing, in the file or in the viewer. It never
sends a whole layer: the first picture is thinned to at most
:data:`OVERVIEW_SIZE` pixels a side, and zooming in fetches 256 x 256 tiles of
the cells in view, full resolution at the deepest zoom. So an 8192 x 8192
world opens as fast as a small one.

What it assumes: one viewer process per browser user, a few requests at a
time. Reads of the world are serialized by one lock (h5py serializes them
anyway, and ``refresh()`` replaces the world's layers).

Libraries, and why:

- **Flask** (with Werkzeug's threaded WSGI server and Jinja2): the
  best-known small Python web framework, maintained by Pallets. Every request
  here is a blocking h5py read, so an async framework (Starlette, aiohttp)
  would only move the reads to a thread pool; Flask is synchronous and says
  what it does. Jinja2 escapes what the templates print (layer names, paths).
- **Leaflet** 1.9.4 (BSD-2-Clause, vendored in ``worldstore/_view_static``
  with its licence, as a local viewer must work without the internet): the
  standard browser library for tiled, zoomable images. Its ``CRS.Simple``
  maps tile pixels to cells directly, so zoom, pan and the mouse's cell come
  from it rather than from hand-written code.

The page works without JavaScript too: the HTML itself names the world, the
step and the layers, and shows the overview picture (axes, legend) with a
form to pick a layer, a step and an agent. ``curl`` can check it.

Flask is the ``worldstore[view]`` extra; ``import worldstore`` does not
import it or this module. Without it, :func:`make_app` and :func:`serve`
raise :class:`~worldstore.MissingExtraError` naming the extra.

>>> import worldstore, tempfile, os
>>> from worldstore.view import Viewer
>>> path = os.path.join(tempfile.mkdtemp(), "w.h5")
>>> with worldstore.create(path, worldstore.presets.agentfarm(16, 16, 2)) as world:
...     world["RESOURCES"][2, 3] = 5.0
...     _ = world.step()
>>> with Viewer(path) as viewer:
...     viewer.cell(2, 3)["values"]["RESOURCES"]
5.0
"""

from __future__ import annotations

import collections
import io
import math
import os
import socket
import threading
import time
from typing import Any

import numpy as np

from .render import (Panel, colorize, compose, layer_panels, lookup_table, thinning, units_of, value_range)
from .render import legend as draw_legend
from .errors import HistoryError, LayerNotFoundError, MissingExtraError, RenderError, ViewError, WorldstoreError
from .world import World
from .world import open as open_world

#: Pixels a side of a tile, and of the most an overview picture shows.
TILE = 256
OVERVIEW_SIZE = 512
#: The range of a layer's colormap comes from a thinned copy of at most this many cells a side.
RANGE_SAMPLE = 1024
#: Refreshing (catching up with the writer) at most this often, in seconds.
REFRESH_EVERY = 0.25
#: Past states kept open, and tiles of past states kept drawn.
PAST_CACHE = 8
TILE_CACHE = 512

STATIC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_view_static")


class Viewer:
    """The world as the viewer reads it: live (following commits) or at a snapshot. Reading only.

    Every method checks its arguments first (:class:`ViewError`,
    :class:`~worldstore.LayerNotFoundError`, :class:`~worldstore.HistoryError`)
    and is safe to call from several threads.
    """

    def __init__(self, path: str | os.PathLike, *, colormap: str = "viridis"):
        lookup_table(colormap)
        self._world: World = open_world(path, "r", swmr=True)
        self.path = self._world.path
        self.colormap = colormap
        self._lock = threading.RLock()
        self._refreshed = time.monotonic()
        self._past: collections.OrderedDict[int, Any] = collections.OrderedDict()
        self._ranges: dict[tuple, tuple[float, float]] = {}
        self._tiles: collections.OrderedDict[tuple, bytes] = collections.OrderedDict()

    # -- the world ----------------------------------------------------------
    def close(self) -> None:
        with self._lock:
            self._world.close()

    def __enter__(self) -> "Viewer":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<worldstore viewer of {self.path!r}>"

    def refresh(self, force: bool = False) -> int:
        """Catch up with the writer's commits (at most every :data:`REFRESH_EVERY` s); the committed step."""
        with self._lock:
            now = time.monotonic()
            if force or now - self._refreshed >= REFRESH_EVERY:
                self._world.refresh()
                self._refreshed = now
                if len(self._ranges) > 4096:
                    self._ranges.clear()
            return self._world.committed_step

    def state(self) -> dict[str, Any]:
        """What the page shows around the picture: the world, its committed step, its snapshots, its layers."""
        with self._lock:
            committed = self.refresh()
            world = self._world
            return {
                "path": self.path,
                "name": os.path.basename(self.path),
                "height": world.height,
                "width": world.width,
                "agents": world.agents,
                "committed_step": committed,
                "checked_ago": round(time.monotonic() - self._refreshed, 3),
                "steps": self.steps(),
                "zoom_max": zoom_max(world.height, world.width),
                "tile": TILE,
                "layers": [self._describe(layer) for layer in world.layers.values()],
            }

    def steps(self) -> list[int]:
        """The steps of the snapshots, oldest first (each once)."""
        with self._lock:
            try:
                records = self._world.history()
            except HistoryError:  # a file written before history existed
                return []
        return sorted({int(record["step"]) for record in records})

    def _describe(self, layer: Any) -> dict[str, Any]:
        spec = layer.spec
        return {"name": layer.name, "class": layer.grid_class, "dtype": layer.dtype.name,
                "shape": list(layer.shape), "storage": layer.storage, "units": units_of(spec),
                "long_name": spec.long_name, "description": spec.description,
                "channels": list(spec.channels), "map": layer.grid_class != "observation"}

    # -- checking a request ---------------------------------------------------
    def step_of(self, text: str | None) -> int | None:
        """``None`` (live) for an empty ``text`` or ``"live"``, else a snapshot's step (checked)."""
        if text in (None, "", "live"):
            return None
        try:
            step = int(text)
        except (TypeError, ValueError):
            raise ViewError(f"step {text!r} is not a whole number; give the step of a snapshot, or 'live'") from None
        steps = self.steps()
        if step not in steps:
            shown = ", ".join(map(str, steps[:10])) + (", ..." if len(steps) > 10 else "")
            raise HistoryError(f"no snapshot at step {step} in {self.path}; snapshots exist at steps: "
                               f"{shown or 'none yet'}")
        return step

    def layer_of(self, name: str) -> str:
        if name not in self._world:
            raise LayerNotFoundError(f"unknown layer {name!r}; {os.path.basename(self.path)} has: "
                                     f"{', '.join(self._world)}")
        return name

    def agent_of(self, name: str, text: str | None) -> int | None:
        """The agent to draw for an agent or observation layer (0 if not given); None for other layers."""
        if self._world[name].grid_class not in ("agent", "observation"):
            return None
        agents = self._world.agents
        try:
            agent = int(text) if text not in (None, "") else 0
        except (TypeError, ValueError):
            raise ViewError(f"agent {text!r} is not a whole number (0 to {agents - 1})") from None
        if not 0 <= agent < agents:
            raise ViewError(f"agent {agent} is not an agent of this world (0 to {agents - 1})")
        return agent

    def _source(self, step: int | None) -> Any:
        """The live world, or the past state of ``step`` (kept for the next requests: it never changes)."""
        if step is None:
            return self._world
        if step not in self._past:
            self._past[step] = self._world.at(step)
            while len(self._past) > PAST_CACHE:
                self._past.popitem(last=False)
        self._past.move_to_end(step)
        return self._past[step]

    # -- reading --------------------------------------------------------------
    def plane(self, name: str, step: int | None, agent: int | None, rows: slice, cols: slice) -> np.ndarray:
        """``[rows, cols]`` (steps allowed) of a layer's grid, one agent's for agent layers; a copy.

        Dense layers read only the cells asked for (a strided slice of the
        mapping, or of the snapshot's chunks). Sparse layers are drawn from
        their cells: each drawn cell shows the value of largest magnitude
        among the cells it stands for, so a lone deposit is not thinned away.
        """
        with self._lock:
            layer = self._source(step)[name]
            if layer.grid_class == "observation":
                raise ViewError(f"layer {name!r} is the observation batch, not a grid of the world; "
                                "ask for its picture instead")
            if layer.grid_class == "temporal" and (layer.storage in ("sparse", "history")):
                return _from_cells(*layer.coo(), rows, cols, (self._world.height, self._world.width))
            if layer.grid_class == "agent":
                if step is None:
                    return layer[agent, rows, cols]
                return np.array(layer.numpy()[agent, rows, cols])
            if step is None:
                return layer[rows, cols]
            return np.array(layer.window(rows, cols))

    def value_range(self, name: str, step: int | None, agent: int | None) -> tuple[float, float]:
        """The colormap's range: the layer's (thinned to :data:`RANGE_SAMPLE` a side) minimum and maximum."""
        with self._lock:
            key = (name, step if step is not None else ("live", self._world.committed_step), agent)
            if key not in self._ranges:
                height, width = self._world.height, self._world.width
                k = thinning((height, width), RANGE_SAMPLE)
                plane = self.plane(name, step, agent, slice(0, height, k), slice(0, width, k))
                self._ranges[key] = value_range([plane])
            return self._ranges[key]

    def cell(self, y: int, x: int, step: int | None = None, agent: int | None = 0) -> dict[str, Any]:
        """The values of every grid layer at cell ``(y, x)`` (agent layers: ``agent``'s), live or at ``step``."""
        height, width = self._world.height, self._world.width
        if not (0 <= y < height and 0 <= x < width):
            raise ViewError(f"cell ({y}, {x}) lies outside the world, whose cells run from (0, 0) to "
                            f"({height - 1}, {width - 1})")
        if agent is not None and not 0 <= agent < max(1, self._world.agents):
            raise ViewError(f"agent {agent} is not an agent of this world (0 to {self._world.agents - 1})")

        def read(world: Any) -> dict[str, Any]:
            values: dict[str, Any] = {}
            for name, layer in world.layers.items():
                if layer.grid_class == "observation" or (layer.grid_class == "agent" and agent is None):
                    continue
                which = agent if layer.grid_class == "agent" else None
                values[name] = self.plane(name, step, which, slice(y, y + 1), slice(x, x + 1))[0, 0].item()
            return values

        with self._lock:
            if step is None:  # mapped layers show each commit as it lands: say which one was read
                seen, values = self._world.read(read)
            else:
                seen, values = None, read(self._world)
            committed = self._world.committed_step if seen is None else max(seen, self._world.committed_step)
            return {"y": y, "x": x, "step": step, "agent": agent, "committed_step": committed, "values": values}

    # -- pictures -------------------------------------------------------------
    def overview(self, name: str, step: int | None, agent: int | None) -> bytes:
        """A PNG of the whole layer, thinned to :data:`OVERVIEW_SIZE` a side, with its axes and legend."""
        with self._lock:
            layer = self._source(step)[name]
            title = f"{name} ({'live, step ' + str(self._world.committed_step) if step is None else 'step ' + str(step)})"
            title += "" if agent is None else f", agent {agent}"
            if layer.grid_class == "observation":
                panels = layer_panels(layer, agent, self._world.agents)
                ranges = [value_range([p.plane]) for p in panels]
            else:
                height, width = self._world.height, self._world.width
                k = thinning((height, width), OVERVIEW_SIZE)
                plane = self.plane(name, step, agent, slice(0, height, k), slice(0, width, k))
                boolean = plane.dtype == np.bool_
                panels = [Panel(name, plane, units_of(layer.spec), boolean, k)]
                ranges = [(0.0, 1.0) if boolean else self.value_range(name, step, agent)]
            drawn = compose(title, [(p, *r) for p, r in zip(panels, ranges)], self.colormap, OVERVIEW_SIZE)
        return _png(drawn.image)

    def legend(self, name: str, step: int | None, agent: int | None) -> tuple[bytes, dict[str, Any]]:
        """The legend strip of a layer's map (PNG) and what it says: range, units, bool or not."""
        with self._lock:
            layer = self._source(step)[name]
            boolean = layer.dtype == np.bool_
            low, high = (0.0, 1.0) if boolean else self.value_range(name, step, agent)
            units = units_of(layer.spec)
        image = draw_legend(TILE, low, high, lookup_table(self.colormap), units, boolean)
        return _png(image), {"min": low, "max": high, "units": units, "boolean": bool(boolean)}

    def tile(self, name: str, step: int | None, agent: int | None, z: int, tx: int, ty: int) -> bytes:
        """The 256 x 256 PNG tile ``(tx, ty)`` at zoom ``z`` (Leaflet's numbering; cells outside: transparent).

        At the deepest zoom (:func:`zoom_max`) a tile pixel is a cell; each
        level up halves the resolution (every 2nd cell, then every 4th...).
        """
        height, width = self._world.height, self._world.width
        top = zoom_max(height, width)
        if not 0 <= z <= top:
            raise ViewError(f"zoom level {z} does not exist; this world's levels run from 0 to {top}")
        k = 2 ** (top - z)
        span = TILE * k
        if not (0 <= ty < -(-height // span) and 0 <= tx < -(-width // span)):
            raise ViewError(f"tile ({tx}, {ty}) at zoom {z} lies outside the world")
        with self._lock:
            key = (name, step if step is not None else ("live", self._world.committed_step), agent, z, tx, ty)
            if key in self._tiles:
                self._tiles.move_to_end(key)
                return self._tiles[key]
            rows = slice(ty * span, min(height, (ty + 1) * span), k)
            cols = slice(tx * span, min(width, (tx + 1) * span), k)
            plane = self.plane(name, step, agent, rows, cols)
            boolean = plane.dtype == np.bool_
            low, high = (0.0, 1.0) if boolean else self.value_range(name, step, agent)
            rgb = colorize(plane, low, high, lookup_table(self.colormap), boolean)
            rgba = np.zeros((TILE, TILE, 4), dtype=np.uint8)
            rgba[:rgb.shape[0], :rgb.shape[1], :3] = rgb
            rgba[:rgb.shape[0], :rgb.shape[1], 3] = 255
            from PIL import Image

            data = _png(Image.fromarray(rgba, "RGBA"))
            self._tiles[key] = data
            while len(self._tiles) > TILE_CACHE:
                self._tiles.popitem(last=False)
            return data


def zoom_max(height: int, width: int) -> int:
    """The deepest zoom level, where one tile pixel is one cell (level 0 fits the world in one tile)."""
    return max(0, math.ceil(math.log2(max(height, width) / TILE)))


def _from_cells(coords: np.ndarray, values: np.ndarray, rows: slice, cols: slice,
                shape: tuple[int, int]) -> np.ndarray:
    """A sparse layer's ``[rows, cols]`` (with steps) from its cells: the largest magnitude per drawn cell."""
    r0, r1, rk = rows.indices(shape[0])
    c0, c1, ck = cols.indices(shape[1])
    out_shape = (len(range(r0, r1, rk)), len(range(c0, c1, ck)))
    out = np.zeros(out_shape, dtype=values.dtype if len(values) else np.float32)
    if not len(values):
        return out
    ys, xs = coords[:, 0], coords[:, 1]
    inside = (ys >= r0) & (ys < r0 + out_shape[0] * rk) & (xs >= c0) & (xs < c0 + out_shape[1] * ck)
    ys, xs, vals = (ys[inside] - r0) // rk, (xs[inside] - c0) // ck, values[inside]
    order = np.argsort(np.abs(vals), kind="stable")  # the largest magnitude written last wins
    out[ys[order], xs[order]] = vals[order]
    return out


def _png(image: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _flask() -> Any:
    try:
        import flask
    except ImportError as exc:
        raise MissingExtraError("worldstore view serves its pages with Flask, which is not installed: "
                                "pip install 'worldstore[view]'") from exc
    return flask


#: HTTP status of each error a request can meet.
_STATUS = ((LayerNotFoundError, 404), (HistoryError, 404), (ViewError, 400), (RenderError, 400))


def make_app(viewer: Viewer) -> Any:
    """The Flask application serving ``viewer``: the page, its pictures, tiles and JSON."""
    flask = _flask()
    from . import _view_pages as pages

    app = flask.Flask("worldstore.view", static_folder=STATIC, static_url_path="/static")

    def query(name: str) -> str | None:
        return flask.request.args.get(name)

    def picked(layer: str) -> tuple[str, int | None, int | None]:
        name = viewer.layer_of(layer)
        return name, viewer.step_of(query("step")), viewer.agent_of(name, query("agent"))

    def png(data: bytes, cache: bool) -> Any:
        response = flask.Response(data, mimetype="image/png")
        response.headers["Cache-Control"] = "max-age=3600" if cache else "no-store"
        return response

    @app.errorhandler(WorldstoreError)
    def bad_request(exc: Exception) -> Any:
        status = next((code for kind, code in _STATUS if isinstance(exc, kind)), 400)
        return _error(flask, status, str(exc))

    @app.errorhandler(404)
    def not_found(exc: Exception) -> Any:
        return _error(flask, 404, f"nothing here: {flask.request.path} is not a page of this viewer (it serves "
                                  "/, /overview/LAYER.png, /tile/..., /legend/LAYER.png and /api/...)")

    @app.errorhandler(405)
    def not_allowed(exc: Exception) -> Any:
        return _error(flask, 405, f"{flask.request.method} is not allowed: this viewer only reads (GET)")

    @app.get("/")
    def page() -> Any:
        state = viewer.state()
        names = [layer["name"] for layer in state["layers"]]
        first = next((layer["name"] for layer in state["layers"] if layer["class"] != "observation"), names[0])
        name, step, agent = picked(query("layer") or first)
        html = flask.render_template_string(pages.PAGE, state=state, layer=name, step=step, agent=agent,
                                            info=next(layer for layer in state["layers"] if layer["name"] == name))
        response = flask.Response(html, mimetype="text/html")
        response.headers["Cache-Control"] = "no-store"
        return response

    @app.get("/overview/<layer>.png")
    def overview(layer: str) -> Any:
        name, step, agent = picked(layer)
        return png(viewer.overview(name, step, agent), cache=step is not None)

    @app.get("/legend/<layer>.png")
    def legend(layer: str) -> Any:
        name, step, agent = picked(layer)
        return png(viewer.legend(name, step, agent)[0], cache=False)

    @app.get("/tile/<layer>/<int:z>/<int:tx>/<int:ty>.png")
    def tile(layer: str, z: int, tx: int, ty: int) -> Any:
        name, step, agent = picked(layer)
        if viewer._world[name].grid_class == "observation":
            raise ViewError(f"layer {name!r} is the observation batch: it has a picture "
                            f"(/overview/{name}.png), not tiles")
        return png(viewer.tile(name, step, agent, z, tx, ty), cache=step is not None)

    @app.get("/api/state")
    def api_state() -> Any:
        return flask.jsonify(viewer.state())

    @app.get("/api/layer/<layer>")
    def api_layer(layer: str) -> Any:
        name, step, agent = picked(layer)
        info = viewer.legend(name, step, agent)[1]
        return flask.jsonify(dict(info, layer=name, step=step, agent=agent,
                                  committed_step=viewer._world.committed_step))

    @app.get("/api/cell")
    def api_cell() -> Any:
        step = viewer.step_of(query("step"))
        try:
            y, x = int(query("y") or ""), int(query("x") or "")
        except ValueError:
            raise ViewError(f"y={query('y')!r}, x={query('x')!r}: a cell is two whole numbers, y and x") from None
        agent_text = query("agent")
        try:
            agent = int(agent_text) if agent_text not in (None, "") else 0
        except ValueError:
            raise ViewError(f"agent {agent_text!r} is not a whole number") from None
        return flask.jsonify(viewer.cell(y, x, step, agent))

    return app


def _error(flask: Any, status: int, message: str) -> Any:
    from . import _view_pages as pages

    wants_json = flask.request.path.startswith("/api/")
    if wants_json:
        response = flask.jsonify({"error": message, "status": status})
    else:
        response = flask.Response(flask.render_template_string(pages.ERROR, status=status, message=message),
                                  mimetype="text/html")
    response.status_code = status
    response.headers["Cache-Control"] = "no-store"
    return response


def serve(path: str | os.PathLike, *, port: int = 0, open_browser: bool = False, colormap: str = "viridis",
          on_ready: Any = None) -> None:
    """Serve the viewer of the world at ``path`` on 127.0.0.1:``port`` (0: a free port) until interrupted.

    ``on_ready(url)`` is called once the server listens (the CLI prints the
    address); ``open_browser`` opens it in the user's browser too.
    """
    _flask()
    from werkzeug.serving import make_server
    import logging

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    with Viewer(path, colormap=colormap) as viewer:
        # The socket is bound here: Werkzeug's own bind would print its error and exit the process.
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            listener.bind(("127.0.0.1", port))
            listener.listen(64)
        except OSError as exc:
            listener.close()
            raise ViewError(f"cannot serve on 127.0.0.1:{port}: {exc.strerror or exc}; choose another port, or "
                            "pass port 0 to take a free one") from exc
        server = make_server("127.0.0.1", listener.getsockname()[1], make_app(viewer), threaded=True,
                             fd=listener.fileno())
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/"
        if on_ready is not None:
            on_ready(url)
        if open_browser:
            import webbrowser

            webbrowser.open(url)
        try:
            server.serve_forever()
        finally:
            server.server_close()
            listener.close()
