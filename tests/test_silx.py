"""silx (PyPI ``silx``, the Qt HDF5 viewer of synchrotrons) as the stand-in for HDFView: it reads a world.

silx's reader (``silx.io.open``) lists every layer with its attributes and the history, and reads a layer.
With ``WORLDSTORE_SCREENSHOTS=DIR`` (and PyQt5 or PySide6), a screenshot of ``silx view`` on a demo world
is written there, offscreen (``docs/silx.png``).
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import python_env

import worldstore

silx_io = pytest.importorskip("silx.io", reason="silx is not installed (pip install silx)")


@pytest.fixture
def world_with_history(tmp_path) -> str:
    path = str(tmp_path / "w.h5")
    spec = worldstore.WorldSpec(16, 24, 2, [
        worldstore.LayerSpec("FOOD", "resource", units="kg", long_name="food"),
        worldstore.LayerSpec("WALLS", "environment", "bool", pad_value=True),
        worldstore.LayerSpec("SCENT", "temporal", decay=0.5, threshold=0.01),
        worldstore.LayerSpec("MEMORY", "agent", "float16"),
    ])
    with worldstore.create(path, spec) as world:
        world["FOOD"][...] = np.arange(16 * 24, dtype=np.float32).reshape(16, 24)
        world.snapshot()
        world["FOOD"][3, 4] = -1.0
        world.step()
        world.snapshot()
    return path


def test_silx_lists_every_layer_its_attributes_and_the_history_and_reads_a_layer(world_with_history):
    with worldstore.open(world_with_history) as world:
        names, specs = list(world.layers), {name: layer.spec for name, layer in world.layers.items()}
    with silx_io.open(world_with_history) as f:
        layers = f["layers"]
        for name in names:
            assert name in layers
            attrs = dict(layers[name].attrs)
            assert attrs["grid_class"] == specs[name].grid_class
            assert attrs["units"] == specs[name].units and attrs["long_name"] == specs[name].long_name
        assert layers["FOOD"].shape == (16, 24) and layers["MEMORY"].shape == (2, 16, 24)
        history = f["history"]
        assert list(history["step"][...]) == [0, 1]
        assert history["FOOD"].shape[0] >= 2
        assert history["FOOD"][0, 3, 4] == 3 * 24 + 4 and history["FOOD"][1, 3, 4] == -1.0
        food = layers["FOOD"][...]
    assert food[3, 4] == -1.0 and food[15, 23] == 15 * 24 + 23


SCREENSHOT = r"""
import os, sys
os.environ["QT_QPA_PLATFORM"] = "offscreen"
from silx.gui import qt
app = qt.QApplication([])
from silx.app.view.Viewer import Viewer
import silx.io
window = Viewer(parent=None, settings=None)
window.resize(1280, 800)
window.appendFile(sys.argv[1])
window.show()
import time


def settle(condition=lambda: False, seconds=10.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not condition():
        app.processEvents()
        time.sleep(0.02)


tree = window.findChild(qt.QTreeView)
model = tree.model()
settle(lambda: model.rowCount(model.index(0, 0)) > 0)
root = model.index(0, 0)
tree.expand(root)
settle(seconds=0.5)
for row in range(model.rowCount(root)):
    index = model.index(row, 0, root)
    if model.data(index) == "layers":
        tree.expand(index)
        settle(lambda: model.rowCount(index) > 0)
        for inner in range(model.rowCount(index)):
            child = model.index(inner, 0, index)
            if model.data(child) == sys.argv[3]:
                tree.setCurrentIndex(child)
h5 = silx.io.open(sys.argv[1])
window.displayData(h5["layers/" + sys.argv[3]])
settle(seconds=1)
from silx.gui.data import DataViews
from silx.gui.data.DataViewerFrame import DataViewerFrame
for frame in window.findChildren(DataViewerFrame):
    frame.setDisplayMode(DataViews.IMAGE_MODE)  # the Image tab, as a user would click it
tree.expandToDepth(1)
settle(seconds=3)
window.grab().save(sys.argv[2])
"""


@pytest.mark.skipif(not os.environ.get("WORLDSTORE_SCREENSHOTS"), reason="set WORLDSTORE_SCREENSHOTS=DIR to write "
                                                                          "the silx screenshot")
def test_silx_view_screenshot(tmp_path):
    pytest.importorskip("silx.gui.qt", reason="silx's Qt binding (PyQt5 or PySide6) is not installed")
    path = tmp_path / "demo.h5"
    worldstore.run_demo(path, height=256, width=256, agents=16, steps=30)
    out = os.path.join(os.environ["WORLDSTORE_SCREENSHOTS"], "silx.png")
    proc = subprocess.run([sys.executable, "-c", SCREENSHOT, str(path), out, "RESOURCES"], capture_output=True,
                          text=True, env=python_env(), timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert os.path.getsize(out) > 10000
