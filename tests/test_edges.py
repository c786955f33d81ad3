"""The core at its edges (issue 12, in progress): values that must never be used
silently and inputs that used to give unclear errors.

Each case is checked against an independent reference: a missing token leaves the
belief exactly as the NumPy float64 prior; an empty sequence has log-likelihood 0
and smooths to an empty sequence.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import kalmanjax as kj

V, K = 4, 3


def _categorical(seed=0, dtype=jnp.float64):
    rng = np.random.default_rng(seed)
    W = jnp.asarray(rng.normal(size=(V, K)), dtype)
    prior_cov = np.eye(K) + 0.1 * np.ones((K, K))
    prior = kj.Gaussian(jnp.zeros(K, dtype), jnp.asarray(prior_cov, dtype))
    return kj.CategoricalObservation(fn=lambda th, u: W @ th), prior, prior_cov


@pytest.mark.parametrize("token", [V, V + 7, -1])
def test_an_out_of_range_token_is_missing(token, x64):
    obs, prior, prior_cov = _categorical()
    post, info = kj.categorical_update(prior, jnp.asarray(token), obs)
    np.testing.assert_array_equal(np.asarray(post.mean), np.zeros(K))
    np.testing.assert_array_equal(np.asarray(post.cov), prior_cov)
    assert float(info.log_likelihood) == 0.0
    assert float(info.information_gain) == 0.0


def test_an_out_of_range_token_in_a_stream_changes_nothing(x64):
    """A stream with a bad id ends where the stream without that token ends."""
    obs, prior, _ = _categorical(seed=1)
    static = kj.LinearDynamics(F=jnp.eye(K), Q=jnp.zeros((K, K)))
    for form in ("dense", "sqrt"):
        filt = kj.extended_kalman_filter(static, obs, form=form)
        clean = kj.run(filt, prior, jnp.asarray([1, 3, 0, 2])).final
        bad = kj.run(filt, prior, jnp.asarray([1, 3, V, 0, 2])).final
        np.testing.assert_allclose(bad.mean, clean.mean, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(bad.cov, clean.cov, rtol=1e-12, atol=1e-14)


def test_logits_must_be_a_floating_vector_of_the_state_dtype(x64):
    _, prior, _ = _categorical()
    as_ints = kj.CategoricalObservation(fn=lambda th, u: jnp.arange(V))
    with pytest.raises(TypeError, match="the output of observation.fn has dtype"):
        kj.categorical_update(prior, jnp.asarray(0), as_ints)
    matrix = kj.CategoricalObservation(fn=lambda th, u: jnp.ones((V, 2)) @ th[:2, None])
    with pytest.raises(ValueError, match=r"observation.fn must return a vector"):
        kj.categorical_update(prior, jnp.asarray(0), matrix)
    static = kj.LinearDynamics(F=jnp.eye(K), Q=jnp.zeros((K, K)))
    filt = kj.extended_kalman_filter(static, as_ints)
    with pytest.raises(TypeError, match="extended_kalman_filter.step"):
        kj.run(filt, prior, jnp.asarray([0, 1]))


@pytest.mark.parametrize("form", ["dense", "sqrt"])
@pytest.mark.parametrize("parallel", [False, True])
def test_an_empty_sequence_smooths_to_an_empty_sequence(form, parallel):
    dyn = kj.LinearDynamics(F=jnp.eye(2), Q=0.1 * jnp.eye(2))
    obs = kj.LinearObservation(H=jnp.eye(1, 2), R=jnp.eye(1))
    prior = kj.Gaussian(jnp.zeros(2), jnp.eye(2))
    out = kj.kalman_smoother(
        dyn, obs, prior, jnp.zeros((0, 1)), form=form, parallel=parallel
    )
    assert out.smoothed.mean.shape == (0, 2)
    assert float(out.log_marginal_likelihood) == 0.0
    filtered = kj.run(kj.kalman_filter(dyn, obs, form=form), prior, jnp.zeros((0, 1)))
    smoothed = kj.rts_smoother(dyn, filtered.states, parallel=parallel)
    assert jax.tree_util.tree_map(jnp.shape, smoothed) == jax.tree_util.tree_map(
        jnp.shape, filtered.states
    )


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
def test_sqrt_form_in_half_precision_is_a_clear_error(dtype):
    dyn = kj.LinearDynamics(F=jnp.eye(2, dtype=dtype), Q=0.1 * jnp.eye(2, dtype=dtype))
    obs = kj.LinearObservation(H=jnp.eye(1, 2, dtype=dtype), R=jnp.eye(1, dtype=dtype))
    prior = kj.Gaussian(jnp.zeros(2, dtype), jnp.eye(2, dtype=dtype))
    name = jnp.dtype(dtype).name
    with pytest.raises(
        TypeError, match=f"form='sqrt' needs float32 or float64.*{name}"
    ):
        kj.kalman_filter(dyn, obs, form="sqrt")
    timevarying = kj.kalman_filter(lambda u: dyn, obs, form="sqrt")
    with pytest.raises(TypeError, match="kalman_filter.init: form='sqrt' needs"):
        kj.run(timevarying, prior, jnp.ones((3, 1), dtype))
    ekf = kj.extended_kalman_filter(dyn, obs, form="sqrt")
    with pytest.raises(TypeError, match="extended_kalman_filter.init: form='sqrt'"):
        kj.run(ekf, prior, jnp.ones((3, 1), dtype))
    # the dense form runs in half precision, close to the float64 reference
    dense = kj.run(kj.kalman_filter(dyn, obs), prior, jnp.ones((3, 1), dtype))
    ref = _scalar_random_walk_loglik(np.ones(3), q=0.1, r=1.0, p0=1.0)
    np.testing.assert_allclose(
        np.asarray(dense.infos.log_likelihood, np.float64), ref, rtol=2e-2
    )


def _scalar_random_walk_loglik(ys, q, r, p0):
    """log p(y_t | y_1:t-1) of x_t = x_t-1 + w, y = x + v, in NumPy float64."""
    m, p, out = 0.0, p0, []
    for y in ys:
        p = p + q
        s = p + r
        out.append(-0.5 * (np.log(2 * np.pi * s) + (y - m) ** 2 / s))
        k = p / s
        m, p = m + k * (y - m), (1 - k) * p
    return np.array(out)


def test_python_lists_are_a_clear_error():
    lists = kj.LinearDynamics(F=[[1.0]], Q=[[0.1]])
    obs = kj.LinearObservation(H=jnp.eye(1), R=jnp.eye(1))
    with pytest.raises(TypeError, match="dynamics.F is a Python list; pass an array"):
        kj.kalman_filter(lists, obs)
    with pytest.raises(TypeError, match="belief.mean is a Python list"):
        kj.update(kj.Gaussian([0.0], jnp.eye(1)), jnp.ones(1), obs)
