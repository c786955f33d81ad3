"""Token streams, tier A, at smoke size, and its pieces against NumPy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kalmanjax.experiments import EXPERIMENTS, markov_logits
from kalmanjax.tasks import markov as mk


@pytest.fixture(scope="module")
def result():
    # optax mixes Python floats and int32 counters: not strict-promotion clean
    with jax.numpy_dtype_promotion("standard"):
        return markov_logits.run(quick=True)


def test_fields_figure_and_verdicts(result, tmp_path):
    assert EXPERIMENTS["markov_logits"] is markov_logits
    d = result.data
    for name in markov_logits.METHODS:
        assert np.all(np.isfinite(d["curve"][name]))
        assert d["curve"][name][0] == 0.0  # the first token: uniform, as Bayes
        assert d["regret_se"][name] > 0
    for c in result.claims:
        assert c.verdict == "holds" or c.verdict.startswith(
            ("holds only", "fails", "inconclusive")
        )
        assert c.measured and c.settings and "|" not in c.claim + c.verdict
    markov_logits.plot(result, tmp_path / "m.png")
    assert (tmp_path / "m.png").stat().st_size > 10_000


def test_ekf_on_logits_is_the_numpy_categorical_update(x64):
    """One step of the tier-A filter: only the previous state's row moves, by the
    NumPy moment-matched update of that row (tests/reference)."""
    family = mk.MarkovFamily(3, 1.0)
    tokens = jnp.asarray([2, 0, 1])
    q = markov_logits.ekf_predictive(tokens, family, dtype=jnp.float64)
    _, covs = markov_logits.ekf_beliefs(tokens, family, dtype=jnp.float64)
    mean, var = (np.asarray(a) for a in mk.logit_prior(family, jnp.float64))
    # the first observation: token 0 after state 2 updates row 2 only, by the
    # moment-matched update with logits = the row (H = diag p - p p^T)
    P = np.diag(var)
    p = np.exp(mean) / np.exp(mean).sum()
    H = np.diag(p) - np.outer(p, p)
    S = H @ P @ H.T + H + 1e-6 * np.eye(3)  # R = diag p - p p^T + jitter
    K = np.linalg.solve(S, H @ P).T
    np.testing.assert_allclose(
        covs[0][6:9, 6:9], P - K @ S @ K.T, rtol=1e-8, atol=1e-10
    )
    np.testing.assert_allclose(covs[0][:6, :6], np.diag(np.tile(var, 2)), rtol=1e-12)
    # the predictive of token 2 (after state 0, not yet left) is the prior's softmax
    np.testing.assert_allclose(q[2], np.exp(mean) / np.exp(mean).sum(), rtol=1e-12)
    np.testing.assert_allclose(q[0], np.full(3, 1 / 3))


@pytest.mark.parametrize("alpha", [1.0, 0.25])
def test_map_refit_is_the_posterior_mode(alpha, x64):
    """The refit row maximises its log posterior: zero gradient (NumPy); alpha =
    0.25 (prior variance 17 per logit) needs the damped steps."""
    family = mk.MarkovFamily(3, alpha)
    tokens = np.array([0, 1, 0, 1, 1, 0, 2, 0, 0])
    q = np.asarray(
        markov_logits.map_refit_predictive(
            jnp.asarray(tokens), family, dtype=jnp.float64
        )
    )
    mean, var = (np.asarray(a) for a in mk.logit_prior(family, jnp.float64))
    # before the last token (after state 0): row 0 fitted on its transitions so far
    counts = np.zeros(3)
    for prev, nxt in zip(tokens[:-2], tokens[1:-1], strict=True):
        if prev == 0:
            counts[nxt] += 1
    p = q[-1]
    theta = np.log(p) - np.log(p).mean()  # the mode up to the softmax's constant
    # the constant is fixed by the prior: shift theta so the gradient vanishes
    shift = np.sum((mean - theta) / var) / np.sum(1 / var)
    theta = theta + shift
    grad = counts - counts.sum() * p - (theta - mean) / var
    np.testing.assert_allclose(grad, 0.0, atol=1e-8)


def test_tokens_to_stay_below():
    curve = np.array([0.0, 0.5, 0.1, 0.01, 0.03, 0.01, 0.0])
    assert markov_logits.tokens_to_stay_below(curve, 0.02) == 5.0
    assert np.isnan(markov_logits.tokens_to_stay_below(curve[:5], 0.02))
    assert markov_logits.tokens_to_stay_below(np.zeros(4), 0.02) == 0.0


def test_probit_predictive_uses_the_row_variances(x64):
    """softmax(m / sqrt(1 + pi var / 8)) of the current row, before and after one
    NumPy moment-matched update of that row."""
    family = mk.MarkovFamily(3, 1.0)
    tokens = jnp.asarray([2, 2, 1])
    q = np.asarray(
        markov_logits.ekf_predictive(
            tokens, family, predictive="probit", dtype=jnp.float64
        )
    )
    mean, var = (np.asarray(a) for a in mk.logit_prior(family, jnp.float64))

    def probit(m, v):
        z = m / np.sqrt(1.0 + np.pi * v / 8.0)
        return np.exp(z) / np.exp(z).sum()

    np.testing.assert_allclose(q[1], probit(mean, var), rtol=1e-12)
    P = np.diag(var)
    p = np.exp(mean) / np.exp(mean).sum()
    H = np.diag(p) - np.outer(p, p)
    S = H @ P @ H.T + H + 1e-6 * np.eye(3)
    K = np.linalg.solve(S, H @ P).T
    m1 = mean + K @ (np.eye(3)[2] - p)
    P1 = P - K @ S @ K.T
    np.testing.assert_allclose(q[2], probit(m1, np.diag(P1)), rtol=1e-8)
    plug = np.asarray(markov_logits.ekf_predictive(tokens, family, dtype=jnp.float64))
    np.testing.assert_allclose(plug[2], np.exp(m1) / np.exp(m1).sum(), rtol=1e-8)


def test_collapse_bins_against_closed_forms(result):
    """The unvisited bin: Dirichlet(1)'s trace (1 - 1/V) / (V + 1) and the prior
    Gaussian pushed through the softmax (an independent NumPy Monte Carlo)."""
    first = result.data["collapse"][0]
    assert first["visits"] == [0, 1]
    np.testing.assert_allclose(first["dirichlet_trace"], 0.75 / 5.0, rtol=1e-12)
    mean, var = (np.asarray(a, np.float64) for a in mk.logit_prior(mk.MarkovFamily(4)))
    theta = mean + np.sqrt(var) * np.random.default_rng(7).standard_normal((200_000, 4))
    p = np.exp(theta) / np.exp(theta).sum(1, keepdims=True)
    # 2048 draws in the experiment: a variance to about 3%, so 3 errors is 10%
    np.testing.assert_allclose(first["ekf_trace"], p.var(0).sum(), rtol=0.1)
    visits = [b["visits"][0] for b in result.data["collapse"]]
    assert visits == sorted(visits)
    traces = [b["dirichlet_trace"] for b in result.data["collapse"]]
    assert traces == sorted(traces, reverse=True)  # collapse with the visits
