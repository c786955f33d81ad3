"""The experiments on the trained transformer run at smoke size and return what
their figures and verdicts need."""

import jax
import numpy as np
import pytest

from kalmanjax.experiments import transformer_finetune, transformer_icl


@pytest.fixture(scope="module")
def results():
    # optax mixes Python floats and int32 counters: not strict-promotion clean
    with jax.numpy_dtype_promotion("standard"):
        return {
            "icl": transformer_icl.run(quick=True),
            "finetune": transformer_finetune.run(quick=True),
        }


def _check_claims(result):
    assert result.claims
    for c in result.claims:
        assert c.verdict in ("holds", "fails") or c.verdict.startswith("holds only")
        assert c.measured and c.settings


def test_icl_comparison_fields(results, tmp_path):
    res = results["icl"]
    _check_claims(res)
    d = res.data
    n = len(d["position"])
    for key in ("ratio", "ratio_se", "model_mse", "bayes_mse", "correlation"):
        assert d[key].shape == (n,)
    assert np.all(d["ratio_se"] > 0) and np.all(np.isfinite(d["ratio"]))
    layers = len(d["r2_mean_x"])
    for token in ("x", "y"):
        for key in ("r2_mean", "r2_logdet", "r2_trace"):
            assert d[f"{key}_{token}"].shape == (layers,)
        for key in ("r2_logdet", "r2_trace"):
            assert d[f"{key}_{token}_within"].shape == (layers,)
    transformer_icl.plot(res, tmp_path / "a.png")
    assert (tmp_path / "a.png").stat().st_size > 10_000


def test_finetune_comparison_fields(results, tmp_path):
    res = results["finetune"]
    _check_claims(res)
    across = res.data["across"]
    assert "ekf" in across["gap"] and len(across["gap"]) > 2
    for key, gap in across["gap"].items():
        assert len(gap) == len(across["tokens"][key]) and np.all(np.isfinite(gap))
    trace = across["trace"]
    assert trace[0] <= 1.0 and np.all(np.diff(trace) <= 1e-6)  # Q = 0: it only shrinks
    for fam in ("shifted", "control"):
        w = res.data["within"][fam]
        assert w["frozen"].shape == (res.data["num_pairs"],)
        assert "ekf" in w["errors"] and len(w["errors"]) > 2
    transformer_finetune.plot(res, tmp_path / "b.png")
    assert (tmp_path / "b.png").stat().st_size > 10_000
