"""Mapped vs memory layer storage: is a layer mapped from the file as fast as one in RAM?

worldstore's promise (DESIGN.md, "Storage kinds") is that a ``mapped`` layer, a
plain ndarray over the bytes of the world file, is read and written at in-RAM
speed, and that a process's anonymous memory does not grow with the size of
the worlds it opens. ``memory`` storage (the same layer held in an in-RAM
ndarray) is the baseline. This script measures both claims in one run.

Speed. Two worlds of the same spec, one file per storage kind, each at least
2 GiB (two float32 layers of 16384 x 16384), so that the working set is far
above the last-level cache and every access pays what a big world pays: cache
and TLB misses. Both layers are filled with a non-trivial pattern, the mapped
world is committed (``commit``), and one untimed warm-up pass of every
operation runs on both kinds, so first-touch page faults (and the
write-protect faults that follow a commit) are counted for neither. Then, on
the 1 GiB ``RESOURCES`` layer of each world, each round times:

  (a) 1,000 random 33x33 window reads, each copied into a preallocated
      (1000, 33, 33) float32 buffer (the observation gather);
  (b) 1,000 random 33x33 window writes;
  (c) a whole-layer elementwise update, ``np.multiply(a, 0.999, out=a)``
      (the decay of a temporal layer);
  (d) a 100,000-point scatter-add, ``np.add.at(a, (ys, xs), values)``
      (deposits).

Each round draws fresh random positions, uses the same positions for both
kinds, and alternates which kind runs first. A round's ratio is
mapped time / memory time; the reported ratio is the median over rounds
(paired, so slow drifts of the machine cancel). Minor page faults per
operation are reported too: a mapped layer that is slower because the kernel
is faulting pages in shows it there. So is the share of each layer mapped by
2 MiB pages: numpy asks for transparent huge pages for large arrays, while a
mapped file gets them only where the kernel maps the page cache's large folios
whole (ext4 since Linux 6.16); with 4 KiB pages, random windows and scatters
miss the TLB more and cost about 20% more. Targets: every ratio <= 1.10, hard
limit 1.25.

Then, for information only (no target), a few commit cycles: ``world.commit()``
followed by (c). A commit writes the changed pages of a mapped layer's written
2 MiB blocks and maps the file back over them, so the first write to each
block afterwards takes a fault and copies the block; a memory layer pays
instead inside the commit, which compares the whole world with the file.

Memory. In a fresh interpreter (so nothing this process allocated hides or
inflates it), RssAnon from /proc/self/status is read just before opening a
mapped world and just after reading 1,000 windows from it, for a 1 GiB and a
4 GiB world: the growth must stay under 64 MiB whatever the world size,
because mapped pages are page cache (RssFile), not anonymous memory. The same
is shown for memory storage as a contrast (it grows by the world's size).

Run from the repository root:

    python benchmarks/layers.py            # the claim: 2 GiB worlds, about a minute
    python benchmarks/layers.py --quick    # small worlds, seconds (a smoke test for CI)
    python benchmarks/layers.py --json     # one JSON object on stdout

Needs about 4.3 GiB of free disk for the worlds (in a temporary directory under
``--dir``, removed at the end) and about 8.5 GiB of available RAM; the script
checks both first and says so if they are short.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np

try:
    import worldstore
except ImportError:  # run as `python benchmarks/layers.py` without PYTHONPATH
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import worldstore

import h5py

KINDS = ("mapped", "memory")
MiB = 1 << 20
GiB = 1 << 30

WINDOW = 33
WINDOWS = 1000
SCATTER_POINTS = 100_000
DECAY = 0.999

RATIO_TARGET = 1.10
RATIO_LIMIT = 1.25
RSS_GROWTH_TARGET = 64 * MiB

#: The layer every operation runs on; the world has a second layer of the same size.
OP_LAYER = "RESOURCES"
OTHER_LAYER = "TERRAIN_COST"

#: (height, width) of the timed worlds and of the worlds of the RSS measurement.
#: Every world has two float32 layers, so bytes = 8 * height * width.
FULL = {"world": (16384, 16384), "rss_worlds": [(16384, 8192), (32768, 16384)], "rounds": 31, "commit_rounds": 5}
QUICK = {"world": (2048, 2048), "rss_worlds": [(2048, 1024), (4096, 2048)], "rounds": 3, "commit_rounds": 2}

OPS = {
    "window_read": f"(a) {WINDOWS:,} random {WINDOW}x{WINDOW} window reads",
    "window_write": f"(b) {WINDOWS:,} random {WINDOW}x{WINDOW} window writes",
    "layer_update": f"(c) whole-layer update a *= {DECAY}",
    "scatter_add": f"(d) {SCATTER_POINTS:,}-point scatter-add",
}


# -- the worlds ------------------------------------------------------------------
def world_spec(height: int, width: int, kind: str) -> worldstore.WorldSpec:
    layers = [worldstore.LayerSpec(OP_LAYER, "resource", "float32"),
              worldstore.LayerSpec(OTHER_LAYER, "environment", "float32")]
    return worldstore.WorldSpec(height, width, 0, layers).with_storage({"resource": kind, "environment": kind})


def world_bytes(shape: tuple[int, int]) -> int:
    return 2 * 4 * shape[0] * shape[1]


def fill_pattern(array: np.ndarray) -> None:
    """Write a cheap, non-constant pattern, a band of rows at a time (no layer-sized temporaries)."""
    height, width = array.shape
    row = (np.arange(width, dtype=np.float32) % 251) * np.float32(0.01)
    for top in range(0, height, 256):
        rows = np.arange(top, min(top + 256, height), dtype=np.float32)[:, None] % 17
        np.add(row, rows, out=array[top:top + 256])


# -- what the process uses --------------------------------------------------------
def proc_status_bytes(field: str) -> int:
    """A ``kB`` field of /proc/self/status (RssAnon, RssFile), in bytes."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field} line (not Linux?)")


