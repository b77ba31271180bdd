"""worldstore.demo: the random-walk simulation, and the window reference it uses."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import worldstore
from worldstore import _windows
from worldstore.demo import run_demo


def layers_of(path: str) -> dict[str, np.ndarray]:
    with worldstore.open(path) as world:
        return {name: layer.numpy().copy() for name, layer in world.layers.items()}


def reference_window(grid: np.ndarray, y: int, x: int, radius: int, pad_value) -> np.ndarray:
    """The window around (y, x), by padding the whole grid once: independent of _windows."""
    padded = np.pad(grid, radius, mode="constant", constant_values=pad_value)
    side = 2 * radius + 1
    return padded[y:y + side, x:x + side]


@pytest.fixture(scope="module")
def crowded(tmp_path_factory) -> tuple[str, dict]:
    """20 agents on 12x12: two of them always share a 3x3 block, so DAMAGE_HEAT is written every step."""
    path = str(tmp_path_factory.mktemp("demo") / "crowded.h5")
    return path, run_demo(path, height=12, width=12, agents=20, steps=6, seed=3)


def test_summary_is_json_and_matches_the_file(crowded):
    path, summary = crowded
    assert json.loads(json.dumps(summary)) == summary
    assert summary["path"] == os.path.abspath(path)
    assert (summary["height"], summary["width"], summary["agents"], summary["steps"]) == (12, 12, 20, 6)
    assert summary["step"] == summary["committed_step"] == 6
    assert summary["seconds"] >= 0
    layers = layers_of(path)
    assert summary["total_resources"] == pytest.approx(float(layers["RESOURCES"].sum(dtype=np.float64)))
    assert set(summary["temporal"]) == {"DAMAGE_HEAT", "TRAILS", "ALLY_SIGNAL"}
    for name, total in summary["temporal"].items():
        assert total == pytest.approx(float(layers[name].sum(dtype=np.float64)))
    info = worldstore.inspect(path)
    assert info["step"] == info["committed_step"] == 6


def test_every_class_of_layer_is_written(crowded):
    path, summary = crowded
    layers = layers_of(path)
    ys, xs = np.array(summary["positions"]).T
    assert ((0 <= ys) & (ys < 12) & (0 <= xs) & (xs < 12)).all()

    # environment: obstacles never under an agent, visibility their complement, cost 1 + noise
    assert not layers["OBSTACLES"][ys, xs].any()
    assert (layers["VISIBILITY"] == ~layers["OBSTACLES"]).all()
    assert (layers["TERRAIN_COST"] >= 1).all() and (layers["TERRAIN_COST"] < 1.5).all()
    assert layers["TERRAIN_COST"].std() > 0
    # resource: regrown everywhere off obstacles, eaten where the agents stand
    assert (layers["RESOURCES"][ys, xs] == 0).all()
    assert (layers["RESOURCES"][~layers["OBSTACLES"]] > 0).any()
    # temporal: the last step's deposits survive one decay
    assert (layers["TRAILS"][ys, xs] > 0).all()
    assert layers["DAMAGE_HEAT"].max() > 0
    assert layers["ALLY_SIGNAL"].max() > 0
    # agent and observation layers
    assert layers["AGENT_MEMORY"].any()
    assert layers["OBSERVATION"].any()


def test_memory_holds_the_visible_resources_of_the_last_window(crowded):
    path, summary = crowded
    layers = layers_of(path)
    radius = worldstore.presets.classic(12, 12, 20).layer("OBSERVATION").radius
    resources, visible, memory = layers["RESOURCES"], layers["VISIBILITY"], layers["AGENT_MEMORY"]
    for agent, (y, x) in enumerate(summary["positions"]):
        rows = slice(max(y - radius, 0), y + radius + 1)
        cols = slice(max(x - radius, 0), x + radius + 1)
        seen = visible[rows, cols]
        expected = resources[rows, cols].astype(np.float16)
        np.testing.assert_array_equal(memory[agent, rows, cols][seen], expected[seen])


@pytest.mark.parametrize("height, width, agents", [(12, 14, 5), (40, 23, 9)])
def test_observation_equals_a_padded_reference(tmp_path, height, width, agents):
    path = str(tmp_path / "obs.h5")
    summary = run_demo(path, height=height, width=width, agents=agents, steps=4, seed=7)
    layers = layers_of(path)
    info = worldstore.inspect(path)
    by_name = {layer["name"]: layer for layer in info["layers"]}
    obs = by_name["OBSERVATION"]
    radius, channels = obs["radius"], obs["channels"]
    observation = layers["OBSERVATION"]
    assert observation.shape == (agents, len(channels), 2 * radius + 1, 2 * radius + 1)
    for agent, (y, x) in enumerate(summary["positions"]):
        for c, name in enumerate(channels):
            grid = layers[name][agent] if by_name[name]["class"] == "agent" else layers[name]
            expected = reference_window(grid, y, x, radius, by_name[name]["pad_value"]).astype(np.float32)
            np.testing.assert_array_equal(observation[agent, c], expected, err_msg=f"agent {agent}, {name}")


def test_same_seed_same_world_other_seed_other_world(tmp_path):
    runs = {}
    for name, seed in (("a", 11), ("b", 11), ("c", 12)):
        path = str(tmp_path / f"{name}.h5")
        summary = run_demo(path, height=24, width=20, agents=6, steps=12, seed=seed)
        runs[name] = (summary, layers_of(path))
    (sa, la), (sb, lb), (_, lc) = runs["a"], runs["b"], runs["c"]
    assert sa["positions"] == sb["positions"]
    for name in la:
        np.testing.assert_array_equal(la[name], lb[name], err_msg=name)
    assert any(not np.array_equal(la[name], lc[name]) for name in la)


def test_progress_callback_and_zero_steps(tmp_path):
    calls = []
    run_demo(str(tmp_path / "p.h5"), height=8, width=8, agents=2, steps=3, on_step=lambda *a: calls.append(a))
    assert calls == [(1, 3), (2, 3), (3, 3)]
    summary = run_demo(str(tmp_path / "z.h5"), height=8, width=8, agents=2, steps=0)
    assert summary["step"] == 0


def test_refuses_bad_arguments_and_existing_files(tmp_path):
    path = str(tmp_path / "d.h5")
    with pytest.raises(worldstore.SpecError, match="5 agents do not fit"):
        run_demo(path, height=2, width=2, agents=5)
    with pytest.raises(worldstore.SpecError, match="steps"):
        run_demo(path, height=4, width=4, agents=1, steps=-1)
    assert not os.path.exists(path)
    run_demo(path, height=8, width=8, agents=2, steps=1)
    with pytest.raises(worldstore.WorldExistsError):
        run_demo(path, height=8, width=8, agents=2, steps=1)
    assert run_demo(path, height=8, width=8, agents=2, steps=2, overwrite=True)["step"] == 2


# -- the plain reference gather (worldstore/_windows.py) ---------------------------------------

@pytest.mark.parametrize("radius", [0, 1, 3, 9])
def test_gather_windows_equals_padding(radius):
    rng = np.random.default_rng(radius)
    grid = rng.random((7, 11), dtype=np.float32)
    per_agent = rng.integers(0, 255, size=(5, 7, 11), dtype=np.uint8)
    positions = np.stack([rng.integers(0, 7, 5), rng.integers(0, 11, 5)], axis=1)
    positions[0] = (0, 0)
    positions[1] = (6, 10)
    shared = _windows.gather_windows(grid, positions, radius, pad_value=-2.5)
    own = _windows.gather_windows(per_agent, positions, radius, pad_value=7)
    for i, (y, x) in enumerate(positions):
        np.testing.assert_array_equal(shared[i], reference_window(grid, y, x, radius, -2.5))
        np.testing.assert_array_equal(own[i], reference_window(per_agent[i], y, x, radius, 7))


def test_gather_windows_fills_a_strided_out_and_checks_its_inputs():
    grid = np.arange(12, dtype=np.float32).reshape(3, 4)
    out = np.zeros((2, 3, 3, 3), dtype=np.float32)
    _windows.gather_windows(grid > 5, [[1, 1], [2, 3]], 1, pad_value=True, out=out[:, 1])
    assert out[:, 0].sum() == out[:, 2].sum() == 0
    np.testing.assert_array_equal(out[0, 1], [[0, 0, 0], [0, 0, 1], [1, 1, 1]])
    np.testing.assert_array_equal(out[1, 1], np.ones((3, 3)))  # corner: True cells and True padding
    with pytest.raises(ValueError, match="outside the 3x4 world"):
        _windows.gather_windows(grid, [[3, 0]], 1, 0)
    with pytest.raises(ValueError, match="shape"):
        _windows.gather_windows(grid, [1, 1], 1, 0)
    with pytest.raises(ValueError, match="integers"):
        _windows.gather_windows(grid, [[1.0, 1.0]], 1, 0)
    with pytest.raises(ValueError, match="agent layer of 2 agents"):
        _windows.gather_windows(np.zeros((2, 3, 4)), [[0, 0]], 1, 0)


def test_swmr_run_gives_the_same_world(tmp_path):
    plain = run_demo(str(tmp_path / "plain.h5"), height=20, width=24, agents=3, steps=12, seed=5, swmr=False)
    swmr = run_demo(str(tmp_path / "swmr.h5"), height=20, width=24, agents=3, steps=12, seed=5)
    assert (plain["swmr"], swmr["swmr"]) == (False, True)
    assert swmr["step"] == swmr["committed_step"] == 12 and swmr["snapshots"] == [0, 10]
    assert swmr["positions"] == plain["positions"]
    a, b = layers_of(str(tmp_path / "plain.h5")), layers_of(str(tmp_path / "swmr.h5"))
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_on_step_raising_stops_after_a_whole_committed_step(tmp_path):
    """How worldstore demo stops at Ctrl-C: on_step raises between steps; the world is committed there."""
    class Stop(KeyboardInterrupt):
        pass

    def on_step(done, total):
        if done == 7:
            raise Stop

    path = str(tmp_path / "stopped.h5")
    with pytest.raises(Stop):
        run_demo(path, height=16, width=16, agents=2, steps=100, seed=1, on_step=on_step, swmr=True)
    assert not os.path.exists(path + "-journal")
    with worldstore.open(path) as world:
        assert world.current_step == world.committed_step == 7
        assert [record["step"] for record in world.history()] == [0]
    whole = run_demo(str(tmp_path / "whole.h5"), height=16, width=16, agents=2, steps=7, seed=1)
    stopped, reference = layers_of(path), layers_of(whole["path"])
    for name in reference:
        np.testing.assert_array_equal(stopped[name], reference[name], err_msg=name)
