"""Token streams, tier C, at smoke size, and its pieces against NumPy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from kalmanjax.experiments import EXPERIMENTS, markov_adapter
from kalmanjax.nn import LowRankAdapter, ResidualShift, icl_markov
from kalmanjax.tasks import markov as mk


@pytest.fixture(scope="module")
def result():
    # optax mixes Python floats and int32 counters: not strict-promotion clean
    with jax.numpy_dtype_promotion("standard"):
        return markov_adapter.run(quick=True)


def test_fields_figure_and_verdicts(result, tmp_path):
    assert EXPERIMENTS["markov_adapter"] is markov_adapter
    d = result.data
    for name, gap in d["gap"].items():
        assert gap.shape == d["checkpoints"].shape and np.all(np.isfinite(gap)), name
        assert np.all(gap <= 1.0 + 1e-6)  # nothing beats Bayes on average by much
    assert d["frozen_excess"] > 0
    for c in result.claims:
        assert c.verdict.startswith(("holds", "fails", "inconclusive")), c.verdict
        assert c.measured and c.settings and "|" not in c.claim + c.verdict
    markov_adapter.plot(result, tmp_path / "m.png")
    assert (tmp_path / "m.png").stat().st_size > 10_000


def test_affine_logits_are_the_adapted_network():
    model, config, _ = icl_markov.load_pretrained()
    adapter = LowRankAdapter(model, "head.proj", 5, basis="svd", rngs=nnx.Rngs(0))
    tokens = jax.random.randint(jax.random.key(0), (config.length,), 0, 4)
    b, G = markov_adapter.affine_logits(model, adapter, tokens)
    theta = jax.random.normal(jax.random.key(1), (5,))
    np.testing.assert_allclose(
        b + G @ theta, model(tokens, adapter=adapter, theta=theta), atol=2e-5
    )
    shift = ResidualShift(model, "head", 3, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="must sit on 'head.proj'"):
        markov_adapter.affine_logits(model, shift, tokens)


def _numpy_tempered_ekf(b, G, y, prior_var, tau, jitter=1e-6):
    """Moment-matched categorical updates with the likelihood raised to tau
    (R / tau), from N(0, prior_var I), float64."""
    k = G.shape[-1]
    m, P = np.zeros(k), prior_var * np.eye(k)
    means = []
    for bt, Gt, yt in zip(b, G, y, strict=True):
        z = bt + Gt @ m
        p = np.exp(z - z.max())
        p /= p.sum()
        D = np.diag(p) - np.outer(p, p)
        H = D @ Gt
        S = H @ P @ H.T + (D + jitter * np.eye(len(p))) / tau
        K = np.linalg.solve(S, H @ P).T
        m = m + K @ (np.eye(len(p))[yt] - p)
        P = P - K @ S @ K.T
        means.append(m)
    return np.asarray(means)


def test_tempering_is_the_filter_from_a_scaled_prior(x64):
    """The docstring's identity: the tau-tempered filter's means equal the
    untempered filter's from the prior covariance tau s^2 I."""
    rng = np.random.default_rng(0)
    T, V, k, s2, tau = 7, 4, 3, 0.7, 0.25
    b, G = rng.standard_normal((T, V)), rng.standard_normal((T, V, k))
    y = rng.integers(0, V, T)
    xs = {"obs": jnp.asarray(y), "b": jnp.asarray(b), "G": jnp.asarray(G)}
    means = np.asarray(markov_adapter._ekf_stream(tau * s2, xs)[0])
    np.testing.assert_allclose(
        means, _numpy_tempered_ekf(b, G, y, s2, tau), rtol=1e-8, atol=1e-10
    )


def test_map_refit_has_zero_gradient(x64):
    rng = np.random.default_rng(1)
    n, V, k, s2 = 40, 4, 3, 0.5
    b, G = rng.standard_normal((n, V)), rng.standard_normal((n, V, k))
    y = rng.integers(0, V, n)
    mask = (np.arange(n) < 30).astype(float)
    xs = {"obs": jnp.asarray(y), "b": jnp.asarray(b), "G": jnp.asarray(G)}
    theta = np.asarray(markov_adapter._map_refit(s2, xs, jnp.asarray(mask)))
    z = b + G @ theta
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    grad = np.einsum("nvk,nv->k", G, (np.eye(V)[y] - p) * mask[:, None]) - theta / s2
    np.testing.assert_allclose(grad, 0.0, atol=1e-9)


def test_excess_at_many_thetas_equals_one_at_a_time():
    """Guards the loop in _excess_at: a vmap over thetas of the chains-vmap gave
    every theta the first one's value at 256 chains (jaxlib 0.10.2, CPU)."""
    model, _, _ = icl_markov.load_pretrained()
    adapter = LowRankAdapter(model, "head.proj", 4, basis="svd", rngs=nnx.Rngs(0))
    P, tokens = mk.sample_chains(jax.random.key(2), markov_adapter.SHIFTED, 256, 128)
    b, G = jax.jit(jax.vmap(lambda x: markov_adapter.affine_logits(model, adapter, x)))(
        tokens
    )
    thetas = jnp.stack([jnp.zeros(4), jnp.full(4, 0.3), jnp.full(4, -0.3)])
    many = np.asarray(
        markov_adapter._excess_at(thetas, b, G, P, tokens, markov_adapter.SHIFTED)
    )
    for i, theta in enumerate(thetas):
        one = markov_adapter._excess(theta, b, G, P, tokens, markov_adapter.SHIFTED)
        np.testing.assert_allclose(many[i], one, rtol=1e-5, atol=1e-7)
    assert not np.allclose(many[0], many[1])
