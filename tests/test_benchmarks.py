"""The benchmark scripts run and report well-formed figures (behaviour only: no timing asserts)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
from conftest import ROOT, python_env

OPS = ("window_read", "window_write", "layer_update", "scatter_add")


def positive(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


def finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def run_quick_json(script: str, workdir, *extra: str) -> dict:
    """``benchmarks/SCRIPT --quick --json --dir WORKDIR EXTRA...``, run from the repository root; its one JSON object.

    ``report["_workdir_left"]`` lists what the script left in ``workdir``.
    """
    proc = subprocess.run(
        [sys.executable, os.path.join("benchmarks", script), "--quick", "--json", "--dir", str(workdir), *extra],
        cwd=ROOT, env=python_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, f"expected exactly one JSON line on stdout, got:\n{proc.stdout}"
    report = json.loads(lines[0])
    report["_workdir_left"] = os.listdir(workdir)
    return report


@pytest.fixture(scope="module")
def layers_report(tmp_path_factory) -> dict:
    return run_quick_json("layers.py", tmp_path_factory.mktemp("bench"))


def test_layers_reports_machine_world_and_rounds(layers_report):
    machine = layers_report["machine"]
    assert isinstance(machine["cpu_model"], str) and machine["cpu_model"]
    assert positive(machine["cores"])
    assert positive(machine["ram_bytes"])
    assert machine["l3_bytes"] is None or positive(machine["l3_bytes"])
    world = layers_report["world"]
    assert world["bytes"] == world["height"] * world["width"] * world["layers"] * 4
    assert all(positive(world[key]) for key in ("height", "width", "layers", "bytes", "op_layer_bytes"))
    assert layers_report["quick"] is True
    assert layers_report["rounds"] == 3 and layers_report["warmup_rounds"] == 1
    assert (layers_report["window"], layers_report["windows"], layers_report["scatter_points"]) == (33, 1000, 100_000)
    assert positive(layers_report["wall_s"])


def test_layers_reports_every_operation_for_both_kinds(layers_report):
    ops = layers_report["ops"]
    assert set(ops) == set(OPS)
    rounds = layers_report["rounds"]
    for name, result in ops.items():
        for key in ("mapped_s", "memory_s", "ratio", "ratio_min", "ratio_max"):
            assert positive(result[key]), (name, key, result[key])
        assert result["ratio_min"] <= result["ratio"] <= result["ratio_max"]
        for key in ("mapped_faults", "memory_faults"):
            assert finite(result[key]) and result[key] >= 0
        assert len(result["mapped_round_s"]) == len(result["memory_round_s"]) == rounds
        assert all(positive(t) for t in result["mapped_round_s"] + result["memory_round_s"])
        assert isinstance(result["meets_target"], bool) and isinstance(result["within_limit"], bool)
    for kind in ("mapped", "memory"):
        share = layers_report["huge_page_share"][kind]
        assert share is None or (finite(share) and 0 <= share <= 1)


def test_layers_reports_commit_cycles(layers_report):
    cycle = layers_report["after_commit"]
    assert positive(cycle["rounds"])
    for row in ("commit", "update_after_commit", "commit_and_update"):
        for key in ("mapped_s", "memory_s", "ratio"):
            assert positive(cycle[row][key]), (row, key)


def test_layers_reports_anonymous_memory_growth(layers_report):
    rss = layers_report["rss"]
    assert len(rss["mapped"]) == len(rss["memory_contrast"]) == 2
    sizes = [result["world_bytes"] for result in rss["mapped"]]
    assert sizes[0] < sizes[1], "two world sizes, to show growth does not follow size"
    for result in rss["mapped"] + rss["memory_contrast"]:
        assert positive(result["world_bytes"])
        assert positive(result["anon_before_bytes"]) and positive(result["anon_after_bytes"])
        assert finite(result["anon_growth_bytes"]) and finite(result["file_growth_bytes"])
        assert result["anon_growth_bytes"] == result["anon_after_bytes"] - result["anon_before_bytes"]
    assert all(isinstance(result["meets_target"], bool) for result in rss["mapped"])
    assert [r["kind"] for r in rss["mapped"]] == ["mapped"] * 2
    assert [r["kind"] for r in rss["memory_contrast"]] == ["memory"] * 2


def test_layers_reports_targets_and_verdicts(layers_report):
    targets = layers_report["targets"]
    assert targets == {"ratio": 1.10, "ratio_limit": 1.25, "rss_anon_growth_bytes": 64 * 2**20}
    verdict = layers_report["pass"]
    assert set(verdict) == {"ratios_meet_target", "ratios_within_limit", "rss_growth_meets_target"}
    assert all(isinstance(value, bool) for value in verdict.values())
    # The booleans agree with the figures they summarise.
    ops = layers_report["ops"].values()
    assert verdict["ratios_meet_target"] == all(r["ratio"] <= targets["ratio"] for r in ops)
    assert verdict["ratios_within_limit"] == all(r["ratio"] <= targets["ratio_limit"] for r in ops)


def test_layers_cleans_up_its_worlds(layers_report):
    assert layers_report["_workdir_left"] == []


def test_layers_human_output_states_machine_sizes_and_targets(tmp_path):
    proc = subprocess.run(
        [sys.executable, os.path.join("benchmarks", "layers.py"), "--quick", "--rounds", "1", "--dir", str(tmp_path)],
        cwd=ROOT, env=python_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for text in ("machine", "L3", "2048 x 2048", "1 timed", "warm-up", "window reads", "scatter-add",
                 "RssAnon", "target", "ratio"):
        assert text in out, text
    assert os.listdir(tmp_path) == []


def test_layers_refuses_a_missing_directory(tmp_path):
    proc = subprocess.run(
        [sys.executable, os.path.join("benchmarks", "layers.py"), "--quick", "--dir", str(tmp_path / "nope")],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "not a directory" in proc.stderr


def test_persist_reports_both_cases_side_by_side(tmp_path):
    """benchmarks/persist.py (issue 15): every backend, paired ratios, the bytes a commit journals."""
    report = run_quick_json("persist.py", tmp_path)
    assert report["benchmark"] == "worldstore persist" and report["quick"] is True
    for case in ("scattered", "dense"):
        result = report["cases"][case]
        assert set(result["backends"]) - {"zarr 3 + fsync"} == {"worldstore", "worldstore (durable=False)",
                                                                 "memmap + msync", "h5py + flush", "numpy (RAM)",
                                                                 "write-ahead floor"}
        for entry in result["backends"].values():
            assert finite(entry["step_ms"]) and finite(entry["persist_ms"]) and positive(entry["total_ms"])
        assert positive(result["ratio_vs_memmap_msync"]) and positive(result["ratio_of_means_vs_memmap_msync"])
        assert positive(result["changed_mb_64b_lines"]) and positive(result["journal_mb"])
        assert positive(result["floor_vs_memmap_msync"]) and positive(result["floor_of_means_vs_memmap_msync"])
    # a commit writes the changed lines into the file, no more (the 64-byte granularity of issue 15), and its
    # record holds their changed words: journal and file together within twice the changed lines
    scattered = report["cases"]["scattered"]
    assert scattered["journal_mb"] <= 1.2 * scattered["changed_mb_64b_lines"]
    assert scattered["written_per_changed"] <= 2.0
    assert report["_workdir_left"] == []


def test_simloop_runs_every_backend_and_they_agree(tmp_path):
    """benchmarks/simloop.py (issue 15): the same loop on numpy, memmap and worldstore ends with equal layers."""
    report = run_quick_json("simloop.py", tmp_path)
    assert report["benchmark"] == "worldstore simloop" and report["agents"] == 500
    (result,) = report["sizes"]
    assert result["final_layers_agree"] is True
    assert len(result["seconds"]) == 9 and all(positive(v) for v in result["seconds"].values())
    assert all(positive(v) for v in result["ratios"].values())
    assert report["_workdir_left"] == []
