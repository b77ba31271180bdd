"""Shared fixtures: small real world files under tmp_path."""

from __future__ import annotations

from collections.abc import Iterator  # noqa: F401  (held_open's annotation)

import contextlib
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import worldstore
from worldstore import LayerSpec, WorldSpec

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
    """A closed agentfarm-preset world with some data in it."""
    path = str(tmp_path / "farm.h5")
    rng = np.random.default_rng(0)
    with worldstore.create(path, worldstore.presets.agentfarm(32, 40, 4)) as world:
        world["RESOURCES"][...] = rng.random((32, 40), dtype=np.float32)
        world["OBSTACLES"][...] = rng.random((32, 40)) < 0.1
        world["AGENT_MEMORY"][...] = rng.random((4, 32, 40)).astype(np.float16)
    return path


def run_python(code: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter (for crashes, PyTables, hostile files)."""
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


@contextlib.contextmanager
def held_open(path) -> "Iterator[subprocess.Popen]":
    """Another process holding the world at ``path`` open for writing while inside."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, worldstore; w = worldstore.open(sys.argv[1], 'r+'); "
                               "print('ready', flush=True); sys.stdin.read()", str(path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": root})
    try:
        assert holder.stdout.readline().strip() == "ready"
        yield holder
    finally:
        holder.communicate("", timeout=60)


def have_tool(name: str) -> bool:
    return shutil.which(name) is not None
