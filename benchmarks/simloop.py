"""A realistic simulation loop, persisted every step, side by side (issue 15).

The loop a new user writes (as tried in issue 15): 500 agents on a grid with
three layers (resources, obstacles, a decaying trail). Each step the agents
observe 3 channels at R = 4, move one cell, consume the resources under them,
deposit a trail, and the trail decays (x 0.95, values below 0.01 dropped).
The same loop, with the same random moves, runs on:

  numpy (RAM)             plain arrays, no persistence: the floor
  memmap + flush          numpy.memmap files, .flush() (msync) after the step
                          (every step, or every 10): AgentFarm's memmap managers
  worldstore              world.observe, the layers' numpy() views,
                          world.deposit and world.step(), then world.commit()
                          (durable=False or True; every step, or every 10).
                          The trail is stored as the AgentFarm preset stores its
                          signal layers (sparse, switching to dense past
                          worldstore.DEFAULT_SWITCH_DENSITY); two more runs store
                          it dense (mapped), a plain LayerSpec's default

The windows of the numpy backends are gathered with one vectorised numpy
indexing (cells outside the grid read the pad value); worldstore's come from
world.observe. After each round every backend's final layers must equal the
numpy ones (the report says so). Rounds run every backend once, in a rotating
order, from the same start; figures are medians of per-round ratios.

    python benchmarks/simloop.py            # 2048^2 (200 steps) and 8192^2 (50 steps), 3 rounds
    python benchmarks/simloop.py --quick    # 256^2, 20 steps (seconds; for CI)
    python benchmarks/simloop.py --json
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
from layers import (benchmark_parser, emit, machine_info, parse_benchmark_args, progress_printer,  # noqa: E402
                    room_error)

import worldstore  # noqa: E402
from worldstore import LayerSpec, WorldSpec  # noqa: E402

FULL = {"rounds": 3, "sizes": [(2048, 200), (8192, 50)]}
QUICK = {"rounds": 2, "sizes": [(256, 20)]}
AGENTS = 500
R = 4
DECAY, THRESHOLD = np.float32(0.95), np.float32(0.01)
CHANNELS = ("RESOURCES", "OBSTACLES", "TRAILS")
PADS = (0.0, 1.0, 0.0)


def world_spec(size: int, trails: str) -> WorldSpec:
    """The loop's world. ``trails``: "sparse" as the AgentFarm preset's signal layers (switching to dense past
    worldstore.DEFAULT_SWITCH_DENSITY), or "mapped" (a plain LayerSpec's default)."""
    storage = ({"storage": "sparse", "switch_density": worldstore.DEFAULT_SWITCH_DENSITY} if trails == "sparse"
               else {"storage": "mapped"})
    return WorldSpec(size, size, AGENTS, [
        LayerSpec("RESOURCES", "resource", "float32", 1.0),
        LayerSpec("OBSTACLES", "environment", "bool", False, pad_value=True),
        LayerSpec("TRAILS", "temporal", "float32", 0.0, decay=float(DECAY), threshold=float(THRESHOLD), **storage),
    ])


def start_positions(size: int) -> np.ndarray:
    return np.random.default_rng(7).integers(0, size, (AGENTS, 2))


def all_moves(steps: int) -> np.ndarray:
    return np.random.default_rng(8).integers(-1, 2, (steps, AGENTS, 2))


def gather(layers: list[np.ndarray], positions: np.ndarray) -> np.ndarray:
    """(N, 3, 2R+1, 2R+1) float32 windows, cells outside the grid at the channel's pad: plain numpy."""
    size = layers[0].shape[0]
    offsets = np.arange(-R, R + 1)
    ys = positions[:, 0, None, None] + offsets[None, :, None]
    xs = positions[:, 1, None, None] + offsets[None, None, :]
    inside = (ys >= 0) & (ys < size) & (xs >= 0) & (xs < size)
    yc, xc = np.clip(ys, 0, size - 1), np.clip(xs, 0, size - 1)
    out = np.empty((len(positions), len(layers), 2 * R + 1, 2 * R + 1), np.float32)
    for c, (layer, pad) in enumerate(zip(layers, PADS)):
        out[:, c] = np.where(inside, layer[yc, xc], np.float32(pad))
    return out


def numpy_step(layers: list[np.ndarray], positions: np.ndarray, moves: np.ndarray) -> np.ndarray:
    resources, _, trails = layers
    gather(layers, positions)
    positions = np.clip(positions + moves, 0, resources.shape[0] - 1)
    ys, xs = positions[:, 0], positions[:, 1]
    resources[ys, xs] -= np.minimum(resources[ys, xs], np.float32(0.1))
    np.add.at(trails, (ys, xs), np.float32(1.0))
    np.multiply(trails, DECAY, out=trails)
    trails *= np.abs(trails) >= THRESHOLD
    return positions


class Numpy:
    def __init__(self, directory: str, size: int, label: str = "numpy (RAM)", every: int = 0):
        self.name, self.every = label, every
        self.layers = [np.ones((size, size), np.float32), np.zeros((size, size), bool),
                       np.zeros((size, size), np.float32)]

    def reset(self) -> None:
        self.layers[0][...] = 1
        self.layers[2][...] = 0

    def run(self, positions: np.ndarray, moves: np.ndarray) -> None:
        for step, move in enumerate(moves, start=1):
            positions = numpy_step(self.layers, positions, move)
            self.persist(step)

    def persist(self, step: int) -> None:
        pass

    def final(self) -> list[np.ndarray]:
        return [np.array(layer) for layer in self.layers]

    def close(self) -> None:
        pass


class Memmap(Numpy):
    def __init__(self, directory: str, size: int, every: int = 1):
        super().__init__(directory, size, f"memmap + flush, every {every}", every)
        self.layers = [np.memmap(os.path.join(directory, f"{name}-{size}-{every}.raw"), dtype, "w+", shape=(size, size))
                       for name, dtype in zip(CHANNELS, (np.float32, bool, np.float32))]
        self.reset()
        self.persist(0)

    def persist(self, step: int) -> None:
        if step % self.every == 0:
            for layer in self.layers:
                layer.flush()


class World:
    def __init__(self, directory: str, size: int, durable: bool, every: int, trails: str = "sparse"):
        self.name = f"worldstore, durable={durable}, every {every}" + ("" if trails == "sparse" else f", {trails} trails")
        self.durable, self.every = durable, every
        path = os.path.join(directory, f"world-{size}-{int(durable)}-{every}-{trails}.h5")
        self.world = worldstore.create(path, world_spec(size, trails))

    def reset(self) -> None:
        self.world["RESOURCES"].numpy()[...] = 1
        ys, xs = np.nonzero(self.world["TRAILS"].numpy())
        if len(ys):
            self.world.deposit("TRAILS", ys, xs, 0.0, mode="set")
        self.world.commit(durable=self.durable)

    def run(self, positions: np.ndarray, moves: np.ndarray) -> None:
        world = self.world
        resources = world["RESOURCES"].numpy()
        size = resources.shape[0]
        for step, move in enumerate(moves, start=1):
            world.observe(positions, R, list(CHANNELS))
            positions = np.clip(positions + move, 0, size - 1)
            ys, xs = positions[:, 0], positions[:, 1]
            resources[ys, xs] -= np.minimum(resources[ys, xs], np.float32(0.1))
            world.deposit("TRAILS", ys, xs, 1.0)
            world.step()
            if step % self.every == 0:
                world.commit(durable=self.durable)

    def final(self) -> list[np.ndarray]:
        return [np.array(self.world[name].numpy()) for name in CHANNELS]

    def close(self) -> None:
        self.world.close()


def run_size(directory: str, size: int, steps: int, rounds: int, progress) -> dict[str, Any]:
    backends: list[Any] = [Numpy(directory, size), Memmap(directory, size, 1), Memmap(directory, size, 10),
                           World(directory, size, False, 1), World(directory, size, True, 1),
                           World(directory, size, False, 10), World(directory, size, True, 10),
                           World(directory, size, False, 1, "mapped"), World(directory, size, True, 1, "mapped")]
    moves = all_moves(steps)
    times: dict[str, list[float]] = {b.name: [] for b in backends}
    agree = True
    try:
        for round_ in range(rounds):
            order = backends[round_ % len(backends):] + backends[:round_ % len(backends)]
            finals = {}
            for backend in order:
                backend.reset()
                started = time.perf_counter()
                backend.run(start_positions(size), moves)
                times[backend.name].append(time.perf_counter() - started)
                finals[backend.name] = backend.final()
            reference = finals[backends[0].name]
            for name, layers in finals.items():
                agree = agree and all(np.array_equal(a, b) for a, b in zip(layers, reference))
            progress(f"{size}^2: round {round_ + 1}/{rounds} done")
    finally:
        for backend in backends:
            backend.close()

    def ratio(ours: str, theirs: str) -> float:
        return statistics.median(o / t for o, t in zip(times[ours], times[theirs]))

    numpy_name, memmap1, memmap10 = backends[0].name, backends[1].name, backends[2].name
    return {
        "size": size, "steps": steps,
        "seconds": {name: statistics.median(values) for name, values in times.items()},
        "ratios": {
            "durable=False every step / numpy": ratio(backends[3].name, numpy_name),
            "durable=True every step / memmap + flush every step": ratio(backends[4].name, memmap1),
            "durable=False every 10 / numpy": ratio(backends[5].name, numpy_name),
            "durable=True every 10 / memmap + flush every 10": ratio(backends[6].name, memmap10),
            "memmap + flush every step / numpy": ratio(memmap1, numpy_name),
            "mapped trails: durable=False every step / numpy": ratio(backends[7].name, numpy_name),
            "mapped trails: durable=True every step / memmap + flush every step": ratio(backends[8].name, memmap1),
        },
        "final_layers_agree": agree,
    }


def print_report(report: dict[str, Any]) -> None:
    print("a realistic loop, persisted (benchmarks/simloop.py)")
    machine = report["machine"]
    print(f"machine   {machine['cpu_model']}, {machine['cores']} cores, {machine['filesystem']}; {AGENTS} agents, "
          f"R={R}, 3 layers; medians of {report['rounds']} rounds")
    for result in report["sizes"]:
        print(f"\n{result['size']} x {result['size']}, {result['steps']} steps "
              f"(final layers equal to numpy's: {'yes' if result['final_layers_agree'] else 'NO'})")
        base = result["seconds"]["numpy (RAM)"]
        for name, seconds in result["seconds"].items():
            print(f"  {name:50} {seconds:8.2f} s  {1e3 * seconds / result['steps']:8.2f} ms/step  "
                  f"{seconds / base:6.2f}x numpy")
        for name, value in result["ratios"].items():
            print(f"  {name:68} {value:.2f}x")


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser(__doc__, "a 256 x 256 world, 20 steps (seconds; for CI)", "rounds (default 3, --quick 2)")
    args, config, rounds = parse_benchmark_args(parser, argv, FULL, QUICK)
    largest = max(size for size, _ in config["sizes"])
    need = 9 * largest * largest * 9
    problem = room_error(args.dir, need, 3 * largest * largest * 9)
    if problem:
        parser.error(problem)
    progress = progress_printer(args.json)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="worldstore-simloop-", dir=args.dir) as directory:
        machine = machine_info(directory)
        sizes = [run_size(directory, size, steps, rounds, progress) for size, steps in config["sizes"]]
    report = {"benchmark": "worldstore simloop", "quick": bool(args.quick), "machine": machine, "rounds": rounds,
              "agents": AGENTS, "radius": R, "sizes": sizes}
    return emit(report, args.json, started, print_report)


if __name__ == "__main__":
    sys.exit(main())
