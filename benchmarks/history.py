"""History: how fast are snapshots, how big, how compact is compaction, how slow is the past?

One world of 8 float32 layers of 8192 x 8192 (2 GiB), filled with what a
simulation's fields look like (smooth, quantized levels, some noise), taken
through snapshots with each history codec (``blosc2``: Zstd through Blosc2;
``gzip``), in one run:

- snapshot throughput: layer bytes / seconds of ``world.snapshot()`` (commit
  + append) and an fsync, beside a plain copy of the world file on the same
  disk (``shutil.copyfile`` + fsync, best of three: the disk's limit). The first snapshot
  commits every page of a freshly filled world; the later ones follow a step
  that changed 5% of every layer (the steady state of a run). Target: >= 0.5
  of the plain copy with the fast codec (blosc2), in the steady state;
- bytes added per snapshot, per codec;
- ``compact`` of the gzip world against Debian's ``h5repack`` of the same file
  (both keep everything): output sizes. Target: compact <= 1.05x h5repack;
- latency of a 33 x 33 window read from ``world.at(step)`` (decompressing the
  chunks it touches) against one from the live, mapped world (median of 200),
  per codec.

Run from the repository root:

    python benchmarks/history.py            # 2 GiB worlds, about two minutes
    python benchmarks/history.py --quick    # 1024 x 1024, seconds (a smoke test for CI)
    python benchmarks/history.py --json     # one JSON object on stdout

Needs about 8 GiB of free disk under ``--dir`` (two worlds with history, a
copy, compaction outputs) and about 3 GiB of available RAM.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from layers import (benchmark_parser, emit, machine_info, parse_benchmark_args,  # noqa: E402
                    progress_printer, room_error, _time_text, timed)

import worldstore  # noqa: E402
from worldstore.compaction import _fsync as fsync  # noqa: E402

LAYERS = tuple(f"F{i}" for i in range(8))
CODECS = ("blosc2", "gzip")
THROUGHPUT_TARGET = 0.5
COMPACT_TARGET = 1.05
WINDOW = 33

FULL = {"shape": (8192, 8192), "rounds": 3, "window_reads": 200}
QUICK = {"shape": (1024, 1024), "rounds": 2, "window_reads": 50}


def fill(world: worldstore.World, seed: int | np.random.Generator, layers: Sequence[str] = LAYERS) -> None:
    """Smooth fields quantized to 0.01 with 1% of cells noisy, band by band (no big temporaries).

    ``seed`` is a seed or a generator (used as is, so a caller can go on drawing from it); the
    ``index``-th of ``layers`` gets its waves shifted by ``index``. Also used by analysis.py.
    """
    rng = np.random.default_rng(seed)  # a Generator comes back unchanged
    height, width = world.shape
    x = np.linspace(0, 20, width, dtype=np.float32)
    for index, name in enumerate(layers):
        array = world[name].numpy()
        for y in range(0, height, 512):
            rows = np.arange(y, min(y + 512, height), dtype=np.float32)[:, None]
            band = np.round((np.sin(x[None, :] + rows * 0.01 + index) + 1) * 50) / 100
            noisy = rng.random(band.shape) < 0.01
            band[noisy] = rng.random(int(noisy.sum()), dtype=np.float32)
            array[y:y + len(rows)] = band


def change(world: worldstore.World, rng: np.random.Generator, share: float = 0.05,
           layers: Sequence[str] = LAYERS) -> None:
    """A step that rewrites ``share`` of each of ``layers`` (a random band of rows each, + 0.01)."""
    height = world.height
    rows = max(1, int(height * share))
    for name in layers:
        start = int(rng.integers(0, height - rows + 1))
        world[name].numpy()[start:start + rows] += np.float32(0.01)
    world.step()


def snapshot_run(directory: str, shape: tuple[int, int], codec: str, rounds: int,
                 progress) -> tuple[dict[str, Any], str]:
    path = os.path.join(directory, f"{codec}.h5")
    spec = worldstore.WorldSpec(shape[0], shape[1], 0, [worldstore.LayerSpec(name, "resource") for name in LAYERS])
    layer_bytes = shape[0] * shape[1] * 4 * len(LAYERS)
    rng = np.random.default_rng(1)
    with worldstore.create(path, spec, history_codec=codec) as world:
        fill(world, 0)

        def snap() -> None:
            world.snapshot()
            fsync(path)

        first = timed(snap)[0]
        later = []
        for _ in range(rounds):
            change(world, rng)
            later.append(timed(snap)[0])
        records = world.history()
    progress(f"  {codec}: first snapshot {first:.2f} s, later {statistics.median(later):.2f} s")
    return {
        "codec": codec,
        "first_snapshot_s": first,
        "snapshot_s": statistics.median(later),
        "snapshot_round_s": later,
        "first_mb_per_s": layer_bytes / first / 1e6,
        "mb_per_s": layer_bytes / statistics.median(later) / 1e6,
        "bytes_per_snapshot": [record["bytes"] for record in records],
        "layer_bytes": layer_bytes,
    }, path


def plain_copy(path: str, directory: str) -> dict[str, Any]:
    target = os.path.join(directory, "copy.h5")
    times = []
    for _ in range(3):  # the best of three: the disk's limit (its speed varies from run to run)
        start = time.perf_counter()
        shutil.copyfile(path, target)
        fsync(target)
        times.append(time.perf_counter() - start)
        os.unlink(target)
    size = os.path.getsize(path)
    return {"bytes": size, "seconds": min(times), "mb_per_s": size / min(times) / 1e6}


def compaction(path: str, directory: str) -> dict[str, Any]:
    repacked = os.path.join(directory, "repacked.h5")
    compacted = os.path.join(directory, "compacted.h5")
    shutil.copyfile(path, compacted)
    started = time.perf_counter()
    report = worldstore.compact(compacted)
    compact_s = time.perf_counter() - started
    result: dict[str, Any] = {"source_bytes": os.path.getsize(path), "compact_bytes": report["bytes_after"],
                              "compact_s": compact_s, "h5repack": None}
    if shutil.which("h5repack"):
        started = time.perf_counter()
        proc = subprocess.run(["h5repack", path, repacked], capture_output=True, text=True)
        if proc.returncode == 0:
            result["h5repack"] = {"bytes": os.path.getsize(repacked), "seconds": time.perf_counter() - started}
            result["compact_over_h5repack"] = report["bytes_after"] / result["h5repack"]["bytes"]
        else:
            result["h5repack_error"] = proc.stderr.strip()[-500:]
    for leftover in (repacked, compacted):
        if os.path.exists(leftover):
            os.unlink(leftover)
    return result


def window_latency(path: str, reads: int) -> dict[str, Any]:
    rng = np.random.default_rng(3)
    with worldstore.open(path) as world:
        height, width = world.shape
        step = world.history()[-1]["step"]
        past = world.at(step)[LAYERS[0]]
        live = world[LAYERS[0]]
        times: dict[str, list[float]] = {"past": [], "live": []}
        for _ in range(reads):
            y, x = int(rng.integers(0, height - WINDOW)), int(rng.integers(0, width - WINDOW))
            rows, cols = slice(y, y + WINDOW), slice(x, x + WINDOW)
            times["past"].append(timed(lambda: past.window(rows, cols))[0])
            times["live"].append(timed(lambda: live.window(rows, cols))[0])
    past_s, live_s = statistics.median(times["past"]), statistics.median(times["live"])
    return {"past_s": past_s, "live_s": live_s, "past_over_live": past_s / live_s, "reads": reads}


def print_report(report: dict[str, Any]) -> None:
    m, w = report["machine"], report["world"]
    print("worldstore benchmark: history (benchmarks/history.py)")
    if report["quick"]:
        print("QUICK MODE: a small world; a smoke test, not the performance claim.")
    print(f"machine   {m['cpu_model']}, {m['cores']} cores, Linux {m['kernel']}, {m['filesystem']} at {w['directory']}")
    print(f"world     {w['height']} x {w['width']} x {w['layers']} float32 layers ({w['bytes'] / 2**30:.2f} GiB)")
    copy = report["plain_copy"]
    print(f"plain copy of the world file + fsync: {copy['mb_per_s']:.0f} MB/s")
    print()
    print(f"{'codec':<7} {'first snapshot':>15} {'later snapshots':>16} {'of the copy':>12} {'bytes per snapshot':>20}")
    for run in report["snapshots"]:
        sizes = run["bytes_per_snapshot"]
        print(f"{run['codec']:<7} {run['first_mb_per_s']:>11.0f} MB/s {run['mb_per_s']:>12.0f} MB/s "
              f"{run['mb_per_s'] / copy['mb_per_s']:>12.2f} {statistics.median(sizes) / 1e6:>16.1f} MB")
    comp = report["compaction"]
    if comp["h5repack"]:
        print(f"compact {comp['compact_bytes'] / 1e6:.1f} MB in {comp['compact_s']:.1f} s; h5repack "
              f"{comp['h5repack']['bytes'] / 1e6:.1f} MB in {comp['h5repack']['seconds']:.1f} s: "
              f"{comp['compact_over_h5repack']:.3f}x")
    else:
        print(f"compact {comp['compact_bytes'] / 1e6:.1f} MB; h5repack not available "
              f"({comp.get('h5repack_error', 'not installed: apt-get install hdf5-tools')})")
    for codec, lat in report["window_latency"].items():
        print(f"33x33 window read, {codec}: past (at(step)) {_time_text(lat['past_s'])}, live "
              f"{_time_text(lat['live_s'])}")
    print()
    verdict = report["pass"]
    print(f"blosc2 snapshots >= {THROUGHPUT_TARGET} of the plain copy: {'yes' if verdict['throughput'] else 'NO'}")
    print(f"compact <= {COMPACT_TARGET}x h5repack: "
          f"{'n/a' if verdict['compact'] is None else ('yes' if verdict['compact'] else 'NO')}")
    print(f"total run time {report['wall_s']:.0f} s")


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser(__doc__, "a 1024 x 1024 world (seconds; for CI)",
                              "snapshots after the first, per codec (default 3, --quick 2)")
    args, config, rounds = parse_benchmark_args(parser, argv, FULL, QUICK)
    shape = config["shape"]
    world_bytes = shape[0] * shape[1] * 4 * len(LAYERS)
    problem = room_error(args.dir, 4 * world_bytes + (1 << 30), world_bytes + (1 << 30))
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    progress = progress_printer(args.json)
    started = time.perf_counter()
    directory = tempfile.mkdtemp(prefix="worldstore-history-", dir=args.dir)
    try:
        machine = machine_info(directory)
        runs, paths = [], {}
        for codec in CODECS:
            run, paths[codec] = snapshot_run(directory, shape, codec, rounds, progress)
            runs.append(run)
        copy = plain_copy(paths["gzip"], directory)
        latency = {codec: window_latency(paths[codec], config["window_reads"]) for codec in CODECS}
        os.unlink(paths["blosc2"])
        progress("compacting ...")
        comp = compaction(paths["gzip"], directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    fast = runs[0]
    report = {
        "benchmark": "worldstore history",
        "quick": bool(args.quick),
        "machine": machine,
        "world": {"height": shape[0], "width": shape[1], "layers": len(LAYERS), "bytes": world_bytes,
                  "directory": args.dir},
        "rounds": rounds,
        "snapshots": runs,
        "plain_copy": copy,
        "compaction": comp,
        "window_latency": latency,
        "targets": {"snapshot_over_copy": THROUGHPUT_TARGET, "compact_over_h5repack": COMPACT_TARGET},
        "pass": {
            "throughput": fast["mb_per_s"] / copy["mb_per_s"] >= THROUGHPUT_TARGET,
            "compact": None if comp["h5repack"] is None else comp["compact_over_h5repack"] <= COMPACT_TARGET,
        },
    }
    return emit(report, args.json, started, print_report)


if __name__ == "__main__":
    sys.exit(main())
