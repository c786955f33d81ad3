"""The optimiser loop shared by the shipped networks' ``train`` commands."""

from __future__ import annotations

import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx


def fit(
    model: nnx.Module,
    batch_loss: Callable,
    *,
    steps: int,
    seed: int,
    learning_rate: float,
    fused_steps: int = 20,
    max_seconds: float | None = None,
    log: Callable[[int, float, float], None] | None = None,
) -> dict:
    """Train ``model`` in place on fresh batches; returns the run's ``info``.

    ``batch_loss(model, key)`` draws a batch from ``key`` and returns its loss.
    AdamW (weight decay 1e-4) with a 2% linear warm-up and cosine decay to zero,
    gradients clipped at norm 1; ``fused_steps`` steps run inside one ``lax.scan``
    per jitted call; the batch keys are ``fold_in(key(seed + 1), call)`` split
    ``fused_steps`` ways, so a seed fixes the run.

    Returns:
        ``{"steps", "seconds", "final_loss"}`` (the last call's mean loss).
    """
    import optax  # noqa: PLC0415  (optional dependency)

    graphdef, params = nnx.split(model)
    calls = -(-steps // fused_steps)
    total = calls * fused_steps
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, learning_rate, max(1, total // 50), total
    )
    opt = optax.chain(
        optax.clip_by_global_norm(1.0), optax.adamw(schedule, weight_decay=1e-4)
    )
    opt_state = opt.init(params)

    def loss_of(params, key):
        return batch_loss(nnx.merge(graphdef, params), key)

    def one_step(carry, key):
        params, opt_state = carry
        loss, grads = jax.value_and_grad(loss_of)(params, key)
        updates, opt_state = opt.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss

    @jax.jit
    def fused(params, opt_state, key):
        keys = jax.random.split(key, fused_steps)
        (params, opt_state), losses = jax.lax.scan(one_step, (params, opt_state), keys)
        return params, opt_state, jnp.mean(losses)

    key = jax.random.key(seed + 1)
    start = time.perf_counter()
    loss = float("nan")
    done = 0
    for call in range(calls):
        params, opt_state, loss = fused(
            params, opt_state, jax.random.fold_in(key, call)
        )
        done = (call + 1) * fused_steps
        elapsed = time.perf_counter() - start
        if log is not None:
            log(done, float(loss), elapsed)
        if max_seconds is not None and elapsed > max_seconds:
            break
    nnx.update(model, params)
    return dict(steps=done, seconds=time.perf_counter() - start, final_loss=float(loss))
