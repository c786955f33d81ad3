"""Trace-time validation of shapes and dtypes, with messages that name the argument.

Shapes and dtypes are static under ``jit``, so every check here runs once per trace
and costs nothing at run time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import jax.numpy as jnp
import numpy as np

_F = TypeVar("_F", bound=Callable[..., Any])


def no_type_check(fn: _F) -> _F:
    """Mark ``fn`` as validating its own arguments; run-time type checks skip it.

    jaxtyping's import hook (the tests run kalmanjax under it) leaves alone the
    functions decorated with a decorator named ``no_type_check``, so their own
    checks, whose messages name the argument and the shape expected, report bad
    input. Unlike ``typing.no_type_check``, static checkers keep the annotations.
    """
    return fn


#: the dtypes LAPACK's factorisations (Cholesky, QR, eigh) accept
LAPACK_DTYPES = ("float32", "float64")


def _require_array(x: Any, name: str, owner: str) -> None:
    """Raise on a Python list or tuple where an array is expected."""
    if isinstance(x, list | tuple):
        raise TypeError(
            f"{owner}: {name} is a Python {type(x).__name__}; pass an array "
            "(jnp.asarray(...)) so that its dtype is explicit"
        )


def check_lapack_dtype(dtype: Any, owner: str, what: str = "form='sqrt'") -> None:
    """Raise unless ``dtype`` is one that LAPACK's factorisations accept."""
    name = jnp.dtype(dtype).name
    if name not in LAPACK_DTYPES:
        raise TypeError(
            f"{owner}: {what} needs float32 or float64 (its Cholesky and QR "
            f"factorisations run in LAPACK, which has no {name} kernels); got "
            f"{name}: use form='dense', or cast to float32"
        )


def _shape(x: Any) -> tuple[int, ...]:
    return tuple(np.shape(x))


def _dtype(x: Any) -> Any:
    return jnp.result_type(x)


def check_array(
    x: Any,
    name: str,
    shape: tuple[int, ...],
    dtype: Any,
    what: str,
    owner: str,
    ref: str = "the belief",
) -> None:
    """Raise if ``x`` does not have ``shape`` and floating ``dtype``.

    Args:
        x: the array to check.
        name: the argument's name in messages (e.g. ``"observation.H"``).
        shape: the expected shape.
        dtype: the expected dtype (the belief's).
        what: the expected shape in words, e.g. ``"(obs, state)"``.
        owner: the function reported in messages.
        ref: what ``dtype`` was taken from, for messages.
    """
    if _shape(x) != tuple(shape):
        raise ValueError(
            f"{owner}: {name} must have shape {tuple(shape)} {what}, got {_shape(x)}"
        )
    check_dtype(x, name, dtype, owner, ref)


def check_dtype(
    x: Any, name: str, dtype: Any, owner: str, ref: str = "the belief"
) -> None:
    """Raise if ``x`` is not of the floating dtype ``dtype`` (taken from ``ref``)."""
    _require_array(x, name, owner)
    got = _dtype(x)
    if got != dtype:
        raise TypeError(
            f"{owner}: {name} has dtype {got} but {ref} is {dtype}; "
            "pass every array in one floating dtype (dtype in = dtype out)"
        )


def check_square(x: Any, name: str, owner: str) -> int:
    """Raise unless ``x`` is a square matrix; return its size."""
    _require_array(x, name, owner)
    s = _shape(x)
    if len(s) != 2 or s[0] != s[1]:
        raise ValueError(f"{owner}: {name} must be a square matrix, got shape {s}")
    return s[0]


def check_mean(
    mean: Any, owner: str, name: str = "belief.mean", hint: str = ""
) -> tuple[int, Any]:
    """Raise unless ``mean`` is a floating vector; return ``(state_dim, dtype)``.

    Args:
        mean: the state (a belief's mean, or a parameter vector).
        owner: the function reported in messages.
        name: the argument's name in messages.
        hint: appended to the shape error, e.g. how to batch.
    """
    _require_array(mean, name, owner)
    if len(_shape(mean)) != 1:
        hint = f" ({hint})" if hint else ""
        raise ValueError(
            f"{owner}: {name} must be a vector of shape (state,), got "
            f"{_shape(mean)}{hint}"
        )
    dtype = _dtype(mean)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"{owner}: {name} must be floating, got {dtype}")
    return _shape(mean)[0], dtype


