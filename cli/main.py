"""The ``worldstore`` command: a thin shell over the library, one module per command.

Commands register here; options they share live in :mod:`cli.options`, which
also turns library and file errors into one-line messages (exit code 1).
"""

from __future__ import annotations

import click

import worldstore

from .create import create
from .demo import demo
from .history import compact_command, history, recover, restore, snapshot
from .inspect import inspect
from .render import render
from .options import WorldstoreGroup
from .validate import validate
from .view import view


@click.group(cls=WorldstoreGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(worldstore.__version__, "--version", prog_name="worldstore", message="%(prog)s %(version)s")
def main() -> None:
    """Grid worlds of multi-agent simulations, one memory-mapped HDF5 file each."""


main.add_command(create)
main.add_command(inspect)
main.add_command(demo)
main.add_command(snapshot)
main.add_command(history)
main.add_command(restore)
main.add_command(compact_command)
main.add_command(render)
main.add_command(recover)
main.add_command(validate)
main.add_command(view)


if __name__ == "__main__":
    main(prog_name="worldstore")
