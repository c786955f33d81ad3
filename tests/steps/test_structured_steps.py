"""The pieces of the low-rank steps against NumPy float64."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import kalmanjax as kj
from kalmanjax.steps import structured as st


@pytest.mark.parametrize("k", [50, 2 * st.GRAM_BLOCK, 2 * st.GRAM_BLOCK + 37])
def test_weighted_gram_matches_numpy(k, x64):
    """Direct (k < block), blocked with no tail, blocked with a tail."""
    rng = np.random.default_rng(0)
    W, a = rng.normal(size=(k, 4)), rng.uniform(size=k)
    got = jax.jit(st.weighted_gram)(jnp.asarray(W), jnp.asarray(a))
    np.testing.assert_allclose(got, W.T @ (a[:, None] * W), rtol=1e-12)
    # reverse mode through the blocks: d tr(M^T W^T diag(a) W)/dW = diag(a) W (M + M^T)
    M = rng.normal(size=(4, 4))
    grad = jax.jit(
        jax.grad(lambda W: jnp.sum(st.weighted_gram(W, jnp.asarray(a)) * M))
    )(jnp.asarray(W))
    np.testing.assert_allclose(grad, a[:, None] * W @ (M + M.T), rtol=1e-11, atol=1e-14)


def test_implicit_factor_products_match_the_formed_factor(x64):
    rng = np.random.default_rng(1)
    k, r, c = 30, 4, 3
    W, B, s, E = (
        rng.normal(size=(k, r)),
        rng.normal(size=(r, r)),
        rng.uniform(0.5, 2, size=k),
        rng.normal(size=(k, c)),
    )
    dense = np.concatenate([s[:, None] * (W @ B), E], axis=1)
    f = st.ImplicitFactor(*map(jnp.asarray, (W, B, s))).extended(jnp.asarray(E))
    z, X, a = rng.normal(size=(r + c, 2)), rng.normal(size=(k, 2)), rng.uniform(size=k)
    assert f.width == r + c
    np.testing.assert_allclose(f.dense(), dense, rtol=1e-13)
    np.testing.assert_allclose(f.times(jnp.asarray(z)), dense @ z, rtol=1e-12)
    np.testing.assert_allclose(
        f.times(jnp.asarray(z[:, 0])), dense @ z[:, 0], rtol=1e-12
    )
    np.testing.assert_allclose(f.t_times(jnp.asarray(X)), dense.T @ X, rtol=1e-12)
    np.testing.assert_allclose(
        f.gram(jnp.asarray(a)), dense.T @ (a[:, None] * dense), rtol=1e-12
    )


def test_implicit_predict_is_the_formed_one(x64):
    rng = np.random.default_rng(2)
    k, r = 20, 3
    belief = kj.LowRankGaussian(
        jnp.asarray(rng.normal(size=k)),
        jnp.asarray(rng.uniform(1, 2, size=k)),
        jnp.asarray(rng.normal(size=(k, r))),
    )
    dyn = kj.DiagonalDynamics(
        F=jnp.asarray(rng.uniform(0.5, 1.1, size=k)),
        Q=jnp.asarray(rng.uniform(0, 0.3, size=k)),
    )
    formed = st.low_rank_predict(belief, dyn)
    lazy = st.low_rank_predict(belief, dyn, implicit=True)
    np.testing.assert_allclose(lazy.precision_factor.dense(), formed.precision_factor)
    # the exact predict: (F P F^T + Q)^-1, in NumPy
    P = np.linalg.inv(np.asarray(belief.precision))
    f, q = np.asarray(dyn.F), np.asarray(dyn.Q)
    expect = np.linalg.inv(f[:, None] * P * f[None, :] + np.diag(q))
    np.testing.assert_allclose(formed.precision, expect, rtol=1e-9, atol=1e-10)


def test_leading_subspace_derivative_is_the_projector_s(x64):
    """d(V_k V_k^T) against central differences (the vectors themselves are only
    defined up to rotation; their projector is what the filter uses)."""
    rng = np.random.default_rng(3)
    A = rng.normal(size=(6, 6))
    G, dG = A @ A.T, rng.normal(size=(6, 6))
    dG = dG + dG.T

    def projector(g):
        Vk, _ = st.leading_subspace(jnp.asarray(g), 2)
        return Vk @ Vk.T

    _, got = jax.jvp(projector, (jnp.asarray(G),), (jnp.asarray(dG),))
    eps = 1e-6
    fd = (np.asarray(projector(G + eps * dG)) - np.asarray(projector(G - eps * dG))) / (
        2 * eps
    )
    np.testing.assert_allclose(got, fd, rtol=1e-6, atol=1e-8)
