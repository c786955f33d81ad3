r"""Filtering every weight vs a small adapter vs fine-tuning, under a shift.

The frozen in-context regression transformer (:mod:`kalmanjax.nn.icl`, trained on
tasks :math:`w \sim N(0, I)`) meets prompts from a *shifted* family,
:math:`w \sim N(\mu, I)` with :math:`\lVert\mu\rVert = 2` (as in
:mod:`.transformer_finetune`). A stream of prompts is seen one at a time (one
observation per prompt: its ``n`` predictions, observation noise the Bayes
predictive variance), and the network is adapted by:

* ``low_rank``: the low-rank EKF (:func:`kalmanjax.low_rank_filter`, rank ``r``)
  over **every weight** (:class:`~kalmanjax.nn.WeightAdapter`, :math:`k = 153153`);
* ``diagonal``: the diagonal EKF over every weight;
* ``dense_head``: the dense (square-root) EKF over a ``k = 64`` low-rank adapter on
  the output head;
* ``sgd_all`` / ``adam_all``: optax SGD and Adam on the same squared error, one
  step per prompt, over every weight, and ``sgd_head`` / ``adam_head`` over the
  head adapter, each at the best learning rate of a grid (picked by the held-out
  error at the end of the stream: an oracle choice that favours fine-tuning).

The priors are isotropic, :math:`s^2 = n / \operatorname{E}\lVert J\rVert_F^2` per
coordinate (the predicted output variance ~1; ``J`` the Jacobian of a prompt's
predictions at the base weights, on prompts outside the stream and the held-out
set); learning rates are quoted in the same units (SGD ``c s^2 n / 2``, Adam
``c s``). Reported: held-out error against prompts seen, as the fraction of the
frozen-to-Bayes gap closed, for ``seeds`` independent streams and held-out sets
(mean and standard error across seeds); the verdicts compare paired differences
with twice their standard error and say "inconclusive" inside it. In ``quick``
mode (rank 4, 8 prompts: another regime) a decided verdict reads "inconclusive
(quick: ...)", with the verdict it points to.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .. import (
    DiagonalDynamics,
    DiagonalGaussian,
    NonlinearObservation,
    diagonal_filter,
    low_rank_filter,
)
from . import _transformer as T
from . import progress
from ._plot import COLUMN, integer_ticks, save, style, subplots
from ._result import (
    Claim,
    ExperimentResult,
    paired_difference,
    quick_verdict,
    verdict_of_difference,
)

NAME = "whole_network"

#: learning-rate multipliers (SGD: c * s^2 * n / 2; Adam: c * s)
SGD_GRID = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
ADAM_GRID = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
METHODS = ("low_rank", "diagonal", "dense_head", "sgd_all", "adam_all")
HEAD_OPTIMIZERS = ("sgd_head", "adam_head")


def _settings(quick: bool) -> dict[str, Any]:
    if quick:
        return dict(
            rank=4,
            head_k=8,
            num_stream=8,
            num_heldout=32,
            num_scale=8,
            seeds=2,
            sgd_grid=SGD_GRID[2::2],
            adam_grid=ADAM_GRID[2::2],
            shift=2.0,
        )
    return dict(
        rank=10,
        head_k=64,
        num_stream=256,
        num_heldout=512,
        num_scale=32,
        seeds=3,
        sgd_grid=SGD_GRID,
        adam_grid=ADAM_GRID,
        shift=2.0,
    )


def weight_predictions(model):
    """``(predict, k)``: the network with every weight offset by ``theta``."""
    from ..nn import WeightAdapter, observation_fn  # noqa: PLC0415
    from ..nn.icl import network_predictions  # noqa: PLC0415

    adapter = WeightAdapter(model)
    fn = observation_fn(model, adapter)

    def predict(theta, x, y):
        return network_predictions(lambda tokens: fn(theta, tokens), x, y)

    return predict, adapter.dim


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _filter_checkpoints(predict, kind, rank, s2, noise, x, y, steps):
    """The filter's mean after each of ``steps`` prompts (``(C, k)``)."""
    k = s2.shape[0]
    obs = NonlinearObservation(
        fn=lambda th, u: predict(th, u["x"], u["y"]), R=jnp.diag(noise)
    )
    static = DiagonalDynamics(F=jnp.asarray(1.0), Q=jnp.asarray(0.0))
    if kind == "diagonal":
        filt = diagonal_filter(static, obs)
    else:
        filt = low_rank_filter(static, obs, rank=rank)
    belief = filt.init(DiagonalGaussian(jnp.zeros(k), s2))

    def body(carry, inputs):
        belief, saved, i = carry
        belief, _ = filt.step(belief, {"obs": inputs["y"]} | inputs)
        hit = jnp.argmax(steps == i + 1)
        keep = jnp.any(steps == i + 1)
        saved = jnp.where(keep, saved.at[hit].set(belief.mean), saved)
        return (belief, saved, i + 1), None

    saved = jnp.zeros((steps.shape[0], k))
    carry = (belief, saved, jnp.asarray(0))
    return jax.lax.scan(body, carry, {"x": x, "y": y})[0][1]


