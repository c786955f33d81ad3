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
        assert c.verdict == "holds" or c.verdict.startswith(("fails", "inconclusive"))
        assert c.measured and c.settings and "|" not in c.claim + c.verdict
    markov_logits.plot(result, tmp_path / "m.png")
    assert (tmp_path / "m.png").stat().st_size > 10_000


def test_ekf_on_logits_is_the_numpy_categorical_update(x64):
    """One step of the tier-A filter: only the previous state's row moves, by the
    NumPy moment-matched update of that row (tests/reference)."""
    family = mk.MarkovFamily(3, 1.0)
    tokens = jnp.asarray([2, 0, 1])
    q, covs = markov_logits.ekf_predictive(tokens, family, dtype=jnp.float64)
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


def test_map_refit_is_the_posterior_mode(x64):
    """The refit row maximises its log posterior: zero gradient (NumPy)."""
    family = mk.MarkovFamily(3, 1.0)
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
