r"""The gradient-descent limit of the frozen-covariance filter (claim 6).

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
* :func:`~kalmanjax.limits.gd_gap_path` (in :mod:`kalmanjax.limits.gaps`, with
  optax): the gap between the two along a path of :math:`\eta`, measured against
  ``optax.sgd`` itself.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ..core.beliefs import Gaussian, SqrtGaussian
from ..core.filter import Filter
from ..core.models import get_obs
from ._common import ObservationFn, apply_preconditioner, check_state, checked
from ._filters import linearized_filter

__all__ = ["LimitInfo", "frozen_covariance_filter", "gd_limit_filter"]


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
    fn = checked(h, owner)

    def init(prior: Any) -> jax.Array:
        mean = prior.mean if isinstance(prior, Gaussian | SqrtGaussian) else prior
        check_state(mean, f"{owner}.init")
        return mean

    def step(theta: jax.Array, inputs: Any):
        check_state(theta, f"{owner}.step")
        y = get_obs(inputs)
        pred, vjp = jax.vjp(lambda th: fn(th, inputs), theta)
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
