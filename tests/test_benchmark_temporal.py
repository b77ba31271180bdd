"""benchmarks/temporal.py runs and reports well-formed figures (behaviour only: no timing asserts)."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys

import pytest

# The sibling module's runner: `benchmarks/SCRIPT --quick --json --dir DIR`, its one JSON object.
from test_benchmarks import ROOT, finite, positive, run_quick_json

KINDS = {"sparse", "mapped", "memory", "auto"}
RATIOS = {"mapped_over_memory", "sparse_speedup_over_memory", "auto_over_best"}


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    return run_quick_json("temporal.py", tmp_path_factory.mktemp("bench-temporal"))


def test_states_machine_world_and_workload(report):
    machine = report["machine"]
    assert isinstance(machine["cpu_model"], str) and machine["cpu_model"]
    assert positive(machine["cores"]) and positive(machine["ram_bytes"])
    world = report["world"]
    assert (world["height"], world["width"], world["dtype"]) == (1024, 1024, "float32")
    assert world["layer_bytes"] == world["height"] * world["width"] * 4
    assert report["quick"] is True
    assert report["rounds"] == 3 and report["warmup_steps"] == 2 and positive(report["persist_rounds"])
    assert positive(report["events_per_step"])
    assert 0 < report["decay"] < 1 and positive(report["threshold"])
    assert 0 < report["switch_density"] <= 1
    assert set(report["ratio_descriptions"]) == RATIOS
    assert positive(report["wall_s"])


def test_times_every_kind_at_every_density(report):
    rows = report["densities"]
    assert [row["density"] for row in rows] == [0.001, 0.01, 0.1]
    for row in rows:
        for key in ("step_s", "step_mean_s", "step_faults", "step_round_s"):
            assert set(row[key]) == KINDS, key
        assert all(positive(value) for value in row["step_s"].values())
        assert all(positive(value) for value in row["step_mean_s"].values())
        assert all(finite(value) and value >= 0 for value in row["step_faults"].values())
        for kind, times in row["step_round_s"].items():
            assert len(times) == report["rounds"] and all(positive(t) for t in times)
            assert row["step_s"][kind] == pytest.approx(statistics.median(times))


def test_ratios_are_medians_of_paired_rounds(report):
    for row in report["densities"]:
        times = row["step_round_s"]
        per_round = {
            "mapped_over_memory": [m / r for m, r in zip(times["mapped"], times["memory"])],
            "sparse_speedup_over_memory": [r / s for r, s in zip(times["memory"], times["sparse"])],
            "auto_over_best": [a / min(s, m, r) for a, s, m, r in
                               zip(times["auto"], times["sparse"], times["mapped"], times["memory"])],
        }
        assert set(row["ratios"]) == set(row["ratio_ranges"]) == RATIOS
        for name, values in per_round.items():
            assert positive(row["ratios"][name])
            assert row["ratios"][name] == pytest.approx(statistics.median(values))
            assert row["ratio_ranges"][name] == pytest.approx([min(values), max(values)])
        assert row["amortized_speedup"] == pytest.approx(statistics.fmean(times["memory"])
                                                         / statistics.fmean(times["sparse"]))


def test_reports_steady_densities_and_the_automatic_choice(report):
    cells = report["world"]["height"] * report["world"]["width"]
    for row in report["densities"]:
        assert row["prefilled_nnz"] == int(row["density"] * cells)
        assert row["lifetime_steps"] == pytest.approx(row["density"] * cells / report["events_per_step"])
        # A steady state: about as many cells fall below the threshold each step as the deposits add.
        for key in ("start_density", "final_density"):
            assert row[key] == pytest.approx(row["density"], rel=0.25), key
        assert row["final_density"] == pytest.approx(row["nnz"] / cells)
        assert row["auto_kind"] in ("sparse", "mapped")
        assert row["auto_kind"] == row["auto_kinds_seen"][-1]
        assert set(row["auto_kinds_seen"]) <= {"sparse", "mapped"}


def test_persisting_follows_nnz_with_a_larger_control_world(report):
    persist = report["persist"]
    assert [row["density"] for row in persist] == [0.001, 0.01, 0.1]
    for row in persist + [report["persist_control"]]:
        assert positive(row["flush_s"]) and row["nnz"] > 0
        assert len(row["flush_round_s"]) == report["persist_rounds"]
        assert row["flush_s"] == pytest.approx(statistics.median(row["flush_round_s"]))
    assert [row["nnz"] for row in persist] == sorted(row["nnz"] for row in persist)
    control, base = report["persist_control"], persist[1]
    assert control["height"] * control["width"] == 4 * base["height"] * base["width"]
    assert control["world_cells_ratio"] == 4
    assert control["nnz_ratio"] == pytest.approx(control["nnz"] / base["nnz"])
    assert 0.8 < control["nnz_ratio"] < 1.25, "the control holds about as many cells as the 1% case"
    assert control["flush_ratio"] == pytest.approx(control["flush_s"] / base["flush_s"])
    cost = report["persist_cost"]
    assert finite(cost["ns_per_cell"]) and finite(cost["fixed_s"])


def test_targets_and_verdicts_agree_with_the_figures(report):
    targets = report["targets"]
    assert targets == {"mapped_over_memory": 1.10, "sparse_speedup_at_1pct": 20.0, "auto_over_best_at_10pct": 1.2}
    verdict = report["pass"]
    assert set(verdict) == {"mapped_within_target", "sparse_speedup_at_1pct", "auto_at_10pct"}
    assert all(isinstance(value, bool) for value in verdict.values())
    rows = {row["density"]: row for row in report["densities"]}
    assert verdict["mapped_within_target"] == all(
        row["ratios"]["mapped_over_memory"] <= targets["mapped_over_memory"] for row in rows.values())
    assert verdict["sparse_speedup_at_1pct"] == (
        min(rows[0.01]["ratios"]["sparse_speedup_over_memory"], rows[0.01]["amortized_speedup"])
        >= targets["sparse_speedup_at_1pct"])
    assert verdict["auto_at_10pct"] == (rows[0.1]["ratios"]["auto_over_best"] <= targets["auto_over_best_at_10pct"])


def test_cleans_up_its_worlds(report):
    assert report["_workdir_left"] == []


def test_human_output_states_machine_sizes_and_targets(tmp_path):
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.run(
        [sys.executable, os.path.join("benchmarks", "temporal.py"), "--quick", "--rounds", "1", "--dir", str(tmp_path)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for text in ("machine", "QUICK MODE", "1024 x 1024", "2048 x 2048", "1 timed", "warm-up", "sparse", "mapped",
                 "memory", "auto", "world.flush()", "control", "dense mapped <= 1.10x", ">= 20x", "<= 1.2x", "amortized"):
        assert text in out, text
    assert os.listdir(tmp_path) == []


def test_refuses_a_missing_directory_and_bad_rounds(tmp_path):
    for extra, message in ((["--dir", str(tmp_path / "nope")], "not a directory"),
                           (["--dir", str(tmp_path), "--rounds", "0"], "--rounds must be >= 1")):
        proc = subprocess.run([sys.executable, os.path.join("benchmarks", "temporal.py"), "--quick", *extra],
                              cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert proc.returncode != 0
        assert message in proc.stderr
