"""render(): PNGs of live and past layers, agent planes, GIFs; bad requests are clear and change nothing."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import digest
from PIL import Image

import worldstore
from worldstore import RenderError
from worldstore.render import LEGEND_HEIGHT, lookup_table


@pytest.fixture
def farm(tmp_path) -> str:
    path = str(tmp_path / "farm.h5")
    with worldstore.create(path, worldstore.presets.agentfarm(64, 48, 3)) as world:
        world["RESOURCES"][...] = np.arange(64 * 48, dtype=np.float32).reshape(64, 48)
        world["AGENT_MEMORY"][1, 10:20, 5:9] = 4.0
        world.snapshot()
        world["RESOURCES"][...] = 0.0
        world["RESOURCES"][0, 0] = 1.0
        world.step()
        world.snapshot()
    return path


def test_png_of_a_past_layer_maps_its_range_through_the_colormap(farm, tmp_path):
    before = digest(farm)
    with worldstore.open(farm) as world:
        report = worldstore.render(world, "RESOURCES", tmp_path / "r.png", step=0)
    assert digest(farm) == before
    assert (report["min"], report["max"]) == (0.0, 64 * 48 - 1)
    image = np.asarray(Image.open(tmp_path / "r.png").convert("RGB"))
    table = lookup_table("viridis")
    scale = 256 // 64  # 4 x 4 pixels per cell
    assert image.shape == (64 * scale + LEGEND_HEIGHT, max(48 * scale, 160), 3)
    np.testing.assert_array_equal(image[0, 0], table[0])              # the minimum cell
    np.testing.assert_array_equal(image[64 * scale - 1, 48 * scale - 1], table[255])  # the maximum cell
    assert (image[64 * scale:] != 255).any()                            # a legend under it


def test_agent_and_observation_layers_need_an_agent(farm, tmp_path):
    with worldstore.open(farm) as world:
        report = worldstore.render(world, "AGENT_MEMORY", tmp_path / "m.png", agent=1, colormap="gray")
        assert report["max"] == 4.0
        image = np.asarray(Image.open(tmp_path / "m.png").convert("RGB"))
        assert tuple(image[15 * 4, 6 * 4]) == (255, 255, 255)          # remembered cell: the top of gray
        worldstore.render(world, "OBSERVATION", tmp_path / "o.png", agent=2)
        for bad, message in ((dict(layer="AGENT_MEMORY"), "say which agent"),
                             (dict(layer="AGENT_MEMORY", agent=3), "not an agent of this world"),
                             (dict(layer="RESOURCES", agent=0), "same for every agent"),
                             (dict(layer="RESOURCES", colormap="jet"), "unknown colormap")):
            with pytest.raises(RenderError, match=message):
                worldstore.render(world, out=tmp_path / "bad.png", **bad)
        with pytest.raises(worldstore.LayerNotFoundError):
            worldstore.render(world, "NOPE", tmp_path / "bad.png")
        with pytest.raises(worldstore.HistoryError, match="no snapshot at step 5"):
            worldstore.render(world, "RESOURCES", tmp_path / "bad.png", step=5)
    assert not (tmp_path / "bad.png").exists()


def test_gif_has_a_frame_per_snapshot_on_one_scale(farm, tmp_path):
    with worldstore.open(farm) as world:
        report = worldstore.render_gif(world, "RESOURCES", tmp_path / "r.gif")
    assert report["frames"] == 2 and report["steps"] == [0, 1]
    assert (report["min"], report["max"]) == (0.0, 64 * 48 - 1)  # the range of both frames together
    with Image.open(tmp_path / "r.gif") as gif:
        assert gif.n_frames == 2


def test_gif_of_a_world_without_snapshots_is_refused(tmp_path):
    path = tmp_path / "empty.h5"
    worldstore.create(path, worldstore.presets.agentfarm(16, 16, 1)).close()
    with worldstore.open(path) as world, pytest.raises(RenderError, match="no snapshots"):
        worldstore.render_gif(world, "RESOURCES", tmp_path / "x.gif")


def test_large_layers_are_thinned(tmp_path):
    path = tmp_path / "big.h5"
    with worldstore.create(path, worldstore.WorldSpec(600, 300, 0, [worldstore.LayerSpec("F", "resource")])) as world:
        report = worldstore.render(world, "F", tmp_path / "f.png", max_size=100)
    assert report["height"] == 100 + LEGEND_HEIGHT and report["width"] == 160