def _optimizer_checkpoints(predict, k, transform, lrs, x, y, steps):
    """Fine-tuned theta after each of ``steps`` prompts, per rate: ``(L, C, k)``."""

    def loss(theta, a, b):
        return jnp.mean((predict(theta, a, b) - b) ** 2)

    def path(lr):
        def body(carry, batch):
            theta, state, saved, i = carry
            direction, state = transform.update(jax.grad(loss)(theta, *batch), state)
            theta = theta - lr * direction
            keep, hit = jnp.any(steps == i + 1), jnp.argmax(steps == i + 1)
            saved = jnp.where(keep, saved.at[hit].set(theta), saved)
            return (theta, state, saved, i + 1), None

        theta0 = jnp.zeros(k)
        saved = jnp.zeros((steps.shape[0], k))
        carry = (theta0, transform.init(theta0), saved, jnp.asarray(0))
        return jax.lax.scan(body, carry, (x, y))[0][2]

    return jax.lax.map(path, jnp.asarray(lrs))


def _optimizers(s, s2, n):
    import optax  # noqa: PLC0415  (optional dependency)

    return {
        "sgd": (optax.identity(), [c * s2 * n / 2 for c in s["sgd_grid"]]),
        "adam": (optax.scale_by_adam(), [c * np.sqrt(s2) for c in s["adam_grid"]]),
    }


def _prior_scale(predict, k, x, y) -> float:
    r""":math:`s^2 = n / \operatorname{E}\lVert J\rVert_F^2` by reverse mode."""

    @jax.jit
    def mean_sq(x, y):
        def one(ab):
            jac = jax.jacrev(predict)(jnp.zeros(k), *ab)
            return jnp.sum(jac**2)

        return jnp.mean(jax.lax.map(one, (x, y)))

    return float(x.shape[1] / mean_sq(x, y))


def _one_seed(s, config, model, every, mu, seed) -> dict[str, Any]:
    n = config.num_pairs
    x, y = T.draw(config, 100 * seed + 1, s["num_stream"], mu)
    hx, hy = T.draw(config, 100 * seed + 2, s["num_heldout"], mu)
    px, py = T.draw(config, 100 * seed + 3, s["num_scale"], mu)
    noise = jnp.asarray(T.predictive_noise(config, x, y, mu))
    steps = jnp.asarray(T.checkpoints(s["num_stream"]))
    frozen_all, k = every
    frozen = float(T.heldout_errors(frozen_all, jnp.zeros((1, k)), hx, hy).mean())
    bayes = float(T.bayes_error(config, hx, hy, mu).mean())

    def gap(predict, thetas):
        err = T.heldout_errors(predict, thetas, hx, hy).mean(1)
        return (frozen - err) / (frozen - bayes)

    out: dict[str, Any] = {"frozen": frozen, "bayes": bayes}
    # every weight
    s2_all = _prior_scale(frozen_all, k, px, py)
    var = jnp.full((k,), s2_all)
    for kind in ("low_rank", "diagonal"):
        means = _filter_checkpoints(
            frozen_all, kind, s["rank"], var, noise, x, y, steps
        )
        out[kind] = gap(frozen_all, means)
    # the head adapter
    head_k = s["head_k"]
    head = T.adapted_predictions(model, head_k, seed=seed)
    s2_head = T.prior_scale(head, head_k, px, py)
    means = T.ekf_over_prompts(head, head_k, s2_head, jnp.diag(noise), x, y)[0]
    out["dense_head"] = gap(head, means[steps - 1])
    # fine-tuning, every weight and the head adapter
    grids: dict[str, Any] = {}
    for where, predict, kk, s2 in (
        ("all", frozen_all, k, s2_all),
        ("head", head, head_k, s2_head),
    ):
        for name, (transform, lrs) in _optimizers(s, s2, n).items():
            paths = jax.jit(
                functools.partial(_optimizer_checkpoints, predict, kk, transform),
            )(jnp.asarray(lrs), x, y, steps)
            curves = np.stack([gap(predict, path) for path in paths])
            best = int(
                np.nanargmax(
                    np.where(np.isfinite(curves[:, -1]), curves[:, -1], -np.inf)
                )
            )
            key = f"{name}_{where}"
            out[key] = curves[best]
            grids[key] = dict(
                final_gap=curves[:, -1].tolist(),
                best_index=best,
                best_multiplier=s[f"{name}_grid"][best],
                best_is_interior=0 < best < len(lrs) - 1,
            )
    out["grids"] = grids
    out["prior_var"] = {"all": s2_all, "head": s2_head}
    out["tokens"] = np.asarray(steps) * n
    out["k"] = k
    return out


