"""kalmanjax.diagnostics.selection: greedy information-ordered tokens."""

import jax.numpy as jnp
import numpy as np

from kalmanjax import diagnostics as kd
from tests.reference import ridge


def _numpy_greedy(H, P, R, k):
    order, gains, taken = [], [], np.zeros(len(H), bool)
    for _ in range(k):
        g = np.array(
            [
                0.5 * np.linalg.slogdet(h @ P @ h.T + R)[1]
                - 0.5 * np.linalg.slogdet(R)[1]
                for h in H
            ]
        )
        g[taken] = -np.inf
        i = int(np.argmax(g))
        order.append(i)
        gains.append(g[i])
        taken[i] = True
        h = H[i]
        K = P @ h.T @ np.linalg.inv(h @ P @ h.T + R)
        P = P - K @ h @ P
    return np.array(order), np.array(gains)


def test_greedy_token_order_matches_numpy_greedy(x64, rng, variant):
    n, d = 12, 4
    H = rng.normal(size=(n, 1, d)) * rng.uniform(0.2, 2.0, size=(n, 1, 1))
    P = np.diag(rng.uniform(0.5, 2.0, size=d))
    R = 0.5 * np.eye(1)
    f = variant(kd.greedy_token_order, static_argnames="num_select")
    order, gains = f(jnp.asarray(H), jnp.asarray(P), jnp.asarray(R), num_select=8)
    ref_order, ref_gains = _numpy_greedy(H, P, R, 8)
    np.testing.assert_array_equal(order, ref_order)
    np.testing.assert_allclose(gains, ref_gains, rtol=1e-10)
    # the gains of the chosen set add up to its information (ridge closed form)
    _, cov = ridge.posterior(H[ref_order, 0, :], np.zeros(8), 0.5, P)
    total = 0.5 * (np.linalg.slogdet(P)[1] - np.linalg.slogdet(cov)[1])
    np.testing.assert_allclose(np.sum(gains), total, rtol=1e-10)
