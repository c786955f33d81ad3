"""Parameter constraints: closed forms in NumPy, round trips, trees, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kalmanjax import constraints as C


def test_forward_maps_match_their_closed_forms(x64):
    u = np.linspace(-6.0, 6.0, 13)
    np.testing.assert_allclose(
        C.positive().forward(jnp.asarray(u)), np.log1p(np.exp(u))
    )
    np.testing.assert_allclose(
        C.bounded(-1.0, 3.0).forward(jnp.asarray(u)), -1.0 + 4.0 / (1.0 + np.exp(-u))
    )
    np.testing.assert_array_equal(C.real().forward(jnp.asarray(u)), u)
    U = np.array([[0.3, 9.0], [-1.2, -2.0]])  # the upper entry is unused
    L = np.array([[np.log1p(np.exp(0.3)), 0.0], [-1.2, np.log1p(np.exp(-2.0))]])
    np.testing.assert_allclose(C.psd().forward(jnp.asarray(U)), L @ L.T, rtol=1e-14)


@pytest.mark.parametrize(
    "constraint, value",
    [
        (C.positive(), np.array([1e-6, 0.3, 2.0, 80.0])),
        (C.bounded(-1.0, 1.0), np.array([-0.999, -0.2, 0.0, 0.7])),
        (C.real(), np.array([-3.0, 0.0, 5.0])),
    ],
    ids=["positive", "bounded", "real"],
)
def test_elementwise_round_trips(constraint, value, x64):
    x = jnp.asarray(value)
    np.testing.assert_allclose(constraint.forward(constraint.inverse(x)), x, rtol=1e-12)
    u = jnp.linspace(-5.0, 5.0, 11)
    np.testing.assert_allclose(
        constraint.inverse(constraint.forward(u)), u, rtol=1e-9, atol=1e-9
    )


def test_psd_round_trip_and_feasibility(x64):
    rng = np.random.default_rng(0)
    A = rng.normal(size=(4, 4))
    P = A @ A.T + 0.1 * np.eye(4)
    back = C.psd().forward(C.psd().inverse(jnp.asarray(P)))
    np.testing.assert_allclose(back, P, rtol=1e-12, atol=1e-13)
    for _ in range(20):  # any unconstrained matrix gives a positive definite one
        out = np.asarray(
            C.psd().forward(jnp.asarray(rng.normal(scale=3.0, size=(3, 3))))
        )
        np.testing.assert_array_equal(out, out.T)
        assert np.linalg.eigvalsh(out).min() > 0


def test_float32_is_kept_and_stays_finite_far_out():
    u = jnp.array([-30.0, 0.0, 30.0], jnp.float32)
    x = C.positive().forward(u)
    assert x.dtype == jnp.float32 and bool(jnp.all(x > 0))
    back = C.positive().inverse(jnp.array([1e-3, 1.0, 60.0], jnp.float32))
    assert back.dtype == jnp.float32
    np.testing.assert_allclose(
        back, [np.log(np.expm1(1e-3)), np.log(np.expm1(1.0)), 60.0], rtol=1e-5
    )
    # softplus' gradient stays in (0, 1), unlike exp's
    grads = jax.vmap(jax.grad(C.positive().forward))(u)
    assert bool(jnp.all((grads >= 0) & (grads <= 1)))
    assert C.psd().forward(jnp.eye(2, dtype=jnp.float32)).dtype == jnp.float32


def test_trees_of_constraints():
    params = {
        "q": jnp.array([0.5]),
        "F": jnp.ones((2, 2)),
        "noise": {"a": jnp.ones(2), "b": jnp.full(1, 2.0)},
    }
    constraints = {"q": C.positive(), "noise": C.positive()}  # F left out: real
    u = C.unconstrain(constraints, params)
    np.testing.assert_array_equal(u["F"], params["F"])
    np.testing.assert_allclose(u["q"], np.log(np.expm1(0.5)), rtol=1e-6)
    np.testing.assert_allclose(u["noise"]["b"], np.log(np.expm1(2.0)), rtol=1e-6)
    back = C.constrain(constraints, u)
    for a, b in zip(
        jax.tree_util.tree_leaves(back), jax.tree_util.tree_leaves(params), strict=True
    ):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    # no constraints, a single constraint for the whole tree, tuples with None
    same = C.constrain(None, params)
    assert all(
        a is b
        for a, b in zip(
            jax.tree_util.tree_leaves(same),
            jax.tree_util.tree_leaves(params),
            strict=True,
        )
    )
    np.testing.assert_allclose(
        C.constrain(C.positive(), jnp.zeros(2)), np.log(2.0) * np.ones(2), rtol=1e-6
    )
    pair = C.constrain((None, C.positive()), (jnp.zeros(1), jnp.zeros(1)))
    np.testing.assert_allclose(pair[0], 0.0)
    np.testing.assert_allclose(pair[1], np.log(2.0), rtol=1e-6)


def test_bad_constraints_raise():
    params = {"q": jnp.ones(1)}
    with pytest.raises(ValueError, match=r"constrain: constraints name keys.*\['r'\]"):
        C.constrain({"r": C.positive()}, params)
    with pytest.raises(ValueError, match="Constraint or None leaves, got str"):
        C.constrain({"q": "positive"}, params)
    with pytest.raises(
        ValueError, match="unconstrain: constraints must follow the structure"
    ):
        C.unconstrain(
            (C.positive(), C.positive()), (jnp.ones(1), jnp.ones(1), jnp.ones(1))
        )
    with pytest.raises(ValueError, match="bounded: high must exceed low"):
        C.bounded(1.0, 1.0)
