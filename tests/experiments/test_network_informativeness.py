"""network_informativeness at smoke size, and its information against NumPy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kalmanjax.experiments import EXPERIMENTS
from kalmanjax.experiments import network_informativeness as ni

pytest.importorskip("flax")


def test_information_is_the_log_determinant(x64):
    rng = np.random.default_rng(0)
    m, n, k, s2 = 5, 3, 4, 0.7
    J = rng.normal(size=(m, n, k))
    A = rng.normal(size=(n, n))
    R = A @ A.T + n * np.eye(n)
    steps = np.array([1, 2, 5])
    got = ni._information(jnp.asarray(J), jnp.asarray(R), s2, jnp.asarray(steps))
    for i, t in enumerate(steps):
        G = sum(J[s].T @ np.linalg.solve(R, J[s]) for s in range(t))
        want = 0.5 * np.linalg.slogdet(np.eye(k) + s2 * G)[1]
        np.testing.assert_allclose(got[i], want, rtol=1e-10)


@pytest.fixture(scope="module")
def result():
    return ni.run(quick=True)


def test_quick_run_reports_and_leaves_decisions_to_the_default(result, tmp_path):
    assert EXPERIMENTS["network_informativeness"] is ni
    d = result.data
    assert d["info_greedy"].shape == d["steps"].shape
    # information only grows as prompts are read, greedy or random
    assert np.all(np.diff(d["info_greedy"]) > 0) and np.all(
        np.diff(d["info_random"]) > 0
    )
    for c in result.claims:
        assert c.verdict.startswith("inconclusive"), c.verdict
        assert "|" not in c.claim + c.verdict
        assert np.isfinite(c.measured["difference"]) and c.measured["se"] > 0
    ni.plot(result, tmp_path / "n.png")
    assert (tmp_path / "n.png").stat().st_size > 10_000
    assert jax.tree_util.tree_leaves(d)
