"""A simulation step made persistent, side by side with what users pick instead (issue 15).

Four float32 layers of 8192 x 8192 (1 GiB, every value 1.0 at the start), each
backend holding them on disk (warm page cache), the same changes in each, made
durable:

  worldstore        world[L].numpy() written in place, then world.commit()
                    (durable=True: journal and file fsync'd; also durable=False)
  memmap + msync    a numpy.memmap of a raw file, then .flush() (msync MS_SYNC),
                    what AgentFarm's memmap managers do
  h5py + flush      the layers in RAM, the changed cells (or layer) written to a
                    contiguous HDF5 dataset, then File.flush() and os.fsync
  numpy (RAM)       plain in-RAM arrays, no persistence: the floor
  write-ahead floor not a product: the changed lines (or layer) into a log,
                    fsync'd, then into a raw file, fsync'd at worldstore's
                    checkpoints; the least a log at fixed places writes
  zarr 3 + fsync    where zarr is installed (pip install -e '.[bench]'): a
                    chunked, compressed zarr array, the changed cells or layer
                    written from RAM, then the chunk files written fsync'd

Two cases per round:

  scattered   10,000 random cells per layer += 1 (agents acting here and there)
  dense       one whole layer *= 0.99 each round (a decaying signal layer)

Four untimed rounds come first (see WARM_UP: the steady state of a long run).
Each round runs every backend once, in a rotating order, on the same cells;
the ratio of worldstore (step + commit) to memmap + msync (step + msync) is
taken per round, and the report gives medians of those paired ratios, the
ratio of the mean times (which counts in full the rounds where worldstore's
journal was checkpointed), and medians of each backend's times. Bytes: the
changed bytes counted in 64-byte lines; what a worldstore commit wrote (its
journal record: the changed words of the changed lines, a mask byte and a line
number per line, and a header; and the changed lines whole into the
file), as a multiple of those (the target: <= 2x); and what each backend handed
the block layer (/proc/self/io write_bytes, Linux: whole pages or larger folios,
counted when they are dirtied).

    python benchmarks/persist.py            # 1 GiB of layers, 7 rounds (about a minute)
    python benchmarks/persist.py --quick    # 4 x 1024 x 1024 (seconds; for CI)
    python benchmarks/persist.py --json
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import h5py
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from commit import journaled_bytes  # noqa: E402
from layers import (benchmark_parser, emit, machine_info, parse_benchmark_args, progress_printer,  # noqa: E402
                    room_error)

import worldstore  # noqa: E402
from worldstore import LayerSpec, WorldSpec, commit  # noqa: E402

FULL = {"rounds": 7, "size": 8192}
QUICK = {"rounds": 3, "size": 1024}
LAYERS = 4
CELLS = 10_000
CASES = ("scattered", "dense")
#: Untimed rounds first: the page cache warm, worldstore's copies made, and its journal grown to the size it
#: keeps (a dense commit's first records go into new pages of the journal, slower than the steady state,
#: where a checkpoint has started the journal again over its own pages).
WARM_UP = 4
LINE = 64


def written_bytes() -> int | None:
    """Bytes this process has caused to be sent to storage (/proc/self/io write_bytes), or None."""
    try:
        with open("/proc/self/io") as io:
            for line in io:
                if line.startswith("write_bytes:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def changed_lines(case: str, cells: list[tuple[np.ndarray, np.ndarray]], size: int) -> int:
    """The bytes a round changes, counted in whole 64-byte lines."""
    if case == "dense":
        return size * size * 4
    per_line = LINE // 4
    return sum(len(np.unique((ys.astype(np.int64) * size + xs) // per_line)) * LINE for ys, xs in cells)


class Backend:
    """One way of holding the layers on disk: ``step`` changes them, ``persist`` makes that durable."""

    name = ""

    def arrays(self) -> list[np.ndarray]:
        raise NotImplementedError

    def step(self, case: str, cells: list[tuple[np.ndarray, np.ndarray]], layer: int) -> None:
        arrays = self.arrays()
        if case == "scattered":
            for array, (ys, xs) in zip(arrays, cells):
                array[ys, xs] += np.float32(1)
        else:
            np.multiply(arrays[layer], np.float32(0.99), out=arrays[layer])

    def persist(self, case: str, cells: list[tuple[np.ndarray, np.ndarray]], layer: int) -> None:
        pass

    def close(self) -> None:
        pass


class Memory(Backend):
    name = "numpy (RAM)"

    def __init__(self, directory: str, size: int):
        self._arrays = [np.ones((size, size), np.float32) for _ in range(LAYERS)]

    def arrays(self) -> list[np.ndarray]:
        return self._arrays


class Memmap(Backend):
    name = "memmap + msync"

    def __init__(self, directory: str, size: int):
        self._map = np.memmap(os.path.join(directory, "layers.f32"), np.float32, "w+", shape=(LAYERS, size, size))
        self._map[...] = 1
        self._map.flush()

    def arrays(self) -> list[np.ndarray]:
        return list(self._map)

    def persist(self, case, cells, layer) -> None:
        self._map.flush()

    def close(self) -> None:
        del self._map


class H5py(Backend):
    name = "h5py + flush"

    def __init__(self, directory: str, size: int):
        self._path = os.path.join(directory, "layers.h5")
        self._file = h5py.File(self._path, "w")
        self._dset = self._file.create_dataset("layers", (LAYERS, size, size), np.float32, fillvalue=0)
        self._dset[...] = 1
        self._file.flush()
        self._fd = os.open(self._path, os.O_RDONLY)
        self._ram = [np.ones((size, size), np.float32) for _ in range(LAYERS)]

    def arrays(self) -> list[np.ndarray]:
        return self._ram

    def persist(self, case, cells, layer) -> None:
        if case == "dense":
            self._dset[layer] = self._ram[layer]
        else:
            for index, (ram, (ys, xs)) in enumerate(zip(self._ram, cells)):
                flat = np.unique(ys.astype(np.int64) * ram.shape[1] + xs)
                points = np.stack([np.full(len(flat), index), flat // ram.shape[1], flat % ram.shape[1]], axis=1)
                values = np.ascontiguousarray(ram.reshape(-1)[flat])
                space = self._dset.id.get_space()
                space.select_elements(points.astype(np.uint64))
                self._dset.id.write(h5py.h5s.create_simple((len(flat),)), space, values)
        self._file.flush()
        os.fsync(self._fd)

    def close(self) -> None:
        os.close(self._fd)
        self._file.close()


class WriteAheadFloor(Backend):
    """Not a product: the least a write-ahead log that keeps the layers at fixed places in one file must write,
    with nothing else (no comparison with the file, no checksum, no HDF5). The changed 64-byte lines (or the
    whole layer) go into a log and are fsync'd (the commit point), then into the file; the file is fsync'd
    and the log started again once it holds the layers' bytes, worldstore's own checkpoint rule. Readers of
    a fixed place must find each commit there, so every changed byte is written twice, where msync writes it
    once: this row is what worldstore's design can at best reach."""

    name = "write-ahead floor"

    def __init__(self, directory: str, size: int):
        self._ram = [np.ones((size, size), np.float32) for _ in range(LAYERS)]
        self._path = os.path.join(directory, "floor.f32")
        with open(self._path, "wb") as f:
            for array in self._ram:
                f.write(array.tobytes())
            f.flush()
            os.fsync(f.fileno())
        self._fd = os.open(self._path, os.O_RDWR)
        self._log = os.open(os.path.join(directory, "floor.log"), os.O_RDWR | os.O_CREAT, 0o644)
        self._map = np.memmap(self._path, np.float32, "r+", shape=(LAYERS, size, size))
        self._logged = 0
        self._bound = max(commit.CHECKPOINT_BYTES, LAYERS * size * size * 4)

    def arrays(self) -> list[np.ndarray]:
        return self._ram

    def persist(self, case, cells, layer) -> None:
        if case == "dense":
            data = memoryview(self._ram[layer].reshape(-1).view(np.uint8))
            os.pwrite(self._log, data, self._logged)
            os.fdatasync(self._log)
            os.pwrite(self._fd, data, layer * data.nbytes)
            self._logged += data.nbytes
        else:
            per_line = LINE // 4
            found = []
            for index, (ram, (ys, xs)) in enumerate(zip(self._ram, cells)):
                lines = np.unique((ys.astype(np.int64) * ram.shape[1] + xs) // per_line)
                found.append((index, lines, ram.reshape(-1, per_line)[lines]))
            payload = b"".join(lines.tobytes() + data.tobytes() for _, lines, data in found)
            os.pwrite(self._log, payload, self._logged)
            os.fdatasync(self._log)
            for index, lines, data in found:
                self._map[index].reshape(-1, per_line)[lines] = data
            self._logged += len(payload)
        if self._logged >= self._bound:  # a checkpoint
            os.fdatasync(self._fd)
            self._logged = 0

    def close(self) -> None:
        del self._map
        os.close(self._fd)
        os.close(self._log)


class Zarr(Backend):
    """zarr 3 on a local directory (1024 x 1024 chunks, zarr's default compression), the changed cells or
    layer written from RAM, then every chunk file written fsync'd. Only where zarr is installed
    (``pip install -e '.[bench]'``)."""

    name = "zarr 3 + fsync"

    def __init__(self, directory: str, size: int):
        import zarr

        self._path = os.path.join(directory, "layers.zarr")
        self._array = zarr.create_array(store=self._path, shape=(LAYERS, size, size), chunks=(1, 1024, 1024),
                                        dtype="float32", fill_value=1.0)
        self._array[...] = np.float32(1)
        self._ram = [np.ones((size, size), np.float32) for _ in range(LAYERS)]

    def arrays(self) -> list[np.ndarray]:
        return self._ram

    def persist(self, case, cells, layer) -> None:
        started = time.time()
        if case == "dense":
            self._array[layer] = self._ram[layer]
        else:
            for index, (ram, (ys, xs)) in enumerate(zip(self._ram, cells)):
                flat = np.unique(ys.astype(np.int64) * ram.shape[1] + xs)
                rows, cols = flat // ram.shape[1], flat % ram.shape[1]
                self._array.vindex[np.full(len(flat), index), rows, cols] = ram.reshape(-1)[flat]
        for root, _, files in os.walk(self._path):  # durable: what this step wrote
            for file in files:
                path = os.path.join(root, file)
                if os.stat(path).st_mtime >= started - 1:
                    fd = os.open(path, os.O_RDONLY)
                    try:
                        os.fsync(fd)
                    finally:
                        os.close(fd)


def optional_backends(directory: str, size: int) -> list[Backend]:
    """zarr, where it is installed (an extra of the benchmarks only: worldstore does not need it)."""
    try:
        import zarr  # noqa: F401
    except ImportError:
        return []
    return [Zarr(directory, size)]


class Worldstore(Backend):
    def __init__(self, directory: str, size: int, durable: bool):
        self.name = "worldstore" + ("" if durable else " (durable=False)")
        self._durable = durable
        path = os.path.join(directory, f"world-{int(durable)}.h5")
        layers = [LayerSpec(f"L{i}", "resource", "float32", fill_value=1.0) for i in range(LAYERS)]
        self._world = worldstore.create(path, WorldSpec(size, size, 0, layers))
        self.journaled: list[int] = []
        self.records: list[int] = []

    def arrays(self) -> list[np.ndarray]:
        return [self._world[f"L{i}"].numpy() for i in range(LAYERS)]

    def persist(self, case, cells, layer) -> None:
        original = commit.write_journal

        def recording(path, changes, durable, start=0):  # the record's whole size: header, indexes, lines
            end = original(path, changes, durable, start)
            self.records.append(end - start)
            return end

        commit.write_journal = recording
        try:
            with journaled_bytes() as journaled:
                self._world.commit(durable=self._durable)
        finally:
            commit.write_journal = original
        self.journaled.extend(journaled)

    def close(self) -> None:
        self._world.close()


def timed(func: Callable[[], None]) -> tuple[float, int | None]:
    before = written_bytes()
    started = time.perf_counter()
    func()
    seconds = time.perf_counter() - started
    after = written_bytes()
    return seconds, None if before is None or after is None else after - before


def run(directory: str, size: int, rounds: int, progress) -> dict[str, Any]:
    progress(f"creating {LAYERS} x {size} x {size} float32 in each backend ...")
    backends: list[Backend] = [Worldstore(directory, size, True), Worldstore(directory, size, False),
                               Memmap(directory, size), WriteAheadFloor(directory, size), H5py(directory, size), Memory(directory, size),
                               *optional_backends(directory, size)]
    rng = np.random.default_rng(15)
    figures: dict[str, dict[str, dict[str, list[float]]]] = {
        case: {b.name: {"step_ms": [], "persist_ms": [], "total_ms": [], "written_mb": []} for b in backends}
        for case in CASES}
    changed: dict[str, list[int]] = {case: [] for case in CASES}
    journal: dict[str, list[float]] = {case: [] for case in CASES}
    record: dict[str, list[float]] = {case: [] for case in CASES}
    try:
        for round_ in range(1 - WARM_UP, rounds + 1):  # rounds <= 0 warm every backend up, untimed
            for case in CASES:
                cells = [(rng.integers(0, size, CELLS), rng.integers(0, size, CELLS)) for _ in range(LAYERS)]
                layer = 0
                order = backends[round_ % len(backends):] + backends[:round_ % len(backends)]
                for backend in order:
                    step_s, step_b = timed(lambda: backend.step(case, cells, layer))
                    persist_s, persist_b = timed(lambda: backend.persist(case, cells, layer))
                    if round_ <= 0:
                        continue
                    entry = figures[case][backend.name]
                    entry["step_ms"].append(1e3 * step_s)
                    entry["persist_ms"].append(1e3 * persist_s)
                    entry["total_ms"].append(1e3 * (step_s + persist_s))
                    if step_b is not None and persist_b is not None:
                        entry["written_mb"].append((step_b + persist_b) / 1e6)
                    if isinstance(backend, Worldstore) and backend._durable:
                        journal[case].append(backend.journaled[-1] / 1e6)
                        record[case].append(backend.records[-1] / 1e6)
                if round_ > 0:
                    changed[case].append(changed_lines(case, cells, size))
            if round_ > 0:
                progress(f"round {round_}/{rounds} done")
    finally:
        for backend in backends:
            backend.close()
    report: dict[str, Any] = {"cases": {}}
    for case in CASES:
        per = figures[case]
        ours, theirs = per["worldstore"]["total_ms"], per["memmap + msync"]["total_ms"]
        ours_fast = per["worldstore (durable=False)"]["total_ms"]
        floor = per[WriteAheadFloor.name]["total_ms"]
        changed_mb = statistics.median(changed[case]) / 1e6
        report["cases"][case] = {
            "backends": {name: {key: (statistics.median(values) if values else None) for key, values in entry.items()}
                         for name, entry in per.items()},
            "ratio_vs_memmap_msync": statistics.median(o / t for o, t in zip(ours, theirs)),
            # checkpoints land in some rounds only: the ratio of the mean times counts them in full
            "ratio_of_means_vs_memmap_msync": statistics.fmean(ours) / statistics.fmean(theirs),
            "ratio_nondurable_vs_memmap_msync": statistics.median(o / t for o, t in zip(ours_fast, theirs)),
            "floor_vs_memmap_msync": statistics.median(f / t for f, t in zip(floor, theirs)),
            "floor_of_means_vs_memmap_msync": statistics.fmean(floor) / statistics.fmean(theirs),
            "changed_mb_64b_lines": changed_mb,
            "journal_mb": statistics.median(journal[case]),
            "journal_record_mb": statistics.median(record[case]),
            # the record (changed words, masks, line numbers, the header) and the lines written into the file
            "written_per_changed": (statistics.median(record[case]) + statistics.median(journal[case])) / changed_mb,
        }
    return report


def print_report(report: dict[str, Any]) -> None:
    print("a persisted step, side by side (benchmarks/persist.py)")
    machine = report["machine"]
    print(f"machine   {machine['cpu_model']}, {machine['cores']} cores, {machine['filesystem']}; "
          f"layers {report['world']}; medians of {report['rounds']} paired rounds")
    for case, result in report["cases"].items():
        print(f"\n{case}: {'10,000 random cells per layer += 1' if case == 'scattered' else 'one layer *= 0.99'}")
        print(f"  {'backend':28} {'step':>10} {'persist':>10} {'total':>10} {'to disk':>10}")
        for name, entry in result["backends"].items():
            written = "" if entry["written_mb"] is None else f"{entry['written_mb']:8.1f}MB"
            print(f"  {name:28} {entry['step_ms']:8.1f}ms {entry['persist_ms']:8.1f}ms {entry['total_ms']:8.1f}ms "
                  f"{written:>10}")
        print(f"  worldstore / memmap + msync: {result['ratio_vs_memmap_msync']:.2f}x durable, "
              f"{result['ratio_nondurable_vs_memmap_msync']:.2f}x with durable=False (median of paired rounds); "
              f"{result['ratio_of_means_vs_memmap_msync']:.2f}x durable, ratio of the mean times (checkpoints "
              "counted)")
        print(f"  write-ahead floor / memmap + msync: {result['floor_vs_memmap_msync']:.2f}x (median of paired "
              f"rounds), {result['floor_of_means_vs_memmap_msync']:.2f}x (ratio of the mean times)")
        print(f"  changed {result['changed_mb_64b_lines']:.2f} MB in 64-byte lines; a commit's journal record is "
              f"{result['journal_record_mb']:.2f} MB (changed words or pages, masks, line numbers, header) and it writes "
              f"{result['journal_mb']:.2f} MB of lines into the file: {result['written_per_changed']:.2f}x the "
              "changed bytes. 'to disk': what the block layer was handed (/proc/self/io write_bytes: whole pages, "
              "or larger folios)")


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser(__doc__, "4 x 1024 x 1024 layers (seconds; for CI)", "rounds (default 7, --quick 3)")
    args, config, rounds = parse_benchmark_args(parser, argv, FULL, QUICK)
    size = config["size"]
    need = 5 * LAYERS * size * size * 4
    problem = room_error(args.dir, need, 3 * LAYERS * size * size * 4)
    if problem:
        parser.error(problem)
    progress = progress_printer(args.json)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="worldstore-persist-", dir=args.dir) as directory:
        machine = machine_info(directory)
        report = run(directory, size, rounds, progress)
    report.update({"benchmark": "worldstore persist", "quick": bool(args.quick), "machine": machine,
                   "rounds": rounds, "world": f"{LAYERS} x {size} x {size} float32 "
                                             f"({LAYERS * size * size * 4 / 2**30:.2f} GiB)"})
    return emit(report, args.json, started, print_report)


if __name__ == "__main__":
    sys.exit(main())
