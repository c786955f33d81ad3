"""The whole-network adaptation experiment at smoke size: its data, figure and
verdicts, and the verdict rule against hand-made differences."""

import jax
import numpy as np
import pytest

from kalmanjax.experiments import (
    EXPERIMENTS,
    paired_difference,
    verdict_of_difference,
    whole_network,
)


@pytest.fixture(scope="module")
def result():
    # optax mixes Python floats and int32 counters: not strict-promotion clean
    with jax.numpy_dtype_promotion("standard"):
        return whole_network.run(quick=True)


def test_fields_figure_and_verdicts(result, tmp_path):
    assert EXPERIMENTS["whole_network"] is whole_network
    d = result.data
    seeds = len(result.claims[0].settings["seeds"])
    assert seeds >= 2
    for name in whole_network.METHODS + whole_network.HEAD_OPTIMIZERS:
        assert d["mean"][name].shape == d["tokens"].shape
        assert d["final"][name].shape == (seeds,)
        assert np.all(np.isfinite(d["mean"][name])) and np.all(d["se"][name] >= 0)
    # every weight of the shipped network is the state
    assert result.claims[0].settings["k_all"] > 100_000
    for key, per_seed in d["grids"].items():
        for g in per_seed:
            assert g["final_gap"][g["best_index"]] == max(g["final_gap"]), key
    for c in result.claims:
        # quick is another regime: it leaves every decision to the default run
        assert c.verdict.startswith("inconclusive"), c.verdict
        assert (
            np.isfinite(c.measured["difference"]) and c.measured["standard_error"] > 0
        )
        assert "|" not in c.claim + c.verdict
    whole_network.plot(result, tmp_path / "w.png")
    assert (tmp_path / "w.png").stat().st_size > 10_000


def test_the_verdict_rule_can_fail_and_can_be_undecided():
    win = paired_difference([0.5, 0.6, 0.55], [0.1, 0.15, 0.12])
    lose = paired_difference([0.1, 0.15, 0.12], [0.5, 0.6, 0.55])
    tie = paired_difference([0.5, 0.1, 0.3], [0.3, 0.3, 0.3])
    assert verdict_of_difference(*win, "a", "b") == "holds"
    assert verdict_of_difference(*lose, "a", "b") == "fails (b is better)"
    undecided = verdict_of_difference(*tie, "a", "b")
    assert undecided.startswith("inconclusive")
    np.testing.assert_allclose(win[0], np.mean([0.4, 0.45, 0.43]))
    np.testing.assert_allclose(win[1], np.std([0.4, 0.45, 0.43], ddof=1) / np.sqrt(3))
