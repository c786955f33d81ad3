"""Smoke test of ``benchmarks/bench_limits.py --quick``: runs, writes the documented
JSON, and every row agrees with its NumPy float64 reference (not speed)."""

import json
import math
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from benchmarks import bench_limits  # noqa: E402

pytestmark = pytest.mark.bench

#: float32 over T = 16 tokens: max abs error relative to the reference's scale
CHECK_TOL = 1e-4


def _finite_positive(x):
    return isinstance(x, int | float) and math.isfinite(x) and x > 0


def test_bench_limits_quick(tmp_path):
    out = tmp_path / "limits.json"
    payload = bench_limits.main(["--quick", "--out", str(out)])
    data = json.loads(out.read_text())
    assert data["schema_version"] == 1
    assert data["benchmark"] == "bench_limits"
    assert data["complete"] is True
    assert data["config"]["quick"] is True
    assert len(data["results"]) == len(payload["results"])
    for key in ("kalmanjax_version", "jax_version", "backend", "device_kind", "utc"):
        assert key in data["env"], key

    seen = set()
    for row in data["results"]:
        p = row["params"]
        seen.add((p["k"], p["method"]))
        assert row["skipped"] is None  # nothing is skipped at the quick sizes
        assert _finite_positive(row["compile_s"])
        assert _finite_positive(row["per_step_s"])
        assert _finite_positive(row["ratio_vs_optax_sgd"])
        assert row["run_s"]["n"] >= 1
        assert 0 < row["run_s"]["min"] <= row["run_s"]["median"]
        err = row["checks"]["max_abs_err_vs_reference"]
        scale = row["checks"]["max_abs_reference"]
        assert math.isfinite(err) and err <= CHECK_TOL * max(scale, 1.0), (p, err)
        # the GD limit holds k floats, the filters a k x k covariance
        k = p["k"]
        gd = p["method"] in ("optax_sgd", "gd_limit_filter", "gd_limit_transformation")
        if gd:
            assert row["state_bytes"] == 4 * k
        else:
            assert row["state_bytes"] >= 4 * k * k
    ks = data["config"]["ks"]
    assert seen == {(k, m) for k in ks for m in bench_limits.METHODS}
    assert [s["k"] for s in data["summary"]] == ks
    for s in data["summary"]:
        assert s["ratio_vs_optax_sgd"]["optax_sgd"] == 1.0
        assert isinstance(s["gd_limit_within_budget"], bool)
