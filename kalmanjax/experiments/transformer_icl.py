r"""Is the trained transformer's in-context learning a Kalman filter?

Theory.md, item 9. The shipped transformer was trained on in-context linear
regression (see :mod:`kalmanjax.nn.icl`); its weights are frozen. On fresh prompts
this experiment compares it with the exact Bayesian filter over the task vector
:math:`w` (the Kalman filter with :math:`H_i = x_i^\top`, computed by kalmanjax):

* per position, the network's squared error over the Bayes predictor's, against
  the observed :math:`y_i` and against the noise-free targets :math:`x_i^\top w`
  (the noise floor dilutes the first), and the correlation of their predictions;
* which estimator of a family the network is closest to: ridge on the pairs so
  far over a grid of :math:`\lambda` (the Bayes predictor is :math:`\lambda =
  \sigma^2/\tau^2`), least squares (minimum norm), and a few steps of gradient
  descent from 0 (:func:`estimator_predictions`, NumPy float64). The distance is
  the mean squared difference of predictions over positions :math:`d..n`, paired
  over prompts, so "it is the Bayes predictor" can fail to a neighbour;
* linear probes (ridge, fitted on half the prompts, scored by :math:`R^2` on the
  other half) from the residual stream at each layer to the filter's belief: read
  at the token of :math:`x_i` for the belief before :math:`y_i`, and at the token
  of :math:`y_i` for the belief after it; its mean (``d`` numbers) and its
  uncertainty :math:`\log\det\Sigma` and :math:`\operatorname{tr}\Sigma`. The
  uncertainty is mostly a function of the position, which the network knows
  trivially, so its probe is also scored *within* positions (targets and features
  centred per position): does the network carry the prompt-specific part of the
  covariance?
* an external anchor, the setting of Raventos et al. (2023): :math:`d = 8`, 16
  pairs, :math:`\sigma^2 = 0.25`, a second shipped network pretrained on a finite
  pool of :math:`M = 2^{15}` tasks (``load_pretrained("raventos")``). Its training
  distribution's Bayes predictor (dMMSE, a mixture over the pool) is not ridge;
  they found that above a task-diversity threshold the transformer matches ridge
  (the Kalman filter under the Gaussian prior) on new tasks, not dMMSE. Here: which
  of the two it is closer to, on new tasks and on pretraining tasks.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from .. import Gaussian, regression_filter
from .. import run as run_filter
from ..nn.icl import (
    discrete_bayes_predictions,
    encode,
    evaluate,
    load_pretrained,
    sample_prompts,
    task_pool,
)
from . import _transformer as T
from ._plot import (
    headroom,
    integer_ticks,
    legend_panel,
    panel_letters,
    save,
    style,
    subplots,
)
from ._probe import probe
from ._result import Claim, ExperimentResult, paired_difference, verdict_of_difference

NAME = "transformer_icl"

#: ridge penalties of the estimator family, as multiples of Bayes' sigma^2 / tau^2
RIDGE_FACTORS = (1 / 16, 1 / 4, 1 / 2, 2**-0.5, 1.0, 2**0.5, 2.0, 4.0, 16.0)
#: gradient descent from 0 on the mean squared error of the pairs so far
GD_STEPS, GD_RATES = (1, 4, 16), (0.1, 0.3)
BAYES = "ridge x1"


def _settings(quick: bool) -> dict:
    if quick:
        return dict(num_eval=128, num_probe=128, ridge=1e-2, num_anchor=128)
    return dict(num_eval=4096, num_probe=2048, ridge=1e-2, num_anchor=2048)


def _filter_beliefs(config, x, y):
    """The filter's beliefs before and after each pair.

    Returns:
        ``{"x": (means (n, d), logdet (n,), trace (n,)), "y": (...)}``: at the token
        of :math:`x_i` the belief before :math:`y_i`, at the token of :math:`y_i`
        the belief after it.
    """
    d = config.dim
    filt = regression_filter(d, config.noise_var)
    prior = Gaussian(jnp.zeros(d), config.prior_var * jnp.eye(d))
    out = run_filter(filt, prior, {"obs": y[:, None], "x": x})

    def summary(means, covs):
        return means, jnp.linalg.slogdet(covs)[1], jnp.trace(covs, axis1=1, axis2=2)

    before = summary(
        jnp.concatenate([prior.mean[None], out.states.mean[:-1]]),
        jnp.concatenate([prior.cov[None], out.states.cov[:-1]]),
    )
    return {"x": before, "y": summary(out.states.mean, out.states.cov)}


def estimator_predictions(x, y, config) -> dict[str, np.ndarray]:
    r"""Predictions of each :math:`y_i` from the pairs before it, per estimator.

    NumPy float64. ``"ridge xF"``: ridge at :math:`\lambda = F \sigma^2/\tau^2`
    (:data:`RIDGE_FACTORS`; ``x1`` is the Bayes posterior mean);
    ``"least squares"``: the minimum-norm least-squares solution; ``"gd K
    @ eta"``: ``K`` steps of gradient descent at rate ``eta`` from 0 on
    :math:`\frac{1}{2(i-1)}\sum_{j<i}(y_j - x_j^\top w)^2` (:data:`GD_STEPS`,
    :data:`GD_RATES`). With no pairs yet every estimator predicts 0.

    Args:
        x: ``(B, n, d)``.
        y: ``(B, n)``.
        config: the task family (:math:`\sigma^2`, :math:`\tau^2`).

    Returns:
        name -> predictions ``(B, n)``.
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    d = x.shape[-1]
    outer = x[..., :, None] * x[..., None, :]
    # sums over the pairs before i (exclusive prefix): (B, n, d, d) and (B, n, d)
    gram = np.cumsum(outer, axis=1) - outer
    xty = np.cumsum(x * y[..., None], axis=1) - x * y[..., None]

    def predict(w):
        return np.einsum("bnd,bnd->bn", x, w)

    lam = config.noise_var / config.prior_var
    out = {
        f"ridge x{f:.3g}": predict(
            np.linalg.solve(gram + f * lam * np.eye(d), xty[..., None])[..., 0]
        )
        for f in RIDGE_FACTORS
    }
    pinv = np.linalg.pinv(gram, rcond=1e-10, hermitian=True)
    out["least squares"] = predict(np.einsum("bnij,bnj->bni", pinv, xty))
    count = np.maximum(np.arange(x.shape[1]), 1)[None, :, None]  # pairs so far
    for eta in GD_RATES:
        w = np.zeros_like(xty)
        for k in range(1, max(GD_STEPS) + 1):
            w = w + eta * (xty - np.einsum("bnij,bnj->bni", gram, w)) / count
            if k in GD_STEPS:
                out[f"gd {k} @ {eta:g}"] = predict(w)
    return out


