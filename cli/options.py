"""Options and helpers shared by the commands, and the one place errors become messages.

Every command's failure that a user can fix (a worldstore error, a file
problem) is reported by :class:`WorldstoreGroup` as one line,
``worldstore: error: <message>``, with exit code 1; usage errors keep click's
own message and exit code 2.

Ctrl-C (SIGINT) is handled here too, for every command: see :class:`SigintGuard`.
An interrupted command prints one line, ``worldstore: interrupted; <what the
file holds now>``, and exits with 130 (128 + SIGINT), as shells expect.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import click

import worldstore
from worldstore.render import COLORMAPS


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


#: Exit code of a command stopped by SIGINT (128 + the signal's number), as shells report it.
INTERRUPTED_EXIT = 128 + signal.SIGINT


class Interrupted(KeyboardInterrupt):
    """SIGINT, raised at a safe point (between two steps of a loop), never from inside a library call.

    ``done`` is the progress count of the last whole step (None if unknown);
    ``message`` says what the files hold now, for the one line printed.
    A subclass of KeyboardInterrupt, so that ``except Exception`` in the
    library lets it through and its ``except BaseException`` cleanups run.
    """

    def __init__(self, message: str | None = None, done: int | None = None):
        super().__init__(message or "")
        self.message = message
        self.done = done


class InterruptedExit(click.ClickException):
    """The one line an interrupted command prints (exit code 130)."""

    exit_code = INTERRUPTED_EXIT

    def show(self, file=None) -> None:
        click.echo(f"worldstore: {self.format_message()}", file=file or sys.stderr)


class SigintGuard:
    """What SIGINT does while a command runs: it asks the command to stop, at a safe point.

    Why not Python's default (KeyboardInterrupt raised wherever the main
    thread happens to be)? A loop over an h5py world spends its Python time
    in the weakref callbacks h5py runs as its objects die; an exception
    raised there cannot propagate: Python prints ``Exception ignored in:
    <function WeakValueDictionary...remove>`` and the loop carries on (it
    took ~26 Ctrl-Cs to stop ``worldstore demo`` at 1024x1024). And one that
    does propagate may land half-way through a step or a restore, which the
    world's ``close()`` would then commit.

    So the handler only sets :attr:`requested`. Loops check it between their
    steps through :func:`checkpoint` (every :func:`progress` callback does)
    and raise :class:`Interrupted` there; a command with no loop finishes
    its one operation, and :class:`WorldstoreGroup` then reports the
    interrupt. Inside :meth:`anywhere` (commands that only read and print),
    the handler raises KeyboardInterrupt at once, as Python's does; should
    that land in a finalizer, :attr:`requested` still stops the command at
    its end, and the "Exception ignored" report is kept off stderr.
    """

    def __init__(self) -> None:
        self.requested = False
        self._anywhere = 0

    def handler(self, signum, frame) -> None:
        self.requested = True
        if self._anywhere:
            raise KeyboardInterrupt

    def checkpoint(self, done: int | None = None) -> None:
        """Raise :class:`Interrupted` if SIGINT came: call it where stopping leaves everything whole."""
        if self.requested:
            raise Interrupted(done=done)

    @contextmanager
    def anywhere(self, message: str) -> Iterator[None]:
        """Inside: SIGINT stops at once (for code that changes nothing), reported as ``message``."""
        self._anywhere += 1
        try:
            if self.requested:
                raise KeyboardInterrupt
            yield
        except KeyboardInterrupt as exc:
            if getattr(exc, "message", None):
                raise
            raise Interrupted(message) from None
        finally:
            self._anywhere -= 1

    @contextmanager
    def installed(self) -> Iterator["SigintGuard"]:
        """The handler (and a filter of "Exception ignored ... KeyboardInterrupt") while inside.

        Left out off the main thread (signals go to the main thread only) and
        where SIGINT is ignored (``nohup``, a shell's background job): that stays so.
        """
        self.requested = False
        if (threading.current_thread() is not threading.main_thread()
                or signal.getsignal(signal.SIGINT) is signal.SIG_IGN):
            yield self
            return
        previous_handler = signal.signal(signal.SIGINT, self.handler)
        previous_hook = sys.unraisablehook

        def unraisable(report) -> None:
            if isinstance(report.exc_value, KeyboardInterrupt):
                self.requested = True  # swallowed in a finalizer: the flag carries it on
                return
            previous_hook(report)

        sys.unraisablehook = unraisable
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, signal.SIG_DFL if previous_handler is None else previous_handler)
            sys.unraisablehook = previous_hook


#: The guard of the command running now (one command per process).
sigint = SigintGuard()


def checkpoint(done: int | None = None) -> None:
    """Stop here (:class:`Interrupted`) if SIGINT came; see :class:`SigintGuard`."""
    sigint.checkpoint(done)


@contextmanager
def interrupted_means(describe: Callable[[Interrupted], str]) -> Iterator[None]:
    """Word an interrupt inside as ``describe(exc)``: what the command's files hold after stopping there."""
    try:
        yield
    except Interrupted as exc:
        if exc.message:
            raise
        raise Interrupted(describe(exc), exc.done) from None


class WorldstoreGroup(click.Group):
    """A click group whose commands report worldstore and file errors as one line, and stop cleanly on Ctrl-C."""

    def invoke(self, ctx: click.Context):
        with sigint.installed() as guard:
            try:
                result = super().invoke(ctx)
            except BrokenPipeError:
                raise  # click's main handles a closed pipe quietly
            except (worldstore.WorldstoreError, OSError) as exc:
                if guard.requested:  # an error on the way out of an interrupt (a write cut short)
                    raise InterruptedExit(f"interrupted, and then: {one_line(exc)}") from exc
                raise CommandError(one_line(exc)) from exc
            except KeyboardInterrupt as exc:
                message = getattr(exc, "message", None)
                raise InterruptedExit(f"interrupted; {message}" if message else "interrupted") from None
            if guard.requested:  # it came too late to stop anything, or the command had nothing to stop
                raise InterruptedExit("interrupted; the command had finished first (its output stands)")
            return result


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
    help="Storage kind (mapped, memory, or sparse for temporal layers) for a grid class (resource, "
         "environment, temporal, agent, observation) or a layer name. Repeatable.")

