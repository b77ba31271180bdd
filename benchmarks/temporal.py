"""Temporal channels: does a step cost what the active cells cost, not what the grid costs?

A temporal layer (DAMAGE_HEAT, TRAILS, ...) takes deposits every step and
decays. Stored densely, every step touches all H x W cells; stored sparse
(sorted cells and values, persisted as COO), a step should cost
O(nnz + deposits) and persisting it O(nnz). This script measures both claims,
and whether automatic switching (``switch_density``) picks the faster form,
in one run on one 8192 x 8192 float32 layer (256 MiB dense) at densities of
0.1%, 1% and 10%.

Steps. For each density, four worlds hold the same layer in the four ways a
simulation can: ``sparse``, dense ``mapped``, dense ``memory``, and ``auto``
(``mapped`` with ``switch_density = worldstore.DEFAULT_SWITCH_DENSITY``, which
changes form at each ``step()`` from the density it finds). One timed step is
what a simulation does each tick: 10,000 random ``add`` deposits
(``world.deposit``), then ``world.step()`` (decay: v *= 0.999, |v| < 1e-3 ->
0, then the automatic switch).

The density holds: it is a steady state, as in a long-running simulation. A
deposit's value is chosen so that it decays below the threshold after a
lifetime drawn uniformly from [L/2, 3L/2) steps, where L = density * H * W /
10,000; the worlds are prefilled with density * H * W random cells whose
values give remaining lifetimes uniform in [0, L). So about 10,000 cells fall
below the threshold each step, as many as the deposits add: sparse storage
drops cells every step and merges its runs at the pace a simulation would make
it. The table shows the density when timing starts and when it ends.

Every round gives every kind the same deposits, and the order of the kinds
rotates from round to round; two untimed warm-up steps come first (first-touch
page faults, and ``auto`` settling into its form), the garbage collector is off
while a step is timed, and every timed step starts with a cold cache
(``evict_caches``). After the run, all four kinds must hold the same values.

Figures: per kind, the median and mean time of a step; per round, the ratios
dense mapped / dense memory, dense memory / sparse (the speedup of sparse)
and auto / the fastest of sparse, mapped and memory, each reported as the
median of its per-round ratios (paired within a round, so slow drifts of the
machine cancel). Sparse storage merges its recent runs into its main arrays
once every many steps (at 1%, about every 30): the median shows the usual
step, the mean what a long run pays per step, so the amortized speedup (mean
memory step / mean sparse step) is reported too, over 100 rounds.

Persisting. ``world.flush()`` of the sparse world, timed right after a step
(deposits + ``step()``), median of a few: it must grow with nnz, not with
H x W. At each density, and as a control, on a 4x larger world
(16384 x 16384) holding as many cells as the 1% case.

Targets: dense mapped <= 1.10x dense memory (every density); sparse >= 20x
faster than dense memory at 1%, both per step (median of paired ratios) and
amortized (ratio of means); auto <= 1.2x the fastest kind at 10%.

Run from the repository root:

    python benchmarks/temporal.py             # 8192 x 8192, about a minute
    python benchmarks/temporal.py --quick     # 1024 x 1024, seconds (a smoke test for CI)
    python benchmarks/temporal.py --json      # one JSON object on stdout

``--quick`` scales the deposits per step with the world (156 instead of
10,000 on a 64x smaller world) so the densities drift as in the full run.
Needs about 2.1 GiB of free disk (4 worlds of 256 MiB, the 1 GiB control) in
a temporary directory under ``--dir``, removed at the end, and about 2 GiB of
available RAM.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# Shared with the sibling benchmark: the option parser, the machine description,
# available memory, and a step timer with the garbage collector off.
from layers import (benchmark_parser, emit, l3_cache, machine_info, parse_benchmark_args,  # noqa: E402
                    progress_printer, room_error, timed)

import worldstore  # noqa: E402

KINDS = ("sparse", "mapped", "memory", "auto")
DENSITIES = (0.001, 0.01, 0.1)
LAYER = "T"
DECAY = 0.999
THRESHOLD = 1e-3
WARMUP_STEPS = 2
#: The library's recommended switch density (benchmarks predating it used 0.05).
SWITCH_DENSITY = getattr(worldstore, "DEFAULT_SWITCH_DENSITY", 0.05)

MAPPED_TARGET = 1.10
SPARSE_SPEEDUP_TARGET = 20.0
AUTO_TARGET = 1.2

#: 100 rounds: at 1% sparse storage merges its runs into main about every 67 steps, and the
#: amortized figure must include that.
FULL = {"shape": (8192, 8192), "control": (16384, 16384), "events": 10_000, "rounds": 100, "persist_rounds": 5}
#: Deposits scale with the world's cells (10,000 * 1024^2 / 8192^2 = 156).
QUICK = {"shape": (1024, 1024), "control": (2048, 2048), "events": 156, "rounds": 3, "persist_rounds": 2}

RATIOS = {
    "mapped_over_memory": "dense mapped / dense memory",
    "sparse_speedup_over_memory": "dense memory / sparse",
    "auto_over_best": "auto / fastest of sparse, mapped, memory",
}


# -- the worlds -------------------------------------------------------------------
def layer_spec(kind: str) -> worldstore.LayerSpec:
    """The temporal layer as ``kind`` stores it; ``auto`` is mapped that switches by itself."""
    storage = "mapped" if kind == "auto" else kind
    switch = SWITCH_DENSITY if kind == "auto" else None
    return worldstore.LayerSpec(LAYER, "temporal", "float32", decay=DECAY, threshold=THRESHOLD,
                                storage=storage, switch_density=switch)


def create_world(directory: str, name: str, shape: tuple[int, int], kind: str) -> worldstore.World:
    return worldstore.create(os.path.join(directory, f"{name}.h5"),
                             worldstore.WorldSpec(shape[0], shape[1], 0, [layer_spec(kind)]))


def lifetime_steps(shape: tuple[int, int], density: float, events: int) -> float:
    """Mean lifetime of a deposit that holds ``density`` with ``events`` deposits a step."""
    return density * shape[0] * shape[1] / events


def value_for(lifetime: np.ndarray) -> np.ndarray:
    """Values that decay below the threshold after ``lifetime`` steps."""
    return (THRESHOLD / DECAY ** lifetime).astype(np.float32)


def prefill(world: worldstore.World, count: int, seed: int, lifetime: float) -> None:
    """Deposit ``count`` distinct random cells with remaining lifetimes uniform in [0, lifetime)."""
    rng = np.random.default_rng(seed)
    height, width = world.shape
    cells = rng.choice(height * width, size=count, replace=False)
    world.deposit(LAYER, cells // width, cells % width, value_for(rng.uniform(0, lifetime, count)))


class Events:
    """One step's deposits: ``events`` random cells, lifetimes uniform in [lifetime/2, 3 lifetime/2)."""

    def __init__(self, rng: np.random.Generator, shape: tuple[int, int], events: int, lifetime: float):
        self.ys = rng.integers(0, shape[0], events)
        self.xs = rng.integers(0, shape[1], events)
        self.values = value_for(rng.uniform(lifetime / 2, 3 * lifetime / 2, events))

    def step(self, world: worldstore.World) -> None:
        """What a simulation does each tick: deposit, then decay."""
        world.deposit(LAYER, self.ys, self.xs, self.values)
        world.step()


