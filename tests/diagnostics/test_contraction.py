"""kalmanjax.diagnostics.contraction: line fits, the 1/t test, the Riccati distance."""

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from kalmanjax import diagnostics as kd
from tests.reference import ridge


def _scalar_riccati(p0, q, r, T):
    ps, p = [], p0
    for _ in range(T):
        pm = p + q
        p = pm * r / (pm + r)
        ps.append(p)
    return np.array(ps)


def test_exponential_rate_towards_the_floor_matches_riccati_closed_form(x64):
    # scalar random walk, H = 1: P_inf solves P^2 + q P - q r = 0 and the Riccati
    # map's slope there is f'(P_inf) = r^2 / (P_inf + q + r)^2
    q, r = 0.05, 1.0
    p_inf = 0.5 * (-q + np.sqrt(q * q + 4 * q * r))
    rate = -np.log(r**2 / (p_inf + q + r) ** 2)
    P = _scalar_riccati(10.0, q, r, 120)
    fit = kd.fit_exponential_rate(jnp.asarray(P), floor=p_inf, start=15, stop=45)
    np.testing.assert_allclose(fit.slope, rate, rtol=1e-3)
    assert fit.r_squared > 0.9999
    # two initialisations forget their difference at the same rate (log metric)
    P2 = _scalar_riccati(0.01, q, r, 120)
    dist = kd.riccati_distance(
        jnp.asarray(P)[:, None, None], jnp.asarray(P2)[:, None, None]
    )
    np.testing.assert_allclose(dist, np.abs(np.log(P / P2)), rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(
        kd.fit_exponential_rate(dist, start=15, stop=45).slope, rate, rtol=1e-3
    )


def test_q0_tail_is_one_over_t(x64):
    # scalar, H = 1, Q = 0: Sigma_t = 1 / (1/tau^2 + t/r) exactly
    tau2, r = 2.0, 0.5
    t = np.arange(1, 2001, dtype=float)
    sigma = 1.0 / (1.0 / tau2 + t / r)
    fit = kd.tail_exponent(jnp.asarray(sigma), start=1000)
    loglog = np.polyfit(np.log(t[1000:]), np.log(sigma[1000:]), 1)[0]
    np.testing.assert_allclose(fit.slope, loglog, rtol=1e-10)
    np.testing.assert_allclose(fit.slope, -1.0, atol=1e-3)
    ratio = kd.inverse_t_ratio(jnp.asarray(sigma), dim=1, noise_var=r)
    np.testing.assert_allclose(ratio, t * tau2 / (r + t * tau2), rtol=1e-10)
    # an exponential fit to a 1/t law: the rate falls as the window moves out
    early = kd.fit_exponential_rate(jnp.asarray(sigma), start=10, stop=50).slope
    late = kd.fit_exponential_rate(jnp.asarray(sigma), start=1000, stop=2000).slope
    assert late < early / 20


def test_riccati_distance_matches_scipy_generalised_eigenvalues(x64, rng, variant):
    A = [np.cov(rng.normal(size=(3, 8))) for _ in range(4)]
    B = [np.cov(rng.normal(size=(3, 8))) for _ in range(4)]
    got = variant(kd.riccati_distance)(
        jnp.asarray(np.stack(A)), jnp.asarray(np.stack(B))
    )
    expected = [
        np.sqrt(np.sum(np.log(scipy.linalg.eigh(b, a, eigvals_only=True)) ** 2))
        for a, b in zip(A, B, strict=True)
    ]
    np.testing.assert_allclose(got, expected, rtol=1e-9)
    np.testing.assert_allclose(
        kd.riccati_distance(jnp.asarray(B[0]), jnp.asarray(A[0])), expected[0], 1e-9
    )


def test_riccati_distance_q0_decays_like_one_over_t(x64, rng):
    X = rng.normal(size=(400, 2))
    _, c1 = ridge.posterior_path(X, np.zeros(400), 0.5, np.eye(2))
    _, c2 = ridge.posterior_path(X, np.zeros(400), 0.5, 9.0 * np.eye(2))
    dist = kd.riccati_distance(jnp.asarray(c1), jnp.asarray(c2))
    np.testing.assert_allclose(kd.tail_exponent(dist, start=100).slope, -1.0, atol=0.05)


# ------------------------------------------------------------------ loglog_slope


@pytest.mark.parametrize("as_jax", [False, True])
def test_loglog_slope_is_numpy_polyfit_in_float64(rng, as_jax):
    # no x64 here: the fit runs on the host in float64 either way
    for size in (2, 3, 17, 200):
        path = np.exp(rng.uniform(-8.0, 2.0, size=size))
        gap = np.exp(rng.normal(scale=3.0, size=size))
        if as_jax:
            path, gap = jnp.asarray(path), jnp.asarray(gap)  # float32
        p64, g64 = np.asarray(path, np.float64), np.asarray(gap, np.float64)
        expected = np.polyfit(np.log(p64), np.log(g64), 1)[0]
        got = kd.loglog_slope(path, gap)
        assert isinstance(got, float)
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("order", [2.0, 1.0, 0.5, -1.0, -3.0])
def test_loglog_slope_of_an_exact_power_law_is_its_order(order):
    path = np.geomspace(1e-6, 1.0, 13)
    gap = 3.7 * path**order
    assert abs(kd.loglog_slope(path, gap) - order) < 1e-12
    assert abs(kd.loglog_slope(list(path[:2]), list(gap[:2])) - order) < 1e-12


def test_loglog_slope_of_a_flat_gap_is_zero_without_warnings():
    # filterwarnings = error: the undefined r_squared of a flat gap must stay quiet
    assert kd.loglog_slope([1e-3, 1e-2, 1e-1], [2.0, 2.0, 2.0]) == 0.0


def test_loglog_slope_rejects_bad_inputs():
    with pytest.raises(ValueError, match="must be vectors of one length"):
        kd.loglog_slope([1.0], [1.0])
    with pytest.raises(ValueError, match="must be vectors of one length"):
        kd.loglog_slope([1.0, 2.0, 3.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="must be vectors of one length"):
        kd.loglog_slope(np.ones((2, 2)), np.ones((2, 2)))
    with pytest.raises(ValueError, match="must be positive"):
        kd.loglog_slope([0.0, 1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="must be positive"):
        kd.loglog_slope([1.0, 2.0], [1.0, -2.0])
