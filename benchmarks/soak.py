"""Soak: writers killed with SIGKILL at random instants, many times; what survives?

A writer process continues a world from its committed step: each step changes
every class of layer, reports the checksums of every layer, and commits;
every third step it also snapshots. It reports each commit and snapshot on a
pipe. After a random while it is killed (SIGKILL), the world is opened again
(recovering by itself: see ``worldstore.recovery`` and ``worldstore.commit``),
and this script checks:

- the file opens (no error, no crash);
- the committed step is the last the writer reported, or the next (a commit
  that had not returned when the kill came);
- every live layer matches the checksums the writer reported for that step
  (nothing of the step in progress, nothing of the committed step missing);
- every snapshot the writer reported is there, reads whole, and matches the
  checksums the writer reported.

It prints the counts: kills, reopen failures, committed steps lost, live
states differing, snapshots missing or unreadable, and snapshots whose
content differs.

    python benchmarks/soak.py               # 500 kills, about ten minutes (the snapshots of the last
                                            # 25 kills after each kill, every snapshot every 50 kills)
    python benchmarks/soak.py --quick       # 20 kills (CI's test does 50 of the same, checking less)
    python benchmarks/soak.py --json
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from layers import (benchmark_parser, child_env, emit, machine_info, parse_benchmark_args,  # noqa: E402
                    progress_printer)

import worldstore  # noqa: E402
from worldstore import LayerSpec, WorldSpec, recovery  # noqa: E402
from worldstore.storage import hdf5journal  # noqa: E402

FULL = {"rounds": 500}
#: Every snapshot is checked again every this many kills (and after the last); in between, the recent ones.
FULL_CHECK_EVERY = 50
RECENT = 25
QUICK = {"rounds": 20}

#: The writer (run with the world's path): continue from the committed step, forever.
WRITER = r"""
import json, sys
import numpy as np
import worldstore
sys.path.insert(0, sys.argv[2])
from soak import digest

world = worldstore.open(sys.argv[1], "r+", swmr=True)
while True:
    step = world.current_step
    rng = np.random.default_rng(step)
    world["RES_F32"][...] = np.float32(step)
    world["RES_I32"][rng.integers(0, 40), :] = step
    world["MEMORY"][:, rng.integers(0, 40), :] = np.float16(step % 100)
    world.deposit("HEAT", rng.integers(0, 40, 20), rng.integers(0, 32, 20), 1.0)
    world.step()
    digests = {name: digest(world, name) for name in world}
    print(json.dumps({"pending": world.current_step, "digests": digests}), flush=True)
    if world.current_step % 3 == 0:
        world.snapshot()
        print(json.dumps({"snapshot": world.current_step, "digests": digests}), flush=True)
    else:
        world.commit()
    print(json.dumps({"committed": world.current_step}), flush=True)
"""


def spec() -> WorldSpec:
    """Every class of layer, a sparse temporal one and an in-RAM one among them."""
    layers = [
        LayerSpec("RES_F32", "resource", "float32"),
        LayerSpec("RES_I32", "resource", "int32", storage="memory"),
        LayerSpec("OBSTACLES", "environment", "bool", pad_value=True),
        LayerSpec("HEAT", "temporal", "float32", decay=0.5, threshold=0.1, storage="sparse"),
        LayerSpec("MEMORY", "agent", "float16"),
        LayerSpec("OBS", "observation", "float32", channels=("RES_F32", "MEMORY"), radius=2),
    ]
    return WorldSpec(40, 32, 3, layers)


def digest(world: Any, name: str) -> str:
    layer = world[name]
    arrays = layer.coo() if layer.grid_class == "temporal" else (layer.numpy(),)
    h = hashlib.blake2b(digest_size=8)
    for array in arrays:
        h.update(np.ascontiguousarray(array).tobytes())
    return h.hexdigest()


def read_reports(text: str, state: dict[str, Any]) -> None:
    """Fold the writer's complete report lines into ``state`` (a line the kill cut short is skipped)."""
    for line in text.splitlines(keepends=True):
        if not line.endswith("\n") or not line.strip():
            continue
        record = json.loads(line)
        if "committed" in record:
            state["committed"] = record["committed"]
        elif "pending" in record:
            state["live"] = {step: d for step, d in state.get("live", {}).items() if step >= state["committed"]}
            state["live"][record["pending"]] = record["digests"]
        else:
            state["snapshots"][record["snapshot"]] = record["digests"]


def kill_writer(path: str, rng: random.Random, state: dict[str, Any], pause: float = 0.15) -> None:
    """Start a writer on ``path``, let it run a random while, SIGKILL it, fold in its reports."""
    here = os.path.dirname(os.path.abspath(__file__))
    writer = subprocess.Popen([sys.executable, "-c", WRITER, path, here], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=child_env())
    first = writer.stdout.readline()
    time.sleep(rng.uniform(0.0, pause))
    writer.send_signal(signal.SIGKILL)
    rest, err = writer.communicate(timeout=60)
    if writer.returncode != -signal.SIGKILL:
        raise RuntimeError(f"the writer ended by itself ({writer.returncode}): {err[-2000:]}")
    read_reports(first + rest, state)


