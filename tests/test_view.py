"""worldstore view: the viewer in a subprocess, beside a SWMR writer in another, read over HTTP and in a browser.

The HTTP tests (urllib) run everywhere the view extra (Flask) is installed. The browser tests drive Debian's
headless chromium through chromedriver and selenium; they skip, saying why, where those are absent
(``apt-get install -y chromium chromium-driver``; ``.ci/run`` installs them when it runs as root).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
from conftest import digest, python_env

import worldstore

pytest.importorskip("flask", reason="the view extra (Flask) is not installed: pip install 'worldstore[view]'")

HEIGHT, WIDTH = 48, 64
#: One layer of each grid class (the presets' layers are another part's to change).
SPEC_CODE = """worldstore.WorldSpec({height}, {width}, 3, [
    worldstore.LayerSpec("RESOURCES", "resource", "float32", units="kg"),
    worldstore.LayerSpec("OBSTACLES", "environment", "bool", pad_value=True),
    worldstore.LayerSpec("TRAILS", "temporal", "float32", decay=0.9, threshold=0.01, storage="sparse"),
    worldstore.LayerSpec("AGENT_MEMORY", "agent", "float16"),
    worldstore.LayerSpec("OBSERVATION", "observation", channels=("RESOURCES", "OBSTACLES", "TRAILS"), radius=3),
])"""


def spec(height: int = HEIGHT, width: int = WIDTH) -> worldstore.WorldSpec:
    return eval(SPEC_CODE.format(height=height, width=width), {"worldstore": worldstore})

#: A SWMR writer whose RESOURCES cell (y, x) holds step * 10000 + y * WIDTH + x, committed and snapshotted
#: every step (step 0 included), a step every ``sys.argv[2]`` seconds, until its stdin closes.
WRITER = f"""
import sys, threading, time
import numpy as np
import worldstore
path, pause = sys.argv[1], float(sys.argv[2])
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
cells = np.arange({HEIGHT} * {WIDTH}, dtype=np.float32).reshape({HEIGHT}, {WIDTH})
with worldstore.create(path, {SPEC_CODE.format(height=HEIGHT, width=WIDTH)}, swmr=True) as world:
    world["RESOURCES"][...] = cells
    world["OBSTACLES"][5, 7] = True
    world.deposit("TRAILS", [2], [3], 2.5)
    world.snapshot()
    print("ready", flush=True)
    while not stop.is_set():
        step = world.step()
        world["RESOURCES"][...] = cells + np.float32(step * 10000)
        world.snapshot()
        time.sleep(pause)