def remove_worlds(worlds: dict[str, worldstore.World]) -> None:
    for world in worlds.values():
        try:
            world.close()
        finally:
            if os.path.exists(world.path):
                os.unlink(world.path)


# -- steps --------------------------------------------------------------------------
_EVICT = np.zeros(0, dtype=np.uint8)


def evict_caches() -> None:
    """Write over twice the last-level cache, so every timed step starts with a cold cache.

    Otherwise a kind timed right after a dense one (which streams 256 MiB
    through the cache) would start colder than one timed after a sparse one,
    and the order of the kinds would show in their ratios. In a simulation the
    rest of a tick (observations, other layers) evicts a layer's state too.
    """
    global _EVICT
    if not len(_EVICT):
        _EVICT = np.zeros(max(64 << 20, 2 * (l3_cache()[0] or 0)), dtype=np.uint8)
    _EVICT += 1


def paired_ratios(times: dict[str, list[float]]) -> dict[str, list[float]]:
    """Per-round ratios: within a round every kind ran the same deposits."""
    rounds = range(len(times["sparse"]))
    return {
        "mapped_over_memory": [times["mapped"][i] / times["memory"][i] for i in rounds],
        "sparse_speedup_over_memory": [times["memory"][i] / times["sparse"][i] for i in rounds],
        "auto_over_best": [times["auto"][i] / min(times[k][i] for k in ("sparse", "mapped", "memory"))
                           for i in rounds],
    }


