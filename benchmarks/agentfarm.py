"""Cost per step of AgentFarm's grids kept by worldstore.agentfarm, against AgentFarm's plain numpy.memmap managers.

AgentFarm (GitHub Dooders/AgentFarm, not on PyPI) keeps its grids in
numpy.memmap files: one .dat file per grid, ``flush()`` (msync) after each
deposit and each decay. This script's baseline is that, written here in plain
numpy after AgentFarm's memmap_manager.py / temporal_grids.py: deposits a
Python loop over (y, x, intensity) events (skip outside, add, clamp to 1),
decay ``np.multiply(arr, gamma, out=arr)``, windows ``arr[y0:y1, x0:x1]``
padded with 0 (resources divided by the maximum amount and clipped).

One step, for every variant: deposit events into DAMAGE_HEAT, TRAILS and
ALLY_SIGNAL; read each agent's windows of the 7 world channels (RESOURCES
normalized, OBSTACLES, TERRAIN_COST, VISIBILITY and the three temporal ones);
decay the temporal channels. Variants:

  AgentFarm numpy.memmap managers   the baseline (flush after each deposit and decay, as AgentFarm's code)
  numpy.memmap, never flushed       the same without the flushes (nothing reaches the file until the
                                    kernel writes it back: what the grids cost without persistence)
  worldstore.agentfarm managers     the same calls on worldstore's managers (one world file;
                                    apply_decay is a world step and a commit)
  worldstore, batched observe       deposits through the managers, every window in one
                                    World.observe call (normalize/clip), then the decay

Rounds run every variant once, in a rotating order, from the same seed;
figures are medians of per-round times and of per-round ratios to the
baseline. After each round the temporal grids and the windows of every
variant must equal the baseline's (the report says so).

    python benchmarks/agentfarm.py            # 200 x 200, 100 agents, 100 steps, 5 rounds
    python benchmarks/agentfarm.py --quick    # 50 x 50, 10 agents, 10 steps, 2 rounds (seconds; for CI)
    python benchmarks/agentfarm.py --json
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from layers import benchmark_parser, emit, machine_info, parse_benchmark_args, progress_printer  # noqa: E402

from worldstore import agentfarm as af  # noqa: E402

FULL = {"rounds": 5, "steps": 100, "size": (200, 200), "agents": 100, "events": 200}
QUICK = {"rounds": 2, "steps": 10, "size": (50, 50), "agents": 10, "events": 20}
SEED = 42
RADIUS = 6
MAX_RESOURCE = 30.0
TEMPORAL = {"DAMAGE_HEAT": 0.85, "TRAILS": 0.90, "ALLY_SIGNAL": 0.92}
WORLD = ("RESOURCES", "OBSTACLES", "TERRAIN_COST", "VISIBILITY")
CHANNELS = WORLD + tuple(TEMPORAL)
BASELINE = "AgentFarm numpy.memmap managers"
UNFLUSHED = "numpy.memmap, never flushed"
BATCHED = "worldstore, batched observe"
VARIANTS = (BASELINE, UNFLUSHED, "worldstore.agentfarm managers", BATCHED)


class MemmapGrids:
    """The baseline: AgentFarm's numpy.memmap managers, reduced to what a step calls."""

    def __init__(self, directory: str, shape: tuple[int, int], flush: bool = True):
        self.shape = shape
        self.flush = flush
        self.memmaps = {name: np.memmap(os.path.join(directory, f"{name.lower()}_p{os.getpid()}.dat"),
                                        dtype=np.float32, mode="w+", shape=shape) for name in CHANNELS}
        self.views = {name: np.asarray(array) for name, array in self.memmaps.items()}  # as AgentFarm does

    def get(self, name: str) -> np.ndarray:
        return self.views[name]

    def deposit(self, name: str, events, clip_max: float = 1.0) -> None:
        array, (height, width) = self.views[name], self.shape
        for y, x, intensity in events:
            y, x = int(y), int(x)
            if not (0 <= y < height and 0 <= x < width):
                continue
            new = float(array[y, x]) + float(intensity)
            array[y, x] = clip_max if new > clip_max else new
        if self.flush:
            self.memmaps[name].flush()

    def get_window(self, name: str, y0: int, y1: int, x0: int, x1: int, normalize_by: float | None = None):
        array, (height, width) = self.views[name], self.shape
        if 0 <= y0 and y1 <= height and 0 <= x0 and x1 <= width:
            out = np.array(array[y0:y1, x0:x1], dtype=np.float32, copy=True)
        else:
            out = np.zeros((y1 - y0, x1 - x0), dtype=np.float32)
            top, bottom, left, right = max(0, y0), min(height, y1), max(0, x0), min(width, x1)
            out[top - y0:bottom - y0, left - x0:right - x0] = array[top:bottom, left:right]
        if normalize_by:
            np.divide(out, normalize_by, out=out)
            np.clip(out, 0.0, 1.0, out=out)
        return out

    def apply_decay(self) -> None:
        for name, gamma in TEMPORAL.items():
            np.multiply(self.views[name], gamma, out=self.views[name])
            if self.flush:
                self.memmaps[name].flush()

    def close(self) -> None:
        for array in self.memmaps.values():
            array.flush()
            os.unlink(array.filename)
        self.memmaps.clear()


