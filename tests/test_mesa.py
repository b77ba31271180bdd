"""worldstore.mesa: Mesa property layers backed by a world, against stock Mesa runs (issue 16, "Mesa").

Mesa >= 3.5 needs Python >= 3.12: where it is missing (the 3.11 venv), this module skips. .ci/run runs it in a
Python 3.12 venv with the worldstore[mesa] extra.
"""

from __future__ import annotations

import gc
import importlib.util
import os
import pickle
import re
import sys

import numpy as np
import pytest

mesa = pytest.importorskip("mesa", reason="Mesa (the worldstore[mesa] extra, Python >= 3.12) is not installed")

import worldstore  # noqa: E402
from worldstore import LayerSpec, WorldSpec  # noqa: E402
from worldstore import mesa as wm  # noqa: E402
from conftest import ROOT, run_python  # noqa: E402

if wm._MESA_ERROR is not None:  # pragma: no cover - an older Mesa
    pytest.skip(f"Mesa is too old for worldstore.mesa: {wm._MESA_ERROR}", allow_module_level=True)

from mesa.discrete_space import OrthogonalMooreGrid  # noqa: E402

sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import mesa_grid  # noqa: E402  (its model is the one these tests run too)

STEPS = 50
SNAPSHOT_EVERY = 10


# -- a model of our own: property layers, regrowth, harvesting ---------------------------------------------

class Farm(mesa_grid.Farm):
    """benchmarks/mesa_grid.py's model (food regrows, harvesters eat), small by default."""

    def __init__(self, width=30, height=20, agents=40, rng=7, dimensions=tuple):
        super().__init__(width, height, agents, rng, dimensions)


def grids(model) -> dict[str, np.ndarray]:
    return {name: np.array(layer.data) for name, layer in model.grid._mesa_property_layers.items()}


def agents(model) -> list[tuple]:
    def fields(agent):
        return tuple(value for key, value in sorted(vars(agent).items())
                     if isinstance(value, (int, float, np.number)) and not isinstance(value, bool))
    return sorted((agent.unique_id, agent.cell.coordinate, fields(agent)) for agent in model.agents)


def assert_grids_equal(got: dict, expected: dict, where: str) -> None:
    assert got.keys() == expected.keys(), where
    for name in expected:
        assert got[name].dtype == expected[name].dtype, f"{where}: {name}"
        np.testing.assert_array_equal(got[name], expected[name], err_msg=f"{where}: layer {name}")


def world_grids(world, names: dict[str, str], step: int | None = None) -> dict[str, np.ndarray]:
    """The world's layers (or those of its snapshot at ``step``) in Mesa's orientation, by Mesa name."""
    source = world if step is None else world.at(step)
    return {mesa_name: np.array(source[layer][...]).T for mesa_name, layer in names.items()}


# -- Mesa's own Sugarscape G1MT (or our Farm, where this Mesa does not ship it) ------------------------------

HAVE_SUGARSCAPE = importlib.util.find_spec("mesa.examples.advanced.sugarscape_g1mt") is not None


def example_model():
    if HAVE_SUGARSCAPE:
        from mesa.examples.advanced.sugarscape_g1mt.model import SugarscapeG1mt
        return SugarscapeG1mt(rng=42)
    return Farm(rng=42)  # pragma: no cover - a Mesa without its examples


@pytest.fixture(scope="module")
def stock_run():
    """The stock model's grids and agents after each of STEPS steps (index k: after step k; 0: at the start)."""
    model = example_model()
    states = [(grids(model), agents(model))]
    for _ in range(STEPS):
        model.step()
        states.append((grids(model), agents(model)))
    return states


