"""The lookup structures of sparse storage against plain numpy (np.isin, np.searchsorted)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from worldstore._native import locate_numpy as locate
from worldstore.storage._cells import BlockIndex, CellTags, RunLog


def cell_sets(max_grid: int = 5000):
    """A grid size, sorted distinct held cells (random or in one dense cluster) and queries."""
    @st.composite
    def build(draw):
        grid = draw(st.integers(1, max_grid))
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        count = draw(st.integers(0, grid))
        if draw(st.booleans()):
            held = np.sort(rng.choice(grid, size=count, replace=False))
        else:  # a cluster: every cell of one range, crowded blocks included
            start = draw(st.integers(0, grid - count))
            held = np.arange(start, start + count)
        queries = np.unique(np.concatenate([rng.integers(0, grid, 50), held[:20], held[-20:]]))
        return grid, held.astype(np.int64), queries.astype(np.int64)
    return build()


@settings(max_examples=150, deadline=None)
@given(data=cell_sets(), width=st.sampled_from([1, 4, 16]))
def test_block_index_finds_what_a_binary_search_finds(data, width):
    grid, held, queries = data
    BlockIndex.WIDTH, saved = width, BlockIndex.WIDTH
    try:
        hit, at = BlockIndex(held, grid).locate(queries)
    finally:
        BlockIndex.WIDTH = saved
    expected_hit, expected_at = locate(held, queries)
    np.testing.assert_array_equal(hit, np.isin(queries, held))
    np.testing.assert_array_equal(hit, expected_hit)
    np.testing.assert_array_equal(at[hit], expected_at[hit])


@settings(max_examples=100, deadline=None)
@given(data=cell_sets(), growth=st.integers(0, 100), more=st.integers(0, 3000), split=st.integers(0, 3))
def test_tags_never_lose_a_held_cell_and_ask_for_a_rebuild_when_full(data, growth, more, split):
    grid, held, queries = data
    main, runs = held[split::4], [held[i::4] for i in range(4) if i != split]
    tags = CellTags(main, runs, growth)

    def where_it_may_be(cells, place):
        found = tags.lookup(cells)
        return np.all((found == place) | (found == CellTags.SEVERAL))

    assert where_it_may_be(main, CellTags.MAIN)
    assert all(where_it_may_be(cells, CellTags.FIRST_RUN + run) for run, cells in enumerate(runs))
    added = np.arange(grid, grid + more, dtype=np.int64)
    fits = tags.add(added, len(runs))
    assert where_it_may_be(added, CellTags.FIRST_RUN + len(runs)) and where_it_may_be(main, CellTags.MAIN)
    if more <= growth:
        assert fits
    absent = np.setdiff1d(np.arange(grid + more, grid + more + 4000, dtype=np.int64), held)
    if fits:  # at most a quarter of the slots set
        assert (tags.lookup(absent) != CellTags.EMPTY).mean() < 0.4


def test_tags_of_absent_cells_are_mostly_empty_at_their_sized_load():
    rng = np.random.default_rng(5)
    held = np.sort(rng.choice(10**7, 100_000, replace=False)).astype(np.int64)
    tags = CellTags(held, [], growth=len(held))
    absent = np.setdiff1d(rng.choice(10**7, 100_000, replace=False), held).astype(np.int64)
    assert (tags.lookup(held) == CellTags.MAIN).all()
    assert (tags.lookup(absent) != CellTags.EMPTY).mean() < 0.15


def test_run_log_keeps_runs_in_order_finds_cells_by_run_and_grows():
    log = RunLog(np.dtype(np.float32), grid_cells=4000)
    runs = [(np.arange(i, 3000 + i, 3, dtype=np.int64), np.full(1000, i, np.float32)) for i in range(3)]
    for number, (cells, values) in enumerate(runs):
        assert log.append(cells, values) == number
    assert len(log) == 3000 and log.runs == 3
    np.testing.assert_array_equal(log.cells, np.concatenate([c for c, _ in runs]))
    for cells, (want, _) in zip(log.cells_by_run(), runs):
        np.testing.assert_array_equal(cells, want)
    hit, at = log.find(np.array([0, 1, 2, 0, 2]), np.array([3, 4, 2998, 4, 3000]))
    np.testing.assert_array_equal(hit, [True, True, False, False, False])
    np.testing.assert_array_equal(log.values[at[hit]], [0, 1])
    cells, values, query = log.entries_in(np.array([0, 100]), np.array([10, 110]))  # cells 0-9 and 100-109
    np.testing.assert_array_equal(query, (cells >= 100).astype(int))
    order = np.argsort(cells)
    np.testing.assert_array_equal(cells[order], [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 100, 101, 102, 103, 104, 105,
                                                 106, 107, 108, 109])
    np.testing.assert_array_equal(values[order][:4], [0, 1, 2, 0])
    log.values[:] = 7  # a view: decay works in place
    assert (log.values == 7).all()
    log.clear()
    assert len(log) == 0 and log.runs == 0 and log.cells_by_run() == []
