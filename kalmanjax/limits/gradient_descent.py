r"""The gradient-descent limit of the frozen-covariance filter (theory.md, C4).

Freeze the prior covariance at every step, :math:`P^- = \sigma^2 I` (no covariance
propagation), take :math:`R = r I` and linearise :math:`h` at the mean. The Kalman
step is then

.. math::

    m \leftarrow m + \eta J^\top (\eta J J^\top + I)^{-1} e,
    \qquad \eta = \sigma^2 / r, \quad e = y - h(m),

which depends on :math:`(\sigma^2, r, J)` only through :math:`\eta J J^\top`. As
:math:`\eta |J|^2 \to 0` (for a fixed :math:`\eta`: a vanishing Jacobian; for a
fixed stream: a vanishing :math:`\eta`) the gain tends to :math:`\eta J^\top` and
the step to one SGD step with learning rate :math:`\eta` on
:math:`\ell(\theta) = \tfrac12 |y - h(\theta)|^2`, since :math:`J^\top e =
-\nabla\ell`. The difference is
:math:`-\eta J^\top \eta J J^\top (I + \eta J J^\top)^{-1} e`: relative to the
step it is :math:`O(\eta |J|^2)` (order 1), in absolute terms :math:`O(\eta^2)`
at fixed data (order 2). A general frozen :math:`P^- = \eta r \bar P` gives
preconditioned gradient descent :math:`m + \eta \bar P J^\top e` in the same way
(diagonal :math:`\bar P`: per-coordinate learning rates; :math:`\bar P = F^{-1}`:
fixed-step natural gradient).

* :func:`frozen_covariance_filter`: the filter on the path (``kj.update`` with the
  frozen covariance; :math:`O(k^2)` memory);
* :func:`gd_limit_filter`: the limit itself, :math:`m + \eta J^\top e` by one
  vector-Jacobian product (:math:`O(k)` memory, the cost of ``optax.sgd``);
* :func:`gd_gap_path`: the gap between the two along a path of :math:`\eta`,
  measured against ``optax.sgd`` itself.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, ArrayLike, Float

from ..core.beliefs import Gaussian, SqrtGaussian
from ..core.filter import Filter
from ..core.models import get_obs
from ..drivers.filtering import run
from ._filters import linearized_filter
from ._linearize import ObservationFn, as_matrix, check_state, evaluate
from ._paths import GapPath
from .optax_bridge import apply_preconditioner, precondition

__all__ = [
    "LimitInfo",
    "frozen_covariance_filter",
    "gd_gap_path",
    "gd_limit_filter",
]


class LimitInfo(NamedTuple):
    r"""What a noise-free limit step reports (there is no likelihood left).

    Attributes:
        loss: :math:`\tfrac12 |y - h(m)|^2` at the mean before the step, ``()``.
        innovation: :math:`e = y - h(m)`, shape ``(obs,)``; zero where ``y`` is
            missing (NaN).
    """

    loss: Float[Array, ""]
    innovation: Float[Array, " obs"]


def frozen_covariance_filter(h: ObservationFn, noise_cov: Any = 1.0) -> Filter:
    r"""The Kalman filter with a frozen prior covariance (no propagation).

    The state is a ``Gaussian(mean, cov)`` whose ``cov`` is the prior covariance
    :math:`P` and never changes; each step linearises ``h`` at the mean
    (``jax.jacfwd``), conditions :math:`\mathcal N(m, P)` on :math:`y_t` with
    :func:`kalmanjax.update` and keeps only the new mean:
    :math:`m \leftarrow m + P J^\top (J P J^\top + R)^{-1} (y - h(m))`.

    With :math:`P = \sigma^2 I`, :math:`R = rI` and :math:`\sigma^2|J|^2/r \to 0`
    this tends to SGD with :math:`\eta = \sigma^2/r` (:func:`gd_limit_filter`);
    with :math:`R = 0` it is the Kaczmarz / normalised-LMS projection
    (:func:`kalmanjax.limits.projection_filter` with ``frozen=True``).

    Args:
        h: the observation function ``h(theta, inputs) -> (obs,)``; ``inputs``
            is the step's slice of ``xs`` (the observation under ``"obs"``).
        noise_cov: :math:`R`: a scalar :math:`r` (:math:`R = rI`), an ``(obs,)``
            diagonal or an ``(obs, obs)`` matrix.

    Returns:
        A :class:`kalmanjax.Filter` whose state is the ``Gaussian`` (frozen
        ``cov``) and whose info is a :class:`kalmanjax.UpdateInfo`.

    Examples:
        >>> import jax.numpy as jnp
        >>> import kalmanjax as kj
        >>> h = lambda th, u: u["x"] @ th
        >>> filt = frozen_covariance_filter(h, noise_cov=1.0)
        >>> prior = kj.Gaussian(mean=jnp.zeros(2), cov=0.01 * jnp.eye(2))
        >>> xs = {"obs": jnp.ones((3, 1)), "x": jnp.ones((3, 1, 2))}
        >>> out = kj.run(filt, prior, xs)
        >>> [round(v, 4) for v in out.final.mean.tolist()]
        [0.0288, 0.0288]
        >>> bool(jnp.all(out.final.cov == prior.cov))  # frozen
        True
    """
    return linearized_filter(
        h, noise_cov, frozen=True, owner="frozen_covariance_filter"
    )


def gd_limit_filter(h: ObservationFn, learning_rate: Any) -> Filter:
    r"""The limit filter: one (preconditioned) SGD step per token.

    :math:`m \leftarrow m + \eta\, J^\top e` with :math:`e = y - h(m)`, computed
    with one ``jax.vjp`` of ``h`` (no Jacobian, no covariance: :math:`O(k)` memory
    for :math:`k` parameters). The state is the mean vector itself.

    Args:
        h: ``h(theta, inputs) -> (obs,)`` as in :func:`frozen_covariance_filter`.
        learning_rate: :math:`\eta = \sigma^2 / r`: a scalar (SGD), a ``(k,)``
            vector (per-coordinate rates :math:`(\Sigma_0)_{ii}/r`, Meta-SGD) or a
            ``(k, k)`` matrix (:math:`\eta F^{-1}`: fixed-step natural gradient).

    Returns:
        A :class:`kalmanjax.Filter`; ``init`` accepts a belief (its mean is used)
        or a mean vector; the info is a :class:`LimitInfo`.

    Examples:
        >>> import jax.numpy as jnp
        >>> import kalmanjax as kj
        >>> h = lambda th, u: u["x"] @ th
        >>> xs = {"obs": jnp.ones((3, 1)), "x": jnp.ones((3, 1, 2))}
        >>> out = kj.run(gd_limit_filter(h, 0.01), jnp.zeros(2), xs)
        >>> [round(v, 4) for v in out.final.tolist()]
        [0.0294, 0.0294]
    """
    owner = "gd_limit_filter"

    def init(prior: Any) -> jax.Array:
        mean = prior.mean if isinstance(prior, Gaussian | SqrtGaussian) else prior
        check_state(mean, f"{owner}.init")
        return mean

    def step(theta: jax.Array, inputs: Any):
        check_state(theta, f"{owner}.step")
        y = get_obs(inputs)
        pred, vjp = jax.vjp(lambda th: evaluate(h, th, inputs, owner), theta)
        if jnp.shape(y) != pred.shape:
            raise ValueError(
                f"{owner}: the observation has shape {jnp.shape(y)} but h returns "
                f"{pred.shape}"
            )
        e = jnp.where(jnp.isnan(y), 0.0, y - pred).astype(theta.dtype)
        (jte,) = vjp(e)  # J^T e = -grad 1/2 |y - h|^2
        new = theta + apply_preconditioner(learning_rate, jte, owner)
        return new, LimitInfo(loss=0.5 * jnp.sum(e * e), innovation=e)

    return Filter(init=init, step=step)


def _sgd_reference(h, m0, xs, tx, precond):
    """Run an optax transformation over the stream on the per-token loss."""

    def loss(theta, inputs):
        return 0.5 * jnp.sum((get_obs(inputs) - h(theta, inputs)) ** 2)

    def body(carry, inputs):
        theta, state = carry
        g = jax.grad(loss)(theta, inputs)
        J = jax.jacfwd(h)(theta, inputs)
        gain = jnp.trace(J @ precond @ J.T)  # |J|^2 in the metric of P-bar
        upd, state = tx.update(g, state, theta)
        return (optax.apply_updates(theta, upd), state), gain

    (theta, _), gains = jax.lax.scan(body, (m0, tx.init(m0)), xs)
    return theta, jnp.mean(gains)


def gd_gap_path(
    h: ObservationFn,
    prior_mean: Float[ArrayLike, " k"],
    xs: Any,
    learning_rates: Float[ArrayLike, " L"],
    *,
    preconditioner: Any = None,
) -> GapPath:
    r"""Gap between the frozen-covariance filter and ``optax.sgd`` along a path.

    For each :math:`\eta` in ``learning_rates`` the filter runs over ``xs`` from
    ``prior_mean`` with frozen covariance :math:`P = \eta \bar P` and
    :math:`R = I` (any :math:`r` gives the same means for
    :math:`P = \eta r \bar P`), and ``optax.sgd(eta)`` (chained after
    :func:`~kalmanjax.limits.optax_bridge.precondition` when :math:`\bar P \ne I`)
    runs over the same tokens on :math:`\tfrac12|y_t - h(\theta, u_t)|^2`. The
    path variable is :math:`\eta\,\overline{|J|^2}`, the mean over tokens of
    :math:`\operatorname{tr}(J_t \bar P J_t^\top)` along the SGD iterates.
    Predicted: ``relative_gap`` of order 1 in the path, ``gap`` of order 2 in
    :math:`\eta`.

    Args:
        h: ``h(theta, inputs) -> (obs,)``.
        prior_mean: :math:`m_0`, shape ``(k,)``.
        xs: the per-step inputs (leading time axis ``T``; ``"obs"`` of shape
            ``(T, obs)``).
        learning_rates: the path :math:`\eta`, shape ``(L,)``.
        preconditioner: :math:`\bar P` (scalar, ``(k,)`` or ``(k, k)``); ``None``
            is :math:`I` (plain SGD).

    Returns:
        A :class:`~kalmanjax.limits.GapPath` with ``parameter`` = :math:`\eta`.

    Examples:
        >>> import jax.numpy as jnp
        >>> from kalmanjax.limits import loglog_slope
        >>> h = lambda th, u: u["x"] @ th
        >>> xs = {"obs": jnp.ones((4, 1)), "x": jnp.ones((4, 1, 2))}
        >>> p = gd_gap_path(h, jnp.zeros(2), xs, jnp.array([1e-2, 1e-3]))
        >>> round(loglog_slope(p.path, p.relative_gap))
        1
    """
    owner = "gd_gap_path"
    m0 = jnp.asarray(prior_mean)
    n, dtype = check_state(m0, owner)
    etas = jnp.asarray(learning_rates, dtype)
    if etas.ndim != 1:
        raise ValueError(
            f"{owner}: learning_rates must be a vector (L,), got {etas.shape}"
        )
    pbar = as_matrix(
        1.0 if preconditioner is None else preconditioner,
        n,
        dtype,
        "preconditioner",
        owner,
    )
    filt = frozen_covariance_filter(h, noise_cov=1.0)

    def one(eta):
        out = run(filt, Gaussian(mean=m0, cov=eta * pbar), xs, lean=True)
        tx = optax.sgd(eta)
        if preconditioner is not None:
            tx = optax.chain(precondition(pbar), tx)
        ref, mean_gain = _sgd_reference(h, m0, xs, tx, pbar)
        gap = jnp.linalg.norm(out.final.mean - ref)
        return eta * mean_gain, gap, gap / jnp.linalg.norm(ref - m0)

    path, gap, rel = jax.vmap(one)(etas)
    return GapPath(parameter=etas, path=path, gap=gap, relative_gap=rel)
