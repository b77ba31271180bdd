"""Cost per step of a Mesa model whose property layers live in a world (worldstore.mesa), against stock Mesa.

Two models, each run stock and with its grid attached to a world
(``worldstore.mesa.attach(model.grid, path, model=model)``): every property
layer, Mesa's "empty" one included, is then a world layer mapped over the
file, and a step hook takes a world step and commits after every model step.

  sugarscape   Mesa's own Sugarscape G1MT example (50 x 50, 200 traders,
               trade on): sugar, spice and "empty" layers.
  farm         a harvest model of this script's own (food regrows each
               step; agents move to the richest free neighbour and eat it)
               on a larger grid: food, visits and "empty" layers.

Variants: stock Mesa; attached, committing every step (``durable=False``,
the default: survives a killed process); the same with ``durable=True``
(fsyncs each commit: survives a power cut); and with a snapshot every 10
steps. Rounds run every variant once, in a rotating order, from the same
seed; figures are medians of per-round times and of per-round ratios to
stock. Model construction is not timed; attaching is reported apart. After
each round every variant's grids must equal the stock ones (the report says so).

    python benchmarks/mesa_grid.py            # 200 steps of each model, 5 rounds
    python benchmarks/mesa_grid.py --quick    # 20 steps, 2 rounds (seconds; for CI)
    python benchmarks/mesa_grid.py --json

Needs Mesa (pip install 'worldstore[mesa]', Python >= 3.12).
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
from layers import benchmark_parser, emit, machine_info, parse_benchmark_args, progress_printer  # noqa: E402

try:
    import mesa
    from mesa.discrete_space import CellAgent, OrthogonalMooreGrid
    from worldstore import mesa as worldstore_mesa
    worldstore_mesa._require_mesa("benchmarks/mesa_grid.py")
except ImportError as exc:  # MissingExtraError is an ImportError
    sys.exit(f"benchmarks/mesa_grid.py needs Mesa >= 3.5: pip install 'worldstore[mesa]' (Python >= 3.12). {exc}")

FULL = {"rounds": 5, "steps": 200, "farm": (200, 200, 800)}
QUICK = {"rounds": 2, "steps": 20, "farm": (60, 40, 80)}
SEED = 42
SNAPSHOT_EVERY = 10
#: variant name -> attach() options (None: stock Mesa)
VARIANTS: dict[str, dict[str, Any] | None] = {
    "stock Mesa": None,
    "worldstore, commit every step": {"durable": False},
    "worldstore, durable commit every step": {"durable": True},
    "worldstore, commit every step, snapshot every 10": {"durable": False, "snapshot_every": SNAPSHOT_EVERY},
}


class Harvester(CellAgent):
    def __init__(self, model, cell):
        super().__init__(model)
        self.cell = cell
        self.stock = 0.0

    def act(self):
        # The richest free cell around (ties by coordinate): reads through the cell accessors.
        free = [cell for cell in self.cell.neighborhood if cell.is_empty]
        if free:
            self.cell = max(free, key=lambda cell: (cell.food, cell.coordinate))
        self.stock += self.cell.food
        self.cell.food = 0.0  # writes through the cell accessors
        self.cell.visits += 1


class Farm(mesa.Model):
    """Food regrows towards each cell's capacity; harvesters move to the richest free neighbour and eat it."""

    def __init__(self, width: int, height: int, agents: int, rng: int = SEED, dimensions=tuple):
        super().__init__(rng=rng)
        self.grid = OrthogonalMooreGrid(dimensions((width, height)), torus=True, random=self.random)
        self.capacity = self.rng.integers(0, 6, (width, height)).astype(np.float64)
        self.grid.create_property_layer("food", 0.0)
        self.grid.food.data = self.capacity
        self.grid.create_property_layer("visits", 0, dtype=np.int32)
        Harvester.create_agents(self, agents, self.random.choices(self.grid.all_cells.cells, k=agents))

    def step(self):
        self.grid.food.data = np.minimum(self.grid.food.data + 0.5, self.capacity)
        self.agents.shuffle_do("act")


def sugarscape():
    from mesa.examples.advanced.sugarscape_g1mt.model import SugarscapeG1mt
    return SugarscapeG1mt(rng=SEED)


def grids(model) -> dict[str, np.ndarray]:
    return {name: np.array(layer.data) for name, layer in model.grid._mesa_property_layers.items()}


