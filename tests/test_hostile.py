"""A corpus of broken world files: each opened (and read whole) in its own process.

The promise: no input file makes the process die of a signal (SIGBUS, SIGSEGV);
a file that cannot be a world raises WorldFormatError (or its subclass
WorldVersionError) naming what is wrong. Some damage lands where nothing is
read (padding, unused bytes): such a file may open; then every layer must read.
"""

from __future__ import annotations

import json
import os
import shutil

import h5py
import numpy as np
import pytest

import worldstore
from conftest import every_class_spec, flip_byte, run_python

#: The child: open, read every layer and the history, print one JSON line with the outcome.
CHILD = """
import json, sys
import worldstore
from worldstore.errors import WorldFormatError
try:
    with worldstore.open(sys.argv[1], sys.argv[2]) as world:
        for name in world:
            world[name].numpy().sum()
        if world.writable:  # a writer writes every layer it can (its copy-on-write path) and commits
            for name in world:
                if world[name].storage != "sparse":
                    world[name].numpy().reshape(-1)[:1] = 1
            world.commit()
        for record in world.history():
            past = world.at(record["step"])
            for name in world:
                past[name].numpy()
    print(json.dumps({"outcome": "opened"}))
except WorldFormatError as exc:
    print(json.dumps({"outcome": "refused", "error": type(exc).__name__, "message": str(exc)}))
"""


def base_world(directory) -> str:
    path = os.path.join(directory, "base.h5")
    spec = every_class_spec(height=40, width=32).with_storage({"HEAT": "sparse"})
    with worldstore.create(path, spec) as world:
        rng = np.random.default_rng(0)
        world["RES_F32"][...] = rng.random((40, 32), dtype=np.float32)
        world.deposit("HEAT", [1, 2, 3], [4, 5, 6], 1.0)
        world.snapshot()
        world.step()
    return path


def _copy(base: str, directory: str, name: str) -> str:
    path = os.path.join(directory, f"{name}.h5")
    shutil.copyfile(base, path)
    return path