def run_experiment(quick: bool = False, seed: int = 0) -> ExperimentResult:
    """Run every method on ``seeds`` streams; compare the end-of-stream gaps."""
    s = _settings(quick)
    model, config = T.load()
    d, n = config.dim, config.num_pairs
    mu = jnp.full((d,), s["shift"] / np.sqrt(d))
    every = weight_predictions(model)  # one function: compiled once for all seeds
    runs = [
        _one_seed(s, config, model, every, mu, seed + i)
        for i in progress.track(range(s["seeds"]), "seeds")
    ]
    names = METHODS + HEAD_OPTIMIZERS
    curves = {m: np.stack([r[m] for r in runs]) for m in names}
    final = {m: curves[m][:, -1] for m in names}
    mean = {m: curves[m].mean(0) for m in names}
    se = {
        m: curves[m].std(0, ddof=1) / np.sqrt(len(runs))
        if len(runs) > 1
        else np.full_like(mean[m], np.nan)
        for m in names
    }
    best_tuned = max(("sgd_all", "adam_all"), key=lambda m: final[m].mean())
    settings = dict(
        k_all=runs[0]["k"],
        rank=s["rank"],
        head_k=s["head_k"],
        shift_norm=s["shift"],
        num_stream=s["num_stream"],
        num_heldout=s["num_heldout"],
        seeds=[seed + i for i in range(s["seeds"])],
        sgd_lr_multipliers=list(s["sgd_grid"]),
        adam_lr_multipliers=list(s["adam_grid"]),
    )

    def claim(text, a, b, extra=None):
        diff, err = paired_difference(final[a], final[b])
        return Claim(
            claim=text,
            verdict=quick_verdict(
                verdict_of_difference(diff, err, a, b),
                quick,
                f"rank {s['rank']}, {s['num_stream']} prompts, {s['seeds']} seeds",
            ),
            measured=dict(
                gap_closed={a: float(final[a].mean()), b: float(final[b].mean())},
                difference=diff,
                standard_error=err,
            )
            | (extra or {}),
            settings=settings,
        )

    grids = {key: [r["grids"][key] for r in runs] for key in runs[0]["grids"]}
    claims = [
        claim(
            "Filtering every weight (low-rank EKF) ends the stream with a lower "
            "held-out error than fine-tuning every weight at the best learning rate "
            "of a grid",
            "low_rank",
            best_tuned,
            dict(
                best_optimizer=best_tuned,
                best_is_interior=[g["best_is_interior"] for g in grids[best_tuned]],
                leader_by_tokens={
                    int(t): max(names, key=lambda m, i=i: mean[m][i])
                    for i, t in enumerate(runs[0]["tokens"])
                },
            ),
        ),
        claim(
            "Over every weight, the low-rank EKF beats the diagonal EKF (the "
            "correlations it keeps matter)",
            "low_rank",
            "diagonal",
        ),
        claim(
            "Filtering every weight beats filtering a 64-dimensional head adapter "
            "with the dense EKF",
            "low_rank",
            "dense_head",
        ),
    ]
    data = dict(
        tokens=runs[0]["tokens"],
        mean=mean,
        se=se,
        final=final,
        frozen=[r["frozen"] for r in runs],
        bayes=[r["bayes"] for r in runs],
        grids=grids,
        prior_var=[r["prior_var"] for r in runs],
        num_pairs=n,
    )
    return ExperimentResult(name=NAME, data=data, claims=claims)


LABELS = {
    "low_rank": "low-rank EKF, every weight",
    "diagonal": "diagonal EKF, every weight",
    "dense_head": "dense EKF, head adapter (k = 64)",
    "sgd_all": "SGD, every weight (best rate)",
    "adam_all": "Adam, every weight (best rate)",
    "sgd_head": "SGD, head adapter (best rate)",
    "adam_head": "Adam, head adapter (best rate)",
}


def plot(result: ExperimentResult, path: Path) -> None:
    """Held-out gap closed against tokens seen, mean +- standard error over seeds."""
    d = result.data
    with style():
        fig, (ax,) = subplots(1, 1, width=COLUMN, height=3.9)
        styles = {"low_rank": "k-", "diagonal": "k--", "dense_head": "k:"}
        for i, (name, label) in enumerate(LABELS.items()):
            m, e = d["mean"][name], d["se"][name]
            fmt = styles.get(name, f"C{i}-" if name.endswith("_all") else f"C{i}:")
            ax.semilogx(
                d["tokens"], m, fmt, lw=2 if name in styles else 1.2, label=label
            )
            if np.all(np.isfinite(e)):
                ax.fill_between(
                    d["tokens"],
                    m - e,
                    m + e,
                    alpha=0.15,
                    color=ax.lines[-1].get_color(),
                )
        ax.axhline(0.0, color="grey", lw=0.8)
        ax.axhline(1.0, color="grey", lw=0.8, ls=":")
        ax.set_ylim(-1.0, 1.05)  # early fine-tuning at the end's best rate dips below
        ax.set_xlabel("tokens seen (pairs)")
        ax.set_ylabel("held-out gap closed: frozen 0, Bayes 1")
        ax.set_title("adapting to a shifted task family")
        integer_ticks(ax, "x")
        fig.legend(loc="outside lower center", ncol=1)
        save(fig, path)


run = run_experiment