"""


def expected(step: int, y: int, x: int) -> float:
    return float(step * 10000 + y * WIDTH + x)


@contextlib.contextmanager
def running_writer(path, pause: float = 0.3):
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(pause)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=python_env())
    try:
        assert proc.stdout.readline().strip() == "ready", proc.communicate(timeout=30)
        yield proc
    finally:
        proc.communicate("", timeout=60)
    assert proc.returncode == 0


@contextlib.contextmanager
def running_viewer(path, *args):
    """``worldstore view PATH --port 0`` in a subprocess; yields its address."""
    proc = subprocess.Popen([sys.executable, "-m", "cli.main", "view", str(path), "--port", "0", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=python_env())
    try:
        line = proc.stdout.readline()
        match = re.search(r"at (http://127\.0\.0\.1:\d+/)", line)
        assert match, (line, proc.stderr.read() if proc.poll() is not None else "")
        yield match.group(1)
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


def get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read()


def get_json(url: str) -> dict:
    status, _, body = get(url)
    assert status == 200, body
    return json.loads(body)


@pytest.fixture
def farm(tmp_path) -> str:
    """A closed world with two snapshots (steps 0 and 1) whose RESOURCES follow :func:`expected`."""
    path = str(tmp_path / "farm.h5")
    cells = np.arange(HEIGHT * WIDTH, dtype=np.float32).reshape(HEIGHT, WIDTH)
    with worldstore.create(path, spec()) as world:
        world["RESOURCES"][...] = cells
        world.deposit("TRAILS", [2, 40], [3, 60], [2.5, 1.0])
        world["AGENT_MEMORY"][2, 9, 11] = 3.0
        world.snapshot()
        world.step()
        world["RESOURCES"][...] = cells + np.float32(10000)
        world.snapshot()
    return path


# -- HTTP, everywhere ----------------------------------------------------------------

def test_first_page_names_the_world_its_step_and_layers_without_javascript(farm):
    with running_viewer(farm) as url:
        status, kind, body = get(url)
        page = body.decode()
    assert status == 200 and kind.startswith("text/html")
    assert "farm.h5" in page and 'id="shown-step">step 1<' in page
    layers = re.search(r'<ul id="layers">(.*?)</ul>', page, re.S).group(1)
    for name in (layer.name for layer in spec().layers):
        assert f">{name}</a>" in layers
    assert re.search(r'<img id="overview" src="/overview/RESOURCES.png', page)
    assert '<option value="0">0</option>' in page  # the snapshots, in the form


def test_pictures_legends_tiles_and_cells(farm):
    from PIL import Image
    import io

    with running_viewer(farm) as url:
        for path in ("overview/RESOURCES.png", "overview/OBSERVATION.png?agent=1", "overview/TRAILS.png?step=0",
                     "legend/OBSTACLES.png", "tile/TRAILS/0/0/0.png", "tile/AGENT_MEMORY/0/0/0.png?agent=2&step=1"):
            status, kind, body = get(url + path)
            assert status == 200 and kind == "image/png", (path, body[:200])
            Image.open(io.BytesIO(body)).verify()
        tile = np.asarray(Image.open(io.BytesIO(get(url + "tile/RESOURCES/0/0/0.png?step=0")[2])))
        assert tile.shape == (256, 256, 4)
        assert (tile[:HEIGHT, :WIDTH, 3] == 255).all() and (tile[HEIGHT:, :, 3] == 0).all()  # outside: clear
        live = get_json(url + "api/cell?y=2&x=3")
        assert live["values"]["RESOURCES"] == expected(1, 2, 3) and live["committed_step"] == 1
        assert live["values"]["TRAILS"] > 0 and live["values"]["OBSTACLES"] is False
        past = get_json(url + "api/cell?y=2&x=3&step=0")
        assert past["values"]["RESOURCES"] == expected(0, 2, 3) and past["values"]["TRAILS"] == 2.5
        assert get_json(url + "api/cell?y=9&x=11&agent=2")["values"]["AGENT_MEMORY"] == 3.0
        layer = get_json(url + "api/layer/RESOURCES?step=0")
        assert (layer["min"], layer["max"]) == (0.0, HEIGHT * WIDTH - 1)
        assert get_json(url + "api/layer/OBSTACLES")["boolean"] is True


BAD = [
    ("overview/NOPE.png", 404, "unknown layer 'NOPE'"),
    ("?layer=NOPE", 404, "unknown layer"),
    ("?layer=RESOURCES&step=99", 404, "no snapshot at step 99"),
    ("tile/RESOURCES/0/0/0.png?step=-1", 404, "no snapshot at step -1"),
    ("?step=soon", 400, "not a whole number"),
    ("?layer=AGENT_MEMORY&agent=7", 400, "not an agent of this world"),
    ("tile/RESOURCES/9/0/0.png", 400, "zoom level 9 does not exist"),
    ("tile/RESOURCES/0/5/0.png", 400, "outside the world"),
    ("tile/OBSERVATION/0/0/0.png", 400, "observation batch"),
    ("api/cell?y=48&x=0", 400, "outside the world"),
    ("api/cell?y=a&x=0", 400, "two whole numbers"),
    ("../../etc/passwd", 404, "not a page of this viewer"),
    ("static/../../world.py", 404, "not a page of this viewer"),
    ("static/..%2f..%2fview.py", 404, "not a page of this viewer"),
    ("static/%2e%2e/view.py", 404, "not a page of this viewer"),
    ("nowhere/at/all", 404, "not a page of this viewer"),
]


def test_bad_requests_get_an_error_page_and_change_nothing(farm):
    before = digest(farm)
    with running_viewer(farm) as url:
        def page() -> str:  # how long ago the viewer last looked at the file aside
            return re.sub(r'"checked_ago": ?[0-9.]+', "", get(url)[2].decode())

        good = page()
        for path, status, fragment in BAD:
            # urllib would resolve "..": send the path as it is.
            got_status, kind, body = get_raw(url, path)
            text = body.decode(errors="replace").replace("&#39;", "'")
            assert got_status == status, (path, got_status, text[:300])
            assert fragment in text, (path, text[:300])
            assert ("application/json" in kind) == path.startswith("api/"), (path, kind)
        post = urllib.request.Request(url, data=b"x=1", method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(post, timeout=30)
        assert refused.value.code == 405
        assert page() == good  # the viewer shows what it showed
    assert digest(farm) == before


def get_raw(url: str, path: str) -> tuple[int, str, bytes]:
    """GET ``path`` without any client-side normalization (``..`` stays)."""
    import http.client

    host, port = re.match(r"http://([^:/]+):(\d+)/", url).groups()
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        connection.request("GET", "/" + path)
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type") or "", response.read()
    finally:
        connection.close()


def test_the_viewer_follows_a_swmr_writer_and_never_blocks_it(tmp_path):
    path = tmp_path / "live.h5"
    with running_writer(path, pause=0.05) as writer, running_viewer(path) as url:
        seen = []
        deadline = time.monotonic() + 60
        while len(set(seen)) < 4:
            assert time.monotonic() < deadline and writer.poll() is None, seen
            state = get_json(url + "api/state")
            seen.append(state["committed_step"])
            cell = get_json(url + "api/cell?y=1&x=2")
            assert cell["values"]["RESOURCES"] == expected(cell["committed_step"], 1, 2)
            time.sleep(0.2)
        assert seen == sorted(seen)
        assert state["steps"][0] == 0 and len(state["steps"]) >= 3
        for step in state["steps"][:3]:  # any snapshot, while the writer goes on
            assert get_json(url + f"api/cell?y=4&x=5&step={step}")["values"]["RESOURCES"] == expected(step, 4, 5)


def test_a_large_world_opens_from_a_thinned_overview_and_tiles(tmp_path):
    path = tmp_path / "big.h5"
    spec = worldstore.WorldSpec(8192, 8192, 0, [worldstore.LayerSpec("FOOD", "resource", units="kg"),
                                               worldstore.LayerSpec("HEAT", "temporal", storage="sparse")])
    with worldstore.create(path, spec) as world:
        food = world["FOOD"].numpy()
        food[8000:8100, 100:200] = 5.0
        world.deposit("HEAT", [8191], [8191], 1.0)
    with running_viewer(path) as url:
        started = time.monotonic()
        status, _, page = get(url)
        overview = get(url + "overview/FOOD.png")[2]
        assert status == 200 and time.monotonic() - started < 20
        assert len(overview) < 1 << 20
        state = get_json(url + "api/state")
        assert state["zoom_max"] == 5
        deep = get(url + "tile/FOOD/5/0/31.png")  # full resolution, rows 7936..8191, columns 0..255
        from PIL import Image
        import io

        tile = np.asarray(Image.open(io.BytesIO(deep[2])))
        rgb = tile[8000 - 7936, 150, :3]
        assert (rgb != tile[0, 0, :3]).any()  # the patch is drawn at full resolution
        heat = np.asarray(Image.open(io.BytesIO(get(url + "tile/HEAT/0/0/0.png")[2])))
        assert (heat[255, 255, :3] != heat[0, 0, :3]).any()  # one sparse cell survives thinning 32x
        assert get_json(url + "api/cell?y=8050&x=150")["values"]["FOOD"] == 5.0


def test_import_worldstore_imports_no_web_library():
    code = ("import sys, worldstore; bad = [m for m in ('flask', 'werkzeug', 'jinja2', 'worldstore.view') "
            "if m in sys.modules]; print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=python_env(), check=True)
    assert out.stdout.strip() == "[]"


def test_view_without_the_extra_says_which_to_install(farm):
    code = ("import sys; sys.modules['flask'] = None; from cli.main import main; "
            "main(['view', sys.argv[1]], prog_name='worldstore')")
    proc = subprocess.run([sys.executable, "-c", code, farm], capture_output=True, text=True, env=python_env(),
                          timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "worldstore: error: worldstore view serves its pages with Flask, which is not installed: "
        "pip install 'worldstore[view]'"]


def test_a_port_in_use_is_a_one_line_error(farm):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "cli.main", "view", farm, "--port", str(port)],
                              capture_output=True, text=True, env=python_env(), timeout=60)
    assert proc.returncode == 1
    assert len(proc.stderr.splitlines()) == 1 and f"127.0.0.1:{port}" in proc.stderr and "port 0" in proc.stderr


# -- a real browser -------------------------------------------------------------------

def browser_missing() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install selenium)"
    for tool in ("chromium", "chromedriver"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install -y chromium chromium-driver)"
    return None


needs_browser = pytest.mark.skipif(browser_missing() is not None, reason=str(browser_missing()))


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000",
                     "--disable-gpu"):
        options.add_argument(argument)
    options.binary_location = shutil.which("chromium")
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def wait(condition, timeout: float = 30.0, what: str = ""):
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def shown_step(driver) -> int:
    return int(driver.find_element("id", "shown-step").text.split()[-1])


def tiles_loaded(driver) -> int:
    return driver.execute_script(
        "return [...document.querySelectorAll('#map img.leaflet-tile')].filter("
        "(i) => i.complete && i.naturalWidth > 0).length")


def hover(driver, dx: int, dy: int) -> tuple[int, int, int, float]:
    """Move the mouse ``(dx, dy)`` pixels from the map's centre: the (y, x), step and RESOURCES value shown."""
    from selenium.webdriver.common.action_chains import ActionChains

    driver.execute_script("document.getElementById('cell-yx').textContent = ''")
    the_map = driver.find_element("id", "map")
    ActionChains(driver).move_to_element_with_offset(the_map, dx, dy).perform()
    caption = wait(lambda: re.search(r"\((\d+), (\d+)\) at step (\d+)", driver.find_element("id", "cell-yx").text),
                   what="the hovered cell's values")
    value = driver.find_element("css selector", "#cell-RESOURCES .value").text
    y, x, step = map(int, caption.groups())
    return y, x, step, float(value)