def _closest_estimator(net, preds, late) -> tuple[str, dict[str, float], str]:
    """The estimator nearest the network, the mean distances and the verdict.

    The verdict is on "the network is closest to the Bayes predictor".
    """
    dist = {k: ((net - v)[:, late] ** 2).mean(1) for k, v in preds.items()}
    means = {k: float(v.mean()) for k, v in dist.items()}
    closest = min(means, key=means.__getitem__)
    if closest == BAYES:
        runner = min((k for k in means if k != BAYES), key=means.__getitem__)
        diff, se = paired_difference(dist[runner], dist[BAYES])
        verdict = verdict_of_difference(diff, se, BAYES, runner)
        if verdict.startswith("inconclusive"):
            verdict = f"inconclusive (Bayes and {runner} within 2 standard errors)"
    else:
        diff, se = paired_difference(dist[BAYES], dist[closest])
        verdict = (
            f"fails (closest: {closest})"
            if diff > 2 * se
            else f"inconclusive (closest: {closest}, Bayes within 2 standard errors)"
        )
    means["difference_to_runner_up"], means["se"] = diff, se
    return closest, means, verdict


def _network_predictions(model, x, y, batch: int = 512) -> np.ndarray:
    """The network's predictions ``(B, n)``, ``batch`` prompts at a time."""
    fn = jax.jit(jax.vmap(lambda a, b: model(encode(a, b))[0::2, 0]))
    parts = [fn(x[i : i + batch], y[i : i + batch]) for i in range(0, len(x), batch)]
    return np.concatenate([np.asarray(p, np.float64) for p in parts])


def _dmmse_predictions(x, y, tasks, noise_var, batch: int = 32) -> np.ndarray:
    """:func:`~kalmanjax.nn.icl.discrete_bayes_predictions` over prompts ``(B, n)``."""
    fn = jax.jit(
        jax.vmap(lambda a, b: discrete_bayes_predictions(a, b, tasks, noise_var))
    )
    x, y = jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)
    parts = [fn(x[i : i + batch], y[i : i + batch]) for i in range(0, len(x), batch)]
    return np.concatenate([np.asarray(p, np.float64) for p in parts])


