r"""Degenerate limits of the filter, each with its measured order.

Claim 6 (docs/theory.md): gradient descent, natural gradient and meta-learning are
singular, noise-free limits of the Kalman filter. For each limit this experiment
walks the filter's parameters along a path to the limit, measures the gap to an
independent reference (``optax.sgd``, a NumPy natural-gradient recursion,
``numpy.linalg.pinv``, the sample covariance of the true task vectors), and fits the
order of convergence as the log-log slope of the gap against the path variable:

* GD: frozen :math:`\sigma^2 I`, :math:`R = rI`; relative gap to ``optax.sgd(eta)``
  against :math:`\eta|J|^2` (predicted order 1) on a nonlinear observation;
* noise-free projection: :math:`R = rI \to 0` from :math:`\Sigma_0 = I`; gap to
  :math:`X^+ y` against :math:`r/\lambda_{\min}(XX^\top)` (order 1), the collapsed
  eigenvalues of :math:`\Sigma_T` (order 1, rank :math:`d - T` in the limit), and
  what happens past :math:`T = d` on noisy tokens;
* natural gradient: the Q = 0 EKF means against online NGD (an identity: error at
  float64 round-off), and the frozen-preconditioner path to fixed-step NGD
  (order 1);
* meta-learning: MAML / Meta-SGD steps as GD-limit steps (identities), and the
  type-II ML prior covariance against the true one as the number of tasks grows
  (predicted :math:`N^{-1/2}`, at the oracle's sampling error).

Everything runs in float64 (a scoped ``jax.enable_x64``): the gaps reach 1e-8.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from .. import Gaussian
from .. import limits as kl
from .. import run as run_filter
from . import progress
from ._plot import (
    collect_handles,
    integer_ticks,
    legend_panel,
    panel_letters,
    save,
    style,
    subplots,
)
from ._result import Claim, ExperimentResult

NAME = "limits"

#: |measured slope - predicted order| allowed for a "holds" verdict
SLOPE_TOL = 0.1


def _settings(quick: bool) -> dict:
    if quick:
        return dict(
            dim=4,
            tokens=6,
            path_points=4,
            interp_dim=8,
            interp_tokens=5,
            ngd_tokens=20,
            meta_dim=3,
            meta_tokens=16,
            meta_tasks=(16, 64),
            meta_steps=200,
        )
    return dict(
        dim=8,
        tokens=16,
        path_points=7,
        interp_dim=32,
        interp_tokens=20,
        ngd_tokens=200,
        meta_dim=4,
        meta_tokens=32,
        meta_tasks=(16, 64, 256, 1024),
        meta_steps=500,
    )


def h_nonlinear(theta, u):
    """Two outputs: ``(tanh(a.theta), (b.theta)^2 / 2 + 0.3 b.theta)``."""
    a, b = u["x"][0], u["x"][1]
    return jnp.stack([jnp.tanh(a @ theta), 0.5 * (b @ theta) ** 2 + 0.3 * (b @ theta)])


def h_linear(theta, u):
    """The linear token model ``X_t theta`` with ``u["x"]`` of shape ``(p, k)``."""
    return u["x"] @ theta


def _np_nonlinear(theta, x):
    a, b = x[0], x[1]
    pred = np.array([np.tanh(a @ theta), 0.5 * (b @ theta) ** 2 + 0.3 * (b @ theta)])
    jac = np.stack([(1 - np.tanh(a @ theta) ** 2) * a, (b @ theta + 0.3) * b])
    return pred, jac


def _online_ngd_numpy(m0, xs, Sigma0, R):
    """Online natural gradient, written as an optimiser (NumPy float64)."""
    theta, acc, Rinv, out = m0.copy(), np.linalg.inv(Sigma0), np.linalg.inv(R), []
    for t in range(len(xs["obs"])):
        pred, J = _np_nonlinear(theta, xs["x"][t])
        grad = -J.T @ Rinv @ (xs["obs"][t] - pred)
        acc = acc + J.T @ Rinv @ J
        theta = theta - np.linalg.solve(acc / (t + 1), grad) / (t + 1)
        out.append(theta)
    return np.stack(out)


def _slope(x, y):
    return kl.loglog_slope(np.asarray(x), np.asarray(y))


def _verdict(ok: bool | np.bool_) -> str:
    return "holds" if ok else "fails"


def _gd(rng, s):
    k, T = s["dim"], s["tokens"]
    xs = {
        "obs": jnp.asarray(rng.normal(size=(T, 2))),
        "x": jnp.asarray(rng.normal(size=(T, 2, k)) / np.sqrt(k)),
    }
    m0 = jnp.asarray(0.2 * rng.normal(size=k))
    etas = jnp.asarray(np.logspace(-2, -5, s["path_points"]))
    p = jax.jit(lambda m, u, e: kl.gd_gap_path(h_nonlinear, m, u, e))(m0, xs, etas)
    return p, xs, m0


def _projection(rng, s):
    d, T = s["interp_dim"], s["interp_tokens"]
    X = rng.normal(size=(T, d))
    y = rng.normal(size=T)
    xs = {"obs": jnp.asarray(y[:, None]), "x": jnp.asarray(X[:, None, :])}
    prior = Gaussian(mean=jnp.zeros(d), cov=jnp.eye(d))
    rs = jnp.asarray(np.logspace(-2, -7, s["path_points"]))
    noise_free = kl.projection_filter(h_linear)

    @jax.jit
    def paths(xs, rs, xs2):
        p = kl.projection_gap_path(h_linear, prior, xs, rs)
        limit = run_filter(noise_free, prior, xs, lean=True).final
        over = run_filter(noise_free, prior, xs2, lean=True).final
        return p, limit, over

    # past T = d: d + 2 noisy tokens have no interpolant; does the noise-free
    # filter still reach something sensible (least squares)?
    X2 = rng.normal(size=(d + 2, d))
    y2 = rng.normal(size=d + 2)
    xs2 = {"obs": jnp.asarray(y2[:, None]), "x": jnp.asarray(X2[:, None, :])}
    p, limit, over = paths(xs, rs, xs2)
    pinv_err = float(np.max(np.abs(np.asarray(limit.mean) - np.linalg.pinv(X) @ y)))
    eig = np.linalg.eigvalsh(np.asarray(limit.cov))
    rank = int(np.sum(eig > 1e-8))
    lstsq = np.linalg.lstsq(X2, y2, rcond=None)[0]
    over_mean = np.asarray(over.mean)
    over_err = (
        float(np.linalg.norm(over_mean - lstsq) / np.linalg.norm(lstsq))
        if np.all(np.isfinite(over_mean))
        else float("inf")
    )
    return p, dict(pinv_err=pinv_err, rank=rank, d=d, T=T, over_err=over_err)


def _ngd(rng, s):
    k, T = s["dim"], s["ngd_tokens"]
    x = rng.normal(size=(T, 2, k)) / np.sqrt(k)
    obs = 0.5 * np.tanh(rng.normal(size=(T, 2)))
    A = rng.normal(size=(k, k))
    Sigma0 = A @ A.T / k + 0.5 * np.eye(k)
    R = np.array([[0.3, 0.1], [0.1, 0.2]])
    m0 = 0.1 * rng.normal(size=k)
    xs = {"obs": jnp.asarray(obs), "x": jnp.asarray(x)}
    B = rng.normal(size=(k, k))
    F = jnp.asarray(B @ B.T + 0.5 * np.eye(k))
    etas = jnp.asarray(np.logspace(-2, -5, s["path_points"]))
    filt = kl.natural_gradient_filter(h_nonlinear, jnp.asarray(R))
    prior = Gaussian(mean=jnp.asarray(m0), cov=jnp.asarray(Sigma0))

    @jax.jit
    def both(xs, etas):
        means = run_filter(filt, prior, xs).states.mean
        short = jax.tree_util.tree_map(lambda a: a[: s["tokens"]], xs)
        return means, kl.natural_gradient_gap_path(
            h_nonlinear, prior.mean, short, etas, F
        )

    means, p = both(xs, etas)
    ngd = _online_ngd_numpy(m0, {"obs": obs, "x": x}, Sigma0, R)
    err = np.max(np.abs(np.asarray(means) - ngd), axis=-1)
    return p, err


def _meta(rng, s):
    k, T, r = s["meta_dim"], s["meta_tokens"], 0.05
    mean = rng.normal(size=k)
    B = rng.normal(size=(k, k))
    cov = B @ B.T / k + 0.2 * np.eye(k)
    norm = np.linalg.norm(cov)
    init = kl.init_meta_params(k, dtype=jnp.float64)

    @jax.jit
    def fit(xs):
        return kl.fit_meta_prior(xs, init, steps=s["meta_steps"], learning_rate=0.05)

    rows = []
    top = max(s["meta_tasks"])
    for n in progress.track(s["meta_tasks"], "meta-learning: task counts"):
        theta = rng.multivariate_normal(mean, cov, size=n)
        x = rng.normal(size=(n, T, k))
        y = np.einsum("ntk,nk->nt", x, theta) + np.sqrt(r) * rng.normal(size=(n, T))
        # pad to the largest task count with missing (NaN) tasks: they add nothing
        # to the likelihood, and one compilation serves every N
        y = np.concatenate([y, np.full((top - n, T), np.nan)])
        x = np.concatenate([x, np.zeros((top - n, T, k))])
        res = fit({"obs": jnp.asarray(y[..., None]), "x": jnp.asarray(x)})
        est = np.asarray(res.prior.cov)
        oracle = np.cov(theta.T, bias=True)
        rows.append(
            dict(
                tasks=n,
                error=float(np.linalg.norm(est - cov) / norm),
                oracle_error=float(np.linalg.norm(oracle - cov) / norm),
                error_vs_oracle=float(np.linalg.norm(est - oracle) / norm),
                expected_sampling_error=float(
                    np.sqrt((norm**2 + np.trace(cov) ** 2) / n) / norm
                ),
                noise_var=float(res.noise_var),
            )
        )
    # MAML / Meta-SGD as GD-limit steps (identities)
    support = {
        "obs": jnp.asarray(rng.normal(size=(8, 2))),
        "x": jnp.asarray(rng.normal(size=(8, 2, k))),
    }
    m0 = jnp.asarray(0.1 * rng.normal(size=k))

    def task_loss(th):
        res = support["obs"] - jax.vmap(lambda u: h_nonlinear(th, u))(support)
        return 0.5 * jnp.sum(res**2)

    alpha = jnp.asarray(rng.uniform(0.01, 0.1, size=k))

    @jax.jit
    def identities(m0, alpha):
        g = jax.grad(task_loss)(m0)  # MAML / Meta-SGD by hand
        maml = kl.adapt(h_nonlinear, m0, support, 0.05) - (m0 - 0.05 * g)
        msgd = kl.adapt(h_nonlinear, m0, support, alpha) - (m0 - alpha * g)
        return jnp.max(jnp.abs(maml)), jnp.max(jnp.abs(msgd))

    maml_err, msgd_err = (float(v) for v in identities(m0, alpha))
    return rows, maml_err, msgd_err


def run_experiment(quick: bool = False, seed: int = 0) -> ExperimentResult:
    """Run the experiment; return the gap paths, the fitted orders and the claims."""
    s = _settings(quick)
    rng = np.random.default_rng(seed)
    settings = dict(s, seed=seed, meta_tasks=list(s["meta_tasks"]), dtype="float64")
    names = ("gradient descent", "projection", "natural gradient", "meta-learning")
    with jax.enable_x64(True), progress.stages("limits", names) as begin:
        begin("gradient descent")
        gd, _, _ = _gd(rng, s)
        begin("projection")
        proj, proj_info = _projection(rng, s)
        begin("natural gradient")
        ngd_frozen, ngd_err = _ngd(rng, s)
        begin("meta-learning")
        meta_rows, maml_err, msgd_err = _meta(rng, s)
        to_np = lambda p: jax.tree_util.tree_map(np.asarray, p._asdict())  # noqa: E731
        gd, proj, ngd_frozen = to_np(gd), to_np(proj), to_np(ngd_frozen)

    gd_slope = _slope(gd["path"], gd["relative_gap"])
    gd_abs_slope = _slope(gd["parameter"], gd["gap"])
    proj_slope = _slope(proj["path"], proj["gap"])
    T = int(proj_info["T"])
    eig_slopes = [_slope(proj["parameter"], proj["spectrum"][:, j]) for j in range(T)]
    ngd_slope = _slope(ngd_frozen["path"], ngd_frozen["relative_gap"])
    tasks = [r["tasks"] for r in meta_rows]
    errs = [r["error"] for r in meta_rows]
    meta_slope = _slope(tasks, errs)
    last = meta_rows[-1]

    gd_ok = abs(gd_slope - 1) < SLOPE_TOL and gd["relative_gap"][-1] < 1e-3
    proj_ok = (
        abs(proj_slope - 1) < SLOPE_TOL
        and max(abs(e - 1) for e in eig_slopes) < SLOPE_TOL
        and proj_info["pinv_err"] < 1e-8
        and proj_info["rank"] == proj_info["d"] - T
    )
    over_ok = proj_info["over_err"] < 1e-3
    claims = [
        Claim(
            claim="GD limit: the frozen-covariance filter (sigma^2 I, R = r I) tends "
            "to optax.sgd(eta = sigma^2 / r); relative gap of order 1 in eta |J|^2 "
            "(absolute gap order 2 in eta), nonlinear 2-output token model",
            verdict=_verdict(gd_ok),
            measured=dict(
                slope_relative_gap_vs_eta_J2=gd_slope,
                slope_gap_vs_eta=gd_abs_slope,
                smallest_relative_gap=float(gd["relative_gap"][-1]),
                smallest_path=float(gd["path"][-1]),
            ),
            settings=settings,
        ),
        Claim(
            claim="Noise-free projection: R -> 0 from Sigma_0 = I gives the "
            "minimum-norm interpolant pinv(X) y with gap of order 1 in r, and a "
            "singular covariance (rank d - T; collapsed eigenvalues ~ r)",
            verdict=_verdict(proj_ok)
            if not proj_ok or over_ok
            else "holds only when the tokens can be interpolated (T <= d here); "
            "past T = d noisy tokens have no interpolant and the noise-free filter "
            "does not reach least squares",
            measured=dict(
                slope_gap_vs_r=proj_slope,
                slopes_collapsed_eigenvalues_min=min(eig_slopes),
                slopes_collapsed_eigenvalues_max=max(eig_slopes),
                max_abs_err_noise_free_vs_pinv=proj_info["pinv_err"],
                rank_of_limit_cov=proj_info["rank"],
                d_minus_T=proj_info["d"] - T,
                rel_err_vs_lstsq_at_T_eq_d_plus_2=proj_info["over_err"],
            ),
            settings=settings,
        ),
        Claim(
            claim="Natural gradient: with Q = 0 the extended Kalman mean equals "
            "online natural gradient (Gauss-Newton F_t, step 1/t, damping "
            "Sigma_0^-1 / t) exactly; freezing the preconditioner at eta F^-1 "
            "tends to fixed-step NGD with order 1",
            verdict=_verdict(
                float(ngd_err.max()) < 1e-9 and abs(ngd_slope - 1) < SLOPE_TOL
            ),
            measured=dict(
                max_abs_err_ekf_vs_numpy_ngd=float(ngd_err.max()),
                slope_frozen_preconditioner=ngd_slope,
                smallest_relative_gap=float(ngd_frozen["relative_gap"][-1]),
            ),
            settings=settings,
        ),
        Claim(
            claim="Meta-learning: one GD-limit step from m_0 is a MAML inner step, a "
            "diagonal Sigma_0 / r is Meta-SGD's learning-rate vector (identities); "
            "type-II ML recovers the task prior covariance, error ~ N^-1/2, within "
            "2.5x the oracle sample covariance's sampling error",
            verdict=_verdict(
                maml_err < 1e-12
                and msgd_err < 1e-12
                and errs[-1] < errs[0]
                and last["error"] < 2.5 * last["expected_sampling_error"]
                and last["error_vs_oracle"] < 0.05
            ),
            measured=dict(
                maml_max_abs_err=maml_err,
                meta_sgd_max_abs_err=msgd_err,
                cov_rel_error_by_tasks={
                    r["tasks"]: round(r["error"], 4) for r in meta_rows
                },
                oracle_rel_error_by_tasks={
                    r["tasks"]: round(r["oracle_error"], 4) for r in meta_rows
                },
                slope_error_vs_tasks=meta_slope,
                error_vs_oracle_at_largest=last["error_vs_oracle"],
                expected_sampling_error_at_largest=last["expected_sampling_error"],
            ),
            settings=settings,
        ),
    ]
    data = dict(
        gd=gd,
        projection=proj,
        collapsed=T,
        ngd_identity_error=ngd_err,
        ngd_frozen=ngd_frozen,
        meta=meta_rows,
    )
    return ExperimentResult(name=NAME, data=data, claims=claims)


def plot(result: ExperimentResult, path: Path) -> None:
    """Five panels and a legend: the gap paths, the spectrum, meta-learning."""
    d = result.data
    with style():
        fig, axes = subplots(2, 3, height=4.6)
        panels = [
            (axes[0], d["gd"], "relative_gap", r"$\eta\,|J|^2$", "GD vs optax.sgd"),
            (
                axes[1],
                d["projection"],
                "gap",
                r"$r / \lambda_{\min}(XX^\top)$",
                r"$R \to 0$ vs pinv$(X)\,y$",
            ),
            (
                axes[3],
                d["ngd_frozen"],
                "relative_gap",
                r"$\eta\,|J|^2_{F^{-1}}$",
                "frozen vs fixed NGD",
            ),
        ]
        for ax, p, key, xlabel, title in panels:
            x, y = p["path"], p[key]
            ax.loglog(x, y, "o-", label="measured gap")
            ax.loglog(x, y[0] * x / x[0], "k--", lw=1, label="order 1 (slope 1)")
            ax.set_xlabel(f"distance to the limit, {xlabel}")
            ax.set_ylabel("relative gap" if key == "relative_gap" else "gap")
            ax.set_title(title)
        ax = axes[2]
        spec = np.sort(d["projection"]["spectrum"], axis=1)  # ascending
        r, n, dim = d["projection"]["parameter"], d["collapsed"], spec.shape[1]
        ax.loglog(r, spec[:, :n], color="C3", lw=1)
        ax.loglog(r, spec[:, n:], color="0.6", lw=1)
        ax.plot([], [], color="C3", label=f"collapsing (T = {n})")
        ax.plot([], [], color="0.6", label=f"unobserved (d $-$ T = {dim - n})")
        ax.set_xlabel("noise variance r")
        ax.set_ylabel(r"eigenvalue of $\Sigma_T$")
        ax.set_title(r"spectrum of $\Sigma_T$")
        ax = axes[4]
        tasks = [m["tasks"] for m in d["meta"]]
        ax.loglog(
            tasks,
            [m["error"] for m in d["meta"]],
            "o-",
            color="C2",
            label="meta-learned",
        )
        ax.loglog(
            tasks,
            [m["oracle_error"] for m in d["meta"]],
            "s--",
            color="C1",
            label="oracle",
        )
        ax.loglog(
            tasks,
            [m["expected_sampling_error"] for m in d["meta"]],
            "k:",
            label=r"$\propto N^{-1/2}$",
        )
        ax.set_xlabel("tasks N")
        ax.set_ylabel(r"relative error of $\Sigma_0$")
        ax.set_title(r"meta-learned $\Sigma_0$")
        integer_ticks(ax, "x")
        legend_panel(axes[5], *collect_handles(axes[:5]))
        panel_letters(axes[:5])
        save(fig, path)


run = run_experiment
