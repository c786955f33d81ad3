"""theta over the network's own weights (WeightAdapter) against NumPy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import kalmanjax as kj
from kalmanjax.nn import Transformer, WeightAdapter, observation_fn
from tests.reference import numpy_ekf, numpy_transformer


def _net(dtype=jnp.float64, output_dim=2, width=8, depth=2):
    return Transformer(
        output_dim=output_dim,
        input_dim=3,
        width=width,
        depth=depth,
        heads=2,
        max_len=10,
        dtype=dtype,
        rngs=nnx.Rngs(0),
    )


def _params(net):
    pure = nnx.to_pure_dict(nnx.state(net, nnx.Param))
    return jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), pure)


def _offset(params, adapter, theta):
    """The NumPy parameters with theta added, segment by segment."""
    out = jax.tree_util.tree_map(np.copy, params)
    for name, start, shape in adapter.segments:
        *parents, leaf = (int(k) if k.isdigit() else k for k in name.split("."))
        node = out
        for key in parents:
            node = node[key]
        node[leaf] = node[leaf] + theta[start : start + int(np.prod(shape))].reshape(
            shape
        )
    return out


def _numpy_fn(net, adapter):
    params = _params(net)
    return lambda theta, x: numpy_transformer.forward(
        _offset(params, adapter, theta), x, heads=2
    )[0]


@pytest.mark.parametrize("modules", [None, ("head",), ("blocks.1", "norm")])
def test_segments_cover_the_chosen_parameters(modules, x64):
    net = _net()
    adapter = WeightAdapter(net, modules)
    names = [name for name, _, _ in adapter.segments]
    sizes = {
        ".".join(map(str, path)): np.size(v)
        for path, v in nnx.to_flat_state(nnx.state(net, nnx.Param))
    }
    wanted = [
        n
        for n in sizes
        if modules is None or any(n == m or n.startswith(m + ".") for m in modules)
    ]
    assert sorted(names) == sorted(wanted)
    assert adapter.dim == sum(sizes[n] for n in wanted)
    starts = [start for _, start, _ in adapter.segments]
    ends = [start + int(np.prod(shape)) for _, start, shape in adapter.segments]
    assert starts[0] == 0 and starts[1:] == ends[:-1] and ends[-1] == adapter.dim


@pytest.mark.parametrize("modules", [None, ("blocks.0.attn", "head")])
def test_offset_weights_match_numpy(modules, x64):
    net = _net()
    adapter = WeightAdapter(net, modules)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((7, 3)))
    theta = 0.1 * rng.standard_normal(adapter.dim)
    before = _params(net)
    fn = observation_fn(net, adapter)
    np.testing.assert_array_equal(fn(jnp.zeros(adapter.dim), x), net(x))
    got = jax.jit(fn)(jnp.asarray(theta), jnp.asarray(x))
    expected = _numpy_fn(net, adapter)(theta, np.asarray(x))
    np.testing.assert_allclose(got, expected, rtol=1e-11, atol=1e-12)
    # the model itself is unchanged, and called with the adapter directly agrees
    jax.tree_util.tree_map(np.testing.assert_array_equal, _params(net), before)
    np.testing.assert_allclose(
        net(x, adapter=adapter, theta=jnp.asarray(theta)), expected, rtol=1e-11
    )


def test_low_rank_filter_over_weights_matches_a_numpy_ekf(x64):
    """With rank >= k the low-rank EKF over the head's and final norm's weights is
    the EKF; the reference differentiates the NumPy network by central
    differences."""
    net = _net(output_dim=1)
    adapter = WeightAdapter(net, ("norm", "head"))
    k, T, r, s2 = adapter.dim, 6, 0.05, 0.2
    rng = np.random.default_rng(1)
    prompt = rng.standard_normal((T, 3))
    y = rng.standard_normal((T, 1))
    ref_fn = _numpy_fn(net, adapter)

    def h(theta, pos):
        return ref_fn(theta, prompt)[pos]

    def h_jac(theta, pos, eps=1e-6):
        cols = [
            (h(theta + eps * e, pos) - h(theta - eps * e, pos)) / (2 * eps)
            for e in np.eye(k)
        ]
        return np.stack(cols, axis=1)

    ref = numpy_ekf.ekf(
        np.zeros(k),
        s2 * np.eye(k),
        lambda m, u: m,
        lambda m, u: np.eye(k),
        np.zeros((k, k)),
        h,
        h_jac,
        r * np.eye(1),
        y,
        us=list(range(T)),
    )
    fn = observation_fn(net, adapter)
    obs = kj.NonlinearObservation(
        fn=lambda th, u: fn(th, jnp.asarray(prompt))[u["pos"]], R=r * jnp.eye(1)
    )
    dyn = kj.DiagonalDynamics(F=jnp.array(1.0), Q=jnp.array(0.0))
    prior = kj.DiagonalGaussian(jnp.zeros(k), jnp.full(k, s2))
    out = kj.run(
        kj.low_rank_filter(dyn, obs, rank=k), prior, {"obs": y, "pos": jnp.arange(T)}
    )
    np.testing.assert_allclose(out.states.mean, ref["means"], rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(
        out.infos.log_likelihood, ref["log_likelihoods"], rtol=1e-7, atol=1e-8
    )


def test_whole_network_ekf_step_in_float32():
    """Every weight of a small network (k in the thousands) through the low-rank
    and diagonal filters: finite, and the data pull the predictions toward y."""
    net = _net(jnp.float32, output_dim=1, width=16)
    adapter = WeightAdapter(net)
    fn = observation_fn(net, adapter)
    prompt = jax.random.normal(jax.random.key(0), (8, 3))
    y = jnp.full((8, 1), 3.0)
    obs = kj.NonlinearObservation(
        fn=lambda th, u: fn(th, prompt)[:, 0], R=0.1 * jnp.eye(8)
    )
    dyn = kj.DiagonalDynamics(F=jnp.array(1.0), Q=jnp.array(0.0))
    prior = kj.DiagonalGaussian(jnp.zeros(adapter.dim), jnp.full(adapter.dim, 1e-3))
    xs = {"obs": jnp.broadcast_to(y[:, 0], (4, 8))}
    before = float(jnp.mean((fn(prior.mean, prompt) - y) ** 2))
    for filt in (kj.low_rank_filter(dyn, obs, rank=4), kj.diagonal_filter(dyn, obs)):
        out = jax.jit(lambda xs, f=filt: kj.run(f, prior, xs))(xs)
        assert out.final.mean.shape == (adapter.dim,)
        assert out.final.mean.dtype == jnp.float32
        assert np.all(np.isfinite(out.final.mean))
        after = float(jnp.mean((fn(out.final.mean, prompt) - y) ** 2))
        assert after < 0.5 * before


def test_bad_input_is_a_clear_error(x64):
    net = _net()
    with pytest.raises(ValueError, match="name no parameter"):
        WeightAdapter(net, ("blocks.7",))
    adapter = WeightAdapter(net, "head")
    fn = observation_fn(net, adapter)
    with pytest.raises(ValueError, match=rf"theta must have shape \({adapter.dim},\)"):
        fn(jnp.zeros(3), jnp.ones((5, 3)))
    with pytest.raises(TypeError, match="dtype"):
        fn(jnp.zeros(adapter.dim, jnp.float32), jnp.ones((5, 3)))
