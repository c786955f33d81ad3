"""The main job end to end in smoke mode, and its error messages."""

import json
import subprocess
import sys

import numpy as np
import pytest

from kalmanjax import cli
from kalmanjax.experiments import EXPERIMENTS, collapse
from tests.reference import ridge

assert EXPERIMENTS  # an empty table must fail, not pass vacuously


def test_quick_run_writes_every_figure_and_verdict(tmp_path):
    env = {"MPLBACKEND": "Agg", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(
        [sys.executable, "-m", "kalmanjax", "--quick", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**__import__("os").environ, **env},
    )
    assert proc.returncode == 0, proc.stderr
    for name in EXPERIMENTS:
        assert (tmp_path / f"{name}.png").stat().st_size > 10_000
    rows = json.loads((tmp_path / "results.json").read_text())
    assert {r["experiment"] for r in rows} == set(EXPERIMENTS)
    for r in rows:
        assert r["verdict"] in ("holds", "fails") or r["verdict"].startswith(
            "holds only"
        )
        assert r["measured"] and r["settings"]
    md = (tmp_path / "results.md").read_text()
    assert md.count("\n| ") == len(rows) + 2  # header, separator, one row a claim


def test_unknown_experiment_is_a_clear_error(capsys):
    with pytest.raises(SystemExit) as err:
        cli.main(["nonsense"])
    assert err.value.code == 2
    assert "unknown experiment(s) nonsense; choose from" in capsys.readouterr().err


def test_list(capsys):
    assert cli.main(["--list"]) == 0
    assert "collapse:" in capsys.readouterr().out


def test_collapse_filter_is_bayesian_ridge():
    # the experiment's filter, checked against the closed form on one task
    rng = np.random.default_rng(0)
    import jax.numpy as jnp

    import kalmanjax as kj

    X = rng.normal(size=(12, 4)).astype(np.float32)
    y = (X @ rng.normal(size=4) + 0.3 * rng.normal(size=12)).astype(np.float32)
    filt = collapse.regression_filter(4, 0.1)
    prior = kj.Gaussian(mean=jnp.zeros(4), cov=jnp.eye(4))
    out = kj.run(filt, prior, {"obs": jnp.asarray(y)[:, None], "x": jnp.asarray(X)})
    means, covs = ridge.posterior_path(X.astype(float), y.astype(float), 0.1, np.eye(4))
    np.testing.assert_allclose(out.states.mean, means, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out.states.cov, covs, rtol=1e-4, atol=1e-6)


def test_collapse_claims_on_smoke_sizes():
    res = collapse.run(quick=True)
    verdicts = {c.claim.split(":")[0]: c.verdict for c in res.claims}
    assert all(v == "holds" for v in verdicts.values()), verdicts
    t = res.data["t"]
    # 1/t tail against the closed form for E[tr Sigma_t] at large t: d r / t
    np.testing.assert_allclose(
        t[-1] * res.data["trace"][-1], res.data["dim"] * res.data["noise_var"], rtol=0.2
    )
