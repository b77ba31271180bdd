"""``worldstore validate``: the acceptance check of this machine, or the check of one world file."""

from __future__ import annotations

import textwrap

import click

from worldstore.validate import report_json
from worldstore.validate import validate as run_validation

from .options import SizeType, interrupted_means, json_option, progress

_RESULT = {"pass": "PASS", "fail": "FAIL", "skip": "skip"}


@click.command(short_help="Check that worldstore works here, or that a world file is sound.")
@click.argument("path", required=False, type=click.Path())
@click.option("--size", type=SizeType(), metavar="HxW", default=None,
              help="Size of the temporary worlds of the self-test (default 1024x1024).")
@click.option("--agents", type=click.IntRange(min=1), default=None, help="Agents of the temporary worlds (16).")
@click.option("--rounds", type=click.IntRange(min=1), default=None, help="Timed rounds per operation (7).")
@click.option("--dir", "directory", type=click.Path(exists=True, file_okay=False), default=None,
              help="Where the temporary worlds go (default: the system's temporary directory).")
@click.option("-v", "--verbose", is_flag=True, help="Print every check's detail, not only those that failed.")
@json_option
def validate(path, size, agents, rounds, directory, verbose, as_json):
    """Without PATH: build temporary worlds of every grid class and storage kind, check every
    structure against an in-RAM numpy reference, measure the mapped/memory latency ratios and
    the anonymous memory of growing mapped worlds, then remove them.

    With PATH: check the world file read-only, changing nothing: superblock and checksums,
    format and version, every dataset's dtype, shape, offset and size, the clock, every
    layer's values, sparse coordinates, the history index and every history chunk.

    Prints a table of the checks (--json: the report as JSON); exits with 1 if any failed.
    """
    if path is not None:
        given = [flag for flag, value in (("--size", size), ("--agents", agents), ("--rounds", rounds),
                                          ("--dir", directory)) if value is not None]
        if given:
            raise click.UsageError(f"{', '.join(given)} apply to the self-test (no PATH), not to checking a file")

    def stopped(exc) -> str:
        return (f"validation stopped: {path} was only read" if path is not None else
                "validation stopped: its temporary worlds were removed")

    with interrupted_means(stopped), progress("validating", 100) as on_step:
        report = run_validation(path, size=size, agents=agents, rounds=rounds, directory=directory,
                                on_progress=lambda done, total: on_step(100 * done // max(1, total), 100))
    click.echo(report_json(report) if as_json else render(report, verbose))
    if not report["passed"]:
        click.get_current_context().exit(1)


def render(report: dict, verbose: bool = False) -> str:
    """The report as a table: check, result, figures; the detail of failed (or, verbose, every) check below it."""
    if report["mode"] == "file":
        title = f"worldstore validate {report['path']} (read-only: the file is not changed)"
    else:
        s = report["settings"]
        title = (f"worldstore validate: temporary worlds of {s['height']}x{s['width']}, {s['agents']} agents "
                 f"(mapped and memory), {s['rounds']} timed rounds, in {s['directory']}")
    machine = report["machine"]
    about = (f"machine: {machine['platform']}, {machine['cpus']} CPUs; Python {machine['python']}, "
             f"numpy {machine['numpy']}, h5py {machine['h5py']} (HDF5 {machine['hdf5']}), "
             f"worldstore {machine['worldstore']}")
    lines = [title, about, ""]
    rows = [("check", "result", "figures")] + [(row["check"], _RESULT[row["status"]], row["figure"])
                                               for row in report["checks"]]
    widths = [max(len(row[i]) for row in rows) for i in range(2)]
    for index, row in enumerate(rows):
        lines.append(f"{row[0]:<{widths[0]}}  {row[1]:<{widths[1]}}  {row[2]}".rstrip())
        check = report["checks"][index - 1] if index else None
        if check and check["detail"] and (verbose or check["status"] != "pass"):
            lines += textwrap.wrap(check["detail"], 100, initial_indent="    ", subsequent_indent="    ")
    counts = report["counts"]
    total = sum(counts.values())
    verdict = "PASSED" if report["passed"] else "FAILED"
    summary = (f"{verdict}: {counts['pass']} of {total} checks passed, {counts['fail']} failed, "
               f"{counts['skip']} skipped ({report['seconds']:.1f} s)")
    lines += ["", summary]
    return "\n".join(lines)