def live_matches(world: Any, state: dict[str, Any]) -> bool:
    """Whether every live layer holds what the writer reported for the committed step."""
    expected = state.get("live", {}).get(world.committed_step)
    if expected is None:
        return world.committed_step == 0  # the writer never reported the creation's state
    return all(digest(world, name) == value for name, value in expected.items())


def soak(path: str, kills: int, seed: int, progress, keep: str | None = None) -> dict[str, Any]:
    rng = random.Random(seed)
    state: dict[str, Any] = {"committed": 0, "snapshots": {}}
    reported_at: dict[int, int] = {}  # snapshot step -> the kill after which the writer reported it
    counts = {"kills": 0, "flags_left": 0, "hdf5_records_pending": 0, "reopen_failures": 0, "committed_lost": 0,
              "live_differing": 0,
              "snapshots_missing": 0, "snapshots_differing": 0, "snapshots_checked": 0}
    for done in range(1, kills + 1):
        kill_writer(path, rng, state)
        counts["kills"] += 1
        counts["flags_left"] += recovery.status_flags(path) != 0
        counts["hdf5_records_pending"] += hdf5journal.pending(path)  # killed while HDF5's writes were applied
        try:
            with worldstore.open(path, "r+") as world:
                if world.committed_step < state["committed"]:
                    counts["committed_lost"] += 1
                state["committed"] = world.committed_step
                counts["live_differing"] += not live_matches(world, state)
                steps = {record["step"] for record in world.history()}
                everything = done % FULL_CHECK_EVERY == 0 or done == kills
                for step, digests in state["snapshots"].items():
                    reported_at.setdefault(step, done)
                    if not everything and reported_at[step] <= done - RECENT:
                        continue
                    counts["snapshots_checked"] += 1
                    if step not in steps:
                        counts["snapshots_missing"] += 1
                        continue
                    past = world.at(step)
                    differing = [name for name, value in digests.items() if digest(past, name) != value]
                    if differing:
                        counts["snapshots_differing"] += 1
                        progress(f"  kill {done}: the snapshot of step {step} differs in {', '.join(differing)}")
        except worldstore.WorldstoreError as exc:
            counts["reopen_failures"] += 1
            progress(f"  kill {done}: {type(exc).__name__}: {exc}")
            if keep is not None:
                kept = os.path.join(keep, f"soak-damaged-kill{done}.h5")
                shutil.copyfile(path, kept)
                progress(f"  the file that failed to reopen is kept at {kept}")
            break
        if done % 50 == 0:
            progress(f"  {done} kills: {counts}")
    counts["last_committed_step"] = state["committed"]
    counts["snapshots_reported"] = len(state["snapshots"])
    return counts


def print_report(report: dict[str, Any]) -> None:
    c = report["counts"]
    print("worldstore soak: writers killed with SIGKILL at random instants (benchmarks/soak.py)")
    print(f"machine   {report['machine']['cpu_model']}, {report['machine']['cores']} cores")
    print(f"kills {c['kills']}; HDF5 flags left by the killed writer {c['flags_left']} times (cleared on open)")
    print(f"killed while HDF5's writes were being applied (a whole HDF5 journal record left, applied again on "
          f"open) {c.get('hdf5_records_pending', 0)} times")
    print(f"reopen failures {c['reopen_failures']}; committed steps lost {c['committed_lost']}; "
          f"last committed step {c['last_committed_step']}")
    print(f"live layers differing from the committed step's checksums: {c['live_differing']} of {c['kills']}")
    print(f"snapshots reported {c['snapshots_reported']}; checks {c['snapshots_checked']}: missing "
          f"{c['snapshots_missing']}, content differing {c['snapshots_differing']}")
    print(f"total run time {report['wall_s']:.0f} s")


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser(__doc__, "20 kills (seconds; for CI)", "kills (default 500, --quick 20)")
    parser.add_argument("--seed", type=int, default=6, help="the seed of the kill instants (default 6)")
    parser.add_argument("--keep", metavar="DIR",
                        help="copy a file that fails to reopen into DIR, to examine it (default: not kept)")
    args, _, kills = parse_benchmark_args(parser, argv, FULL, QUICK)
    progress = progress_printer(args.json)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="worldstore-soak-", dir=args.dir) as directory:
        path = os.path.join(directory, "soak.h5")
        worldstore.create(path, spec()).close()
        machine = machine_info(directory)
        counts = soak(path, kills, args.seed, progress, args.keep)
    report = {"benchmark": "worldstore soak", "quick": bool(args.quick), "machine": machine, "counts": counts}
    return emit(report, args.json, started, print_report)


if __name__ == "__main__":
    sys.exit(main())