class WorldstoreGrids:
    """The same calls on worldstore.agentfarm's managers, over one world file."""

    def __init__(self, directory: str, shape: tuple[int, int], agents: int):
        config = af.MemmapConfig(directory=directory, agents=agents, obs_radius=RADIUS, use_for_resources=True,
                                 use_for_environmental=True, use_for_temporal=True, delete_on_close=True)
        self.resources = af.MemmapManager(directory, simulation_id="bench", memmap_config=config)
        self.resources.create("resources", shape)
        self.environment = af.EnvironmentalGridManager(*shape, memmap_config=config, simulation_id="bench")
        self.temporal = af.TemporalGridManager(*shape, memmap_config=config, simulation_id="bench")
        self.by_name = {"RESOURCES": self.resources, **{n: self.environment for n in WORLD[1:]},
                        **{n: self.temporal for n in TEMPORAL}}

    def get(self, name: str) -> np.ndarray:
        return self.by_name[name].get(name.lower() if name == "RESOURCES" else name)

    def deposit(self, name: str, events) -> None:
        self.temporal.deposit(name, events)

    def get_window(self, name: str, y0: int, y1: int, x0: int, x1: int, normalize_by: float | None = None):
        manager = self.by_name[name]
        if manager is self.resources:
            return manager.get_window("resources", y0, y1, x0, x1, normalize_by=normalize_by)
        return manager.get_window(name, y0, y1, x0, x1)

    def apply_decay(self) -> None:
        self.temporal.apply_decay()

    def close(self) -> None:
        self.environment.close()
        self.temporal.close()
        self.resources.close_all()  # the last user: the world closes, and delete_on_close removes it


def make_world(rng: np.random.Generator, shape: tuple[int, int]) -> dict[str, np.ndarray]:
    return {"RESOURCES": rng.uniform(0, MAX_RESOURCE * 1.2, shape).astype(np.float32),
            "OBSTACLES": (rng.random(shape) < 0.1).astype(np.float32),
            "TERRAIN_COST": rng.random(shape, dtype=np.float32),
            "VISIBILITY": np.ones(shape, dtype=np.float32)}


def make_steps(rng: np.random.Generator, config: dict[str, Any]) -> list[dict[str, Any]]:
    height, width = config["size"]
    steps = []
    count = config["events"]

    def events() -> list[tuple[int, int, float]]:
        # Distinct cells in one call (some outside the world) and float32 intensities: AgentFarm's loop and
        # worldstore's combined deposit then round alike, so the grids must be equal bit for bit.
        cells = rng.choice((height + 4) * (width + 4), count, replace=False)
        ys, xs = cells // (width + 4) - 2, cells % (width + 4) - 2
        return list(zip(ys.tolist(), xs.tolist(), rng.uniform(0, 0.6, count).astype(np.float32).tolist()))

    for _ in range(config["steps"]):
        events_of = {name: events() for name in TEMPORAL}
        positions = np.stack([rng.integers(0, height, config["agents"]), rng.integers(0, width, config["agents"])], 1)
        steps.append({"events": events_of, "positions": positions})
    return steps


