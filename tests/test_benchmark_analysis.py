"""benchmarks/analysis.py runs and reports well-formed figures (behaviour only: no timing asserts)."""

from __future__ import annotations

import statistics

import pytest
from test_benchmarks import positive, run_quick_json

pytest.importorskip("dask.distributed")
pytest.importorskip("xarray")

METHODS = ("numpy", "numpy_processes", "dask_auto", "dask_file")


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    return run_quick_json("analysis.py", tmp_path_factory.mktemp("bench-analysis"))


def test_reports_the_world_and_the_setup(report):
    assert report["quick"] is True and report["_workdir_left"] == []
    world = report["world"]
    assert world["layer_bytes"] == world["height"] * world["width"] * 4
    assert world["history_bytes"] == world["layer_bytes"] * world["snapshots"]
    assert world["codec"] == "gzip"
    assert all(positive(world[key]) for key in ("stored_bytes", "file_bytes", "create_s"))
    assert report["workers"] == 2 and report["threads_per_worker"] == 1 and report["rounds"] == 1
    assert positive(report["cluster_start_s"]) and positive(report["wall_s"])
    assert isinstance(report["machine"]["cpu_model"], str)


def test_reports_every_method_cold_and_warm_and_the_speedups(report):
    methods = report["methods"]
    assert set(methods) == set(METHODS) == set(report["speedup"])
    for name, row in methods.items():
        for state in ("cold", "warm"):
            assert len(row[f"{state}_round_s"]) == report["rounds"]
            assert all(positive(t) for t in row[f"{state}_round_s"])
            assert row[f"{state}_s"] == pytest.approx(statistics.median(row[f"{state}_round_s"]))
            assert report["speedup"][name][state] == pytest.approx(methods["numpy"][f"{state}_s"] / row[f"{state}_s"])
    assert methods["numpy"]["tasks"] is None and positive(methods["dask_auto"]["tasks"])
    assert methods["dask_file"]["tasks"] > methods["dask_auto"]["tasks"]  # one task per HDF5 chunk
    assert report["agree"] is True and report["max_abs_diff"] <= 1e-5
