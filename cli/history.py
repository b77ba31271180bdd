"""``worldstore snapshot | history | restore``: a world's history from the command line."""

from __future__ import annotations

import datetime
import json

import click

import worldstore

from .options import (check_world_file, format_bytes, interrupted_means, json_option, one_writer, path_argument,
                      progress, sigint)


@click.command(short_help="Append the world's committed state to its history.")
@path_argument
@json_option
def snapshot(path, as_json):
    """Commit the world file PATH and append every layer's state to its history.

    Ctrl-C abandons the snapshot between two layers: the file keeps its commit and its history as
    they were (the next snapshot overwrites what was copied), and the exit code is 130.
    """
    with one_writer(path, f"worldstore snapshot {path}"):
        world = worldstore.open(path, "r+")
    with world:
        def abandoned(exc) -> str:
            return (f"the snapshot was abandoned after {exc.done} of {len(world.layers)} layers; {path} holds "
                    f"its last commit (step {world.committed_step}) and the snapshots it had")

        with interrupted_means(abandoned), progress("snapshot", len(world.layers)) as on_layer:
            record = world.snapshot(on_progress=on_layer)
    click.echo(json.dumps(record) if as_json else
               f"snapshot {record['index']} of {path} at step {record['step']}")


@click.command(short_help="List a world's snapshots.")
@path_argument
@json_option
def history(path, as_json):
    """List the snapshots in the world file PATH: index, step, time and bytes stored. Changes nothing."""
    with sigint.anywhere(f"{path} was only read"), worldstore.open(path) as world:
        records = world.history()
    if as_json:
        click.echo(json.dumps(records))
        return
    if not records:
        click.echo(f"{path}: no snapshots yet (take one with `worldstore snapshot {path}`)")
        return
    click.echo(f"{'index':>5}  {'step':>8}  {'time (UTC)':<19}  {'bytes':>10}")
    for record in records:
        when = datetime.datetime.fromtimestamp(record["time"], datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
        click.echo(f"{record['index']:>5}  {record['step']:>8}  {when:<19}  {format_bytes(record['bytes']):>10}")


@click.command(short_help="Make a past snapshot the live state.")
@path_argument
@click.argument("step", type=int)
@json_option
def restore(path, step, as_json):
    """Make the state of the world file PATH at snapshot STEP live again (later snapshots stay).

    Ctrl-C does not cut a restore short (half the layers restored is no state the world ever had):
    the restore finishes and is committed, then the command exits with 130.
    """
    with one_writer(path, f"worldstore restore {path} {step}"):
        world = worldstore.open(path, "r+")
    with world:
        world.restore(step)
        report = {"path": path, "restored_step": step, "committed_step": world.committed_step,
                  "snapshots": [record["step"] for record in world.history()]}
    click.echo(json.dumps(report) if as_json else f"{path}: restored step {step}")


@click.command(name="compact", short_help="Rewrite a world file compactly, thinning its history.")
@path_argument
@click.option("--keep-last", type=click.IntRange(min=1), help="Keep the last K snapshots.")
@click.option("--keep-every", type=click.IntRange(min=1), help="Keep every M-th snapshot (the first included).")
@click.option("--codec", type=click.Choice(worldstore.HISTORY_CODECS), default="gzip", show_default=True,
              help="Compression of the history; blosc2 needs hdf5plugin (here and in other tools).")
@json_option
def compact_command(path, keep_last, keep_every, codec, as_json):
    """Rewrite the world file PATH without dead space, keeping the snapshots the rules name (all, by default).

    Every copied layer and snapshot is checked against the original by checksum before the new
    file replaces it; the original is untouched if anything fails or the run is killed. Refuses
    a file that a writer holds. Ctrl-C stops it the same way: the partial copy is removed and the
    exit code is 130.
    """
    def abandoned(exc) -> str:
        return f"compaction abandoned: {path} is unchanged (the partial copy was removed)"

    with interrupted_means(abandoned), progress("compacting", 100) as on_step:
        report = worldstore.compact(path, keep_last=keep_last, keep_every=keep_every, codec=codec,
                                    on_progress=lambda done, total: on_step(100 * done // max(1, total), 100))
    if as_json:
        click.echo(json.dumps(report))
        return
    click.echo(f"compacted {path}: {format_bytes(report['bytes_before'])} -> {format_bytes(report['bytes_after'])}, "
               f"{len(report['snapshots_kept'])} of {report['snapshots_before']} snapshots kept, "
               f"{report['checksums']} checksums verified")


@click.command(short_help="Make a world whose writer was killed open again.")
@path_argument
@json_option
def recover(path, as_json):
    """Clear the "open for write" flags a killed writer left in PATH (as h5clear -s does), finish or
    discard the commit it was writing, and report.

    Refuses while a process holds the file. A writer's worldstore.open(path, "r+") does the same by
    itself; readers and read-only commands never do (they read the last commit, or say to run this).
    """
    check_world_file(path)
    with one_writer(path, f"worldstore recover {path}"):
        report = worldstore.recover(path)
    if as_json:
        click.echo(json.dumps(report))
        return
    done = ["cleared the flags a killed writer left" if report["flags_cleared"] else "no flags to clear"]
    commits = report.get("journal_commits", 1)
    journal = {"replayed": f"wrote the journal's {commits} whole commit record{'s' if commits != 1 else ''} into "
                           "the file again (finishing one the kill interrupted)",
               "discarded": "discarded a commit the kill cut short (the file keeps the commit before)"}
    hdf5 = {"replayed": "wrote HDF5's last writes, which the kill interrupted, into the file again",
            "discarded": "discarded HDF5 writes the kill cut short before they reached the file"}
    if report.get("hdf5_journal") in hdf5:
        done.append(hdf5[report["hdf5_journal"]])
    if report.get("journal_reason"):
        done.append(f"discarded a journal beside it: {report['journal_reason']}")
    elif report["journal"] in journal:
        done.append(journal[report["journal"]])
    click.echo(f"{path}: {'; '.join(done)}; committed step {report['committed_step']}")
