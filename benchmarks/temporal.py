"""Temporal channels: does a step cost what the active cells cost, not what the grid costs?

A temporal layer (DAMAGE_HEAT, TRAILS, ...) takes deposits every step and
decays. Stored densely, every step touches all H x W cells; stored sparse
(COO), a step should cost O(nnz + deposits). This script measures, in one run,
on one 8192 x 8192 float32 layer (256 MiB dense) at densities of 0.1%, 1% and
10%:

- the time of one simulation step (10,000 random ``add`` deposits, then
  ``world.step()``, which decays: v *= 0.999, |v| < 1e-3 -> 0) for each
  storage kind: ``sparse``, dense ``mapped``, dense ``memory``, and
  ``auto`` (mapped with ``switch_density = worldstore.DEFAULT_SWITCH_DENSITY``,
  which picks its form from the density at each step);
- the time to persist the sparse state (``world.flush()``, which writes the
  COO datasets), at each density, and on a 4x larger world (16384 x 16384)
  holding the same number of cells as the 1% case: persisting must follow
  nnz, not H x W.

Each layer is prefilled to its density with values in [1, 2) (far above the
threshold, and decay 0.999 keeps them there, so the density holds during the
run). Each round times one step of every kind on the same deposits, the order
of the kinds rotating between rounds; two untimed warm-up steps come first
(page faults, and ``auto`` settling into its form). Figures are medians over
rounds. Targets: dense mapped <= 1.10x dense memory; at 1% the sparse step >=
20x faster than the dense memory step; at 10% ``auto`` <= 1.2x the better of
sparse and dense.

    python benchmarks/temporal.py             # 8192 x 8192, about a minute
    python benchmarks/temporal.py --quick     # 1024 x 1024, seconds (CI smoke test)
    python benchmarks/temporal.py --json      # one JSON object on stdout
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from layers import benchmark_parser, machine_info  # noqa: E402  (shared with the sibling benchmark)

import worldstore  # noqa: E402

KINDS = ("sparse", "mapped", "memory", "auto")
DENSITIES = (0.001, 0.01, 0.1)
EVENTS = 10_000
DECAY = 0.999
THRESHOLD = 1e-3
MAPPED_TARGET = 1.10
SPARSE_SPEEDUP_TARGET = 20.0
AUTO_TARGET = 1.2

FULL = {"shape": (8192, 8192), "control": (16384, 16384), "rounds": 9, "persist_rounds": 5}
QUICK = {"shape": (1024, 1024), "control": (2048, 2048), "rounds": 3, "persist_rounds": 2}


def layer_spec(kind: str) -> worldstore.LayerSpec:
    storage = "mapped" if kind == "auto" else kind
    switch = worldstore.DEFAULT_SWITCH_DENSITY if kind == "auto" else None
    return worldstore.LayerSpec("T", "temporal", "float32", decay=DECAY, threshold=THRESHOLD,
                                storage=storage, switch_density=switch)


def prefill(world: worldstore.World, density: float, rng: np.random.Generator) -> None:
    height, width = world.shape
    count = int(density * height * width)
    cells = rng.choice(height * width, size=count, replace=False)
    world.deposit("T", cells // width, cells % width, rng.uniform(1, 2, count).astype(np.float32))


def one_step(world: worldstore.World, ys: np.ndarray, xs: np.ndarray, values: np.ndarray) -> float:
    started = time.perf_counter()
    world.deposit("T", ys, xs, values)
    world.step()
    return time.perf_counter() - started


def step_benchmark(directory: str, shape: tuple[int, int], density: float, rounds: int, seed: int,
                   progress) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    height, width = shape
    worlds = {}
    try:
        for kind in KINDS:
            world = worldstore.create(os.path.join(directory, f"{kind}.h5"),
                                      worldstore.WorldSpec(height, width, 0, [layer_spec(kind)]))
            worlds[kind] = world
            prefill(world, density, np.random.default_rng(seed))  # the same cells in every kind
        events = [(rng.integers(0, height, EVENTS), rng.integers(0, width, EVENTS),
                   rng.uniform(1, 2, EVENTS).astype(np.float32)) for _ in range(rounds + 2)]
        for ys, xs, values in events[:2]:  # warm-up
            for world in worlds.values():
                one_step(world, ys, xs, values)
        times: dict[str, list[float]] = {kind: [] for kind in KINDS}
        for index, (ys, xs, values) in enumerate(events[2:]):
            order = KINDS[index % len(KINDS):] + KINDS[:index % len(KINDS)]
            for kind in order:
                times[kind].append(one_step(worlds[kind], ys, xs, values))
        reference = worlds["memory"]["T"].numpy()
        for kind in ("sparse", "mapped", "auto"):  # every kind computed the same layer
            if not np.array_equal(worlds[kind]["T"].numpy(), reference):
                raise AssertionError(f"{kind} disagrees with memory at density {density}")
        result = {
            "density": density,
            "final_density": worlds["sparse"]["T"].density,
            "nnz": worlds["sparse"]["T"].nnz,
            "auto_kind": worlds["auto"]["T"].storage,
            "step_s": {kind: statistics.median(values) for kind, values in times.items()},
            "step_round_s": times,
        }
    finally:
        for world in worlds.values():
            world.close()
        for kind in KINDS:
            path = os.path.join(directory, f"{kind}.h5")
            if os.path.exists(path):
                os.unlink(path)
    step = result["step_s"]
    best = min(step["sparse"], step["memory"], step["mapped"])
    result["ratios"] = {
        "mapped_over_memory": step["mapped"] / step["memory"],
        "sparse_speedup_over_memory": step["memory"] / step["sparse"],
        "auto_over_best": step["auto"] / best,
    }
    progress(f"  density {density:.1%}: sparse {step['sparse'] * 1e3:.2f} ms, memory {step['memory'] * 1e3:.2f} ms")
    return result


def persist_benchmark(directory: str, shape: tuple[int, int], nnz: int, rounds: int, seed: int) -> dict[str, Any]:
    """Median time of world.flush() of a sparse layer holding ``nnz`` cells."""
    height, width = shape
    path = os.path.join(directory, "persist.h5")
    rng = np.random.default_rng(seed)
    try:
        with worldstore.create(path, worldstore.WorldSpec(height, width, 0, [layer_spec("sparse")])) as world:
            prefill(world, nnz / (height * width), rng)
            times = []
            for _ in range(rounds):
                world.deposit("T", rng.integers(0, height, 100), rng.integers(0, width, 100), 1.0)
                started = time.perf_counter()
                world.flush()
                times.append(time.perf_counter() - started)
            stored = world["T"].nnz
    finally:
        if os.path.exists(path):
            os.unlink(path)
    return {"height": height, "width": width, "nnz": stored, "flush_s": statistics.median(times)}


def print_report(report: dict[str, Any]) -> None:
    machine = report["machine"]
    height, width = report["world"]["height"], report["world"]["width"]
    print("worldstore benchmark: temporal layers, dense vs sparse (benchmarks/temporal.py)")
    print(f"machine   {machine.get('cpu_model')}, {machine.get('cores')} cores, "
          f"{machine.get('ram_bytes', 0) / 2**30:.1f} GiB RAM, Linux {machine.get('kernel')}")
    print(f"world     {height} x {width} float32 ({height * width * 4 / 2**20:.0f} MiB dense); each step: "
          f"{EVENTS:,} random add-deposits, then step() (decay {DECAY}, threshold {THRESHOLD})")
    print(f"rounds    {report['rounds']} timed after 2 warm-up steps; medians; kinds rotate within a round; "
          f"auto = mapped with switch_density {worldstore.DEFAULT_SWITCH_DENSITY}")
    print()
    print(f"{'density':>8} {'nnz':>10}  {'sparse':>9} {'mapped':>9} {'memory':>9} {'auto':>9} {'(auto is)':>9}"
          f"  {'mapped/mem':>10} {'sparse x':>9} {'auto/best':>9}")
    for row in report["densities"]:
        step, ratios = row["step_s"], row["ratios"]
        print(f"{row['density']:>8.1%} {row['nnz']:>10,}  " + " ".join(f"{step[k] * 1e3:>7.2f}ms" for k in KINDS)
              + f" {row['auto_kind']:>9}  {ratios['mapped_over_memory']:>10.3f} "
              f"{ratios['sparse_speedup_over_memory']:>8.1f}x {ratios['auto_over_best']:>9.3f}")
    print()
    print("persisting the sparse state (world.flush(): the COO datasets):")
    for row in report["persist"]:
        print(f"  {row['height']:>6} x {row['width']:<6} nnz {row['nnz']:>10,}  {row['flush_s'] * 1e3:8.2f} ms")
    control = report["persist_control"]
    print(f"  control: same nnz on a {control['world_cells_ratio']:.0f}x larger world: "
          f"{control['flush_ratio']:.2f}x the time")
    print()
    verdict = report["pass"]
    print(f"dense mapped <= {MAPPED_TARGET}x dense memory: {'yes' if verdict['mapped_within_target'] else 'NO'};  "
          f"sparse >= {SPARSE_SPEEDUP_TARGET:.0f}x faster at 1%: {'yes' if verdict['sparse_speedup_at_1pct'] else 'NO'};  "
          f"auto <= {AUTO_TARGET}x best at 10%: {'yes' if verdict['auto_at_10pct'] else 'NO'}")
    print(f"total run time {report['wall_s']:.0f} s")


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser(__doc__, "a 1024 x 1024 world and few rounds (seconds; for CI)",
                              "timed rounds per density (default 9, --quick 3)")
    args = parser.parse_args(argv)
    config = QUICK if args.quick else FULL
    rounds = config["rounds"] if args.rounds is None else args.rounds
    if rounds < 1:
        parser.error(f"--rounds must be >= 1, got {rounds}")
    if not os.path.isdir(args.dir):
        parser.error(f"--dir {args.dir!r} is not a directory")
    height, width = config["shape"]
    need = (len(KINDS) * height * width + config["control"][0] * config["control"][1]) * 4 + (64 << 20)
    free = shutil.disk_usage(args.dir).free
    if free < need:
        print(f"error: {args.dir} has {free / 2**30:.1f} GiB free; the benchmark needs {need / 2**30:.1f} GiB. "
              "Pass --dir elsewhere or use --quick.", file=sys.stderr)
        return 2

    def progress(message: str) -> None:
        if not args.json:
            print(message, file=sys.stderr, flush=True)

    started = time.perf_counter()
    directory = tempfile.mkdtemp(prefix="worldstore-temporal-", dir=args.dir)
    try:
        machine = machine_info(directory)
        progress(f"timing steps at densities {', '.join(f'{d:.1%}' for d in DENSITIES)} ...")
        rows = [step_benchmark(directory, (height, width), density, rounds, index, progress)
                for index, density in enumerate(DENSITIES)]
        progress("timing persistence ...")
        persist = [persist_benchmark(directory, (height, width), row["nnz"], config["persist_rounds"], 7)
                   for row in rows]
        one_percent = rows[DENSITIES.index(0.01)]["nnz"]
        control = persist_benchmark(directory, config["control"], one_percent, config["persist_rounds"], 7)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    base = persist[DENSITIES.index(0.01)]
    by_density = {row["density"]: row for row in rows}
    report = {
        "benchmark": "worldstore temporal layers, dense vs sparse",
        "quick": bool(args.quick),
        "machine": machine,
        "world": {"height": height, "width": width, "dtype": "float32"},
        "events_per_step": EVENTS, "decay": DECAY, "threshold": THRESHOLD,
        "switch_density": worldstore.DEFAULT_SWITCH_DENSITY,
        "rounds": rounds,
        "densities": rows,
        "persist": persist + [control],
        "persist_control": {
            "world_cells_ratio": (control["height"] * control["width"]) / (height * width),
            "flush_ratio": control["flush_s"] / base["flush_s"],
        },
        "targets": {"mapped_over_memory": MAPPED_TARGET, "sparse_speedup_at_1pct": SPARSE_SPEEDUP_TARGET,
                    "auto_over_best_at_10pct": AUTO_TARGET},
        "pass": {
            "mapped_within_target": all(r["ratios"]["mapped_over_memory"] <= MAPPED_TARGET for r in rows),
            "sparse_speedup_at_1pct": by_density[0.01]["ratios"]["sparse_speedup_over_memory"]
            >= SPARSE_SPEEDUP_TARGET,
            "auto_at_10pct": by_density[0.1]["ratios"]["auto_over_best"] <= AUTO_TARGET,
        },
        "wall_s": time.perf_counter() - started,
    }
    if args.json:
        print(json.dumps(report))
    else:
        print_report(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
