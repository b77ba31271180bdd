"""worldstore as AgentFarm's memmap managers (worldstore.agentfarm), against AgentFarm's documented semantics.

The reference is plain numpy written here, after AgentFarm's own code
(``farm/core/memmap_manager.py``, ``environment_grids.py``, ``temporal_grids.py``):
a deposit is a Python loop over ``(y, x, intensity)`` events that skips those
outside the world, adds (or sets) and clamps to ``clip_max``; decay is
``arr *= gamma`` with no threshold; a window is ``arr[y0:y1, x0:x1]`` padded
with 0, divided by ``normalize_by`` and clipped to [0, 1].
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import worldstore
from worldstore import AgentSlots, agentfarm as af
from worldstore.presets import AGENTFARM_CHANNELS, AGENTFARM_GAMMAS

from conftest import ROOT, needs_torch, torch

H, W = 9, 11
GAMMAS = {"DAMAGE_HEAT": 0.85, "TRAILS": 0.90, "ALLY_SIGNAL": 0.92}
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


# -- the reference: AgentFarm's semantics in plain numpy ------------------------------------------------------
class Reference:
    """AgentFarm's TemporalGridManager and MemmapManager.get_window, as its code does them, in float32."""

    def __init__(self, gammas=GAMMAS):
        self.gammas = dict(gammas)
        self.grids = {name: np.zeros((H, W), dtype=np.float32) for name in gammas}

    def deposit(self, name, events, accumulate=True, clip_max=1.0):
        grid = self.grids[name]
        for y, x, intensity in events:
            if not (0 <= y < H and 0 <= x < W):
                continue  # "Out-of-bounds events are ignored."
            new = float(grid[y, x]) + float(intensity) if accumulate else float(intensity)
            if clip_max is not None and new > clip_max:
                new = float(clip_max)
            grid[y, x] = new

    def apply_decay(self):
        for name, grid in self.grids.items():
            np.multiply(grid, self.gammas[name], out=grid)


def reference_window(grid, y0, y1, x0, x1, normalize_by=None):
    out = np.zeros((y1 - y0, x1 - x0), dtype=np.float32)
    top, bottom, left, right = max(0, y0), min(grid.shape[0], y1), max(0, x0), min(grid.shape[1], x1)
    if bottom > top and right > left:
        out[top - y0:bottom - y0, left - x0:right - x0] = grid[top:bottom, left:right]
    if normalize_by is not None and normalize_by > 0:
        out = np.clip(out / np.float32(normalize_by), 0, 1)
    return out


@pytest.fixture
def config(tmp_path):
    return af.MemmapConfig(directory=str(tmp_path), agents=4, obs_radius=2, use_for_resources=True,
                           use_for_environmental=True, use_for_temporal=True)


# -- temporal channels: clamped deposits, ignored out-of-world events, gamma decay with no threshold --------------
events = st.lists(st.tuples(st.integers(-2, H + 1), st.integers(-2, W + 1),
                            st.sampled_from([0.0, 0.125, 0.25, 0.5, 0.75, 1.0, 1.5])), max_size=12)
actions = st.one_of(st.tuples(st.sampled_from(sorted(GAMMAS)), events, st.booleans()), st.just("decay"))


@SETTINGS
@given(script=st.lists(actions, min_size=1, max_size=25))
def test_temporal_grid_manager_follows_agentfarm(tmp_path, script):
    config = af.MemmapConfig(directory=str(tmp_path), agents=1, use_for_temporal=True)
    grids = af.TemporalGridManager(H, W, memmap_config=config, simulation_id="prop")
    reference = Reference()
    try:
        for action in script:
            if action == "decay":
                grids.apply_decay()
                reference.apply_decay()
            else:
                name, batch, accumulate = action
                grids.deposit(name, batch, accumulate=accumulate)
                reference.deposit(name, batch, accumulate=accumulate)
            for name in GAMMAS:
                # Several events into one cell in one call are summed first, then added: rounding may differ.
                np.testing.assert_allclose(grids.get(name), reference.grids[name], rtol=1e-6, atol=1e-7,
                                           err_msg=name)
                assert grids.get(name).max(initial=0) <= 1.0
    finally:
        grids.close(delete_files=True)


