"""Smoke test of ``benchmarks.bench_structured --quick``: runs, writes the documented
JSON, and every exact row agrees with its NumPy float64 reference (not speed): the
linear rows' means, and the truncation rows' KL divergence to the exact posterior,
which is rounding when the rank holds every reading."""

import pytest

from benchmarks import bench_structured

pytestmark = pytest.mark.bench

#: float32 over T = 8 readings: max abs error relative to the reference's scale
CHECK_TOL = 1e-4


def test_bench_structured_quick(quick_run):
    data = quick_run(bench_structured)
    ks = data["settings"]["ks"]
    seen = set()
    for row in _section(data, "linear"):
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

    cat = _section(data, "categorical")
    assert {(r["params"]["k"], r["params"]["method"]) for r in cat} == {
        (k, m)
        for k in data["settings"]["categorical"]["ks"]
        for m in bench_structured.CATEGORICAL_METHODS
    }
    for row in cat:
        assert row["skipped"] is None and row["per_step_s"] > 0
        assert row["checks"]["finite"]
        assert row["params"]["vocab"] == 64

    network = _section(data, "network")
    assert [r["params"]["method"] for r in network] == list(
        bench_structured.NETWORK_METHODS
    )
    for row in network:
        assert row["params"]["k"] > 100_000  # every weight of the shipped network
        assert row["checks"]["finite"] and row["ratio_to_forward_backward"] > 0
        assert row["temp_floats_per_k"] > 0

    trunc = _section(data, "truncation")
    assert {r["params"]["method"] for r in trunc} >= {"prior", "diagonal"}
    for row in trunc:
        kl = row["kl_to_exact"]
        if row["holds_every_reading"]:
            assert abs(kl) < 1e-8, row
        else:
            assert kl > 1e-6, row  # a truncation that drops information


def _section(data, name):
    return [r for r in data["rows"] if r["params"]["section"] == name]
