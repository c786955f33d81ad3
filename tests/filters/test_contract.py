"""One contract every public filter factory passes (the optax _common_test idea).

Crossed with the dtype (and, for one factory per family, the jit variant): the
state's tree structure is stable, dtypes are preserved, covariances stay symmetric
PSD, jit traces once for new data of the same shape, vmap over sequences equals a
loop, and the gradient of the log marginal likelihood is finite. A filter whose
state is a point (the gradient-descent limits) has no covariance or likelihood; it
passes the same contract on its final state and its per-step loss. Every factory
with an ``AssociativeForm`` also gives the sequential run's results in parallel.

``test_every_filter_factory_is_covered`` fails when a new public ``*_filter``
factory appears in ``kalmanjax`` or ``kalmanjax.limits`` without a case here.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import kalmanjax as kj
from kalmanjax import limits as kl
from tests._helpers import assert_psd

T = 15


def _linear_models(dtype):
    F = jnp.asarray([[0.9, 0.1, 0.0], [0.0, 0.95, 0.1], [0.0, 0.0, 0.8]], dtype)
    dyn = kj.LinearDynamics(F=F, Q=0.1 * jnp.eye(3, dtype=dtype))
    H = jnp.asarray([[1.0, 0.0, 0.5], [0.0, 1.0, 0.0]], dtype)
    return dyn, kj.LinearObservation(H=H, R=0.5 * jnp.eye(2, dtype=dtype))


def _static(dtype):
    return kj.LinearDynamics(F=jnp.eye(3, dtype=dtype), Q=jnp.zeros((3, 3), dtype))


def _drift(dtype):
    return kj.DiagonalDynamics(F=jnp.asarray(0.99, dtype), Q=jnp.full(3, 1e-3, dtype))


def _tanh_obs(dtype):
    return kj.NonlinearObservation(fn=_tanh_h, R=jnp.full((1, 1), 0.1, dtype))


def _regression_obs(dtype):
    return lambda u: kj.LinearObservation(
        H=u["x"][None, :], R=jnp.full((1, 1), 0.1, dtype)
    )


def _tanh_h(theta, u):
    return jnp.tanh(u["x"] @ theta)[None]


def _linear_h(theta, u):
    return (u["x"] @ theta)[None]


def _logits(theta, u):
    return u["W"] @ theta


# --------------------------------------------------------------------- inputs


def _inputs(kind, dtype, batch=None, seed=0):
    """Per-step inputs of ``T`` steps (a leading ``batch`` axis if given)."""
    rng = np.random.default_rng(seed)
    shape = (batch,) if batch else ()
    x = jnp.asarray(rng.normal(size=(*shape, T, 3)), dtype)
    if kind == "tokens":
        tokens = rng.integers(0, 4, size=(*shape, T))
        tokens[..., 4] = -1  # missing
        W = jnp.asarray(rng.normal(size=(*shape, T, 4, 3)), dtype)
        return {"obs": jnp.asarray(tokens, jnp.int32), "W": W}
    obs_dim = 2 if kind == "vector" else 1
    y = rng.normal(size=(*shape, T, obs_dim))
    y[..., 4, 0] = np.nan
    if kind == "vector":
        return jnp.asarray(y, dtype)
    return {"obs": jnp.asarray(y, dtype), "x": x}


# ---------------------------------------------------------------------- cases


def _kalman(form, fast):
    return lambda dtype: kj.kalman_filter(*_linear_models(dtype), form=form, fast=fast)


def _ekf(form, num_iter=1):
    def make(dtype):
        obs = kj.NonlinearObservation(fn=_tanh_h, R=jnp.full((1, 1), 0.1, dtype))
        return kj.extended_kalman_filter(
            _static(dtype), obs, form=form, num_iter=num_iter
        )

    return make


def _sigma_point(rule, form, num_iter=1):
    def make(dtype):
        dyn = kj.NonlinearDynamics(
            fn=lambda x, u: x + 0.1 * jnp.tanh(x), Q=0.01 * jnp.eye(3, dtype=dtype)
        )
        return kj.sigma_point_kalman_filter(
            dyn, _tanh_obs(dtype), rule=rule, form=form, num_iter=num_iter
        )

    return make


def _categorical(form):
    def make(dtype):
        obs = kj.CategoricalObservation(fn=_logits)
        return kj.extended_kalman_filter(_static(dtype), obs, form=form)

    return make


# (name, make(dtype) -> Filter, input kind, state: "belief", "diffuse" (a
# DiffuseBelief, whose .belief is checked) or "point")
FILTERS = [
    ("kalman_dense", _kalman("dense", None), "vector", "belief"),
    ("kalman_dense_general", _kalman("dense", False), "vector", "belief"),
    ("kalman_joseph", _kalman("joseph", None), "vector", "belief"),
    ("kalman_sqrt", _kalman("sqrt", None), "vector", "belief"),
    ("kalman_sqrt_general", _kalman("sqrt", False), "vector", "belief"),
    (
        "kalman_time_varying",
        lambda dtype: kj.kalman_filter(_static(dtype), _regression_obs(dtype)),
        "regression",
        "belief",
    ),
    (
        "regression_filter",
        lambda dtype: kj.regression_filter(3, 0.1, 0.01, dtype=dtype, form="sqrt"),
        "regression",
        "belief",
    ),
    (
        "diffuse_kalman_filter",
        lambda dtype: kj.diffuse_kalman_filter(
            *_linear_models(dtype), diffuse=jnp.eye(3, 1, dtype=dtype)
        ),
        "vector",
        "diffuse",
    ),
    ("ekf_dense", _ekf("dense"), "regression", "belief"),
    ("ekf_sqrt", _ekf("sqrt"), "regression", "belief"),
    ("iekf_joseph", _ekf("joseph", num_iter=3), "regression", "belief"),
    ("ekf_categorical_dense", _categorical("dense"), "tokens", "belief"),
    ("ukf_joseph", _sigma_point(kj.unscented(), "joseph"), "regression", "belief"),
    (
        "iplf_cubature_sqrt",
        _sigma_point(kj.cubature(), "sqrt", num_iter=2),
        "regression",
        "belief",
    ),
    (
        "diagonal_filter",
        lambda dtype: kj.diagonal_filter(_drift(dtype), _tanh_obs(dtype)),
        "regression",
        "belief",
    ),
    (
        "low_rank_filter",
        lambda dtype: kj.low_rank_filter(_drift(dtype), _tanh_obs(dtype), rank=2),
        "regression",
        "belief",
    ),
    (
        "low_rank_categorical",
        lambda dtype: kj.low_rank_filter(
            _drift(dtype), kj.CategoricalObservation(fn=_logits), rank=2
        ),
        "tokens",
        "belief",
    ),
    (
        "diagonal_categorical_observed_fisher",
        lambda dtype: kj.diagonal_filter(
            _drift(dtype), kj.CategoricalObservation(fn=_logits), fisher="observed"
        ),
        "tokens",
        "belief",
    ),
    ("ekf_categorical_sqrt", _categorical("sqrt"), "tokens", "belief"),
    (
        "natural_gradient_filter",
        lambda dtype: kl.natural_gradient_filter(_tanh_h, 0.1),
        "regression",
        "belief",
    ),
    (
        "frozen_covariance_filter",
        lambda dtype: kl.frozen_covariance_filter(_tanh_h, 0.1),
        "regression",
        "belief",
    ),
    (
        "projection_filter",
        lambda dtype: kl.projection_filter(_linear_h, frozen=True),
        "regression",
        "belief",
    ),
    (
        "gd_limit_filter",
        lambda dtype: kl.gd_limit_filter(_tanh_h, 0.05),
        "regression",
        "point",
    ),
    (
        "fixed_natural_gradient_filter",
        lambda dtype: kl.fixed_natural_gradient_filter(
            _tanh_h, 0.05, jnp.eye(3, dtype=dtype)
        ),
        "regression",
        "point",
    ),
]
assert FILTERS

#: factories whose covariance is exactly singular by design (R = 0): their
#: likelihood and its gradient are not part of the contract
NOISE_FREE = {"projection_filter"}


def _prior(dtype):
    return kj.Gaussian(mean=jnp.zeros(3, dtype), cov=jnp.eye(3, dtype=dtype))


def _objective(name, state_kind):
    """The scalar the contract differentiates and compares across vmap/loop."""

    def belief_objective(filt, prior, xs):
        if name in NOISE_FREE:
            return jnp.sum(kj.run(filt, prior, xs, lean=True).final.mean)
        return kj.log_marginal_likelihood(filt, prior, xs)

    def point_objective(filt, prior, xs):
        out = kj.run(filt, prior.mean, xs)
        return jnp.sum(out.final) + jnp.sum(out.infos.loss)

    return point_objective if state_kind == "point" else belief_objective


#: the cases also run without jit (one per family; the eager step of the others
#: is the same code, so their without-jit runs would add compile time, not coverage)
EAGER = {
    "kalman_dense",
    "kalman_dense_general",
    "kalman_joseph",
    "kalman_sqrt",
    "kalman_sqrt_general",
    "kalman_time_varying",
    "ekf_dense",
    "ekf_categorical_dense",
    "gd_limit_filter",
}
CASES = [
    pytest.param(*f, jit, id=f"{'with' if jit else 'without'}_jit-{f[0]}")
    for f in FILTERS
    for jit in (False, True)
    if jit or f[0] in EAGER
]


@pytest.mark.parametrize("name,make,kind,state_kind,jit", CASES)
def test_contract(name, make, kind, state_kind, jit, dtype):
    variant = jax.jit if jit else (lambda f: f)
    filt = make(dtype)
    prior = _prior(dtype)
    start = prior.mean if state_kind == "point" else prior
    xs = _inputs(kind, dtype)
    state = filt.init(start)
    first = jax.tree_util.tree_map(lambda a: a[0], xs)
    new_state, info = variant(filt.step)(state, first)
    assert jax.tree_util.tree_structure(new_state) == jax.tree_util.tree_structure(
        state
    )
    for leaf in jax.tree_util.tree_leaves((new_state, info)):
        assert leaf.dtype == dtype

    out = variant(lambda xs: kj.run(filt, start, xs))(xs)
    if state_kind != "point":
        beliefs = out.states.belief if state_kind == "diffuse" else out.states
        assert_psd(beliefs.cov, 1e-5 if dtype == jnp.float32 else 1e-12)
        if name not in NOISE_FREE:
            assert np.all(np.isfinite(np.asarray(out.infos.log_likelihood)))
    else:
        assert np.all(np.isfinite(np.asarray(out.final)))

    objective = _objective(name, state_kind)
    chex.clear_trace_counter()

    @jax.jit
    @chex.assert_max_traces(n=1)
    def jitted(xs):
        return objective(filt, prior, xs)

    batch = _inputs(kind, dtype, batch=3, seed=1)
    looped = [
        jitted(jax.tree_util.tree_map(lambda a, i=i: a[i], batch)) for i in range(3)
    ]
    batched = jax.vmap(lambda x: objective(filt, prior, x))(batch)
    t = dict(rtol=1e-5) if dtype == jnp.float32 else dict(rtol=1e-12)
    np.testing.assert_allclose(batched, looped, **t)

    grad = jax.grad(lambda p: objective(filt, p, xs))(prior)
    assert all(
        np.all(np.isfinite(np.asarray(g))) for g in jax.tree_util.tree_leaves(grad)
    )


def test_every_filter_factory_is_covered():
    factories = {
        name
        for module in (kj, kl)
        for name in module.__all__
        if name.endswith("_filter")
    }
    covered = {
        "kalman_filter",
        "extended_kalman_filter",
        "regression_filter",
        "sigma_point_kalman_filter",
        # its state is a particle set, not a belief: tests/filters/test_particle.py
        # checks its dtypes, jit, vmap and gradients
        "particle_filter",
    } | {f[0] for f in FILTERS}
    assert factories <= covered, sorted(factories - covered)


PARALLEL = [f for f in FILTERS if f[1](jnp.float32).associative is not None]


@pytest.mark.parametrize(
    "name,make,kind,state_kind", PARALLEL, ids=[f[0] for f in PARALLEL]
)
def test_parallel_form_equals_the_sequential_run(name, make, kind, state_kind, x64):
    """A factory's AssociativeForm gives the sequential run's results (float64)."""
    filt = make(jnp.float64)
    prior = _prior(jnp.float64)
    xs = _inputs(kind, jnp.float64)
    sequential = jax.jit(lambda xs: kj.run(filt, prior, xs))(xs)
    parallel = jax.jit(lambda xs: kj.run(filt, prior, xs, parallel=True))(xs)
    for a, b in zip(
        jax.tree_util.tree_leaves((sequential.states, sequential.infos)),
        jax.tree_util.tree_leaves((parallel.states, parallel.infos)),
        strict=True,
    ):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-9, atol=1e-10)


def test_a_filter_without_a_parallel_form_says_so():
    filt = kl.gd_limit_filter(_tanh_h, 0.05)
    with pytest.raises(ValueError, match="no parallel form"):
        kj.run(filt, jnp.zeros(3), _inputs("regression", jnp.float32), parallel=True)
