"""Smoke test of ``benchmarks.bench_learning --quick``: it runs, writes its JSON,
our EM traces dynamax's log-likelihoods, and the line search never raises the IEKS
cost (not speed)."""

import pytest

from benchmarks import bench_learning as bench

pytestmark = pytest.mark.bench


def test_bench_learning_quick(quick_run):
    data = quick_run(bench)
    em = [r for r in data["rows"] if r["params"]["section"] == "em"]
    ieks = [r for r in data["rows"] if r["params"]["section"] == "ieks"]
    assert len(em) + len(ieks) == len(data["rows"])
    assert [r["params"]["method"] for r in em] == ["kalmanjax", "dynamax"]
    assert em[0]["iters_per_s"] > 0 and em[1]["iters_per_s"] > 0
    assert em[1]["log_likelihood_max_rel_diff"] < 1e-5  # float32, same iterates
    assert len(ieks) == 4
    for r in ieks:
        assert r["per_iteration_s"] > 0 and r["final_cost"] <= r["initial_cost"]
        if r["params"]["line_search"]:
            assert r["cost_increases"] == 0
    finals = {r["final_cost"] for r in ieks}
    assert max(finals) - min(finals) < 1e-8 * max(finals)  # every path, one answer
