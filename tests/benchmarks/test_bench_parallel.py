"""Smoke test of ``benchmarks/bench_parallel.py --quick``: runs (about 35 s on 2
cores), writes the documented JSON, every row agrees with the NumPy float64
reference, and the sharded batch gives the same log-likelihoods on 1 and 2 devices."""

import json
import math
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from benchmarks import bench_parallel  # noqa: E402

pytestmark = pytest.mark.bench

#: float32: max relative log-likelihood / absolute filtered-mean error vs reference
CHECK_TOL = 1e-3
#: float32: k-device vs 1-device log-likelihoods. The sums are ~ -3.7e3, where one
#: float32 ulp is 2.4e-4, and XLA:CPU rounds a vmap of 64 sequences differently from
#: one of 32 (seen: 2 ulp), so the tolerance is relative to |log-lik|.
SHARDED_TOL = 1e-5


def _finite_positive(x):
    return isinstance(x, int | float) and math.isfinite(x) and x > 0


def _check_errors(checks, where):
    assert set(checks) == {
        "max_abs_err_vs_reference",
        "loglik_rel_err_vs_reference",
    }, where
    for name, value in checks.items():
        assert isinstance(value, int | float), (where, name, value)
        assert math.isfinite(value), (where, name, value)
        assert 0 <= value < CHECK_TOL, (where, name, value)


def test_bench_parallel_quick(tmp_path):
    out = tmp_path / "p.json"
    payload = bench_parallel.main(["--quick", "--out", str(out)])
    data = json.loads(out.read_text())

    assert data["schema_version"] == 1
    assert data["benchmark"] == "bench_parallel"
    assert data["complete"] is True
    assert len(data["results"]) == len(payload["results"])
    for key in ("kalmanjax_version", "jax_version", "backend", "device_kind", "utc"):
        assert key in data["env"], key
    assert data["env"]["x64"] is False
    assert data["config"]["quick"] is True
    assert data["config"]["dtypes"] == ["float32"]

    seen = set()
    for row in data["results"]:
        p = row["params"]
        for key in ("size", "d", "m", "T", "dtype", "method", "form"):
            assert key in p, key
        assert row["skipped"] is None, row["skipped"]  # nothing is skipped in quick
        seen.add((p["size"], p["method"], p["form"]))
        assert _finite_positive(row["compile_s"])
        assert _finite_positive(row["first_call_s"])
        run_s = row["run_s"]
        assert run_s["n"] >= 1
        assert 0 < run_s["min"] <= run_s["median"]
        assert run_s["iqr"] >= 0
        assert _finite_positive(row["throughput"]["steps_per_s"])
        _check_errors(row["checks"], p)
    for size in {s["size"] for s in data["config"]["sizes"]}:
        for method in ("sequential", "parallel"):
            for form in ("dense", "sqrt"):
                assert (size, method, form) in seen, (size, method, form)
    assert len(data["summary"]) == 2 * len(data["config"]["sizes"])
    for s in data["summary"]:
        assert _finite_positive(s["ratio_parallel_over_sequential"])
        assert _finite_positive(s["parallel_compile_s"])

    sharded = data["sharded"]
    assert sharded["note"]
    by_k = {r["devices"]: r for r in sharded["results"]}
    assert {1, 2} <= set(by_k)
    base = by_k[1]["logliks"]
    assert len(base) == sharded["config"]["batch"]
    for k, r in by_k.items():
        assert r["devices_used"] == k
        assert _finite_positive(r["throughput"]["sequences_per_s"])
        _check_errors(r["checks"], f"sharded k={k}")
        diff = r["max_abs_diff_loglik_vs_1_device"]
        scale = max(1.0, max(abs(v) for v in base))
        assert diff == max(abs(a - b) for a, b in zip(r["logliks"], base, strict=True))
        assert diff <= SHARDED_TOL * scale, (k, diff)
        assert r["max_rel_diff_loglik_vs_1_device"] <= SHARDED_TOL, k
    assert by_k[1]["max_abs_diff_loglik_vs_1_device"] == 0.0

    table = bench_parallel.markdown(data)
    assert "| d4_m2_T1e2 | float32 | dense |" in table
