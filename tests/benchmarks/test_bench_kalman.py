"""Smoke test of ``benchmarks.bench_kalman --quick``: runs, writes the documented
JSON schema, and every row agrees with the NumPy float64 reference."""

import pytest

from benchmarks import bench_kalman

pytestmark = pytest.mark.bench

#: max relative log-likelihood / absolute filtered-mean error vs the reference
CHECK_TOL = {"float64": 1e-8, "float32": 1e-3}

KALMANJAX_ROWS = {
    "kalmanjax/dense",
    "kalmanjax/joseph",
    "kalmanjax/sqrt",
    "kalmanjax/dense-nofast",
    "kalmanjax/dense-nomissing",
}


def test_bench_kalman_quick(quick_run):
    data = quick_run(bench_kalman, "--no-peers")
    settings = data["settings"]
    assert settings["peers"] == []
    assert set(settings["dtypes"]) == {"float32", "float64"}

    seen = set()
    for row in data["rows"]:
        p = row["params"]
        for key in ("size", "d", "m", "T", "batch", "dtype", "method"):
            assert key in p, key
        seen.add((p["size"], p["dtype"], p["method"]))
        assert row["compile_s"] > 0
        run_s = row["run_s"]
        assert set(run_s) >= {"median", "iqr", "min", "n"}
        assert run_s["n"] >= 1
        assert 0 < run_s["min"] <= run_s["median"]
        assert run_s["iqr"] >= 0
        assert row["throughput"]["steps_per_s"] > 0
        if p["method"].startswith("kalmanjax/"):
            assert row["ratios"]["ratio_vs_bare_scan"] > 0
        # every row agrees with the reference
        tol = CHECK_TOL[p["dtype"]]
        assert row["checks"], p
        for name, value in row["checks"].items():
            assert isinstance(value, int | float), (p, name, value)
            assert 0 <= value < tol, (p, name, value)
    for size in {s["size"] for s in settings["sizes"]}:
        for dtype in ("float32", "float64"):
            methods = {m for s, d, m in seen if s == size and d == dtype}
            assert {"kalmanjax/dense", "kalmanjax/joseph", "kalmanjax/sqrt"} <= methods
            assert "bare_scan" in methods
            assert methods <= KALMANJAX_ROWS | {"bare_scan"}
    # the small sizes also get the fast=False row
    assert any(m == "kalmanjax/dense-nofast" for _, _, m in seen)
    assert data["summary"]["ratios"]
