"""Smoke test of ``benchmarks/bench_kalman.py --quick``: runs, writes the documented
JSON schema, and every row agrees with the NumPy float64 reference."""

import json
import math
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from benchmarks import bench_kalman  # noqa: E402

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


def _finite_positive(x):
    return isinstance(x, int | float) and math.isfinite(x) and x > 0


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "x.json"
    payload = bench_kalman.main(["--quick", "--no-peers", "--out", str(out)])
    with open(out) as f:
        return payload, json.load(f)


def test_schema(quick_run):
    payload, data = quick_run
    assert data["schema_version"] == 1
    assert data["benchmark"] == "bench_kalman"
    assert len(data["results"]) == len(payload["results"])
    env = data["env"]
    for key in (
        "kalmanjax_version",
        "git_sha",
        "jax_version",
        "jaxlib_version",
        "python",
        "backend",
        "device_kind",
        "device_count",
        "x64",
        "utc",
    ):
        assert key in env, key
    assert env["x64"] is False  # float64 is scoped, never a global switch
    config = data["config"]
    assert config["quick"] is True
    assert config["peers"] == []
    assert set(config["dtypes"]) == {"float32", "float64"}


def test_rows(quick_run):
    _, data = quick_run
    seen = set()
    for row in data["results"]:
        p = row["params"]
        for key in ("size", "d", "m", "T", "batch", "dtype", "method"):
            assert key in p, key
        seen.add((p["size"], p["dtype"], p["method"]))
        assert _finite_positive(row["compile_s"])
        run_s = row["run_s"]
        assert set(run_s) >= {"median", "iqr", "min", "n"}
        assert run_s["n"] >= 1
        assert _finite_positive(run_s["median"])
        assert 0 < run_s["min"] <= run_s["median"]
        assert run_s["iqr"] >= 0
        assert _finite_positive(row["throughput"]["steps_per_s"])
        if p["method"].startswith("kalmanjax/"):
            assert _finite_positive(row["ratios"]["ratio_vs_bare_scan"])
    sizes = {s["size"] for s in data["config"]["sizes"]}
    for size in sizes:
        for dtype in ("float32", "float64"):
            methods = {m for s, d, m in seen if s == size and d == dtype}
            assert {"kalmanjax/dense", "kalmanjax/joseph", "kalmanjax/sqrt"} <= methods
            assert "bare_scan" in methods
            assert methods <= KALMANJAX_ROWS | {"bare_scan"}
    # the small sizes also get the fast=False row
    assert any(m == "kalmanjax/dense-nofast" for _, _, m in seen)
    assert data["summary"]


def test_checks_against_reference(quick_run):
    _, data = quick_run
    for row in data["results"]:
        tol = CHECK_TOL[row["params"]["dtype"]]
        assert row["checks"], row["params"]
        for name, value in row["checks"].items():
            assert isinstance(value, int | float), (row["params"], name, value)
            assert math.isfinite(value), (row["params"], name, value)
            assert 0 <= value < tol, (row["params"], name, value)
