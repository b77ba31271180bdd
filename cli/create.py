"""``worldstore create``: a new world file from a preset."""

from __future__ import annotations

import json

import click

import worldstore
from worldstore.presets import PRESETS

from .options import (agents_option, format_bytes, json_option, no_overwrite, overwrite_option, path_argument,
                      size_option, storage_option)


@click.command(short_help="Create a world file from a preset.")
@path_argument
@click.option("--preset", type=click.Choice(sorted(PRESETS)), default="classic", show_default=True,
              help="Which layers the world has.")
@size_option()
@agents_option()
@click.option("--obs-radius", type=click.IntRange(min=0), default=None,
              help="Radius R of the observation windows (side 2R+1); the preset's default if omitted.")
@storage_option
@overwrite_option
@json_option
def create(path, preset, size, agents, obs_radius, storage, overwrite, as_json):
    """Create the world file PATH, every layer allocated on disk and at its fill value.

    \b
    Example:
      worldstore create farm.h5 --size 1024x1024 --agents 64 --storage agent=memory
    """
    options = {"storage": storage} if obs_radius is None else {"storage": storage, "obs_radius": obs_radius}
    spec = worldstore.presets.preset(preset, *size, agents, **options)
    with no_overwrite(path):
        worldstore.create(path, spec, overwrite=overwrite).close()
    info = worldstore.inspect(path)
    if as_json:
        click.echo(json.dumps(info, indent=2))
    else:
        click.echo(f"created {info['path']}: {info['height']}x{info['width']}, {info['agents']} agents, "
                   f"{len(info['layers'])} layers, {format_bytes(info['file_bytes'])}")
