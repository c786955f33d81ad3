r"""Fit any differentiable model by its marginal likelihood with an optax optimiser.

The user writes ``build(params) -> (filter, prior)``; :func:`fit_marginal_likelihood`
minimises

.. math::

    L(u) = -\frac{1}{N} \log p(y_{1:T} \mid \theta = c(u))

over the unconstrained :math:`u`, where :math:`c` applies the constraints of
:mod:`kalmanjax.core.constraints` (positive variances, PSD covariances, bounded
coefficients) and :math:`N` is the number of observed (non-NaN) entries. The
likelihood is :func:`kalmanjax.log_marginal_likelihood`, so any filter works: a
linear Kalman filter, an EKF over a network, a structured filter. Gradients come
from ``jax.value_and_grad`` through the whole filter; the steps run in one
``lax.scan``. Needs ``optax`` (``kalmanjax[experiments]``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ..core.constraints import constrain, unconstrain
from ..core.filter import Filter
from ..core.models import get_obs
from ..core.scan import Parallel
from .filtering import log_marginal_likelihood, run_batch

__all__ = ["MarginalLikelihoodFit", "fit_marginal_likelihood"]


class MarginalLikelihoodFit(NamedTuple):
    r"""What :func:`fit_marginal_likelihood` returns.

    Attributes:
        params: the fitted parameters (constrained), the structure of the start.
        unconstrained: the optimiser's variables :math:`u` after the last step.
        losses: :math:`-\log p(y \mid \theta_i) / N` at the parameters *before*
            step ``i``, shape ``(num_steps,)``.
        loss: the same at the fitted parameters, a scalar.
    """

    params: Any
    unconstrained: Any
    losses: jax.Array
    loss: jax.Array


def fit_marginal_likelihood(
    build: Callable[[Any], tuple[Filter, Any]],
    params: Any,
    xs: Any,
    optimizer: Any,
    *,
    constraints: Any = None,
    num_steps: int = 200,
    batch: bool = False,
    lengths: jax.Array | None = None,
    update_first: bool = False,
    parallel: Parallel = False,
) -> MarginalLikelihoodFit:
    r"""Maximise the marginal likelihood of ``build(params)`` with ``optimizer``.

    Args:
        build: ``params -> (filter, prior)``: the filter (e.g.
            :func:`kalmanjax.kalman_filter` of models made from ``params``) and
            the belief over :math:`x_0`.
        params: the starting parameters, a tree of arrays; feasible under
            ``constraints``.
        xs: the per-step inputs (see :func:`kalmanjax.run`); NaN observations
            are missing. With ``batch``, a leading axis of sequences of one
            length, whose log-likelihoods add.
        optimizer: an ``optax.GradientTransformation`` (e.g. ``optax.adam(1e-2)``
            or ``optax.lbfgs()``: the loss and its function are passed as the
            extra arguments ``value``, ``grad`` and ``value_fn``).
        constraints: a tree of :class:`kalmanjax.constraints.Constraint` (or
            ``None`` leaves) over ``params``; a dict may leave keys out (see
            :func:`kalmanjax.constraints.constrain`). ``None``: unconstrained.
        num_steps: optimiser steps (one ``lax.scan``; jit the call with
            ``build``, ``optimizer`` and the flags static to compile it once).
        batch: ``xs`` holds a batch of sequences on its leading axis.
        lengths: with ``batch``, each sequence's length ``(batch,)``: the rest
            is padding (see :func:`kalmanjax.run_batch`), not counted in
            :math:`N`. ``None``: all of ``T``.
        update_first: ``xs[0]`` observes the prior's state (see
            :func:`kalmanjax.run`).
        parallel: the filter's parallel form for the likelihood.

    Returns:
        A :class:`MarginalLikelihoodFit`.

    Raises:
        ValueError: if ``constraints`` does not fit ``params``, if concrete
            starting parameters are infeasible under them, if ``xs`` has no
            observed entry, or if ``lengths`` comes without ``batch``.
        ImportError: without ``optax``.

    Examples:
        >>> import jax, jax.numpy as jnp, optax
        >>> import kalmanjax as kj
        >>> from kalmanjax import constraints as C
        >>> def build(p):
        ...     dyn = kj.LinearDynamics(F=jnp.eye(1), Q=p["q"] * jnp.eye(1))
        ...     obs = kj.LinearObservation(H=jnp.eye(1), R=p["r"] * jnp.eye(1))
        ...     return kj.kalman_filter(dyn, obs), kj.Gaussian(jnp.zeros(1), jnp.eye(1))
        >>> ys = jax.random.normal(jax.random.key(0), (50, 1))
        >>> start = {"q": jnp.array(1.0), "r": jnp.array(1.0)}
        >>> fit = kj.fit_marginal_likelihood(build, start, ys, optax.adam(0.05),
        ...     constraints={"q": C.positive(), "r": C.positive()}, num_steps=50)
        >>> bool(fit.loss < fit.losses[0]), bool(fit.params["q"] > 0)
        (True, True)
    """
    owner = "fit_marginal_likelihood"
    try:
        import optax  # noqa: PLC0415  (optional dependency)
    except ImportError as err:
        raise ImportError(
            f"{owner} needs optax: pip install 'kalmanjax[experiments]'"
        ) from err
    start = unconstrain(constraints, params)
    _check_feasible(start, owner)
    ys = get_obs(xs)
    if lengths is not None and not batch:
        raise ValueError(f"{owner}: lengths needs batch=True")
    observed = ~jnp.isnan(ys)
    if lengths is not None:  # padding is not data
        steps = jnp.arange(ys.shape[1], dtype=jnp.int32)
        inside = steps[None, :] < jnp.asarray(lengths).astype(jnp.int32)[:, None]
        observed = observed & inside.reshape(inside.shape + (1,) * (ys.ndim - 2))
    num = jnp.sum(observed)
    if (count := _concrete(num)) is not None and int(count) == 0:
        raise ValueError(f"{owner}: xs has no observed (non-NaN) entry")
    dtype = jax.tree_util.tree_leaves(start)[0].dtype
    num = num.astype(dtype)

    def loss(u):
        filt, prior = build(constrain(constraints, u))
        if batch:
            out = run_batch(
                filt,
                prior,
                xs,
                lengths=lengths,
                lean=True,
                parallel=parallel,
                update_first=update_first,
            )
            ll = jnp.sum(out.infos.log_likelihood)
        else:
            ll = log_marginal_likelihood(
                filt, prior, xs, parallel=parallel, update_first=update_first
            )
        return -ll / num

    tx = optax.with_extra_args_support(optimizer)

    def body(carry, _):
        u, state = carry
        value, grads = jax.value_and_grad(loss)(u)
        # optax raises an int32 step count to float powers, which strict dtype
        # promotion rejects: standard promotion for the optimiser's update only
        with jax.numpy_dtype_promotion("standard"):
            updates, state = tx.update(
                grads, state, u, value=value, grad=grads, value_fn=loss
            )
            u = optax.apply_updates(u, updates)
        return (u, state), value

    (u, _), losses = lax.scan(body, (start, tx.init(start)), None, length=num_steps)
    return MarginalLikelihoodFit(
        params=constrain(constraints, u), unconstrained=u, losses=losses, loss=loss(u)
    )


def _concrete(x: Any) -> np.ndarray | None:
    """``x`` as a NumPy array, or ``None`` under a trace."""
    try:
        return np.asarray(x)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return None


def _check_feasible(unconstrained: Any, owner: str) -> None:
    """Raise if concrete starting parameters map to non-finite variables."""
    for path, leaf in jax.tree_util.tree_leaves_with_path(unconstrained):
        value = _concrete(leaf)
        if value is not None and not np.all(np.isfinite(value)):
            raise ValueError(
                f"{owner}: params{jax.tree_util.keystr(path)} is infeasible under "
                "its constraint (its unconstrained value is not finite: a variance "
                "of 0, a matrix that is not positive definite, a value on a bound)"
            )
