"""Shared test helpers: building kalmanjax models from the reference's NumPy arrays."""

import jax
import jax.numpy as jnp
import numpy as np

import kalmanjax as kj
from tests.reference import numpy_kalman as ref

# Tolerances keyed by (dtype, kind). Each looser value says why.
TOL = {
    ("float64", "step"): dict(rtol=1e-10, atol=1e-12),
    # sequences: errors accumulate over T steps of a well-conditioned model
    ("float64", "seq"): dict(rtol=1e-9, atol=1e-10),
    ("float32", "step"): dict(rtol=1e-5, atol=1e-5),
    ("float32", "seq"): dict(rtol=2e-4, atol=2e-4),
}

#: every (form, fast) combination the filter offers
FORM_CASES = [
    ("dense", False),
    ("dense", True),
    ("joseph", False),
    ("joseph", True),
    ("sqrt", False),
    ("sqrt", True),
]


def tol(dtype, kind):
    return TOL[(jnp.dtype(dtype).name, kind)]


def as_jnp(model, dtype):
    return {k: (None if v is None else jnp.asarray(v, dtype)) for k, v in model.items()}


def build(model, dtype, form="dense", fast=None):
    """(filter, prior) for a time-invariant reference model dict."""
    m = as_jnp(model, dtype)
    dyn = kj.LinearDynamics(F=m["F"], Q=m["Q"], b=m["b"])
    obs = kj.LinearObservation(H=m["H"], R=m["R"], d=m["d"])
    prior = kj.Gaussian(mean=m["m0"], cov=m["P0"])
    return kj.kalman_filter(dyn, obs, form=form, fast=fast), prior, dyn, obs


def time_varying_models(model, dtype):
    """Model functions reading per-step arrays from xs, plus the xs leaves."""
    m = as_jnp(model, dtype)

    def dynamics(u):
        return kj.LinearDynamics(F=u["F"], Q=u["Q"], b=u["b"])

    def observation(u):
        return kj.LinearObservation(H=u["H"], R=u["R"], d=u["d"])

    leaves = {k: m[k] for k in ("F", "Q", "b", "H", "R", "d")}
    prior = kj.Gaussian(mean=m["m0"], cov=m["P0"])
    return dynamics, observation, leaves, prior


def covs(beliefs):
    return np.asarray(beliefs.cov)


def assert_psd(cov, tol_):
    cov = np.asarray(cov, np.float64)
    np.testing.assert_allclose(cov, np.swapaxes(cov, -1, -2), atol=tol_, rtol=0)
    eig = np.linalg.eigvalsh(0.5 * (cov + np.swapaxes(cov, -1, -2)))
    scale = np.max(np.abs(eig), axis=-1, keepdims=True)
    assert np.all(eig >= -tol_ * np.maximum(scale, 1.0)), eig.min()


def tree_allclose(a, b, **kw):
    for x, y in zip(
        jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True
    ):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), **kw)


def simulate(rng, model, T):
    """Observations (T, obs) drawn from a reference model dict."""
    args = [model[k] for k in ("m0", "P0", "F", "Q", "H", "R")]
    return ref.simulate(rng, *args, T, model["b"], model["d"])[1]


def reference_filter(model, y):
    """The NumPy float64 reference filter's outputs for a model dict and data."""
    args = [model[k] for k in ("m0", "P0", "F", "Q", "H", "R")]
    return ref.kalman_filter(*args, y, model["b"], model["d"])
