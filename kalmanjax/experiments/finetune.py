r"""Filtering vs fine-tuning and refits on the linear testbed.

Identical token streams :math:`(x_t, y_t)` of in-context regression tasks
(:math:`\theta^* \sim N(0, \tau^2 I)`, :math:`y_t = x_t^\top\theta^* + v_t`) are fed
one token at a time to

* the Kalman filter (:math:`F = I`, :math:`Q = 0`) in three versions: the
  *oracle* (the true :math:`r, \tau^2`: the Bayes posterior mean, which no
  estimator can beat on average), the *learned* filter (:math:`r, \tau^2` by
  marginal likelihood, gradient steps through the filter, on the first
  :data:`ML_TOKENS` tokens of separate calibration tasks) and a *misspecified*
  one (:math:`10 r`, :math:`\tau^2/10`);
* online fine-tuning from :math:`\theta_0 = 0`, one step per token on
  :math:`\tfrac12(y_t - x_t^\top\theta)^2`: constant-rate SGD, SGD at rate
  :math:`\eta/(1 + t/h)`, Polyak averaging of SGD, and Adam, each over a grid;
* refits on all tokens so far (NumPy, float64): least squares (the minimum-norm
  solution while :math:`t < d`) and ridge over a grid of :math:`\lambda` (ridge
  at :math:`\lambda = r/\tau^2` *is* the filter's mean).

Every grid (rates, horizons, :math:`\lambda`) is tuned on the calibration tasks
(fewest tokens to the threshold, then the least mean log error) and scored on
fresh test tasks. Reported: :math:`\mathbb E|\theta_t - \theta^*|^2` per token
and the tokens to :math:`\varepsilon d\tau^2`, with bootstrap standard errors
over test tasks. The verdicts are paired differences (:func:`verdict_of_difference`:
"inconclusive" within 2 s.e.).

Needs ``optax`` (an optional dependency: ``pip install optax``).
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from .. import Gaussian, regression_filter
from .. import run as run_filter
from ._baselines import ONLINE, bootstrap_se, choose, first_below, online_fit
from ._plot import (
    collect_handles,
    integer_ticks,
    panel_letters,
    pyplot,
    save,
    style,
    subplots,
)
from ._result import Claim, ExperimentResult, verdict_of_difference
from .testbed import simulate_tasks

NAME = "finetune"

EPS = 0.05
#: the misspecified filter's noise and prior variances, as multiples of the truth
MISSPECIFIED = (10.0, 0.1)
#: the sgd_1/t horizons h, as multiples of the dimension
HORIZONS = (0.25, 1.0, 4.0, 16.0, 64.0, 256.0)
DIVERGED = 10.0  # mean error above this multiple of the prior's d tau^2: diverged
#: a squared error above this has blown up: SGD past its stable rate grows
#: geometrically, and its errors, still finite, would reach the dtype's largest
#: value (3e38 in float32), so that a mean over tasks of them overflows. They are
#: recorded as inf: the run counts as diverged and no reduction sums them.
BLOWN_UP = 1e30
ML_STEPS, ML_RATE = 300, 0.05  # Adam on (log r, log tau^2) for the learned filter
#: the calibration tokens per task the marginal likelihood uses (tau^2 is learned
#: from the number of tasks, r from the tokens: a few times d suffice)
ML_TOKENS = 64


def _settings(quick: bool) -> dict:
    if quick:
        return dict(
            dim=4,
            num_tokens=48,
            num_tasks=64,
            num_calibration=32,
            noise_var=0.1,
            prior_var=1.0,
            num_rates=7,
            bootstrap=200,
        )
    return dict(
        dim=8,
        num_tokens=512,
        num_tasks=512,
        num_calibration=128,
        noise_var=0.1,
        prior_var=1.0,
        num_rates=13,
        bootstrap=400,
    )


def _grids(dim: int, n: int) -> dict[str, list[tuple[float, float]]]:
    """The (rate, horizon) of each configuration, per optimiser.

    SGD is stable below ~2 / E|x|^2 = 2 / d, and its grid runs past that.
    """
    sgd = np.geomspace(1e-3, 4.0 / dim, n)
    return {
        "sgd": [(float(a), 1.0) for a in sgd],
        "sgd_1/t": [(float(a), h * dim) for a in sgd for h in HORIZONS],
        "polyak": [(float(a), 1.0) for a in sgd],
        "adam": [(float(a), 1.0) for a in np.geomspace(1e-4, 1.0, n)],
    }


def _lambdas(n: int) -> np.ndarray:
    return np.geomspace(1e-4, 1e2, n)


def _squared_errors(estimates, theta):
    """``|theta_t - theta*|^2`` per task and token; diverged -> inf.

    Diverged: non-finite or above :data:`BLOWN_UP`.
    """
    err = jnp.sum((estimates - theta[..., None, :]) ** 2, axis=-1)
    return jnp.where(err <= BLOWN_UP, err, jnp.inf)  # NaN compares False: inf


def _online_errors(name, configs, x, y, theta):
    """Squared error ``(configs, tasks, T)`` of one online optimiser."""

    def one(lr, horizon, x_task, y_task, theta_task):
        def loss(p, u):
            return 0.5 * (u["y"] - u["x"] @ p) ** 2

        path = online_fit(
            loss,
            jnp.zeros_like(theta_task),
            {"x": x_task, "y": y_task},
            name,
            lr,
            horizon,
        )
        return _squared_errors(path, theta_task)

    per_task = jax.vmap(one, in_axes=(None, None, 0, 0, 0))
    lr, horizon = (jnp.asarray(v, x.dtype) for v in zip(*configs, strict=True))
    errors = jax.jit(jax.vmap(per_task, (0, 0, None, None, None)))
    # float64: a sum over tasks of errors up to BLOWN_UP would overflow float32
    return np.asarray(errors(lr, horizon, x, y, theta), np.float64)


def _filter_errors(noise_var, prior_var, x, y, theta):
    """Squared error ``(tasks, T)`` of the Kalman filter with these variances."""
    dim = x.shape[-1]

    @jax.jit
    @jax.vmap
    def errors(x_task, y_task, theta_task):
        filt = regression_filter(dim, noise_var)
        prior = Gaussian(mean=jnp.zeros(dim), cov=prior_var * jnp.eye(dim))
        out = run_filter(filt, prior, {"obs": y_task[:, None], "x": x_task})
        return _squared_errors(out.states.mean, theta_task)

    return np.asarray(errors(x, y, theta), np.float64)


def learn_noise_and_prior(x, y, steps: int = ML_STEPS, rate: float = ML_RATE):
    r""":math:`(r, \tau^2)` maximising the marginal likelihood of the streams.

    Adam on :math:`(\log r, \log\tau^2)` from :math:`(0, 0)`, the gradient through
    the filter's per-token log-likelihoods.

    Args:
        x: inputs ``(tasks, T, dim)``.
        y: targets ``(tasks, T)``.

        steps: the number of Adam steps.
        rate: Adam's learning rate.

    Returns:
        ``(r, tau2)`` as floats.
    """
    import optax  # noqa: PLC0415

    dim = x.shape[-1]

    def nll(log_v):
        r, tau2 = jnp.exp(log_v[0]), jnp.exp(log_v[1])

        def one(x_task, y_task):
            filt = regression_filter(dim, r)
            prior = Gaussian(mean=jnp.zeros(dim), cov=tau2 * jnp.eye(dim))
            xs = {"obs": y_task[:, None], "x": x_task}
            return run_filter(filt, prior, xs, lean=True).infos.log_likelihood.sum()

        return -jnp.mean(jax.vmap(one)(x, y)) / x.shape[1]

    opt = optax.adam(rate)

    @jax.jit
    def fit(log_v):
        def step(carry, _):
            log_v, state = carry
            updates, state = opt.update(jax.grad(nll)(log_v), state)
            return (log_v + updates, state), None

        with jax.numpy_dtype_promotion("standard"):
            return jax.lax.scan(step, (log_v, opt.init(log_v)), None, steps)[0][0]

    r, tau2 = np.exp(np.asarray(fit(jnp.zeros(2, x.dtype)), np.float64))
    return float(r), float(tau2)


def _refit_errors(x, y, theta, lambdas) -> dict[str, np.ndarray]:
    """Squared errors of the refits on the tokens so far (NumPy, float64).

    Least squares (the minimum-norm solution) ``(tasks, T)`` and ridge at each
    ``lambdas`` ``(lambdas, tasks, T)``.
    """
    x, y, theta = (np.asarray(a, np.float64) for a in (x, y, theta))
    gram = np.cumsum(x[..., :, None] * x[..., None, :], axis=1)  # (n, T, d, d)
    xty = np.cumsum(x * y[..., None], axis=1)[..., None]  # (n, T, d, 1)

    def err(est):
        return np.sum((est[..., 0] - theta[:, None, :]) ** 2, axis=-1)

    eye = np.eye(x.shape[-1])
    return dict(
        least_squares=err(np.linalg.pinv(gram, rcond=1e-10, hermitian=True) @ xty),
        ridge=np.stack(
            [err(np.linalg.solve(gram + lam * eye, xty)) for lam in lambdas]
        ),
    )


def _score(err: np.ndarray, level: float) -> tuple[float, float]:
    """Tuning score of one configuration: (tokens to ``level``, mean log error)."""
    mse = err.mean(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_log = float(np.mean(np.log(mse)))
    return first_below(mse, level), mean_log if np.isfinite(mean_log) else np.inf


def _tokens_difference(a, b, level, cap, draws, seed):
    """Tokens to ``level`` of ``b`` minus those of ``a``, and its standard error.

    ``a`` and ``b`` are errors ``(tasks, T)`` or a list of them (the best of the
    list counts); tokens of the mean curve, capped at ``cap``; the bootstrap
    standard error is over tasks.
    """

    def tokens(errs, idx):
        errs = errs if isinstance(errs, list) else [errs]
        return min(min(first_below(e[idx].mean(0), level), cap) for e in errs)

    def stat(idx):
        return tokens(b, idx) - tokens(a, idx)

    n = (a if not isinstance(a, list) else a[0]).shape[0]
    return stat(np.arange(n)), bootstrap_se(stat, n, draws, seed)


def run_experiment(quick: bool = False, seed: int = 0) -> ExperimentResult:
    """Run the experiment; return error curves, tokens-to-epsilon and the claims."""
    s = _settings(quick)
    dim, T, r, tau2 = s["dim"], s["num_tokens"], s["noise_var"], s["prior_var"]
    k_cal, k_test = jax.random.split(jax.random.key(seed))
    cal = simulate_tasks(k_cal, dim, T, s["num_calibration"], r, tau2)
    test = simulate_tasks(k_test, dim, T, s["num_tasks"], r, tau2)
    level = EPS * dim * tau2
    cap = T + 1.0
    grids, lambdas = _grids(dim, s["num_rates"]), _lambdas(s["num_rates"])

    # the filters: oracle, learned on the calibration tasks, misspecified
    r_hat, tau2_hat = learn_noise_and_prior(
        cal[1][:, :ML_TOKENS], cal[2][:, :ML_TOKENS]
    )
    variances = {
        "filter_oracle": (r, tau2),
        "filter_learned": (r_hat, tau2_hat),
        "filter_misspecified": (MISSPECIFIED[0] * r, MISSPECIFIED[1] * tau2),
    }
    err = {
        k: _filter_errors(v[0], v[1], test[1], test[2], test[0])
        for k, v in variances.items()
    }
    # online fine-tuning and the refits: every grid point on both sets of tasks
    chosen = {}
    grid_test = {}
    for name in ONLINE:
        scores = [
            _score(e, level)
            for e in _online_errors(name, grids[name], *cal[1:], cal[0])
        ]
        best, interior = choose(scores)
        if name == "sgd_1/t":  # interior in the rate and in the horizon
            rate, horizon = divmod(best, len(HORIZONS))
            interior = 0 < rate < s["num_rates"] - 1 and 0 < horizon < len(HORIZONS) - 1
        grid_test[name] = _online_errors(name, grids[name], *test[1:], test[0])
        err[name] = grid_test[name][best]
        chosen[name] = dict(config=grids[name][best], interior=interior)
    refit_cal = _refit_errors(*cal[1:], cal[0], lambdas)
    refit_test = _refit_errors(*test[1:], test[0], lambdas)
    best, interior = choose([_score(e, level) for e in refit_cal["ridge"]])
    err["ridge_refit"] = refit_test["ridge"][best]
    chosen["ridge_refit"] = dict(config=float(lambdas[best]), interior=interior)
    err["least_squares_refit"] = refit_test["least_squares"]

    mse = {k: v.mean(0) for k, v in err.items()}
    tokens = {k: min(first_below(v, level), cap) for k, v in mse.items()}
    tuned = [err[k] for k in ONLINE]
    draws = s["bootstrap"]

    def versus(a, b, better, worse, offset):
        diff, se = _tokens_difference(err[a], b, level, cap, draws, seed + offset)
        return verdict_of_difference(diff, se, better, worse), diff, se

    comparisons = {
        "fine_tuning": versus(
            "filter_learned", tuned, "the learned filter", "fine-tuning", 1
        ),
        "least_squares": versus(
            "filter_learned",
            err["least_squares_refit"],
            "the learned filter",
            "the least-squares refit",
            2,
        ),
        "ridge": versus(
            "filter_learned",
            err["ridge_refit"],
            "the learned filter",
            "the ridge refit",
            3,
        ),
        "misspecified": versus(
            "filter_misspecified", tuned, "the misspecified filter", "fine-tuning", 4
        ),
    }
    # the learned filter against every configuration of every optimiser, per token;
    # a configuration whose mean error ever exceeds DIVERGED x the prior's has
    # diverged and loses (its z, dominated by a few tasks, would say nothing)
    worst_z, diverged = np.inf, 0
    for name in ONLINE:
        stable = grid_test[name].mean(1).max(1) <= DIVERGED * dim * tau2
        diverged += int(np.sum(~stable))
        diff = grid_test[name][stable] - err["filter_learned"][None]
        sd = diff.std(1, ddof=1) / np.sqrt(diff.shape[1])
        z = diff.mean(1) / np.where(sd > 0, sd, np.nan)
        worst_z = min(worst_z, float(np.nanmin(z, initial=np.inf)))

    settings = dict(
        s,
        eps=EPS,
        seed=seed,
        misspecified=MISSPECIFIED,
        horizons=HORIZONS,
        rates={
            k: [round(c[0], 5) for c in v[:: len(HORIZONS) if k == "sgd_1/t" else 1]]
            for k, v in grids.items()
        },
        lambdas=[round(float(v), 5) for v in lambdas],
    )
    best_online = min(ONLINE, key=lambda k: tokens[k])

    def tokens_claim(key, who, against):
        verdict, diff, se = comparisons[key]
        return Claim(
            claim=f"Tokens to E norm(theta_t - theta*)^2 <= {EPS:g} d tau^2: {who} "
            f"needs fewer than {against}",
            verdict=verdict,
            measured=dict(difference=diff, se=se),
            settings=settings,
        )

    claims = [
        Claim(
            claim="Filtering beats fine-tuning at every token: the learned filter's "
            "error is at or below online SGD / SGD 1/t / Polyak / Adam at every "
            "configuration of their grids (paired difference over test tasks > -3 "
            "s.e.)",
            verdict="holds" if worst_z > -3 else "fails",
            measured=dict(
                worst_paired_z=worst_z,
                diverged_configurations=diverged,
                filter_mse_at_T=float(mse["filter_learned"][-1]),
                **{
                    f"best_{k}_mse_at_T": float(np.min(grid_test[k].mean(1)[:, -1]))
                    for k in ONLINE
                },
            ),
            settings=settings,
        ),
        tokens_claim(
            "fine_tuning",
            "the learned filter (r, tau^2 by marginal likelihood on calibration tasks)",
            "the best of SGD / SGD 1/t / Polyak / Adam, each tuned on the "
            "calibration tasks",
        ),
        tokens_claim(
            "least_squares",
            "the learned filter",
            "the least-squares refit on the tokens so far",
        ),
        tokens_claim(
            "ridge",
            "the learned filter",
            "the ridge refit (lambda tuned on the calibration tasks)",
        ),
        tokens_claim(
            "misspecified",
            f"a misspecified filter ({MISSPECIFIED[0]:g} r, {MISSPECIFIED[1]:g} tau^2)",
            "the best tuned fine-tuning",
        ),
    ]
    claims[1].measured.update(
        filter_learned=tokens["filter_learned"],
        filter_oracle=tokens["filter_oracle"],
        learned_noise_var=r_hat,
        learned_prior_var=tau2_hat,
        best_online=best_online,
        **{f"tokens_{k}": tokens[k] for k in ONLINE},
        **{f"rate_{k}": chosen[k]["config"][0] for k in ONLINE},
        horizon_sgd_1_t=chosen["sgd_1/t"]["config"][1],
        all_interior=all(c["interior"] for c in chosen.values()),
    )
    claims[2].measured.update(least_squares_refit=tokens["least_squares_refit"])
    claims[3].measured.update(
        ridge_refit=tokens["ridge_refit"], ridge_lambda=chosen["ridge_refit"]["config"]
    )
    claims[4].measured.update(filter_misspecified=tokens["filter_misspecified"])
    data = dict(
        t=np.arange(1, T + 1),
        level=level,
        mse=mse,
        tokens=tokens,
        grid_mse={k: v.mean(1) for k, v in grid_test.items() if k != "sgd_1/t"},
        grid_rates={k: [c[0] for c in grids[k]] for k in ("sgd", "polyak", "adam")},
        chosen=chosen,
        num_tokens=T,
    )
    return ExperimentResult(name=NAME, data=data, claims=claims)


#: how each method is drawn: label, colour, line style, width
_METHODS = {
    "filter_learned": ("learned filter", "k", "-", 2.0),
    "filter_oracle": ("oracle filter", "0.55", "-", 1.2),
    "filter_misspecified": ("misspecified filter", "C3", "-", 1.2),
    "sgd": ("SGD", "C0", "-.", 1.0),
    "sgd_1/t": ("SGD, 1/t rate", "C2", "-.", 1.0),
    "polyak": ("Polyak average", "C4", "-.", 1.0),
    "adam": ("Adam", "C1", "-.", 1.0),
    "ridge_refit": ("ridge refit", "C5", "--", 1.0),
    "least_squares_refit": ("least-squares refit", "C9", "--", 1.0),
}


def plot(result: ExperimentResult, path: Path) -> None:
    """Three panels: tuned error curves, the SGD grid, tokens vs learning rate."""
    from matplotlib.colors import LogNorm  # noqa: PLC0415  (optional dependency)
    from matplotlib.lines import Line2D  # noqa: PLC0415

    d = result.data
    t = d["t"]
    with style():
        fig, axes = subplots(1, 3, height=3.1)
        ax = axes[0]
        for k, v in d["mse"].items():
            label, colour, ls, lw = _METHODS.get(k, (k, None, "-", 1.0))
            ax.loglog(t, v, ls=ls, color=colour, lw=lw, label=label)
        ax.set_title("tuned methods, test tasks")
        ax = axes[1]
        rates = d["grid_rates"]["sgd"]
        norm = LogNorm(min(rates), max(rates))
        cmap = pyplot().get_cmap("viridis")
        for lr, mse in zip(rates, d["grid_mse"]["sgd"], strict=True):
            ax.loglog(t, mse, color=cmap(norm(lr)), lw=0.8)
        ax.loglog(t, d["mse"]["filter_learned"], "k", lw=2)
        bar = fig.colorbar(pyplot().cm.ScalarMappable(norm, cmap), ax=ax, pad=0.02)
        bar.set_label("SGD learning rate")
        ax.set_title("SGD, every rate")
        for ax in axes[:2]:
            ax.axhline(d["level"], color="grey", ls=":", lw=0.8)
            ax.set_ylim(
                float(np.min(d["mse"]["filter_oracle"])) / 3, 30 * d["level"] / EPS
            )
            ax.set_xlabel("tokens t")
            ax.set_ylabel(r"error E$|\theta_t - \theta^*|^2$")
            integer_ticks(ax, "x")
        ax = axes[2]
        cap = d["num_tokens"] + 1
        for k in ("sgd", "polyak", "adam"):
            tte = [min(first_below(m, d["level"]), cap) for m in d["grid_mse"][k]]
            _, colour, _, _ = _METHODS[k]
            ax.loglog(d["grid_rates"][k], tte, "o-", color=colour, ms=3)
        for k in ("filter_learned", "least_squares_refit"):
            _, colour, ls, lw = _METHODS[k]
            ax.axhline(d["tokens"][k], color=colour, ls=ls, lw=lw)
        ax.axhline(cap, color="grey", lw=0.8, ls=":")
        ax.set_xlabel("learning rate")
        ax.set_ylabel(rf"tokens to $\varepsilon d\tau^2$ (cap {cap})")
        ax.set_title("tokens vs rate")
        integer_ticks(ax, "y")
        handles, labels = collect_handles(axes[:1])
        handles.append(Line2D([], [], color="grey", ls=":", lw=0.8))
        labels.append(rf"$\varepsilon d \tau^2$ ($\varepsilon$ = {EPS:g})")
        fig.legend(handles, labels, loc="outside lower center", ncol=5)
        panel_letters(axes)
        save(fig, path)


run = run_experiment
