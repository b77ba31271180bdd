"""What a commit costs per step on a 2 GiB world, and what readers pay for their check.

A world of 8 float32 layers of 8192 x 8192 (2 GiB), mapped, plus a sparse
temporal layer. Each round runs one step of a workload, then commits it; the
step and the commit are timed apart:

  cells      10,000 random cells written in each of the 8 layers (80,000 cells,
             ~80,000 pages: scattered agents acting);
  windows    1,024 random 33 x 33 windows written into one layer (agents
             writing what they saw), plus 10,000 deposits into the sparse layer;
  layer      one whole 256 MiB layer multiplied in place (a dense decay).

Commits run with ``durable=False`` (journal and file reach the page cache in
order, which is what surviving ``kill -9`` needs) and ``durable=True`` (both
fsync'd too, for power cuts). The same workloads run on an in-RAM (``memory``)
world of the same spec, whose commit compares each layer with the file to find
the pages to write. Reported: medians of the step, the commit (``world.commit``
timed whole: it collects the changes once, journals and applies them), the
bytes journaled (the number ``worldstore.commit.commit`` returns, recorded by
wrapping it during the measurement; nothing is collected twice), and
commit / step.

Readers: a reader opened beside the world reads 1,000 random 33 x 33 windows
three ways: as views copied by numpy (unchecked), through ``world.read`` (one
check around all 1,000), and with ``layer[...]`` one by one (one check each).

    python benchmarks/commit.py            # 2 GiB worlds, 5 rounds (a few minutes)
    python benchmarks/commit.py --quick    # 8 x 1024 x 1024 (seconds; for CI)
    python benchmarks/commit.py --json
"""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from layers import (benchmark_parser, emit, machine_info, parse_benchmark_args, progress_printer,  # noqa: E402
                    room_error)

import worldstore  # noqa: E402
from worldstore import LayerSpec, WorldSpec, commit  # noqa: E402

FULL = {"rounds": 5, "size": 8192}
QUICK = {"rounds": 3, "size": 1024}
LAYERS = 8
R = 16


def spec(size: int, kind: str) -> WorldSpec:
    layers = [LayerSpec(f"L{i}", "resource", "float32", storage=kind) for i in range(LAYERS)]
    layers.append(LayerSpec("HEAT", "temporal", "float32", decay=0.9, threshold=0.01, storage="sparse"))
    return WorldSpec(size, size, 0, layers)


def workload(name: str, world: Any, rng: np.random.Generator) -> None:
    size = world.height
    if name == "cells":
        for i in range(LAYERS):
            array = world[f"L{i}"].numpy()
            array[rng.integers(0, size, 10_000), rng.integers(0, size, 10_000)] += 1.0
    elif name == "windows":
        array = world["L0"].numpy()
        for y, x in zip(rng.integers(0, size - 2 * R - 1, 1024), rng.integers(0, size - 2 * R - 1, 1024)):
            array[y:y + 2 * R + 1, x:x + 2 * R + 1] += 1.0
        world.deposit("HEAT", rng.integers(0, size, 10_000), rng.integers(0, size, 10_000), 1.0)
    else:
        array = world["L1"].numpy()
        np.multiply(array, np.float32(0.999), out=array)


WORKLOADS = ("cells", "windows", "layer")


@contextlib.contextmanager
def journaled_bytes() -> Iterator[list[int]]:
    """Record what each ``worldstore.commit.commit`` returns (the bytes journaled) while inside.

    ``World.commit`` calls it through the module (``_commit.commit``) and drops the number; the
    wrapper appends it to the list yielded and returns it. The original is put back on the way out.
    """
    original = commit.commit
    journaled: list[int] = []

    def recording(world: Any, durable: bool = True) -> int:
        nbytes = original(world, durable)
        journaled.append(nbytes)
        return nbytes

    commit.commit = recording
    try:
        yield journaled
    finally:
        commit.commit = original


def measure(world: Any, rounds: int, durable: bool, seed: int) -> dict[str, dict[str, float]]:
    rng = np.random.default_rng(seed)
    results: dict[str, dict[str, list[float]]] = {w: {"step_ms": [], "commit_ms": [], "journal_mb": []}
                                                  for w in WORKLOADS}
    with journaled_bytes() as journaled:
        for _ in range(rounds):
            for name in WORKLOADS:
                started = time.perf_counter()
                workload(name, world, rng)
                world.step()
                stepped = time.perf_counter()
                before = len(journaled)
                world.commit(durable=durable)  # collects the changes once, journals them, applies them
                done = time.perf_counter()
                results[name]["step_ms"].append(1e3 * (stepped - started))
                results[name]["commit_ms"].append(1e3 * (done - stepped))
                results[name]["journal_mb"].append(sum(journaled[before:]) / 1e6)  # as this commit returned it
    return {name: {key: statistics.median(values) for key, values in figures.items()}
            for name, figures in results.items()}