def _anchor(num: int, seed: int) -> dict:
    r"""The Raventos et al. setting: the network against ridge and dMMSE.

    On ``num`` prompts with new tasks (:math:`w \sim N(0, I)`) and ``num`` with
    tasks from the pretraining pool: per prompt, the mean squared difference (over
    positions 1..n) of the network's predictions from Bayes' ridge and from
    dMMSE, and each one's squared error against the noise-free targets.
    """
    model, config, meta = load_pretrained("raventos")
    pool = task_pool(config)
    out = dict(config=config._asdict(), train_steps=meta.get("steps"))
    for name, tasks, offset in (("new", None, 400), ("seen", pool, 500)):
        key = jax.random.key(seed + offset)
        w, x, y = (
            np.asarray(a, np.float64)
            for a in sample_prompts(key, num, config, tasks=tasks)
        )
        net = _network_predictions(
            model, jnp.asarray(x, jnp.float32), jnp.asarray(y, jnp.float32)
        )
        preds = estimator_predictions(x, y, config)
        preds["dMMSE"] = _dmmse_predictions(x, y, pool, config.noise_var)
        target = np.einsum("bnd,bd->bn", x, w)
        out[name] = dict(
            distance={k: ((net - preds[k]) ** 2).mean(1) for k in (BAYES, "dMMSE")},
            excess={
                "network": ((net - target) ** 2).mean(0),
                **{k: ((preds[k] - target) ** 2).mean(0) for k in (BAYES, "dMMSE")},
            },
            closest=_closest_estimator(net, preds, slice(None))[0],
        )
    return out


def _anchor_claim(anchor: dict, settings: dict) -> Claim:
    """Closer to ridge than to dMMSE on new tasks (their finding above threshold)."""
    measured = {}
    for name in ("new", "seen"):
        dist = anchor[name]["distance"]
        diff, se = paired_difference(dist["dMMSE"], dist[BAYES])
        measured[f"{name}_tasks"] = dict(
            distance_to_ridge=float(dist[BAYES].mean()),
            distance_to_dmmse=float(dist["dMMSE"].mean()),
            dmmse_minus_ridge=diff,
            se=se,
            closest_of_family=anchor[name]["closest"],
            excess_network=float(anchor[name]["excess"]["network"].mean()),
            excess_ridge=float(anchor[name]["excess"][BAYES].mean()),
            excess_dmmse=float(anchor[name]["excess"]["dMMSE"].mean()),
            network_over_ridge_last_position=float(
                anchor[name]["excess"]["network"][-1]
                / anchor[name]["excess"][BAYES][-1]
            ),
        )
    new = measured["new_tasks"]
    verdict = verdict_of_difference(
        new["dmmse_minus_ridge"], new["se"], "ridge", "dMMSE"
    )
    cfg = anchor["config"]
    return Claim(
        claim="External anchor, the setting of Raventos et al. 2023 (d = 8, 16 "
        "pairs, noise variance 0.25, a network pretrained on M = 2^15 tasks): on "
        "new tasks w ~ N(0, I) its predictions are closer to ridge at Bayes' "
        "lambda (the Kalman filter) than to dMMSE (Bayes for its pretraining "
        "pool), as they found above their task-diversity threshold (mean squared "
        "difference over positions 1..n, paired over prompts)",
        verdict=verdict,
        measured=measured,
        settings=dict(
            num_prompts=settings["num_anchor"],
            seed=settings["seed"],
            train_steps=anchor["train_steps"],
            **{f"anchor_{k}": v for k, v in cfg.items()},
        ),
    )


def _centre_per_position(a, positions):
    out = a.copy()
    for p in np.unique(positions):
        rows = positions == p
        out[rows] -= a[rows].mean(0)
    return out