def faults() -> int:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_minflt + usage.ru_majflt


def huge_page_share(array: np.ndarray) -> float | None:
    """Share of ``array``'s resident bytes mapped by 2 MiB pages, from /proc/self/smaps.

    Anonymous memory counts AnonHugePages, a file mapping FilePmdMapped
    (page-cache large folios mapped whole). With 4 KiB pages, random access
    to a large layer misses the TLB on nearly every window row.
    """
    lo = array.ctypes.data
    hi = lo + array.nbytes
    rss = huge = 0
    inside = False
    try:
        with open("/proc/self/smaps") as smaps:
            for line in smaps:
                head = line.split(None, 1)[0]
                if not head.endswith(":"):
                    start, end = (int(v, 16) for v in head.split("-"))
                    inside = start < hi and end > lo
                elif inside and head == "Rss:":
                    rss += int(line.split()[1])
                elif inside and head in ("AnonHugePages:", "FilePmdMapped:", "ShmemPmdMapped:"):
                    huge += int(line.split()[1])
    except OSError:
        return None
    return huge / rss if rss else None


# -- the machine -------------------------------------------------------------------
def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _size_text(text: str) -> int | None:
    """'32768K', '32 MiB', '504 MiB (1 instance)' -> bytes."""
    parts = text.replace("(", " ").split()
    if not parts:
        return None
    number, unit = parts[0], parts[1] if len(parts) > 1 else ""
    if number[-1:].isalpha():
        number, unit = number[:-1], number[-1:]
    scale = {"": 1, "B": 1, "K": 1 << 10, "KiB": 1 << 10, "M": MiB, "MiB": MiB, "G": GiB, "GiB": GiB}
    try:
        return int(float(number) * scale[unit])
    except (KeyError, ValueError):
        return None


def l3_cache() -> tuple[int | None, str]:
    """Size of the last-level (L3) cache and where it was read."""
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        entries = sorted(os.listdir(base))
    except OSError:
        entries = []
    for entry in entries:
        if _read(f"{base}/{entry}/level") == "3":
            size = _size_text(_read(f"{base}/{entry}/size") or "")
            if size:
                return size, "sysfs"
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        out = ""
    for line in out.splitlines():
        if line.startswith("L3 cache:"):
            size = _size_text(line.split(":", 1)[1])
            if size:
                return size, "lscpu"
    return None, "unknown"


def filesystem_of(path: str) -> str:
    """The filesystem type of the mount holding ``path`` (mapping behaviour depends on it)."""
    best, fstype = "", "unknown"
    path = os.path.realpath(path)
    for line in (_read("/proc/mounts") or "").splitlines():
        fields = line.split()
        if len(fields) >= 3 and (path == fields[1] or path.startswith(fields[1].rstrip("/") + "/")) \
                and len(fields[1]) >= len(best):
            best, fstype = fields[1], fields[2]
    return fstype