def reader_costs(path: str, size: int, seed: int) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    ys = rng.integers(0, size - 2 * R - 1, 1000)
    xs = rng.integers(0, size - 2 * R - 1, 1000)
    out = np.empty((1000, 2 * R + 1, 2 * R + 1), np.float32)
    with worldstore.open(path, "r", swmr=True) as reader:
        layer = reader["L0"]
        array = layer.numpy()

        def unchecked() -> None:
            for i, (y, x) in enumerate(zip(ys, xs)):
                out[i] = array[y:y + 2 * R + 1, x:x + 2 * R + 1]

        def one_check(w: Any) -> None:
            unchecked()

        def each_checked() -> None:
            for i, (y, x) in enumerate(zip(ys, xs)):
                out[i] = layer[y:y + 2 * R + 1, x:x + 2 * R + 1]

        times: dict[str, list[float]] = {"unchecked": [], "world_read": [], "layer_getitem": []}
        for _ in range(7):
            for key, func in (("unchecked", unchecked), ("world_read", lambda: reader.read(one_check)),
                              ("layer_getitem", each_checked)):
                started = time.perf_counter()
                func()
                times[key].append(time.perf_counter() - started)
    medians = {key: 1e3 * statistics.median(values) for key, values in times.items()}
    medians["per_check_us"] = 1e3 * (medians["layer_getitem"] - medians["unchecked"]) / 1000
    return medians


def run(directory: str, size: int, rounds: int, progress) -> dict[str, Any]:
    report: dict[str, Any] = {"worlds": {}}
    for kind in ("mapped", "memory"):
        path = os.path.join(directory, f"{kind}.h5")
        progress(f"{kind}: creating {LAYERS} x {size} x {size} float32 ...")
        with worldstore.create(path, spec(size, kind)) as world:
            for i in range(LAYERS):  # every page written and committed once: no first-touch costs below
                world[f"L{i}"].numpy()[...] = np.float32(i)
            world.commit(durable=False)
            figures = {}
            for durable in (False, True):
                progress(f"{kind}: {rounds} rounds, durable={durable} ...")
                figures["durable" if durable else "page_cache"] = measure(world, rounds, durable, 1)
            report["worlds"][kind] = figures
            if kind == "mapped":
                progress("readers ...")
                report["reader"] = reader_costs(path, size, 2)
        os.unlink(path)
    return report


def print_report(report: dict[str, Any]) -> None:
    print("worldstore commit cost (benchmarks/commit.py)")
    print(f"machine   {report['machine']['cpu_model']}, {report['machine']['cores']} cores, "
          f"{report['machine']['filesystem']}; world {report['world']}; medians of {report['rounds']} rounds")
    print(f"{'kind':7} {'workload':8} {'step':>9} {'journal':>9} {'commit':>10} {'commit/step':>11} "
          f"{'durable commit':>15}")
    for kind, figures in report["worlds"].items():
        for name in WORKLOADS:
            cached, durable = figures["page_cache"][name], figures["durable"][name]
            print(f"{kind:7} {name:8} {cached['step_ms']:7.1f}ms {cached['journal_mb']:7.1f}MB "
                  f"{cached['commit_ms']:8.1f}ms {cached['commit_ms'] / cached['step_ms']:10.2f}x "
                  f"{durable['commit_ms']:13.1f}ms")
    r = report["reader"]
    print(f"reader, 1,000 windows of 33x33: unchecked {r['unchecked']:.2f} ms, one world.read around them "
          f"{r['world_read']:.2f} ms, layer[...] each {r['layer_getitem']:.2f} ms "
          f"({r['per_check_us']:.1f} us per check)")


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser(__doc__, "8 x 1024 x 1024 worlds (seconds; for CI)", "rounds (default 5, --quick 3)")
    args, config, rounds = parse_benchmark_args(parser, argv, FULL, QUICK)
    size = config["size"]
    need = 2 * LAYERS * size * size * 4
    problem = room_error(args.dir, need, need // 2)
    if problem:
        parser.error(problem)
    progress = progress_printer(args.json)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="worldstore-commit-", dir=args.dir) as directory:
        machine = machine_info(directory)
        report = run(directory, size, rounds, progress)
    report.update({"benchmark": "worldstore commit", "quick": bool(args.quick), "machine": machine,
                   "rounds": rounds, "world": f"{LAYERS} x {size} x {size} float32 "
                                             f"({LAYERS * size * size * 4 / 2**30:.2f} GiB) + a sparse layer"})
    return emit(report, args.json, started, print_report)


if __name__ == "__main__":
    sys.exit(main())
