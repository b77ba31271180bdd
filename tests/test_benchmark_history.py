"""benchmarks/history.py runs and reports well-formed figures (behaviour only: no timing asserts)."""

from __future__ import annotations

import statistics

import pytest

from test_benchmarks import positive, run_quick_json


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    return run_quick_json("history.py", tmp_path_factory.mktemp("bench-history"))


def test_reports_snapshots_copy_compaction_and_latency(report):
    assert report["quick"] is True and report["_workdir_left"] == []
    world = report["world"]
    assert world["bytes"] == world["height"] * world["width"] * 4 * world["layers"]
    assert [run["codec"] for run in report["snapshots"]] == ["blosc2", "gzip"]
    for run in report["snapshots"]:
        assert len(run["snapshot_round_s"]) == report["rounds"]
        assert run["snapshot_s"] == pytest.approx(statistics.median(run["snapshot_round_s"]))
        assert run["mb_per_s"] == pytest.approx(run["layer_bytes"] / run["snapshot_s"] / 1e6)
        assert len(run["bytes_per_snapshot"]) == report["rounds"] + 1
        assert all(positive(b) for b in run["bytes_per_snapshot"])
    assert positive(report["plain_copy"]["mb_per_s"])
    comp = report["compaction"]
    assert positive(comp["compact_bytes"])
    if comp["h5repack"] is not None:
        assert comp["compact_over_h5repack"] == pytest.approx(comp["compact_bytes"] / comp["h5repack"]["bytes"])
    assert set(report["window_latency"]) == {"blosc2", "gzip"}
    assert all(positive(lat["past_s"]) and positive(lat["live_s"]) for lat in report["window_latency"].values())
    fast = report["snapshots"][0]
    assert report["pass"]["throughput"] == (fast["mb_per_s"] / report["plain_copy"]["mb_per_s"] >= 0.5)
