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
    with worldstore.create(path, worldstore.presets.classic(64, 48, 3)) as world:
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
    left, top, width, height = report["body"]
    assert (width, height) == (48 * scale, 64 * scale)
    np.testing.assert_array_equal(image[top + scale - 1, left + scale - 1], table[0])  # the minimum cell
    np.testing.assert_array_equal(image[top + height - 1, left + width - 1], table[255])  # the maximum cell
    assert image.shape[0] >= top + height + LEGEND_HEIGHT
    assert (image[top + height + 12:] != 255).any()                     # a legend under it


def test_agent_and_observation_layers_need_an_agent(farm, tmp_path):
    with worldstore.open(farm) as world:
        report = worldstore.render(world, "AGENT_MEMORY", tmp_path / "m.png", agent=1, colormap="gray")
        assert report["max"] == 4.0
        image = np.asarray(Image.open(tmp_path / "m.png").convert("RGB"))
        left, top = report["body"][:2]
        assert tuple(image[top + 15 * 4, left + 6 * 4]) == (255, 255, 255)  # remembered cell: the top of gray
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
    worldstore.create(path, worldstore.presets.classic(16, 16, 1)).close()
    with worldstore.open(path) as world, pytest.raises(RenderError, match="no snapshots"):
        worldstore.render_gif(world, "RESOURCES", tmp_path / "x.gif")


def test_large_layers_are_thinned(tmp_path):
    path = tmp_path / "big.h5"
    with worldstore.create(path, worldstore.WorldSpec(600, 300, 0, [worldstore.LayerSpec("F", "resource")])) as world:
        report = worldstore.render(world, "F", tmp_path / "f.png", max_size=100)
    assert report["body"][2:] == [50, 100]  # every 6th cell: 100 x 50 cells, one pixel each


# -- as found in issue 17 ("CLI and pictures"): each of these failed before its fix --------------------

@pytest.fixture
def small(tmp_path) -> str:
    """A world of every kind of picture: a float layer with units, a bool layer, an agent and an observation layer."""
    path = str(tmp_path / "small.h5")
    spec = worldstore.WorldSpec(20, 30, 4, [
        worldstore.LayerSpec("FOOD", "resource", units="kg"),
        worldstore.LayerSpec("WALLS", "environment", "bool", pad_value=True),
        worldstore.LayerSpec("SCENT", "temporal", decay=0.5, threshold=0.01),
        worldstore.LayerSpec("AGENT_MEMORY", "agent", "float16"),
        worldstore.LayerSpec("OBSERVATION", "observation", channels=("FOOD", "WALLS", "SCENT"), radius=2),
    ])
    with worldstore.create(path, spec) as world:
        world["FOOD"][...] = np.arange(600, dtype=np.float32).reshape(20, 30) * 100
        world["WALLS"][3:6, 4:9] = True
        world["AGENT_MEMORY"][3, 2, 2] = 1.0
        world.deposit("SCENT", [1], [1], 0.5)
        world.observe([[4, 6], [10, 10], [0, 0], [19, 29]], into="OBSERVATION")
        for _ in range(3):
            world.snapshot()
            world.step()
    return path


def title_width(text: str) -> float:
    from PIL import ImageDraw, ImageFont

    return ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(text, font=ImageFont.load_default())


def inked_columns(strip: np.ndarray) -> np.ndarray:
    return np.flatnonzero((strip < 128).any(axis=(0, 2)))


def test_titles_are_whole(small, tmp_path):
    with worldstore.open(small) as world:
        memory = worldstore.render(world, "AGENT_MEMORY", tmp_path / "m.png", agent=3, step=2)
        observation = worldstore.render(world, "OBSERVATION", tmp_path / "o.png", agent=1)
    for report, title in ((memory, "AGENT_MEMORY (step 2), agent 3"), (observation, "OBSERVATION (live), agent 1")):
        assert report["title"] == title
        image = np.asarray(Image.open(report["path"]).convert("RGB"))
        assert image.shape[1] >= title_width(title) + 4
        ink = inked_columns(image[:14])  # the title line: drawn to its end, not cut
        assert ink.max() >= title_width(title) - 4


def test_observation_channels_are_named_each_on_its_own_scale(small, tmp_path):
    with worldstore.open(small) as world:
        report = worldstore.render(world, "OBSERVATION", tmp_path / "o.png", agent=0)
    channels = report["channels"]
    assert [c["name"] for c in channels] == ["FOOD", "WALLS", "SCENT"]
    assert (channels[0]["min"], channels[0]["max"]) != (channels[1]["min"], channels[1]["max"])
    assert channels[1]["max"] == 1.0 and channels[0]["max"] > 1000  # not one scale for all
    image = np.asarray(Image.open(tmp_path / "o.png").convert("RGB"))
    table = lookup_table("viridis")
    for channel in channels[:2]:  # each channel's largest value takes the top of the colormap
        left, top, width, height = channel["body"]
        body = image[top:top + height, left:left + width].reshape(-1, 3)
        assert (body == table[255]).all(axis=1).any(), channel["name"]


def test_bool_layers_have_two_colors_and_a_two_entry_legend(small, tmp_path):
    with worldstore.open(small) as world:
        report = worldstore.render(world, "WALLS", tmp_path / "w.png")
    image = np.asarray(Image.open(tmp_path / "w.png").convert("RGB"))
    table = lookup_table("viridis")
    left, top, width, height = report["body"]
    colors = {tuple(c) for c in image[top:top + height, left:left + width].reshape(-1, 3)}
    assert colors == {tuple(table[0]), tuple(table[255])}
    legend = image[top + height + 12:].reshape(-1, 3)  # under the axes: no ramp, only the two swatches
    ramp = {tuple(c) for c in table[1:255]} - {tuple(table[0]), tuple(table[255])}
    assert not {tuple(c) for c in legend} & ramp


def test_the_origin_is_marked_and_the_axes_are_labelled(small, tmp_path):
    from worldstore.render import ORIGIN_COLOR

    with worldstore.open(small) as world:
        report = worldstore.render(world, "FOOD", tmp_path / "f.png")
    image = np.asarray(Image.open(tmp_path / "f.png").convert("RGB"))
    left, top, width, height = report["body"]
    assert tuple(image[top - 2, left - 2]) == ORIGIN_COLOR          # at the corner of cell (0, 0)
    assert len(inked_columns(image[top - 14:top - 3, left:left + width])) > 10  # x tick labels over it
    assert len(inked_columns(image[top:top + height, :left - 2])) > 3  # y tick labels left of it


def test_gif_frames_have_whole_separate_titles(small, tmp_path):
    with worldstore.open(small) as world:
        report = worldstore.render_gif(world, "SCENT", tmp_path / "s.gif")
    assert report["titles"] == ["SCENT (step 0)", "SCENT (step 1)", "SCENT (step 2)"]


def test_the_extension_picks_the_format(small, tmp_path):
    with worldstore.open(small) as world:
        assert worldstore.render(world, "FOOD", tmp_path / "f.jpg")["format"] == "JPEG"
        assert worldstore.render(world, "FOOD", tmp_path / "f")["format"] == "PNG"
        with pytest.raises(RenderError, match="extension '.xyz'"):
            worldstore.render(world, "FOOD", tmp_path / "f.xyz")
        with pytest.raises(RenderError, match="GIF"):
            worldstore.render_gif(world, "FOOD", tmp_path / "f.png")
    assert (tmp_path / "f.jpg").read_bytes()[:2] == b"\xff\xd8"  # JPEG's magic, not PNG's
    assert (tmp_path / "f").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (tmp_path / "f.xyz").exists()