def test_example_model_is_bit_identical_to_stock_and_persisted(tmp_path, stock_run):
    path = str(tmp_path / "example.h5")
    model = example_model()
    attached = wm.attach(model.grid, path, model=model, snapshot_every=SNAPSHOT_EVERY)
    assert set(attached.names) == set(stock_run[0][0]) and "empty" in attached.names
    for step in range(1, STEPS + 1):
        model.step()
        expected_grids, expected_agents = stock_run[step]
        assert_grids_equal(grids(model), expected_grids, f"step {step}")
        assert agents(model) == expected_agents, f"step {step}"
    world = attached.world
    assert world.current_step == world.committed_step == STEPS
    # The layers Mesa wrote are the world's: the same memory.
    for name, layer in attached.layers.items():
        assert np.shares_memory(layer.data, world[attached.names[name]].numpy())
    assert_grids_equal(world_grids(world, attached.names), stock_run[STEPS][0], "world at the end")

    # Snapshots every SNAPSHOT_EVERY steps equal the stock run at those steps.
    assert [entry["step"] for entry in world.history()] == list(range(SNAPSHOT_EVERY, STEPS + 1, SNAPSHOT_EVERY))
    for step in range(SNAPSHOT_EVERY, STEPS + 1, SNAPSHOT_EVERY):
        assert_grids_equal(world_grids(world, attached.names, step), stock_run[step][0], f"snapshot {step}")

    # restore(20), seen through Mesa's cell accessors and layers.
    attached.restore(20)
    expected = stock_run[20][0]
    rng = np.random.default_rng(0)
    width, height = model.grid.dimensions
    for x, y in zip(rng.integers(0, width, 200), rng.integers(0, height, 200)):
        cell = model.grid._cells[(int(x), int(y))]
        for name in expected:
            assert getattr(cell, name) == expected[name][x, y], (name, x, y)
    assert_grids_equal(grids(model), expected, "restored to step 20")

    attached.restore(STEPS)
    attached.close()
    assert not any(isinstance(layer, wm.WorldPropertyLayer) and layer.linked
                   for layer in model.grid._mesa_property_layers.values())
    assert_grids_equal(grids(model), stock_run[STEPS][0], "detached grid")
    with worldstore.open(path) as reopened:
        assert reopened.committed_step == STEPS
        assert_grids_equal(world_grids(reopened, attached.names or {n: n for n in expected}),
                           stock_run[STEPS][0], "the file, reopened")


def test_farm_is_identical_to_stock_with_a_list_of_dimensions(tmp_path):
    stock, backed = Farm(dimensions=list), Farm(dimensions=list)
    attached = wm.attach(backed.grid, tmp_path / "farm.h5", model=backed)
    assert backed.grid.food.dimensions is backed.grid.dimensions  # Mesa compares them with ==: a list stays a list
    for step in range(1, 31):
        stock.step()
        backed.step()
        assert_grids_equal(grids(backed), grids(stock), f"step {step}")
        assert agents(backed) == agents(stock)
    backed.grid.create_property_layer("extra", 1.0)  # the grid still takes stock layers
    assert attached.world.committed_step == 30
    attached.close()


# -- links: cell accessors, orientation, storage moves ------------------------------------------------------

def test_cell_accessor_writes_reach_the_file(tmp_path):
    path = str(tmp_path / "cells.h5")
    model = Farm(width=7, height=5, agents=0)
    attached = wm.attach(model.grid, path, model=model)
    world = attached.world
    assert world.shape == (5, 7) and world["food"].shape == (5, 7)
    model.grid._cells[(6, 1)].food = 42.0  # x = 6, y = 1
    model.grid._cells[(2, 4)].visits = 9
    assert world["food"][1, 6] == 42.0 and world["visits"][4, 2] == 9
    model.step()  # the hook commits
    code = ("import sys, worldstore\n"
            "with worldstore.open(sys.argv[1]) as w:\n"
            "    print(w.committed_step, float(w['food'][1, 6]), int(w['visits'][4, 2]), w['food'].spec.long_name)")
    proc = run_python(code, path)
    assert proc.returncode == 0, proc.stderr
    # The reader sees the committed step while the writer runs (SWMR): food regrew by 0.5 (capped) at step 1.
    step, food, visits, long_name = proc.stdout.split()
    expected_food = min(42.0 + 0.5, model.capacity[6, 1])
    assert (int(step), float(food), int(visits), long_name) == (1, expected_food, 9, "food")
    attached.close()


