"""Analysis at scale: a reduction over a world's history, Dask workers against a numpy loop.

One world with one float32 layer of 8192 x 8192 (256 MiB) snapshotted 8 times
(2 GiB of history before compression), filled with what a simulation's fields
look like (smooth, quantized levels, 1% noise; each step changes 5% of the
rows). The reduction is the mean over time of the layer: a 8192 x 8192 map.
In one run, each of:

- ``numpy loop``: one process reads the history snapshot by snapshot with
  h5py and adds it up (what a script without Dask does);
- ``numpy, N processes by hand``: the same loop split over N processes
  (a ``ProcessPoolExecutor``, each summing its share of the snapshots, the
  parent adding the partial sums): what this machine's cores can give, the
  ceiling for Dask's speedup;
- ``dask, chunks=auto`` and ``dask, chunks=file``: ``worldstore.to_xarray``
  on a ``dask.distributed.LocalCluster`` of N worker processes, one thread
  each, ``ds[layer].mean("step", skipna=False)`` computed there (a plain
  mean, as the loop's: xarray's default ``skipna=True`` also counts NaNs,
  which measured 1.2-1.6x slower here); the graph is built inside the timed
  call, and the 256 MiB result comes back to this process in it.

Every method runs cold (the world file's pages dropped from the page cache
with ``posix_fadvise(DONTNEED)``, the file having been fsynced: what a
first analysis of a world on disk pays) and then warm (the same run again,
the compressed history now in the page cache). The order of the methods
rotates from round to round; figures are medians over rounds. Starting the
cluster and the process pool is not timed (it is reported). Every result is
checked against the numpy loop's.

Run from the repository root:

    python benchmarks/analysis.py            # 2 GiB of history, about four minutes on 2 cores
    python benchmarks/analysis.py --quick    # 1024 x 1024, seconds (a smoke test for CI)
    python benchmarks/analysis.py --json     # one JSON object on stdout

Needs xarray, Dask and distributed (``pip install 'worldstore[analysis]'``),
about 3 GiB of free disk under ``--dir`` and 4 GiB of available RAM.
"""

from __future__ import annotations

import concurrent.futures
import importlib
import itertools
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import h5py
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from layers import (
    _bytes_text,
    benchmark_parser,
    emit,
    machine_info,
    parse_benchmark_args,
    progress_printer,
    room_error,
)
from history import change, fill

import worldstore
from worldstore.analysis import to_xarray
from worldstore.compaction import _fsync as fsync

LAYER = "FIELD"
CODECS = ("gzip", "blosc2", "none")
FULL = {"shape": (8192, 8192), "snapshots": 8, "rounds": 3}
QUICK = {"shape": (1024, 1024), "snapshots": 4, "rounds": 1}
METHODS = ("numpy", "numpy_processes", "dask_auto", "dask_file")
LABELS = {
    "numpy": "numpy loop, 1 process",
    "numpy_processes": "numpy, {workers} processes by hand",
    "dask_auto": "dask, chunks=\"auto\"",
    "dask_file": "dask, chunks=\"file\"",
}


# -- the world ------------------------------------------------------------------------------------------
def build_world(path: str, shape: tuple[int, int], snapshots: int, codec: str,
                progress: Callable[[str], None]) -> dict[str, Any]:
    """A one-layer world with ``snapshots`` snapshots of smooth, quantized, slightly noisy fields."""
    spec = worldstore.WorldSpec(shape[0], shape[1], 0, [worldstore.LayerSpec(LAYER, "resource", "float32",
                                                                             units="kg")])
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    with worldstore.create(path, spec, history_codec=codec) as world:
        fill(world, rng, layers=(LAYER,))  # history.py's fields; the same generator then picks the bands
        for index in range(snapshots):
            change(world, rng, share=0.05, layers=(LAYER,))  # 5% of the rows, then a step
            world.snapshot()
            progress(f"  snapshot {index + 1}/{snapshots}")
        stored = sum(record["bytes"] for record in world.history())
    fsync(path)
    return {"create_s": time.perf_counter() - started, "stored_bytes": stored, "file_bytes": os.path.getsize(path)}


