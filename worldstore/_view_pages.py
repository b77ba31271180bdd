"""The pages of ``worldstore view`` (Jinja2 templates, escaped by Flask's autoescaping).

The page is whole without JavaScript: the world's name, the step shown and
the layer list are in the HTML, with the overview picture and a form. The
script then swaps the picture for a Leaflet map (zoom to full resolution,
tiles), follows the writer's commits, moves over the history with a slider
and reports the values under the mouse.
"""

PAGE = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{{ state.name }}: {{ layer }} at {{ 'step %d (live)' % state.committed_step if step is none else 'step %d' % step }} - worldstore view</title>
<link rel="stylesheet" href="/static/leaflet.css">
<style>
 body { font-family: system-ui, sans-serif; margin: 0; display: grid; grid-template-columns: 17rem 1fr;
        grid-template-rows: auto 1fr; height: 100vh; }
 header { grid-column: 1 / 3; padding: .4rem 1rem; border-bottom: 1px solid #ccc; }
 header h1 { font-size: 1.2rem; margin: 0; display: inline; }
 header p { margin: .2rem 0; font-size: .9rem; }
 nav { overflow-y: auto; padding: 0 .8rem; border-right: 1px solid #ccc; font-size: .9rem; }
 nav ul { list-style: none; padding: 0; } nav li { margin: .35rem 0; }
 nav li.current a { font-weight: bold; } .meta { color: #666; font-size: .8rem; display: block; }
 main { padding: .5rem 1rem; overflow: auto; }
 #map { width: 100%; height: 62vh; background: #eee; position: relative; }
 #map .leaflet-tile { image-rendering: pixelated; }
 .ruler { position: absolute; z-index: 500; pointer-events: none; font-size: 11px; color: #000; }
 .ruler span { position: absolute; background: rgba(255,255,255,.8); padding: 0 2px; white-space: nowrap; }
 #legend { display: flex; align-items: center; gap: .6rem; margin: .4rem 0; font-size: .9rem; }
 #cell { border-collapse: collapse; font-size: .85rem; margin-top: .4rem; }
 #cell td, #cell th { border-bottom: 1px solid #ddd; padding: 1px 8px; text-align: left; }
 #cell caption { text-align: left; font-weight: bold; padding: 2px 0; }
 #time { display: flex; align-items: center; gap: .6rem; margin: .4rem 0; }
 #step-slider { flex: 1; max-width: 40rem; }
 .behind { color: #a40; }
</style>
</head>
<body>
<header>
 <h1 id="world-name">{{ state.name }}</h1>
 <span id="world-path">{{ state.path }}</span>
 <p id="world-shape">{{ state.height }} x {{ state.width }} cells (y rows down, x columns right; origin (0, 0) top left), {{ state.agents }} agents, {{ state.layers|length }} layers, snapshots at {{ state.steps|length }} steps.</p>
 <p id="status">Showing <b id="shown-step">step {{ state.committed_step if step is none else step }}</b>
  (<span id="mode">{{ 'live' if step is none else 'snapshot' }}</span>);
  the writer's last commit: <span id="committed">step {{ state.committed_step }}</span>;
  <span id="behind">{{ 0 if step is none else state.committed_step - step }} steps behind</span>.</p>
</header>
<nav>
 <h2>Layers</h2>
 <ul id="layers">
 {% for l in state.layers %}
  <li class="layer{{ ' current' if l.name == layer }}" data-layer="{{ l.name }}"><a class="layer-link" href="/?layer={{ l.name|urlencode }}{{ '&step=%d' % step if step is not none }}">{{ l.name }}</a>
   <span class="meta">{{ l['class'] }}, {{ l.dtype }}, {{ l.storage }}{{ ', ' + l.units if l.units }}{{ ' - ' + l.long_name if l.long_name }}</span></li>
 {% endfor %}
 </ul>
</nav>
<main>
 <form id="picker" method="get" action="/">
  <label>Layer <select name="layer">{% for l in state.layers %}<option{{ ' selected' if l.name == layer }}>{{ l.name }}</option>{% endfor %}</select></label>
  <label>Step <select name="step"><option value="live"{{ ' selected' if step is none }}>live</option>{% for s in state.steps %}<option value="{{ s }}"{{ ' selected' if s == step }}>{{ s }}</option>{% endfor %}</select></label>
  {% if agent is not none %}<label>Agent <input name="agent" type="number" min="0" max="{{ state.agents - 1 }}" value="{{ agent }}"></label>{% endif %}
  <button type="submit">Show</button>
 </form>
 <h2 id="layer-title">{{ layer }}{{ ', agent %d' % agent if agent is not none }}</h2>
 <p id="layer-info">{{ info['class'] }} layer, {{ info.dtype }}, shape {{ info.shape|join(' x ') }}, {{ info.storage }} storage{{ '; units: ' + info.units if info.units }}{{ '; channels: ' + info.channels|join(', ') if info.channels }}. {{ info.description }}</p>
 <div id="time" hidden>
  <label for="step-slider">History</label>
  <input id="step-slider" type="range" min="0" max="{{ state.steps|length }}" step="1" value="{{ state.steps|length if step is none else state.steps.index(step) }}">
  <span id="slider-label"></span>
  <button id="live" type="button">Live</button>
 </div>
 <div id="map" hidden></div>
 <img id="overview" src="/overview/{{ layer|urlencode }}.png?{{ 'step=%d&' % step if step is not none }}{{ 'agent=%d' % agent if agent is not none }}" alt="{{ layer }}: the whole layer, thinned, with axes and legend">
 <div id="legend" hidden><img id="legend-img" alt="legend"><span id="legend-text"></span></div>
 {% if info.map %}
 <table id="cell"><caption id="cell-yx">Point at a cell to see its values in every layer.</caption>
 {% for l in state.layers if l.map %}<tr id="cell-{{ l.name }}"><th>{{ l.name }}{{ ' (agent)' if l['class'] == 'agent' }}</th><td class="value"></td><td>{{ l.units }}</td></tr>{% endfor %}
 </table>
 {% endif %}
</main>
<script src="/static/leaflet.js"></script>
<script>
"use strict";
const START = {{ {"state": state, "layer": layer, "step": step, "agent": agent, "info": info}|tojson }};
let state = START.state, step = START.step, agent = START.agent, shownCommit = state.committed_step;
const layer = START.layer, info = START.info;
const $ = (id) => document.getElementById(id);
const query = (extra) => { const q = new URLSearchParams(extra || {});
  if (step !== null) q.set("step", step); if (agent !== null) q.set("agent", agent); return q.toString(); };
const version = () => step === null ? "live-" + shownCommit : "step-" + step;
let tiles = null, map = null, hoverCell = null, hoverAsked = 0;

function showStatus() {
  const shown = step === null ? shownCommit : step;
  $("shown-step").textContent = "step " + shown;
  $("mode").textContent = step === null ? "live" : "snapshot";
  $("committed").textContent = "step " + state.committed_step;
  const behind = state.committed_step - shown;
  $("behind").textContent = behind + " steps behind" + (step === null ? " (checked " + state.checked_ago.toFixed(1) + " s ago)" : "");
  $("behind").className = behind > 0 ? "behind" : "";
  $("slider-label").textContent = step === null ? "live" : "snapshot at step " + step;
  const slider = $("step-slider");
  slider.max = state.steps.length;
  slider.value = step === null ? state.steps.length : state.steps.indexOf(step);
  for (const a of document.querySelectorAll("a.layer-link")) {
    const q = new URLSearchParams({layer: a.parentNode.dataset.layer}); if (step !== null) q.set("step", step);
    a.href = "/?" + q.toString();
  }
}

function redraw() {
  const v = version();
  if (tiles) tiles.setUrl("/tile/" + encodeURIComponent(layer) + "/{z}/{x}/{y}.png?" + query({v: v}));
  if (info.map) {
    $("legend-img").src = "/legend/" + encodeURIComponent(layer) + ".png?" + query({v: v});
    fetch("/api/layer/" + encodeURIComponent(layer) + "?" + query()).then((r) => r.json()).then((d) => {
      $("legend-text").textContent = d.boolean ? "bool: two colours" : d.min.toPrecision(4) + " to " + d.max.toPrecision(4) + (d.units ? " " + d.units : "");
    });
  } else {
    $("overview").src = "/overview/" + encodeURIComponent(layer) + ".png?" + query({v: v});
  }
  if (hoverCell) askCell(hoverCell[0], hoverCell[1]);
  showStatus();
}

function askCell(y, x) {
  hoverCell = [y, x];
  const asked = ++hoverAsked;
  $("cell-yx").textContent = "(y, x) = (" + y + ", " + x + ")";
  fetch("/api/cell?" + query({y: y, x: x})).then((r) => r.json()).then((d) => {
    if (asked !== hoverAsked || d.error) return;
    $("cell-yx").textContent = "(y, x) = (" + d.y + ", " + d.x + ") at step " + (d.step === null ? d.committed_step : d.step);
    for (const [name, value] of Object.entries(d.values)) {
      const shown = typeof value === "number" && !Number.isInteger(value) ? String(Number(value.toPrecision(6))) : String(value);
      const row = $("cell-" + name); if (row) row.querySelector(".value").textContent = shown;
    }
  });
}

function rulers() {
  // Tick labels along the top (x) and the left (y) edges of the map, in cells of the world.
  const zmax = state.zoom_max, size = map.getSize();
  const a = map.project(map.containerPointToLatLng([0, 0]), zmax), b = map.project(map.containerPointToLatLng([size.x, size.y]), zmax);
  const nice = (span) => { const raw = Math.max(1, span / 6), p = Math.pow(10, Math.floor(Math.log10(raw)));
    return [1, 2, 5, 10].map((m) => m * p).find((s) => s >= raw); };
  for (const [id, lo, hi, axis] of [["ruler-x", a.x, b.x, "x"], ["ruler-y", a.y, b.y, "y"]]) {
    const box = $(id); box.innerHTML = "";
    const limit = axis === "x" ? state.width : state.height, s = nice(hi - lo);
    for (let t = Math.max(0, Math.ceil(lo / s) * s); t <= Math.min(hi, limit); t += s) {
      const p = map.latLngToContainerPoint(map.unproject(axis === "x" ? [t, 0] : [0, t], zmax));
      const span = document.createElement("span");
      span.textContent = (t === 0 ? "0" : t) + (t + s > Math.min(hi, limit) ? " " + axis + (axis === "x" ? " \u2192" : " \u2193") : "");
      if (axis === "x") { span.style.left = p.x + "px"; span.style.top = "0px"; }
      else { span.style.top = p.y + "px"; span.style.left = "0px"; }
      box.appendChild(span);
    }
  }
}

function start() {
  $("time").hidden = state.steps.length === 0;
  if (info.map) {
    $("overview").hidden = true; $("map").hidden = false; $("legend").hidden = false;
    const zmax = state.zoom_max;
    map = L.map("map", {crs: L.CRS.Simple, minZoom: 0, maxZoom: zmax + 6, attributionControl: false});
    const cell = (y, x) => map.unproject([x, y], zmax);
    const bounds = L.latLngBounds(cell(0, 0), cell(state.height, state.width));
    tiles = L.tileLayer("", {tileSize: 256, minZoom: 0, maxZoom: zmax + 6, maxNativeZoom: zmax, bounds: bounds,
                             noWrap: true}).addTo(map);
    L.rectangle(bounds, {color: "#333", weight: 1, fill: false, interactive: false}).addTo(map);
    L.circleMarker(cell(0, 0), {radius: 5, color: "red", fillOpacity: 1, interactive: false})
      .bindTooltip("origin (0, 0)", {permanent: true, direction: "right"}).addTo(map);
    for (const id of ["ruler-x", "ruler-y"]) {
      const box = document.createElement("div"); box.id = id; box.className = "ruler";
      box.style.left = "0"; box.style.top = "0"; $("map").appendChild(box);
    }
    map.fitBounds(bounds);
    map.on("moveend zoomend resize", rulers); rulers();
    map.on("mousemove", (e) => {
      const p = map.project(e.latlng, zmax), y = Math.floor(p.y), x = Math.floor(p.x);
      if (y < 0 || x < 0 || y >= state.height || x >= state.width) return;
      if (hoverCell && hoverCell[0] === y && hoverCell[1] === x) return;
      askCell(y, x);
    });
  }
  $("step-slider").addEventListener("input", (e) => {
    const i = Number(e.target.value);
    step = i >= state.steps.length ? null : state.steps[i];
    redraw();
  });
  $("live").addEventListener("click", () => { step = null; redraw(); });
  redraw();
  setInterval(poll, 1000);
}

function poll() {
  fetch("/api/state").then((r) => r.json()).then((fresh) => {
    state = fresh;
    $("time").hidden = state.steps.length === 0;
    if (step === null && state.committed_step !== shownCommit) { shownCommit = state.committed_step; redraw(); }
    else showStatus();
  }).catch(() => { $("behind").textContent = "the viewer does not answer (stopped?)"; });
}

start();
</script>
</body>
</html>
"""

ERROR = r"""<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>{{ status }}: worldstore view</title>
<style>body { font-family: system-ui, sans-serif; margin: 2rem; } .error { color: #a00; }</style></head>
<body>
<h1>{{ status }}: {{ 'not found' if status == 404 else 'bad request' }}</h1>
<p class="error" id="error">{{ message }}</p>
<p>Nothing was changed. <a href="/">Back to the world</a>.</p>
</body>
</html>
"""
