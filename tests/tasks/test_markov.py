"""Random Markov chains and their Bayes reference against NumPy and Monte Carlo."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kalmanjax.tasks import markov as mk

FAMILIES = [
    mk.MarkovFamily(4),
    mk.MarkovFamily(8, 0.25),
    mk.MarkovFamily(4, 4.0),
    mk.MarkovFamily(4, 1.0, (0.1, 0.2, 0.3, 0.4)),
]


def _numpy_bayes(tokens, conc):
    """Dirichlet counting by an explicit loop, float64."""
    V = len(conc)
    N = np.zeros((V, V))
    out = [np.full(V, 1.0 / V)]
    for prev, nxt in zip(tokens[:-1], tokens[1:], strict=True):
        row = conc + N[prev]
        out.append(row / row.sum())
        N[prev, nxt] += 1
    return np.asarray(out), conc + N


@pytest.mark.parametrize("family", FAMILIES)
def test_bayes_predictive_and_posterior_are_dirichlet_counting(family):
    _, tokens = mk.sample_chains(jax.random.key(0), family, 3, 50)
    predictive = jax.jit(mk.bayes_predictive, static_argnums=1)
    for seq in np.asarray(tokens):
        expect, post = _numpy_bayes(seq, family.concentration)
        got = predictive(jnp.asarray(seq), family)
        np.testing.assert_allclose(got, expect, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(
            mk.posterior_concentration(jnp.asarray(seq), family), post, rtol=1e-6
        )
        counts = np.asarray(mk.transition_counts(jnp.asarray(seq), family.vocab))
        assert counts[-1].sum() == len(seq) - 2  # the last transition is not used


def test_concentrations_of_the_families():
    np.testing.assert_allclose(FAMILIES[1].concentration, np.full(8, 0.25))
    base = FAMILIES[3].concentration
    np.testing.assert_allclose(base, 4 * np.array([0.1, 0.2, 0.3, 0.4]))
    with pytest.raises(ValueError, match="base must be 4 positive weights"):
        _ = mk.MarkovFamily(4, 1.0, (0.5, 0.5)).concentration


@pytest.mark.parametrize("family", FAMILIES)
def test_sampled_rows_first_states_and_transitions(family):
    """Rows have the Dirichlet's mean (Monte Carlo, 4 standard errors); first
    states are uniform; long chains' transition frequencies are their rows."""
    V = family.vocab
    P, tokens = mk.sample_chains(jax.random.key(1), family, 4000, 2)
    P, tokens = np.asarray(P, np.float64), np.asarray(tokens)
    conc = family.concentration
    mean = conc / conc.sum()
    se = np.sqrt(mean * (1 - mean) / (conc.sum() + 1) / P[:, 0].shape[0])
    assert np.all(np.abs(P[:, 0].mean(0) - mean) < 4 * se)
    freq = np.bincount(tokens[:, 0], minlength=V) / len(tokens)
    assert np.all(
        np.abs(freq - 1 / V) < 4 * np.sqrt((1 / V) * (1 - 1 / V) / len(tokens))
    )
    P1, long = mk.sample_chains(jax.random.key(2), family, 1, 8_000)
    P1, long = np.asarray(P1[0], np.float64), np.asarray(long[0])
    N = np.zeros((V, V))
    np.add.at(N, (long[:-1], long[1:]), 1)
    visited = N.sum(1) > 300
    emp = N[visited] / N[visited].sum(1, keepdims=True)
    np.testing.assert_allclose(emp, P1[visited], atol=4 * 0.5 / np.sqrt(300))


@pytest.mark.parametrize("family", FAMILIES[:3])
def test_dirichlet_moments_against_numpy_draws(family):
    conc = family.concentration
    draws = np.random.default_rng(0).dirichlet(conc, size=200_000)
    m, cov = mk.dirichlet_moments(jnp.asarray(conc))
    np.testing.assert_allclose(m, draws.mean(0), atol=4e-3)
    np.testing.assert_allclose(cov, np.cov(draws.T), atol=2e-3)


@pytest.mark.parametrize("family", FAMILIES)
def test_logit_prior_is_the_log_gamma_moments(family):
    """log g, g ~ Gamma(c) (whose softmax is the Dirichlet) has the prior's moments."""
    conc = family.concentration
    g = np.random.default_rng(1).gamma(conc, size=(400_000, family.vocab))
    mean, var = mk.logit_prior(family)
    logs = np.log(g)
    se = logs.std(0) / np.sqrt(len(g))
    assert np.all(np.abs(np.asarray(mean) - logs.mean(0)) < 5 * se)
    np.testing.assert_allclose(var, logs.var(0), rtol=2e-2)


def test_expected_log_loss_and_entropy_rate_against_numpy():
    rng = np.random.default_rng(3)
    V, T = 5, 30
    P = rng.dirichlet(np.ones(V), size=V)
    tokens = rng.integers(0, V, size=T)
    q = rng.dirichlet(np.ones(V), size=T)
    expect = [0.0] + [-(P[tokens[t - 1]] * np.log(q[t])).sum() for t in range(1, T)]
    got = mk.expected_log_loss(
        jnp.asarray(q, jnp.float32), jnp.asarray(P, jnp.float32), jnp.asarray(tokens)
    )
    np.testing.assert_allclose(got, expect, rtol=1e-5)
    w, vecs = np.linalg.eig(P.T)
    pi = np.real(vecs[:, np.argmin(np.abs(w - 1))])
    pi = pi / pi.sum()
    rate = -(pi[:, None] * P * np.log(P)).sum()
    np.testing.assert_allclose(
        mk.entropy_rate(jnp.asarray(P, jnp.float32)), rate, rtol=1e-5
    )


def test_bayes_is_optimal_in_expectation_over_the_family():
    """Averaged over chains of the family, counting with the true concentration
    has a lower expected log loss than counting with alpha / 4 or 4 alpha (by more
    than 4 paired standard errors)."""
    family = mk.MarkovFamily(4)
    P, tokens = mk.sample_chains(jax.random.key(4), family, 1000, 48)

    def loss(fam):
        per = jax.jit(
            jax.vmap(
                lambda p, x: mk.expected_log_loss(mk.bayes_predictive(x, fam), p, x)
            )
        )(P, tokens)
        return np.asarray(per[:, 1:].mean(1), np.float64)

    bayes = loss(family)
    for wrong in (mk.MarkovFamily(4, 0.25), mk.MarkovFamily(4, 4.0)):
        diff = loss(wrong) - bayes
        assert diff.mean() > 4 * diff.std(ddof=1) / np.sqrt(len(diff)), wrong


def test_unigram_predictive_is_token_counting():
    family = mk.MarkovFamily(4, 1.0, (0.1, 0.2, 0.3, 0.4))
    tokens = np.array([2, 2, 0, 3, 2, 1, 1])
    conc = family.concentration
    got = np.asarray(mk.unigram_predictive(jnp.asarray(tokens), family))
    for t in range(len(tokens)):
        counts = conc + np.bincount(tokens[:t], minlength=4)
        np.testing.assert_allclose(got[t], counts / counts.sum(), rtol=1e-6)