@needs_browser
def test_browser_follows_the_writer_shows_the_past_and_reports_the_cell(tmp_path, browser):
    path = tmp_path / "live.h5"
    with running_writer(path, pause=0.3) as writer, running_viewer(path) as url:
        browser.get(url)
        layers = [li.get_attribute("data-layer") for li in browser.find_elements("css selector", "#layers li")]
        assert layers[:2] == ["RESOURCES", "OBSTACLES"] and "OBSERVATION" in layers
        wait(lambda: tiles_loaded(browser) > 0, what="the map's tiles")
        assert browser.find_element("id", "legend-img").get_attribute("naturalWidth") != "0"

        first = shown_step(browser)  # the step shown advances while the writer commits
        wait(lambda: shown_step(browser) >= first + 2, what="the shown step to advance")
        assert browser.find_element("id", "mode").text == "live"
        assert writer.poll() is None

        y, x, step, value = hover(browser, 30, 20)  # hovering reports the right value
        assert 0 <= y < HEIGHT and 0 <= x < WIDTH
        assert value == expected(step, y, x)

        # The slider: the second snapshot (step 1), whatever the writer does meanwhile.
        browser.execute_script("const s = document.getElementById('step-slider'); s.value = 1;"
                               "s.dispatchEvent(new Event('input'));")
        wait(lambda: browser.find_element("id", "mode").text == "snapshot", what="snapshot mode")
        assert shown_step(browser) == 1
        y, x, step, value = hover(browser, -40, -10)
        assert step == 1 and value == expected(1, y, x)
        wait(lambda: int(browser.find_element("id", "behind").text.split()[0]) > 0, what="steps behind")

        browser.find_element("id", "live").click()
        wait(lambda: browser.find_element("id", "mode").text == "live", what="live mode")


