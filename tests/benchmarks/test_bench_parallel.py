"""Smoke test of ``benchmarks.bench_parallel --quick``: runs (about 35 s on 2
cores), writes the documented JSON, every row agrees with the NumPy float64
reference, and the sharded batch gives the same log-likelihoods on 1 and 2 devices."""

import pytest

from benchmarks import bench_parallel, table

pytestmark = pytest.mark.bench

#: float32: max relative log-likelihood / absolute filtered-mean error vs reference
CHECK_TOL = 1e-3
#: float32: k-device vs 1-device log-likelihoods. The sums are ~ -3.7e3, where one
#: float32 ulp is 2.4e-4, and XLA:CPU rounds a vmap of 64 sequences differently from
#: one of 32 (seen: 2 ulp), so the tolerance is relative to |log-lik|.
SHARDED_TOL = 1e-5


def _check_errors(checks, where):
    assert set(checks) == {
        "max_abs_err_vs_reference",
        "loglik_rel_err_vs_reference",
    }, where
    for name, value in checks.items():
        assert isinstance(value, int | float), (where, name, value)
        assert 0 <= value < CHECK_TOL, (where, name, value)


def test_bench_parallel_quick(quick_run):
    data = quick_run(bench_parallel)
    settings = data["settings"]
    assert settings["dtypes"] == ["float32"]
    rows = {"filter": [], "sharded": []}
    for row in data["rows"]:
        rows[row["params"]["section"]].append(row)

    seen = set()
    for row in rows["filter"]:
        p = row["params"]
        for key in ("size", "d", "m", "T", "dtype", "method", "form"):
            assert key in p, key
        assert row["skipped"] is None, row["skipped"]  # nothing is skipped in quick
        seen.add((p["size"], p["method"], p["form"]))
        assert row["compile_s"] > 0
        assert row["first_call_s"] > 0
        run_s = row["run_s"]
        assert run_s["n"] >= 1
        assert 0 < run_s["min"] <= run_s["median"]
        assert run_s["iqr"] >= 0
        assert row["throughput"]["steps_per_s"] > 0
        _check_errors(row["checks"], p)
    for size in {s["size"] for s in settings["sizes"]}:
        for method in ("sequential", "parallel"):
            for form in ("dense", "sqrt"):
                assert (size, method, form) in seen, (size, method, form)
    summary = data["summary"]["parallel_vs_sequential"]
    assert len(summary) == 2 * len(settings["sizes"])
    for s in summary:
        assert s["ratio_parallel_over_sequential"] > 0
        assert s["parallel_compile_s"] > 0

    assert settings["sharded"]["note"]
    by_k = {r["params"]["devices"]: r for r in rows["sharded"]}
    assert {1, 2} <= set(by_k)
    base = by_k[1]["logliks"]
    assert len(base) == settings["sharded"]["batch"]
    for k, r in by_k.items():
        assert r["skipped"] is None
        assert r["devices_used"] == k
        assert r["throughput"]["sequences_per_s"] > 0
        _check_errors(r["checks"], f"sharded k={k}")
        diff = r["max_abs_diff_loglik_vs_1_device"]
        scale = max(1.0, max(abs(v) for v in base))
        assert diff == max(abs(a - b) for a, b in zip(r["logliks"], base, strict=True))
        assert diff <= SHARDED_TOL * scale, (k, diff)
        assert r["max_rel_diff_loglik_vs_1_device"] <= SHARDED_TOL, k
    assert by_k[1]["max_abs_diff_loglik_vs_1_device"] == 0.0

    assert "| d4_m2_T1e2 | float32 | dense |" in table.render(data)
