"""kalmanjax.diagnostics.arrays: covariances out of beliefs, per-matrix maps."""

import jax.numpy as jnp
import numpy as np
import pytest

import kalmanjax as kj
from kalmanjax.core.batching import LAPACK_SPLIT_FLOPS, lapack_flops
from kalmanjax.diagnostics.arrays import as_covariance, per_matrix


def _spd(rng, shape, n):
    A = rng.normal(size=shape + (n, n))
    return A @ np.swapaxes(A, -1, -2) + n * np.eye(n)


@pytest.mark.parametrize("batch", [(), (3,), (2, 5), (3, 1500)])
def test_per_matrix_matches_numpy_over_any_batch(x64, rng, batch, variant):
    # (3, 1500) 2x2 matrices: above the CPU chunk size, so mapped in chunks there
    n = 2
    assert 3 * 1500 > LAPACK_SPLIT_FLOPS // (lapack_flops(n, "eigh") + 1)
    a = _spd(rng, batch, n)
    b = rng.normal(size=batch + (n, 3))

    def one(a, b):  # a pytree of outputs of two shapes
        return {"eig": jnp.linalg.eigvalsh(a), "solve": jnp.linalg.solve(a, b)}

    got = variant(lambda a, b: per_matrix(one, a, b))(jnp.asarray(a), jnp.asarray(b))
    assert got["eig"].shape == batch + (n,)
    assert got["solve"].shape == batch + (n, 3)
    np.testing.assert_allclose(got["eig"], np.linalg.eigvalsh(a), rtol=1e-12)
    np.testing.assert_allclose(got["solve"], np.linalg.solve(a, b), rtol=1e-10)


def test_as_covariance_reads_beliefs_and_arrays(rng):
    c = jnp.asarray(_spd(rng, (4,), 3), jnp.float32)
    g = kj.Gaussian(mean=jnp.zeros((4, 3), jnp.float32), cov=c)
    np.testing.assert_array_equal(as_covariance(g, "x", "f"), c)
    np.testing.assert_array_equal(as_covariance(c, "x", "f"), c)
    s = kj.to_sqrt(kj.Gaussian(mean=g.mean[0], cov=c[0]))
    np.testing.assert_allclose(as_covariance(s, "x", "f"), c[0], rtol=1e-5)
    with pytest.raises(ValueError, match=r"f: x must be a belief or an array"):
        as_covariance(jnp.ones((2, 3)), "x", "f")
    assert as_covariance(c, "x", "f").dtype == jnp.float32
