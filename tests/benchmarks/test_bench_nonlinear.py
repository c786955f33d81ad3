"""Smoke test of ``benchmarks.bench_nonlinear --quick``: it runs, writes its JSON,
every filter reports a finite log-likelihood of the same model, and our particle
filter and cuthbert's estimate the Kalman filter's likelihood (not speed)."""

import pytest

from benchmarks import bench_nonlinear as bench

pytestmark = pytest.mark.bench


def test_bench_nonlinear_quick(quick_run):
    data = quick_run(bench)
    sigma = [r for r in data["rows"] if r["params"]["section"] == "sigma_point"]
    particle = [r for r in data["rows"] if r["params"]["section"] == "particle"]
    assert len(sigma) + len(particle) == len(data["rows"])
    methods = [r["params"]["method"] for r in sigma]
    assert methods == ["ekf", "unscented", "cubature", "gauss_hermite_3"]
    for r in sigma:
        assert r["per_step_s"] > 0 and r["vs_ekf"] > 0
    lls = [r["log_likelihood"] for r in sigma]
    # different approximations of one model: 10 steps, 2 readings each
    assert all(-100 < ll < 0 for ll in lls), lls
    assert [r["params"]["method"] for r in particle] == [
        "kalmanjax",
        "kalmanjax_lean",
        "cuthbert",
    ]
    exact = data["summary"]["kalman_log_likelihood"]
    for r in particle:
        assert r["particle_steps_per_s"] > 0
        assert abs(r["log_likelihood"] - exact) < 3.0  # 10 steps, 100 particles