def machine_info(directory: str) -> dict[str, Any]:
    cpu = "unknown"
    for line in (_read("/proc/cpuinfo") or "").splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    ram = None
    for line in (_read("/proc/meminfo") or "").splitlines():
        if line.startswith("MemTotal:"):
            ram = int(line.split()[1]) * 1024
    l3, l3_source = l3_cache()
    thp = _read("/sys/kernel/mm/transparent_hugepage/enabled") or "unknown"
    return {
        "cpu_model": cpu,
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "ram_bytes": ram,
        "l3_bytes": l3,
        "l3_source": l3_source,
        "kernel": platform.release(),
        "transparent_hugepage": thp,
        "filesystem": filesystem_of(directory),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "h5py": h5py.__version__,
        "worldstore": worldstore.__version__,
    }


def mem_available() -> int | None:
    for line in (_read("/proc/meminfo") or "").splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return None


# -- timing ----------------------------------------------------------------------------
class Workload:
    """One round's random positions, shared by both kinds."""

    def __init__(self, rng: np.random.Generator, height: int, width: int):
        # Python ints: the window loops then cost the same interpreter work for both kinds.
        self.ys = rng.integers(0, height - WINDOW + 1, WINDOWS).tolist()
        self.xs = rng.integers(0, width - WINDOW + 1, WINDOWS).tolist()
        self.scatter = (rng.integers(0, height, SCATTER_POINTS), rng.integers(0, width, SCATTER_POINTS))
        self.values = rng.random(SCATTER_POINTS, dtype=np.float32)


def window_read(layer: np.ndarray, out: np.ndarray, work: Workload) -> None:
    for i, (y, x) in enumerate(zip(work.ys, work.xs)):
        out[i] = layer[y:y + WINDOW, x:x + WINDOW]


def window_write(layer: np.ndarray, out: np.ndarray, work: Workload) -> None:
    for i, (y, x) in enumerate(zip(work.ys, work.xs)):
        layer[y:y + WINDOW, x:x + WINDOW] = out[i]


def layer_update(layer: np.ndarray, out: np.ndarray, work: Workload) -> None:
    np.multiply(layer, DECAY, out=layer)


def scatter_add(layer: np.ndarray, out: np.ndarray, work: Workload) -> None:
    np.add.at(layer, work.scatter, work.values)


OP_FUNCS: dict[str, Callable[[np.ndarray, np.ndarray, Workload], None]] = {
    "window_read": window_read, "window_write": window_write,
    "layer_update": layer_update, "scatter_add": scatter_add,
}


def timed(func: Callable[[], None]) -> tuple[float, int]:
    """Seconds and page faults of one call, with the garbage collector off."""
    gc.disable()
    try:
        before_faults = faults()
        start = time.perf_counter()
        func()
        seconds = time.perf_counter() - start
        return seconds, faults() - before_faults
    finally:
        gc.enable()


def run_rounds(arrays: dict[str, np.ndarray], rounds: int, seed: int,
               progress: Callable[[str], None]) -> dict[str, Any]:
    height, width = arrays["mapped"].shape
    outs = {kind: np.zeros((WINDOWS, WINDOW, WINDOW), np.float32) for kind in KINDS}  # touched now
    rng = np.random.default_rng(seed)
    times = {op: {kind: [] for kind in KINDS} for op in OPS}
    fault_counts = {op: {kind: [] for kind in KINDS} for op in OPS}
    # Round 0 is the untimed warm-up: every page either kind touches is resident
    # (and, for the mapped world, writable again after the commit) before timing.
    for round_no in range(rounds + 1):
        work = Workload(rng, height, width)
        order = KINDS if round_no % 2 == 0 else KINDS[::-1]
        for op, func in OP_FUNCS.items():
            for kind in order:
                array, out = arrays[kind], outs[kind]
                seconds, nfaults = timed(lambda: func(array, out, work))
                if round_no:
                    times[op][kind].append(seconds)
                    fault_counts[op][kind].append(nfaults)
        if round_no == 0:
            progress("  warm-up pass done (untimed)")
    results = {}
    for op in OPS:
        mapped, memory = times[op]["mapped"], times[op]["memory"]
        ratios = [m / r for m, r in zip(mapped, memory)]
        ratio = statistics.median(ratios)
        results[op] = {
            "description": OPS[op],
            "mapped_s": statistics.median(mapped),
            "memory_s": statistics.median(memory),
            "ratio": ratio,
            "ratio_min": min(ratios),
            "ratio_max": max(ratios),
            "mapped_faults": statistics.median(fault_counts[op]["mapped"]),
            "memory_faults": statistics.median(fault_counts[op]["memory"]),
            "meets_target": ratio <= RATIO_TARGET,
            "within_limit": ratio <= RATIO_LIMIT,
            "mapped_round_s": mapped,
            "memory_round_s": memory,
        }
    return results


