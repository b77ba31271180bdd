"""benchmarks/soak.py runs and counts (behaviour only: a few kills)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from test_benchmarks import ROOT


def test_soak_counts_kills_and_losses(tmp_path):
    proc = subprocess.run([sys.executable, os.path.join("benchmarks", "soak.py"), "--quick", "--rounds", "3",
                           "--json", "--dir", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": ROOT})
    assert proc.returncode == 0, proc.stderr
    counts = json.loads(proc.stdout)["counts"]
    assert counts["kills"] == 3 and counts["reopen_failures"] == 0 and counts["committed_lost"] == 0
    assert counts["live_differing"] == 0
    assert counts["last_committed_step"] > 0
    assert counts["snapshots_checked"] >= counts["snapshots_reported"]
    assert os.listdir(tmp_path) == []
