"""The in-context regression module: prompts, the Bayes predictor, the shipped
weights and the training command."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kalmanjax.nn import icl
from tests.reference import ridge


def test_encode_interleaves_x_and_y_tokens():
    x = np.arange(6.0).reshape(3, 2)
    y = np.array([10.0, 11.0, 12.0])
    tokens = np.asarray(icl.encode(jnp.asarray(x), jnp.asarray(y)))
    assert tokens.shape == (6, 3)
    np.testing.assert_array_equal(tokens[0::2, :2], x)
    np.testing.assert_array_equal(tokens[0::2, 2], 0.0)
    np.testing.assert_array_equal(tokens[1::2, :2], 0.0)
    np.testing.assert_array_equal(tokens[1::2, 2], y)


@pytest.mark.parametrize("shifted", [False, True])
def test_bayes_predictions_are_the_ridge_posterior_predictive(shifted, x64):
    config = icl.ICLConfig(dim=3, num_pairs=8, noise_var=0.3, prior_var=2.0)
    mu = np.array([1.0, -0.5, 0.2]) if shifted else None
    _, x, y = icl.sample_prompts(
        jax.random.key(0), 1, config, weight_mean=mu, dtype=jnp.float64
    )
    x, y = x[0], y[0]
    pred, var = icl.bayes_predictions(x, y, config, mu)
    X, Y = np.asarray(x), np.asarray(y)
    for i in range(config.num_pairs):  # condition on the pairs before i
        m, S = ridge.posterior(
            X[:i], Y[:i], config.noise_var, config.prior_var * np.eye(3), mu
        )
        np.testing.assert_allclose(pred[i], X[i] @ m, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(
            var[i], X[i] @ S @ X[i] + config.noise_var, rtol=1e-10
        )


def test_shipped_weights_load_without_pickle_and_reach_the_stated_ratio():
    raw = icl.WEIGHTS.read_bytes()
    assert len(raw) < 2 * 1024**2
    assert b"pickle" not in raw and raw[:1] in (
        b"\x82",
        b"\x83",
        b"\xde",
    )  # msgpack map
    model, config, meta = icl.load_pretrained()
    assert meta["mean_ratio"] <= 1.15  # the README's claim
    res = icl.evaluate(model, config, num_prompts=2048, seed=2024)  # fresh prompts
    tol = 3.0 * np.hypot(res["mean_ratio_se"], meta["mean_ratio_se"])
    assert abs(res["mean_ratio"] - meta["mean_ratio"]) <= tol, (res, meta)
    assert np.all(np.isfinite(res["ratio"]))


@pytest.fixture
def standard_promotion():
    """optax mixes Python floats and int32 counters: not strict-promotion clean."""
    with jax.numpy_dtype_promotion("standard"):
        yield


def test_training_command_runs_end_to_end(tmp_path, capsys, standard_promotion):
    out = tmp_path / "w.msgpack"
    code = icl.main(
        ["train", "--steps", "20", "--seed", "3", "--out", str(out)]
        + ["--eval-prompts", "256"]
    )
    assert code == 0
    model, config, meta = icl.load(out)
    assert meta["steps"] == 20 and meta["seed"] == 3
    tokens = icl.encode(jnp.ones((config.num_pairs, config.dim)), jnp.ones(20))
    assert model(tokens).shape == (2 * config.num_pairs, 1)
    # the same seed gives the same weights
    again, _ = icl.train(config, steps=20, seed=3)
    np.testing.assert_array_equal(again(tokens), model(tokens))
    assert icl.main(["evaluate", "--weights", str(out), "--prompts", "64"]) == 0
    assert "mean over positions 5..20" in capsys.readouterr().out
