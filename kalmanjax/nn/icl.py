r"""In-context linear regression: prompts, the trained transformer, its evaluation.

The task family of Garg et al. (2022): per prompt a weight vector
:math:`w \sim N(\mu_w, \tau^2 I_d)`, inputs :math:`x_i \sim N(0, I_d)` and outputs
:math:`y_i = w^\top x_i + v_i`, :math:`v_i \sim N(0, \sigma^2)`. A prompt of
:math:`n` pairs is the token sequence :math:`[x_1, 0], [0, y_1], [x_2, 0], \dots`
(``2n`` tokens of size ``d + 1``); the network's output at the token of
:math:`x_i` is its prediction of :math:`y_i` from the :math:`i - 1` pairs before it.

The Bayes-optimal prediction is the posterior predictive mean of the Kalman filter
over :math:`w` (:math:`F = I, Q = 0, H_i = x_i^\top, R = \sigma^2`), i.e. Bayesian
ridge regression; :func:`evaluate` computes it with kalmanjax itself and reports
the network's error over Bayes' per position.

A small transformer trained on this family ships with the package
(:func:`load_pretrained`, flax msgpack, no pickle); ``python -m kalmanjax.nn.icl
train`` retrains it (seeded). A second one is trained in the setting of Raventos et
al. (2023): :math:`d = 8`, 16 pairs, :math:`\sigma^2 = 0.25`, and a *finite* pool of
:math:`M = 2^{15}` pretraining tasks (:func:`task_pool`), so that the Bayes
predictor of its training distribution (:func:`discrete_bayes_predictions`, their
dMMSE) differs from ridge (``load_pretrained("raventos")``; ``train --setting
raventos``).
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array, ArrayLike, Float

from .. import Gaussian, regression_filter, run
from ._training import fit
from ._weights import load_weights, save_weights
from .observation import observation_fn
from .transformer import Transformer

__all__ = [
    "ICLConfig",
    "bayes_predictions",
    "build_model",
    "discrete_bayes_predictions",
    "encode",
    "evaluate",
    "load",
    "load_pretrained",
    "network_predictions",
    "sample_prompts",
    "save",
    "task_pool",
    "train",
]

#: where the shipped weights live, per setting (see :data:`SETTINGS`)
WEIGHTS = Path(__file__).parent / "weights" / "icl_regression.msgpack"
RAVENTOS_WEIGHTS = Path(__file__).parent / "weights" / "icl_regression_raventos.msgpack"


class ICLConfig(NamedTuple):
    r"""The task family and the network's shape.

    Attributes:
        dim: :math:`d`, the input dimension.
        num_pairs: :math:`n`, the (x, y) pairs per prompt.
        noise_var: :math:`\\sigma^2`.
        prior_var: :math:`\\tau^2`, the variance of each weight.
        width, depth, heads: the transformer's shape.
        num_tasks: :math:`M`, the size of the pretraining pool of tasks
            (:func:`task_pool`); 0: a fresh :math:`w` for every prompt.
        task_seed: seeds the pool.
    """

    dim: int = 5
    num_pairs: int = 20
    noise_var: float = 0.25
    prior_var: float = 1.0
    width: int = 64
    depth: int = 3
    heads: int = 4
    num_tasks: int = 0
    task_seed: int = 0


#: the shipped model's task family and shape
DEFAULT_CONFIG = ICLConfig()
#: the setting of Raventos et al. (2023), with 2^15 pretraining tasks
RAVENTOS_CONFIG = ICLConfig(dim=8, num_pairs=16, num_tasks=2**15)
#: setting name -> (config, where its shipped weights live)
SETTINGS = {
    "default": (DEFAULT_CONFIG, WEIGHTS),
    "raventos": (RAVENTOS_CONFIG, RAVENTOS_WEIGHTS),
}


def task_pool(config: ICLConfig, dtype=jnp.float32) -> Float[Array, "tasks state"]:
    r"""The :math:`M` pretraining tasks :math:`w^{(m)} \sim N(0, \tau^2 I_d)`.

    Drawn from ``config.task_seed``, so a config fixes its pool.

    Returns:
        ``(M, d)``.

    Raises:
        ValueError: if ``config.num_tasks`` is 0 (no pool).
    """
    if config.num_tasks < 1:
        raise ValueError(
            f"config.num_tasks must be >= 1 for a task pool, got {config.num_tasks}"
        )
    key = jax.random.key(config.task_seed)
    shape = (config.num_tasks, config.dim)
    return jnp.sqrt(config.prior_var) * jax.random.normal(key, shape, dtype)


def sample_prompts(
    key: Array,
    num_prompts: int,
    config: ICLConfig,
    *,
    weight_mean: Float[ArrayLike, " state"] | None = None,
    tasks: Float[ArrayLike, "tasks state"] | None = None,
    dtype=jnp.float32,
) -> tuple[Array, Array, Array]:
    r"""Draw prompts from the task family.

    Args:
        key: a JAX PRNG key.
        num_prompts: :math:`B`.
        config: the task family.
        weight_mean: :math:`\\mu_w` (shape ``(d,)``; default 0): a shifted family.
        tasks: ``(M, d)``: draw each :math:`w` uniformly from these rows (e.g.
            :func:`task_pool`) instead of from the Gaussian.
        dtype: floating dtype of the arrays.

    Returns:
        ``w (B, d)``, ``x (B, n, d)``, ``y (B, n)``.
    """
    d, n = config.dim, config.num_pairs
    kw, kx, kv = jax.random.split(key, 3)
    if tasks is None:
        w = jnp.sqrt(config.prior_var) * jax.random.normal(kw, (num_prompts, d), dtype)
    else:
        tasks = jnp.asarray(tasks, dtype)
        if tasks.ndim != 2 or tasks.shape[1] != d:
            raise ValueError(f"tasks must have shape (M, {d}), got {tasks.shape}")
        w = tasks[jax.random.randint(kw, (num_prompts,), 0, tasks.shape[0])]
    if weight_mean is not None:
        w = w + jnp.asarray(weight_mean, dtype)[None, :]
    x = jax.random.normal(kx, (num_prompts, n, d), dtype)
    noise = jnp.sqrt(config.noise_var) * jax.random.normal(kv, (num_prompts, n), dtype)
    return w, x, jnp.einsum("bnd,bd->bn", x, w) + noise


def encode(
    x: Float[Array, "time state"], y: Float[Array, " time"]
) -> Float[Array, "2*time state+1"]:
    """Interleave a prompt into tokens ``[x_1, 0], [0, y_1], ...``: ``(2n, d+1)``."""
    n, d = x.shape
    x_tokens = jnp.concatenate([x, jnp.zeros((n, 1), x.dtype)], axis=1)
    y_tokens = jnp.concatenate([jnp.zeros((n, d), x.dtype), y[:, None]], axis=1)
    return jnp.stack([x_tokens, y_tokens], axis=1).reshape(2 * n, d + 1)


def network_predictions(
    fn: Callable[[Array], Array],
    x: Float[Array, "time state"],
    y: Float[Array, " time"],
) -> Float[Array, " time"]:
    """Predictions of :math:`y_i` (read at the :math:`x_i` tokens) for one prompt.

    ``fn(tokens) -> (2n, 1)`` is the network (e.g. ``model`` or a partial of an
    :func:`~kalmanjax.nn.observation_fn`).
    """
    return fn(encode(x, y))[0::2, 0]


def build_model(config: ICLConfig, *, seed: int = 0, dtype=jnp.float32) -> Transformer:
    """A fresh (untrained) transformer of the configured shape."""
    return Transformer(
        output_dim=1,
        input_dim=config.dim + 1,
        width=config.width,
        depth=config.depth,
        heads=config.heads,
        max_len=2 * config.num_pairs,
        dtype=dtype,
        rngs=nnx.Rngs(seed),
    )


def bayes_predictions(
    x: Float[Array, "time state"],
    y: Float[Array, " time"],
    config: ICLConfig,
    weight_mean: Float[ArrayLike, " state"] | None = None,
) -> tuple[Array, Array]:
    r"""The Bayes-optimal predictions :math:`x_i^\top m_{i-1}` (Kalman filter on w).

    The filter is :func:`kalmanjax.regression_filter` (prior
    :math:`N(\mu_w, \tau^2 I)`, :math:`R = \sigma^2`), in the dtype of ``x``.

    Returns:
        ``(predictions (n,), predictive_var (n,))``: the posterior predictive mean
        and variance of :math:`y_i` given the pairs before it.
    """
    d, dtype = config.dim, x.dtype
    filt = regression_filter(d, config.noise_var, dtype=dtype)
    m0 = jnp.zeros(d, dtype) if weight_mean is None else jnp.asarray(weight_mean, dtype)
    prior = Gaussian(mean=m0, cov=config.prior_var * jnp.eye(d, dtype=dtype))
    out = run(filt, prior, {"obs": y[:, None], "x": x})
    # beliefs before pair i: the prior, then the filtered beliefs 1..n-1
    means = jnp.concatenate([m0[None, :], out.states.mean[:-1]], axis=0)
    covs = jnp.concatenate([prior.cov[None], out.states.cov[:-1]], axis=0)
    pred = jnp.einsum("nd,nd->n", x, means)
    var = jnp.einsum("nd,nde,ne->n", x, covs, x) + config.noise_var
    return pred, var


def discrete_bayes_predictions(
    x: Float[Array, "time state"],
    y: Float[Array, " time"],
    tasks: Float[ArrayLike, "tasks state"],
    noise_var: float,
) -> Float[Array, " time"]:
    r"""Bayes' predictions of :math:`y_i` under a uniform prior on a finite pool.

    The dMMSE estimator of Raventos et al. (2023): with the prior uniform on the
    rows :math:`w^{(m)}` of ``tasks``, :math:`\hat y_i = \sum_m p_{i,m}\, x_i^\top
    w^{(m)}`, :math:`p_{i,m} \propto \exp(-\sum_{j<i} (y_j - x_j^\top
    w^{(m)})^2 / 2\sigma^2)`. In the dtype of ``x``.

    Args:
        x: ``(n, d)``, one prompt's inputs.
        y: ``(n,)``, its outputs.
        tasks: ``(M, d)``, the pool (e.g. :func:`task_pool`).
        noise_var: :math:`\sigma^2`.

    Returns:
        ``(n,)``: the prediction of each :math:`y_i` from the pairs before it.
    """
    tasks = jnp.asarray(tasks, x.dtype)
    fits = x @ tasks.T  # (n, M): x_i . w_m
    sq = (y[:, None] - fits) ** 2
    logits = -(jnp.cumsum(sq, axis=0) - sq) / (2 * noise_var)  # pairs before i
    return jnp.sum(jax.nn.softmax(logits, axis=1) * fits, axis=1)


# ---------------------------------------------------------------------- training


def _loss(model, x, y):
    pred = jax.vmap(lambda xi, yi: network_predictions(model, xi, yi))(x, y)
    return jnp.mean((pred - y) ** 2)


def train(
    config: ICLConfig = DEFAULT_CONFIG,
    *,
    steps: int = 40_000,
    seed: int = 0,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
    fused_steps: int = 20,
    max_seconds: float | None = None,
    log: Callable[[int, float, float], None] | None = None,
) -> tuple[Transformer, dict]:
    """Train the transformer on fresh prompts (seeded, reproducible).

    With ``config.num_tasks`` set, each prompt's :math:`w` is a row of
    :func:`task_pool` (its inputs and noise are fresh); otherwise a fresh draw.
    AdamW (weight decay 1e-4) with a 2% linear warm-up and cosine decay to zero,
    gradients clipped at norm 1; ``fused_steps`` steps run inside one
    ``lax.scan`` per jitted call.

    Args:
        config: task family and network shape.
        steps: optimisation steps (rounded up to a multiple of ``fused_steps``).
        seed: seeds the initialisation and the prompt stream.
        batch_size: prompts per step.
        learning_rate: peak learning rate.
        fused_steps: steps per jitted call.
        max_seconds: stop early after this wall time (the schedule is kept).
        log: ``log(step, loss, seconds)`` called after every jitted call.

    Returns:
        ``(model, info)`` with ``info = {"steps", "seconds", "final_loss"}``.
    """
    model = build_model(config, seed=seed)
    tasks = task_pool(config) if config.num_tasks else None

    def batch_loss(model, key):
        _, x, y = sample_prompts(key, batch_size, config, tasks=tasks)
        return _loss(model, x, y)

    info = fit(
        model,
        batch_loss,
        steps=steps,
        seed=seed,
        learning_rate=learning_rate,
        fused_steps=fused_steps,
        max_seconds=max_seconds,
        log=log,
    )
    return model, info


# ----------------------------------------------------------------------- weights


def save(model: Transformer, config: ICLConfig, path: str | Path, **meta) -> None:
    """Write the parameters and the config as flax msgpack (no pickle)."""
    save_weights(model, config, path, **meta)


def load(path: str | Path) -> tuple[Transformer, ICLConfig, dict]:
    """Read weights written by :func:`save`: ``(model, config, meta)``."""
    return load_weights(path, ICLConfig, build_model)


def load_pretrained(setting: str = "default") -> tuple[Transformer, ICLConfig, dict]:
    """A shipped in-context regression transformer: ``(model, config, meta)``.

    Args:
        setting: ``"default"`` (:data:`DEFAULT_CONFIG`) or ``"raventos"``
            (:data:`RAVENTOS_CONFIG`), a key of :data:`SETTINGS`.
    """
    if setting not in SETTINGS:
        raise ValueError(f"setting must be one of {sorted(SETTINGS)}, got {setting!r}")
    path = SETTINGS[setting][1]
    if not path.exists():
        raise FileNotFoundError(
            f"{path} is missing; retrain it with "
            f"`python -m kalmanjax.nn.icl train --setting {setting}`"
        )
    return load(path)


# -------------------------------------------------------------------- evaluation


def evaluate(
    model: Transformer,
    config: ICLConfig,
    *,
    num_prompts: int = 4096,
    seed: int = 12345,
    weight_mean: Float[ArrayLike, " state"] | None = None,
    batch: int = 512,
) -> dict[str, Any]:
    """Per-position squared error of the network and of the Bayes predictor.

    Errors are against the observed :math:`y_i` (noise included), on fresh prompts.

    Returns:
        dict with ``model_mse``, ``bayes_mse`` (shape ``(n,)``), ``ratio`` (their
        quotient per position), ``ratio_se`` (its standard error, delta method over
        prompts), ``mean_ratio`` and ``mean_ratio_se`` (the ratio averaged over
        positions ``d..n``, i.e. once the prompt holds at least ``d - 1`` pairs).
    """
    network = functools.partial(observation_fn(model), None)  # theta unused

    @jax.jit
    def errors(key):
        _, x, y = sample_prompts(key, batch, config, weight_mean=weight_mean)
        net = jax.vmap(lambda a, b: network_predictions(network, a, b))(x, y)
        bayes = jax.vmap(lambda a, b: bayes_predictions(a, b, config, weight_mean)[0])(
            x, y
        )
        return (net - y) ** 2, (bayes - y) ** 2

    keys = jax.random.split(jax.random.key(seed), -(-num_prompts // batch))
    parts = [errors(k) for k in keys]
    net_err = np.concatenate([np.asarray(p[0]) for p in parts])[:num_prompts]
    bayes_err = np.concatenate([np.asarray(p[1]) for p in parts])[:num_prompts]
    model_mse, bayes_mse = net_err.mean(0), bayes_err.mean(0)
    ratio = model_mse / bayes_mse
    # delta method for a ratio of means over the same prompts
    num = net_err - ratio[None, :] * bayes_err
    ratio_se = num.std(0, ddof=1) / np.sqrt(num_prompts) / bayes_mse
    late = slice(config.dim - 1, None)  # positions d..n (1-based)
    per_prompt = (net_err[:, late] / bayes_mse[None, late]).mean(1)
    return dict(
        model_mse=model_mse,
        bayes_mse=bayes_mse,
        ratio=ratio,
        ratio_se=ratio_se,
        mean_ratio=float(ratio[late].mean()),
        mean_ratio_se=float(per_prompt.std(ddof=1) / np.sqrt(num_prompts)),
    )


# ------------------------------------------------------------------ command line


def main(argv: list[str] | None = None) -> int:
    """``python -m kalmanjax.nn.icl train|evaluate``: retrain or check the weights."""
    p = argparse.ArgumentParser(prog="python -m kalmanjax.nn.icl", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train and save the weights (seeded)")
    t.add_argument("--setting", choices=sorted(SETTINGS), default="default")
    t.add_argument("--steps", type=int, default=40_000)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--minutes", type=float, default=None, help="wall-time cap")
    t.add_argument("--out", default=None, help="default: the setting's shipped file")
    t.add_argument(
        "--eval-prompts", type=int, default=4096, help="prompts for the stated ratio"
    )
    e = sub.add_parser("evaluate", help="model / Bayes error per position")
    e.add_argument("--weights", default=str(WEIGHTS))
    e.add_argument("--prompts", type=int, default=4096)
    args = p.parse_args(argv)

    if args.command == "train":
        if args.steps < 1:
            p.error(f"--steps must be >= 1, got {args.steps}")

        def log(step, loss, seconds):
            if step % 1000 < 20 or step == args.steps:
                print(f"step {step:6d}  loss {loss:.4f}  {seconds:7.1f} s", flush=True)

        config, shipped = SETTINGS[args.setting]
        cap = None if args.minutes is None else 60 * args.minutes
        model, info = train(
            config, steps=args.steps, seed=args.seed, max_seconds=cap, log=log
        )
        res = evaluate(model, config, num_prompts=args.eval_prompts)
        stated = dict(mean_ratio=res["mean_ratio"], mean_ratio_se=res["mean_ratio_se"])
        out = shipped if args.out is None else args.out
        save(model, config, out, seed=args.seed, **info, **stated)
        print(json.dumps({**info, **stated}))
        return 0
    if not Path(args.weights).exists():
        p.error(f"no weights at {args.weights}")
    model, config, meta = load(args.weights)
    res = evaluate(model, config, num_prompts=args.prompts)
    for i, (r, se) in enumerate(zip(res["ratio"], res["ratio_se"], strict=True)):
        print(f"position {i + 1:2d}: model / Bayes = {r:.3f} +- {se:.3f}")
    print(
        f"mean over positions {config.dim}..{config.num_pairs}: "
        f"{res['mean_ratio']:.3f} +- {res['mean_ratio_se']:.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
