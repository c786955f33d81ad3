"""The categorical (next-token) update against the dense V x V computation."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import kalmanjax as kj
from tests.reference import numpy_categorical as cat_ref

V, K = cat_ref.V, cat_ref.K


def _obs(prob, dtype=jnp.float64, jitter=1e-3):
    W, c = jnp.asarray(prob["W"], dtype), jnp.asarray(prob["c"], dtype)
    return kj.CategoricalObservation(
        fn=lambda th, u: W @ th + 0.3 * jnp.tanh(W @ th) + c, jitter=jitter
    )


@pytest.mark.parametrize("form", ["dense", "sqrt"])
@pytest.mark.parametrize("jitter", [1e-3, 1e-6])
def test_matches_dense_computation(form, jitter, x64, rng):
    prob = cat_ref.problem(rng)
    for token in (0, 4):
        mean, cov, ll, gain, e = cat_ref.dense_reference(
            prob["m"], prob["P"], token, prob["W"], prob["c"], jitter
        )
        belief = kj.Gaussian(jnp.asarray(prob["m"]), jnp.asarray(prob["P"]))
        if form == "sqrt":
            belief = kj.to_sqrt(belief)
        post, info = kj.categorical_update(
            belief, jnp.array(token), _obs(prob, jitter=jitter)
        )
        np.testing.assert_allclose(post.mean, mean, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(post.cov, cov, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(info.information_gain, gain, rtol=1e-9)
        np.testing.assert_allclose(info.log_likelihood, ll, rtol=1e-9)
        np.testing.assert_allclose(info.innovation, e, rtol=1e-12, atol=1e-14)
        assert info.innovation_cov is None


def test_missing_token_leaves_the_belief_unchanged(x64, rng):
    prob = cat_ref.problem(rng)
    belief = kj.Gaussian(jnp.asarray(prob["m"]), jnp.asarray(prob["P"]))
    post, info = kj.categorical_update(belief, jnp.array(-1), _obs(prob))
    np.testing.assert_array_equal(post.mean, belief.mean)
    np.testing.assert_array_equal(post.cov, belief.cov)
    assert float(info.log_likelihood) == 0.0 and float(info.information_gain) == 0.0


def test_filter_over_a_token_stream_matches_dense_steps(x64, rng):
    prob = cat_ref.problem(rng)
    tokens = np.array([1, 3, -1, 3, 0, 6, 2])
    filt = kj.extended_kalman_filter(
        kj.LinearDynamics(F=jnp.eye(K), Q=jnp.zeros((K, K))), _obs(prob), form="sqrt"
    )
    prior = kj.Gaussian(jnp.asarray(prob["m"]), jnp.asarray(prob["P"]))
    out = jax.jit(lambda p, t: kj.run(filt, p, t))(prior, jnp.asarray(tokens))
    m, P = prob["m"], prob["P"]
    for t, token in enumerate(tokens):
        if token >= 0:
            m, P, *_ = cat_ref.dense_reference(m, P, token, prob["W"], prob["c"], 1e-3)
        np.testing.assert_allclose(out.states.mean[t], m, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(out.states.cov[t], P, rtol=1e-8, atol=1e-12)


def test_no_vocab_by_vocab_intermediate():
    vocab, k = 3000, 4
    W = jnp.ones((vocab, k), jnp.float32)
    obs = kj.CategoricalObservation(fn=lambda th, u: W @ th)
    prior = kj.Gaussian(jnp.zeros(k), jnp.eye(k))
    jaxpr = jax.make_jaxpr(lambda b: kj.categorical_update(b, jnp.array(3), obs))(prior)

    def sizes(jp):
        for eqn in jp.eqns:
            for v in eqn.outvars:
                yield math.prod(getattr(v.aval, "shape", ()))
            for param in eqn.params.values():  # nested jaxprs (pjit, custom_jvp, ...)
                inner = getattr(param, "jaxpr", param)
                if hasattr(inner, "eqns"):
                    yield from sizes(inner)

    all_sizes = list(sizes(jaxpr.jaxpr))
    assert len(all_sizes) > 20 and vocab * k in all_sizes  # the walk saw the work
    assert max(all_sizes) <= vocab * k


def test_float32_and_bad_token(rng):
    prob = cat_ref.problem(rng)
    belief = kj.Gaussian(jnp.asarray(prob["m"], jnp.float32), jnp.eye(K))
    post, _ = kj.categorical_update(belief, jnp.array(2), _obs(prob, jnp.float32))
    assert post.mean.dtype == jnp.float32 and post.cov.dtype == jnp.float32
    with pytest.raises(TypeError, match="integer token id of shape"):
        kj.categorical_update(belief, jnp.array(2.0), _obs(prob, jnp.float32))
