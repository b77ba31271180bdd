"""Load: a SWMR writer commits for 6 s while 4 reader processes read and check every read, on two world sizes.

The reads and the writer are benchmarks/load.py's (its default run lasts 60 s).
"""

from __future__ import annotations

import os
import sys

import pytest

import worldstore
from test_benchmarks import ROOT

sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
import load  # noqa: E402

SECONDS = 6
READERS = 4


@pytest.mark.parametrize("size", [256, 16])  # 16x16: in-RAM layers inside HDF5's 64 KiB sieve buffer
def test_readers_never_see_half_a_commit(tmp_path, size):
    path = str(tmp_path / "load.h5")
    worldstore.create(path, load.spec(size)).close()
    counts = load.load(path, SECONDS, READERS)
    assert counts["errors"] == 0, counts["error_messages"]
    assert counts["torn"] == 0
    assert counts["writer_steps"] > 20  # the writer made progress
    assert counts["reads"] > 100 and counts["single_reads"] > 100 and counts["refreshes"] > 5
    # Each reader saw commits land while it read (else nothing was tested).
    assert all(seen > 2 for seen in counts["steps_seen_per_reader"])
    print(f"\n{counts['reads']} + {counts['single_reads']} checked reads, {counts['refreshes']} refreshes, "
          f"0 torn; unchecked control reads torn: {counts['control_torn']} of {counts['control_reads']}")
