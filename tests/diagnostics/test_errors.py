"""kalmanjax.diagnostics: bad shapes are clear errors."""

import jax.numpy as jnp
import pytest

from kalmanjax import diagnostics as kd


def test_bad_shapes_are_clear_errors():
    with pytest.raises(ValueError, match=r"H_seq must have shape \(T, obs, state\)"):
        kd.observability_gramian(jnp.ones((3, 2)), jnp.eye(1))
    with pytest.raises(ValueError, match=r"R must have shape \(1, 1\) or \(3, 1, 1\)"):
        kd.observability_gramian(jnp.ones((3, 1, 2)), jnp.eye(2))
    with pytest.raises(ValueError, match="window must be a positive int"):
        kd.observability_gramian(jnp.ones((3, 1, 2)), jnp.eye(1), window=0)
    with pytest.raises(ValueError, match=r"Q must have shape \(2, 2\)"):
        kd.windowed_covariance_bound(jnp.ones((3, 1, 2)), jnp.eye(1), jnp.eye(3), 2)
    with pytest.raises(ValueError, match="cov_a and cov_b must have the same shape"):
        kd.riccati_distance(jnp.eye(2), jnp.eye(3))
    with pytest.raises(ValueError, match="need at least 2 tasks"):
        kd.mse_calibration(jnp.ones(1), jnp.ones(1))
    with pytest.raises(ValueError, match="num_select must be in 1..3"):
        kd.greedy_token_order(jnp.ones((3, 1, 2)), jnp.eye(2), jnp.eye(1), 4)
    with pytest.raises(ValueError, match=r"beliefs must be a belief or an array"):
        kd.covariance_trace(jnp.ones(3))
