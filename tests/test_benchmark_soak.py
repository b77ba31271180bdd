"""benchmarks/soak.py runs and counts (behaviour only: a few kills)."""

from __future__ import annotations

from test_benchmarks import run_quick_json


def test_soak_counts_kills_and_losses(tmp_path):
    report = run_quick_json("soak.py", tmp_path, "--rounds", "3")
    counts = report["counts"]
    assert counts["kills"] == 3 and counts["reopen_failures"] == 0 and counts["committed_lost"] == 0
    assert counts["live_differing"] == 0
    assert counts["last_committed_step"] > 0
    assert counts["snapshots_checked"] >= counts["snapshots_reported"]
    assert report["_workdir_left"] == []
