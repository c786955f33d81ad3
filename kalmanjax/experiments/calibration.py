r"""MSE calibration: is the filter's covariance its error?

Over many tasks :math:`\theta^* \sim N(0, \tau^2 I)`, the ratio
:math:`\rho_t = \overline{|\theta^* - m_t|^2} / \overline{\operatorname{tr}\Sigma_t}`
(:func:`kalmanjax.diagnostics.mse_calibration`, with its delta-method standard
error) is 1 when the model is right. This experiment reports it for

* the correctly specified linear filter;
* misspecified filters: the noise variance assumed 4x too small or too large, the
  prior variance 10x too small;
* duplicated demonstrations: every token shown twice with the same value, which
  the filter counts as two independent measurements;
* an extended Kalman filter (EKF) on a nonlinear observation
  :math:`y_t = \tanh(\beta\,x_t^\top\theta)/\beta + v_t` (:math:`\beta \to 0` is
  linear), for a range of nonlinearity strengths :math:`\beta`.

The EKF is :func:`kalmanjax.extended_kalman_filter` (``jax.jacfwd`` Jacobians).
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from .. import (
    Gaussian,
    LinearDynamics,
    NonlinearObservation,
    extended_kalman_filter,
    regression_filter,
)
from .. import diagnostics as kd
from .. import run as run_filter
from ._plot import headroom, integer_ticks, panel_letters, save, style, subplots
from ._result import Claim, ExperimentResult

NAME = "calibration"

#: nonlinearity strengths beta of the EKF case
BETAS = (0.1, 0.3, 1.0, 3.0)
#: |ratio - 1| the EKF may show and still count as calibrated
EKF_TOLERANCE = 0.1


def _settings(quick: bool) -> dict:
    if quick:
        return dict(dim=4, num_tokens=64, num_tasks=512, noise_var=0.01)
    return dict(dim=8, num_tokens=256, num_tasks=2048, noise_var=0.01)


def _ekf_run(prior, x_task, y_task, beta, r):
    """The EKF over one prompt (Q = 0, F = I): filtered beliefs, shape ``(T, ...)``."""
    d, dtype = x_task.shape[-1], x_task.dtype
    filt = extended_kalman_filter(
        LinearDynamics(F=jnp.eye(d, dtype=dtype), Q=jnp.zeros((d, d), dtype)),
        NonlinearObservation(
            fn=lambda theta, u: jnp.tanh(beta * (u["x"] @ theta))[None] / beta,
            R=r * jnp.eye(1, dtype=dtype),
        ),
    )
    return run_filter(filt, prior, {"obs": y_task[:, None], "x": x_task}).states


def run_experiment(quick: bool = False, seed: int = 0) -> ExperimentResult:
    """Run the experiment; return the ratio curves per case and the claims."""
    s = _settings(quick)
    dim, T, n, r = s["dim"], s["num_tokens"], s["num_tasks"], s["noise_var"]
    tau2 = 1.0 / dim  # x^T theta* ~ N(0, 1): the tanh scale means what it says
    k_th, k_x, k_v = jax.random.split(jax.random.key(seed), 3)
    theta = jnp.sqrt(tau2) * jax.random.normal(k_th, (n, dim))
    x = jax.random.normal(k_x, (n, T, dim))
    noise = jnp.sqrt(r) * jax.random.normal(k_v, (n, T))
    y = jnp.einsum("ntd,nd->nt", x, theta) + noise

    # one compiled function for every linear case (the model's r and tau^2 traced)
    @jax.jit
    def linear_batch(r_model, tau2_model, xs_x, xs_y):
        filt = regression_filter(dim, r_model)
        prior = Gaussian(mean=jnp.zeros(dim), cov=tau2_model * jnp.eye(dim))

        def per_task(x_task, y_task, theta_task):
            out = run_filter(filt, prior, {"obs": y_task[:, None], "x": x_task})
            err = jnp.sum((out.states.mean - theta_task[None, :]) ** 2, axis=-1)
            return err, kd.covariance_trace(out.states)

        return jax.vmap(per_task)(xs_x, xs_y, theta)

    def linear_case(r_model, tau2_model, xs_x, xs_y):
        return linear_batch(jnp.asarray(r_model), jnp.asarray(tau2_model), xs_x, xs_y)

    cases = {
        "correct": linear_case(r, tau2, x, y),
        "noise_assumed_r/4": linear_case(r / 4, tau2, x, y),
        "noise_assumed_4r": linear_case(4 * r, tau2, x, y),
        "prior_assumed_tau2/10": linear_case(r, tau2 / 10, x, y),
        # every token twice, same value: T filter steps over T/2 distinct tokens
        "duplicated": linear_case(
            r,
            tau2,
            jnp.repeat(x[:, : T // 2], 2, axis=1),
            jnp.repeat(y[:, : T // 2], 2, axis=1),
        ),
    }
    prior = Gaussian(mean=jnp.zeros(dim), cov=tau2 * jnp.eye(dim))

    @jax.jit
    def ekf_batch(beta):
        y_nl = jnp.tanh(beta * jnp.einsum("ntd,nd->nt", x, theta)) / beta + noise

        def per_task(x_task, y_task, theta_task):
            states = _ekf_run(prior, x_task, y_task, beta, r)
            err = jnp.sum((states.mean - theta_task[None, :]) ** 2, axis=-1)
            return err, kd.covariance_trace(states)

        return jax.vmap(per_task)(x, y_nl, theta)

    for beta in BETAS:
        cases[f"ekf_beta{beta:g}"] = ekf_batch(jnp.asarray(beta))

    cal = {}
    for name, (err, tr) in cases.items():
        c = kd.mse_calibration(err, tr)
        cal[name] = (np.asarray(c.ratio), np.asarray(c.stderr))

    checkpoints = [dim, 4 * dim, T]

    def at(name, t):
        ratio, se = cal[name]
        return float(ratio[t - 1]), float(se[t - 1])

    def z(name, t):
        ratio, se = at(name, t)
        return (ratio - 1) / se

    settings = dict(s, prior_var=tau2, seed=seed, checkpoints=checkpoints)
    z_correct = [z("correct", t) for t in checkpoints]
    claims = [
        Claim(
            claim="Correct model: E norm(theta* - m_t)^2 = E tr Sigma_t (ratio "
            "within 4 standard errors of 1 at t = d, 4d, T)",
            verdict="holds" if max(abs(v) for v in z_correct) < 4 else "fails",
            measured={
                **{f"ratio_t{t}": at("correct", t)[0] for t in checkpoints},
                **{f"stderr_t{t}": at("correct", t)[1] for t in checkpoints},
            },
            settings=settings,
        ),
    ]
    mis = {
        "noise_assumed_r/4": +1,
        "noise_assumed_4r": -1,
        "prior_assumed_tau2/10": +1,
    }
    t_mis = dim  # where the prior matters most
    directions = {name: z(name, t_mis) * sign for name, sign in mis.items()}
    claims.append(
        Claim(
            claim="Misspecification shows in the ratio: > 1 (over-confident) when R "
            "or Sigma_0 is assumed too small, < 1 when R is assumed too large "
            "(beyond 4 standard errors at t = d)",
            verdict="holds" if min(directions.values()) > 4 else "fails",
            measured={
                **{f"ratio_{k}_t{t_mis}": at(k, t_mis)[0] for k in mis},
                **{f"ratio_{k}_tT": at(k, T)[0] for k in mis},
            },
            settings=settings,
        )
    )
    dup_ratio, dup_se = at("duplicated", T)
    claims.append(
        Claim(
            claim="Duplicated demonstrations (same token, same value, shown twice) "
            "are double-counted: the filter becomes over-confident (ratio -> 2)",
            verdict="holds" if dup_ratio > 1 + 4 * dup_se else "fails",
            measured=dict(ratio_at_T=dup_ratio, stderr_at_T=dup_se),
            settings=settings,
        )
    )
    ekf_ok = {
        beta: all(
            abs(at(f"ekf_beta{beta:g}", t)[0] - 1) <= EKF_TOLERANCE for t in checkpoints
        )
        for beta in BETAS
    }
    good = [b for b, ok in ekf_ok.items() if ok]
    bad = [b for b, ok in ekf_ok.items() if not ok]
    if not bad:
        ekf_verdict = "holds"
    elif good and max(good) < min(bad):
        ekf_verdict = (
            f"holds only when the nonlinearity is mild (beta <= {max(good):g}; "
            f"miscalibrated from beta = {min(bad):g})"
        )
    else:
        ekf_verdict = "fails"
    claims.append(
        Claim(
            claim="EKF on y = tanh(beta x^T theta)/beta + v: MSE / tr Sigma_t within "
            f"{EKF_TOLERANCE:g} of 1 at t = d, 4d, T",
            verdict=ekf_verdict,
            measured={
                f"ratio_beta{b:g}_t{t}": at(f"ekf_beta{b:g}", t)[0]
                for b in BETAS
                for t in (dim, T)
            },
            settings=dict(settings, betas=list(BETAS), tolerance=EKF_TOLERANCE),
        )
    )
    data = dict(
        t=np.arange(1, T + 1),
        dim=dim,
        ratio={k: v[0] for k, v in cal.items()},
        stderr={k: v[1] for k, v in cal.items()},
        betas=np.asarray(BETAS),
        ekf_ratio_end=np.asarray([at(f"ekf_beta{b:g}", T)[0] for b in BETAS]),
        ekf_stderr_end=np.asarray([at(f"ekf_beta{b:g}", T)[1] for b in BETAS]),
    )
    return ExperimentResult(name=NAME, data=data, claims=claims)


def _case_label(key: str) -> str:
    """A case's name in words (``noise_assumed_r/4`` -> ``assumed noise r/4``)."""
    words = {
        "correct": "correct model",
        "noise_assumed_r/4": "assumed noise r/4",
        "noise_assumed_4r": "assumed noise 4r",
        "prior_assumed_tau2/10": r"assumed prior $\tau^2$/10",
        "duplicated": "each token twice",
    }
    if key.startswith("ekf_beta"):
        return rf"$\beta$ = {key.removeprefix('ekf_beta')}"
    return words.get(key, key.replace("_", " "))


