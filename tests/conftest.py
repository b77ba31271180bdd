"""Shared fixtures: small real world files under tmp_path."""

from __future__ import annotations

from collections.abc import Iterator  # noqa: F401  (held_open's annotation)

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import worldstore
from worldstore import LayerSpec, WorldSpec

try:  # an optional extra (worldstore[torch]): the tests of the features that hand out tensors need it
    import torch
except ImportError:
    torch = None

#: Marks a test of a feature that hands out torch tensors.
needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed (the worldstore[torch] extra): "
                                                       "tensors cannot be handed out here")

#: Tests that fork, kill a process with a signal (SIGKILL, SIGINT), limit a file's size or rely on POSIX file
#: modes. The GitHub workflow runs the suite on Windows too, where these skip (README, "Platforms").
posix_only = pytest.mark.skipif(os.name != "posix", reason="needs POSIX processes: fork, signals to a child, "
                                                           "RLIMIT_FSIZE or file modes")
#: Tests that read /proc (Linux's view of a process's memory).
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc: Linux only")

#: The repository root (what subprocesses put on PYTHONPATH to import worldstore, cli and benchmarks).
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: One layer per grid class and tested dtype.
ALL_DTYPES = ("bool", "uint8", "int32", "float16", "float32")


def every_class_spec(height: int = 24, width: int = 20, agents: int = 3, storage: str = "mapped") -> WorldSpec:
    """A small world with every grid class and every tested dtype."""
    layers = [
        LayerSpec("RES_F32", "resource", "float32", 0.0),
        LayerSpec("RES_I32", "resource", "int32", -1, pad_value=0),
        LayerSpec("OBSTACLES", "environment", "bool", False, pad_value=True),
        LayerSpec("TERRAIN_U8", "environment", "uint8", 3),
        LayerSpec("HEAT", "temporal", "float32", 0.0, decay=0.5, threshold=0.1),
        LayerSpec("HEAT16", "temporal", "float16", 0.0, decay=0.9, threshold=0.01),
        LayerSpec("MEMORY", "agent", "float16", 0.0),
        LayerSpec("SEEN", "agent", "uint8", 0),
        LayerSpec("OBS", "observation", "float32", 0.0, channels=("RES_F32", "OBSTACLES", "MEMORY"), radius=2),
    ]
    return WorldSpec(height, width, agents, layers).with_storage({c: storage for c in worldstore.GRID_CLASSES})


def pytest_collection_modifyitems(config, items):
    """Without torch, the doctests that hand out tensors skip (a docstring cannot say so itself)."""
    if torch is not None:
        return
    for item in items:
        if isinstance(item, pytest.DoctestItem) and any("tensor" in e.source for e in item.dtest.examples):
            item.add_marker(needs_torch)


@pytest.fixture
def spec() -> WorldSpec:
    return every_class_spec()


@pytest.fixture
def world_path(tmp_path, spec) -> str:
    """A freshly created (and closed) world with every class of layer."""
    path = str(tmp_path / "world.h5")
    worldstore.create(path, spec).close()
    return path


@pytest.fixture
def agentfarm_path(tmp_path) -> str:
    """A closed classic-preset world with some data in it."""
    path = str(tmp_path / "farm.h5")
    rng = np.random.default_rng(0)
    with worldstore.create(path, worldstore.presets.classic(32, 40, 4)) as world:
        world["RESOURCES"][...] = rng.random((32, 40), dtype=np.float32)
        world["OBSTACLES"][...] = rng.random((32, 40)) < 0.1
        world["AGENT_MEMORY"][...] = rng.random((4, 32, 40)).astype(np.float16)
    return path


def python_env() -> dict[str, str]:
    """This environment with the repository root first on PYTHONPATH, for Python subprocesses."""
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def run_python(code: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter (for crashes, PyTables, hostile files)."""
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], check=False, capture_output=True,
                          text=True, timeout=timeout, env=python_env())


def run_cli(*args, cwd=None, timeout: float = 240) -> subprocess.CompletedProcess:
    """Run ``python -m cli.main ARGS`` in a real subprocess: real exit codes, real pipes."""
    return subprocess.run([sys.executable, "-m", "cli.main", *map(str, args)], check=False, capture_output=True,
                          text=True, timeout=timeout, env=python_env(), cwd=cwd)


@contextlib.contextmanager
def held_open(path, swmr: bool = False) -> "Iterator[subprocess.Popen]":
    """Another process holding the world at ``path`` open for writing (in SWMR mode if ``swmr``) while inside."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, worldstore; "
                               "w = worldstore.open(sys.argv[1], 'r+', swmr=sys.argv[2] == 'swmr'); "
                               "print('ready', flush=True); sys.stdin.read()", str(path), "swmr" if swmr else "-"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=python_env())
    try:
        assert holder.stdout.readline().strip() == "ready"
        yield holder
    finally:
        holder.communicate("", timeout=60)


@contextlib.contextmanager
def snapshotting_writer(path, seconds: float = 4) -> "Iterator[subprocess.Popen]":
    """A 64 x 64 world at ``path`` whose sparse temporal layer H holds one cell (1, 1) = 1.0 at snapshot 0, and,
    while inside, a SWMR writer process depositing 500 random cells and snapshotting in a loop for ``seconds``
    (the writer resizes H's history cells, coords and values, before each flush)."""
    spec = WorldSpec(64, 64, 0, [LayerSpec("H", "temporal", decay=0.9, threshold=0.001, storage="sparse")])
    with worldstore.create(path, spec) as world:
        world.deposit("H", [1], [1], 1.0)
        world.snapshot()
    writer = subprocess.Popen([sys.executable, "-c", (
        "import sys, time, numpy as np, worldstore\n"
        "w = worldstore.open(sys.argv[1], 'r+', swmr=True)\n"
        "rng = np.random.default_rng(0)\n"
        "print('ready', flush=True)\n"
        "end = time.time() + float(sys.argv[2])\n"
        "while time.time() < end:\n"
        "    w.deposit('H', rng.integers(0, 64, 500), rng.integers(0, 64, 500), 1.0)\n"
        "    w.step(); w.snapshot()\n"
        "w.close()\n"), str(path), str(seconds)], stdout=subprocess.PIPE, text=True, env=python_env())
    try:
        assert writer.stdout.readline().strip() == "ready"
        yield writer
        assert writer.wait(timeout=30) == 0
    finally:
        writer.kill()


def digest(path) -> str:
    """SHA-256 of the file's bytes (to show a file unchanged)."""
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def flip_byte(path, offset: int, mask: int = 0xFF) -> None:
    """XOR the byte at ``offset`` of the file at ``path`` with ``mask``, in place."""
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ mask]))


def have_tool(name: str) -> bool:
    return shutil.which(name) is not None
