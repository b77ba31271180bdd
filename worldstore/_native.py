"""worldstore's compiled kernels (``_kernels.c``), each with its numpy twin.

The kernels are loaded with ctypes from the shared library built at install
time. Where it is missing (no compiler when installing) or
``WORLDSTORE_NATIVE=0`` is set, the numpy twins run instead: same results,
bit for bit, only slower. The tests run both and compare.
"""

from __future__ import annotations

import ctypes
import glob
import os
import weakref
from typing import Any

import numpy as np

_HERE = os.path.dirname(os.path.abspath(__file__))


i64, ptr = ctypes.c_int64, ctypes.c_void_p
#: Each compiled library's functions, as ``name: (restype, argtypes)``.
_KERNELS = {
    "ws_merge_back": (ctypes.c_int, [ptr, ptr, i64, ptr, ptr, i64, i64]),
    "ws_compact": (i64, [ptr, ptr, i64, i64]),
    "ws_locate_sorted": (None, [ptr, i64, ptr, i64, ptr, ptr]),
    "ws_block_starts": (None, [ptr, i64, i64, ptr, i64]),
    "ws_tags_mark": (None, [ptr, i64, ptr, i64, ctypes.c_uint8, ctypes.c_uint8]),
    "ws_gather_f32": (ctypes.c_int, [i64, ptr, ptr, ptr, ptr, ptr, i64, i64, ptr, ptr, i64, i64, ptr, i64, ptr,
                                     ctypes.c_int, i64]),
    "ws_decay_f32": (i64, [ptr, i64, ctypes.c_float, ctypes.c_float]),
    "ws_decay_f64": (i64, [ptr, i64, ctypes.c_double, ctypes.c_double]),
    "ws_changed_lines": (i64, [ptr, ptr, i64, i64, ptr, ptr, ptr]),
    "ws_copy_units": (None, [ptr, ptr, ptr, i64, i64, ctypes.c_int]),
    "ws_line_words": (i64, [ptr, ptr, ptr, i64, ptr, ptr]),
}
_COW = {
    "ws_cow_register": (i64, [ptr, i64, ctypes.c_int, i64, ptr]),
    "ws_cow_blocks": (i64, [ptr, i64]),
    "ws_cow_reset": (ctypes.c_int, [i64]),
    "ws_cow_keep": (i64, [i64]),
    "ws_cow_unregister": (None, [i64]),
}
_GUARD = {
    "ws_guard_register": (i64, [ptr, i64]),
    "ws_guard_unregister": (None, [i64]),
    "ws_guard_faults": (i64, [ptr, i64]),
    "ws_guard_total": (i64, []),
}


def _load(stem: str, functions: dict[str, tuple[object, list]]) -> ctypes.CDLL | None:
    """The compiled library ``worldstore/<stem>*`` with ``functions`` typed, or None (not built, not loadable
    here, or ``WORLDSTORE_NATIVE=0``)."""
    if os.environ.get("WORLDSTORE_NATIVE", "1") == "0":
        return None
    for path in sorted(glob.glob(os.path.join(_HERE, stem + "*.so")) + glob.glob(os.path.join(_HERE, stem + "*.pyd"))):
        try:
            library = ctypes.CDLL(path)
            for name, (restype, argtypes) in functions.items():
                function = getattr(library, name)
                function.restype, function.argtypes = restype, argtypes
        except (OSError, AttributeError):  # another platform's build, or an older one without these symbols
            continue
        return library
    return None


#: The kernels (``_kernels.c``), or None: then every function here uses numpy.
library = _load("_kernels", _KERNELS)
#: The writer's block copier (``_cow.c``; Linux only, it needs mremap), or None: writers map MAP_PRIVATE.
cow_library = _load("_cow", _COW)
#: The guard of files cut short under a mapping (``_guard.c``; POSIX), or None: no guard.
guard_library = _load("_guard", _GUARD)


def _ptr(array: np.ndarray) -> int:
    return array.ctypes.data


