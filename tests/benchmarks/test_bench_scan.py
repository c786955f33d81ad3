"""Smoke tests of ``benchmarks.bench_scan``: the documented JSON, every row against
the NumPy float64 references and the sequential filter, and the blocked scan's
program the same size at two lengths where the tree's grows."""

import pytest

from benchmarks import bench_scan

pytestmark = pytest.mark.bench

#: float32 against the float64 references / the sequential rows
REFERENCE_TOL = 1e-3
SEQUENTIAL_TOL = 1e-4


def test_bench_scan_quick(quick_run):
    data = quick_run(bench_scan)
    settings = data["settings"]
    assert settings["Ts"] == bench_scan.QUICK_TS
    seen = set()
    for row in data["rows"]:
        p = row["params"]
        seen.add((p["task"], p["method"]))
        assert row["skipped"] is None, row["skipped"]
        assert row["compile_s"] > 0 and row["first_call_s"] > 0
        assert row["run_s"]["n"] >= 1 and row["run_s"]["median"] > 0
        assert row["program"]["stablehlo_ops"] > 0
        assert row["memory"]["temp_size_in_bytes"] >= 0
        checks = row["checks"]
        if p["task"] != "gradient":
            assert 0 <= checks["max_abs_err_vs_reference"] < REFERENCE_TOL, p
            assert 0 <= checks["loglik_rel_err_vs_reference"] < REFERENCE_TOL, p
        assert 0 <= checks["rel_diff_vs_sequential"] < SEQUENTIAL_TOL, p
    assert seen == {(t, m) for t in bench_scan.TASKS for m in bench_scan.METHODS}
    summary = data["summary"]
    assert len(summary["blocked_vs_tree"]) == len(bench_scan.TASKS)
    for entry in summary["blocked_vs_tree"]:
        assert entry["blocked_over_tree_compile"] > 0
        assert entry["blocked_over_tree_run"] > 0
        assert entry["blocked_stablehlo_ops"] < entry["tree_stablehlo_ops"]
        assert isinstance(entry["compile_target_met"], bool)
    assert isinstance(summary["all_targets_met"], bool)


def test_the_blocked_program_is_the_same_at_two_lengths(quick_run):
    # 100 and 10_000 are whole blocks of 10 and 100 (the CPU default, sqrt T)
    data = quick_run(bench_scan, "--Ts", "100", "10000", "--tasks", "filter")
    ops = data["summary"]["stablehlo_ops_by_T"]
    blocked, tree = ops["filter/dense/blocked"], ops["filter/dense/tree"]
    assert blocked["100"] == blocked["10000"], blocked
    assert tree["10000"] > tree["100"], tree
    for row in data["rows"]:
        assert row["checks"]["rel_diff_vs_sequential"] < SEQUENTIAL_TOL, row["params"]
        assert row["checks"]["max_abs_err_vs_reference"] < REFERENCE_TOL
