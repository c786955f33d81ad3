"""Smoke test of ``benchmarks.bench_limits --quick``: runs, writes the documented
JSON, and every row agrees with its NumPy float64 reference (not speed)."""

import pytest

from benchmarks import bench_limits

pytestmark = pytest.mark.bench

#: float32 over T = 16 tokens: max abs error relative to the reference's scale
CHECK_TOL = 1e-4


def test_bench_limits_quick(quick_run):
    data = quick_run(bench_limits)

    seen = set()
    for row in data["rows"]:
        p = row["params"]
        seen.add((p["k"], p["method"]))
        assert row["skipped"] is None  # nothing is skipped at the quick sizes
        assert row["compile_s"] > 0
        assert row["per_step_s"] > 0
        assert row["ratio_vs_optax_sgd"] > 0
        assert row["run_s"]["n"] >= 1
        assert 0 < row["run_s"]["min"] <= row["run_s"]["median"]
        err = row["checks"]["max_abs_err_vs_reference"]
        scale = row["checks"]["max_abs_reference"]
        assert err <= CHECK_TOL * max(scale, 1.0), (p, err)
        # the GD limit holds k floats, the filters a k x k covariance
        k = p["k"]
        gd = p["method"] in ("optax_sgd", "gd_limit_filter", "gd_limit_transformation")
        if gd:
            assert row["state_bytes"] == 4 * k
        else:
            assert row["state_bytes"] >= 4 * k * k
    ks = data["settings"]["ks"]
    assert seen == {(k, m) for k in ks for m in bench_limits.METHODS}
    by_k = data["summary"]["by_k"]
    assert [s["k"] for s in by_k] == ks
    for s in by_k:
        assert s["ratio_vs_optax_sgd"]["optax_sgd"] == 1.0
        assert isinstance(s["gd_limit_within_budget"], bool)
