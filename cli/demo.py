"""``worldstore demo``: a short random-walk simulation into a new world file."""

from __future__ import annotations

import json
import shlex

import click

from worldstore.demo import run_demo

from .options import (agents_option, interrupted_means, json_option, no_overwrite, overwrite_option, path_argument,
                      progress, size_option)


@click.command(short_help="Run a demo simulation into a new world file.")
@path_argument
@size_option("256x256")
@agents_option(32)
@click.option("--steps", type=click.IntRange(min=0), default=50, show_default=True, help="Steps to simulate.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Random seed; the same seed gives the same world.")
@click.option("--snapshot-every", type=click.IntRange(min=0), default=10, show_default=True,
              help="Take a snapshot at the start and every N steps (0: none).")
@click.option("--swmr/--no-swmr", default=True, show_default=True,
              help="Write as an HDF5 SWMR writer, so that every running world can be watched from another "
                   "process (worldstore.open(PATH, 'r', swmr=True), then refresh()); --no-swmr: a plain writer, "
                   "whose file HDF5 locks against readers until the run ends.")
@overwrite_option
@json_option
def demo(path, size, agents, steps, seed, snapshot_every, swmr, overwrite, as_json):
    """Create the classic-preset world PATH and run random walkers that write every layer.

    Ctrl-C stops the run after the step under way: that whole step is committed, the file is closed
    cleanly, one line says which step the file holds, and the exit code is 130.
    """
    height, width = size

    def stopped(exc) -> str:
        return (f"stopped after step {exc.done} of {steps}; {path} holds step {exc.done} "
                f"(the last whole step, committed on the way out)")

    with no_overwrite(path), interrupted_means(stopped), progress("simulating", steps) as on_step:
        summary = run_demo(path, height=height, width=width, agents=agents, steps=steps, seed=seed,
                           overwrite=overwrite, snapshot_every=snapshot_every, on_step=on_step, swmr=swmr)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    temporal = ", ".join(f"{name} {total:.1f}" for name, total in summary["temporal"].items())
    click.echo(f"ran {summary['steps']} steps of {summary['agents']} agents on a "
               f"{summary['height']}x{summary['width']} world in {summary['seconds']:.2f} s")
    click.echo(f"resources {summary['total_resources']:.1f}; {temporal}")
    quoted = shlex.quote(summary['path'])
    click.echo(f"wrote {summary['path']} at step {summary['step']}; look inside with: worldstore inspect {quoted}")
    if summary["snapshots"]:
        click.echo(f"snapshots at steps {', '.join(map(str, summary['snapshots']))}; list them with: "
                   f"worldstore history {quoted}")