def test_a_layer_object_kept_from_before_the_attach_stays_linked(tmp_path):
    model = Farm(agents=0)
    before = model.grid.food
    attached = wm.attach(model.grid, tmp_path / "w.h5", model=model)
    before.data[3, 4] = 11.0
    assert attached.world["food"][4, 3] == 11.0
    attached.close()


def test_moving_a_layer_between_dense_kinds_keeps_the_link(tmp_path):
    model = Farm(agents=0)
    attached = wm.attach(model.grid, tmp_path / "w.h5", model=model)
    world = attached.world
    attached.set_storage("food", "memory")
    assert world["food"].storage == "memory"
    model.grid._cells[(1, 2)].food = 5.0
    assert world["food"][2, 1] == 5.0
    # Behind the grid's back: the next step (or data access) follows, carrying over what Mesa wrote meanwhile.
    world.set_storage("food", "mapped")
    model.grid._cells[(3, 2)].food = 6.0  # into the old array, for now
    model.step()
    assert world["food"].storage == "mapped"
    assert np.shares_memory(model.grid.food.data, world["food"].numpy())
    model.grid._cells[(4, 2)].food = 7.0
    assert (world["food"][2, 3], world["food"][2, 4]) == (min(6.5, model.capacity[3, 2]), 7.0)
    attached.close()


# -- refusals ---------------------------------------------------------------------------------------------

def _one_layer_world(path, layer: LayerSpec, width=30, height=20) -> str:
    worldstore.create(path, WorldSpec(height, width, 0, [layer])).close()
    return str(path)


@pytest.mark.parametrize("layer, message", [
    (LayerSpec("food", "temporal", "float64", storage="sparse"), "sparse"),
    (LayerSpec("food", "temporal", "float64", switch_density=0.25), "switch_density"),
])
def test_layers_that_cannot_stay_linked_are_refused(tmp_path, layer, message):
    path = _one_layer_world(tmp_path / "w.h5", layer)
    model = Farm(agents=0)
    before = grids(model)
    with pytest.raises(wm.MesaLinkError, match=message) as info:
        wm.attach(model.grid, path, model=model, layers=["food"])
    assert isinstance(info.value, ValueError) and isinstance(info.value, worldstore.WorldstoreError)
    assert "'food'" in str(info.value)
    assert_grids_equal(grids(model), before, "refused")
    assert not isinstance(model.grid.food, wm.WorldPropertyLayer)
    model.step()  # no hook left behind
    with worldstore.open(path, "r+") as world:  # and the world was let go
        assert world.current_step == 0


def test_a_dense_temporal_layer_links_and_decays_with_the_world(tmp_path):
    path = _one_layer_world(tmp_path / "w.h5", LayerSpec("scent", "temporal", "float64", decay=0.5, threshold=0.0))
    model = Farm(agents=0)
    model.grid.create_property_layer("scent", 0.0)
    attached = wm.attach(model.grid, path, model=model, layers=["scent"])
    model.grid._cells[(2, 3)].scent = 8.0
    model.step()
    assert model.grid._cells[(2, 3)].scent == 4.0
    attached.close()


def test_moving_a_linked_layer_to_sparse_is_refused(tmp_path):
    path = _one_layer_world(tmp_path / "w.h5", LayerSpec("scent", "temporal", "float64", threshold=0.0))
    model = Farm(agents=0)
    model.grid.create_property_layer("scent", 0.0)
    attached = wm.attach(model.grid, path, model=model, layers=["scent"])
    with pytest.raises(wm.MesaLinkError, match="sparse"):
        attached.set_storage("scent", "sparse")
    assert attached.world["scent"].storage == "mapped"
    attached.world.set_storage("scent", "sparse")  # behind the grid's back: the next step says so
    with pytest.raises(wm.MesaLinkError, match="moved to sparse"):
        model.step()
    attached.world.set_storage("scent", "mapped")
    attached.close()