def merge_into(cells: np.ndarray, values: np.ndarray, count: int, new_cells: np.ndarray,
               new_values: np.ndarray) -> None:
    """Merge sorted ``new_cells`` (none already held) into the first ``count`` entries of
    ``cells``/``values``, in place: the buffers must have room for ``count + len(new_cells)``."""
    end = count + len(new_cells)
    if end > len(cells) or end > len(values):
        raise ValueError(f"merge_into: buffers of {len(cells)} entries cannot hold {end}")
    if library is None or not (cells.flags.c_contiguous and values.flags.c_contiguous):
        merged = np.concatenate([cells[:count], new_cells])
        order = np.argsort(merged, kind="stable")  # two sorted runs: one merge pass (timsort)
        cells[:end] = merged[order]
        values[:end] = np.concatenate([values[:count], new_values])[order]
        return
    new_cells = np.ascontiguousarray(new_cells, np.int64)
    new_values = np.ascontiguousarray(new_values, values.dtype)
    library.ws_merge_back(_ptr(cells), _ptr(values), count, _ptr(new_cells), _ptr(new_values), len(new_cells),
                          values.itemsize)


def compact(cells: np.ndarray, values: np.ndarray, count: int) -> int:
    """Drop the zero-valued entries among the first ``count``, in place; return how many are left."""
    if library is None or not (cells.flags.c_contiguous and values.flags.c_contiguous):
        keep = np.flatnonzero(values[:count] != 0)
        cells[:len(keep)] = cells[keep]
        values[:len(keep)] = values[keep]
        return len(keep)
    return int(library.ws_compact(_ptr(cells), _ptr(values), count, values.itemsize))


