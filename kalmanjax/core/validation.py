r"""Validation of values: the checks that shapes and dtypes cannot make.

The filters check shapes and dtypes at trace time, which costs nothing at run
time. Values (NaN or inf in a model array, a covariance that is not positive
semi-definite, a token id outside the vocabulary) can only be checked on concrete
arrays. :func:`validate` does that, in the spirit of TensorFlow Probability's
``validate_args``: call it once on the inputs of a run, outside ``jit``, and it
raises a ``ValueError`` naming the argument (and the step, for a model that is a
function of the inputs).

What the filters do with such values without validation (documented behaviour):
a NaN observation is missing data; a token id outside ``0..V-1`` is missing (it
never updates a belief); NaN or inf in a model array or the prior propagates to
NaN outputs; covariances are read as :math:`(A + A^\top)/2`; a fixed ``Q``,
``R`` or prior covariance that is not positive semi-definite (the tolerance of
:data:`~kalmanjax.core.linalg.PSD_TOLERANCE_EPS`, the same here) is all NaN in
every form and path, while one returned per step by a function of the inputs is
not checked (the dense forms use it as given, the square-root form's factor of
it is undefined); an extended filter whose observation function has a NaN
Jacobian where it is linearised is NaN from that step on.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .beliefs import DiagonalGaussian, Gaussian, LowRankGaussian, SqrtGaussian
from .linalg import PSD_TOLERANCE_EPS
from .models import (
    CategoricalObservation,
    DiagonalDynamics,
    LinearDynamics,
    LinearObservation,
    NonlinearDynamics,
    NonlinearObservation,
    get_obs,
    resolve,
)

__all__ = ["validate"]


def _fail(name: str, problem: str, step: int | None) -> None:
    where = "" if step is None else f" at step {step} (xs[{step}])"
    raise ValueError(f"kalmanjax.validate: {name}{where} {problem}")


def _finite(a: Any, name: str, step: int | None) -> np.ndarray:
    a = np.asarray(a)
    bad = ~np.isfinite(a)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        _fail(name, f"contains NaN or inf (first at index {first})", step)
    return a


def _psd(a: Any, name: str, step: int | None) -> None:
    a = _finite(a, name, step).astype(np.float64)
    sym = 0.5 * (a + a.T)
    w = np.linalg.eigvalsh(sym)
    scale = max(float(np.max(np.abs(w))), np.finfo(np.float64).tiny)
    tol = PSD_TOLERANCE_EPS * np.finfo(np.asarray(a).dtype).eps * scale
    if w[0] < -tol:
        _fail(
            name,
            f"is not positive semi-definite (smallest eigenvalue {w[0]:.3g} of "
            f"(A + A^T)/2, largest {w[-1]:.3g})",
            step,
        )
    if not np.allclose(a, a.T, rtol=1e-5, atol=tol):
        _fail(name, "is not symmetric (it is read as (A + A^T)/2)", step)


def _per_step(model: Any, xs: Any) -> list[tuple[Any, int | None]]:
    """``[(model at step, step)]``: the model itself, or its value at every step."""
    if not callable(model):
        return [(model, None)]
    if xs is None:
        raise ValueError(
            "kalmanjax.validate: the model is a function of the inputs; pass xs"
        )
    leaves = jax.tree_util.tree_leaves(xs)
    num_steps = int(np.shape(leaves[0])[0]) if leaves else 0
    return [
        (resolve(model, jax.tree_util.tree_map(lambda a, t=t: a[t], xs)), t)
        for t in range(num_steps)
    ]


def _variances(a: Any, name: str, step: int | None, positive: bool = False) -> None:
    a = _finite(a, name, step)
    bad = a <= 0 if positive else a < 0
    if np.any(bad):
        sign = "positive" if positive else "non-negative"
        first = tuple(int(i) for i in np.argwhere(np.atleast_1d(bad))[0])
        _fail(name, f"must be {sign} (first bad entry at index {first})", step)


def _dynamics(dynamics: Any, xs: Any) -> None:
    for dyn, step in _per_step(dynamics, xs):
        if isinstance(dyn, (LinearDynamics, DiagonalDynamics)):
            _finite(dyn.F, "dynamics.F", step)
        if getattr(dyn, "b", None) is not None:
            _finite(dyn.b, "dynamics.b", step)
        if isinstance(dyn, DiagonalDynamics):
            _variances(dyn.Q, "dynamics.Q", step)
        else:
            _psd(dyn.Q, "dynamics.Q", step)


def _observation(observation: Any, xs: Any) -> None:
    for obs, step in _per_step(observation, xs):
        if isinstance(obs, LinearObservation):
            _finite(obs.H, "observation.H", step)
            if obs.d is not None:
                _finite(obs.d, "observation.d", step)
        if isinstance(obs, (LinearObservation, NonlinearObservation)):
            _psd(obs.R, "observation.R", step)


def _prior(prior: Any) -> None:
    _finite(prior.mean, "prior.mean", None)
    if isinstance(prior, SqrtGaussian):
        _finite(prior.chol, "prior.chol", None)
    elif isinstance(prior, Gaussian):
        _psd(prior.cov, "prior.cov", None)
    elif isinstance(prior, DiagonalGaussian):
        _variances(prior.var, "prior.var", None)
    elif isinstance(prior, LowRankGaussian):
        _variances(prior.precision_diag, "prior.precision_diag", None, positive=True)
        _finite(prior.precision_factor, "prior.precision_factor", None)


def _differentiable_at(fn: Any, x: Any, inputs: Any, name: str, where: str) -> Any:
    """``fn(x, inputs)``, after checking that it and its Jacobian are finite."""
    step = None if inputs is None else 0
    value = np.asarray(fn(x, inputs))
    if not np.all(np.isfinite(value)):
        _fail(name, f"is NaN or inf at {where}", step)
    if not np.all(np.isfinite(np.asarray(jax.jacfwd(fn)(x, inputs)))):
        _fail(
            name,
            f"has a NaN or inf Jacobian at {where}, where the extended filter "
            "linearises it (without validation its outputs are NaN from there on)",
            step,
        )
    return value


def _first_linearisation(dynamics: Any, observation: Any, prior: Any, xs: Any):
    """Where the extended filter first linearises: the prior and predicted means."""
    first = None if xs is None else jax.tree_util.tree_map(lambda a: a[0], xs)
    mean = jnp.asarray(prior.mean)
    dyn = None if dynamics is None else resolve(dynamics, first)
    if isinstance(dyn, NonlinearDynamics):
        mean = jnp.asarray(
            _differentiable_at(dyn.fn, mean, first, "dynamics.fn", "the prior mean")
        )
    elif isinstance(dyn, LinearDynamics):
        mean = dyn.F @ mean + (0.0 if dyn.b is None else dyn.b)
    elif isinstance(dyn, DiagonalDynamics):
        mean = dyn.F * mean + (0.0 if dyn.b is None else dyn.b)
    obs = None if observation is None else resolve(observation, first)
    if isinstance(obs, (NonlinearObservation, CategoricalObservation)):
        _differentiable_at(obs.fn, mean, first, "observation.fn", "the predicted mean")


def _observations(observation: Any, xs: Any, vocab_size: int | None) -> None:
    ys = np.asarray(get_obs(xs))
    categorical = isinstance(observation, CategoricalObservation)
    if categorical or vocab_size is not None:
        if not np.issubdtype(ys.dtype, np.integer):
            _fail("xs (tokens)", f"must be integer ids, got dtype {ys.dtype}", None)
        if vocab_size is not None:
            bad = (ys < 0) | (ys >= vocab_size)
            if bad.any():
                steps = np.flatnonzero(bad.reshape(bad.shape[0], -1).any(axis=1))
                _fail(
                    "xs (tokens)",
                    f"has ids outside 0..{vocab_size - 1} at steps "
                    f"{steps[:10].tolist()} (without validation they are missing)",
                    None,
                )
        return
    if np.isinf(ys).any():
        first = tuple(int(i) for i in np.argwhere(np.isinf(ys))[0])
        _fail(
            "xs (observations)",
            f"contains inf at index {first} (NaN is missing data)",
            None,
        )


def validate(
    *,
    dynamics: Any = None,
    observation: Any = None,
    prior: Any = None,
    xs: Any = None,
    vocab_size: int | None = None,
) -> None:
    r"""Check the values of a run's inputs; raise ``ValueError`` at the first bad one.

    Checks that every model array and the prior are finite, that ``Q``, ``R`` and
    the prior covariance are symmetric positive semi-definite (to
    :data:`PSD_TOLERANCE_EPS` rounding), that observations hold no inf (NaN is
    missing data), and that token ids lie in ``0..vocab_size-1``. A model given as a
    function of the inputs is evaluated and checked at every step of ``xs``. With a
    ``prior``, a nonlinear model's function and its Jacobian must be finite where
    the extended filter first linearises it (the prior mean for the dynamics, the
    first predicted mean for the observation). Call it on concrete arrays, outside
    ``jit``; it returns ``None``.

    Args:
        dynamics: a ``LinearDynamics`` / ``DiagonalDynamics`` (variances ``Q >=
            0``) / ``NonlinearDynamics`` or a function of the inputs (then ``xs``
            is needed).
        observation: a ``LinearObservation`` / ``NonlinearObservation`` /
            ``CategoricalObservation`` or a function of the inputs.
        prior: a ``Gaussian``, ``SqrtGaussian``, ``DiagonalGaussian`` (variances
            ``>= 0``) or ``LowRankGaussian`` (precision diagonal ``> 0``).
        xs: the per-step inputs, leading axis ``time`` (see :func:`kalmanjax.run`).
        vocab_size: :math:`V` for token streams (checks the ids in ``xs``).

    Raises:
        ValueError: naming the argument, the step (for a time-varying model) and
            what is wrong.

    Examples:
        >>> import jax.numpy as jnp
        >>> import kalmanjax as kj
        >>> dyn = kj.LinearDynamics(F=jnp.eye(2), Q=jnp.diag(jnp.array([1.0, -0.5])))
        >>> kj.validate(dynamics=dyn)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: kalmanjax.validate: dynamics.Q is not positive semi-definite ...
    """
    if dynamics is not None:
        _dynamics(dynamics, xs)
    if observation is not None:
        _observation(observation, xs)
    if prior is not None:
        _prior(prior)
        _first_linearisation(dynamics, observation, prior, xs)
    if xs is not None:
        _observations(observation, xs, vocab_size)