def commit_cycles(worlds: dict[str, worldstore.World], arrays: dict[str, np.ndarray],
                  rounds: int) -> dict[str, Any]:
    """Informational: commit (``world.commit()``), then the whole-layer update, as a simulation
    that commits every step does.

    After a commit a mapped layer reads the file again, so the first write to
    each 2 MiB block takes a fault that copies it; a memory layer pays instead
    in the commit, which compares the whole world with the file.
    """
    commit_s = {kind: [] for kind in KINDS}
    update_s = {kind: [] for kind in KINDS}
    update_faults = {kind: [] for kind in KINDS}
    for round_no in range(rounds + 1):
        for kind in (KINDS if round_no % 2 == 0 else KINDS[::-1]):
            array, world = arrays[kind], worlds[kind]
            commit, _ = timed(world.commit)
            seconds, nfaults = timed(lambda: np.multiply(array, DECAY, out=array))  # (c)
            if round_no:
                commit_s[kind].append(commit)
                update_s[kind].append(seconds)
                update_faults[kind].append(nfaults)
    cycle = {kind: [c + u for c, u in zip(commit_s[kind], update_s[kind])] for kind in KINDS}

    def row(samples: dict[str, list[float]]) -> dict[str, float]:
        return {"mapped_s": statistics.median(samples["mapped"]), "memory_s": statistics.median(samples["memory"]),
                "ratio": statistics.median(m / r for m, r in zip(samples["mapped"], samples["memory"]))}

    update = row(update_s)
    update["mapped_faults"] = statistics.median(update_faults["mapped"])
    update["memory_faults"] = statistics.median(update_faults["memory"])
    return {"rounds": rounds, "commit": row(commit_s), "update_after_commit": update, "commit_and_update": row(cycle)}


def speed_benchmark(directory: str, shape: tuple[int, int], rounds: int, commit_rounds: int,
                    progress: Callable[[str], None]) -> dict[str, Any]:
    worlds = {}
    try:
        for kind in KINDS:
            path = os.path.join(directory, f"speed-{kind}.h5")
            progress(f"creating and filling the {kind} world ({_bytes_text(world_bytes(shape))}) ...")
            world = worldstore.create(path, world_spec(*shape, kind))
            worlds[kind] = world
            for name in (OP_LAYER, OTHER_LAYER):
                fill_pattern(world[name].numpy())
        # The mapped world starts committed, as a simulation's world is after a
        # step. The memory world is not flushed: its file is never read again,
        # and writing 2 GiB now would leave disk I/O running under the timings.
        progress("committing the mapped world ...")
        worlds["mapped"].commit()
        arrays = {kind: worlds[kind][OP_LAYER].numpy() for kind in KINDS}
        progress(f"timing {rounds} rounds (+1 warm-up) ...")
        ops = run_rounds(arrays, rounds, seed=1, progress=progress)
        huge = {kind: huge_page_share(arrays[kind]) for kind in KINDS}
        progress(f"timing {commit_rounds} commit cycles (+1 warm-up) ...")
        after_commit = commit_cycles(worlds, arrays, commit_rounds)
        del arrays
        return {"ops": ops, "huge_page_share": huge, "after_commit": after_commit}
    finally:
        for kind, world in worlds.items():
            world.close()
            os.unlink(world.path)


