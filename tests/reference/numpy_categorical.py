"""The categorical (next-token) update in NumPy float64, with S formed and inverted.

No JAX here: the reference for the moment-matched update of
``kalmanjax.steps.categorical`` and of the structured forms. The logits are
``W theta + 0.3 tanh(W theta) + c``; ``V = 7`` tokens, ``K = 3`` states.
"""

import math

import numpy as np

V, K = 7, 3


def problem(rng):
    W = rng.standard_normal((V, K))
    c = rng.standard_normal(V)
    A = rng.standard_normal((K, K))
    return dict(W=W, c=c, m=rng.standard_normal(K), P=A @ A.T / K + 0.3 * np.eye(K))


def logits(theta, W, c):
    return W @ theta + 0.3 * np.tanh(W @ theta) + c


def dz(theta, W):
    return W + 0.3 * (1 - np.tanh(W @ theta) ** 2)[:, None] * W


def dense_reference(m, P, token, W, c, jitter):
    """The moment-matched Gaussian update with S formed and inverted (NumPy)."""
    z = logits(m, W, c)
    p = np.exp(z - z.max())
    p /= p.sum()
    H = (np.diag(p) - np.outer(p, p)) @ dz(m, W)
    R = np.diag(p) - np.outer(p, p) + jitter * np.eye(len(p))
    e = np.eye(len(p))[token] - p
    S = H @ P @ H.T + R
    K_gain = np.linalg.solve(S, H @ P).T
    mean = m + K_gain @ e
    cov = P - K_gain @ S @ K_gain.T
    ll = -0.5 * (
        len(p) * math.log(2 * math.pi)
        + np.linalg.slogdet(S)[1]
        + e @ np.linalg.solve(S, e)
    )
    gain = 0.5 * (np.linalg.slogdet(S)[1] - np.linalg.slogdet(R)[1])
    return mean, cov, ll, gain, e
