r"""Covariance collapse on in-context linear regression.

The canonical testbed (:mod:`kalmanjax.experiments.testbed`): a task is a weight
vector :math:`\theta^* \sim N(0, \tau^2 I_d)`; the prompt's tokens are pairs
:math:`(x_t, y_t)` with :math:`y_t = x_t^\top \theta^* + v_t`, :math:`v_t \sim
N(0, r)`. The Kalman filter with :math:`F = I`, :math:`Q = 0`, :math:`H_t =
x_t^\top`, :math:`R = r` (:func:`kalmanjax.regression_filter`) is then the exact
posterior, its mean the Bayesian-ridge predictor with :math:`\lambda =
r/\tau^2`. This experiment measures, per token:

* :math:`\operatorname{tr}\Sigma_t` and :math:`\log\det\Sigma_t`;
* the number of collapsed directions (eigenvalues below
  :math:`(1 - 10^{-4})\tau^2`), which must be :math:`\min(t, d)`: one direction
  per scalar token until :math:`t = d` (exactly for :math:`t < d`; afterwards up
  to near-collinear prompts);
* the per-token information gain, whose sum must equal
  :math:`\tfrac12\log\det\Sigma_0 - \tfrac12\log\det\Sigma_T` when :math:`Q = 0`;
* the :math:`1/t` tail: :math:`t\,\operatorname{tr}\Sigma_t \to d\,r /
  \mathbb E[x^2] = d\,r` (no exponential contraction once :math:`t \gg d`).
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from .. import Gaussian, regression_filter
from .. import diagnostics as kd
from .. import run as run_filter
from ._plot import headroom, integer_ticks, panel_letters, save, style, subplots
from ._result import Claim, ExperimentResult
from .testbed import simulate_tasks

NAME = "collapse"


def _settings(quick: bool) -> dict:
    if quick:
        return dict(dim=4, num_tokens=64, num_tasks=16, noise_var=0.1, prior_var=1.0)
    return dict(dim=8, num_tokens=2048, num_tasks=256, noise_var=0.1, prior_var=1.0)


def run_experiment(quick: bool = False, seed: int = 0) -> ExperimentResult:
    """Run the experiment; return the per-token curves and the checked claims."""
    s = _settings(quick)
    dim, r, tau2 = s["dim"], s["noise_var"], s["prior_var"]
    theta, x, y = simulate_tasks(
        jax.random.key(seed), dim, s["num_tokens"], s["num_tasks"], r, tau2
    )
    filt = regression_filter(dim, r)
    prior = Gaussian(mean=jnp.zeros(dim), cov=tau2 * jnp.eye(dim))

    @jax.jit
    @jax.vmap
    def per_task(x_task, y_task, theta_task):
        out = run_filter(filt, prior, {"obs": y_task[:, None], "x": x_task})
        covs = out.states.cov
        eig = jnp.linalg.eigvalsh(covs)
        err = jnp.sum((out.states.mean - theta_task[None, :]) ** 2, axis=-1)
        return dict(
            trace=jnp.trace(covs, axis1=-2, axis2=-1),
            logdet=jnp.sum(jnp.log(eig), axis=-1),
            collapsed=jnp.sum(eig < (1 - 1e-4) * tau2, axis=-1),
            eigenvalues=eig,
            info_gain=out.infos.information_gain,
            sq_error=err,
        )

    res = jax.tree_util.tree_map(np.asarray, per_task(x, y, theta))
    t = np.arange(1, s["num_tokens"] + 1)
    trace = res["trace"].mean(0)
    logdet = res["logdet"].mean(0)

    expected_collapsed = np.minimum(t, dim)
    match = res["collapsed"] == expected_collapsed[None, :]
    match_fraction = float(match.mean())
    # before t = d the untouched directions keep exactly tau^2: must match always
    early_ok = bool(np.all(match[:, : dim - 1]))
    info_sum = res["info_gain"].sum(1)
    info_identity = 0.5 * (dim * np.log(tau2) - res["logdet"][:, -1])
    info_err = float(np.max(np.abs(info_sum - info_identity) / np.abs(info_identity)))
    tail = t[-1] * trace[-1]
    tail_ratio = float(tail / (dim * r))
    # exponential-vs-1/t: fit log tr Sigma_t against log t on the last half
    half = slice(len(t) // 2, None)
    tail_slope = kd.loglog_slope(t[half], trace[half])
    mse_ratio = float(res["sq_error"].mean(0)[-1] / trace[-1])

    settings = dict(s, seed=seed)
    claims = [
        Claim(
            claim="Covariance collapse: each scalar token collapses one direction of "
            "Sigma_t until t = d (number of eigenvalues below (1 - 1e-4) tau^2 = "
            "min(t, d), exactly for t < d; at t >= d a near-collinear prompt can "
            "leave a direction barely touched)",
            verdict="holds" if early_ok and match_fraction > 0.99 else "fails",
            measured=dict(
                fraction_matching=match_fraction,
                collapsed_at_t_eq_d=float(res["collapsed"][:, dim - 1].mean()),
                trace_at_0=float(dim * tau2),
                trace_at_d=float(trace[dim - 1]),
                trace_at_end=float(trace[-1]),
            ),
            settings=settings,
        ),
        Claim(
            claim="Per-token information gains sum to 1/2 log det Sigma_0 - "
            "1/2 log det Sigma_T (Q = 0)",
            verdict="holds" if info_err < 1e-3 else "fails",
            measured=dict(max_relative_error=info_err),
            settings=settings,
        ),
        Claim(
            claim="With Q = 0 the tail of tr Sigma_t is 1/t, not exponential "
            "(t tr Sigma_t -> d r, log-log slope -1)",
            verdict="holds"
            if abs(tail_ratio - 1) < 0.25 and abs(tail_slope + 1) < 0.1
            else "fails",
            measured=dict(t_trace_over_dr=tail_ratio, loglog_slope=tail_slope),
            settings=settings,
        ),
        Claim(
            claim="Calibration: mean squared error of the posterior mean equals "
            "tr Sigma_t (correct model)",
            verdict="holds" if abs(mse_ratio - 1) < 0.3 else "fails",
            measured=dict(mse_over_trace_at_end=mse_ratio),
            settings=settings,
        ),
    ]
    data = dict(
        t=t,
        trace=trace,
        logdet=logdet,
        mse=res["sq_error"].mean(0),
        eigenvalues=res["eigenvalues"][0],
        dim=dim,
        noise_var=r,
    )
    return ExperimentResult(name=NAME, data=data, claims=claims)


def plot(result: ExperimentResult, path: Path) -> None:
    """Three panels: tr Sigma_t per token, its eigenvalues, MSE vs trace."""
    d = result.data
    t, dim = d["t"], d["dim"]
    with style():
        fig, axes = subplots(1, 3, height=2.4)
        ax = axes[0]
        ax.loglog(t, d["trace"], label=r"tr $\Sigma_t$")
        ax.loglog(t, dim * d["noise_var"] / t, "k--", lw=1, label=r"$d\,r/t$")
        ax.axvline(dim, color="grey", lw=0.8, ls=":", label="$t = d$")
        ax.set_ylabel(r"posterior variance, tr $\Sigma_t$")
        ax.set_title("collapse, then 1/t")
        ax.legend()
        ax = axes[1]
        show = min(len(t), 4 * dim)
        eig = d["eigenvalues"][:show]  # ascending
        ax.semilogy(t[:show], eig[:, 1:-1], color="0.65", lw=0.8)
        ax.semilogy([], [], color="0.65", lw=0.8, label="other eigenvalues")
        ax.semilogy(t[:show], eig[:, -1], "C0", label=r"largest, $\lambda_{\max}$")
        ax.semilogy(t[:show], eig[:, 0], "C3", label=r"smallest, $\lambda_{\min}$")
        ax.axvline(dim, color="grey", lw=0.8, ls=":", label="$t = d$")
        ax.set_ylabel(r"eigenvalue of $\Sigma_t$")
        ax.set_title(r"spectrum of $\Sigma_t$ (one task)")
        headroom(ax, 0.4)
        ax.legend(loc="upper right")
        ax = axes[2]
        ax.loglog(t, d["mse"], label=r"error E$|\theta^* - m_t|^2$")
        ax.loglog(t, d["trace"], "--", label=r"tr $\Sigma_t$")
        ax.set_ylabel("squared error")
        ax.set_title("calibration")
        ax.legend(loc="lower left")
        for ax in axes:
            ax.set_xlabel("tokens t")
            integer_ticks(ax, "x")
        panel_letters(axes)
        save(fig, path)


run = run_experiment