def run_experiment(quick: bool = False, seed: int = 0) -> ExperimentResult:
    """Run the comparison and the probes; return the curves and the verdicts."""
    s = _settings(quick)
    model, config = T.load()
    res = evaluate(model, config, num_prompts=s["num_eval"], seed=seed + 100)
    x, y = T.draw(config, seed + 200, s["num_probe"])
    n, d = config.num_pairs, config.dim
    late = slice(d - 1, None)  # positions d..n: at least d - 1 pairs seen

    # noise-free targets x_i.w, and the estimator family, on fresh prompts
    w, xe, ye = (
        np.asarray(a, np.float64)
        for a in sample_prompts(jax.random.key(seed + 300), s["num_eval"], config)
    )
    net_e = _network_predictions(
        model, jnp.asarray(xe, jnp.float32), jnp.asarray(ye, jnp.float32)
    )
    preds = estimator_predictions(xe, ye, config)
    target = np.einsum("bnd,bd->bn", xe, w)
    excess = {k: (v - target) ** 2 for k, v in preds.items()}
    net_excess, bayes_mse_clean = (net_e - target) ** 2, excess[BAYES].mean(0)
    clean_ratio = net_excess.mean(0) / bayes_mse_clean
    num = net_excess - clean_ratio[None, :] * excess[BAYES]
    clean_ratio_se = num.std(0, ddof=1) / np.sqrt(len(num)) / bayes_mse_clean
    per_prompt = (net_excess[:, late] / bayes_mse_clean[None, late]).mean(1)
    clean_mean, clean_mean_se = paired_difference(per_prompt, np.zeros_like(per_prompt))
    neighbours = {
        k: float((excess[k].mean(0) / bayes_mse_clean)[late].mean())
        for k in ("ridge x0.25", "ridge x0.5", "ridge x2", "least squares")
    }
    closest, distances, closest_verdict = _closest_estimator(net_e, preds, late)

    # predictions: correlation with Bayes per position
    net_pred = jax.vmap(lambda a, b: model(encode(a, b))[0::2, 0])(x, y)
    bayes_pred = jax.vmap(lambda a, b: T.bayes_predictions(a, b, config)[0])(x, y)
    net_pred, bayes_pred = np.asarray(net_pred), np.asarray(bayes_pred)
    # at position 1 the Bayes prediction is the prior mean, a constant: no correlation
    corr = np.array(
        [np.nan]
        + [np.corrcoef(net_pred[:, i], bayes_pred[:, i])[0, 1] for i in range(1, n)]
    )

    # probes from every layer's residual stream, at the x tokens and at the y tokens
    streams = jax.vmap(lambda a, b: model.residual_streams(encode(a, b)))(x, y)
    streams = np.asarray(streams, np.float64)  # (B, layers, 2n, width)
    beliefs = jax.vmap(lambda a, b: _filter_beliefs(config, a, b))(x, y)
    B, layers = streams.shape[:2]
    positions = np.tile(np.arange(n), B)
    train = np.repeat(np.arange(B) < B // 2, n)  # split by prompt
    r2, r2_within = {}, {}
    for token, offset in (("x", 0), ("y", 1)):
        means, logdet, trace = (np.asarray(a, np.float64) for a in beliefs[token])
        # at the first x token the belief is the prior for every prompt: no variation
        varies = np.tile(np.arange(n) >= (1 if token == "x" else 0), B)
        targets = {
            "mean": means.reshape(B * n, d),
            "logdet": logdet.reshape(B * n, 1),
            "trace": trace.reshape(B * n, 1),
        }
        for name in targets:
            r2[f"{name}_{token}"] = []
        for name in ("logdet", "trace"):
            r2_within[f"{name}_{token}"] = []
        for layer in range(layers):
            feats = streams[:, layer, offset::2].reshape(B * n, -1)
            for name, target in targets.items():
                r2[f"{name}_{token}"].append(
                    probe(feats[varies], target[varies], train[varies], s["ridge"])
                )
            fc = _centre_per_position(feats[varies], positions[varies])
            for name in ("logdet", "trace"):
                tc = _centre_per_position(targets[name][varies], positions[varies])
                r2_within[f"{name}_{token}"].append(
                    probe(fc, tc, train[varies], s["ridge"])
                )
    r2 = {k: np.asarray(v) for k, v in r2.items()}
    r2_within = {k: np.asarray(v) for k, v in r2_within.items()}
    anchor = _anchor(s["num_anchor"], seed)

    best_mean = max(r2["mean_x"].max(), r2["mean_y"].max())
    best_logdet = max(r2["logdet_x"].max(), r2["logdet_y"].max())
    best_within = max(r2_within["logdet_x"].max(), r2_within["logdet_y"].max())
    settings = dict(
        s,
        seed=seed,
        ridge_factors=RIDGE_FACTORS,
        gd_steps=GD_STEPS,
        gd_rates=GD_RATES,
        **config._asdict(),
    )
    if clean_mean + 2 * clean_mean_se <= 1.15:
        clean_verdict = "holds"
    elif clean_mean - 2 * clean_mean_se > 1.15:
        clean_verdict = "fails"
    else:
        clean_verdict = "inconclusive (within 2 standard errors of 1.15)"
    claims = [
        Claim(
            claim="The frozen transformer's in-context predictions approach the "
            "Bayes-optimal (Kalman) posterior predictive: model / Bayes squared "
            "error against the noise-free targets x_i.w, averaged over positions "
            "d..n, <= 1.15",
            verdict=clean_verdict,
            measured=dict(
                mean_ratio=clean_mean,
                mean_ratio_se=clean_mean_se,
                ratio_last_position=float(clean_ratio[-1]),
                ratio_last_position_se=float(clean_ratio_se[-1]),
                **{
                    f"{k}_over_bayes".replace(" ", "_"): v
                    for k, v in neighbours.items()
                },
                noisy_targets_mean_ratio=res["mean_ratio"],
                noisy_targets_mean_ratio_se=res["mean_ratio_se"],
                min_correlation_with_bayes_late=float(corr[late].min()),
            ),
            settings=settings,
        ),
        Claim(
            claim="Of the family ridge (lambda from 1/16 to 16 times Bayes'), least "
            "squares and gradient descent (1, 4, 16 steps), the network's "
            "predictions are closest to the Bayes predictor's (mean squared "
            "difference over positions d..n, paired over prompts)",
            verdict=closest_verdict,
            measured=dict(closest=closest, **distances),
            settings=settings,
        ),
        Claim(
            claim="Its residual stream linearly encodes the filter's posterior mean "
            "(held-out probe R^2 >= 0.9 at the best layer, read at the x_i token "
            "for m_{i-1} or at the y_i token for m_i)",
            verdict="holds" if best_mean >= 0.9 else "fails",
            measured=dict(
                best_r2=best_mean,
                r2_by_layer_x_tokens=[round(float(v), 4) for v in r2["mean_x"]],
                r2_by_layer_y_tokens=[round(float(v), 4) for v in r2["mean_y"]],
            ),
            settings=settings,
        ),
        Claim(
            claim="It carries the filter's uncertainty: log det Sigma is linearly "
            "decodable (R^2 >= 0.9), including its prompt-specific part within a "
            "position (R^2 >= 0.5)",
            verdict=(
                "holds"
                if best_logdet >= 0.9 and best_within >= 0.5
                else "holds only across positions (the position encodes most of it)"
                if best_logdet >= 0.9
                else "fails"
            ),
            measured=dict(
                best_r2=best_logdet,
                best_r2_within_position=best_within,
                r2_trace_within_position=max(
                    r2_within["trace_x"].max(), r2_within["trace_y"].max()
                ),
            ),
            settings=settings,
        ),
        _anchor_claim(anchor, settings),
    ]
    data = dict(
        position=np.arange(1, n + 1),
        ratio=res["ratio"],
        ratio_se=res["ratio_se"],
        clean_ratio=clean_ratio,
        clean_ratio_se=clean_ratio_se,
        distances={
            k: v
            for k, v in distances.items()
            if k not in ("difference_to_runner_up", "se")
        },
        model_mse=res["model_mse"],
        bayes_mse=res["bayes_mse"],
        correlation=corr,
        dim=d,
        **{f"r2_{k}": v for k, v in r2.items()},
        **{f"r2_{k}_within": v for k, v in r2_within.items()},
        anchor_excess={k: anchor[k]["excess"] for k in ("new", "seen")},
    )
    return ExperimentResult(name=NAME, data=data, claims=claims)


def _estimator_label(key: str) -> str:
    """An estimator's name in words (``gd 16 @ 0.3`` -> ``GD, 16 steps at 0.3``)."""
    if key.startswith("gd "):
        steps, _, rate = key.removeprefix("gd ").partition(" @ ")
        return f"GD, {steps} steps at {rate}"
    if key.startswith("ridge x"):
        return f"ridge, penalty x{key.removeprefix('ridge x')}"
    return key


def plot(result: ExperimentResult, path: Path) -> None:
    """Error per position (model vs Bayes), the ratio, probes, estimators, anchor."""
    from matplotlib.lines import Line2D  # noqa: PLC0415  (optional dependency)

    d = result.data
    with style():
        fig, axes = subplots(2, 3, height=4.8, width_ratios=(1, 1, 1.2))
        ax = axes[0]
        ax.plot(d["position"], d["model_mse"], "o-", ms=3, label="transformer")
        ax.plot(d["position"], d["bayes_mse"], "k--", label="Bayes (Kalman)")
        ax.set_ylabel("squared error")
        ax.set_title("in-context error")
        ax.legend(loc="upper right")
        ax = axes[1]
        for key, label in (
            ("ratio", "observed y"),
            ("clean_ratio", r"noise-free $x \cdot w$"),
        ):
            ax.errorbar(
                d["position"],
                d[key],
                yerr=2 * d[f"{key}_se"],
                fmt="o-",
                ms=3,
                label=label,
            )
        ax.axhline(1.0, color="k", lw=0.8)
        ax.axhline(1.15, color="grey", lw=0.8, ls=":", label="bound 1.15")
        ax.axvline(d["dim"], color="grey", lw=0.8, ls=":")
        ax.set_ylabel("error / Bayes error")
        ax.set_title(r"transformer / Bayes ($\pm$2 s.e.)")
        headroom(ax, 0.4)
        ax.legend(loc="upper left")
        for ax in axes[:2]:
            ax.set_xlabel("position i (i - 1 pairs seen)")
            integer_ticks(ax, "x")
        ax = axes[2]
        layers = np.arange(len(d["r2_mean_x"]))
        probes = (
            ("r2_mean_{}", "C0", "o", "mean"),
            ("r2_logdet_{}", "C1", "s", r"$\log\det\Sigma$"),
            ("r2_logdet_{}_within", "C2", "^", r"$\log\det\Sigma$, per position"),
        )
        for token, ls in (("x", "-"), ("y", "--")):
            for key, colour, marker, _ in probes:
                ax.plot(layers, d[key.format(token)], marker + ls, color=colour)
        low = min(float(np.min(d[k.format(t)])) for k, *_ in probes for t in "xy")
        ax.set_ylim(min(-0.05, low - 0.05), 1.5)
        ax.set_yticks([v for v in np.arange(-1.0, 1.01, 0.25) if v >= low - 0.05])
        ax.set_xlabel("layer (last: head input)")
        ax.set_ylabel(r"held-out probe $R^2$")
        ax.set_title("linear probes")
        key = [Line2D([], [], color=c, marker=m) for _, c, m, _ in probes]
        ax.add_artist(ax.legend(key, [w for *_, w in probes], loc="upper center"))
        tokens = [Line2D([], [], color="k", ls=ls) for ls in ("-", "--")]
        ax.legend(tokens, ["at x tokens", "at y tokens"], loc="center right")
        integer_ticks(ax, "x")
        ax = axes[3]
        ridge = {
            float(k.removeprefix("ridge x")): v
            for k, v in d["distances"].items()
            if k.startswith("ridge")
        }
        factors = sorted(ridge)
        ax.loglog(factors, [ridge[f] for f in factors], "o-", label="ridge")
        others = {k: v for k, v in d["distances"].items() if not k.startswith("ridge")}
        best_other = min(others, key=others.__getitem__)
        ax.axhline(
            others[best_other],
            color="C3",
            ls="--",
            label=f"best other:\n{_estimator_label(best_other)}",
        )
        ax.axvline(1.0, color="k", lw=0.8, ls=":", label="Bayes penalty")
        ax.set_xlabel(r"ridge penalty / Bayes' $\sigma^2/\tau^2$")
        ax.set_ylabel("squared distance to the network")
        ax.set_title("which estimator is it?")
        headroom(ax, 0.45)
        ax.legend(loc="upper center")
        ax = axes[4]
        estimators = (
            ("network", "transformer", "C0"),
            (BAYES, "ridge (Bayes, Gaussian)", "k"),
            ("dMMSE", "dMMSE", "C3"),
        )
        for tasks, ls in (("new", "-"), ("seen", "--")):
            excess = d["anchor_excess"][tasks]
            pos = np.arange(1, len(excess["network"]) + 1)
            for key_, _, colour in estimators:
                ax.semilogy(pos, excess[key_], ls, color=colour)
        ax.set_xlabel("position i")
        ax.set_ylabel(r"squared error vs $x \cdot w$")
        ax.set_title(r"Raventos et al. ($M = 2^{15}$)")
        integer_ticks(ax, "x")
        handles = [Line2D([], [], color=c) for *_, c in estimators]
        handles += [Line2D([], [], color="0.5", ls=ls) for ls in ("-", "--")]
        labels = [w for _, w, _ in estimators] + ["new tasks", "seen tasks"]
        legend_panel(axes[5], handles, labels, title="key to (e)")
        panel_letters(axes[:5])
        save(fig, path)


run = run_experiment
