"""``worldstore demo``: a short random-walk simulation into a new world file."""

from __future__ import annotations

import json
import shlex

import click

from worldstore.demo import run_demo

from .options import agents_option, json_option, no_overwrite, overwrite_option, path_argument, progress, size_option


@click.command(short_help="Run a demo simulation into a new world file.")
@path_argument
@size_option("256x256")
@agents_option(32)
@click.option("--steps", type=click.IntRange(min=0), default=50, show_default=True, help="Steps to simulate.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Random seed; the same seed gives the same world.")
@click.option("--snapshot-every", type=click.IntRange(min=0), default=10, show_default=True,
              help="Take a snapshot at the start and every N steps (0: none).")
@overwrite_option
@json_option
def demo(path, size, agents, steps, seed, snapshot_every, overwrite, as_json):
    """Create the agentfarm world PATH and run random walkers that write every layer."""
    height, width = size
    with no_overwrite(path), progress("simulating", steps) as on_step:
        summary = run_demo(path, height=height, width=width, agents=agents, steps=steps, seed=seed,
                           overwrite=overwrite, snapshot_every=snapshot_every, on_step=on_step)
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