def run_variant(make, options: dict[str, Any] | None, steps: int, path: str) -> tuple[float, float, dict]:
    """``(attach seconds, step seconds, final grids)`` of one run."""
    model = make()
    attached = None
    started = time.perf_counter()
    if options is not None:
        attached = worldstore_mesa.attach(model.grid, path, model=model, **options)
    attach_s = time.perf_counter() - started
    started = time.perf_counter()
    for _ in range(steps):
        model.step()
    step_s = time.perf_counter() - started
    final = grids(model)
    if attached is not None:
        attached.close()
        os.unlink(path)
    return attach_s, step_s, final


def run_model(name: str, make, steps: int, rounds: int, directory: str, progress) -> dict[str, Any]:
    names = list(VARIANTS)
    seconds: dict[str, list[float]] = {v: [] for v in names}
    attach: dict[str, list[float]] = {v: [] for v in names}
    agree = True
    for round_ in range(rounds):
        order = names[round_ % len(names):] + names[:round_ % len(names)]
        finals = {}
        for variant in order:
            path = os.path.join(directory, f"{name}-{round_}.h5")
            attach_s, step_s, finals[variant] = run_variant(make, VARIANTS[variant], steps, path)
            seconds[variant].append(step_s)
            attach[variant].append(attach_s)
        reference = finals[names[0]]
        agree = agree and all(final.keys() == reference.keys()
                              and all(np.array_equal(final[k], reference[k]) for k in reference)
                              for final in finals.values())
        progress(f"{name}: round {round_ + 1}/{rounds} done")
    stock = seconds[names[0]]
    model = make()
    width, height = model.grid.dimensions
    return {
        "model": name, "width": width, "height": height, "agents": len(model.agents), "steps": steps,
        "layers": sorted(model.grid._mesa_property_layers),
        "seconds": {v: statistics.median(s) for v, s in seconds.items()},
        "ms_per_step": {v: 1e3 * statistics.median(s) / steps for v, s in seconds.items()},
        "ratio_to_stock": {v: statistics.median(o / t for o, t in zip(seconds[v], stock)) for v in names[1:]},
        "extra_ms_per_step": {v: 1e3 * statistics.median((o - t) / steps for o, t in zip(seconds[v], stock))
                              for v in names[1:]},
        "attach_s": {v: statistics.median(attach[v]) for v in names[1:]},
        "identical_to_stock": agree,
    }


def print_report(report: dict[str, Any]) -> None:
    print("Mesa models, stock and backed by a world (benchmarks/mesa_grid.py)")
    machine = report["machine"]
    print(f"machine   {machine['cpu_model']}, {machine['cores']} cores, {machine['filesystem']}; Python "
          f"{machine['python']}, Mesa {report['mesa']}, worldstore {machine['worldstore']}")
    print(f"rounds    {report['rounds']} (medians of paired rounds){'; --quick' if report['quick'] else ''}")
    for result in report["models"]:
        print(f"\n{result['model']}: {result['width']} x {result['height']}, {result['agents']} agents at the start, "
              f"{result['steps']} steps, layers {', '.join(result['layers'])}")
        for variant, seconds in result["seconds"].items():
            line = f"  {variant:50} {seconds:7.3f} s  {result['ms_per_step'][variant]:7.3f} ms/step"
            if variant in result["ratio_to_stock"]:
                line += (f"  {result['ratio_to_stock'][variant]:5.2f}x stock  "
                         f"+{result['extra_ms_per_step'][variant]:.3f} ms/step  "
                         f"(attach {1e3 * result['attach_s'][variant]:.1f} ms)")
            print(line)
        print(f"  grids identical to stock after every round: {'yes' if result['identical_to_stock'] else 'NO'}")


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser(__doc__, "20 steps, a small farm, 2 rounds (seconds; for CI)",
                              "timed rounds (default 5, --quick 2)")
    parser.add_argument("--steps", type=int, help="model steps per run (default 200, --quick 20)")
    args, config, rounds = parse_benchmark_args(parser, argv, FULL, QUICK)
    steps = config["steps"] if args.steps is None else args.steps
    if steps < 1:
        parser.error(f"--steps must be >= 1, got {steps}")
    progress = progress_printer(args.json)
    started = time.perf_counter()
    width, height, agents = config["farm"]
    models = [("farm", lambda: Farm(width, height, agents))]
    try:
        sugarscape()
        models.insert(0, ("sugarscape", sugarscape))
    except ImportError:
        progress("this Mesa does not ship its Sugarscape G1MT example: the farm model only")
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="worldstore-bench-mesa-") as directory:
        report = {"benchmark": "mesa", "quick": args.quick, "rounds": rounds, "mesa": mesa.__version__,
                  "machine": machine_info(directory),
                  "models": [run_model(name, make, steps, rounds, directory, progress) for name, make in models]}
    return emit(report, args.json, started, print_report)


if __name__ == "__main__":
    sys.exit(main())
