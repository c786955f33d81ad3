"""One contract every public filter factory passes (the optax _common_test idea).

Crossed with the jit variant and the dtype: the state's tree structure is stable,
dtypes are preserved, covariances stay symmetric PSD, jit traces once for new data
of the same shape, vmap over sequences equals a loop, and the gradient of the log
marginal likelihood is finite.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import kalmanjax as kj
from tests._helpers import assert_psd


def _kalman_case(form, fast):
    def make(dtype):
        F = jnp.asarray([[0.9, 0.1, 0.0], [0.0, 0.95, 0.1], [0.0, 0.0, 0.8]], dtype)
        dyn = kj.LinearDynamics(F=F, Q=0.1 * jnp.eye(3, dtype=dtype))
        H = jnp.asarray([[1.0, 0.0, 0.5], [0.0, 1.0, 0.0]], dtype)
        obs = kj.LinearObservation(H=H, R=0.5 * jnp.eye(2, dtype=dtype))
        return kj.kalman_filter(dyn, obs, form=form, fast=fast)

    return make


def _time_varying_case(dtype):
    def observation(u):
        return kj.LinearObservation(H=u["x"][None, :], R=jnp.full((1, 1), 0.1, dtype))

    dyn = kj.LinearDynamics(F=jnp.eye(3, dtype=dtype), Q=jnp.zeros((3, 3), dtype))
    return kj.kalman_filter(dyn, observation)


FILTERS = [
    ("kalman_dense", _kalman_case("dense", None), 2),
    ("kalman_dense_general", _kalman_case("dense", False), 2),
    ("kalman_joseph", _kalman_case("joseph", None), 2),
    ("kalman_sqrt", _kalman_case("sqrt", None), 2),
    ("kalman_sqrt_general", _kalman_case("sqrt", False), 2),
    ("kalman_time_varying", _time_varying_case, 1),
]
assert FILTERS


def _inputs(obs_dim, dtype, batch=None, seed=0):
    rng = np.random.default_rng(seed)
    shape = (batch,) if batch else ()
    y = rng.normal(size=(*shape, 15, obs_dim))
    y[..., 4, 0] = np.nan
    y = jnp.asarray(y, dtype)
    if obs_dim == 1:
        return {"obs": y, "x": jnp.asarray(rng.normal(size=(*shape, 15, 3)), dtype)}
    return y


def _prior(dtype):
    return kj.Gaussian(mean=jnp.zeros(3, dtype), cov=jnp.eye(3, dtype=dtype))


@pytest.mark.parametrize("name,make,obs_dim", FILTERS, ids=[f[0] for f in FILTERS])
def test_contract(name, make, obs_dim, variant, dtype):
    filt = make(dtype)
    prior = _prior(dtype)
    xs = _inputs(obs_dim, dtype)
    state = filt.init(prior)
    first = jax.tree_util.tree_map(lambda a: a[0], xs)
    new_state, info = variant(filt.step)(state, first)
    assert jax.tree_util.tree_structure(new_state) == jax.tree_util.tree_structure(
        state
    )
    for leaf in jax.tree_util.tree_leaves((new_state, info)):
        assert leaf.dtype == dtype

    out = variant(lambda xs: kj.run(filt, prior, xs))(xs)
    assert_psd(out.states.cov, 1e-5 if dtype == jnp.float32 else 1e-12)
    assert np.all(np.isfinite(np.asarray(out.infos.log_likelihood)))

    chex.clear_trace_counter()

    @jax.jit
    @chex.assert_max_traces(n=1)
    def lml(xs):
        return kj.log_marginal_likelihood(filt, prior, xs)

    batch = _inputs(obs_dim, dtype, batch=3, seed=1)
    looped = [lml(jax.tree_util.tree_map(lambda a, i=i: a[i], batch)) for i in range(3)]
    batched = jax.vmap(lambda x: kj.log_marginal_likelihood(filt, prior, x))(batch)
    t = dict(rtol=1e-5) if dtype == jnp.float32 else dict(rtol=1e-12)
    np.testing.assert_allclose(batched, looped, **t)

    grad = jax.grad(lambda p: kj.log_marginal_likelihood(filt, p, xs))(prior)
    assert all(
        np.all(np.isfinite(np.asarray(g))) for g in jax.tree_util.tree_leaves(grad)
    )