@needs_browser
def test_browser_shows_an_error_page_for_a_bad_request(farm, browser):
    before = digest(farm)
    with running_viewer(farm) as url:
        for path, fragment in (("?layer=NOPE", "unknown layer"), ("?layer=RESOURCES&step=77", "no snapshot at step 77"),
                               ("static/..%2f..%2fview.py", "not a page of this viewer")):
            browser.get(url + path)
            assert fragment in browser.find_element("id", "error").text
        browser.get(url + "?layer=OBSERVATION&agent=2")
        image = browser.find_element("id", "overview")
        wait(lambda: image.get_attribute("naturalWidth") not in (None, "0"), what="the observation picture")
        assert "RESOURCES" in browser.find_element("id", "layer-info").text  # its channels, named
    assert digest(farm) == before


SCREENSHOTS = os.environ.get("WORLDSTORE_SCREENSHOTS")


@needs_browser
@pytest.mark.skipif(not SCREENSHOTS, reason="set WORLDSTORE_SCREENSHOTS=DIR to write the viewer's screenshots")
def test_screenshots(tmp_path, browser):
    """docs/viewer.png and docs/viewer-zoom.png: a demo world, live, and zoomed in."""
    from selenium.webdriver.common.action_chains import ActionChains

    path = tmp_path / "demo.h5"
    worldstore.run_demo(path, height=512, width=512, agents=48, steps=60)
    browser.set_window_size(1400, 1250)
    with running_viewer(path) as url:
        browser.get(url + "?layer=TRAILS")
        wait(lambda: tiles_loaded(browser) > 0, what="tiles")
        ActionChains(browser).move_to_element_with_offset(browser.find_element("id", "map"), 40, 30).perform()
        wait(lambda: "at step" in browser.find_element("id", "cell-yx").text, what="hover")
        time.sleep(1)
        browser.save_screenshot(os.path.join(SCREENSHOTS, "viewer.png"))
        browser.get(url + "?layer=RESOURCES")
        wait(lambda: tiles_loaded(browser) > 0, what="tiles")
        browser.execute_script("map.setView(map.unproject([150, 200], state.zoom_max), map.getZoom() + 3, "
                               "{animate: false});")
        time.sleep(2)
        ActionChains(browser).move_to_element_with_offset(browser.find_element("id", "map"), 10, 10).perform()
        wait(lambda: "at step" in browser.find_element("id", "cell-yx").text, what="hover")
        time.sleep(1)
        browser.save_screenshot(os.path.join(SCREENSHOTS, "viewer-zoom.png"))
