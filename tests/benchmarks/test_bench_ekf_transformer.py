"""Smoke test of ``benchmarks.bench_ekf_transformer --quick``: it runs, writes
its JSON, and the filters it times agree across Jacobian methods (not speed)."""

import pytest

from benchmarks import bench_ekf_transformer as bench

pytestmark = pytest.mark.bench


def test_bench_ekf_transformer_quick(quick_run):
    data = quick_run(bench)
    steps = [r for r in data["rows"] if r["params"]["section"] == "ekf_step"]
    cats = [r for r in data["rows"] if r["params"]["section"] == "categorical"]
    assert len(steps) + len(cats) == len(data["rows"])
    assert {(r["params"]["site"], r["params"]["method"]) for r in steps} == {
        (s, m) for s in bench.SITES for m in bench.METHODS
    }
    assert [r["params"]["vocab"] for r in cats] == bench.QUICK_VOCABS
    for r in steps:
        assert r["finite"]
        assert r["jacfwd_vs_jacrev_max_abs_diff"] < 1e-5
        assert r["ratio"] > 0
        assert r["compile_step_s"] > 0
    for r in cats:
        assert r["finite"] and r["run_s"]["median"] > 0
    assert set(data["summary"]) >= {
        "categorical_time_loglog_slope",
        "categorical_memory_loglog_slope",
        "jacfwd_within_target",
    }