def test_legacy_mesa_space_grids_and_layers_are_refused(tmp_path):
    import mesa.space
    legacy = mesa.space.MultiGrid(10, 8, torus=False)
    with pytest.raises(wm.MesaTypeError, match="legacy mesa.space") as info:
        wm.attach(legacy, tmp_path / "w.h5")
    assert isinstance(info.value, TypeError) and isinstance(info.value, worldstore.WorldstoreError)
    model = Farm(agents=0)
    model.grid._mesa_property_layers["old"] = mesa.space.PropertyLayer("old", 30, 20, 0.0)
    with pytest.raises(wm.MesaTypeError, match="'old'.*mesa.space"):
        wm.attach(model.grid, tmp_path / "w.h5")
    assert not os.path.exists(tmp_path / "w.h5")


def test_other_spaces_are_refused(tmp_path):
    model = mesa.Model(rng=1)
    cube = OrthogonalMooreGrid((3, 4, 5), random=model.random)
    with pytest.raises(wm.MesaTypeError, match="2-D"):
        wm.attach(cube, tmp_path / "w.h5")
    with pytest.raises(wm.MesaTypeError, match="discrete_space grid"):
        wm.attach(object(), tmp_path / "w.h5")


@pytest.mark.parametrize("dtype", [np.uint64, np.complex128, np.longdouble])
def test_dtypes_a_world_cannot_hold_are_refused(tmp_path, dtype):
    model = Farm(agents=0)
    model.grid.create_property_layer("big", 0, dtype=dtype)
    with pytest.raises(worldstore.LayerDtypeError, match=f"'big'.*{np.dtype(dtype).name}") as info:
        wm.attach(model.grid, tmp_path / "w.h5", model=model)
    assert isinstance(info.value, TypeError)
    assert not os.path.exists(tmp_path / "w.h5")
    wm.attach(model.grid, tmp_path / "w.h5", layers=["food", "empty"]).close()  # leave it out


def test_names_worldstore_reserves_are_mapped_and_found_again(tmp_path):
    path = str(tmp_path / "w.h5")
    model = Farm(agents=0)
    model.grid.create_property_layer("x", 1.0)
    model.grid.create_property_layer("sugar level", 2.0)
    model.grid.create_property_layer("9lives", 3, dtype=int)
    attached = wm.attach(model.grid, path, model=model)
    assert attached.names == {"empty": "empty", "food": "food", "visits": "visits", "x": "mesa_x",
                              "sugar level": "sugar_level", "9lives": "mesa_9lives"}
    model.grid._cells[(1, 2)].x = 5.0
    attached.close()
    with worldstore.open(path) as world:
        assert world["mesa_x"][2, 1] == 5.0 and world["mesa_x"].spec.long_name == "x"
    # A new model, attached to the existing world: the Mesa names are found by long_name.
    again = Farm(agents=0)
    for name, value, dtype in (("x", 0.0, float), ("sugar level", 0.0, float), ("9lives", 0, int)):
        again.grid.create_property_layer(name, value, dtype=dtype)
    attached = wm.attach(again.grid, path, model=again, source="world")
    assert attached.names["x"] == "mesa_x" and again.grid._cells[(1, 2)].x == 5.0
    assert getattr(again.grid._cells[(0, 0)], "sugar level") == 2.0
    attached.close()


def test_names_that_collide_are_refused(tmp_path):
    model = Farm(agents=0)
    model.grid.create_property_layer("a b", 0.0)
    model.grid.create_property_layer("a_b", 0.0)
    with pytest.raises(wm.MesaLinkError, match="'a b' and 'a_b'"):
        wm.attach(model.grid, tmp_path / "w.h5")
    attached = wm.attach(model.grid, tmp_path / "w.h5", names={"a b": "A_SPACE_B"})
    assert attached.names["a b"] == "A_SPACE_B"
    attached.close()


