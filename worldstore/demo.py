"""A small random-walk simulation that exercises every class of layer.

``run_demo`` creates a classic-preset world (see :func:`worldstore.presets.classic`)
and runs agents that wander at random, so that a new user (or ``worldstore
demo``) gets a world file whose every layer holds something to look at, and
the tests get a realistic workload. Each step:

1. agents move by -1/0/+1 in y and x, unless the target is an obstacle or
   outside the world (positions live in RAM, not in the file);
2. RESOURCES regrow a little everywhere off obstacles (one whole-layer update,
   capped), then agents eat what is on their cell;
3. TRAILS get a deposit at every agent, DAMAGE_HEAT at agents within 2 cells of
   another agent, ALLY_SIGNAL in the 3x3 block around a random quarter of them;
4. ``world.step()`` decays the temporal layers and advances the clock;
5. each agent copies the RESOURCES it sees (its observation window, where
   VISIBILITY is True) into its own AGENT_MEMORY;
6. the OBSERVATION layer receives every agent's windows of the observation's
   channels, so it describes the state the file holds at the new step.

Everything random comes from one seeded ``numpy.random.Generator``: the same
arguments give the same file contents.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .errors import SpecError
from .presets import classic
from .world import World, create

#: Resource regrowth per step on every cell that is not an obstacle.
REGROWTH = 0.01
#: Most resource a cell holds.
RESOURCE_CAP = 1.0
#: Fraction of the world covered by obstacles at the start.
OBSTACLE_DENSITY = 0.05
#: Side of the square resource patches laid out at the start.
PATCH = 8
#: Agents closer than this (Chebyshev distance, in cells) damage each other.
FIGHT_RANGE = 2
#: Number of steps between flushes to the file.
FLUSH_EVERY = 10


def run_demo(path: str | os.PathLike, *, height: int = 256, width: int = 256, agents: int = 32,
             steps: int = 50, seed: int = 0, overwrite: bool = False, snapshot_every: int = 10,
             on_step: Callable[[int, int], Any] | None = None, swmr: bool = True) -> dict[str, Any]:
    """Create a classic-preset world at ``path`` and run ``steps`` steps of random walkers.

    ``on_step(done, steps)`` is called after each step with the number of
    steps done so far (for a progress bar). The world is flushed every
    ``FLUSH_EVERY`` steps and closed (so flushed) at the end; a snapshot is
    taken at the start and every ``snapshot_every`` steps (0: never).

    ``on_step`` is also where a caller can stop the run: whatever it raises
    propagates, after the world was committed at the step just finished (a
    whole step: ``on_step`` runs between steps) and closed. That is how
    ``worldstore demo`` stops at Ctrl-C.

    ``swmr=True`` (the default, as for ``worldstore demo``) writes in HDF5's
    single-writer / multiple-reader mode, as ``worldstore.open(path, "r+",
    swmr=True)`` does, so that other processes can watch the run with
    ``worldstore.open(path)`` and :meth:`~worldstore.World.refresh`: they see
    each commit (every ``FLUSH_EVERY`` steps, and every snapshot).
    ``swmr=False`` writes as a plain writer, which lets no reader in.

    Returns a JSON-able summary: ``path``, ``height``, ``width``, ``agents``,
    ``steps``, ``seed``, ``step`` (the world's final step),
    ``committed_step``, ``swmr``, ``total_resources``, ``temporal`` (sum of each
    temporal layer), ``positions`` (the agents' final ``[y, x]``) and
    ``snapshots`` (the steps snapshotted) and ``seconds`` (wall time of the run).

    >>> import tempfile, os, worldstore
    >>> from worldstore.demo import run_demo
    >>> path = os.path.join(tempfile.mkdtemp(), "demo.h5")
    >>> summary = run_demo(path, height=16, width=16, agents=2, steps=3)
    >>> summary["step"], len(summary["positions"])
    (3, 2)
    >>> worldstore.inspect(path)["committed_step"]
    3
    """
    spec = classic(height, width, agents)
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
        raise SpecError(f"steps must be an integer >= 0, got {steps!r}")
    if isinstance(snapshot_every, bool) or not isinstance(snapshot_every, (int, np.integer)) or snapshot_every < 0:
        raise SpecError(f"snapshot_every must be an integer >= 0, got {snapshot_every!r}")
    if agents > height * width:
        raise SpecError(f"{agents} agents do not fit on a {height}x{width} world "
                        f"({height * width} cells)")
    rng = np.random.default_rng(seed)
    started = time.perf_counter()
    with create(path, spec, overwrite=overwrite, swmr=swmr) as world:
        positions = _populate(world, rng)
        if snapshot_every:
            world.snapshot()
        for done in range(1, steps + 1):
            positions = _step(world, positions, rng)
            if snapshot_every and done % snapshot_every == 0:
                world.snapshot()  # commits too
            elif done % FLUSH_EVERY == 0:
                world.commit()
            if on_step is not None:
                on_step(done, steps)
        world.commit()
        summary = {
            "path": os.path.abspath(world.path),
            "height": world.height,
            "width": world.width,
            "agents": world.agents,
            "steps": int(steps),
            "seed": seed,
            "swmr": bool(swmr),
            "step": world.current_step,
            "committed_step": world.committed_step,
            "total_resources": float(world["RESOURCES"].numpy().sum(dtype=np.float64)),
            "temporal": {name: float(layer.numpy().sum(dtype=np.float64))
                         for name, layer in world.layers.items() if layer.grid_class == "temporal"},
            "positions": positions.tolist(),
            "snapshots": [record["step"] for record in world.history()],
        }
    summary["seconds"] = round(time.perf_counter() - started, 6)
    return summary


def _populate(world: World, rng: np.random.Generator) -> np.ndarray:
    """Lay out the static world and the agents' start cells; return the positions."""
    height, width = world.shape
    start = rng.choice(height * width, size=world.agents, replace=False)
    positions = np.stack(np.unravel_index(start, (height, width)), axis=1).astype(np.int64)

    obstacles = rng.random((height, width)) < OBSTACLE_DENSITY
    obstacles[positions[:, 0], positions[:, 1]] = False
    world["OBSTACLES"][...] = obstacles
    world["VISIBILITY"][...] = ~obstacles
    world["TERRAIN_COST"][...] = (1.0 + 0.5 * rng.random((height, width))).astype(np.float32)

    # Square patches: a coarse random mask blown up to PATCH x PATCH blocks.
    coarse = rng.random((-(-height // PATCH), -(-width // PATCH))) < 0.3
    patches = np.repeat(np.repeat(coarse, PATCH, axis=0), PATCH, axis=1)[:height, :width]
    amount = rng.uniform(0.5, RESOURCE_CAP, (height, width)).astype(np.float32)
    world["RESOURCES"][...] = np.where(patches & ~obstacles, amount, np.float32(0))
    return positions


def _step(world: World, positions: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One step of the simulation (see the module docstring); returns the new positions."""
    height, width = world.shape
    obstacles = world["OBSTACLES"].numpy()

    target = positions + rng.integers(-1, 2, size=positions.shape)
    inside = (target[:, 0] >= 0) & (target[:, 0] < height) & (target[:, 1] >= 0) & (target[:, 1] < width)
    clipped = np.clip(target, 0, [height - 1, width - 1])
    free = inside & ~obstacles[clipped[:, 0], clipped[:, 1]]
    positions = np.where(free[:, None], target, positions)
    ys, xs = positions[:, 0], positions[:, 1]

    resources = world["RESOURCES"].numpy()
    resources += np.float32(REGROWTH) * ~obstacles
    np.minimum(resources, np.float32(RESOURCE_CAP), out=resources)
    resources[ys, xs] = 0

    world.deposit("TRAILS", ys, xs, 1.0)
    fighters = _near_another(positions, height, width)
    world.deposit("DAMAGE_HEAT", ys[fighters], xs[fighters], 1.0)
    _signal(world, positions, rng)

    world.step()

    radius = int(world.spec.layer("OBSERVATION").radius)  # type: ignore[arg-type]
    world.remember(np.arange(len(positions)), positions, radius, {"AGENT_MEMORY": "RESOURCES"})
    world.observe(positions, into="OBSERVATION")
    return positions


def _near_another(positions: np.ndarray, height: int, width: int) -> np.ndarray:
    """Which agents have another agent within ``FIGHT_RANGE`` cells (Chebyshev).

    Counts agents per cell on a grid padded by the range, then sums each
    agent's neighbourhood: O(agents), unlike an agents x agents distance
    matrix. The count includes the agent itself, hence ``> 1``.
    """
    reach = FIGHT_RANGE
    counts = np.zeros((height + 2 * reach, width + 2 * reach), dtype=np.int32)
    np.add.at(counts, (positions[:, 0] + reach, positions[:, 1] + reach), 1)
    side = 2 * reach + 1
    around = sliding_window_view(counts, (side, side))[positions[:, 0], positions[:, 1]]
    return around.sum(axis=(1, 2)) > 1


def _signal(world: World, positions: np.ndarray, rng: np.random.Generator) -> None:
    """Deposit 1.0 in ALLY_SIGNAL's 3x3 block (inside the world) around a random quarter of the agents."""
    height, width = world.shape
    senders = positions[rng.choice(len(positions), size=max(1, len(positions) // 4), replace=False)]
    offsets = np.stack(np.meshgrid([-1, 0, 1], [-1, 0, 1], indexing="ij"), axis=-1).reshape(-1, 2)
    cells = (senders[:, None, :] + offsets[None, :, :]).reshape(-1, 2)
    inside = (cells[:, 0] >= 0) & (cells[:, 0] < height) & (cells[:, 1] >= 0) & (cells[:, 1] < width)
    cells = cells[inside]
    world.deposit("ALLY_SIGNAL", cells[:, 0], cells[:, 1], 1.0)
