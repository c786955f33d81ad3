"""Cubature rules and the statistical linear regression, against closed forms."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

import kalmanjax as kj
from tests.reference import numpy_sigma_point as ref

RULES = {
    "unscented": kj.unscented(),
    "cubature": kj.cubature(),
    "gauss_hermite": kj.gauss_hermite(3),
}


def _double_factorial(k):
    return math.prod(range(k, 0, -2)) if k > 0 else 1


@pytest.mark.parametrize("n", [1, 2, 4])
@pytest.mark.parametrize("name", sorted(RULES))
def test_rules_match_their_definitions_and_the_normal_moments(name, n):
    xi, wm, wc = RULES[name].unit_points(n)
    ref_xi, ref_wm, ref_wc = ref.points(name, n)
    # the same set of points (the order may differ) with the same weights
    order, ref_order = np.lexsort(xi.T), np.lexsort(ref_xi.T)
    np.testing.assert_allclose(xi[order], ref_xi[ref_order], atol=1e-12)
    np.testing.assert_allclose(wm[order], ref_wm[ref_order], atol=1e-14)
    np.testing.assert_allclose(wc[order], ref_wc[ref_order], atol=1e-14)
    # E[1] = 1, E[x] = 0, E[x x^T] = I for N(0, I)
    np.testing.assert_allclose(wm.sum(), 1.0, atol=1e-13)
    np.testing.assert_allclose(wm @ xi, np.zeros(n), atol=1e-13)
    np.testing.assert_allclose((xi * wm[:, None]).T @ xi, np.eye(n), atol=1e-13)


@pytest.mark.parametrize("order", [1, 2, 5, 10])
def test_gauss_hermite_is_exact_to_degree_2p_minus_1(order):
    xi, w, _ = kj.gauss_hermite(order).unit_points(1)
    for k in range(2 * order):
        exact = _double_factorial(k - 1) if k % 2 == 0 else 0.0  # E[x^k]
        scale = _double_factorial(k)  # about E|x|^k: the size of the terms
        np.testing.assert_allclose(
            w @ xi[:, 0] ** k, exact, rtol=1e-12, atol=1e-13 * scale
        )


def _beliefs(mean, cov, dtype=jnp.float64):
    mean, cov = jnp.asarray(mean, dtype), jnp.asarray(cov, dtype)
    return [
        kj.Gaussian(mean, cov),
        kj.SqrtGaussian(mean, jnp.linalg.cholesky(cov)),
    ]


@pytest.mark.parametrize("name", sorted(RULES))
def test_every_rule_is_exact_on_an_affine_function(name, x64):
    rng = np.random.default_rng(0)
    A = rng.normal(size=(2, 3))
    b = rng.normal(size=2)
    L = np.tril(rng.normal(size=(3, 3))) + 2 * np.eye(3)
    mean = rng.normal(size=3)
    for belief in _beliefs(mean, L @ L.T):
        g_mean, jac, omega = kj.statistical_linearize(
            lambda x: jnp.asarray(A) @ x + jnp.asarray(b), belief, rule=RULES[name]
        )
        np.testing.assert_allclose(g_mean, A @ mean + b, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(jac, A, rtol=1e-11, atol=1e-12)
        np.testing.assert_allclose(omega, np.zeros((2, 2)), atol=1e-12)


def test_gauss_hermite_slr_matches_closed_forms(x64):
    r"""x ~ N(mu, s^2): the SLR of x^2 and of sin x, from their Gaussian moments.

    x^2: E = mu^2 + s^2, Cov(x, x^2) = 2 mu s^2, Var = 4 mu^2 s^2 + 2 s^4, so
    A = 2 mu and Omega = 2 s^4. sin x: E = sin(mu) e^{-s^2/2}, Cov(x, sin x) =
    s^2 cos(mu) e^{-s^2/2} (Stein), Var = (1 - cos(2 mu) e^{-2 s^2}) / 2 - E^2.
    """
    mu, s = 0.7, 0.9
    for belief in _beliefs([mu], [[s**2]]):
        mean, A, omega = kj.statistical_linearize(
            lambda x: x**2, belief, rule=kj.gauss_hermite(3)
        )
        np.testing.assert_allclose(
            [mean[0], A[0, 0], omega[0, 0]],
            [mu**2 + s**2, 2 * mu, 2 * s**4],
            rtol=1e-12,
        )
        mean, A, omega = kj.statistical_linearize(
            jnp.sin, belief, rule=kj.gauss_hermite(30)
        )
        e = np.sin(mu) * np.exp(-(s**2) / 2)
        cov = s**2 * np.cos(mu) * np.exp(-(s**2) / 2)
        var = 0.5 * (1 - np.cos(2 * mu) * np.exp(-2 * s**2)) - e**2
        a = cov / s**2
        np.testing.assert_allclose(
            [mean[0], A[0, 0], omega[0, 0]], [e, a, var - a**2 * s**2], rtol=1e-10
        )


def test_the_third_order_rules_miss_the_fourth_moment(x64):
    """Cubature is exact to degree 3: for x^2 it finds Omega = 0, not 2 s^4."""
    belief = kj.Gaussian(jnp.array([0.7]), jnp.array([[0.81]]))
    _, A, omega = kj.statistical_linearize(lambda x: x**2, belief, rule=kj.cubature())
    np.testing.assert_allclose(A[0, 0], 1.4, rtol=1e-12)
    np.testing.assert_allclose(omega[0, 0], 0.0, atol=1e-12)


def test_a_singular_covariance_is_linearised_on_its_range(x64):
    """P = diag(1, 0): x_1 is fixed at its mean, so its coefficient is 0, not NaN."""
    mean = jnp.array([0.5, 2.0])
    cov = jnp.diag(jnp.array([1.0, 0.0]))
    for belief in _beliefs(mean, cov)[:1] + [
        kj.SqrtGaussian(mean, jnp.diag(jnp.array([1.0, 0.0])))
    ]:
        g_mean, A, omega = kj.statistical_linearize(
            lambda x: jnp.array([x[0] ** 2 + x[1]]), belief, rule=kj.gauss_hermite(3)
        )
        # x_0 ~ N(0.5, 1): E[x_0^2] = 1.25, Cov(x_0, x_0^2) = 1, Var = 3
        np.testing.assert_allclose(g_mean, [1.25 + 2.0], rtol=1e-12)
        np.testing.assert_allclose(A, [[1.0, 0.0]], atol=1e-12)
        np.testing.assert_allclose(omega, [[2.0]], rtol=1e-12)


def test_float32_stays_float32():
    belief = kj.Gaussian(jnp.zeros(2, jnp.float32), jnp.eye(2, dtype=jnp.float32))
    out = kj.statistical_linearize(jnp.tanh, belief, rule=kj.unscented())
    assert [a.dtype for a in out] == [jnp.float32] * 3
    pts, wm, wc = kj.sigma_points(belief, kj.cubature())
    assert pts.shape == (4, 2) and pts.dtype == wm.dtype == wc.dtype == jnp.float32


def test_bad_rules_raise():
    with pytest.raises(ValueError, match="order must be a positive int"):
        kj.gauss_hermite(0)
    with pytest.raises(ValueError, match="alpha must be positive"):
        kj.unscented(alpha=0.0)
    belief = kj.Gaussian(jnp.zeros(20), jnp.eye(20))
    with pytest.raises(ValueError, match=r"3\*\*20 points"):
        kj.statistical_linearize(jnp.sin, belief, rule=kj.gauss_hermite(3))
    with pytest.raises(ValueError, match="alpha\\^2 \\(state \\+ kappa\\) > 0"):
        kj.statistical_linearize(
            jnp.sin,
            kj.Gaussian(jnp.zeros(2), jnp.eye(2)),
            rule=kj.unscented(1.0, 2.0, -3.0),
        )
    with pytest.raises(ValueError, match="unknown rule"):
        kj.SigmaPointRule("other").unit_points(2)
    # integer parameters are the same rule as their floats
    assert kj.unscented(1, 2, 1) == kj.unscented(1.0, 2.0, 1.0)
