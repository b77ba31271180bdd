"""The compiled kernels (worldstore/_kernels.c) give exactly what their numpy twins give."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worldstore import _native

pytestmark = pytest.mark.skipif(_native.library is None, reason="the C kernels were not built (no compiler at "
                                "install time, or WORLDSTORE_NATIVE=0); the numpy twins are tested everywhere else")

DTYPES = [np.float16, np.float32, np.float64]


def numpy_twin(function, *args):
    """``function(*args)`` with the compiled kernels put aside: what its numpy twin returns."""
    library, _native.library = _native.library, None
    try:
        return function(*args)
    finally:
        _native.library = library


def sorted_disjoint(rng: np.random.Generator, grid: int, na: int, nb: int):
    cells = rng.choice(grid, size=min(grid, na + nb), replace=False)
    return np.sort(cells[:na]).astype(np.int64), np.sort(cells[na:]).astype(np.int64)


def values_with_zeros(rng: np.random.Generator, n: int, dtype) -> np.ndarray:
    values = rng.uniform(-3, 3, n).astype(dtype)
    values[rng.random(n) < 0.2] = 0
    values[rng.random(n) < 0.1] = -0.0
    return values


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), na=st.integers(0, 300), nb=st.integers(0, 300),
       dtype=st.sampled_from(DTYPES), spare=st.integers(0, 5))
def test_merge_into_and_compact_match_numpy(seed, na, nb, dtype, spare):
    rng = np.random.default_rng(seed)
    a, b = sorted_disjoint(rng, 2000, na, nb)
    av, bv = values_with_zeros(rng, len(a), dtype), values_with_zeros(rng, len(b), dtype)
    results = []
    for library in (_native.library, None):
        cells = np.zeros(len(a) + len(b) + spare, np.int64)
        values = np.zeros(len(cells), dtype)
        cells[:len(a)], values[:len(a)] = a, av
        saved, _native.library = _native.library, library
        try:
            _native.merge_into(cells, values, len(a), b, bv)
            merged = (cells[:len(a) + len(b)].copy(), values[:len(a) + len(b)].copy())
            kept = _native.compact(cells, values, len(a) + len(b))
        finally:
            _native.library = saved
        results.append((merged, cells[:kept], values[:kept]))
    (merged_c, cells_c, values_c), (merged_np, cells_np, values_np) = results
    np.testing.assert_array_equal(merged_c[0], np.sort(np.concatenate([a, b])))
    np.testing.assert_array_equal(merged_c[0], merged_np[0])
    assert merged_c[1].tobytes() == merged_np[1].tobytes()  # bit for bit, -0.0 included
    np.testing.assert_array_equal(cells_c, cells_np)
    assert values_c.tobytes() == values_np.tobytes()
    assert np.all(values_c != 0)


def test_merge_into_refuses_buffers_without_room():
    with pytest.raises(ValueError, match="cannot hold"):
        _native.merge_into(np.zeros(3, np.int64), np.zeros(3, np.float32), 2, np.array([5, 6]), np.ones(2, np.float32))


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 400), nq=st.integers(0, 200), grid=st.integers(1, 5000))
def test_locate_sorted_and_block_starts_match_numpy(seed, n, nq, grid):
    rng = np.random.default_rng(seed)
    cells = np.sort(rng.choice(grid, size=min(n, grid), replace=False)).astype(np.int64)
    queries = np.sort(rng.integers(0, grid + 3, nq)).astype(np.int64)
    hit, at = _native.locate_sorted(cells, queries)
    want_hit, want_at = _native.locate_numpy(cells, queries)
    np.testing.assert_array_equal(hit, want_hit)
    np.testing.assert_array_equal(at, want_at)
    shift = int(rng.integers(0, 6))
    blocks = (grid >> shift) + 1
    np.testing.assert_array_equal(_native.block_starts(cells, shift, blocks),
                                  np.searchsorted(cells, np.arange(blocks + 1) << shift))


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 9000), dtype=st.sampled_from([np.float32, np.float64]),
       decay=st.sampled_from([1.0, 0.999, 0.5, 0.1]), threshold=st.sampled_from([0.0, 1e-3, 0.3, 2.0]))
def test_decay_matches_numpy_bit_for_bit(seed, n, dtype, decay, threshold):
    rng = np.random.default_rng(seed)
    values = values_with_zeros(rng, n, dtype)
    values[rng.random(n) < 0.1] *= 1e-3  # near the threshold
    compiled, reference = values.copy(), values.copy()
    factor = np.dtype(dtype).type(decay)
    zeros = _native.decay(compiled, factor, threshold)
    assert zeros == _native.decay_numpy(reference, factor, threshold)
    assert compiled.tobytes() == reference.tobytes()
    assert zeros == np.count_nonzero(compiled == 0)


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 500), bits=st.integers(2, 12), tag=st.integers(1, 254))
def test_tags_mark_matches_numpy(seed, n, bits, tag):
    rng = np.random.default_rng(seed)
    cells = rng.integers(0, 10**9, n).astype(np.int64)
    start = rng.choice(np.array([0, 1, tag, 255], np.uint8), size=1 << bits)
    compiled, reference = start.copy(), start.copy()
    _native.tags_mark(compiled, bits, cells, tag, 255)
    saved, _native.library = _native.library, None
    try:
        _native.tags_mark(reference, bits, cells, tag, 255)
    finally:
        _native.library = saved
    np.testing.assert_array_equal(compiled, reference)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(0, 40000), st.sampled_from([1, 8, 64, 4096]), st.integers(0, 30))
def test_changed_lines_matches_numpy(seed, n, line, changes):
    """The commit's search for what changed (whole 4 KiB pages where their first 8 lines differ, else the lines
    that differ) against numpy's compare."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, n, dtype=np.uint8)
    b = a.copy()
    if n:
        b[rng.integers(0, n, changes)] ^= 1
        if changes % 3 == 0:  # a dense change of one page and a bit
            start = int(rng.integers(0, n))
            b[start:start + 4096 + 100] ^= 0xFF
    pages, lines = _native.changed_lines(a, b, line)
    twin_pages, twin_lines = numpy_twin(_native.changed_lines, a, b, line)
    assert pages.tolist() == twin_pages.tolist() and lines.tolist() == twin_lines.tolist()
    differing = sorted({i // line for i in np.flatnonzero(a != b).tolist()})
    per_page = 4096 // line
    in_pages = {p * per_page + k for p in pages.tolist() for k in range(per_page)}
    assert sorted(lines.tolist() + [k for k in in_pages if k in set(differing)]) == differing  # nothing missed
    assert not in_pages & set(lines.tolist())
    for page in range(n // 4096):  # a page is whole exactly when its first 8 lines (or all it has) differ
        first = [(a[page * 4096 + k * line:page * 4096 + (k + 1) * line]
                  != b[page * 4096 + k * line:page * 4096 + (k + 1) * line]).any() for k in range(min(per_page, 8))]
        assert (page in pages.tolist()) == all(first)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 300), st.sampled_from([1, 64, 4096]), st.integers(0, 300))
def test_gather_and_scatter_of_units_match_numpy(seed, n, unit, count):
    """The commit's copies of changed lines (runs merged into one memcpy) against numpy's fancy indexing."""
    rng = np.random.default_rng(seed)
    full = rng.integers(0, 256, (n, unit), dtype=np.uint8)
    units = np.unique(rng.integers(0, n, count))
    packed = _native.gather_units(full, units)
    np.testing.assert_array_equal(packed, full[units])
    target, expected = full.copy(), full.copy()
    new = rng.integers(0, 256, packed.shape, dtype=np.uint8)
    _native.scatter_units(target, units, new)
    expected[units] = new
    np.testing.assert_array_equal(target, expected)
    library, _native.library = _native.library, None
    try:
        np.testing.assert_array_equal(_native.gather_units(full, units), full[units])
    finally:
        _native.library = library


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(0, 300), st.integers(0, 200))
def test_line_words_match_numpy(seed, lines, changes):
    """A commit's changed words of changed lines (issue 15's journal): mask bytes and words, compiled and numpy."""
    rng = np.random.default_rng(seed)
    old = rng.integers(0, 256, (lines + 5, 64), dtype=np.uint8)
    units = np.sort(rng.choice(len(old), size=lines, replace=False)).astype(np.int64)
    new = old[units].copy()
    if lines:
        new.reshape(-1)[rng.integers(0, new.size, changes)] ^= 0x5A
    masks, words = _native.line_words(new, old, units)
    twin_masks, twin_words = numpy_twin(_native.line_words, new, old, units)
    assert masks.tolist() == twin_masks.tolist() and words.tolist() == twin_words.tolist()
    expected = [sum(1 << w for w in range(8) if (new[k, 8 * w:8 * w + 8] != old[units[k], 8 * w:8 * w + 8]).any())
                for k in range(lines)]
    assert masks.tolist() == expected
    assert len(words) == 8 * sum(bin(mask).count("1") for mask in expected)