@SETTINGS
@given(script=st.lists(st.one_of(st.tuples(events, st.booleans()), st.just("decay")), min_size=1, max_size=25),
       kind=st.sampled_from(["mapped", "memory", "sparse"]))
def test_world_deposit_options_match_agentfarm_in_every_storage_kind(tmp_path, script, kind):
    """World.deposit(clip=(None, 1), out_of_bounds="ignore") and step() are AgentFarm's deposit and decay."""
    spec = worldstore.WorldSpec(H, W, 0, [worldstore.LayerSpec("T", "temporal", decay=0.85, threshold=0.0,
                                                               storage=kind)])
    reference = Reference({"T": 0.85})
    with worldstore.create(tmp_path / "w.h5", spec, overwrite=True) as world:
        for action in script:
            if action == "decay":
                world.step()
                reference.apply_decay()
                continue
            batch, accumulate = action
            ys, xs, values = (np.array([e[i] for e in batch], dtype=float if i == 2 else np.int64) for i in range(3))
            world.deposit("T", ys, xs, values, mode="add" if accumulate else "set", clip=(None, 1.0),
                          out_of_bounds="ignore")
            reference.deposit("T", batch, accumulate=accumulate)
            np.testing.assert_allclose(world["T"][...], reference.grids["T"], rtol=1e-6, atol=1e-7)


