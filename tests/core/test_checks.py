"""Each bad input raises at trace time with a message naming the argument."""

import jax
import jax.numpy as jnp
import pytest

import kalmanjax as kj

d, m = 3, 2
GOOD = dict(
    F=jnp.eye(d), Q=jnp.eye(d), H=jnp.ones((m, d)), R=jnp.eye(m), y=jnp.ones((5, m))
)
PRIOR = kj.Gaussian(mean=jnp.zeros(d), cov=jnp.eye(d))


def _run(F, Q, H, R, y, prior=PRIOR, form="dense"):
    filt = kj.kalman_filter(
        kj.LinearDynamics(F, Q), kj.LinearObservation(H, R), form=form
    )
    return jax.jit(lambda ys: kj.run(filt, prior, ys))(y)


@pytest.mark.parametrize(
    "change,match",
    [
        (dict(F=jnp.eye(2), Q=jnp.eye(2)), r"dynamics\.F must have shape \(3, 3\)"),
        (dict(F=jnp.eye(2)), r"dynamics\.Q must have shape \(2, 2\)"),
        (dict(F=jnp.ones((3, 4))), r"dynamics\.F must be a square matrix"),
        (dict(Q=jnp.eye(4)), r"dynamics\.Q must have shape \(3, 3\)"),
        (dict(H=jnp.ones((2, 4))), r"observation\.H must have shape \(obs, 3\)"),
        (dict(R=jnp.ones((2, 3))), r"observation\.R must be a square matrix"),
        (dict(R=jnp.eye(3)), r"observation\.R must have shape \(2, 2\)"),
        (dict(y=jnp.ones((5, 3))), r"obs must have shape \(2,\)"),
    ],
)
@pytest.mark.parametrize("form", ["dense", "sqrt"])
def test_shape_errors(change, match, form):
    with pytest.raises(ValueError, match=match):
        _run(**{**GOOD, **change}, form=form)


def test_prior_shape_errors():
    with pytest.raises(ValueError, match=r"belief\.cov must have shape \(3, 3\)"):
        _run(**GOOD, prior=kj.Gaussian(mean=jnp.zeros(d), cov=jnp.eye(2)))
    with pytest.raises(ValueError, match=r"belief\.mean must be a vector"):
        _run(**GOOD, prior=kj.Gaussian(mean=jnp.zeros((2, d)), cov=jnp.eye(d)))
    with pytest.raises(TypeError, match=r"belief\.mean must be floating"):
        _run(**GOOD, prior=kj.Gaussian(mean=jnp.zeros(d, jnp.int32), cov=jnp.eye(d)))


def test_mixed_dtypes(x64):
    with pytest.raises(TypeError, match=r"observation\.R has dtype float64 but the"):
        _run(**{**GOOD, "R": jnp.eye(m, dtype=jnp.float64)})
    with pytest.raises(TypeError, match=r"obs has dtype float64"):
        _run(**{**GOOD, "y": jnp.ones((5, m), jnp.float64)})
    with pytest.raises(TypeError, match=r"dynamics\.Q has dtype float32 but dynamics"):
        _run(**{**GOOD, "F": jnp.eye(d, dtype=jnp.float64)})
    with pytest.raises(TypeError, match=r"dynamics\.F has dtype float64 but the"):
        _run(
            **{
                **GOOD,
                "F": jnp.eye(d, dtype=jnp.float64),
                "Q": jnp.eye(d, dtype=jnp.float64),
            }
        )


def test_unknown_form_and_missing_obs_key():
    with pytest.raises(ValueError, match="form must be one of"):
        kj.kalman_filter(
            kj.LinearDynamics(GOOD["F"], GOOD["Q"]),
            kj.LinearObservation(GOOD["H"], GOOD["R"]),
            form="info",
        )
    filt = kj.kalman_filter(
        kj.LinearDynamics(GOOD["F"], GOOD["Q"]),
        kj.LinearObservation(GOOD["H"], GOOD["R"]),
    )
    with pytest.raises(TypeError, match="key 'obs'"):
        kj.run(filt, PRIOR, {"y": GOOD["y"]})


def test_math_layer_errors():
    with pytest.raises(ValueError, match=r"kalmanjax\.update: observation\.H"):
        kj.update(PRIOR, jnp.ones(m), kj.LinearObservation(jnp.ones((m, 4)), GOOD["R"]))
    with pytest.raises(ValueError, match=r"kalmanjax\.predict: dynamics\.F"):
        kj.predict(PRIOR, kj.LinearDynamics(jnp.eye(4), jnp.eye(4)))
