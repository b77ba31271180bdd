"""Options and helpers shared by the commands, and the one place errors become messages.

Every command's failure that a user can fix (a worldstore error, a file
problem) is reported by :class:`WorldstoreGroup` as one line,
``worldstore: error: <message>``, with exit code 1; usage errors keep click's
own message and exit code 2.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import click

import worldstore


class CommandError(click.ClickException):
    """A failure to report as ``worldstore: error: <message>`` (exit code 1)."""

    def show(self, file=None) -> None:
        click.echo(f"worldstore: error: {self.format_message()}", file=file or sys.stderr)


def one_line(exc: BaseException) -> str:
    """The message of ``exc`` on one line; OSErrors as ``path: reason``."""
    if isinstance(exc, OSError) and exc.strerror and exc.filename:
        message = f"{os.fsdecode(exc.filename)}: {exc.strerror}"
    else:
        message = str(exc) or type(exc).__name__
    return " ".join(message.split())


class WorldstoreGroup(click.Group):
    """A click group whose commands report worldstore and file errors as one line."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            raise  # click's main handles a closed pipe quietly
        except (worldstore.WorldstoreError, OSError) as exc:
            raise CommandError(one_line(exc)) from exc


class SizeType(click.ParamType):
    """``HxW`` as ``(height, width)``, parsed by :func:`worldstore.parse_size`."""

    name = "HxW"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        try:
            return worldstore.parse_size(value)
        except worldstore.SpecError as exc:
            self.fail(str(exc), param, ctx)


def parse_storage(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, str]:
    """``KEY=KIND`` pairs as a dict; what KEY and KIND may be is the library's to check."""
    choices: dict[str, str] = {}
    for value in values:
        key, sep, kind = value.partition("=")
        if not sep or not key.strip() or not kind.strip():
            raise click.BadParameter(f"{value!r} is not KEY=KIND (for example agent=memory)",
                                     ctx=ctx, param=param)
        choices[key.strip()] = kind.strip()
    return choices


def size_option(default: str | None = None):
    return click.option("--size", type=SizeType(), metavar="HxW", default=default, required=default is None,
                        show_default=default is not None, help="World size as HxW, for example 1024x1024.")


def agents_option(default: int | None = None):
    return click.option("--agents", type=click.IntRange(min=1), default=default, required=default is None,
                        show_default=default is not None, help="Number of agents.")


storage_option = click.option(
    "--storage", "storage", multiple=True, metavar="KEY=KIND", callback=parse_storage,
    help="Storage kind (mapped or memory) for a grid class (resource, environment, temporal, agent, "
         "observation) or a layer name. Repeatable.")

overwrite_option = click.option("--overwrite", is_flag=True, help="Replace an existing file at PATH.")

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


#: A world file; whether it exists (and is a world) is the library's to report.
path_argument = click.argument("path", type=click.Path())


@contextmanager
def no_overwrite(path: str) -> Iterator[None]:
    """Turn the library's "file exists" error into advice in the CLI's own words."""
    try:
        yield
    except worldstore.WorldExistsError as exc:
        raise CommandError(f"{path} exists; pass --overwrite to replace it") from exc


def format_bytes(count: int) -> str:
    """``1536`` -> ``'1.5 KiB'``."""
    if count < 1024:
        return f"{count} B"
    value = float(count)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024:
            break
    return f"{value:.1f} {unit}"


@contextmanager
def progress(label: str, length: int) -> Iterator[Callable[[int, int], None]]:
    """Yield an ``on_step(done, total)`` callback drawing a bar on stderr.

    The bar appears only when stderr is a terminal: in a pipe or a log,
    nothing is written (click would still print the label once).
    """
    if not sys.stderr.isatty():
        yield lambda done, total: None
        return
    with click.progressbar(length=length, label=label, file=sys.stderr) as bar:
        yield lambda done, total: bar.update(done - bar.pos)