# -- anonymous memory --------------------------------------------------------------------
def rss_child(path: str, kind: str, shape: tuple[int, int]) -> None:
    """In a fresh interpreter: RssAnon before opening ``path`` and after reading windows from it.

    The shape comes on the command line, so nothing touches HDF5 before the
    first measurement: the library's own start-up allocations count as growth.
    """
    work = Workload(np.random.default_rng(2), *shape)
    out = np.zeros((WINDOWS, WINDOW, WINDOW), np.float32)  # the caller's buffer, touched before
    gc.collect()
    anon_before, file_before = proc_status_bytes("RssAnon"), proc_status_bytes("RssFile")
    world = worldstore.open(path, "r", storage={"resource": kind, "environment": kind})
    window_read(world[OP_LAYER].numpy(), out, work)
    anon_after, file_after = proc_status_bytes("RssAnon"), proc_status_bytes("RssFile")
    checksum = float(out.sum())  # the windows really were read
    world.close()
    print(json.dumps({
        "world_bytes": os.path.getsize(path), "kind": kind,
        "anon_before_bytes": anon_before, "anon_after_bytes": anon_after,
        "anon_growth_bytes": anon_after - anon_before,
        "file_growth_bytes": file_after - file_before,
        "checksum": checksum,
    }))


def child_env() -> dict[str, str]:
    """This process's environment for a child Python that must import the same worldstore as this one.

    The directory holding the imported ``worldstore`` package goes first on PYTHONPATH (any existing
    PYTHONPATH is kept after it). Used by the benchmarks that start ``python -c`` children.
    """
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(worldstore.__file__)))
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def run_rss_child(path: str, kind: str, shape: tuple[int, int]) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--rss-child", path, "--rss-kind", kind,
                           "--rss-shape", f"{shape[0]}x{shape[1]}"],
                          capture_output=True, text=True, env=child_env(), timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"the RSS measurement of {path} ({kind}) failed:\n{proc.stderr.strip()}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    del result["checksum"]
    return result


def rss_benchmark(directory: str, shapes: list[tuple[int, int]],
                  progress: Callable[[str], None]) -> dict[str, list[dict[str, Any]]]:
    mapped, contrast = [], []
    for shape in shapes:
        path = os.path.join(directory, f"rss-{shape[0]}x{shape[1]}.h5")
        progress(f"RSS: a {_bytes_text(world_bytes(shape))} world, fresh interpreters ...")
        # Blocks reserved, fill value 0: reading maps page-cache pages all the same.
        worldstore.create(path, world_spec(*shape, "mapped")).close()
        try:
            result = run_rss_child(path, "mapped", shape)
            result["meets_target"] = result["anon_growth_bytes"] < RSS_GROWTH_TARGET
            mapped.append(result)
            contrast.append(run_rss_child(path, "memory", shape))
        finally:
            os.unlink(path)
    return {"mapped": mapped, "memory_contrast": contrast}


# -- reporting -----------------------------------------------------------------------------
def _bytes_text(n: float | None) -> str:
    if n is None:
        return "unknown"
    if abs(n) >= GiB:
        return f"{n / GiB:.2f} GiB"
    return f"{n / MiB:.1f} MiB"


def _time_text(seconds: float) -> str:
    return f"{seconds * 1e3:.2f} ms" if seconds < 10 else f"{seconds:.1f} s"


