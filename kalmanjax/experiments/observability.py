r"""Observability: the window Gramian bounds the covariance.

In-context regression tokens :math:`H_t = x_t^\top` with :math:`F = I` and either
:math:`Q = 0` (a fixed task) or :math:`Q = qI` (a drifting task). With the window
Gramian :math:`G_{t,N} = \sum_{s=t-N+1}^{t} x_s x_s^\top / r \succeq \alpha I`
(uniform observability over :math:`N` tokens):

* :math:`Q = 0`: :math:`\Sigma_t \preceq (\Sigma_0^{-1} + G_{t,N})^{-1}`
  (:func:`kalmanjax.diagnostics.gramian_covariance_bound`);
* :math:`Q \succ 0`: :math:`\Sigma_t \preceq G^{-1} + G^{-1}(\sum_j B_j Q B_j)
  G^{-1}` (:func:`kalmanjax.diagnostics.windowed_covariance_bound`), and from
  below :math:`\Sigma_t \succeq (\Sigma_0^{-1} + G_t)^{-1}`;
* a direction no token excites (:math:`\alpha = 0`) keeps its prior variance
  :math:`\tau^2` when :math:`Q = 0` and grows as :math:`\tau^2 + t q` when
  :math:`Q = qI`.

These are theorems about the recursion: their checks test the implementation.
The claim that could fail is the mean-square-error bound (claim 3, docs/theory.md): on
data drawn from the model (:math:`\theta_0 \sim N(0, \tau^2 I)`, fixed or a
random walk with covariance :math:`qI`), the realized error
:math:`\lVert\theta_t - m_t\rVert^2` stays under the trace of the window bound,
computed from the tokens alone. An overconfident filter (it assumes noise
:math:`r / 4`) is the control that shows the check has power.

Everything runs in float64 (a scoped ``jax.enable_x64``) so that the Loewner-order
checks are not float32 rounding tests.
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
from ._result import Claim, ExperimentResult, paired_difference

NAME = "observability"


def _settings(quick: bool) -> dict:
    if quick:
        return dict(
            dim=4, num_tokens=64, num_tasks=8, window=8, noise_var=0.1,
            prior_var=1.0, process_var=1e-3,
        )  # fmt: skip
    return dict(
        dim=8, num_tokens=1024, num_tasks=64, window=16, noise_var=0.1,
        prior_var=1.0, process_var=1e-3,
    )  # fmt: skip


def _loewner_excess(a, b):
    """Return max eig(a - b) / max eig(b): <= 0 (to rounding) when a <= b."""
    top = kd.covariance_eigenvalues(a - b)[..., -1]
    return top / kd.covariance_eigenvalues(b)[..., -1]


def _compute(s: dict, seed: int) -> dict:
    dim, T, n, N = s["dim"], s["num_tokens"], s["num_tasks"], s["window"]
    r, tau2, q = s["noise_var"], s["prior_var"], s["process_var"]
    k_x, k_theta, k_walk, k_noise = jax.random.split(jax.random.key(seed), 4)
    x = jax.random.normal(k_x, (n, T, dim))
    # data from the model: a fixed task for Q = 0, a random walk for Q = qI
    theta0 = jnp.sqrt(tau2) * jax.random.normal(k_theta, (n, 1, dim))
    steps = jnp.sqrt(q) * jax.random.normal(k_walk, (n, T, dim))
    thetas = {"q0": jnp.broadcast_to(theta0, (n, T, dim))}
    thetas["q"] = theta0 + jnp.cumsum(steps, axis=1)
    noise = jnp.sqrt(r) * jax.random.normal(k_noise, (n, T))
    ys = {key: jnp.sum(x * th, axis=-1) + noise for key, th in thetas.items()}
    prior = Gaussian(mean=jnp.zeros(dim), cov=tau2 * jnp.eye(dim))
    R = r * jnp.eye(1)
    Q = q * jnp.eye(dim)
    filters = {"q0": regression_filter(dim, r), "q": regression_filter(dim, r, q)}
    overconfident = {
        "q0": regression_filter(dim, r / 4),
        "q": regression_filter(dim, r / 4, q),
    }
    # the never-excited direction: the last coordinate of every token is zero
    mask = jnp.ones(dim).at[-1].set(0.0)

    # lax.map, not vmap, over tasks: see kalmanjax.diagnostics.arrays.per_matrix
    @jax.jit
    def per_task(x, ys, thetas):
        return jax.lax.map(lambda a: one_task(*a), (x, ys, thetas))

    def one_task(x_task, ys, thetas):
        H = x_task[:, None, :]
        y_task = ys["q0"]
        outs = {
            k: run_filter(f, prior, {"obs": ys[k][:, None], "x": x_task}).states
            for k, f in filters.items()
        }
        covs = {k: st.cov for k, st in outs.items()}
        error = {k: jnp.sum((st.mean - thetas[k]) ** 2, -1) for k, st in outs.items()}
        over = {
            k: run_filter(f, prior, {"obs": ys[k][:, None], "x": x_task}).states.mean
            for k, f in overconfident.items()
        }
        over_bound = {
            "q0": kd.gramian_covariance_bound(
                prior.cov, kd.observability_gramian(H, R / 4, N)
            ),
            "q": kd.windowed_covariance_bound(H, R / 4, Q, N),
        }
        G_win = kd.observability_gramian(H, R, N)
        G_cum = kd.observability_gramian(H, R)
        upper_q0 = kd.gramian_covariance_bound(prior.cov, G_win)
        upper_q = kd.windowed_covariance_bound(H, R, Q, N)
        lower_q = kd.gramian_covariance_bound(prior.cov, G_cum)
        xs_un = {"obs": y_task[:, None], "x": x_task * mask[None, :]}
        un = {k: run_filter(f, prior, xs_un).states.cov for k, f in filters.items()}
        G_un = kd.observability_gramian(H * mask[None, None, :], R, N)
        return dict(
            alpha=kd.covariance_eigenvalues(G_win)[:, 0],
            alpha_unexcited=kd.covariance_eigenvalues(G_un)[:, 0],
            trace_q0=kd.covariance_trace(covs["q0"]),
            trace_q=kd.covariance_trace(covs["q"]),
            bound_q0=kd.covariance_trace(upper_q0),
            bound_q=kd.covariance_trace(upper_q),
            lower_q=kd.covariance_trace(lower_q),
            excess_q0=_loewner_excess(covs["q0"], upper_q0),
            excess_q=_loewner_excess(covs["q"], upper_q),
            excess_lower=_loewner_excess(lower_q, covs["q"]),
            unexcited_q0=un["q0"][:, -1, -1],
            unexcited_q=un["q"][:, -1, -1],
            excited_q0=un["q0"][:, 0, 0],
            error_q0=error["q0"],
            error_q=error["q"],
            **{
                f"over_error_{k}": jnp.sum((over[k] - thetas[k]) ** 2, -1) for k in over
            },
            **{
                f"over_bound_{k}": kd.covariance_trace(b) for k, b in over_bound.items()
            },
        )

    return jax.tree_util.tree_map(np.asarray, per_task(x, ys, thetas))


def run_experiment(quick: bool = False, seed: int = 0) -> ExperimentResult:
    """Run the experiment; return the bounds, the Gramian and the claims."""
    s = _settings(quick)
    with jax.enable_x64(True):
        res = _compute(s, seed)
    dim, T, N = s["dim"], s["num_tokens"], s["window"]
    tau2, q = s["prior_var"], s["process_var"]
    t = np.arange(1, T + 1)
    full = slice(N - 1, None)  # windows that hold N tokens
    alpha = float(res["alpha"][:, full].min())
    tol = 1e-9  # float64 rounding of the eigenvalue checks
    excess_q0 = float(res["excess_q0"].max())
    excess_q = float(res["excess_q"][:, full].max())
    excess_lower = float(res["excess_lower"].max())
    tight_q0 = float(np.median(res["trace_q0"][:, full] / res["bound_q0"][:, full]))
    tight_q = float(np.median(res["trace_q"][:, full] / res["bound_q"][:, full]))
    keep_err = float(np.max(np.abs(res["unexcited_q0"] / tau2 - 1)))
    grow_err = float(np.max(np.abs(res["unexcited_q"] / (tau2 + t * q) - 1)))
    settings = dict(s, seed=seed, dtype="float64")

    def error_over_bound(error, bound):
        """Per task, the mean over full windows of error / bound: mean and s.e."""
        per_task = np.mean(error[:, full] / bound[:, full], axis=1)
        return paired_difference(per_task, np.zeros_like(per_task))

    mse = {
        k: error_over_bound(res[f"error_{k}"], res[f"bound_{k}"]) for k in ("q0", "q")
    }
    over = {
        k: error_over_bound(res[f"over_error_{k}"], res[f"over_bound_{k}"])
        for k in ("q0", "q")
    }

    def fields(ratios) -> dict:
        out = {}
        for k, (ratio, se) in ratios.items():
            out[f"error_over_bound_{k}"], out[f"se_{k}"] = ratio, se
        return out

    def below_one(ratio, se) -> str:
        if ratio + 2 * se < 1:
            return "holds"
        return (
            "fails" if ratio - 2 * se > 1 else "inconclusive (within 2 standard errors)"
        )

    mse_verdicts = [below_one(*mse[k]) for k in ("q0", "q")]
    over_verdict = below_one(*over["q"])
    over_verdict = {"holds": "fails", "fails": "holds"}.get(over_verdict, over_verdict)
    claims = [
        Claim(
            claim="With the window Gramian G_{t,N} >= alpha I (alpha > 0) and Q = 0, "
            "Sigma_t <= (Sigma_0^-1 + G_{t,N})^-1 in the Loewner order (a theorem: "
            "this checks the implementation)",
            verdict="holds" if alpha > 0 and excess_q0 <= tol else "fails",
            measured=dict(
                alpha=alpha,
                max_relative_excess=excess_q0,
                median_trace_over_bound=tight_q0,
            ),
            settings=settings,
        ),
        Claim(
            claim="With Q = qI > 0 the covariance stays bounded: (Sigma_0^-1 + G_t)^-1 "
            "<= Sigma_t <= G^-1 + G^-1 (sum_j B_j Q B_j) G^-1 for t >= N (a theorem)",
            verdict="holds"
            if alpha > 0 and excess_q <= tol and excess_lower <= tol
            else "fails",
            measured=dict(
                alpha=alpha,
                max_relative_excess_upper=excess_q,
                max_relative_excess_lower=excess_lower,
                median_trace_over_bound=tight_q,
                trace_at_end=float(res["trace_q"][:, -1].mean()),
            ),
            settings=settings,
        ),
        Claim(
            claim="A direction no token excites (alpha = 0) keeps its prior "
            "variance tau^2 when Q = 0 and grows as tau^2 + t q when Q = qI",
            verdict="holds"
            if keep_err < 1e-9
            and grow_err < 1e-9
            and float(res["alpha_unexcited"].max()) <= 1e-9
            else "fails",
            measured=dict(
                max_relative_error_q0=keep_err,
                max_relative_error_q=grow_err,
                variance_at_end_q=float(res["unexcited_q"][:, -1].mean()),
                excited_variance_at_end_q0=float(res["excited_q0"][:, -1].mean()),
            ),
            settings=settings,
        ),
        Claim(
            claim="Mean-square-error bound: on data drawn from the model, the "
            "filter's realized error norm(theta_t - m_t)^2 stays under the trace "
            "of the window bound (per task, its mean over t >= N below 1 by 2 s.e.; "
            "Q = 0 with a fixed task, Q = qI with a random walk)",
            verdict="holds"
            if mse_verdicts == ["holds", "holds"]
            else "fails"
            if "fails" in mse_verdicts
            else "inconclusive (within 2 standard errors)",
            measured=dict(
                **fields(mse),
                median_trace_over_bound_q0=tight_q0,
                median_trace_over_bound_q=tight_q,
            ),
            settings=settings,
        ),
        Claim(
            claim="The control: a filter that assumes noise r / 4 (overconfident) "
            "breaks its own window bound under Q = qI (realized error / bound > 1 "
            "by 2 s.e.), so the bound check can fail",
            verdict=over_verdict,
            measured=fields(over),
            settings=settings,
        ),
    ]
    data = dict(
        t=t,
        window=N,
        dim=dim,
        prior_var=tau2,
        process_var=q,
        **{
            k: res[k].mean(0)
            for k in (
                "trace_q0",
                "trace_q",
                "bound_q0",
                "bound_q",
                "lower_q",
                "unexcited_q0",
                "unexcited_q",
                "excited_q0",
                "error_q0",
                "error_q",
            )
        },
        alpha_mean=res["alpha"].mean(0),
        alpha_min=res["alpha"].min(0),
    )
    return ExperimentResult(name=NAME, data=data, claims=claims)


def plot(result: ExperimentResult, path: Path) -> None:
    """Three panels: covariance vs its bounds, the Gramian's alpha, unexcited."""
    from matplotlib.lines import Line2D  # noqa: PLC0415  (optional dependency)

    d = result.data
    t, N = d["t"], d["window"]
    with style():
        fig, axes = subplots(1, 3, height=2.8)
        ax = axes[0]
        full = t >= N
        for c, q in (("C0", "q0"), ("C1", "q")):
            ax.loglog(t, d[f"trace_{q}"], c)
            ax.loglog(t[full], d[f"bound_{q}"][full], c + "--")
            ax.loglog(t, d[f"error_{q}"], c + ".", ms=1.5)
        ax.loglog(t, d["lower_q"], ":", color="grey")
        headroom(ax, 0.3)
        key = [
            (Line2D([], [], color="k"), r"tr $\Sigma_t$"),
            (Line2D([], [], color="k", ls="--"), "window bound"),
            (Line2D([], [], color="k", ls="none", marker="."), "error"),
            (Line2D([], [], color="grey", ls=":"), "lower bound"),
        ]
        ax.add_artist(ax.legend(*zip(*key, strict=True), loc="upper right"))
        colours = [Line2D([], [], color=c) for c in ("C0", "C1")]
        ax.legend(colours, ["$Q = 0$", "$Q = qI$"], loc="lower left")
        ax.set_ylabel("variance (mean over tasks)")
        ax.set_title(f"bounds, window N = {N}")
        ax = axes[1]
        ax.semilogx(t, d["alpha_mean"], label="mean over tasks")
        ax.semilogx(t, d["alpha_min"], label="min over tasks")
        ax.axvline(N, color="grey", lw=0.8, ls=":", label="$t = N$")
        ax.set_ylabel(r"$\alpha_t = \lambda_{\min}(G_{t,N})$")
        ax.set_title("excitation of the window")
        ax.legend(loc="upper left")
        ax = axes[2]
        ax.semilogx(t, d["unexcited_q0"], label="unexcited, $Q = 0$")
        ax.semilogx(t, d["unexcited_q"], label="unexcited, $Q = qI$")
        ax.semilogx(
            t,
            d["prior_var"] + t * d["process_var"],
            "k--",
            lw=1,
            label=r"$\tau^2 + tq$",
        )
        ax.semilogx(t, d["excited_q0"], label="excited, $Q = 0$")
        ax.set_ylabel("variance of the direction")
        ax.set_title("one direction")
        ax.legend(loc="center right")
        for ax in axes:
            ax.set_xlabel("tokens t")
            integer_ticks(ax, "x")
        panel_letters(axes)
        save(fig, path)


run = run_experiment
