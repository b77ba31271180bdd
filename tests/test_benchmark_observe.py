"""benchmarks/observe.py runs and reports well-formed figures (behaviour only: no timing asserts)."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys

import pytest

from conftest import torch
from test_benchmarks import ROOT, positive, run_quick_json

METHODS = {"compiled", "compiled_1_thread", "strided_numpy", "torch", "python_loop", "h5py_slicing"}


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    return run_quick_json("observe.py", tmp_path_factory.mktemp("bench-observe"))


def test_states_machine_world_and_memcpy(report):
    assert report["quick"] is True and report["machine"]["cpu_model"]
    world = report["world"]
    assert (world["height"], world["width"], world["channels"]) == (1024, 1024, 8)
    assert world["bytes"] == 1024 * 1024 * 8 * 4
    assert report["memcpy_copy_bytes"] > 32 << 20 and report["threads"] >= 1  # larger than this machine's L3
    # 10 copies around each case's rounds (after 3 untimed ones), all kept
    assert len(report["memcpy_samples_bytes_per_s"]) == 10 * len(report["cases"])
    assert all(positive(rate) for rate in report["memcpy_samples_bytes_per_s"])
    assert report["_workdir_left"] == []


def test_each_case_reports_ratio_throughput_methods_and_speedups(report):
    assert [(case["agents"], case["radius"]) for case in report["cases"]] == [(128, 16), (32, 64)]
    for case in report["cases"]:
        side = 2 * case["radius"] + 1
        assert case["batch_bytes"] == case["agents"] * 8 * side * side * 4
        times = case["observe_round_s"]
        assert len(times["mapped"]) == len(times["memory"]) == report["rounds"]
        assert case["mapped_over_memory"] == pytest.approx(
            statistics.median(m / r for m, r in zip(times["mapped"], times["memory"])))
        memory = statistics.median(times["memory"])
        index = report["cases"].index(case)
        copies = report["memcpy_samples_bytes_per_s"][10 * index:10 * index + 10]
        assert case["memcpy_bytes_per_s"] == pytest.approx(statistics.median(copies))
        assert case["memcpy_range_bytes_per_s"] == [min(copies), max(copies)]
        assert case["throughput_over_memcpy"] == pytest.approx(case["batch_bytes"] / memory
                                                               / case["memcpy_bytes_per_s"])
        assert case["steal_s"] is None or case["steal_s"] >= 0
        assert case["best_over_best_memcpy"] == pytest.approx(case["batch_bytes"] / min(times["memory"])
                                                              / max(copies))
        methods = METHODS if report["compiled_kernels"] else METHODS - {"compiled", "compiled_1_thread"}
        methods = methods if torch is not None else methods - {"torch"}  # an optional extra
        assert set(case["methods_s"]) == methods and all(positive(v) for v in case["methods_s"].values())
        assert case["speedup_over_python_loop"] == pytest.approx(case["methods_s"]["python_loop"] / memory)
        assert case["speedup_over_h5py_slicing"] == pytest.approx(case["methods_s"]["h5py_slicing"] / memory)
    assert positive(report["into"]["observe_into_s"])
    verdict = report["pass"]
    assert verdict["mapped"] == all(c["mapped_over_memory"] <= 1.05 for c in report["cases"])
    assert verdict["throughput"] == all(c["throughput_over_memcpy"] >= 0.5 for c in report["cases"])


def test_human_output_and_bad_options(tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, os.path.join("benchmarks", "observe.py"), "--quick", "--rounds", "1",
                           "--dir", str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    for text in ("QUICK MODE", "memcpy", "mapped/memory", "of memcpy", "h5py", "Python loop", "into=True", "CUDA"):
        assert text in proc.stdout, text
    assert os.listdir(tmp_path) == []
    bad = subprocess.run([sys.executable, os.path.join("benchmarks", "observe.py"), "--quick", "--rounds", "0"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0 and "--rounds must be >= 1" in bad.stderr
