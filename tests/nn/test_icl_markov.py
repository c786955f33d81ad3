"""The Markov-chain token transformer: alignment, the shipped weights, the command."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kalmanjax.nn import icl_markov


def test_network_predictive_is_the_shifted_softmax():
    logits = np.random.default_rng(0).normal(size=(6, 4)).astype(np.float32)
    tokens = jnp.zeros(6, jnp.int32)
    q = np.asarray(icl_markov.network_predictive(lambda _: jnp.asarray(logits), tokens))
    np.testing.assert_allclose(q[0], np.full(4, 0.25))
    e = np.exp(logits[:-1] - logits[:-1].max(1, keepdims=True))
    np.testing.assert_allclose(q[1:], e / e.sum(1, keepdims=True), rtol=1e-6)


def test_shipped_weights_load_without_pickle_and_reach_the_stated_excess():
    raw = icl_markov.WEIGHTS.read_bytes()
    assert len(raw) < 2 * 1024**2
    assert b"pickle" not in raw and raw[:1] in (b"\x82", b"\x83", b"\xde")
    model, config, meta = icl_markov.load_pretrained()
    assert config == icl_markov.DEFAULT_CONFIG
    res = icl_markov.evaluate(model, config, num_chains=2048, seed=2024)  # fresh
    tol = 3.0 * np.hypot(res["mean_excess_se"], meta["mean_excess_se"])
    assert abs(res["mean_excess"] - meta["mean_excess"]) <= tol, (res, meta)
    assert res["excess"][0] == 0.0  # both uniform at the first token
    assert np.all(np.isfinite(res["excess"])) and res["mean_excess"] > 0


@pytest.fixture
def standard_promotion():
    """optax mixes Python floats and int32 counters: not strict-promotion clean."""
    with jax.numpy_dtype_promotion("standard"):
        yield


def test_training_command_runs_end_to_end(tmp_path, capsys, standard_promotion):
    out = tmp_path / "w.msgpack"
    code = icl_markov.main(
        ["train", "--steps", "20", "--seed", "3", "--out", str(out)]
        + ["--eval-chains", "128"]
    )
    assert code == 0
    model, config, meta = icl_markov.load(out)
    assert meta["steps"] == 20 and meta["seed"] == 3
    tokens = jnp.arange(config.length, dtype=jnp.int32) % config.vocab
    assert model(tokens).shape == (config.length, config.vocab)
    again, _ = icl_markov.train(config, steps=20, seed=3)  # the same seed
    np.testing.assert_array_equal(again(tokens), model(tokens))
    assert icl_markov.main(["evaluate", "--weights", str(out), "--chains", "64"]) == 0
    assert "mean over positions 1..127" in capsys.readouterr().out
