"""Compaction: rewrite a world file without its dead space, thinning its history.

:func:`compact` writes a new file next to the old one through the library
itself (a fresh world of the same spec, so its dimension scales are made new,
never copied: copying them with h5py breaks them, HDF5 issue 6200), copies the
live layers and the snapshots that the retention rules keep, checks every
copied state against the source by checksum, and only then renames the new
file over the old (``os.replace``, atomic). Killed at any point before that,
it leaves the original untouched (and at worst a ``.compacting`` file beside
it). It refuses to run while a writer holds the file.
"""

from __future__ import annotations

import errno
import hashlib
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from . import _platform, _schema, history, recovery
from .commit import is_disk_full, journal_path
from .errors import DiskFullError, HistoryError, WorldLockedError
from .spec import DEFAULT_SWITCH_DENSITY
from .storage import SparseStorage
from .world import World, _remove_lock_file, create, open as open_world


def kept_snapshots(steps: Sequence[int], keep_last: int | None = None, keep_every: int | None = None) -> list[int]:
    """Indices of the snapshots that survive: the last ``keep_last`` and every ``keep_every``-th, or all.

    >>> kept_snapshots([0, 10, 20, 30, 40, 50], keep_last=2, keep_every=3)
    [0, 3, 4, 5]
    """
    for name, value in (("keep_last", keep_last), ("keep_every", keep_every)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise HistoryError(f"{name} must be an integer >= 1 (or None), got {value!r}")
    count = len(steps)
    if keep_last is None and keep_every is None:
        return list(range(count))
    kept = set()
    if keep_last is not None:
        kept.update(range(max(0, count - keep_last), count))
    if keep_every is not None:
        kept.update(range(0, count, keep_every))
    return sorted(kept)


def _checksum(*arrays: np.ndarray) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(str((array.dtype.str, array.shape)).encode())
        digest.update(array.data)
    return digest.hexdigest()


def _live_state(world: World, name: str) -> tuple[np.ndarray, ...]:
    """A layer's live content in a canonical form: a dense array, or a temporal layer's sorted COO."""
    layer = world[name]
    if layer.grid_class == "temporal":
        coords, values = layer.coo()
        return coords.astype(np.int64), values
    return (layer.numpy(),)


def _past_state(world: World, index: int, name: str) -> tuple[np.ndarray, ...]:
    state = history.read_state(world, index, name)
    return tuple(state) if isinstance(state, tuple) else (state,)


def _chunk_offsets(dset, index: int) -> list[tuple[int, ...]]:
    """The chunk offsets of snapshot ``index`` of a dense history dataset."""
    grids = [range(0, extent, chunk) for extent, chunk in zip(dset.shape[1:], dset.chunks[1:])]
    return [(index,) + tuple(int(v) for v in offset) for offset in np.array(np.meshgrid(*grids, indexing="ij"))
            .reshape(len(grids), -1).T] if grids else [(index,)]


def _raw_chunks(dset, index: int) -> list[tuple[tuple[int, ...], int, bytes]]:
    """Snapshot ``index``'s stored chunks, compressed as they are: ``(offset, filter mask, bytes)``."""
    chunks = []
    for offset in _chunk_offsets(dset, index):
        try:
            mask, data = dset.id.read_direct_chunk(offset)
        except (OSError, KeyError, ValueError):  # a chunk never written (all fill value)
            continue
        chunks.append((offset, mask, bytes(data)))
    return chunks


def _raw_checksum(dset, index: int) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for offset, mask, data in _raw_chunks(dset, index):
        digest.update(str((offset[1:], mask, len(data))).encode())
        digest.update(data)
    return digest.hexdigest()


def _check_closed(path: str) -> None:
    """Raise :class:`WorldLockedError` unless the world is closed: compaction replaces the file, and a writer
    would go on writing into the old one; a dead writer's last commit may still be in its journal."""
    if not os.path.exists(path):
        return  # open_world says so
    if recovery.writer_alive(path):
        raise WorldLockedError(f"{path} is open for writing by a running process; compaction replaces the file, "
                               "so stop the writer (close the world) first")
    if os.path.exists(journal_path(path)) or recovery.status_flags(path):
        raise WorldLockedError(f"{path}: its writer died without closing it; run `worldstore recover {path}` "
                               "first, then compact")


def compact(path: str | os.PathLike, *, keep_last: int | None = None, keep_every: int | None = None,
            codec: str = "gzip", on_progress: Callable[[int, int], Any] | None = None) -> dict[str, Any]:
    """Rewrite the world file at ``path`` compactly; keep the snapshots the retention rules name.

    ``keep_last`` keeps the last K snapshots, ``keep_every`` every M-th (the
    first included); both together keep the union; neither keeps all.
    ``codec`` compresses the history (``gzip``, ``blosc2`` or ``none``).
    Temporal layers are stored sparse when their density is at most half of
    their switch density (``DEFAULT_SWITCH_DENSITY`` when unset), dense
    otherwise. ``on_progress(done, total)`` is called as layers and
    snapshots are copied. Returns what was done: ``bytes_before``,
    ``bytes_after``, ``snapshots_before``, ``snapshots_kept`` (their steps),
    ``checksums`` verified and ``seconds``.

    Raises :class:`WorldLockedError` while a writer holds the file.
    """
    started = time.perf_counter()
    path = os.fspath(path)
    _schema.history_filters(codec)  # an unknown codec fails before anything is written
    partial = os.path.join(os.path.dirname(os.path.abspath(path)), f".{os.path.basename(path)}.compacting")
    _check_closed(path)
    with open_world(path, "r") as source:
        bytes_before = os.path.getsize(path)
        records = history.snapshots(source)
        kept = kept_snapshots([r["step"] for r in records], keep_last, keep_every)
        spec = source.spec.with_storage(_temporal_forms(source))
        total = len(spec.layers) * (1 + len(kept))
        done = 0
        try:
            with create(partial, spec, overwrite=True, history_codec=codec) as target:
                for name in source:  # the live state
                    _copy_live(source, target, name)
                    done += 1
                    if on_progress:
                        on_progress(done, total)
                target._step = source.current_step
                target.commit()
                group = history.history_group(target)
                # Same codec: compressed chunks are copied as they are, neither decompressed nor recompressed.
                raw = history.history_group(source).attrs.get("codec", "gzip") == codec
                for new_index, index in enumerate(kept):
                    for name in source:
                        _copy_past(source, target, group, index, name, raw)
                        done += 1
                        if on_progress:
                            on_progress(done, total)
                    history.append_clock(group, new_index, records[index]["time"], records[index]["step"])
            checked = _verify(source, partial, kept, raw)
        except BaseException as exc:
            for leftover in (partial, journal_path(partial), partial + _platform.LOCK_SUFFIX):
                if os.path.exists(leftover):
                    os.unlink(leftover)
            if isinstance(exc, (OSError, RuntimeError)) and is_disk_full(exc):
                raise DiskFullError(errno.ENOSPC, f"compaction ran out of room for the new file ({exc}); it was "
                                    "removed and the world is unchanged", path) from exc
            raise
    _fsync(partial)
    try:
        _check_closed(path)  # a writer may have opened it while we copied
    except BaseException:
        os.unlink(partial)
        raise
    try:
        _platform.replace_file(partial, path)
    except BaseException:
        os.unlink(partial)
        raise
    finally:
        _remove_lock_file(partial)
    return {
        "path": path,
        "bytes_before": bytes_before,
        "bytes_after": os.path.getsize(path),
        "snapshots_before": len(records),
        "snapshots_kept": [records[index]["step"] for index in kept],
        "checksums": checked,
        "codec": codec,
        "seconds": round(time.perf_counter() - started, 6),
    }


def _temporal_forms(source: World) -> dict[str, str]:
    """Sparse or dense for each temporal layer, by its density now."""
    forms = {}
    for name, layer in source.layers.items():
        if layer.grid_class == "temporal":
            switch = layer.spec.switch_density or DEFAULT_SWITCH_DENSITY
            dense_kind = layer.storage if layer.storage != "sparse" else "mapped"
            forms[name] = "sparse" if layer.density <= switch / 2 else dense_kind
    return forms


def _copy_live(source: World, target: World, name: str) -> None:
    layer = target[name]
    if layer.grid_class == "temporal":
        coords, values = source[name].coo()
        storage = target._storages[name]
        if isinstance(storage, SparseStorage):
            if len(values):
                target.deposit(name, coords[:, 0], coords[:, 1], values, mode="set")
        else:
            storage.array[tuple(coords.T)] = values
        return
    target._storages[name].array[...] = source[name].numpy()


def _copy_past(source: World, target: World, group, index: int, name: str, raw: bool) -> None:
    if source.spec.layer(name).grid_class == "temporal":
        coords, values = history.read_state(source, index, name)
        history._append_coo(group, target.spec, name, history.snapshot_count(group), coords, values)
        return
    dset = group[name]
    new_index = dset.shape[0]
    dset.resize(new_index + 1, axis=0)
    original = history.history_group(source)[name]
    if raw and original.chunks == dset.chunks:
        for offset, mask, data in _raw_chunks(original, index):
            dset.id.write_direct_chunk((new_index,) + offset[1:], data, filter_mask=mask)
    else:
        dset[new_index] = original[index]


def _verify(source: World, partial: str, kept: list[int], raw: bool) -> int:
    """Every live layer and kept snapshot of the new file has the source's checksum; return how many."""
    checked = 0
    with open_world(partial, "r") as copy:
        if copy.current_step != source.current_step:
            raise HistoryError(f"compaction check failed: step {copy.current_step} != {source.current_step}")
        for name in source:
            if _checksum(*_live_state(copy, name)) != _checksum(*_live_state(source, name)):
                raise HistoryError(f"compaction check failed: layer {name!r} differs in the new file; "
                                   f"{source.path} is unchanged")
            checked += 1
        copied, original = history.snapshots(copy), history.snapshots(source)
        source_group, copy_group = history.history_group(source), history.history_group(copy)
        for new_index, index in enumerate(kept):
            for name in source:
                dense = source.spec.layer(name).grid_class != "temporal"
                if raw and dense and source_group[name].chunks == copy_group[name].chunks:
                    same = _raw_checksum(copy_group[name], new_index) == _raw_checksum(source_group[name], index)
                else:
                    same = _checksum(*_past_state(copy, new_index, name)) == _checksum(*_past_state(source, index, name))
                if not same:
                    raise HistoryError(f"compaction check failed: snapshot {index} of layer {name!r} differs; "
                                       f"{source.path} is unchanged")
                checked += 1
            if (copied[new_index]["step"], copied[new_index]["time"]) != (original[index]["step"],
                                                                         original[index]["time"]):
                raise HistoryError(f"compaction check failed: snapshot {index}'s step or time differs; "
                                   f"{source.path} is unchanged")
    return checked


def _fsync(path: str) -> None:
    fd = _platform.open_fd(path, os.O_RDONLY)
    try:
        _platform.durable_sync(fd)
    finally:
        os.close(fd)
