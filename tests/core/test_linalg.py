"""The elementwise kernels of ``kalmanjax.core.linalg.SMALL`` against NumPy float64."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kalmanjax.core.linalg import COMPACT, GENERAL, SMALL, choose_ops, compact


def _cases(rng, n):
    yield rng.normal(size=(n, n)) + n * np.eye(n)  # well conditioned
    yield rng.normal(size=(n, n))  # general
    # a cyclic shift: every diagonal entry small (no row swaps: divisions by ~0)
    yield np.roll(np.eye(n), 1, axis=0) + 1e-3 * rng.normal(size=(n, n))
    # a zero leading pivot
    a = rng.normal(size=(n, n)) + n * np.eye(n)
    a[0, 0] = 0.0
    yield a


@pytest.mark.parametrize("n", [1, 2, 4, 7])
def test_solve_matches_numpy(n, x64):
    rng = np.random.default_rng(n)
    for a in _cases(rng, n):
        if n == 1 and a[0, 0] == 0:
            continue  # singular
        for b in (rng.normal(size=n), rng.normal(size=(n, 2 * n + 1))):
            got = SMALL.solve(jnp.asarray(a), jnp.asarray(b))
            assert got.shape == b.shape
            np.testing.assert_allclose(got, np.linalg.solve(a, b), rtol=1e-9, atol=1e-9)


def test_solve_float32_and_batched():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(5, 4, 4)) + 4 * np.eye(4)
    b = rng.normal(size=(5, 4, 3))
    got = jax.jit(jax.vmap(SMALL.solve))(
        jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)
    )
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, np.linalg.solve(a, b), rtol=1e-4, atol=1e-5)


def test_solve_gradient_is_the_closed_form(x64):
    # d/dA <w, A^{-1} b> = -A^{-T} w (A^{-1} b)^T and d/db = A^{-T} w
    rng = np.random.default_rng(3)
    a = rng.normal(size=(4, 4)) + 4 * np.eye(4)
    a[0, 0] = 0.0  # the pivoting path
    b, w = rng.normal(size=(4, 2)), rng.normal(size=(4, 2))
    grads = jax.grad(lambda a, b: jnp.sum(w * SMALL.solve(a, b)), (0, 1))(
        jnp.asarray(a), jnp.asarray(b)
    )
    x, lam = np.linalg.solve(a, b), np.linalg.solve(a.T, w)
    np.testing.assert_allclose(grads[0], -lam @ x.T, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(grads[1], lam, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("n", [1, 3, 5])
def test_compact_kernels_match_numpy(n, x64):
    rng = np.random.default_rng(10 + n)
    chol = np.tril(rng.normal(size=(n, n))) + 3 * np.eye(n)
    for b in (rng.normal(size=n), rng.normal(size=(n, 4))):
        got = COMPACT.solve_lower(jnp.asarray(chol), jnp.asarray(b))
        np.testing.assert_allclose(got, np.linalg.solve(chol, b), rtol=1e-10)
        got = COMPACT.solve_lower_t(jnp.asarray(chol), jnp.asarray(b))
        np.testing.assert_allclose(got, np.linalg.solve(chol.T, b), rtol=1e-10)
    for wide in (rng.normal(size=(n, 2 * n)), np.zeros((n, n + 1))):
        wide[-1] = 0.0  # a zero row: a zero pivot (the basis row is zero)
        factor, basis = COMPACT.tria_basis(jnp.asarray(wide))
        factor, basis = np.asarray(factor), np.asarray(basis)
        np.testing.assert_array_equal(factor, np.tril(factor))
        assert np.all(np.diag(factor) >= 0)
        np.testing.assert_allclose(factor @ factor.T, wide @ wide.T, atol=1e-10)
        np.testing.assert_allclose(factor @ basis, wide, atol=1e-10)
        np.testing.assert_allclose(COMPACT.tria(jnp.asarray(wide)), factor)


def test_compact_is_small_for_small_states_only():
    assert compact(choose_ops(True, 4)) is COMPACT
    assert compact(choose_ops(False, 4)) is GENERAL
    assert compact(choose_ops(None, 40)) is GENERAL