def print_report(report: dict[str, Any]) -> None:
    m, w = report["machine"], report["world"]
    print("worldstore benchmark: mapped vs memory layer storage (benchmarks/layers.py)")
    if report["quick"]:
        print("QUICK MODE: small worlds that fit in cache; a smoke test, not the performance claim.")
    print(f"machine   {m['cpu_model']}, {m['cores']} cores, {_bytes_text(m['ram_bytes'])} RAM, "
          f"L3 {_bytes_text(m['l3_bytes'])} ({m['l3_source']})")
    print(f"          Linux {m['kernel']}, {m['filesystem']} at {w['directory']}, THP {m['transparent_hugepage']}")
    print(f"          Python {m['python']}, numpy {m['numpy']}, h5py {m['h5py']}, worldstore {m['worldstore']}")
    print(f"world     {w['height']} x {w['width']}, {w['layers']} float32 layers = {_bytes_text(w['bytes'])} "
          f"per world, one file per kind; operations on {OP_LAYER} ({_bytes_text(w['op_layer_bytes'])})")
    print(f"rounds    {report['rounds']} timed, after 1 untimed warm-up pass of every operation on both kinds "
          "(first-touch page faults are not counted); fresh random positions each round, the same for both "
          "kinds; which kind runs first alternates")
    huge = report["huge_page_share"]
    print("2M pages  " + ", ".join(
        f"{kind} {'n/a' if huge[kind] is None else format(huge[kind], '.0%')}" for kind in KINDS)
        + " of the layer's resident bytes (AnonHugePages / FilePmdMapped)")
    print()
    print(f"{'operation':42s} {'mapped':>10s} {'memory':>10s} {'ratio':>6s}  {'range':>11s}  "
          f"{'faults/op m,r':>13s}  target <= {RATIO_TARGET:.2f} (limit {RATIO_LIMIT:.2f})")
    for result in report["ops"].values():
        verdict = "ok" if result["meets_target"] else ("MISS (within limit)" if result["within_limit"] else "FAIL")
        print(f"{result['description']:42s} {_time_text(result['mapped_s']):>10s} "
              f"{_time_text(result['memory_s']):>10s} {result['ratio']:6.3f}  "
              f"{result['ratio_min']:4.2f}..{result['ratio_max']:<5.2f}  "
              f"{result['mapped_faults']:>6.0f},{result['memory_faults']:<6.0f}  {verdict}")
    print("(times: median over rounds; ratio: median of the per-round ratios mapped/memory; "
          "range: smallest..largest per-round ratio)")
    print()
    cycle = report["after_commit"]
    print(f"After a commit (informational, no target; {cycle['rounds']} rounds): world.commit(), then (c)")
    rows = [("commit: world.commit()", cycle["commit"],
             "mapped: changed pages of written blocks; memory: whole world compared"),
            ("(c) first update after the commit", cycle["update_after_commit"],
             f"faults/op {cycle['update_after_commit']['mapped_faults']:.0f},"
             f"{cycle['update_after_commit']['memory_faults']:.0f} (the first write to a block copies it)"),
            ("commit + update", cycle["commit_and_update"], "")]
    for label, row, note in rows:
        print(f"{label:42s} {_time_text(row['mapped_s']):>10s} {_time_text(row['memory_s']):>10s} "
              f"{row['ratio']:6.3f}  {note}")
    print()
    print(f"Anonymous memory (RssAnon) growth, fresh interpreter, from just before opening the world to just "
          f"after reading {WINDOWS:,} windows (mode 'r'); target < {_bytes_text(RSS_GROWTH_TARGET)} whatever "
          "the world size:")
    print(f"{'world':>10s}  {'storage':8s} {'RssAnon growth':>15s} {'RssFile growth':>15s}")
    for result in report["rss"]["mapped"]:
        print(f"{_bytes_text(result['world_bytes']):>10s}  {'mapped':8s} "
              f"{_bytes_text(result['anon_growth_bytes']):>15s} {_bytes_text(result['file_growth_bytes']):>15s}"
              f"   {'ok' if result['meets_target'] else 'FAIL'}")
    for result in report["rss"]["memory_contrast"]:
        print(f"{_bytes_text(result['world_bytes']):>10s}  {'memory':8s} "
              f"{_bytes_text(result['anon_growth_bytes']):>15s} {_bytes_text(result['file_growth_bytes']):>15s}"
              "   (contrast: memory storage reads the layers into RAM)")
    print()
    verdict = report["pass"]
    print(f"every ratio <= {RATIO_TARGET:.2f}: {'yes' if verdict['ratios_meet_target'] else 'NO'};  "
          f"every ratio <= {RATIO_LIMIT:.2f}: {'yes' if verdict['ratios_within_limit'] else 'NO'};  "
          f"RssAnon growth < {_bytes_text(RSS_GROWTH_TARGET)}: {'yes' if verdict['rss_growth_meets_target'] else 'NO'}")
    print(f"total run time {report['wall_s']:.0f} s")


