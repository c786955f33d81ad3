"""Token streams, tier B, at smoke size, and its pieces against NumPy."""

import jax
import numpy as np
import pytest

from kalmanjax.experiments import EXPERIMENTS, markov_transformer
from kalmanjax.experiments._probe import probe_blocks


@pytest.fixture(scope="module")
def result():
    # optax mixes Python floats and int32 counters: not strict-promotion clean
    with jax.numpy_dtype_promotion("standard"):
        return markov_transformer.run(quick=True)


def test_fields_figure_and_verdicts(result, tmp_path):
    assert EXPERIMENTS["markov_transformer"] is markov_transformer
    d = result.data
    for name in ("network", "ekf_probit", "best_fine_tuning"):
        assert np.all(np.isfinite(d["curve"][name])) and d["curve"][name][0] == 0.0
    assert len(d["r2"]) == 3 and np.all(d["r2"] <= 1.0)
    for c in result.claims:
        assert c.verdict.startswith(("holds", "fails", "inconclusive")), c.verdict
        assert c.measured and c.settings and "|" not in c.claim + c.verdict
    markov_transformer.plot(result, tmp_path / "m.png")
    assert (tmp_path / "m.png").stat().st_size > 10_000


def test_precision_target_counts_the_transitions_out_of_the_current_state():
    tokens = np.array([[0, 1, 0, 0, 2, 0, 1]])
    got = markov_transformer._precision_target(tokens, alpha=1.0, vocab=3)
    counts = []
    for t in range(tokens.shape[1]):  # transitions x_s -> x_{s+1}, s + 1 <= t
        counts.append(sum(tokens[0, s] == tokens[0, t] for s in range(t)))
    np.testing.assert_allclose(got[0], np.log(np.array(counts) + 3.0))


def test_probe_recovers_a_linear_target_with_the_noise_limited_r2():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(4000, 5))
    y = X @ np.array([1.0, -2.0, 0.5, 0.0, 1.5]) + rng.normal(size=4000)
    train = np.arange(4000) < 2000
    r2 = probe_blocks(X, y[:, None], train, 1e-6, 4)
    signal = 1.0 + 4.0 + 0.25 + 2.25
    np.testing.assert_allclose(r2.mean(), signal / (signal + 1.0), atol=0.02)
