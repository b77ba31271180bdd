"""``worldstore render``: a PNG of any layer at any step, or a GIF across the history."""

from __future__ import annotations

import json

import click

import worldstore
from .options import CommandError, colormap_option, interrupted_means, json_option, path_argument, progress


@click.command(short_help="Draw a layer as a PNG (or a GIF across the history).")
@path_argument
@click.argument("layer")
@click.option("-o", "--output", "out", required=True, type=click.Path(dir_okay=False, writable=True),
              help="Where to write the picture; its extension picks the format (.png, .jpg, .webp...; .gif with --gif).")
@click.option("--step", type=int, help="Draw the snapshot of this step (default: the live state).")
@click.option("--agent", type=click.IntRange(min=0), help="The agent to draw, for agent and observation layers.")
@colormap_option
@click.option("--gif", is_flag=True, help="Animate the layer across every snapshot instead.")
@click.option("--max-size", type=click.IntRange(min=16), default=2048, show_default=True,
              help="Thin larger layers (every k-th cell) to at most this many pixels a side.")
@json_option
def render(path, layer, out, step, agent, colormap, gif, max_size, as_json):
    """Draw LAYER of the world file PATH, with a colormap and a legend of its range. Changes nothing.

    Example:
      worldstore render farm.h5 AGENT_MEMORY --agent 3 --step 40 -o memory.png
    """
    with worldstore.open(path) as world:
        if gif:
            if step is not None:
                raise click.UsageError("--gif draws every snapshot; leave out --step")
            steps = len(world.history())
            if not steps:
                raise CommandError(f"{path} has no snapshots to animate; take one with: worldstore snapshot {path}")
            with interrupted_means(lambda exc: f"no GIF was written ({path} was only read)"), \
                    progress("drawing frames", max(1, steps)) as on_frame:
                report = worldstore.render_gif(world, layer, out, agent=agent, colormap=colormap,
                                               max_size=max_size, on_frame=on_frame)
        else:
            report = worldstore.render(world, layer, out, step=step, agent=agent, colormap=colormap,
                                       max_size=max_size)
    if as_json:
        click.echo(json.dumps(report))
    elif gif:
        click.echo(f"wrote {out}: {layer}, {report['frames']} frames (steps {report['steps'][0]}.."
                   f"{report['steps'][-1]}), values {report['min']:.4g}..{report['max']:.4g}")
    else:
        click.echo(f"wrote {out}: {layer} {report['width']}x{report['height']} px, values "
                   f"{report['min']:.4g}..{report['max']:.4g}")