def corpus(directory: str) -> dict[str, str]:
    """At least 30 broken variants of a real world file, by name."""
    base = base_world(directory)
    size = os.path.getsize(base)
    variants: dict[str, str] = {}

    def variant(name: str) -> str:
        variants[name] = _copy(base, directory, name)
        return variants[name]

    empty = os.path.join(directory, "empty.h5")
    open(empty, "wb").close()
    variants["empty"] = empty
    for label, content in (("text", b"this is not a world\n" * 50),
                           ("random", np.random.default_rng(1).bytes(65536)),
                           ("zeros", bytes(65536))):
        path = os.path.join(directory, f"{label}.h5")
        with open(path, "wb") as f:
            f.write(content)
        variants[label] = path
    for cut in (8, 100, 1000, 4096, size // 10, size // 3, size // 2, 2 * size // 3, size - 4096, size - 1):
        path = variant(f"truncated-{cut}")
        os.truncate(path, cut)
    for offset in (0, 8, 9, 10, 11, 12, 20, 28, 36, 44):  # signature, versions, sizes, flags, addresses, checksum
        flip_byte(variant(f"superblock-byte-{offset}"), offset)
    with h5py.File(base, "r") as f:
        headers = {name: h5py.h5o.get_info(f[name].id).addr if hasattr(h5py.h5o.get_info(f[name].id), "addr")
                   else None for name in ("layers", "layers/RES_F32", "layers/HEAT_values", "history/RES_F32")}
        headers = {name: addr for name, addr in headers.items() if addr}
        offsets = {name: f[name].id.get_offset() for name in ("layers/RES_F32", "layers/OBS")}
    for name, address in headers.items():
        for delta in (4, 16, 40):
            flip_byte(variant(f"header-{name.replace('/', '.')}-{delta}"), address + delta)
    # Datasets whose bytes would lie past the end: the file cut inside them.
    for name, offset in offsets.items():
        os.truncate(variant(f"cut-inside-{name.replace('/', '.')}"), offset + 8)

    def edit(name: str, change) -> None:
        path = variant(name)
        with h5py.File(path, "r+") as f:
            change(f)

    edit("version-99", lambda f: f.attrs.__setitem__("worldstore_format_version", np.int64(99)))
    edit("version-0", lambda f: f.attrs.__setitem__("worldstore_format_version", np.int64(0)))
    edit("format-name", lambda f: f.attrs.__setitem__("worldstore_format", "netcdf"))
    edit("no-layers-group", lambda f: f.__delitem__("layers"))
    edit("no-coo-values", lambda f: f["layers"].__delitem__("HEAT_values"))
    edit("coords-outside", lambda f: f["layers/HEAT_coords"].__setitem__((0, 0), 10_000))
    edit("height-lies", lambda f: f.attrs.__setitem__("height", np.int64(80)))
    edit("negative-step", lambda f: f.attrs.__setitem__("step", np.int64(-5)) or f.__delitem__("clock"))
    edit("channels-not-json", lambda f: f["layers/OBS"].attrs.__setitem__("channels", "[RES_F32,"))
    edit("unknown-class", lambda f: f["layers/RES_I32"].attrs.__setitem__("grid_class", "weather"))
    edit("unknown-storage", lambda f: f["layers/RES_I32"].attrs.__setitem__("storage", "tape"))
    edit("decay-negative", lambda f: f["layers/HEAT"].attrs.__setitem__("decay", -1.0))
    edit("radius-text", lambda f: f["layers/OBS"].attrs.__setitem__("radius", "two"))

    def reshape(f) -> None:  # a layer whose shape disagrees with the world
        del f["layers/RES_F32"]
        dset = f["layers"].create_dataset("RES_F32", shape=(39, 32), dtype=np.float32)
        dset.attrs.update({"grid_class": "resource", "storage": "mapped", "_FillValue": np.float32(0),
                           "pad_value": np.float32(0)})

    edit("shape-disagrees", reshape)

    def complex_dtype(f) -> None:
        del f["layers/RES_F32"]
        dset = f["layers"].create_dataset("RES_F32", shape=(40, 32), dtype=np.complex64)
        dset.attrs.update({"grid_class": "resource", "storage": "mapped"})

    edit("dtype-unsupported", complex_dtype)

    def chunked(f) -> None:  # a mapped layer rewritten chunked and compressed (as h5repack may)
        data = f["layers/RES_F32"][...]
        attrs = dict(f["layers/RES_F32"].attrs)
        del f["layers/RES_F32"]
        dset = f["layers"].create_dataset("RES_F32", data=data, chunks=(8, 8), compression="gzip")
        for key, value in attrs.items():
            if key not in ("DIMENSION_LIST",):
                dset.attrs[key] = value

    edit("chunked-layer", chunked)
    edit("history-start-past-end", lambda f: f["history/HEAT_start"].__setitem__(0, 10**9))
    return variants


@pytest.fixture(scope="module")
def variants(tmp_path_factory) -> dict[str, str]:
    return corpus(str(tmp_path_factory.mktemp("hostile")))


def test_the_corpus_is_large_enough(variants):
    assert len(variants) >= 30


@pytest.mark.parametrize("mode", ["r", "r+"])
def test_no_broken_file_crashes_the_process_and_failures_are_format_errors(variants, mode, tmp_path):
    outcomes = {}
    for name, path in sorted(variants.items()):
        if mode == "r+":  # a writer may change the file: it gets a copy
            if os.path.isdir(path):
                continue
            shutil.copyfile(path, tmp_path / "copy.h5")
            path = str(tmp_path / "copy.h5")
        proc = run_python(CHILD, path, mode, timeout=60)
        assert proc.returncode >= 0, f"{name}: killed by signal {-proc.returncode}\n{proc.stderr}"
        assert proc.returncode == 0, f"{name}: an error that is not a WorldFormatError\n{proc.stderr[-3000:]}"
        outcomes[name] = json.loads(proc.stdout.strip().splitlines()[-1])
    refused = {name for name, outcome in outcomes.items() if outcome["outcome"] == "refused"}
    must_refuse = {"empty", "text", "random", "zeros", "version-99", "version-0", "format-name", "no-layers-group",
                   "no-coo-values", "coords-outside", "height-lies", "negative-step", "channels-not-json",
                   "unknown-class", "unknown-storage", "decay-negative", "radius-text", "shape-disagrees",
                   "dtype-unsupported", "chunked-layer", "cut-inside-layers.RES_F32", "cut-inside-layers.OBS"}
    assert must_refuse <= refused, sorted(must_refuse - refused)
    # Damage to object headers and to the history is found too (read whole, nothing opened half-broken).
    assert {name for name in outcomes if name.startswith(("header-", "history-"))} <= refused
    assert outcomes["version-99"]["error"] == "WorldVersionError"
    assert all(outcome["message"] for outcome in outcomes.values() if outcome["outcome"] == "refused")