colormap_option = click.option(
    "--colormap", type=click.Choice(sorted(COLORMAPS)), default="viridis", show_default=True,
    help="Colors of the values, from the smallest to the largest (bool layers: its two ends).")

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


@contextmanager
def one_writer(path: str, again: str) -> Iterator[None]:
    """A world another process holds for writing, said briefly and with what to do (the library's message
    speaks to Python callers: ``mode='r'``)."""
    try:
        yield
    except worldstore.WorldLockedError as exc:
        raise CommandError(f"{path} is open for writing in another process (one writer per file); stop that "
                           f"one first, then run: {again}") from exc


def check_world_file(path: str) -> None:
    """Say that ``path`` is missing or not HDF5 in the words every command uses (``inspect``, ``open``)."""
    import h5py

    worldstore.world.check_path(path)
    if not h5py.is_hdf5(path):
        raise worldstore.WorldFormatError(f"{path} is not an HDF5 file, so not a world file")


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

    The callback is also the loop's safe point for Ctrl-C: after SIGINT it
    raises :class:`Interrupted` (``done``: the steps finished), so the loop
    stops between two whole steps.
    """
    if not sys.stderr.isatty():
        def on_step(done: int, total: int) -> None:
            sigint.checkpoint(done)

        yield on_step
        return
    with click.progressbar(length=length, label=label, file=sys.stderr) as bar:
        def draw(done: int, total: int) -> None:
            bar.update(done - bar.pos)
            sigint.checkpoint(done)

        yield draw
