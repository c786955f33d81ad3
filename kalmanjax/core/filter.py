"""Filters as data: ``Filter(init, step)``, its parallel form, infos and results.

Everything carried through a filter is a NamedTuple of arrays, so it is a pytree
that ``jax.jit``, ``jax.vmap`` and ``jax.lax.scan`` accept as it is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from jaxtyping import Array, Float

__all__ = ["AssociativeForm", "Filter", "FilterResult", "UpdateInfo"]


class UpdateInfo(NamedTuple):
    r"""What one Kalman update reports besides the new belief.

    With innovation :math:`e = y - (H m^- + d)` and innovation covariance
    :math:`S = H P^- H^\top + R`, restricted to the observed dimensions:

    Attributes:
        log_likelihood: :math:`\log \mathcal N(y \mid H m^- + d, S)`, shape ``()``.
        information_gain: :math:`\tfrac12 \log\det S - \tfrac12 \log\det R`, the
            mutual information between the state and this observation (nats),
            shape ``()``; equal to :math:`\tfrac12\log\det P^- -
            \tfrac12\log\det P` when :math:`P^-` is invertible.
        innovation: :math:`e`, shape ``(obs,)``; zero in missing dimensions.
        innovation_cov: :math:`S`, shape ``(obs, obs)``; a missing dimension has
            a unit diagonal entry and no correlation with the others.
    """

    log_likelihood: Float[Array, ""]
    information_gain: Float[Array, ""]
    innovation: Float[Array, " obs"] | None
    innovation_cov: Float[Array, "obs obs"] | None


class AssociativeForm(NamedTuple):
    r"""A filter's temporally parallel form: elements, a combine and a finish.

    ``run(filter, prior, xs, parallel=True)`` computes
    ``finish(prior, xs, prefix_scan(combine, elements(prior, xs)))``
    (:func:`kalmanjax.core.scan.prefix_scan`): a span far below :math:`O(T)`.

    Attributes:
        elements: ``elements(prior, xs) -> elems``, one element per step, every
            leaf with a leading ``time`` axis.
        combine: ``combine(earlier, later) -> elems``, associative, applied by
            the prefix scan to stacks of elements (so it works on a leading
            batch axis, like the function ``lax.associative_scan`` takes).
        finish: ``finish(prior, xs, prefix) -> FilterResult``: the result of the
            run from the prefix-combined elements.
    """

    elements: Callable[[Any, Any], Any]
    combine: Callable[[Any, Any], Any]
    finish: Callable[[Any, Any, Any], Any]


class Filter(NamedTuple):
    """A filter as a pair of pure functions (the optax ``init``/``update`` idiom).

    Attributes:
        init: ``init(prior) -> state``: the filter's state before the first step.
            For the Kalman filters the state is the belief itself.
        step: ``step(state, inputs) -> (state, info)``: one predict-then-update
            step on one time slice of the inputs (see :func:`kalmanjax.run`).
        associative: optional :class:`AssociativeForm`, the same filter over a
            whole sequence as a parallel prefix scan, used by
            ``run(..., parallel=True)``; ``None`` when the filter has none.
        update: optional ``update(state, inputs) -> (state, info)``: the step
            without its prediction, conditioning the state on the slice's
            observation only; ``run(..., update_first=True)`` applies it to the
            first slice (the convention in which :math:`y_0` observes :math:`x_0`).
            ``None`` when the filter has none.
    """

    init: Callable[[Any], Any]
    step: Callable[[Any, Any], tuple[Any, Any]]
    associative: AssociativeForm | None = None
    update: Callable[[Any, Any], tuple[Any, Any]] | None = None


class FilterResult(NamedTuple):
    """What :func:`kalmanjax.run` returns.

    Attributes:
        final: the state after the last step (for Kalman filters: the belief over
            :math:`x_T` given :math:`y_{1:T}`).
        states: the states after every step, stacked on a leading time axis of
            length ``T`` (filtered beliefs for :math:`t = 1..T`); ``None`` in lean
            mode.
        infos: the per-step infos stacked on a leading time axis; in lean mode only
            the scalar fields are kept and the others are ``None``.
    """

    final: Any
    states: Any
    infos: Any