def step_benchmark(directory: str, shape: tuple[int, int], density: float, events: int, rounds: int,
                   persist_rounds: int, seed: int, progress: Callable[[str], None]) -> dict[str, Any]:
    """Time steps of the four kinds at ``density``; then persisting the sparse one."""
    height, width = shape
    lifetime = lifetime_steps(shape, density, events)
    rng = np.random.default_rng(seed + 1000)
    worlds: dict[str, worldstore.World] = {}
    try:
        for kind in KINDS:
            worlds[kind] = create_world(directory, f"{kind}-{density}", shape, kind)
            prefill(worlds[kind], int(density * height * width), seed, lifetime)
        sparse = worlds["sparse"][LAYER]
        prefilled = sparse.nnz
        for _ in range(WARMUP_STEPS):
            work = Events(rng, shape, events, lifetime)
            for world in worlds.values():
                work.step(world)
        start_nnz = sparse.nnz
        times: dict[str, list[float]] = {kind: [] for kind in KINDS}
        faults: dict[str, list[int]] = {kind: [] for kind in KINDS}
        auto_kinds = [worlds["auto"][LAYER].storage]
        for round_no in range(rounds):
            work = Events(rng, shape, events, lifetime)
            shift = round_no % len(KINDS)
            for kind in KINDS[shift:] + KINDS[:shift]:
                evict_caches()
                seconds, nfaults = timed(lambda world=worlds[kind]: work.step(world))
                times[kind].append(seconds)
                faults[kind].append(nfaults)
            auto_kinds.append(worlds["auto"][LAYER].storage)
        end_nnz = sparse.nnz
        reference = worlds["memory"][LAYER].numpy()
        for kind in ("sparse", "mapped", "auto"):
            if not np.array_equal(worlds[kind][LAYER].numpy(), reference):
                raise RuntimeError(f"{kind} storage disagrees with memory storage at density {density:.1%}: "
                                   "the kinds must hold the same values")
        del reference
        # The dense worlds go first: their dirty pages must not be written back during the flushes.
        remove_worlds({kind: worlds.pop(kind) for kind in ("mapped", "memory", "auto")})
        persist = persist_rounds_of(worlds["sparse"], rng, events, lifetime, persist_rounds)
    finally:
        remove_worlds(worlds)

    ratios = paired_ratios(times)
    cells = height * width
    row = {
        "density": density,
        "lifetime_steps": lifetime,
        "prefilled_nnz": prefilled,
        "start_density": start_nnz / cells,
        "final_density": end_nnz / cells,
        "nnz": end_nnz,
        "auto_kind": auto_kinds[-1],
        "auto_kinds_seen": sorted(set(auto_kinds), key=auto_kinds.index),
        "step_s": {kind: statistics.median(values) for kind, values in times.items()},
        "step_mean_s": {kind: statistics.fmean(values) for kind, values in times.items()},
        # Amortized: mean step times, merges of sparse storage included.
        "amortized_speedup": statistics.fmean(times["memory"]) / statistics.fmean(times["sparse"]),
        "step_faults": {kind: statistics.median(values) for kind, values in faults.items()},
        "ratios": {name: statistics.median(values) for name, values in ratios.items()},
        "ratio_ranges": {name: [min(values), max(values)] for name, values in ratios.items()},
        "step_round_s": times,
    }
    persist.update(height=height, width=width, density=density)
    step = row["step_s"]
    progress(f"  density {density:.1%}: sparse {step['sparse'] * 1e3:.2f} ms, memory {step['memory'] * 1e3:.2f} ms, "
             f"auto ({row['auto_kind']}) {step['auto'] * 1e3:.2f} ms; flush {persist['flush_s'] * 1e3:.2f} ms")
    return {"row": row, "persist": persist}


# -- persisting -----------------------------------------------------------------------
def persist_rounds_of(world: worldstore.World, rng: np.random.Generator, events: int, lifetime: float,
                      rounds: int) -> dict[str, Any]:
    """Median time of ``world.flush()`` right after a step, over ``rounds`` steps.

    One untimed step + flush first: the first flush of a world also sizes its
    COO datasets from empty.
    """
    shape = world.shape
    Events(rng, shape, events, lifetime).step(world)
    world.flush()
    times = []
    for _ in range(rounds):
        Events(rng, shape, events, lifetime).step(world)
        seconds, _ = timed(world.flush)
        times.append(seconds)
    nnz = world[LAYER].nnz
    flush_s = statistics.median(times)
    return {"nnz": nnz, "flush_s": flush_s, "flush_round_s": times}


