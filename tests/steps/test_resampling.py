"""Resampling schemes: unbiased counts, the variance each scheme adds, and the
systematic scheme's floor / ceiling property."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import kalmanjax as kj
from kalmanjax.steps.resampling import _invert, resampler

N = 8
WEIGHTS = np.array([0.31, 0.02, 0.0, 0.17, 0.05, 0.2, 0.125, 0.125])


def _counts(scheme, runs=4000, dtype=jnp.float64):
    fn = resampler(scheme)
    keys = jax.random.split(jax.random.key(0), runs)
    idx = jax.vmap(lambda k: fn(k, jnp.asarray(WEIGHTS, dtype)))(keys)
    assert idx.dtype == jnp.int32 and idx.shape == (runs, N)
    assert np.all(np.diff(np.asarray(idx), axis=1) >= 0)  # sorted
    return np.stack([np.bincount(row, minlength=N) for row in np.asarray(idx)])


@pytest.mark.parametrize("scheme", ["multinomial", "stratified", "systematic"])
def test_counts_are_unbiased(scheme, x64):
    counts = _counts(scheme)
    expected = N * WEIGHTS
    se = counts.std(axis=0, ddof=1) / np.sqrt(counts.shape[0])
    assert np.all(counts[:, 2] == 0)  # a zero weight is never picked
    live = WEIGHTS > 0
    # (a systematic count of an integer N w never varies: se = 0 there)
    error = np.abs(counts.mean(axis=0) - expected)[live]
    assert np.all(error <= 4.5 * se[live] + 1e-12)


def test_the_variance_each_scheme_adds(x64):
    multinomial = _counts("multinomial").var(axis=0)
    stratified = _counts("stratified").var(axis=0)
    systematic = _counts("systematic")
    # multinomial counts are binomial: N w (1 - w)
    binomial = N * WEIGHTS * (1 - WEIGHTS)
    np.testing.assert_allclose(multinomial, binomial, rtol=0.15, atol=1e-12)
    assert stratified.sum() < 0.8 * multinomial.sum()
    # systematic: every count is floor(N w) or ceil(N w)
    expected = N * WEIGHTS
    assert np.all(systematic >= np.floor(expected)) and np.all(
        systematic <= np.ceil(expected)
    )
    assert systematic.var(axis=0).sum() < stratified.sum()


def test_float32_and_effective_sample_size():
    idx = kj.resampling.systematic(jax.random.key(1), jnp.asarray(WEIGHTS, jnp.float32))
    assert idx.dtype == jnp.int32
    logw = jnp.log(jnp.asarray(WEIGHTS[WEIGHTS > 0]))
    ess = kj.resampling.effective_sample_size(logw)
    np.testing.assert_allclose(ess, 1.0 / np.sum(WEIGHTS**2), rtol=1e-6)
    with pytest.raises((ValueError, TypeError), match="scheme|resampling"):
        resampler("residual")  # type: ignore[arg-type]


def test_a_uniform_that_rounds_to_one_never_picks_a_zero_weight():
    """(999 + (1 - 2^-24)) / 1000 is 1.0 in float32: the last stratum's point
    can reach the total, past the last particle of positive weight."""
    w = jnp.asarray([0.25, 0.5, 0.25, 0.0, 0.0], jnp.float32)
    idx = _invert(w, jnp.asarray([0.1, 0.99, 1.0], jnp.float32))
    assert idx.tolist() == [0, 2, 2]