def locate_sorted(cells: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For ascending ``queries``: which are in sorted ``cells`` and where (their lower bounds)."""
    if library is None or not len(queries):
        return locate_numpy(cells, queries)
    cells, queries = np.ascontiguousarray(cells, np.int64), np.ascontiguousarray(queries, np.int64)
    at = np.empty(len(queries), dtype=np.int64)
    hit = np.empty(len(queries), dtype=bool)
    library.ws_locate_sorted(_ptr(cells), len(cells), _ptr(queries), len(queries), _ptr(at), _ptr(hit))
    return hit, at


def locate_numpy(cells: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    at = np.searchsorted(cells, queries)
    hit = at < len(cells)
    hit[hit] = cells[at[hit]] == queries[hit]
    return hit, at


def block_starts(cells: np.ndarray, shift: int, blocks: int) -> np.ndarray:
    """``starts[b]``: the first position of a cell >= ``b << shift`` in sorted ``cells``, for b in [0, blocks]."""
    if library is None:
        return locate_numpy(cells, np.arange(blocks + 1, dtype=np.int64) << shift)[1]
    cells = np.ascontiguousarray(cells, np.int64)
    starts = np.empty(blocks + 1, dtype=np.int64)
    library.ws_block_starts(_ptr(cells), len(cells), shift, _ptr(starts), blocks)
    return starts


def hash_slots(cells: np.ndarray, bits: int) -> np.ndarray:
    """Fibonacci hashing of cells into ``2**bits`` slots: the top bits of ``cell * K`` (K odd, bits well mixed)."""
    return (np.ascontiguousarray(cells, np.int64).view(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
            ) >> np.uint64(64 - bits)


def tags_mark(slots: np.ndarray, bits: int, cells: np.ndarray, tag: int, several: int) -> None:
    """Give the hash slots of ``cells`` (Fibonacci hashing into 2**bits slots) ``tag``, or ``several``
    where a slot already holds another tag."""
    if library is None or not len(cells):
        slot = hash_slots(cells, bits)
        found = slots[slot]
        slots[slot] = np.where((found == 0) | (found == tag), np.uint8(tag), np.uint8(several))
        return
    cells = np.ascontiguousarray(cells, np.int64)
    library.ws_tags_mark(_ptr(cells), len(cells), _ptr(slots), bits, tag, several)


def decay(values: np.ndarray, factor, threshold: float) -> int:
    """In place: ``v *= factor``, then ``v *= |v| >= threshold`` (threshold > 0); return how many are 0.

    ``factor`` is a scalar of the values' dtype; comparisons are made in that
    dtype, as numpy makes them against a Python float.
    """
    if library is not None and values.flags.c_contiguous and values.dtype in (np.float32, np.float64) and len(values):
        kernel = library.ws_decay_f32 if values.dtype == np.float32 else library.ws_decay_f64
        return int(kernel(_ptr(values), len(values), float(factor), float(values.dtype.type(threshold))))
    return decay_numpy(values, factor, threshold)


def decay_numpy(values: np.ndarray, factor, threshold: float) -> int:
    if not len(values):
        return 0
    if factor != 1:
        np.multiply(values, factor, out=values)
    # Nothing falls below when every value is at or above the threshold (or at
    # or below minus it): two reductions instead of building a mask.
    if threshold > 0 and (values.min() >= threshold or values.max() <= -threshold):
        return 0
    keep = np.abs(values) >= threshold if threshold > 0 else values != 0  # zeros fail both
    zeros = len(values) - int(np.count_nonzero(keep))
    if zeros and threshold > 0:
        np.multiply(values, keep, out=values)
    return zeros


#: Source dtypes ws_gather_f32 converts (its enum in _kernels.c, in order).
GATHER_KINDS = {np.dtype(name): code for code, name in enumerate(
    ["float32", "float64", "float16", "uint8", "int8", "int16", "uint16", "int32", "uint32", "int64", "uint64"])}
GATHER_KINDS[np.dtype(bool)] = GATHER_KINDS[np.dtype(np.uint8)]


def _default_threads() -> int:
    setting = os.environ.get("WORLDSTORE_THREADS")
    if setting:
        return max(1, int(setting))
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(available, 8))


#: Threads a gather uses (WORLDSTORE_THREADS, else the CPUs this process may run on, at most 8).
threads = _default_threads()
#: Below this many output bytes a gather runs on one thread: starting threads would cost more.
THREADED_BYTES = 1 << 20
#: A threaded gather's threads take agents in chunks of about this many window rows (all channels):
#: small enough that a thread that starts late takes fewer chunks, large enough that the row
#: prefetch (which starts afresh in each chunk) rarely restarts.
CHUNK_ROWS = 16384


def can_gather(source: np.ndarray, out: np.ndarray) -> bool:
    """Whether :func:`gather_f32` handles this source into this ``(N, C, S, S)`` output."""
    return (library is not None and out.dtype == np.float32 and out.flags.c_contiguous
            and source.dtype in GATHER_KINDS and source.flags.c_contiguous)


def gather_f32(sources: list[tuple[int, np.ndarray, float]], positions: np.ndarray, radius: int, out: np.ndarray,
               layers: np.ndarray | None = None) -> None:
    """Each agent's windows of several channels into a C-contiguous float32 ``(N, C, S, S)`` ``out``.

    ``sources`` lists ``(channel, array, pad)``: ``array`` is ``(H, W)``, or
    ``(A, H, W)`` of which agent ``i`` reads layer ``layers[i]``; outside the
    world, ``pad``. Check :func:`can_gather` first; positions are trusted
    (checked by the caller).
    """
    if not sources:
        return
    height, width = sources[0][1].shape[-2:]
    count = len(sources)
    arrays = [array for _, array, _ in sources]
    pointers = (ctypes.c_void_p * count)(*[_ptr(array) for array in arrays])
    kinds = (ctypes.c_int * count)(*[GATHER_KINDS[array.dtype] for array in arrays])
    itemsizes = (ctypes.c_int64 * count)(*[array.itemsize for array in arrays])
    strides = (ctypes.c_int64 * count)(*[height * width if array.ndim == 3 else 0 for array in arrays])
    pads = (ctypes.c_float * count)(*[float(pad) for _, _, pad in sources])
    side = 2 * radius + 1
    offsets = (ctypes.c_int64 * count)(*[channel * side * side for channel, _, _ in sources])
    positions = np.ascontiguousarray(positions, np.int64)
    index = None if layers is None else np.ascontiguousarray(layers, np.int64)
    workers = threads if out.nbytes * count >= THREADED_BYTES * out.shape[1] else 1
    library.ws_gather_f32(count, pointers, kinds, itemsizes, strides, pads, height, width,
                          None if index is None else _ptr(index), _ptr(positions), len(positions), radius,
                          _ptr(out), out.strides[0] // 4 if out.ndim == 4 and len(out) else 0, offsets, workers,
                          CHUNK_ROWS)


#: The pages a commit journals whole when their first DENSE_LINES lines changed (see :func:`changed_lines`).
WHOLE_PAGE = 4096
DENSE_LINES = 8  # as WS_DENSE_LINES in _kernels.c


def changed_lines(a: np.ndarray, b: np.ndarray, line: int) -> tuple[np.ndarray, np.ndarray]:
    """Where flat uint8 arrays ``a`` and ``b`` differ, a commit's search for what changed: ``(pages, lines)``,
    the 4 KiB pages whose first :data:`DENSE_LINES` ``line``-byte lines all differ (every line, where a page
    has fewer), taken whole, and the lines that differ in the other pages (the last line may be short;
    ``line`` divides 4096). The compiled kernel compares pages first (memcmp runs at memory speed), then the
    first lines of each page that differs, and only the others line by line: a rewritten layer is found
    without reading most of it, and the few unchanged lines a page taken whole may hold are journaled too."""
    if library is not None:
        out = np.empty(-(-len(a) // line), dtype=np.int64)
        whole = np.empty(len(a) // WHOLE_PAGE, dtype=np.int64)
        found = np.zeros(1, dtype=np.int64)
        count = library.ws_changed_lines(_ptr(a), _ptr(b), len(a), line, _ptr(out), _ptr(whole), _ptr(found))
        return whole[:found[0]], out[:count]
    full = len(a) // line * line
    differ = (a[:full].reshape(-1, line) != b[:full].reshape(-1, line)).any(axis=1)
    lines = np.flatnonzero(differ)
    if full < len(a) and (a[full:] != b[full:]).any():
        lines = np.append(lines, full // line)
    per_page = WHOLE_PAGE // line
    probe = min(per_page, DENSE_LINES)
    pages = np.flatnonzero(differ[:len(a) // WHOLE_PAGE * per_page].reshape(-1, per_page)[:, :probe].all(axis=1))
    return pages, lines[~np.isin(lines // per_page, pages)]


def gather_units(full: np.ndarray, units: np.ndarray) -> np.ndarray:
    """``full[units]`` for a C-contiguous ``(n, unit)`` uint8 array and sorted unit indices, packed."""
    out = np.empty((len(units), full.shape[1]), np.uint8)
    if library is not None and len(units):
        units = np.ascontiguousarray(units, np.int64)
        library.ws_copy_units(_ptr(full), _ptr(out), _ptr(units), len(units), full.shape[1], 1)
    else:
        np.take(full, units, axis=0, out=out)
    return out


def line_words(lines: np.ndarray, old: np.ndarray, units: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(masks, words)``: of each 64-byte line of ``lines`` (a C-contiguous ``(n, 64)`` uint8 array), the 8-byte
    words that differ from line ``units[k]`` of ``old`` (C-contiguous ``(m, 64)`` uint8): a mask byte per line
    (bit w set, least significant first: word w differs) and the differing words' bytes, line by line."""
    count = len(units)
    if library is not None and count:
        units = np.ascontiguousarray(units, np.int64)
        masks = np.empty(count, np.uint8)
        words = np.empty(count * 64, np.uint8)
        found = library.ws_line_words(_ptr(lines), _ptr(old), _ptr(units), count, _ptr(masks), _ptr(words))
        return masks, words[:found * 8].copy()
    theirs = np.take(old, units, axis=0).reshape(count, 8, 8)
    ours = lines.reshape(count, 8, 8)
    differ = (theirs != ours).any(axis=2)
    return np.packbits(differ, axis=1, bitorder="little").reshape(count), ours[differ].reshape(-1)


def scatter_units(full: np.ndarray, units: np.ndarray, packed: np.ndarray) -> None:
    """``full[units] = packed`` for a C-contiguous ``(n, unit)`` uint8 array and sorted unit indices."""
    if library is not None and len(units):
        units = np.ascontiguousarray(units, np.int64)
        packed = np.ascontiguousarray(packed)
        library.ws_copy_units(_ptr(full), _ptr(packed), _ptr(units), len(units), full.shape[1], 0)
    else:
        full[units] = packed


# -- mapped files cut short (worldstore/_guard.c) -----------------------------------------------
def guard(mapping: Any, address: int, nbytes: int) -> None:
    """Guard the file mapping at ``address`` for as long as ``mapping`` (its mmap object) lives: a SIGBUS in it
    (the file was cut shorter) reads zeros and is counted instead of ending the process. Nothing where there
    is no compiled library."""
    if guard_library is None:
        return
    found = guard_library.ws_guard_register(address, nbytes)
    if found >= 0:  # the library itself, not this module's name for it: tests may swap that for None
        weakref.finalize(mapping, guard_library.ws_guard_unregister, found)


def cut_short(address: int, nbytes: int) -> bool:
    """Whether a guarded mapping overlapping ``[address, address + nbytes)`` met the end of its file."""
    return guard_library is not None and guard_library.ws_guard_faults(address, nbytes) > 0


def faults_total() -> int:
    """SIGBUS faults taken in guarded mappings so far (0 without the compiled library)."""
    return 0 if guard_library is None else int(guard_library.ws_guard_total())