def persist_control(directory: str, shape: tuple[int, int], nnz: int, events: int, rounds: int,
                    seed: int) -> dict[str, Any]:
    """The same persisting on a larger sparse world holding about ``nnz`` cells (a steady state too)."""
    worlds = {"control": create_world(directory, "control", shape, "sparse")}
    lifetime = nnz / events
    try:
        prefill(worlds["control"], nnz, seed, lifetime)
        result = persist_rounds_of(worlds["control"], np.random.default_rng(seed + 1000), events, lifetime, rounds)
    finally:
        remove_worlds(worlds)
    result.update(height=shape[0], width=shape[1])
    return result


# -- reporting ----------------------------------------------------------------------------
def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f}ms"


def _yes(flag: bool) -> str:
    return "yes" if flag else "NO"


def print_report(report: dict[str, Any]) -> None:
    m, w = report["machine"], report["world"]
    print("worldstore benchmark: temporal layers, sparse vs dense storage (benchmarks/temporal.py)")
    if report["quick"]:
        print("QUICK MODE: a small world; a smoke test, not the performance claim.")
    l3 = f"L3 {m['l3_bytes'] / 2**20:.0f} MiB" if m.get("l3_bytes") else "L3 unknown"
    print(f"machine   {m['cpu_model']}, {m['cores']} cores, {(m['ram_bytes'] or 0) / 2**30:.1f} GiB RAM, {l3}")
    print(f"          Linux {m['kernel']}, {m['filesystem']} at {w['directory']}, THP {m['transparent_hugepage']}")
    print(f"          Python {m['python']}, numpy {m['numpy']}, h5py {m['h5py']}, worldstore {m['worldstore']}")
    print(f"world     {w['height']} x {w['width']} float32 layer ({w['height'] * w['width'] * 4 / 2**20:.0f} MiB "
          f"dense), one world per kind; decay {report['decay']}, threshold {report['threshold']}")
    print(f"step      {report['events_per_step']:,} random add-deposits, then world.step(); "
          f"auto = mapped with switch_density {report['switch_density']}")
    print(f"rounds    {report['rounds']} timed after {report['warmup_steps']} untimed warm-up steps; the same "
          "deposits for every kind in a round, the order of the kinds rotating; gc off while timing")
    print()
    print("Time per step (median over rounds) and paired ratios (median of the per-round ratios):")
    print(f"{'density':>7} {'start..end':>15}  {'sparse':>8} {'mapped':>8} {'memory':>8} {'auto':>8} {'auto is':>7}"
          f"  {'mapped/mem':>10} {'sparse x':>8} {'auto/best':>9}")
    for row in report["densities"]:
        step, ratios = row["step_s"], row["ratios"]
        span = f"{row['start_density']:.2%}..{row['final_density']:.2%}"
        print(f"{row['density']:>7.1%} {span:>15}  " + " ".join(f"{_ms(step[k]):>8}" for k in KINDS)
              + f" {row['auto_kind']:>7}  {ratios['mapped_over_memory']:>10.3f} "
              f"{ratios['sparse_speedup_over_memory']:>7.1f}x {ratios['auto_over_best']:>9.3f}")
    print("Mean per step, and the amortized speedup of sparse (mean memory / mean sparse): the means include")
    print("the steps where sparse storage merges its recent runs into its main arrays (at 1% here, about every 30 steps):")
    for row in report["densities"]:
        mean = row["step_mean_s"]
        print(f"{row['density']:>7.1%} {'':>15}  " + " ".join(f"{_ms(mean[k]):>8}" for k in KINDS)
              + f" {'':>7}  {'':>10} {row['amortized_speedup']:>7.1f}x"
              + f"   (auto kinds seen: {', '.join(row['auto_kinds_seen'])})")
    print()
    print("Persisting the sparse state: world.flush() right after a step (median), against nnz:")
    print(f"{'world':>15} {'nnz':>11} {'flush':>10}")
    control = report["persist_control"]
    for row in report["persist"] + [control]:
        label = "  (control)" if row is control else f"  ({row['density']:.1%})"
        print(f"{row['height']:>7} x {row['width']:<6}{row['nnz']:>11,} {_ms(row['flush_s']):>10}{label}")
    cost = report["persist_cost"]
    print(f"marginal cost {cost['ns_per_cell']:.1f} ns per cell (lowest to highest density), "
          f"fixed cost about {_ms(cost['fixed_s'])} (HDF5 flush, step counter)")
    print(f"control: {control['world_cells_ratio']:.0f}x the cells, {control['nnz_ratio']:.2f}x the nnz of the "
          f"1% case: {control['flush_ratio']:.2f}x its flush time (near {control['nnz_ratio']:.1f}: follows nnz, "
          "not H x W)")
    print()
    targets, verdict = report["targets"], report["pass"]
    print(f"dense mapped <= {targets['mapped_over_memory']:.2f}x dense memory at every density: "
          f"{_yes(verdict['mapped_within_target'])}")
    print(f"sparse >= {targets['sparse_speedup_at_1pct']:.0f}x faster than dense memory at 1%, per step (median) "
          f"and amortized (means): {_yes(verdict['sparse_speedup_at_1pct'])}")
    print(f"auto <= {targets['auto_over_best_at_10pct']:.1f}x the fastest kind at 10%: "
          f"{_yes(verdict['auto_at_10pct'])}")
    print(f"total run time {report['wall_s']:.0f} s")


