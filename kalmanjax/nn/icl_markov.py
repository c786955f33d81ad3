r"""In-context learning of random Markov chains: the trained token transformer.

The task family is :mod:`kalmanjax.tasks.markov` (rows of a ``V x V``
transition matrix drawn from :math:`\operatorname{Dirichlet}(\alpha \mathbf 1)`
per sequence, a uniform first state). The network reads the token ids
:math:`x_0 \dots x_{T-1}` and its output at position ``t`` is the logits of
:math:`x_{t+1}`; :func:`network_predictive` aligns them with the Bayes predictive
(Dirichlet counting, :func:`kalmanjax.tasks.markov.bayes_predictive`), whose row
``t`` predicts :math:`x_t` from the tokens before it.

Training minimises the log loss of the true transition row, :math:`-\sum_j
P_{x_t j} \log q_{t+1}(j)`: it has the same minimiser as the log loss of the
sampled token (the Bayes predictive) and less variance.

A transformer trained on ``V = 4``, ``alpha = 1``, ``T = 128`` ships with the package
(:func:`load_pretrained`, flax msgpack, no pickle); ``python -m
kalmanjax.nn.icl_markov train`` retrains it (seeded) and ``evaluate`` re-scores it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array, Float, Int

from ..tasks.markov import (
    MarkovFamily,
    bayes_predictive,
    expected_log_loss,
    sample_chains,
)
from ._training import fit
from ._weights import load_weights, save_weights
from .transformer import Transformer

__all__ = [
    "MarkovConfig",
    "build_model",
    "evaluate",
    "load",
    "load_pretrained",
    "network_predictive",
    "save",
    "train",
]

#: where the shipped weights live
WEIGHTS = Path(__file__).parent / "weights" / "icl_markov.msgpack"


class MarkovConfig(NamedTuple):
    """The training family and the network's shape.

    Attributes:
        vocab: ``V``, the number of states.
        alpha: the Dirichlet concentration of every row.
        length: ``T``, tokens per sequence (the network's ``max_len``).
        width, depth, heads: the transformer's shape.
    """

    vocab: int = 4
    alpha: float = 1.0
    length: int = 128
    width: int = 64
    depth: int = 2
    heads: int = 4

    @property
    def family(self) -> MarkovFamily:
        """The training family, ``MarkovFamily(vocab, alpha)``."""
        return MarkovFamily(self.vocab, self.alpha)


#: the shipped model's family and shape
DEFAULT_CONFIG = MarkovConfig()


def build_model(
    config: MarkovConfig, *, seed: int = 0, dtype=jnp.float32
) -> Transformer:
    """A fresh (untrained) token transformer of the configured shape."""
    return Transformer(
        output_dim=config.vocab,
        vocab_size=config.vocab,
        width=config.width,
        depth=config.depth,
        heads=config.heads,
        max_len=config.length,
        dtype=dtype,
        rngs=nnx.Rngs(seed),
    )


def network_predictive(
    fn: Callable[[Array], Array], tokens: Int[Array, " time"]
) -> Float[Array, "time vocab"]:
    """The network's predictive of every position, aligned with Bayes': ``(T, V)``.

    Row 0 is uniform (nothing read yet); row ``t >= 1`` is the softmax of
    ``fn(tokens)[t - 1]``. ``fn(tokens) -> (T, V)`` logits is the network (e.g.
    ``model`` or a partial of an :func:`~kalmanjax.nn.observation_fn`).
    """
    logits = fn(tokens)
    V = logits.shape[-1]
    first = jnp.full((1, V), 1.0 / V, logits.dtype)
    return jnp.concatenate([first, jax.nn.softmax(logits[:-1], axis=-1)], axis=0)


def _loss(model, transitions, tokens):
    logits = jax.vmap(model)(tokens)[:, :-1]  # (B, T - 1, V): predicts tokens[1:]
    rows = jax.vmap(lambda P, x: P[x])(transitions, tokens[:, :-1])
    return -jnp.mean(jnp.sum(rows * jax.nn.log_softmax(logits, axis=-1), axis=-1))


def train(
    config: MarkovConfig = DEFAULT_CONFIG,
    *,
    steps: int = 6000,
    seed: int = 0,
    batch_size: int = 32,
    learning_rate: float = 1e-3,
    fused_steps: int = 20,
    max_seconds: float | None = None,
    log: Callable[[int, float, float], None] | None = None,
) -> tuple[Transformer, dict]:
    """Train the transformer on fresh chains (seeded, reproducible).

    The optimiser is that of :func:`kalmanjax.nn.icl.train` (AdamW, warm-up and
    cosine decay, clipping at norm 1); the loss is the expected log loss of the
    next token under the true row (see the module docstring).

    Args:
        config: training family and network shape.
        steps: optimisation steps (rounded up to a multiple of ``fused_steps``).
        seed: seeds the initialisation and the chain stream.
        batch_size: chains per step.
        learning_rate: peak learning rate.
        fused_steps: steps per jitted call.
        max_seconds: stop early after this wall time (the schedule is kept).
        log: ``log(step, loss, seconds)`` called after every jitted call.

    Returns:
        ``(model, info)`` with ``info = {"steps", "seconds", "final_loss"}``.
    """
    model = build_model(config, seed=seed)
    family = config.family

    def batch_loss(model, key):
        P, tokens = sample_chains(key, family, batch_size, config.length)
        return _loss(model, P, tokens)

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


def save(model: Transformer, config: MarkovConfig, path: str | Path, **meta) -> None:
    """Write the parameters and the config as flax msgpack (no pickle)."""
    save_weights(model, config, path, **meta)


def load(path: str | Path) -> tuple[Transformer, MarkovConfig, dict]:
    """Read weights written by :func:`save`: ``(model, config, meta)``."""
    return load_weights(path, MarkovConfig, build_model)


def load_pretrained() -> tuple[Transformer, MarkovConfig, dict]:
    """The shipped Markov-chain transformer: ``(model, config, meta)``."""
    if not WEIGHTS.exists():
        raise FileNotFoundError(
            f"{WEIGHTS} is missing; retrain it with "
            "`python -m kalmanjax.nn.icl_markov train`"
        )
    return load(WEIGHTS)


def evaluate(
    model: Transformer,
    config: MarkovConfig,
    *,
    num_chains: int = 4096,
    seed: int = 12345,
    family: MarkovFamily | None = None,
    batch: int = 512,
) -> dict[str, Any]:
    """Expected log loss per position of the network and of Bayes, on fresh chains.

    Args:
        model: the token transformer.
        config: its training family and shape (``length`` sets ``T``).
        num_chains: chains to score.
        seed: seeds the chains.
        family: the family to draw chains from (default the training family; the
            Bayes predictor is always that of the family drawn from).
        batch: chains per jitted call.

    Returns:
        dict with ``model_loss``, ``bayes_loss``, ``excess`` (their difference)
        and ``excess_se`` (its paired standard error over chains), each ``(T,)``
        (entry 0 is 0: both predict uniformly), and ``mean_excess`` /
        ``mean_excess_se``, nats per token averaged over positions ``1..T-1``.
    """
    family = config.family if family is None else family

    @jax.jit
    def losses(key):
        P, tokens = sample_chains(key, family, batch, config.length)
        net = jax.vmap(lambda x: network_predictive(model, x))(tokens)
        bayes = jax.vmap(lambda x: bayes_predictive(x, family))(tokens)
        score = jax.vmap(expected_log_loss)
        return score(net, P, tokens), score(bayes, P, tokens)

    keys = jax.random.split(jax.random.key(seed), -(-num_chains // batch))
    parts = [losses(k) for k in keys]
    net = np.concatenate([np.asarray(p[0], np.float64) for p in parts])[:num_chains]
    bayes = np.concatenate([np.asarray(p[1], np.float64) for p in parts])[:num_chains]
    diff = net - bayes
    per_chain = diff[:, 1:].mean(1)
    return dict(
        model_loss=net.mean(0),
        bayes_loss=bayes.mean(0),
        excess=diff.mean(0),
        excess_se=diff.std(0, ddof=1) / np.sqrt(num_chains),
        mean_excess=float(per_chain.mean()),
        mean_excess_se=float(per_chain.std(ddof=1) / np.sqrt(num_chains)),
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m kalmanjax.nn.icl_markov train|evaluate``."""
    p = argparse.ArgumentParser(
        prog="python -m kalmanjax.nn.icl_markov", description=__doc__
    )
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train and save the weights (seeded)")
    t.add_argument("--steps", type=int, default=6000)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--minutes", type=float, default=None, help="wall-time cap")
    t.add_argument("--out", default=str(WEIGHTS))
    t.add_argument(
        "--eval-chains", type=int, default=4096, help="chains for the stated excess"
    )
    e = sub.add_parser("evaluate", help="model - Bayes log loss per position")
    e.add_argument("--weights", default=str(WEIGHTS))
    e.add_argument("--chains", type=int, default=4096)
    args = p.parse_args(argv)

    if args.command == "train":
        if args.steps < 1:
            p.error(f"--steps must be >= 1, got {args.steps}")

        def log(step, loss, seconds):
            if step % 500 < 20 or step == args.steps:
                print(f"step {step:6d}  loss {loss:.4f}  {seconds:7.1f} s", flush=True)

        config = MarkovConfig()
        cap = None if args.minutes is None else 60 * args.minutes
        model, info = train(
            config, steps=args.steps, seed=args.seed, max_seconds=cap, log=log
        )
        res = evaluate(model, config, num_chains=args.eval_chains)
        stated = dict(
            mean_excess=res["mean_excess"], mean_excess_se=res["mean_excess_se"]
        )
        save(model, config, args.out, seed=args.seed, **info, **stated)
        print(json.dumps({**info, **stated}))
        return 0
    if not Path(args.weights).exists():
        p.error(f"no weights at {args.weights}")
    model, config, _ = load(args.weights)
    res = evaluate(model, config, num_chains=args.chains)
    for t in (1, 2, 4, 8, 16, 32, 64, config.length - 1):
        if t < config.length:
            print(
                f"position {t:3d}: excess over Bayes {res['excess'][t]:.4f} "
                f"+- {res['excess_se'][t]:.4f} nats"
            )
    print(
        f"mean over positions 1..{config.length - 1}: "
        f"{res['mean_excess']:.4f} +- {res['mean_excess_se']:.4f} nats per token"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