def test_forty_steps_of_agentfarm_decay_bit_for_bit(config):
    """One event per cell and call (AgentFarm's order of additions) and float32 intensities: the grids are equal
    exactly. (AgentFarm adds a float64 intensity in float64 and rounds once; worldstore rounds the intensity to
    the layer's dtype first, which can differ by one unit in the last place.)"""
    grids = af.TemporalGridManager(H, W, memmap_config=config, simulation_id="exact")
    reference = Reference()
    rng = np.random.default_rng(7)
    for _ in range(40):
        for name in GAMMAS:
            cells = rng.choice(H * W, 6, replace=False)
            batch = [(int(c) // W, int(c) % W, float(v)) for c, v in zip(cells, rng.uniform(0, 0.7, 6).astype(np.float32))]
            batch.append((H + 3, -1, 1.0))  # outside: ignored
            grids.deposit(name, batch)
            reference.deposit(name, batch)
        grids.apply_decay()
        reference.apply_decay()
    for name in GAMMAS:
        np.testing.assert_array_equal(grids.get(name), reference.grids[name])
    assert grids.world.current_step == 40 and grids.world.committed_step == 40
    grids.close(delete_files=True)


def test_gammas_come_from_the_observation_config_and_are_persisted(config):
    class ObservationConfig:
        gamma_dmg, gamma_trail, gamma_sig = 0.5, None, 0.25

    observation = ObservationConfig()
    grids = af.TemporalGridManager(H, W, memmap_config=config, simulation_id="gam", observation_config=observation)
    assert [grids.gamma_for(n) for n in ("DAMAGE_HEAT", "TRAILS", "ALLY_SIGNAL")] == [0.5, 0.9, 0.25]
    grids.deposit("DAMAGE_HEAT", [(1, 1, 1.0)])
    grids.apply_decay()
    assert grids.get("DAMAGE_HEAT")[1, 1] == 0.5
    observation.gamma_dmg = 0.0  # AgentFarm allows gamma 0: the cell is gone after one decay
    grids.apply_decay()
    assert grids.get("DAMAGE_HEAT")[1, 1] == 0
    path = grids.world.path
    grids.close()
    with worldstore.open(path) as world:
        assert world["DAMAGE_HEAT"].spec.decay == 0.0 and world["ALLY_SIGNAL"].spec.decay == 0.25
        assert world["KNOWN_EMPTY"].spec.decay == AGENTFARM_GAMMAS["KNOWN_EMPTY"]


def test_a_threshold_of_zero_lets_decaying_cells_reach_zero(tmp_path):
    """Without the flush of subnormals, 1.4e-45 * 0.92 rounds back to 1.4e-45 and nnz never falls."""
    layers = [worldstore.LayerSpec(name, "temporal", dtype, decay=0.92, threshold=0.0, storage=kind)
              for name, dtype, kind in (("D32", "float32", "mapped"), ("S32", "float32", "sparse"),
                                        ("D16", "float16", "memory"), ("D64", "float64", "mapped"))]
    with worldstore.create(tmp_path / "w.h5", worldstore.WorldSpec(4, 4, 0, layers)) as world:
        for layer in layers:
            world.deposit(layer.name, [0, 1, 2], [0, 1, 2], [1.0, 1e-30, -3.0])
        steps = {}
        for step in range(1, 9000):
            world.step()
            for layer in layers:
                if layer.name not in steps and world[layer.name].nnz == 0:
                    steps[layer.name] = step
            if len(steps) == len(layers):
                break
        tiny = {name: np.finfo(dtype).tiny for name, dtype in (("D32", np.float32), ("S32", np.float32),
                                                               ("D16", np.float16), ("D64", np.float64))}
        for name, step in steps.items():  # the step the largest value fell below the dtype's smallest normal
            assert 3.0 * 0.92 ** step < tiny[name] * 1.01 and 3.0 * 0.92 ** (step - 2) > tiny[name] * 0.99
        assert set(steps) == {layer.name for layer in layers}


# -- windows: 0-padded, normalized ---------------------------------------------------------------------------------
@SETTINGS
@given(y=st.integers(-4, H + 3), x=st.integers(-4, W + 3), h=st.integers(0, 7), w=st.integers(0, 7),
       normalize_by=st.sampled_from([None, 0.0, 0.5, 3.0]), seed=st.integers(0, 2**16))
def test_manager_windows_are_zero_padded_and_normalized(tmp_path, y, x, h, w, normalize_by, seed):
    manager = af.MemmapManager(str(tmp_path), simulation_id=f"win{seed}")
    grid = manager.create("resources", (H, W))
    grid[...] = np.random.default_rng(seed).uniform(0, 4, (H, W)).astype(np.float32)
    try:
        got = manager.get_window("resources", y, y + h, x, x + w, normalize_by=normalize_by)
        np.testing.assert_array_equal(got, reference_window(grid, y, y + h, x, x + w, normalize_by))
        assert got.dtype == np.float32 and not np.shares_memory(got, grid)
    finally:
        manager.close_all(delete_files=True)


@SETTINGS
@given(positions=st.lists(st.tuples(st.integers(0, H - 1), st.integers(0, W - 1)), min_size=1, max_size=4),
       max_amount=st.sampled_from([0.5, 2.0, 30.0]), seed=st.integers(0, 2**16))
def test_observation_batches_are_agentfarms_windows(tmp_path, config, positions, max_amount, seed):
    """Every channel padded with 0 (OBSTACLES too), RESOURCES divided by the maximum amount and clipped."""
    config.directory = str(tmp_path)
    sim = af.simulation_world(H, W, memmap_config=config, simulation_id=f"obs{seed}")
    try:
        rng = np.random.default_rng(seed)
        world = sim.world
        for name in ("RESOURCES", "OBSTACLES", "TERRAIN_COST", "VISIBILITY", "TRAILS"):
            world[name].numpy()[...] = rng.uniform(0, 3, (H, W)).astype(np.float32)
        ids = [f"agent_{i}" for i in range(len(positions))]
        for agent in ids:
            sim.add_agent(agent)
        world["SELF_HP"].numpy()[sim.slots.slots_of(ids)] = rng.uniform(0, 1, (len(ids), H, W))
        batch = sim.observe(ids, np.array(positions), max_resource_amount=max_amount, into=True)
        radius = 2
        assert batch.shape == (len(ids), len(AGENTFARM_CHANNELS), 2 * radius + 1, 2 * radius + 1)
        for i, (y, x) in enumerate(positions):
            for c, name in enumerate(AGENTFARM_CHANNELS):
                source = world[name].numpy()
                if source.ndim == 3:
                    source = source[sim.slots[ids[i]]]
                expected = reference_window(source, y - radius, y + radius + 1, x - radius, x + radius + 1,
                                            max_amount if name == "RESOURCES" else None)
                np.testing.assert_array_equal(batch[i, c], expected, err_msg=name)
        np.testing.assert_array_equal(world["OBSERVATION"].numpy()[sim.slots.slots_of(ids)], batch)
    finally:
        sim._release(delete_file=True)


# -- a changing population -----------------------------------------------------------------------------------------
population = st.lists(st.tuples(st.sampled_from(["add", "remove", "observe"]),
                                st.one_of(st.integers(0, 9), st.sampled_from(["a", "b", "c", "d", "e"]))),
                      min_size=1, max_size=40)


@SETTINGS
@given(script=population)
def test_agent_slots_follow_a_changing_population(tmp_path, script):
    """Births, deaths and slot reuse against a dict of who holds what; each agent's rows stay its own."""
    capacity = 4
    with worldstore.create(tmp_path / "w.h5", worldstore.presets.agentfarm(H, W, capacity, obs_radius=1),
                           overwrite=True) as world:
        slots = AgentSlots(capacity)
        held: dict = {}
        marks: dict = {}
        for step, (action, agent) in enumerate(script):
            if action == "add":
                if agent in held or len(held) == capacity:
                    with pytest.raises(worldstore.AgentSlotError):
                        slots.add(agent)
                    continue
                slot = slots.add(agent)
                assert slot == min(set(range(capacity)) - set(held.values()))  # the lowest free slot, reused
                held[agent] = slot
                marks[agent] = float(step + 1)
                world["GOAL"].numpy()[slot] = marks[agent]  # the agent's own layer, written at birth
            elif action == "remove":
                if agent not in held:
                    with pytest.raises(worldstore.UnknownAgentError):
                        slots.remove(agent)
                    continue
                assert slots.remove(agent) == held.pop(agent)
            else:
                agents = sorted(held, key=str)
                if not agents:
                    continue
                positions = np.array([[held[a] % H, 1] for a in agents])
                batch = world.observe(positions, agent_ids=slots.slots_of(agents), into=True)
                goal = AGENTFARM_CHANNELS.index("GOAL")
                for i, a in enumerate(agents):
                    assert batch[i, goal, 1, 1] == marks[a]
                    np.testing.assert_array_equal(world["OBSERVATION"][held[a]], batch[i])
            assert dict(zip(slots.ids, (slots[a] for a in slots.ids))) == held and len(slots) == len(held)


def test_agent_slots_round_trip_and_refuse_clearly():
    slots = AgentSlots(2, ["x", 7])
    assert AgentSlots.from_dict(slots.to_dict()).to_dict() == slots.to_dict() == {
        "capacity": 2, "slots": [["x", 0], [7, 1]]}
    with pytest.raises(worldstore.AgentSlotError, match="all 2 slots are taken"):
        slots.add("y")
    with pytest.raises(worldstore.AgentSlotError, match="str or int"):
        AgentSlots(3).add(1.5)
    with pytest.raises(KeyError, match="'nobody' holds no slot"):
        slots.slots_of(["x", "nobody"])
    assert "7" not in slots and 7 in slots and slots.agent_at(1) == 7


def test_remember_writes_each_agents_own_slot(tmp_path):
    with worldstore.create(tmp_path / "w.h5", worldstore.presets.agentfarm(H, W, 3)) as world:
        slots = AgentSlots(3, ["a", "b"])
        slots.remove("a")
        slots.add("c")  # takes slot 0 again
        world["RESOURCES"].numpy()[...] = 2.0
        world.remember(slots.slots_of(["c"]), [[4, 4]], 1, {"LANDMARKS": "RESOURCES"})
        assert world["LANDMARKS"][0].sum() == 18.0 and world["LANDMARKS"][1].sum() == 0


# -- the managers as AgentFarm uses them ----------------------------------------------------------------------------
def test_managers_of_one_simulation_share_one_world(config, tmp_path):
    environment = af.EnvironmentalGridManager(H, W, memmap_config=config, simulation_id="sim")
    temporal = af.TemporalGridManager(H, W, memmap_config=config, simulation_id="sim")
    resources = af.MemmapManager(config.directory, simulation_id="sim", memmap_config=config)
    grid = resources.create("resources", (H, W), fill=0.5)
    assert environment.world is temporal.world is resources.world
    assert environment.has_memmap and temporal.has_memmap and np.shares_memory(grid, resources.get("resources"))
    assert resources.info("resources").path == os.path.join(str(tmp_path), "agentfarm_sim.h5")
    environment.set("OBSTACLES", np.ones((H, W), dtype=np.float32))
    with pytest.raises(worldstore.LayerShapeError, match="expected shape"):
        environment.set("OBSTACLES", np.ones((2, 2)))
    with pytest.raises(KeyError, match="not registered"):
        environment.get("DAMAGE_HEAT")
    with pytest.raises(worldstore.ManagerError, match="already exists"):
        resources.create("resources", (H, W))
    temporal.deposit("TRAILS", [(0, 0, 0.25)])
    temporal.apply_decay()  # a world step and a commit: every manager's grids at once
    path = temporal.world.path
    for manager in (environment, temporal):
        manager.close()
    assert not resources.world.closed  # still one user
    resources.close_all()
    with worldstore.open(path) as world:
        assert world.committed_step == 1
        assert world["OBSTACLES"][...].sum() == H * W and world["RESOURCES"][0, 0] == 0.5
        assert world["TRAILS"][0, 0] == np.float32(0.25) * np.float32(0.9)


def test_use_for_flags_choose_mapped_or_in_ram_storage(tmp_path):
    config = af.MemmapConfig(directory=str(tmp_path), agents=1, use_for_temporal=True, delete_on_close=True)
    environment = af.EnvironmentalGridManager(H, W, memmap_config=config)
    assert not environment.has_memmap and environment.world["TRAILS"].storage == "mapped"
    path = environment.world.path
    assert os.path.basename(path) == f"agentfarm_p{os.getpid()}.h5"
    environment.close()  # delete_on_close
    assert not os.path.exists(path)


def test_a_second_process_watches_the_run(config):
    """The world is written in SWMR mode: a reader opens it while the managers run, and sees each commit."""
    temporal = af.TemporalGridManager(H, W, memmap_config=config, simulation_id="watched")
    temporal.deposit("DAMAGE_HEAT", [(2, 3, 1.0)])
    temporal.apply_decay()
    reader = textwrap.dedent(f"""
        import worldstore
        with worldstore.open({temporal.world.path!r}) as world:
            print(world.refresh(), float(world["DAMAGE_HEAT"][2, 3]))
    """)
    proc = subprocess.run([sys.executable, "-c", reader], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["1", str(float(np.float32(0.85)))]
    temporal.close(delete_files=True)


@needs_torch
def test_bfloat16_observations(config):
    sim = af.simulation_world(H, W, memmap_config=config, simulation_id="bf16")
    try:
        sim.world["RESOURCES"].numpy()[...] = np.linspace(0, 3, H * W, dtype=np.float32).reshape(H, W)
        sim.add_agent("a")
        batch = sim.observe(["a"], [[4, 5]], max_resource_amount=2.0, dtype=torch.bfloat16)
        assert batch.dtype == torch.bfloat16 and tuple(batch.shape) == (1, 13, 5, 5)
        as_float = sim.observe(["a"], [[4, 5]], max_resource_amount=2.0)
        assert torch.equal(batch, torch.from_numpy(as_float).to(torch.bfloat16))
    finally:
        sim._release(delete_file=True)


def test_benchmark_runs_quick(tmp_path):
    """benchmarks/agentfarm.py --quick --json runs and reports (behaviour only: no timing asserts)."""
    import json
    proc = subprocess.run([sys.executable, os.path.join("benchmarks", "agentfarm.py"), "--quick", "--json",
                           "--rounds", "1", "--dir", str(tmp_path)], capture_output=True, text=True, cwd=ROOT,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["benchmark"] == "agentfarm" and report["identical"] is True
    assert set(report["ms_per_step"]) >= {"AgentFarm numpy.memmap managers", "worldstore.agentfarm managers"}