@pytest.mark.parametrize("world_layer, message", [
    (LayerSpec("other", "resource", "float64"), "no layer for Mesa layers 'food'"),
    (LayerSpec("food", "resource", "float32"), "float32.*float64"),
])
def test_existing_worlds_that_do_not_fit_are_refused(tmp_path, world_layer, message):
    path = _one_layer_world(tmp_path / "w.h5", world_layer)
    model = Farm(agents=0)
    with pytest.raises(wm.MesaLinkError, match=message):
        wm.attach(model.grid, path, model=model, layers=["food"])
    assert not isinstance(model.grid.food, wm.WorldPropertyLayer)


def test_a_world_of_another_size_is_refused(tmp_path):
    path = _one_layer_world(tmp_path / "w.h5", LayerSpec("food", "resource", "float64"), width=20, height=30)
    with pytest.raises(wm.MesaLinkError, match=r"\(30, 20\).*\(20, 30\)"):
        wm.attach(Farm(agents=0).grid, path, layers=["food"])


def test_a_read_only_world_is_refused(tmp_path):
    path = _one_layer_world(tmp_path / "w.h5", LayerSpec("food", "resource", "float64"))
    with worldstore.open(path) as world:
        with pytest.raises(worldstore.ReadOnlyWorldError, match="read-only"):
            wm.attach(Farm(agents=0).grid, world, layers=["food"])


def test_without_mesa_entry_points_name_the_extra(monkeypatch, tmp_path):
    monkeypatch.setattr(wm, "_MESA_ERROR", ImportError("No module named 'mesa'"))
    with pytest.raises(worldstore.MissingExtraError, match=r"worldstore\[mesa\]") as info:
        wm.attach(Farm(agents=0).grid, tmp_path / "w.h5")
    assert isinstance(info.value, ImportError)


def test_import_worldstore_does_not_import_mesa():
    proc = run_python("import sys, worldstore; print('mesa' in sys.modules, 'worldstore.mesa' in sys.modules)")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "False"]


# -- the hook, detach, pickling ---------------------------------------------------------------------------

def test_the_step_hook_is_held_strongly(tmp_path):
    model = Farm(agents=5)
    wm.attach(model.grid, tmp_path / "w.h5", model=model)  # the attachment is not kept by the caller
    gc.collect()
    for _ in range(3):
        model.step()
        gc.collect()
    world = model.grid.food._owner.world
    assert world.committed_step == 3
    model.grid.food._owner.close()


def test_detach_gives_the_grid_plain_copies(tmp_path):
    path = str(tmp_path / "w.h5")
    model = Farm(agents=5)
    attached = wm.attach(model.grid, path, model=model)
    model.step()
    attached.close()
    assert attached.world is None and not attached.attached
    layer = model.grid.food
    assert not layer.linked and layer.path == path and layer.data.flags.c_contiguous
    model.grid._cells[(0, 0)].food = 99.0  # the accessors hold the copies now
    assert layer.data[0, 0] == 99.0
    model.step()  # runs as stock Mesa: no hook
    with worldstore.open(path) as world:
        assert world.committed_step == 1 and world["food"][0, 0] != 99.0
    attached.close()  # twice is harmless
    plain = pickle.loads(pickle.dumps(model.grid))  # a detached grid pickles as stock Mesa
    assert type(plain.food) is mesa.discrete_space.PropertyLayer