def plot(result: ExperimentResult, path: Path) -> None:
    """Three panels: linear cases, EKF cases over tokens, EKF ratio vs beta."""
    d = result.data
    t = d["t"]
    with style():
        fig, axes = subplots(1, 3, height=2.7)
        for ax, keys, title in (
            (
                axes[0],
                [k for k in d["ratio"] if not k.startswith("ekf")],
                "linear filter",
            ),
            (axes[1], [k for k in d["ratio"] if k.startswith("ekf")], r"EKF, tanh"),
        ):
            for k in keys:
                ratio, se = d["ratio"][k], d["stderr"][k]
                (line,) = ax.semilogx(t, ratio, label=_case_label(k))
                ax.fill_between(
                    t, ratio - 2 * se, ratio + 2 * se, alpha=0.2, color=line.get_color()
                )
            ax.axhline(1.0, color="k", lw=0.8, ls="--")
            ax.axvline(d["dim"], color="grey", lw=0.8, ls=":")
            ax.set_yscale("log")
            ax.set_xlabel("tokens t")
            ax.set_ylabel(r"error / tr $\Sigma_t$")
            ax.set_title(f"{title} ($\\pm$2 s.e.)")
            integer_ticks(ax, "x")
        headroom(axes[0], 0.45)
        axes[0].legend(loc="upper left")
        axes[1].legend(loc="upper left", title="nonlinearity")
        ax = axes[2]
        ax.errorbar(
            d["betas"], d["ekf_ratio_end"], yerr=2 * d["ekf_stderr_end"], fmt="o-"
        )
        ax.axhline(1.0, color="k", lw=0.8, ls="--")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(r"nonlinearity $\beta$")
        ax.set_ylabel(r"error / tr $\Sigma_T$, last token")
        ax.set_title("EKF, last token")
        panel_letters(axes)
        save(fig, path)


run = run_experiment
