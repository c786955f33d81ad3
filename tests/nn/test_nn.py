"""The Flax transformer and its adapters against a NumPy forward pass."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import kalmanjax as kj
from kalmanjax.nn import LowRankAdapter, ResidualShift, Transformer, observation_fn
from tests.reference import numpy_transformer, ridge

SITES = [
    (ResidualShift, "block0"),
    (ResidualShift, "block1"),
    (ResidualShift, "head"),
    (LowRankAdapter, "block0.attn"),
    (LowRankAdapter, "block1.mlp"),
    (LowRankAdapter, "head.proj"),
]


def _net(dtype=jnp.float32, depth=2, output_dim=2):
    return Transformer(
        output_dim=output_dim,
        input_dim=3,
        width=16,
        depth=depth,
        heads=4,
        max_len=12,
        dtype=dtype,
        rngs=nnx.Rngs(0),
    )


def _params(net):
    pure = nnx.to_pure_dict(nnx.state(net, nnx.Param))
    return jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), pure)


def test_forward_matches_numpy(x64):
    net = _net(jnp.float64)
    x = np.random.default_rng(0).standard_normal((10, 3))
    expected, _ = numpy_transformer.forward(_params(net), x, heads=4)
    np.testing.assert_allclose(net(jnp.asarray(x)), expected, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize(("cls", "site"), SITES)
def test_theta_zero_is_the_base_model_exactly(cls, site):
    net = _net()
    x = jax.random.normal(jax.random.key(1), (9, 3))
    fn = observation_fn(net, cls(net, site, 5, rngs=nnx.Rngs(2)))
    out = fn(jnp.zeros(5), x)
    np.testing.assert_array_equal(out, net(x))
    assert not np.allclose(fn(jnp.ones(5), x), out)  # theta does act there


@pytest.mark.parametrize(("cls", "site"), SITES)
def test_jacobians_agree_with_finite_differences(cls, site, x64):
    net = _net(jnp.float64)
    x = jax.random.normal(jax.random.key(1), (7, 3), jnp.float64)
    fn = observation_fn(net, cls(net, site, 4, rngs=nnx.Rngs(2)))
    theta = 0.3 * jax.random.normal(jax.random.key(3), (4,), jnp.float64)
    _, j_fwd = kj.linearize(fn, theta, x, method="jacfwd")
    _, j_rev = kj.linearize(fn, theta, x, method="jacrev")
    eps = 1e-6
    fd = np.stack(
        [
            (fn(theta + eps * e, x) - fn(theta - eps * e, x)) / (2 * eps)
            for e in np.eye(4)
        ],
        axis=-1,
    )
    np.testing.assert_allclose(j_fwd, j_rev, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(j_fwd, fd, rtol=1e-6, atol=1e-8)


def test_residual_shift_matches_numpy_hook(x64):
    net = _net(jnp.float64)
    adapter = ResidualShift(net, "block1", 3, rngs=nnx.Rngs(2))
    theta = np.array([0.5, -1.0, 2.0])
    x = np.random.default_rng(1).standard_normal((8, 3))
    U = np.asarray(adapter.basis[...])

    def hook(site, h):
        return h + U @ theta if site == "block1" else h

    expected, _ = numpy_transformer.forward(_params(net), x, heads=4, hook=hook)
    got = observation_fn(net, adapter)(jnp.asarray(theta), jnp.asarray(x))
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-13)


def test_causal():
    net = _net()
    x = jax.random.normal(jax.random.key(1), (9, 3))
    y = x.at[6].set(5.0)
    np.testing.assert_array_equal(net(x)[:6], net(y)[:6])
    assert not np.allclose(net(x)[6:], net(y)[6:])


def test_ekf_over_a_linear_head_adapter_is_bayesian_ridge(x64):
    """theta in the head projection: outputs linear in theta, so the EKF over the
    prompt's tokens is exact Bayesian linear regression on the features J_t."""
    net = _net(jnp.float64, output_dim=1)
    k, T, r, tau2 = 4, 10, 0.05, 2.0
    adapter = LowRankAdapter(net, "head.proj", k, rngs=nnx.Rngs(5))
    rng = np.random.default_rng(2)
    x = rng.standard_normal((T, 3))
    base, head_in = numpy_transformer.forward(_params(net), x, heads=4)
    A, B = np.asarray(adapter.A[...]), np.asarray(adapter.B[...])
    features = (head_in @ A.T) * B[0]  # d out_t / d theta_j = B[0, j] (A h_t)_j
    theta_true = rng.standard_normal(k)
    y = base[:, 0] + features @ theta_true + np.sqrt(r) * rng.standard_normal(T)
    expected = ridge.posterior(features, y - base[:, 0], r, tau2 * np.eye(k))

    fn = observation_fn(net, adapter)
    prompt = jnp.asarray(x)
    obs = kj.NonlinearObservation(
        fn=lambda th, u: fn(th, prompt)[u["pos"]], R=r * jnp.eye(1)
    )
    filt = kj.extended_kalman_filter(
        kj.LinearDynamics(F=jnp.eye(k), Q=jnp.zeros((k, k))), obs, form="sqrt"
    )
    prior = kj.Gaussian(jnp.zeros(k), tau2 * jnp.eye(k))
    xs = {"obs": jnp.asarray(y)[:, None], "pos": jnp.arange(T)}
    out = kj.run(filt, prior, xs)
    np.testing.assert_allclose(out.final.mean, expected[0], rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(out.final.cov, expected[1], rtol=1e-9, atol=1e-12)


def test_vmap_ekf_over_prompts():
    net = _net(output_dim=1)
    adapter = ResidualShift(net, "block0", 3, rngs=nnx.Rngs(5))
    fn = observation_fn(net, adapter)
    obs = kj.NonlinearObservation(
        fn=lambda th, u: fn(th, u["prompt"])[u["pos"]], R=0.1 * jnp.eye(1)
    )
    filt = kj.extended_kalman_filter(
        kj.LinearDynamics(F=jnp.eye(3), Q=jnp.zeros((3, 3))), obs
    )
    prior = kj.Gaussian(jnp.zeros(3), jnp.eye(3))
    prompts = jax.random.normal(jax.random.key(0), (2, 6, 3))

    def filter_prompt(prompt):
        xs = {
            "obs": prompt[:, :1],
            "pos": jnp.arange(6),
            "prompt": jnp.broadcast_to(prompt, (6, 6, 3)),
        }
        return kj.run(filt, prior, xs).final.mean

    batched = jax.jit(jax.vmap(filter_prompt))(prompts)
    for i in range(2):
        np.testing.assert_allclose(
            batched[i], filter_prompt(prompts[i]), rtol=1e-4, atol=1e-5
        )


def test_bad_input_is_a_clear_error():
    net = _net()
    with pytest.raises(ValueError, match="unknown site 'block7'"):
        ResidualShift(net, "block7", 3, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="site must be a projection"):
        LowRankAdapter(net, "head", 3, rngs=nnx.Rngs(0))
    adapter = ResidualShift(net, "head", 3, rngs=nnx.Rngs(0))
    fn = observation_fn(net, adapter)
    with pytest.raises(ValueError, match=r"theta must have shape \(3,\)"):
        fn(jnp.zeros(4), jnp.ones((5, 3)))
    with pytest.raises(ValueError, match=r"inputs must have shape \(T, 3\)"):
        net(jnp.ones((5, 4)))
    with pytest.raises(ValueError, match="exceeds max_len 12"):
        net(jnp.ones((13, 3)))
    with pytest.raises(ValueError, match="exactly one of input_dim or vocab_size"):
        Transformer(output_dim=1, rngs=nnx.Rngs(0))


@pytest.mark.parametrize("site", ["head.proj", "block1.mlp"])
def test_svd_basis_shifts_the_projections_singular_values(site, x64):
    """basis="svd": theta_j adds to sigma_j of the projection's own weight (NumPy
    SVD; the product u_j v_j^T is free of the singular vectors' signs); directions
    beyond the weight's rank stay random unit vectors."""
    net = _net(jnp.float64, output_dim=2)
    k = 3 if site == "head.proj" else 4  # head.proj: rank 2, one random direction
    adapter = LowRankAdapter(net, site, k, basis="svd", rngs=nnx.Rngs(1))
    linear = net.head if site == "head.proj" else net.blocks[1].mlp_out
    W = np.asarray(linear.kernel[...]).T  # (out, in)
    u, _, vt = np.linalg.svd(W, full_matrices=False)
    r = min(k, np.linalg.matrix_rank(W))
    theta = np.random.default_rng(3).standard_normal(k)
    x = np.random.default_rng(4).standard_normal((5, W.shape[1]))
    A, B = np.asarray(adapter.A[...]), np.asarray(adapter.B[...])
    svd_part = sum(theta[j] * np.outer(u[:, j], vt[j]) for j in range(r))
    rest = sum(theta[j] * np.outer(B[:, j], A[j]) for j in range(r, k))
    np.testing.assert_allclose(
        adapter.delta(jnp.asarray(x), jnp.asarray(theta)),
        x @ (svd_part + rest).T,
        rtol=1e-10,
        atol=1e-12,
    )
    np.testing.assert_allclose(np.linalg.norm(A, axis=1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(B, axis=0), 1.0, rtol=1e-12)
    with pytest.raises(ValueError, match="basis must be 'random' or 'svd'"):
        LowRankAdapter(net, site, k, basis="pca", rngs=nnx.Rngs(1))