def drop_page_cache(path: str) -> None:
    """Drop the file's (clean, fsynced) pages from the page cache: the next read comes from the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


# -- the methods -------------------------------------------------------------------------------------------
def sum_snapshots(path: str, first: int, last: int) -> np.ndarray:
    """Sum of snapshots [first, last) of the layer, read one at a time (the numpy loop)."""
    with h5py.File(path, "r") as f:
        dset = f[f"history/{LAYER}"]
        total = np.zeros(dset.shape[1:], dtype=np.float32)
        for index in range(first, last):
            total += dset[index]
    return total


def numpy_mean(path: str, snapshots: int) -> np.ndarray:
    total = sum_snapshots(path, 0, snapshots)
    total /= np.float32(snapshots)
    return total


def processes_mean(pool: concurrent.futures.ProcessPoolExecutor, workers: int, path: str,
                   snapshots: int) -> np.ndarray:
    bounds = np.linspace(0, snapshots, workers + 1).astype(int)
    parts = [pool.submit(sum_snapshots, path, int(a), int(b)) for a, b in itertools.pairwise(bounds) if b > a]
    total = parts[0].result()
    for part in parts[1:]:
        total += part.result()
    total /= np.float32(snapshots)
    return total


def dask_mean(client: Any, path: str, chunks: str) -> tuple[np.ndarray, int]:
    ds = to_xarray(path, layers=[LAYER], chunks=chunks)
    mean = ds[LAYER].mean("step", skipna=False)  # a plain mean, as the numpy loop's (no NaN count)
    tasks = len(mean.data.__dask_graph__())
    return client.compute(mean.data).result(), tasks


# -- the run --------------------------------------------------------------------------------------------------
def measure(path: str, snapshots: int, workers: int, rounds: int,
            progress: Callable[[str], None]) -> dict[str, Any]:
    from dask.distributed import Client, LocalCluster

    started = time.perf_counter()
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as client, \
            concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        client.run(importlib.import_module, "worldstore.analysis")  # imported now, not in the first timed run
        corner = to_xarray(path, layers=[LAYER])[LAYER][:, :1, :1].mean("step", skipna=False)
        client.compute(corner.data).result()  # the first computation's set-up (serializers...) is not timed
        list(pool.map(worker_pid, range(workers)))  # the processes start now, not in the first timed run
        start_s = time.perf_counter() - started
        return timed_rounds(path, snapshots, workers, rounds, client, pool, start_s, progress)


def timed_rounds(path: str, snapshots: int, workers: int, rounds: int, client: Any,
                 pool: concurrent.futures.ProcessPoolExecutor, start_s: float,
                 progress: Callable[[str], None]) -> dict[str, Any]:
    reference = numpy_mean(path, snapshots)
    runs: dict[str, Callable[[], Any]] = {
        "numpy": lambda: (numpy_mean(path, snapshots), None),
        "numpy_processes": lambda: (processes_mean(pool, workers, path, snapshots), None),
        "dask_auto": lambda: dask_mean(client, path, "auto"),
        "dask_file": lambda: dask_mean(client, path, "file"),
    }
    times: dict[str, dict[str, list[float]]] = {m: {"cold": [], "warm": []} for m in METHODS}
    tasks: dict[str, int | None] = {}
    worst = 0.0
    for round_no in range(rounds):
        shift = round_no % len(METHODS)
        for method in METHODS[shift:] + METHODS[:shift]:
            for state in ("cold", "warm"):
                if state == "cold":
                    drop_page_cache(path)
                start = time.perf_counter()
                result, count = runs[method]()
                times[method][state].append(time.perf_counter() - start)
                tasks[method] = count
                worst = max(worst, float(np.max(np.abs(result - reference))))
                del result
            progress(f"  round {round_no + 1}/{rounds} {method}: cold {times[method]['cold'][-1]:.2f} s, "
                     f"warm {times[method]['warm'][-1]:.2f} s")
    scale = float(np.max(np.abs(reference))) or 1.0
    methods = {m: {"cold_s": statistics.median(t["cold"]), "warm_s": statistics.median(t["warm"]),
                   "cold_round_s": t["cold"], "warm_round_s": t["warm"], "tasks": tasks[m]}
               for m, t in times.items()}
    return {"cluster_start_s": start_s, "methods": methods,
            "max_abs_diff": worst, "agree": worst <= 1e-5 * scale}


def worker_pid(_: Any) -> int:
    return os.getpid()


def print_report(report: dict[str, Any]) -> None:
    m, w = report["machine"], report["world"]
    print("worldstore benchmark: analysis of a history with Dask (benchmarks/analysis.py)")
    if report["quick"]:
        print("QUICK MODE: a small world; a smoke test, not the performance claim.")
    print(f"machine   {m['cpu_model']}, {m['cores']} cores, Linux {m['kernel']}, {m['filesystem']} at {w['directory']}, "
          f"load average {m['load_average_at_start'][0]:.2f} at the start")
    print(f"world     one {w['height']} x {w['width']} float32 layer, {w['snapshots']} snapshots: "
          f"{_bytes_text(w['history_bytes'])} of history, {_bytes_text(w['stored_bytes'])} stored "
          f"({w['codec']}); created in {w['create_s']:.1f} s")
    print(f"dask      LocalCluster of {report['workers']} worker processes x 1 thread (it and the "
          f"process pool started and warmed up in {report['cluster_start_s']:.1f} s, not timed); reduction: ds[{LAYER!r}].mean('step', skipna=False)")
    print(f"rounds    {report['rounds']} (medians); cold = the file's pages dropped from the page cache first")
    print()
    methods, speed = report["methods"], report["speedup"]
    print(f"{'method':32s} {'tasks':>6s} {'cold':>9s} {'warm':>9s} {'speedup cold':>13s} {'speedup warm':>13s}")
    for name in METHODS:
        row = methods[name]
        label = LABELS[name].format(workers=report["workers"])
        tasks = "" if row["tasks"] is None else str(row["tasks"])
        print(f"{label:32s} {tasks:>6s} {row['cold_s']:>7.2f} s {row['warm_s']:>7.2f} s "
              f"{speed[name]['cold']:>12.2f}x {speed[name]['warm']:>12.2f}x")
    print("(speedup: numpy loop time / the method's time; tasks: tasks in the Dask graph)")
    print(f"results agree with the numpy loop: {'yes' if report['agree'] else 'NO'} "
          f"(largest difference {report['max_abs_diff']:.2g})")
    print(f"total run time {report['wall_s']:.0f} s")


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser(__doc__, "a 1024 x 1024 world with 4 snapshots (seconds; for CI)",
                              "timed rounds of every method (default 3, --quick 1)")
    parser.add_argument("--codec", choices=CODECS, default="gzip",
                        help="history codec of the world (default gzip, worldstore's default)")
    parser.add_argument("--workers", type=int, default=2, help="Dask workers and hand-made processes (default 2)")
    args, config, rounds = parse_benchmark_args(parser, argv, FULL, QUICK)
    if args.workers < 1:
        parser.error(f"--workers must be >= 1, got {args.workers}")
    try:
        import dask.distributed  # noqa: F401
        import xarray  # noqa: F401
    except ImportError as exc:
        print(f"error: this benchmark needs xarray, Dask and distributed ({exc.name} is missing): "
              "pip install 'worldstore[analysis]'", file=sys.stderr)
        return 2
    shape, snapshots = config["shape"], config["snapshots"]
    layer_bytes = shape[0] * shape[1] * 4
    history_bytes = layer_bytes * snapshots
    problem = room_error(args.dir, history_bytes + layer_bytes + (512 << 20),
                         (2 + 2 * args.workers) * layer_bytes + (1 << 30))
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    progress = progress_printer(args.json)
    started = time.perf_counter()
    directory = tempfile.mkdtemp(prefix="worldstore-analysis-", dir=args.dir)
    try:
        machine = machine_info(directory)
        machine["load_average_at_start"] = list(os.getloadavg())  # other work on the cores shows here
        path = os.path.join(directory, "world.h5")
        progress(f"creating a {shape[0]} x {shape[1]} world with {snapshots} snapshots ({args.codec}) ...")
        world = build_world(path, shape, snapshots, args.codec, progress)
        progress("measuring ...")
        result = measure(path, snapshots, args.workers, rounds, progress)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    methods = result["methods"]
    base = methods["numpy"]
    report = {
        "benchmark": "worldstore analysis",
        "quick": bool(args.quick),
        "machine": machine,
        "world": {"height": shape[0], "width": shape[1], "layer": LAYER, "dtype": "float32",
                  "snapshots": snapshots, "layer_bytes": layer_bytes, "history_bytes": history_bytes,
                  "codec": args.codec, "directory": args.dir, **world},
        "workers": args.workers,
        "threads_per_worker": 1,
        "rounds": rounds,
        "reduction": f"ds[{LAYER!r}].mean('step', skipna=False)",
        **result,
        "speedup": {name: {state: base[f"{state}_s"] / row[f"{state}_s"] for state in ("cold", "warm")}
                    for name, row in methods.items()},
    }
    return emit(report, args.json, started, print_report)


if __name__ == "__main__":
    sys.exit(main())