def test_pickling_keeps_the_path_and_names_and_reopens(tmp_path):
    path = str(tmp_path / "w.h5")
    # No agents: Mesa 3.5 unpickles each cell with a class of its own and rebuilds the property accessors on
    # the first cell's class only (stock grids too), so agents that read cell.food fail after unpickling.
    model = Farm(agents=0)
    model.grid.create_property_layer("x", 0.0)
    model.grid.x.data = np.arange(30 * 20, dtype=np.float64).reshape(30, 20)
    attached = wm.attach(model.grid, path, model=model, snapshot_every=2)
    for _ in range(3):
        model.step()
    pickled = pickle.dumps(model)
    expected = grids(model)
    with pytest.raises(worldstore.WorldLockedError):  # the original writer still holds the file
        pickle.loads(pickled)
    attached.close()
    model.grid._cells[(0, 0)].food = -1.0  # the detached original goes its own way

    copy = pickle.loads(pickled)
    gc.collect()
    assert_grids_equal(grids(copy), expected, "unpickled")
    food = copy.grid.food
    assert isinstance(food, wm.WorldPropertyLayer) and food.linked
    assert (food.path, food.world_name, copy.grid.x.world_name) == (path, "food", "mesa_x")
    world = food._owner.world
    assert np.shares_memory(food.data, world["food"].numpy())
    # The accessors Mesa rebuilds on unpickling (on the first cell's class) write to the reopened world.
    cell = next(iter(copy.grid._cells.values()))
    cell.food = 123.0
    x, y = cell.coordinate
    assert world["food"][y, x] == 123.0
    copy.step()  # the hook came along, held strongly, with its snapshot_every
    assert world.committed_step == 4 and [entry["step"] for entry in world.history()] == [2, 4]
    food._owner.close()
    with worldstore.open(path) as reopened:
        np.testing.assert_array_equal(reopened["food"][...].T, grids(copy)["food"])


def test_a_world_attached_twice_is_refused(tmp_path):
    one, two = Farm(agents=0), Farm(agents=0)
    attached = wm.attach(one.grid, tmp_path / "w.h5")
    with pytest.raises(wm.MesaLinkError, match="already backs"):
        wm.attach(two.grid, attached.world)
    attached.detach()  # the world stays open, and takes a grid again
    again = wm.attach(two.grid, attached.world, model=two)
    two.grid._cells[(1, 1)].food = 3.0
    assert again.world["food"][1, 1] == 3.0
    again.close()  # detaches: the world belongs to the first attachment, which opened it
    assert not again.world and not attached.world.closed
    attached.close()


def test_a_property_layer_made_by_hand(tmp_path):
    path = _one_layer_world(tmp_path / "w.h5", LayerSpec("food", "resource", "float64"), width=6, height=4)
    model = mesa.Model(rng=1)
    grid = OrthogonalMooreGrid([6, 4], random=model.random)
    with worldstore.open(path, "r+") as world:
        layer = wm.WorldPropertyLayer(world, "food", dimensions=grid.dimensions)
        grid.add_property_layer(layer)
        grid._cells[(5, 3)].food = 2.5
        assert world["food"][3, 5] == 2.5 and layer.data.shape == (6, 4)
        assert "world layer \"food\"" in repr(layer)
        with pytest.raises(wm.MesaLinkError, match=r"\(6, 4\), not \(4, 6\)"):
            wm.WorldPropertyLayer(world, "food", dimensions=(4, 6))


# -- README's example runs ---------------------------------------------------------------------------------

def test_readme_mesa_example_runs(tmp_path):
    text = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    section = text.split("\n## Mesa", 1)[1].split("\n## ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    proc = run_python(f"import os; os.chdir({str(tmp_path)!r})\n" + code, timeout=300)
    assert proc.returncode == 0, proc.stderr


# -- benchmarks/mesa_grid.py runs and reports (behaviour only: no timing asserts) -------------------------------

def test_benchmark_reports_each_model_and_variant(tmp_path):
    import json
    import subprocess
    import sys

    from conftest import python_env
    proc = subprocess.run([sys.executable, os.path.join("benchmarks", "mesa_grid.py"), "--quick", "--json", "--steps", "5",
                           "--rounds", "1", "--dir", str(tmp_path)], cwd=ROOT, env=python_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["benchmark"] == "mesa" and report["quick"] is True and report["rounds"] == 1
    assert report["machine"]["cores"] >= 1 and report["mesa"] == mesa.__version__
    assert [m["model"] for m in report["models"]] == (["sugarscape"] if HAVE_SUGARSCAPE else []) + ["farm"]
    for result in report["models"]:
        assert result["identical_to_stock"] is True and result["steps"] == 5
        assert set(result["ratio_to_stock"]) == set(result["seconds"]) - {"stock Mesa"}
        assert all(value > 0 for value in result["seconds"].values())
    assert os.listdir(tmp_path) == []
