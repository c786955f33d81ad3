r"""Prompt informativeness on the network: prompts chosen by their information.

Theory.md, item 8, on the trained transformer, judged by prediction error. The
setting is :mod:`.transformer_finetune`'s: the frozen in-context regression
network, prompts from the shifted family :math:`w \sim N(\mu, I)`,
:math:`\lVert\mu\rVert = 2`, and a rank-:math:`k` adapter :math:`\theta` on the
output head. The head adapter is affine in :math:`\theta`, so a prompt's ``(n,
k)`` Jacobian :math:`J` does not depend on :math:`\theta` and the information a
set of prompts adds, :math:`\tfrac12\log\det(I + \Sigma_0 \sum J^\top R^{-1}
J)`, is known before any target is read.

Per seed (a new adapter basis, pool, calibration and held-out prompts):

* the noise :math:`R` (diagonal: the residual variance per position at a first
  fit, :func:`._transformer.residual_covariance`) and the prior's scale are
  learned by marginal likelihood on a calibration stream;
* a pool of ``M`` candidate prompts; **greedy** takes ``m`` of them in the order
  :func:`kalmanjax.diagnostics.greedy_token_order` picks (largest information
  first, from the Jacobians alone); **random** takes ``K`` random orders of ``m``;
* the EKF reads each order. After ``t`` prompts it is scored by the information
  it holds and by what it was not chosen for: the held-out gap closed between
  the frozen network (0) and the Bayes predictor (1).

Verdicts pair greedy with the mean of the random orders over seeds. In
``quick`` mode (``k = 8``, a small pool, 2 seeds) the decided verdicts read
"inconclusive (quick: ...)".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .. import diagnostics as kd
from . import _transformer as T
from ._plot import integer_ticks, panel_letters, save, style, subplots
from ._result import (
    Claim,
    ExperimentResult,
    paired_difference,
    quick_verdict,
    verdict_of_difference,
)

NAME = "network_informativeness"

#: multipliers of the learned noise and prior searched by marginal likelihood
NOISE_SCALES = (0.5, 1.0, 2.0)
PRIOR_SCALES = (1.0, 4.0, 16.0, 64.0)


def _settings(quick: bool) -> dict[str, Any]:
    if quick:
        return dict(
            k=8, seeds=2, pool=32, select=8, orders=4, num_heldout=64,
            num_calibration=32, shift=2.0,
        )  # fmt: skip
    return dict(
        k=64, seeds=5, pool=128, select=16, orders=16, num_heldout=512,
        num_calibration=128, shift=2.0,
    )  # fmt: skip


def _information(jacobians, R, prior_var, steps):
    r"""``0.5 log det(I + Sigma_0 sum_{s<=t} J_s^T R^-1 J_s)`` at each of ``steps``.

    Args:
        jacobians: ``(m, n, k)`` in the order read.
        R: ``(n, n)``.
        prior_var: :math:`s^2` (:math:`\Sigma_0 = s^2 I`).
        steps: ``(P,)`` prompt counts (1-based).

    Returns:
        ``(P,)`` nats.
    """
    k = jacobians.shape[-1]
    gram = jnp.einsum("mnk,nl,mlj->mkj", jacobians, jnp.linalg.inv(R), jacobians)
    gram = jnp.cumsum(gram, axis=0)[steps - 1]
    eye = jnp.eye(k, dtype=gram.dtype)
    return jax.lax.map(
        lambda g: 0.5 * jnp.linalg.slogdet(eye + prior_var * g)[1], gram
    )  # lax.map: one LAPACK call at a time on CPU


def _one_seed(s, model, config, mu, seed) -> dict[str, Any]:
    k, m = s["k"], s["select"]
    predict = T.adapted_predictions(model, k, seed=seed)
    base = 100 * seed
    px, py = T.draw(config, base + 1, 64, mu)
    s2 = T.prior_scale(predict, k, px, py)
    cx, cy = T.draw(config, base + 2, s["num_calibration"], mu)
    chx, chy = T.draw(config, base + 3, s["num_calibration"], mu)
    R = jnp.diag(jnp.diag(T.residual_covariance(predict, k, s2, cx, cy, chx, chy)))
    fit = T.fit_scales(predict, k, s2, R, NOISE_SCALES, PRIOR_SCALES, cx, cy)
    prior_var, R = fit.prior_scale * s2, fit.noise_scale * R

    x, y = T.draw(config, base + 4, s["pool"], mu)
    hx, hy = T.draw(config, base + 5, s["num_heldout"], mu)
    zero = jnp.zeros(k, y.dtype)
    jac = jax.jit(jax.vmap(lambda a, b: jax.jacfwd(predict)(zero, a, b)))(x, y)
    greedy, _ = kd.greedy_token_order(jac, prior_var * jnp.eye(k), R, m)
    keys = jax.random.split(jax.random.key(base + 6), s["orders"])
    random = jnp.stack([jax.random.permutation(key, s["pool"])[:m] for key in keys])
    orders = jnp.concatenate([greedy[None], random])  # (1 + K, m)

    steps = T.checkpoints(m)
    frozen = float(T.heldout_errors(predict, zero[None], hx, hy).mean())
    bayes = float(T.bayes_error(config, hx, hy, mu).mean())
    info, gap = [], []
    for order in orders:
        means = T.ekf_over_prompts(predict, k, prior_var, R, x[order], y[order])[0]
        err = T.heldout_errors(predict, means[steps - 1], hx, hy).mean(1)
        gap.append((frozen - err) / (frozen - bayes))
        info.append(np.asarray(_information(jac[order], R, prior_var, steps)))
    info, gap = np.stack(info), np.stack(gap)
    return dict(
        steps=steps,
        info_greedy=info[0],
        info_random=info[1:].mean(0),
        gap_greedy=gap[0],
        gap_random=gap[1:].mean(0),
        gap_random_best=gap[1:].max(0),
        noise_scale=fit.noise_scale,
        prior_scale=fit.prior_scale,
    )


def run_experiment(quick: bool = False, seed: int = 0) -> ExperimentResult:
    """Greedy vs random prompt orders on the network: information and held-out gap."""
    s = _settings(quick)
    model, config = T.load()
    mu = jnp.full((config.dim,), s["shift"] / np.sqrt(config.dim))
    runs = [_one_seed(s, model, config, mu, seed + i) for i in range(s["seeds"])]
    steps = runs[0]["steps"]
    settings = dict(
        s,
        site=T.SITE,
        seed=seed,
        noise_scales=list(NOISE_SCALES),
        prior_scales=list(PRIOR_SCALES),
    )

    def stack(key):
        return np.stack([r[key] for r in runs])

    def qualify(verdict: str) -> str:
        return quick_verdict(verdict, quick, f"{s['seeds']} seeds, k = {s['k']}")

    def at(t):  # the checkpoint index of t prompts
        return int(np.flatnonzero(steps == t)[0])

    early, last = at(min(4, s["select"])), len(steps) - 1
    claims = []
    for kind, text in (
        (
            "info",
            "Choosing prompts greedily by the information their Jacobians add "
            "(before any target is read) gives the filter more information after "
            "{t} prompts than random prompts from the same pool",
        ),
        (
            "gap",
            "... and a lower held-out prediction error (more of the frozen-to-Bayes "
            "gap closed) after {t} prompts than random prompts",
        ),
    ):
        for col in (early, last):
            diff, se = paired_difference(
                stack(f"{kind}_greedy")[:, col], stack(f"{kind}_random")[:, col]
            )
            measured = dict(
                greedy=float(stack(f"{kind}_greedy")[:, col].mean()),
                random=float(stack(f"{kind}_random")[:, col].mean()),
                difference=diff,
                se=se,
            )
            if kind == "gap":
                measured["best_random_order"] = float(
                    stack("gap_random_best")[:, col].mean()
                )
            claims.append(
                Claim(
                    claim=text.format(t=int(steps[col])),
                    verdict=qualify(
                        verdict_of_difference(diff, se, "greedy", "random")
                    ),
                    measured=measured,
                    settings=dict(
                        settings,
                        learned_noise_scales=[r["noise_scale"] for r in runs],
                        learned_prior_scales=[r["prior_scale"] for r in runs],
                    ),
                )
            )
    data = dict(
        steps=steps,
        num_pairs=config.num_pairs,
        **{
            key: stack(key).mean(0)
            for key in ("info_greedy", "info_random", "gap_greedy", "gap_random")
        },
        gap_se={
            key: stack(key).std(0, ddof=1) / np.sqrt(len(runs))
            for key in ("gap_greedy", "gap_random")
        },
    )
    return ExperimentResult(name=NAME, data=data, claims=claims)


def plot(result: ExperimentResult, path: Path) -> None:
    """Information and held-out gap closed against prompts read, greedy vs random."""
    d = result.data
    with style():
        fig, (a, b) = subplots(1, 2, height=2.5)
        for name, fmt in (("greedy", "k-"), ("random", "C0--")):
            a.plot(d["steps"], d[f"info_{name}"], fmt, marker="o", label=name)
            b.errorbar(
                d["steps"],
                d[f"gap_{name}"],
                yerr=2 * d["gap_se"][f"gap_{name}"],
                fmt=fmt,
                marker="o",
                capsize=2,
                label=name,
            )
        a.set_ylabel("information (nats)")
        a.set_title("information of the chosen prompts")
        a.legend(loc="upper left")
        b.set_ylabel("held-out gap closed: frozen 0, Bayes 1")
        b.set_title(r"what it was not chosen for ($\pm$2 s.e.)")
        b.legend(loc="lower right")
        for ax in (a, b):
            ax.set_xscale("log", base=2)
            ax.set_xlabel("prompts read")
            integer_ticks(ax, "x")
        panel_letters((a, b))
        save(fig, path)


run = run_experiment