# -- main ---------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser(__doc__, "a 1024 x 1024 world and few rounds (seconds; for CI)",
                              "timed rounds per density (default 100, --quick 3)")
    args, config, rounds = parse_benchmark_args(parser, argv, FULL, QUICK)

    shape, control_shape, events = config["shape"], config["control"], config["events"]
    layer_bytes = shape[0] * shape[1] * 4
    need_disk = len(KINDS) * layer_bytes + control_shape[0] * control_shape[1] * 4 + (64 << 20)
    # RAM: the memory layer, the mapped layers' page cache, and the dense copies of the final check.
    need_ram = 6 * layer_bytes + (512 << 20)
    problem = room_error(args.dir, need_disk, need_ram)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    progress = progress_printer(args.json)

    started = time.perf_counter()
    directory = tempfile.mkdtemp(prefix="worldstore-temporal-", dir=args.dir)
    try:
        machine = machine_info(directory)
        progress(f"timing steps at densities {', '.join(f'{d:.1%}' for d in DENSITIES)} "
                 f"({rounds} rounds each) ...")
        results = [step_benchmark(directory, shape, density, events, rounds, config["persist_rounds"], index,
                                  progress)
                   for index, density in enumerate(DENSITIES)]
        rows = [result["row"] for result in results]
        persist = [result["persist"] for result in results]
        base = persist[DENSITIES.index(0.01)]
        progress(f"persisting on a {control_shape[0]} x {control_shape[1]} control world ...")
        control = persist_control(directory, control_shape, base["nnz"], events, config["persist_rounds"], 7)
    finally:
        shutil.rmtree(directory, ignore_errors=True)

    control.update(world_cells_ratio=(control_shape[0] * control_shape[1]) / (shape[0] * shape[1]),
                   nnz_ratio=control["nnz"] / base["nnz"], flush_ratio=control["flush_s"] / base["flush_s"])
    by_density = {row["density"]: row for row in rows}
    low, high = persist[0], persist[-1]
    slope = (high["flush_s"] - low["flush_s"]) / max(1, high["nnz"] - low["nnz"])
    report = {
        "benchmark": "worldstore temporal layers, sparse vs dense storage",
        "quick": bool(args.quick),
        "machine": machine,
        "world": {"height": shape[0], "width": shape[1], "dtype": "float32", "layer_bytes": layer_bytes,
                  "directory": args.dir},
        "events_per_step": events, "decay": DECAY, "threshold": THRESHOLD,
        "switch_density": SWITCH_DENSITY,
        "rounds": rounds, "warmup_steps": WARMUP_STEPS, "persist_rounds": config["persist_rounds"],
        "ratio_descriptions": RATIOS,
        "densities": rows,
        "persist": persist,
        "persist_control": control,
        "persist_cost": {"ns_per_cell": slope * 1e9, "fixed_s": low["flush_s"] - slope * low["nnz"]},
        "targets": {"mapped_over_memory": MAPPED_TARGET, "sparse_speedup_at_1pct": SPARSE_SPEEDUP_TARGET,
                    "auto_over_best_at_10pct": AUTO_TARGET},
        "pass": {
            "mapped_within_target": all(row["ratios"]["mapped_over_memory"] <= MAPPED_TARGET for row in rows),
            "sparse_speedup_at_1pct":
                min(by_density[0.01]["ratios"]["sparse_speedup_over_memory"],
                    by_density[0.01]["amortized_speedup"]) >= SPARSE_SPEEDUP_TARGET,
            "auto_at_10pct": by_density[0.1]["ratios"]["auto_over_best"] <= AUTO_TARGET,
        },
    }
    return emit(report, args.json, started, print_report)


if __name__ == "__main__":
    sys.exit(main())