def run_variant(variant: str, directory: str, config: dict[str, Any], world: dict[str, np.ndarray],
                steps: list[dict[str, Any]]) -> tuple[float, dict[str, np.ndarray], np.ndarray]:
    """``(step seconds, final temporal grids, last step's windows (N, 7, S, S))``."""
    shape = config["size"]
    if variant in (BASELINE, UNFLUSHED):
        grids: Any = MemmapGrids(directory, shape, flush=variant == BASELINE)
    else:
        grids = WorldstoreGrids(directory, shape, config["agents"])
    for name, values in world.items():
        grids.get(name)[...] = values
    side = 2 * RADIUS + 1
    windows = np.empty((config["agents"], len(CHANNELS), side, side), dtype=np.float32)
    batched = variant == BATCHED
    started = time.perf_counter()
    for step in steps:
        for name, events in step["events"].items():
            grids.deposit(name, events)
        if batched:
            windows = grids.temporal.simulation.world.observe(
                step["positions"], RADIUS, list(CHANNELS), normalize={"RESOURCES": MAX_RESOURCE},
                clip={"RESOURCES": (0.0, 1.0)})
        else:
            for i, (y, x) in enumerate(step["positions"].tolist()):
                for c, name in enumerate(CHANNELS):
                    windows[i, c] = grids.get_window(name, y - RADIUS, y + RADIUS + 1, x - RADIUS, x + RADIUS + 1,
                                                     MAX_RESOURCE if name == "RESOURCES" else None)
        grids.apply_decay()
    seconds = time.perf_counter() - started
    final = {name: np.array(grids.get(name)) for name in TEMPORAL}
    grids.close()
    return seconds, final, np.array(windows)


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser(__doc__, "50 x 50, 10 agents, 10 steps, 2 rounds (seconds; for CI)",
                              "timed rounds (default 5, --quick 2)")
    args, config, rounds = parse_benchmark_args(parser, argv, FULL, QUICK)
    progress = progress_printer(args.json)
    started = time.perf_counter()
    rng = np.random.default_rng(SEED)
    world = make_world(rng, config["size"])
    steps = make_steps(rng, config)
    seconds: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    identical = True
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="worldstore-bench-agentfarm-") as directory:
        machine = machine_info(directory)
        for round_ in range(rounds):
            order = VARIANTS[round_ % len(VARIANTS):] + VARIANTS[:round_ % len(VARIANTS)]
            results = {}
            for variant in order:
                results[variant] = run_variant(variant, directory, config, world, steps)
                seconds[variant].append(results[variant][0])
            _, reference_grids, reference_windows = results[BASELINE]
            identical = identical and all(
                all(np.array_equal(grids[name], reference_grids[name]) for name in TEMPORAL)
                and np.array_equal(windows, reference_windows) for _, grids, windows in results.values())
            progress(f"round {round_ + 1}/{rounds} done")
    base = seconds[BASELINE]
    report = {
        "benchmark": "agentfarm", "quick": args.quick, "rounds": rounds, "machine": machine,
        "height": config["size"][0], "width": config["size"][1], "agents": config["agents"],
        "events_per_channel": config["events"], "steps": config["steps"], "radius": RADIUS,
        "seconds": {v: statistics.median(s) for v, s in seconds.items()},
        "ms_per_step": {v: 1e3 * statistics.median(s) / config["steps"] for v, s in seconds.items()},
        "ratio_to_baseline": {v: statistics.median(o / b for o, b in zip(seconds[v], base)) for v in VARIANTS[1:]},
        "identical": identical,
    }
    return emit(report, args.json, started, print_report)


def print_report(report: dict[str, Any]) -> None:
    print("AgentFarm's grids: numpy.memmap managers and worldstore.agentfarm (benchmarks/agentfarm.py)")
    machine = report["machine"]
    print(f"machine   {machine['cpu_model']}, {machine['cores']} cores, {machine['filesystem']}; Python "
          f"{machine['python']}, worldstore {machine['worldstore']}")
    print(f"world     {report['height']} x {report['width']}, {report['agents']} agents, {report['events_per_channel']} "
          f"events per temporal channel per step, radius {report['radius']}, {report['steps']} steps")
    print(f"rounds    {report['rounds']} (medians of paired rounds){'; --quick' if report['quick'] else ''}")
    for variant, ms in report["ms_per_step"].items():
        line = f"  {variant:36} {ms:8.3f} ms/step"
        if variant in report["ratio_to_baseline"]:
            line += f"  {report['ratio_to_baseline'][variant]:5.2f}x the baseline"
        print(line)
    print(f"  temporal grids and windows identical to the baseline's: {'yes' if report['identical'] else 'NO'}")


if __name__ == "__main__":
    sys.exit(main())
