r"""Drivers: run a :class:`~kalmanjax.Filter` over a sequence with ``jax.lax.scan``.

Time convention (one convention for the whole library):

* ``prior`` is the belief over :math:`x_0`, *before* the first transition;
* step :math:`t = 1..T` consumes ``xs[t-1]``: it predicts :math:`x_t` from
  :math:`x_{t-1}` with the dynamics of that step, then conditions on :math:`y_t`;
* ``states[t-1]`` is the filtered belief :math:`p(x_t \mid y_{1:t})` and
  ``infos[t-1]`` holds :math:`\log p(y_t \mid y_{1:t-1})`.

There is no observation of :math:`x_0`. The convention of pykalman, filterpy
and dynamax, in which :math:`y_0` observes :math:`x_0` (the prior is over the
first observed state), is ``update_first=True``: the first slice of ``xs`` only
conditions the prior (its dynamics are not used), ``states[0]`` is
:math:`p(x_0 \mid y_0)` and ``states[t]`` is :math:`p(x_t \mid y_{0:t})`. The
smoothers need no flag: ``states[k]`` is smoothed with the dynamics of
``xs[k + 1]`` in both conventions.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from ..core.batching import batched, lapack_flops
from ..core.filter import Filter, FilterResult
from ..core.scan import Parallel, prefix_scan, scan_method

__all__ = ["log_marginal_likelihood", "run", "run_batch"]


def _scalar_fields(info: Any, ndim: int = 0) -> Any:
    """Keep the leaves that are per-step scalars (``ndim`` axes: 1 once stacked)."""
    return jax.tree_util.tree_map(lambda x: x if jnp.ndim(x) == ndim else None, info)


def run(
    filter: Filter,  # noqa: A002  (the natural name; shadows nothing used here)
    prior: Any,
    xs: Any,
    *,
    lean: bool = False,
    parallel: Parallel = False,
    update_first: bool = False,
    unroll: int = 1,
) -> FilterResult:
    r"""Run ``filter`` over the per-step inputs ``xs`` with ``jax.lax.scan``.

    Args:
        filter: a ``Filter(init, step)``, e.g. from :func:`kalmanjax.kalman_filter`.
        prior: the belief over :math:`x_0` (before the first transition).
        xs: the per-step inputs, every leaf with a leading time axis ``T``: an
            array of observations ``(T, obs)`` (NaN = missing), or a pytree whose
            ``"obs"`` entry holds them and whose other leaves feed time-varying
            models.
        lean: keep only the final state and the per-step scalar infos
            (log-likelihood, information gain): memory independent of ``T``
            except for ``T`` scalars per field (sequential mode; the parallel
            scan holds all steps in memory either way).
        parallel: run the filter's temporally parallel form
            (``filter.associative``, an :class:`~kalmanjax.AssociativeForm`) as a
            prefix scan: the same results, for accelerators. ``True`` or
            ``"blocked"``: :func:`~kalmanjax.core.scan.prefix_scan`, whose program
            does not grow with ``T`` (span :math:`O(\sqrt T)` on CPU, about
            :math:`16 + \log T` elsewhere); ``"tree"``:
            ``lax.associative_scan`` (span :math:`O(\log T)`, compile time growing
            with ``T``). On CPU the sequential scan is faster (see
            ``benchmarks/``). A filter without one raises ``ValueError``.
        update_first: the first slice of ``xs`` conditions the prior without a
            prediction (``filter.update``), so ``prior`` is the belief over the
            first observed state (see the module's time convention). With
            ``parallel`` the rest runs in parallel from that conditioned belief.
        unroll: passed to ``lax.scan``.

    Returns:
        A :class:`FilterResult` ``(final, states, infos)``; ``states`` is ``None``
        in lean mode.

    Examples:
        >>> import jax.numpy as jnp
        >>> import kalmanjax as kj
        >>> filt = kj.kalman_filter(
        ...     kj.LinearDynamics(F=jnp.eye(1), Q=jnp.zeros((1, 1))),
        ...     kj.LinearObservation(H=jnp.eye(1), R=jnp.eye(1)),
        ... )
        >>> prior = kj.Gaussian(mean=jnp.zeros(1), cov=jnp.eye(1))
        >>> out = kj.run(filt, prior, jnp.ones((3, 1)), lean=True)
        >>> out.final.cov.round(4).tolist(), out.states is None
        ([[0.25]], True)
    """
    if update_first:
        return _run_update_first(filter, prior, xs, lean, parallel, unroll)
    if parallel:
        form = filter.associative
        if form is None:
            raise ValueError(
                "run: parallel=True but this filter has no parallel form "
                "(filter.associative is None); run it sequentially"
            )
        if jax.tree_util.tree_leaves(xs)[0].shape[0] > 0:
            method = scan_method(parallel)
            prefix = prefix_scan(form.combine, form.elements(prior, xs), method=method)
            result = form.finish(prior, xs, prefix)
            if lean:
                infos = _scalar_fields(result.infos, ndim=1)
                return FilterResult(final=result.final, states=None, infos=infos)
            return result
    return _scan(filter, filter.init(prior), xs, lean, unroll)


def _scan(filter: Filter, state: Any, xs: Any, lean: bool, unroll: int):  # noqa: A002
    """``filter.step`` over ``xs`` from the filter state ``state``."""
    if lean:

        def lean_body(carry, inputs):
            carry, info = filter.step(carry, inputs)
            return carry, _scalar_fields(info)

        final, infos = lax.scan(lean_body, state, xs, unroll=unroll)
        return FilterResult(final=final, states=None, infos=infos)

    def body(carry, inputs):
        carry, info = filter.step(carry, inputs)
        return carry, (carry, info)

    final, (states, infos) = lax.scan(body, state, xs, unroll=unroll)
    return FilterResult(final=final, states=states, infos=infos)


def _run_update_first(filter, prior, xs, lean, parallel, unroll) -> FilterResult:  # noqa: A002
    """``run`` in the convention where ``xs[0]`` observes the prior's state."""
    if filter.update is None:
        raise ValueError(
            "run: update_first=True but this filter has no update-only step "
            "(filter.update is None)"
        )
    if jax.tree_util.tree_leaves(xs)[0].shape[0] == 0:
        return run(filter, prior, xs, lean=lean, parallel=parallel, unroll=unroll)
    first = jax.tree_util.tree_map(lambda a: a[0], xs)
    rest = jax.tree_util.tree_map(lambda a: a[1:], xs)
    state, info = filter.update(filter.init(prior), first)
    if parallel:  # the Kalman filters' state is their belief: the rest's prior
        out = run(filter, state, rest, lean=lean, parallel=parallel, unroll=unroll)
    else:
        out = _scan(filter, state, rest, lean, unroll)
    if lean:
        info = _scalar_fields(info)
    stacked = jax.tree_util.tree_map(
        lambda a, b: jnp.concatenate([a[None], b], axis=0), info, out.infos
    )
    states = out.states
    if not lean:
        states = jax.tree_util.tree_map(
            lambda a, b: jnp.concatenate([a[None], b], axis=0), state, out.states
        )
    return FilterResult(final=out.final, states=states, infos=stacked)


def log_marginal_likelihood(
    filter: Filter,  # noqa: A002
    prior: Any,
    xs: Any,
    *,
    parallel: Parallel = False,
    update_first: bool = False,
) -> jax.Array:
    r""":math:`\log p(y_{1:T}) = \sum_t \log p(y_t \mid y_{1:t-1})`.

    Differentiable with respect to every array the filter closes over (build the
    filter inside the function you differentiate).

    Args:
        filter: a filter whose infos have a ``log_likelihood`` field.
        prior: the belief over :math:`x_0`.
        xs: the per-step inputs (see :func:`run`).
        parallel: use the filter's temporally parallel form (see :func:`run`).
        update_first: ``xs[0]`` observes the prior's state (see :func:`run`).

    Returns:
        A scalar in the prior's dtype.
    """
    out = run(
        filter, prior, xs, lean=True, parallel=parallel, update_first=update_first
    )
    return jnp.sum(out.infos.log_likelihood)


def run_batch(
    filter: Filter,  # noqa: A002
    prior: Any,
    xs: Any,
    *,
    lengths: jax.Array | None = None,
    lean: bool = False,
    parallel: Parallel = False,
    update_first: bool = False,
    unroll: int = 1,
) -> FilterResult:
    r"""Run ``filter`` over a batch of sequences, of one length or padded to one.

    Sequence ``b`` is ``xs[b, :lengths[b]]``; what lies beyond is padding. The
    filter runs over the padding and its results there are discarded, so the
    steps of all sequences stay in lockstep and whatever does not depend on
    the data is computed once for the batch, not per sequence: the covariance
    recursion of a linear filter with ``missing=False`` (``jax.vmap`` leaves it
    unbatched). Pad with finite values; with ``missing=True`` NaN padding works
    too (NaN padding with ``missing=False`` gives NaN gradients through the
    discarded steps).

    Args:
        filter: a :class:`kalmanjax.Filter`.
        prior: the belief over :math:`x_0`, shared by the batch.
        xs: per-step inputs with leading axes ``(batch, T)`` (see :func:`run`).
        lengths: ``(batch,)`` integers in ``[0, T]``; ``None``: all ``T``.
        lean: as for :func:`run`: no states, the scalar info fields only.
        parallel: the filter's parallel form (see :func:`run`), per sequence.
        update_first: ``xs[b, 0]`` observes the prior's state (see :func:`run`).
        unroll: passed to ``lax.scan``.

    Returns:
        A :class:`kalmanjax.FilterResult` with a leading batch axis: ``final[b]``
        is sequence ``b``'s belief after its own last step (the filter's initial
        state for a length of 0); ``states[b, t]`` for ``t >= lengths[b]``
        repeat ``final[b]``; every info leaf is 0 beyond the length, so
        ``infos.log_likelihood.sum(-1)`` is each sequence's log-likelihood.

    Raises:
        ValueError: if ``lengths`` is not ``(batch,)`` integers, or (when
            concrete) lies outside ``[0, T]``.

    Examples:
        >>> import jax.numpy as jnp
        >>> import kalmanjax as kj
        >>> dyn = kj.LinearDynamics(F=jnp.eye(1), Q=jnp.eye(1))
        >>> obs = kj.LinearObservation(H=jnp.eye(1), R=jnp.eye(1))
        >>> prior = kj.Gaussian(mean=jnp.zeros(1), cov=jnp.eye(1))
        >>> filt = kj.kalman_filter(dyn, obs, missing=False)
        >>> ys = jnp.ones((2, 3, 1))
        >>> out = kj.run_batch(filt, prior, ys, lengths=jnp.array([3, 1]))
        >>> [round(float(c), 3) for c in out.final.cov[:, 0, 0]]  # 13/21, 2/3
        [0.619, 0.667]
    """
    owner = "run_batch"
    leaves = jax.tree_util.tree_leaves(xs)
    if not leaves or jnp.ndim(leaves[0]) < 2:
        raise ValueError(f"{owner}: xs must have leading axes (batch, T)")
    num_seq, num_steps = jnp.shape(leaves[0])[:2]
    if lengths is None:
        lengths = jnp.full((num_seq,), num_steps, jnp.int32)
    lengths = jnp.asarray(lengths)
    if lengths.shape != (num_seq,) or not jnp.issubdtype(lengths.dtype, jnp.integer):
        raise ValueError(
            f"{owner}: lengths must be ({num_seq},) integers, got {lengths.shape} "
            f"{lengths.dtype}"
        )
    lengths = lengths.astype(jnp.int32)  # one integer type for the comparisons
    try:
        concrete = [int(v) for v in lengths]
    except (
        jax.errors.ConcretizationTypeError,
        jax.errors.TracerIntegerConversionError,
    ):
        concrete = []
    if concrete and not all(0 <= v <= num_steps for v in concrete):
        raise ValueError(
            f"{owner}: lengths must lie in [0, {num_steps}], got {concrete}"
        )
    n = max((jnp.shape(a)[-1] for a in jax.tree_util.tree_leaves(prior)), default=1)

    def one(seq, length):
        if parallel or not lean:
            out = run(
                filter,
                prior,
                seq,
                parallel=parallel,
                update_first=update_first,
                unroll=unroll,
            )
            final = _at_length(filter.init(prior), out.states, length)
            active = jnp.arange(num_steps, dtype=jnp.int32) < length
            states = jax.tree_util.tree_map(
                lambda a, f: jnp.where(_expand(active, a, 1), a, f[None]),
                out.states,
                final,
            )
            infos = _mask(out.infos, active)
            if lean:
                return FilterResult(final, None, _scalar_fields(infos, ndim=1))
            return FilterResult(final, states, infos)
        out = run(
            _capturing(filter, length),
            prior,
            seq,
            lean=True,
            update_first=update_first,
            unroll=unroll,
        )
        return FilterResult(out.final[1], None, out.infos)

    return batched(one, lapack_flops(n))(xs, lengths)


def _expand(mask: jax.Array, like: jax.Array, axis_count: int) -> jax.Array:
    """``mask`` with trailing axes to broadcast against ``like``."""
    return mask.reshape(mask.shape + (1,) * (jnp.ndim(like) - axis_count))


def _mask(infos: Any, active: jax.Array) -> Any:
    """Zero every info leaf where ``active`` is False (its first axes)."""
    return jax.tree_util.tree_map(
        lambda a: jnp.where(_expand(active, a, active.ndim), a, jnp.zeros_like(a)),
        infos,
    )


def _at_length(initial: Any, states: Any, length: jax.Array) -> Any:
    """``states[length - 1]``, or ``initial`` for a length of 0."""
    index = jnp.maximum(length - 1, 0)
    return jax.tree_util.tree_map(
        lambda s, a: jnp.where(length > 0, s[index], a), states, initial
    )


def _capturing(filter: Filter, length: jax.Array) -> Filter:  # noqa: A002
    """``filter`` with its state after ``length`` steps kept aside.

    The state is ``(state, captured, t)``: ``state`` runs on through the padding
    (unbatched where it does not depend on the data), ``captured`` is fixed once
    ``t`` reaches ``length``, and the infos beyond it are zero.
    """

    def init(prior):
        state = filter.init(prior)
        return state, state, jnp.zeros((), jnp.int32)

    def advance(advance_fn, carry, inputs):
        state, captured, t = carry
        state, info = advance_fn(state, inputs)
        captured = jax.tree_util.tree_map(
            lambda new, old: jnp.where(t + 1 == length, new, old), state, captured
        )
        return (state, captured, t + 1), _mask(info, t < length)

    update = filter.update
    return Filter(
        init=init,
        step=lambda carry, inputs: advance(filter.step, carry, inputs),
        update=None
        if update is None
        else (lambda carry, inputs: advance(update, carry, inputs)),
    )
