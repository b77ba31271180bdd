"""Observations: per-agent windows batched for a model, at memory-bandwidth speed?

Every simulation step each agent gets a C x S x S window of the world around
itself (S = 2R+1), batched into one (N, C, S, S) float32 array for a torch
model. worldstore's ``World.observe`` gathers it; this script measures, in one
run, on a world of 8 float32 channels of 8192 x 8192 (2 GiB), twice: held
``mapped`` (the world file mapped into the process) and ``memory`` (in RAM):

- the main case, N = 1,024 agents, R = 16 (a 35.7 MB batch), and
- large perception, N = 256 agents, R = 64 (a 136 MB batch).

For each case, every round draws fresh random agent positions (the same for
both worlds; windows may cross the border) and times ``observe(...,
out=buffer)`` on the mapped and on the memory world, alternating which goes
first. Figures:

- mapped / memory: the median of the per-round ratios (target <= 1.05);
- gather throughput: batch bytes / median time of the memory world, as a
  fraction of single-thread memcpy bandwidth (``np.copyto`` of 256 MiB,
  five copies just before and five just after the case's observe rounds,
  median; target >= 0.5). The machine's memory bus is shared and its speed
  drifts, so the copy is measured next to the gather, not once at the start
  of the run. The best round against the best copy is shown too, and the
  CPU time the hypervisor took from this virtual machine during the rounds
  (steal, from /proc/stat) where there was any. The gather splits the agents over
  the process's CPUs (``WORLDSTORE_THREADS``); the one-thread figure is shown
  too;
- the methods, on the memory world's arrays and positions whose windows lie
  inside the world (so every method does the same work): the compiled kernel
  (what observe uses), numpy over a strided window view (observe's fallback),
  torch (``unfold`` views and advanced indexing), a per-agent Python loop of
  numpy slices (``worldstore._windows``, the test reference), and per-agent
  h5py dataset slicing of the closed world file (what a user of plain HDF5
  would write; timed on fewer agents and scaled, since it is slow);
- ``into=True``: the batch written into the world's mapped OBSERVATION layer
  (the main case), so other processes can read it;
- with CUDA: ``observe(..., device="cuda")`` (gather into a page-locked
  buffer, then an asynchronous copy), against the CPU gather alone.

Run from the repository root:

    python benchmarks/observe.py            # 2 GiB worlds, about a minute
    python benchmarks/observe.py --quick    # 1024 x 1024 worlds, seconds (a smoke test for CI)
    python benchmarks/observe.py --json     # one JSON object on stdout

Needs about 4.3 GiB of free disk (two worlds) under ``--dir`` and about 7 GiB
of available RAM; the script checks both first.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
# Shared with the sibling benchmarks: the option parser, the machine description, free memory, a timer.
from layers import (benchmark_parser, emit, machine_info, parse_benchmark_args,  # noqa: E402
                    progress_printer, room_error, _time_text, timed)

import worldstore  # noqa: E402
from worldstore import _extras, _native, _windows  # noqa: E402
from worldstore.observe import gather_strided  # noqa: E402

import h5py  # noqa: E402

KINDS = ("mapped", "memory")
CHANNELS = tuple(f"C{i}" for i in range(8))
MAPPED_TARGET = 1.05
BANDWIDTH_TARGET = 0.5

FULL = {"shape": (8192, 8192), "cases": [(1024, 16), (256, 64)], "rounds": 15, "slow_agents": 64}
QUICK = {"shape": (1024, 1024), "cases": [(128, 16), (32, 64)], "rounds": 3, "slow_agents": 16}


# -- the worlds -----------------------------------------------------------------------
def world_spec(shape: tuple[int, int], kind: str, agents: int, radius: int) -> worldstore.WorldSpec:
    layers = [worldstore.LayerSpec(name, "resource", "float32", pad_value=-1.0, storage=kind) for name in CHANNELS]
    layers.append(worldstore.LayerSpec("OBSERVATION", "observation", "float32", channels=CHANNELS, radius=radius))
    return worldstore.WorldSpec(shape[0], shape[1], agents, layers)


def fill(world: worldstore.World) -> None:
    """A different, non-trivial pattern per channel (row by row: no 256 MiB temporaries)."""
    height, width = world.shape
    ramp = np.arange(width, dtype=np.float32)
    for index, name in enumerate(CHANNELS):
        array = world[name].numpy()
        for y in range(0, height, 512):
            array[y:y + 512] = (ramp[None, :] * 1e-3 + np.arange(y, min(y + 512, height))[:, None] * 1e-4
                                + index).astype(np.float32)


def positions_for(rng: np.random.Generator, shape: tuple[int, int], count: int, margin: int = 0) -> np.ndarray:
    return np.stack([rng.integers(margin, shape[0] - margin, count),
                     rng.integers(margin, shape[1] - margin, count)], axis=1).astype(np.int64)


class Memcpy:
    """Single-thread ``np.copyto`` of 256 MiB (both buffers touched first), timed around the gathers.

    The memory bus of a shared machine is not equally fast all the time (on
    this project's machine random reads slow down by up to 1.5x for seconds
    at a time, while streaming copies barely change), so each case times five
    copies just before its observe rounds and five just after, and compares
    the gather with the median of those ten. Not between rounds: a 13 ms copy
    on one CPU leaves the other idle and evicts the caches, and the gather
    after it measured up to 1.5x slower than in a steady observe loop.
    """

    def __init__(self, quick: bool):
        self.source = np.ones((16 if quick else 64) << 20, dtype=np.float32)
        self.target = np.zeros_like(self.source)
        self.samples: list[float] = []
        self.sample(3)  # page faults and first touches
        self.samples.clear()

    def sample(self, count: int = 5) -> None:
        """Time ``count`` copies (bytes copied per second each)."""
        for _ in range(count):
            self.samples.append(self.source.nbytes / timed(lambda: np.copyto(self.target, self.source))[0])


def steal_seconds() -> float | None:
    """CPU time the hypervisor gave to others while this machine's CPUs wanted it (Linux /proc/stat), or None."""
    try:
        with open("/proc/stat") as stat:
            fields = stat.readline().split()
        return int(fields[8]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


# -- methods (memory world arrays, windows inside the world) ---------------------------------
#: torch is an optional extra (worldstore[torch]): without it the benchmark leaves its gather out.
HAVE_TORCH = _extras.has_torch()


def gather_torch(arrays: list[np.ndarray], positions: np.ndarray, radius: int, out: np.ndarray) -> None:
    import torch

    side = 2 * radius + 1
    out_t = torch.from_numpy(out)
    ys = torch.from_numpy(positions[:, 0] - radius)
    xs = torch.from_numpy(positions[:, 1] - radius)
    for channel, array in enumerate(arrays):
        windows = torch.from_numpy(array).unfold(0, side, 1).unfold(1, side, 1)
        out_t[:, channel] = windows[ys, xs]


def gather_loop(arrays: list[np.ndarray], positions: np.ndarray, radius: int, out: np.ndarray) -> None:
    _windows.gather_channels([(array, -1.0) for array in arrays], positions, radius, out=out)


def gather_h5py(path: str, positions: np.ndarray, radius: int, out: np.ndarray) -> None:
    """What a user of plain HDF5 writes: per agent and channel, a dataset slice (padded by hand)."""
    with h5py.File(path, "r") as f:
        datasets = [f[f"layers/{name}"] for name in CHANNELS]
        height, width = datasets[0].shape
        for i, (y, x) in enumerate(positions):
            rows, cols, win_rows, win_cols = _windows.window_slices(int(y), int(x), radius, height, width)
            for channel, dataset in enumerate(datasets):
                out[i, channel] = -1.0
                out[i, channel, win_rows, win_cols] = dataset[rows, cols]


def compiled(arrays: list[np.ndarray], positions: np.ndarray, radius: int, out: np.ndarray, threads: int) -> None:
    saved, _native.threads = _native.threads, threads
    try:
        _native.gather_f32([(c, array, -1.0) for c, array in enumerate(arrays)], positions, radius, out)
    finally:
        _native.threads = saved


def strided(arrays: list[np.ndarray], positions: np.ndarray, radius: int, out: np.ndarray) -> None:
    for channel, array in enumerate(arrays):
        gather_strided(array, positions, radius, out[:, channel], -1.0)


# -- one case ----------------------------------------------------------------------------------
def run_case(worlds: dict[str, worldstore.World], mapped_path: str, agents: int, radius: int, rounds: int,
             slow_agents: int, memcpy: Memcpy, seed: int, progress) -> dict[str, Any]:
    shape = worlds["memory"].shape
    side = 2 * radius + 1
    rng = np.random.default_rng(seed)
    buffers = {kind: np.zeros((agents, len(CHANNELS), side, side), np.float32) for kind in KINDS}
    batch_bytes = buffers["memory"].nbytes
    for kind in KINDS:  # warm-up: page faults of the buffers and of first touches
        worlds[kind].observe(positions_for(rng, shape, agents), radius, CHANNELS, out=buffers[kind])
    times: dict[str, list[float]] = {kind: [] for kind in KINDS}
    first_sample = len(memcpy.samples)
    memcpy.sample()
    steal_before = steal_seconds()
    for round_no in range(rounds):
        positions = positions_for(rng, shape, agents)
        order = KINDS if round_no % 2 == 0 else KINDS[::-1]
        for kind in order:
            times[kind].append(timed(lambda k=kind: worlds[k].observe(positions, radius, CHANNELS,
                                                                       out=buffers[k]))[0])
        np.testing.assert_array_equal(buffers["mapped"], buffers["memory"])
    steal_after = steal_seconds()
    memcpy.sample()
    copies = memcpy.samples[first_sample:]
    ratios = [m / r for m, r in zip(times["mapped"], times["memory"])]
    memory_s = statistics.median(times["memory"])

    arrays = [worlds["memory"][name].numpy() for name in CHANNELS]
    out = buffers["memory"]
    methods: dict[str, float] = {}
    inner_rounds = rounds

    def median_of(func, count: int, positions_count: int) -> float:
        result = []
        for _ in range(count):
            positions = positions_for(rng, shape, positions_count, radius)
            result.append(timed(lambda: func(positions))[0])
        return statistics.median(result)

    if _native.library is not None:  # built without a compiler (or WORLDSTORE_NATIVE=0): no kernel to time
        methods["compiled"] = median_of(lambda p: compiled(arrays, p, radius, out, _native.threads), inner_rounds,
                                        agents)
        methods["compiled_1_thread"] = median_of(lambda p: compiled(arrays, p, radius, out, 1), inner_rounds, agents)
    methods["strided_numpy"] = median_of(lambda p: strided(arrays, p, radius, out), inner_rounds, agents)
    if HAVE_TORCH:  # an optional extra: without it, the case has no torch column
        gather_torch(arrays, positions_for(rng, shape, 1, radius), radius, out[:1])  # torch's first call sets up
        methods["torch"] = median_of(lambda p: gather_torch(arrays, p, radius, out), inner_rounds, agents)
    methods["python_loop"] = median_of(lambda p: gather_loop(arrays, p, radius, out), 1, agents)
    # h5py: timed on slow_agents agents, scaled to the case's agent count.
    small = np.zeros((slow_agents, len(CHANNELS), side, side), np.float32)
    methods["h5py_slicing"] = median_of(lambda p: gather_h5py(mapped_path, p, radius, small), 1,
                                      slow_agents) * agents / slow_agents
    check = positions_for(rng, shape, min(agents, 32), radius)
    reference, got = np.zeros((len(check), len(CHANNELS), side, side), np.float32), np.zeros_like(small[:0])
    gather_loop(arrays, check, radius, reference)
    for name, func in (("torch", gather_torch), ("strided", strided))[0 if HAVE_TORCH else 1:]:
        got = np.zeros_like(reference)
        func(arrays, check, radius, got)
        if not np.array_equal(got, reference):
            raise RuntimeError(f"the {name} gather disagrees with the reference")
    bandwidth = statistics.median(copies)
    result = {
        "agents": agents, "radius": radius, "side": side, "channels": len(CHANNELS), "batch_bytes": batch_bytes,
        "observe_s": {kind: statistics.median(values) for kind, values in times.items()},
        "observe_round_s": times,
        "mapped_over_memory": statistics.median(ratios),
        "ratio_range": [min(ratios), max(ratios)],
        "throughput_bytes_per_s": batch_bytes / memory_s,
        "memcpy_bytes_per_s": bandwidth,
        "memcpy_range_bytes_per_s": [min(copies), max(copies)],
        "throughput_over_memcpy": batch_bytes / memory_s / bandwidth,
        "best_over_best_memcpy": batch_bytes / min(times["memory"]) / max(copies),
        "steal_s": None if steal_before is None or steal_after is None else steal_after - steal_before,
        "methods_s": methods,
        "methods_throughput_over_memcpy": {name: batch_bytes / seconds / bandwidth for name, seconds in methods.items()},
        "speedup_over_python_loop": methods["python_loop"] / memory_s,
        "speedup_over_h5py_slicing": methods["h5py_slicing"] / memory_s,
        "h5py_agents_timed": slow_agents,
    }
    progress(f"  N={agents} R={radius}: observe memory {memory_s * 1e3:.2f} ms, mapped/memory "
             f"{result['mapped_over_memory']:.3f}, {result['throughput_over_memcpy']:.2f} of memcpy")
    return result


def into_case(world: worldstore.World, agents: int, rounds: int, seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    world.observe(positions_for(rng, world.shape, agents), into=True)  # warm-up
    times = [timed(lambda: world.observe(positions_for(rng, world.shape, agents), into=True))[0]
             for _ in range(rounds)]
    return {"agents": agents, "observe_into_s": statistics.median(times)}


def cuda_case(world: worldstore.World, agents: int, radius: int, rounds: int, seed: int) -> dict[str, Any] | None:
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    rng = np.random.default_rng(seed)
    side = 2 * radius + 1
    out = torch.empty((agents, len(CHANNELS), side, side), device="cuda")
    cpu = np.zeros((agents, len(CHANNELS), side, side), np.float32)

    def to_gpu(positions):
        world.observe(positions, radius, CHANNELS, device="cuda", out=out)
        torch.cuda.synchronize()

    to_gpu(positions_for(rng, world.shape, agents))
    gpu_times, cpu_times = [], []
    for _ in range(rounds):
        positions = positions_for(rng, world.shape, agents)
        gpu_times.append(timed(lambda: to_gpu(positions))[0])
        cpu_times.append(timed(lambda: world.observe(positions, radius, CHANNELS, out=cpu))[0])
    np.testing.assert_array_equal(out.cpu().numpy(), world.observe(positions, radius, CHANNELS))
    return {"device": torch.cuda.get_device_name(), "agents": agents, "radius": radius,
            "observe_cuda_s": statistics.median(gpu_times), "observe_cpu_s": statistics.median(cpu_times)}


# -- report ------------------------------------------------------------------------------------
def print_report(report: dict[str, Any]) -> None:
    m, w = report["machine"], report["world"]
    print("worldstore benchmark: observation windows (benchmarks/observe.py)")
    if report["quick"]:
        print("QUICK MODE: small worlds; a smoke test, not the performance claim.")
    print(f"machine   {m['cpu_model']}, {m['cores']} cores, {(m['ram_bytes'] or 0) / 2**30:.1f} GiB RAM, "
          f"Linux {m['kernel']}, {m['filesystem']}; gather threads {report['threads']}")
    print(f"world     {w['height']} x {w['width']} x {w['channels']} float32 channels "
          f"({w['bytes'] / 2**30:.2f} GiB), one mapped and one memory world; {report['rounds']} rounds")
    print(f"memcpy    np.copyto, one thread, {report['memcpy_copy_bytes'] >> 20} MiB, five before and five after each case's rounds")
    print()
    for case in report["cases"]:
        print(f"N = {case['agents']:,} agents, R = {case['radius']} ({case['channels']} x {case['side']} x "
              f"{case['side']} windows, a {case['batch_bytes'] / 1e6:.1f} MB batch):")
        obs = case["observe_s"]
        print(f"  observe: mapped {_time_text(obs['mapped'])}, memory {_time_text(obs['memory'])}; mapped/memory "
              f"{case['mapped_over_memory']:.3f} (rounds {case['ratio_range'][0]:.3f}..{case['ratio_range'][1]:.3f})")
        low, high = case["memcpy_range_bytes_per_s"]
        print(f"  throughput {case['throughput_bytes_per_s'] / 1e9:.1f} GB/s = "
              f"{case['throughput_over_memcpy']:.2f} of memcpy ({case['memcpy_bytes_per_s'] / 1e9:.1f} GB/s, median "
              f"of 10 copies around the rounds, {low / 1e9:.1f}..{high / 1e9:.1f}); best round against "
              f"best copy {case['best_over_best_memcpy']:.2f}")
        if case["steal_s"]:
            print(f"  (hypervisor steal during the observe rounds: {case['steal_s'] * 1e3:.0f} ms of CPU time given "
                  f"to others)")
        print("  methods (windows inside the world):")
        for name, seconds in case["methods_s"].items():
            print(f"    {name:<18} {_time_text(seconds):>10}  {case['methods_throughput_over_memcpy'][name]:.3f} of memcpy")
        print(f"  observe is {case['speedup_over_python_loop']:.1f}x a per-agent Python loop and "
              f"{case['speedup_over_h5py_slicing']:.0f}x per-agent h5py slicing (timed on "
              f"{case['h5py_agents_timed']} agents, scaled)")
    into = report["into"]
    print(f"into=True (the mapped OBSERVATION layer, N = {into['agents']}): {_time_text(into['observe_into_s'])}")
    cuda = report["cuda"]
    if cuda:
        print(f"CUDA ({cuda['device']}): observe(device='cuda') {_time_text(cuda['observe_cuda_s'])} "
              f"vs CPU gather {_time_text(cuda['observe_cpu_s'])}")
    else:
        print("CUDA: no GPU here (device='cuda' not measured)")
    print()
    targets, verdict = report["targets"], report["pass"]
    print(f"mapped/memory <= {targets['mapped_over_memory']:.2f} in every case: {'yes' if verdict['mapped'] else 'NO'}")
    print(f"gather throughput >= {targets['throughput_over_memcpy']:.1f} of memcpy in every case: "
          f"{'yes' if verdict['throughput'] else 'NO'}")
    print(f"total run time {report['wall_s']:.0f} s")


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser(__doc__, "1024 x 1024 worlds, fewer agents and rounds (seconds; for CI)",
                              "timed rounds per case (default 15, --quick 3)")
    args, config, rounds = parse_benchmark_args(parser, argv, FULL, QUICK)
    shape = config["shape"]
    layer_bytes = shape[0] * shape[1] * 4
    world_bytes = layer_bytes * len(CHANNELS)
    problem = room_error(args.dir, 2 * world_bytes + (256 << 20), 3 * world_bytes + (1 << 30))
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    progress = progress_printer(args.json)

    started = time.perf_counter()
    directory = tempfile.mkdtemp(prefix="worldstore-observe-", dir=args.dir)
    worlds: dict[str, worldstore.World] = {}
    try:
        machine = machine_info(directory)
        memcpy = Memcpy(bool(args.quick))
        main_agents, main_radius = config["cases"][0]
        paths = {kind: os.path.join(directory, f"{kind}.h5") for kind in KINDS}
        progress(f"creating two {world_bytes / 2**30:.1f} GiB worlds ...")
        for kind in KINDS:
            worlds[kind] = worldstore.create(paths[kind], world_spec(shape, kind, main_agents, main_radius))
            fill(worlds[kind])
        worlds["mapped"].flush()
        # h5py must open the mapped world's file while the world is open for writing: it reads a copy.
        h5_copy = os.path.join(directory, "h5py.h5")
        worlds["mapped"].close()
        shutil.copyfile(paths["mapped"], h5_copy)
        worlds["mapped"] = worldstore.open(paths["mapped"], "r+")
        cases = [run_case(worlds, h5_copy, agents, radius, rounds, config["slow_agents"], memcpy, 10 + i, progress)
                 for i, (agents, radius) in enumerate(config["cases"])]
        into = into_case(worlds["mapped"], main_agents, rounds, 99)
        cuda = cuda_case(worlds["memory"], main_agents, main_radius, rounds, 98)
    finally:
        for world in worlds.values():
            world.close()
        shutil.rmtree(directory, ignore_errors=True)

    report = {
        "benchmark": "worldstore observation windows",
        "quick": bool(args.quick),
        "machine": machine,
        "world": {"height": shape[0], "width": shape[1], "channels": len(CHANNELS), "dtype": "float32",
                  "bytes": world_bytes, "directory": args.dir},
        "rounds": rounds,
        "threads": _native.threads,
        "compiled_kernels": _native.library is not None,
        "memcpy_copy_bytes": memcpy.source.nbytes,
        "memcpy_samples_bytes_per_s": memcpy.samples,
        "cases": cases,
        "into": into,
        "cuda": cuda,
        "targets": {"mapped_over_memory": MAPPED_TARGET, "throughput_over_memcpy": BANDWIDTH_TARGET},
        "pass": {
            "mapped": all(case["mapped_over_memory"] <= MAPPED_TARGET for case in cases),
            "throughput": all(case["throughput_over_memcpy"] >= BANDWIDTH_TARGET for case in cases),
        },
    }
    return emit(report, args.json, started, print_report)


if __name__ == "__main__":
    sys.exit(main())
