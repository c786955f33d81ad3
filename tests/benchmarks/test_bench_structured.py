"""Smoke test of ``benchmarks.bench_structured --quick``: runs, writes the documented
JSON, and every exact row agrees with its NumPy float64 reference (not speed)."""

import pytest

from benchmarks import bench_structured

pytestmark = pytest.mark.bench

#: float32 over T = 8 readings: max abs error relative to the reference's scale
CHECK_TOL = 1e-4


def test_bench_structured_quick(quick_run):
    data = quick_run(bench_structured)
    ks = data["settings"]["ks"]
    seen = set()
    for row in data["rows"]:
        p = row["params"]
        seen.add((p["k"], p["method"]))
        assert row["skipped"] is None  # the quick sizes run every method
        assert row["compile_s"] > 0 and row["per_step_s"] > 0
        assert 0 < row["run_s"]["min"] <= row["run_s"]["median"]
        checks = row["checks"]
        assert checks["finite"]
        # rank 10 and 20 hold all 8 readings: exact, as is the dense filter
        assert checks["exact_in_exact_arithmetic"] == (p["method"] != "diagonal")
        if checks["exact_in_exact_arithmetic"]:
            err, scale = checks["max_abs_err_vs_reference"], checks["max_abs_reference"]
            assert err <= CHECK_TOL * max(scale, 1.0), (p, err)
        assert row["state_floats"] >= p["k"]
    assert seen == {(k, m) for k in ks for m in bench_structured.METHODS}
    slopes = data["summary"]["slopes_per_step_vs_k"]
    assert set(slopes) == set(bench_structured.METHODS)
    assert all(v is not None for v in slopes.values())
