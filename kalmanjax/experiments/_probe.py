"""Linear probes of a network's residual stream (ridge, held-out R^2)."""

from __future__ import annotations

import numpy as np


def r2(pred: np.ndarray, target: np.ndarray) -> float:
    """Coefficient of determination, averaged over the target's columns."""
    resid = np.sum((target - pred) ** 2, axis=0)
    total = np.sum((target - target.mean(0)) ** 2, axis=0)
    return float(np.mean(1.0 - resid / total))


def probe(features, target, train, ridge: float) -> float:
    """Ridge probe fitted on the ``train`` rows; its R^2 on the others.

    ``features (n, w)``, ``target (n, m)``, ``train (n,)`` bool; the penalty is
    ``ridge * n_train`` on centred features.
    """
    return probe_blocks(features, target, train, ridge, 1)[0]


def probe_blocks(features, target, train, ridge: float, blocks: int) -> np.ndarray:
    """As :func:`probe`, scored on ``blocks`` disjoint parts of the held-out rows.

    Returns the ``(blocks,)`` R^2 values, whose spread gives a standard error.
    """
    f_mean = features[train].mean(0)
    t_mean = target[train].mean(0)
    F, Y = features - f_mean, target - t_mean
    A = F[train].T @ F[train] + ridge * len(F[train]) * np.eye(F.shape[1])
    W = np.linalg.solve(A, F[train].T @ Y[train])
    test = np.flatnonzero(~train)
    return np.asarray(
        [
            r2(F[part] @ W + t_mean, target[part])
            for part in np.array_split(test, blocks)
        ]
    )
