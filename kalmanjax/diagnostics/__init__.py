r"""Theory instruments: covariance collapse, information, observability, contraction.

Pure functions of stacked beliefs (a leading time axis, as returned in
``kalmanjax.run(...).states``), stacked :class:`~kalmanjax.UpdateInfo` and
sequences of observation matrices (token Jacobians). All of them work under
``jax.jit`` and ``jax.vmap``; shapes and the math are in each docstring. On CPU,
large batches of small matrices are factorised in chunks (``lax.map``) to avoid a
jaxlib thread-pool deadlock; when mapping a diagnostic over many tasks on CPU, use
``jax.lax.map`` over the tasks rather than ``jax.vmap`` (see the experiments).

One module per concept, all re-exported here (this namespace is the API):

* :mod:`~kalmanjax.diagnostics.collapse`: :func:`covariance_trace`,
  :func:`covariance_logdet`, :func:`covariance_eigenvalues`;
* :mod:`~kalmanjax.diagnostics.information`: :func:`cumulative_information`,
  :func:`information_from_covariances`, :func:`token_information`,
  :func:`duplicated_token_information`, :func:`token_information_matrices`;
* :mod:`~kalmanjax.diagnostics.observability`: :func:`observability_gramian`,
  :func:`gramian_covariance_bound`, :func:`windowed_covariance_bound`;
* :mod:`~kalmanjax.diagnostics.contraction`: :class:`LinearFit`,
  :func:`fit_exponential_rate`, :func:`tail_exponent`, :func:`loglog_slope`,
  :func:`inverse_t_ratio`, :func:`riccati_distance`;
* :mod:`~kalmanjax.diagnostics.calibration`: :class:`Calibration`,
  :func:`mse_calibration`;
* :mod:`~kalmanjax.diagnostics.convergence`: :func:`time_to_eps`,
  :func:`expected_mean_error`, :func:`mean_time_to_eps`;
* :mod:`~kalmanjax.diagnostics.selection`: :func:`greedy_token_order`;
* :mod:`~kalmanjax.diagnostics.arrays`: the shared plumbing (covariances out of
  beliefs, per-matrix maps through :func:`kalmanjax.core.batching.batched`).

Notation: :math:`\Sigma_t` is the filtered covariance after token :math:`t`,
:math:`\Sigma_0` the prior's, :math:`H_t` the observation matrix (token
Jacobian, ``(obs, state)``), :math:`R_t` its noise covariance and
:math:`J_t = H_t^\top R_t^{-1} H_t` the information a token carries.

Regimes of contraction (claim 4 of docs/theory.md), which these functions let one
tell apart:

* :math:`Q = 0`: :math:`\Sigma_t^{-1} = \Sigma_0^{-1} + \sum_{s \le t} J_s`, so with
  i.i.d. tokens :math:`\operatorname{tr}\Sigma_t \sim d\,r / (t\,\mathbb E[x^2])`:
  a :math:`1/t` tail (:func:`tail_exponent`, :func:`inverse_t_ratio`), not an
  exponential one;
* the early collapse phase (:math:`t < d` scalar tokens): the volume
  :math:`\det\Sigma_t` shrinks by :math:`e^{-2\,\Delta I_t}` per token
  (:func:`covariance_logdet`, :func:`fit_exponential_rate`);
* :math:`Q > 0`: geometric convergence towards a floor (``floor=`` in
  :func:`fit_exponential_rate`), and two initial covariances forget their
  difference geometrically in the Riemannian metric (:func:`riccati_distance`).
"""

from .calibration import Calibration, mse_calibration
from .collapse import covariance_eigenvalues, covariance_logdet, covariance_trace
from .contraction import (
    LinearFit,
    fit_exponential_rate,
    inverse_t_ratio,
    loglog_slope,
    riccati_distance,
    tail_exponent,
)
from .convergence import expected_mean_error, mean_time_to_eps, time_to_eps
from .information import (
    cumulative_information,
    duplicated_token_information,
    information_from_covariances,
    token_information,
    token_information_matrices,
)
from .observability import (
    gramian_covariance_bound,
    observability_gramian,
    windowed_covariance_bound,
)
from .selection import greedy_token_order

__all__ = [
    "Calibration",
    "LinearFit",
    "covariance_eigenvalues",
    "covariance_logdet",
    "covariance_trace",
    "cumulative_information",
    "duplicated_token_information",
    "expected_mean_error",
    "fit_exponential_rate",
    "gramian_covariance_bound",
    "greedy_token_order",
    "information_from_covariances",
    "inverse_t_ratio",
    "loglog_slope",
    "mean_time_to_eps",
    "mse_calibration",
    "observability_gramian",
    "riccati_distance",
    "tail_exponent",
    "time_to_eps",
    "token_information",
    "token_information_matrices",
    "windowed_covariance_bound",
]
