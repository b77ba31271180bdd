"""``worldstore inspect``: what a world file holds, as a table or as JSON."""

from __future__ import annotations

import json

import click

import worldstore

from .options import format_bytes, json_option, path_argument, sigint

_COLUMNS = ("name", "class", "dtype", "shape", "storage", "on disk", "fill", "pad", "nnz (density)")


@click.command(short_help="Describe a world file.")
@path_argument
@json_option
def inspect(path, as_json):
    """Describe the world file PATH: size, clock, file and every layer. Changes nothing.

    --json prints the documented inspect schema (docs/format.md).
    """
    with sigint.anywhere(f"{path} was only read"):
        info = worldstore.inspect(path)
    click.echo(json.dumps(info, indent=2) if as_json else render(info))


def render(info: dict) -> str:
    """The human-readable form of :func:`worldstore.inspect`'s dictionary."""
    header = [
        f"world   {info['path']}",
        f"size    {info['height']}x{info['width']}, {info['agents']} agents",
        f"step    {info['step']} (committed {info['committed_step']})",
        f"file    {format_bytes(info['file_bytes'])} ({format_bytes(info['allocated_bytes'])} allocated)",
    ]
    rows = [_COLUMNS] + [
        (layer["name"], layer["class"], layer["dtype"], "x".join(map(str, layer["shape"])), layer["storage"],
         format_bytes(layer["bytes_on_disk"]), str(layer["fill_value"]), str(layer["pad_value"]),
         f"{layer['nnz']} ({layer['density']:.2%})" if "nnz" in layer else "")
        for layer in info["layers"]
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    table = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(header + [""] + table)