# -- main ------------------------------------------------------------------------------------
def benchmark_parser(doc: str, quick_help: str, rounds_help: str) -> argparse.ArgumentParser:
    """The options every worldstore benchmark takes: --quick, --json, --rounds, --dir."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--json", action="store_true", help="print one JSON object with the figures on stdout")
    parser.add_argument("--rounds", type=int, help=rounds_help)
    parser.add_argument("--dir", default=tempfile.gettempdir(),
                        help="where to create the temporary worlds (default: the system temp dir)")
    return parser


def parse_benchmark_args(parser: argparse.ArgumentParser, argv: list[str] | None, full: dict[str, Any],
                         quick: dict[str, Any]) -> tuple[argparse.Namespace, dict[str, Any], int]:
    """Parse, then check the options every benchmark shares: ``(args, FULL or QUICK config, rounds)``."""
    args = parser.parse_args(argv)
    config = quick if args.quick else full
    rounds = config["rounds"] if args.rounds is None else args.rounds
    if rounds < 1:
        parser.error(f"--rounds must be >= 1, got {rounds}")
    if not os.path.isdir(args.dir):
        parser.error(f"--dir {args.dir!r} is not a directory")
    return args, config, rounds


def room_error(directory: str, need_disk: int, need_ram: int) -> str | None:
    """Why a benchmark cannot run here (too little free disk under ``directory`` or available RAM), or None."""
    free_disk = shutil.disk_usage(directory).free
    if free_disk < need_disk:
        return (f"not enough free disk space in {directory}: the benchmark needs {_bytes_text(need_disk)}, "
                f"{_bytes_text(free_disk)} is free. Pass --dir to a roomier place, or use --quick.")
    free_ram = mem_available()
    if free_ram is not None and free_ram < need_ram:
        return (f"not enough available memory: the benchmark needs about {_bytes_text(need_ram)}, "
                f"{_bytes_text(free_ram)} is available (MemAvailable). Use --quick.")
    return None


def progress_printer(quiet: bool) -> Callable[[str], None]:
    """Progress lines on stderr, none when ``quiet`` (--json)."""
    def progress(message: str) -> None:
        if not quiet:
            print(message, file=sys.stderr, flush=True)
    return progress


def emit(report: dict[str, Any], as_json: bool, started: float, printer: Callable[[dict[str, Any]], None]) -> int:
    """Stamp the run time, then print the report as one JSON line or as text."""
    report["wall_s"] = time.perf_counter() - started
    if as_json:
        print(json.dumps(report))
    else:
        printer(report)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser(__doc__, "small worlds and few rounds (seconds; for CI)",
                              "timed rounds (default 31, --quick 3)")
    parser.add_argument("--rss-child", metavar="PATH", help=argparse.SUPPRESS)
    parser.add_argument("--rss-kind", choices=KINDS, default="mapped", help=argparse.SUPPRESS)
    parser.add_argument("--rss-shape", type=worldstore.parse_size, help=argparse.SUPPRESS)
    args, config, rounds = parse_benchmark_args(parser, argv, FULL, QUICK)
    if args.rss_child:
        rss_child(args.rss_child, args.rss_kind, args.rss_shape)
        return 0

    progress = progress_printer(args.json)
    # Both timed worlds exist together; the RSS worlds come one at a time after them.
    shape = config["world"]
    need_disk = max(2 * world_bytes(shape), max(world_bytes(s) for s in config["rss_worlds"])) + 256 * MiB
    # RAM: the memory world, the mapped world's page cache, and the largest contrast world.
    need_ram = 2 * world_bytes(shape) + max(world_bytes(s) for s in config["rss_worlds"]) + 512 * MiB
    problem = room_error(args.dir, need_disk, need_ram)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2

    started = time.perf_counter()
    directory = tempfile.mkdtemp(prefix="worldstore-bench-", dir=args.dir)
    try:
        machine = machine_info(directory)
        speed = speed_benchmark(directory, shape, rounds, config["commit_rounds"], progress)
        rss = rss_benchmark(directory, config["rss_worlds"], progress)
    finally:
        shutil.rmtree(directory, ignore_errors=True)

    ops = speed["ops"]
    report = {
        "benchmark": "worldstore mapped vs memory layer storage",
        "quick": bool(args.quick),
        "machine": machine,
        "world": {"height": shape[0], "width": shape[1], "layers": 2, "dtype": "float32",
                  "bytes": world_bytes(shape), "op_layer_bytes": world_bytes(shape) // 2,
                  "directory": args.dir},
        "rounds": rounds,
        "warmup_rounds": 1,
        "window": WINDOW, "windows": WINDOWS, "scatter_points": SCATTER_POINTS,
        "ops": ops,
        "huge_page_share": speed["huge_page_share"],
        "after_commit": speed["after_commit"],
        "rss": rss,
        "targets": {"ratio": RATIO_TARGET, "ratio_limit": RATIO_LIMIT, "rss_anon_growth_bytes": RSS_GROWTH_TARGET},
        "pass": {
            "ratios_meet_target": all(r["meets_target"] for r in ops.values()),
            "ratios_within_limit": all(r["within_limit"] for r in ops.values()),
            "rss_growth_meets_target": all(r["meets_target"] for r in rss["mapped"]),
        },
    }
    return emit(report, args.json, started, print_report)


if __name__ == "__main__":
    sys.exit(main())