def check_belief(belief: Any, owner: str) -> tuple[int, Any]:
    """Validate a Gaussian or SqrtGaussian belief; return ``(state_dim, dtype)``."""
    n, dtype = check_mean(
        belief.mean, owner, hint="batch with jax.vmap, not with leading axes"
    )
    field = "chol" if hasattr(belief, "chol") else "cov"
    check_array(
        getattr(belief, field),
        f"belief.{field}",
        (n, n),
        dtype,
        "(state, state)",
        owner,
    )
    return n, dtype


def check_dynamics(
    dyn: Any, n: int, dtype: Any, owner: str, ref: str = "the belief"
) -> None:
    """Validate a LinearDynamics against state dimension ``n`` and ``dtype``."""
    check_array(dyn.F, "dynamics.F", (n, n), dtype, "(state, state)", owner, ref)
    check_array(dyn.Q, "dynamics.Q", (n, n), dtype, "(state, state)", owner, ref)
    if dyn.b is not None:
        check_array(dyn.b, "dynamics.b", (n,), dtype, "(state,)", owner, ref)


def check_observation(obs_model: Any, n: int, dtype: Any, owner: str) -> int:
    """Validate a LinearObservation against ``n`` and ``dtype``; return ``obs`` dim."""
    s = _shape(obs_model.H)
    if len(s) != 2 or s[1] != n:
        raise ValueError(
            f"{owner}: observation.H must have shape (obs, {n}) (obs, state), got {s}"
        )
    m = s[0]
    check_dtype(obs_model.H, "observation.H", dtype, owner)
    check_array(obs_model.R, "observation.R", (m, m), dtype, "(obs, obs)", owner)
    if obs_model.d is not None:
        check_array(obs_model.d, "observation.d", (m,), dtype, "(obs,)", owner)
    return m


def check_vector(x: Any, name: str, dtype: Any, owner: str) -> int:
    """Raise unless ``x`` is a vector of floating ``dtype``; return its length."""
    if len(_shape(x)) != 1:
        raise ValueError(
            f"{owner}: {name} must be a vector of shape (obs,), got {_shape(x)}"
        )
    check_dtype(x, name, dtype, owner)
    return _shape(x)[0]


def check_obs(y: Any, m: int, dtype: Any, owner: str) -> None:
    """Validate one observation vector of length ``m``."""
    check_array(y, "obs", (m,), dtype, "(obs,) with obs = H.shape[0]", owner)


def check_fn_output(
    value: Any,
    shape: tuple[int, ...] | None,
    name: str,
    what: str,
    dtype: Any,
    owner: str,
    ref: str = "the belief",
) -> None:
    """Raise unless a model function's output ``value`` has ``shape`` and ``dtype``.

    Args:
        value: the output (an array or a ``jax.ShapeDtypeStruct``).
        shape: the expected shape; ``None`` accepts any vector.
        name: the function, e.g. ``"observation.fn"``.
        what: the expected shape in words, e.g. ``"(obs,)"``.
        dtype: the state's dtype (dtype in = dtype out).
        owner: the function reported in messages.
        ref: what ``dtype`` was taken from, for messages.
    """
    if shape is None:
        if len(_shape(value)) != 1:
            raise ValueError(
                f"{owner}: {name} must return a vector of shape {what}, got shape "
                f"{_shape(value)}"
            )
    elif _shape(value) != tuple(shape):
        raise ValueError(
            f"{owner}: {name} returned shape {_shape(value)}; expected "
            f"{tuple(shape)} {what}"
        )
    check_dtype(value, f"the output of {name}", dtype, owner, ref)


def check_token(token: Any, owner: str) -> None:
    """Raise unless ``token`` is an integer scalar (a token id)."""
    if _shape(token) != () or not jnp.issubdtype(_dtype(token), jnp.integer):
        raise TypeError(
            f"{owner}: a categorical observation is an integer token id of shape (), "
            f"got shape {_shape(token)} and dtype {_dtype(token)}"
        )


def check_num_iter(num_iter: Any, owner: str) -> None:
    """Raise unless ``num_iter`` is a (static) integer >= 1."""
    if not isinstance(num_iter, int | np.integer) or num_iter < 1:
        raise ValueError(f"{owner}: num_iter must be an integer >= 1, got {num_iter!r}")
