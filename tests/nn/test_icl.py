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


def test_discrete_bayes_predictions_are_the_posterior_mean_over_the_pool(x64):
    rng = np.random.default_rng(5)
    M, n, d, r = 9, 7, 3, 0.4
    tasks, x, y = rng.normal(size=(M, d)), rng.normal(size=(n, d)), rng.normal(size=n)
    got = icl.discrete_bayes_predictions(jnp.asarray(x), jnp.asarray(y), tasks, r)
    assert got.dtype == jnp.float64 and got.shape == (n,)
    for i in range(n):  # posterior over the pool given the pairs before i
        loglik = np.array(
            [-np.sum((y[:i] - x[:i] @ tasks[m]) ** 2) / (2 * r) for m in range(M)]
        )
        post = np.exp(loglik - loglik.max())
        post /= post.sum()
        np.testing.assert_allclose(got[i], post @ (tasks @ x[i]), rtol=1e-10)
    # a pool of one task predicts with it, whatever the data say
    one = icl.discrete_bayes_predictions(jnp.asarray(x), jnp.asarray(y), tasks[:1], r)
    np.testing.assert_allclose(one, x @ tasks[0], rtol=1e-12)


def test_a_finite_task_pool_is_fixed_by_the_config_and_sampled_by_row():
    config = icl.ICLConfig(dim=3, num_pairs=4, num_tasks=5, task_seed=7)
    pool = np.asarray(icl.task_pool(config))
    assert pool.shape == (5, 3)
    np.testing.assert_array_equal(pool, icl.task_pool(config))
    assert not np.allclose(pool, icl.task_pool(config._replace(task_seed=8)))
    w, _, _ = icl.sample_prompts(jax.random.key(1), 64, config, tasks=pool)
    rows = np.abs(np.asarray(w)[:, None, :] - pool[None]).max(-1).min(-1)
    np.testing.assert_array_equal(rows, 0.0)  # every w is a row of the pool
    assert len(np.unique(np.asarray(w)[:, 0])) > 1
    with pytest.raises(ValueError, match="num_tasks must be >= 1"):
        icl.task_pool(icl.DEFAULT_CONFIG)
    with pytest.raises(ValueError, match=r"tasks must have shape \(M, 3\)"):
        icl.sample_prompts(jax.random.key(1), 2, config, tasks=np.zeros((5, 2)))


@pytest.mark.parametrize("setting", sorted(icl.SETTINGS))
def test_shipped_weights_load_without_pickle_and_reach_the_stated_ratio(setting):
    config_expected, path = icl.SETTINGS[setting]
    raw = path.read_bytes()
    assert len(raw) < 2 * 1024**2
    assert b"pickle" not in raw and raw[:1] in (
        b"\x82",
        b"\x83",
        b"\xde",
    )  # msgpack map
    model, config, meta = icl.load_pretrained(setting)
    assert config == config_expected
    if setting == "default":
        assert meta["mean_ratio"] <= 1.15  # the README's claim
    res = icl.evaluate(model, config, num_prompts=2048, seed=2024)  # fresh prompts
    tol = 3.0 * np.hypot(res["mean_ratio_se"], meta["mean_ratio_se"])
    assert abs(res["mean_ratio"] - meta["mean_ratio"]) <= tol, (res, meta)
    assert np.all(np.isfinite(res["ratio"]))


def test_an_unknown_setting_is_named_in_the_error():
    with pytest.raises(ValueError, match="setting must be one of"):
        icl.load_pretrained("garg")


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


def test_training_on_a_task_pool_saves_its_setting(tmp_path, standard_promotion):
    out = tmp_path / "r.msgpack"
    args = ["train", "--setting", "raventos", "--steps", "20", "--out", str(out)]
    assert icl.main([*args, "--eval-prompts", "64"]) == 0
    _, config, meta = icl.load(out)
    assert config == icl.RAVENTOS_CONFIG and meta["steps"] == 20
