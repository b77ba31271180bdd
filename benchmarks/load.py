"""Load: one writer commits step after step while reader processes read, and check every read.

The writer (SWMR) sets, at every step ``s``, every cell of the mapped layers
``A`` to ``s`` and ``B`` to ``-s``, the in-RAM layer ``C`` to ``s``, and one
cell of the sparse layer ``HEAT`` per step, then commits. Each reader
(``worldstore.open(path, "r", swmr=True)``) reads continuously:

- ``world.read(...)``: ``A`` and ``B`` together, with the committed step the
  read belongs to; a read is torn unless every cell of ``A`` equals that step
  and every cell of ``B`` its negative;
- ``world["A"][...]``: one layer alone (checked the same way by itself),
  uniform or torn;
- every 20 reads, ``world.refresh()``: the world must then hold one commit in
  every storage kind: ``C`` (in RAM) must equal the committed step refresh
  returned, ``HEAT`` (sparse) must hold as many cells as steps, and ``A``
  (mapped, which follows the writer live) that step or a later one;
- as a control, ``A`` copied straight from its array (``numpy()``, no check):
  these reads can be torn, and how often they are shows what the check
  prevents (not a failure).

It runs twice: on a 512x512 world, and on a 16x16 one whose layers are
smaller than HDF5's 64 KiB sieve buffer (where in-RAM layers once read an
older commit than refresh() reported). It prints, for each, the writer's
steps, the reads per kind, torn reads (must be 0), errors (must be 0), torn
unchecked control reads, and the read latencies.

    python benchmarks/load.py             # 60 s, 4 readers
    python benchmarks/load.py --quick     # 10 s (CI's test does the same)
    python benchmarks/load.py --json
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from layers import (benchmark_parser, child_env, emit, machine_info, parse_benchmark_args,  # noqa: E402
                    progress_printer)

import worldstore  # noqa: E402
from worldstore import LayerSpec, WorldSpec  # noqa: E402

FULL = {"rounds": 60}
QUICK = {"rounds": 10}
READERS = 4
#: World sizes, each run for half the time: a large one, and one whose layers fit HDF5's 64 KiB sieve buffer.
SIZES = (512, 16)

WRITER = r"""
import json, sys, time
import worldstore
world = worldstore.open(sys.argv[1], "r+", swmr=True)
print("ready", flush=True)
deadline = time.monotonic() + float(sys.argv[2])
commit_s = []
while time.monotonic() < deadline:
    step = world.current_step + 1
    world["A"][...] = step
    world["B"][...] = -step
    world["C"][...] = step
    world.deposit("HEAT", [step % world.height], [step // world.height % world.width], 1.0)
    world.step()
    started = time.perf_counter()
    world.commit(durable=False)
    commit_s.append(time.perf_counter() - started)
steps = world.committed_step
world.close()
commit_s.sort()
print(json.dumps({"steps": steps, "commit_ms_median": 1e3 * commit_s[len(commit_s) // 2]}), flush=True)
"""

READER = r"""
import json, sys, time
import numpy as np
import worldstore
world = worldstore.open(sys.argv[1], "r", swmr=True)
print("ready", flush=True)
deadline = time.monotonic() + float(sys.argv[2])
counts = {"reads": 0, "single_reads": 0, "refreshes": 0, "torn": 0, "errors": 0, "control_reads": 0,
          "control_torn": 0, "steps_seen": set()}
latency = {"read": [], "single": [], "control": []}
def uniform(a, value):
    return bool((a == value).all())
while time.monotonic() < deadline:
    try:
        started = time.perf_counter()
        step, (a, b) = world.read(lambda w: (w["A"].numpy().copy(), w["B"].numpy().copy()))
        latency["read"].append(time.perf_counter() - started)
        counts["reads"] += 1
        counts["steps_seen"].add(step)
        if not (uniform(a, step) and uniform(b, -step)):
            counts["torn"] += 1
        started = time.perf_counter()
        a = world["A"][...]
        latency["single"].append(time.perf_counter() - started)
        counts["single_reads"] += 1
        if not uniform(a, a.flat[0]):
            counts["torn"] += 1
        started = time.perf_counter()
        a = world["A"].numpy().copy()
        latency["control"].append(time.perf_counter() - started)
        counts["control_reads"] += 1
        counts["control_torn"] += not uniform(a, a.flat[0])
        if counts["reads"] % 20 == 0:
            committed = world.refresh()
            counts["refreshes"] += 1
            cells = world.height * world.width
            if (not uniform(world["C"][...], committed) or world["HEAT"].nnz != min(committed, cells)
                    or int(world["A"][0, 0]) < committed):
                counts["torn"] += 1
    except Exception as exc:
        counts["errors"] += 1
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
counts["steps_seen"] = len(counts["steps_seen"])
counts["latency_ms"] = {k: 1e3 * sorted(v)[len(v) // 2] if v else None for k, v in latency.items()}
print(json.dumps(counts), flush=True)
"""


def spec(size: int = 512) -> WorldSpec:
    layers = [
        LayerSpec("A", "resource", "int64"),
        LayerSpec("B", "resource", "int64"),
        LayerSpec("C", "resource", "int64", storage="memory"),
        LayerSpec("HEAT", "temporal", "float32", decay=1.0, threshold=0.0, storage="sparse"),
    ]
    return WorldSpec(size, size, 0, layers)


def _start(code: str, *args: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=child_env())
    line = proc.stdout.readline()
    if line.strip() != "ready":
        raise RuntimeError(f"a load process did not start: {line}{proc.stderr.read()[-2000:]}")
    return proc


def _result(proc: subprocess.Popen) -> tuple[dict[str, Any], list[str]]:
    out, err = proc.communicate(timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"a load process failed ({proc.returncode}): {err[-2000:]}")
    lines = [json.loads(line) for line in out.splitlines() if line.strip()]
    return lines[-1], [line["error"] for line in lines[:-1] if "error" in line]


def load(path: str, seconds: float, readers: int = READERS) -> dict[str, Any]:
    """Run the writer and ``readers`` readers on ``path`` for ``seconds``; the counts."""
    writer = _start(WRITER, path, str(seconds))
    procs = [_start(READER, path, str(seconds)) for _ in range(readers)]
    results = [_result(proc) for proc in procs]
    written, _ = _result(writer)
    total: dict[str, Any] = {"seconds": seconds, "readers": readers, "writer_steps": written["steps"],
                             "commit_ms_median": written["commit_ms_median"]}
    for key in ("reads", "single_reads", "refreshes", "torn", "errors", "control_reads", "control_torn"):
        total[key] = sum(result[key] for result, _ in results)
    total["steps_seen_per_reader"] = [result["steps_seen"] for result, _ in results]
    total["latency_ms"] = {kind: max(result["latency_ms"][kind] for result, _ in results)
                           for kind in ("read", "single", "control")}
    total["error_messages"] = [message for _, messages in results for message in messages][:5]
    return total


def print_report(report: dict[str, Any]) -> None:
    print("worldstore load: one SWMR writer committing, readers checking every read (benchmarks/load.py)")
    print(f"machine   {report['machine']['cpu_model']}, {report['machine']['cores']} cores")
    for world, counts in zip(report["worlds"], report["runs"]):
        print(f"\nworld {world}")
        _print_counts(counts)


def _print_counts(c: dict[str, Any]) -> None:
    print(f"{c['seconds']:.0f} s, {c['readers']} readers; writer steps {c['writer_steps']} "
          f"(commit median {c['commit_ms_median']:.2f} ms, durable=False)")
    print(f"reads: {c['reads']} two-layer world.read, {c['single_reads']} layer[...], {c['refreshes']} refresh; "
          f"torn {c['torn']}; errors {c['errors']}")
    print(f"control (unchecked numpy().copy()): {c['control_reads']} reads, {c['control_torn']} torn")
    lat = c["latency_ms"]
    print(f"read latency (median, slowest reader): world.read of 2 layers {lat['read']:.3f} ms, "
          f"layer[...] {lat['single']:.3f} ms, unchecked copy {lat['control']:.3f} ms")
    for message in c["error_messages"]:
        print(f"  error: {message}")


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser(__doc__, "10 s (for CI)", "seconds (default 60, --quick 10)")
    args, _, seconds = parse_benchmark_args(parser, argv, FULL, QUICK)
    progress = progress_printer(args.json)
    started = time.perf_counter()
    runs, worlds = [], []
    with tempfile.TemporaryDirectory(prefix="worldstore-load-", dir=args.dir) as directory:
        machine = machine_info(directory)
        for size in SIZES:
            path = os.path.join(directory, f"load-{size}.h5")
            worldstore.create(path, spec(size)).close()
            progress(f"{size}x{size}: writer and {READERS} readers for {seconds / 2:g} s ...")
            runs.append(load(path, seconds / 2))
            worlds.append(f"{size}x{size}: A, B int64 mapped, C int64 in RAM, HEAT sparse")
    report = {"benchmark": "worldstore load", "quick": bool(args.quick), "machine": machine,
              "worlds": worlds, "runs": runs}
    return emit(report, args.json, started, print_report)


if __name__ == "__main__":
    sys.exit(main())
