"""The core at its edges (issue 12): noise-free observations, singular covariances,
asymmetric inputs, values that must never be used silently and inputs that used to
give unclear errors.

Each case is checked against an independent reference: a missing token leaves the
belief exactly as the NumPy float64 prior; an empty sequence has log-likelihood 0
and smooths to an empty sequence.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import kalmanjax as kj
from tests.reference import joint_gaussian as joint
from tests.reference import numpy_kalman as ref

V, K = 4, 3


def _categorical(seed=0, dtype=jnp.float64):
    rng = np.random.default_rng(seed)
    W = jnp.asarray(rng.normal(size=(V, K)), dtype)
    prior_cov = np.eye(K) + 0.1 * np.ones((K, K))
    prior = kj.Gaussian(jnp.zeros(K, dtype), jnp.asarray(prior_cov, dtype))
    return kj.CategoricalObservation(fn=lambda th, u: W @ th), prior, prior_cov


@pytest.mark.parametrize("token", [V, V + 7, -1])
def test_an_out_of_range_token_is_missing(token, x64):
    obs, prior, prior_cov = _categorical()
    post, info = kj.categorical_update(prior, jnp.asarray(token), obs)
    np.testing.assert_array_equal(np.asarray(post.mean), np.zeros(K))
    np.testing.assert_array_equal(np.asarray(post.cov), prior_cov)
    assert float(info.log_likelihood) == 0.0
    assert float(info.information_gain) == 0.0


def test_an_out_of_range_token_in_a_stream_changes_nothing(x64):
    """A stream with a bad id ends where the stream without that token ends."""
    obs, prior, _ = _categorical(seed=1)
    static = kj.LinearDynamics(F=jnp.eye(K), Q=jnp.zeros((K, K)))
    for form in ("dense", "sqrt"):
        filt = kj.extended_kalman_filter(static, obs, form=form)
        clean = kj.run(filt, prior, jnp.asarray([1, 3, 0, 2])).final
        bad = kj.run(filt, prior, jnp.asarray([1, 3, V, 0, 2])).final
        np.testing.assert_allclose(bad.mean, clean.mean, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(bad.cov, clean.cov, rtol=1e-12, atol=1e-14)


def test_logits_must_be_a_floating_vector_of_the_state_dtype(x64):
    _, prior, _ = _categorical()
    as_ints = kj.CategoricalObservation(fn=lambda th, u: jnp.arange(V))
    with pytest.raises(TypeError, match="the output of observation.fn has dtype"):
        kj.categorical_update(prior, jnp.asarray(0), as_ints)
    matrix = kj.CategoricalObservation(fn=lambda th, u: jnp.ones((V, 2)) @ th[:2, None])
    with pytest.raises(ValueError, match=r"observation.fn must return a vector"):
        kj.categorical_update(prior, jnp.asarray(0), matrix)
    static = kj.LinearDynamics(F=jnp.eye(K), Q=jnp.zeros((K, K)))
    filt = kj.extended_kalman_filter(static, as_ints)
    with pytest.raises(TypeError, match="extended_kalman_filter.step"):
        kj.run(filt, prior, jnp.asarray([0, 1]))


@pytest.mark.parametrize("form", ["dense", "sqrt"])
@pytest.mark.parametrize("parallel", [False, True])
def test_an_empty_sequence_smooths_to_an_empty_sequence(form, parallel):
    dyn = kj.LinearDynamics(F=jnp.eye(2), Q=0.1 * jnp.eye(2))
    obs = kj.LinearObservation(H=jnp.eye(1, 2), R=jnp.eye(1))
    prior = kj.Gaussian(jnp.zeros(2), jnp.eye(2))
    out = kj.kalman_smoother(
        dyn, obs, prior, jnp.zeros((0, 1)), form=form, parallel=parallel
    )
    assert out.smoothed.mean.shape == (0, 2)
    assert float(out.log_marginal_likelihood) == 0.0
    filtered = kj.run(kj.kalman_filter(dyn, obs, form=form), prior, jnp.zeros((0, 1)))
    smoothed = kj.rts_smoother(dyn, filtered.states, parallel=parallel)
    assert jax.tree_util.tree_map(jnp.shape, smoothed) == jax.tree_util.tree_map(
        jnp.shape, filtered.states
    )


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
def test_sqrt_form_in_half_precision_is_a_clear_error(dtype):
    dyn = kj.LinearDynamics(F=jnp.eye(2, dtype=dtype), Q=0.1 * jnp.eye(2, dtype=dtype))
    obs = kj.LinearObservation(H=jnp.eye(1, 2, dtype=dtype), R=jnp.eye(1, dtype=dtype))
    prior = kj.Gaussian(jnp.zeros(2, dtype), jnp.eye(2, dtype=dtype))
    name = jnp.dtype(dtype).name
    with pytest.raises(
        TypeError, match=f"form='sqrt' needs float32 or float64.*{name}"
    ):
        kj.kalman_filter(dyn, obs, form="sqrt")
    timevarying = kj.kalman_filter(lambda u: dyn, obs, form="sqrt")
    with pytest.raises(TypeError, match="kalman_filter.init: form='sqrt' needs"):
        kj.run(timevarying, prior, jnp.ones((3, 1), dtype))
    ekf = kj.extended_kalman_filter(dyn, obs, form="sqrt")
    with pytest.raises(TypeError, match="extended_kalman_filter.init: form='sqrt'"):
        kj.run(ekf, prior, jnp.ones((3, 1), dtype))
    # the covariance forms run in half precision, close to the float64 reference
    dense = kj.run(kj.kalman_filter(dyn, obs), prior, jnp.ones((3, 1), dtype))
    ref = _scalar_random_walk_loglik(np.ones(3), q=0.1, r=1.0, p0=1.0)
    np.testing.assert_allclose(
        np.asarray(dense.infos.log_likelihood, np.float64), ref, rtol=2e-2
    )


def _scalar_random_walk_loglik(ys, q, r, p0):
    """log p(y_t | y_1:t-1) of x_t = x_t-1 + w, y = x + v, in NumPy float64."""
    m, p, out = 0.0, p0, []
    for y in ys:
        p = p + q
        s = p + r
        out.append(-0.5 * (np.log(2 * np.pi * s) + (y - m) ** 2 / s))
        k = p / s
        m, p = m + k * (y - m), (1 - k) * p
    return np.array(out)


def test_python_lists_are_a_clear_error():
    lists = kj.LinearDynamics(F=[[1.0]], Q=[[0.1]])
    obs = kj.LinearObservation(H=jnp.eye(1), R=jnp.eye(1))
    with pytest.raises(TypeError, match="dynamics.F is a Python list; pass an array"):
        kj.kalman_filter(lists, obs)
    with pytest.raises(TypeError, match="belief.mean is a Python list"):
        kj.update(kj.Gaussian([0.0], jnp.eye(1)), jnp.ones(1), obs)


# ------------------------------------------------- semi-definite R, Q and P0

# Every case below is a model whose exact answer the dense joint Gaussian of
# tests/reference/joint_gaussian.py gives in NumPy float64 (it conditions the joint
# of (x_0..x_T, y_1..y_T) directly, so a singular R, Q or P0 needs no special
# case there); gradients are compared with its central finite differences.

F2 = np.array([[1.0, 0.1], [0.0, 1.0]])
H2 = np.array([[1.0, 0.0]])
PATHS = [  # (form, parallel, fast): both kernels sequentially, the default in parallel
    (form, parallel, fast)
    for form in kj.FORMS
    for parallel, fast in ((False, True), (False, False), (True, None))
]
COVARIANCE_PATHS = [p for p in PATHS if p[0] != "sqrt"]


def _ys(T=12, m=1, seed=3):
    return np.random.default_rng(seed).normal(size=(T, m))


def _filter(model, path):
    form, _, fast = path
    m0, P0, F, Q, H, R = (jnp.asarray(a) for a in model)
    filt = kj.kalman_filter(
        kj.LinearDynamics(F, Q), kj.LinearObservation(H, R), form=form, fast=fast
    )
    return filt, kj.Gaussian(m0, P0)


def _log_lik(model, ys, path):
    """kalmanjax's log p(y_1:T) of a model given as NumPy arrays, on one path
    (jitted: a parallel scan runs much faster compiled than op by op)."""

    @jax.jit
    def log_lik(model, ys):
        filt, prior = _filter(model, path)
        return kj.log_marginal_likelihood(filt, prior, ys, parallel=path[1])

    return log_lik(tuple(jnp.asarray(a) for a in model), jnp.asarray(ys))


def _reference_grad(model, ys, which, h=1e-6):
    """Central differences of the joint-Gaussian log-likelihood wrt model[which]."""
    base = [np.asarray(a, np.float64) for a in model]
    grad = np.zeros_like(base[which])
    for idx in np.ndindex(*grad.shape):
        up, down = [a.copy() for a in base], [a.copy() for a in base]
        up[which][idx] += h
        down[which][idx] -= h
        grad[idx] = (
            joint.log_marginal_likelihood(*up, ys)
            - joint.log_marginal_likelihood(*down, ys)
        ) / (2 * h)
    return grad


def _noise_free_model():
    """A random walk with drift observed without noise: R = 0."""
    return (np.zeros(2), np.eye(2), F2, 0.01 * np.eye(2), H2, np.zeros((1, 1)))


@pytest.mark.parametrize("path", PATHS, ids=str)
def test_noise_free_observations_are_exact_on_every_path(path, x64):
    model, ys = _noise_free_model(), _ys()
    expect = joint.log_marginal_likelihood(*model, ys)
    out = jax.jit(lambda ys: kj.run(*_filter(model, path), ys, parallel=path[1]))(
        jnp.asarray(ys)
    )
    np.testing.assert_allclose(jnp.sum(out.infos.log_likelihood), expect, rtol=1e-10)
    for t in (1, 6, 12):
        mean, _ = joint.filtered_marginal(*model, ys, t)
        np.testing.assert_allclose(out.states.mean[t - 1], mean, atol=1e-10)
    # y_t is read exactly: the filtered position equals the observation
    np.testing.assert_allclose(out.states.mean[:, 0], ys[:, 0], atol=1e-10)
    # documented: the information gain of a noise-free observation is +inf
    assert np.all(np.isposinf(np.asarray(out.infos.information_gain)))


@pytest.mark.parametrize("path", COVARIANCE_PATHS, ids=str)
def test_noise_free_observations_have_correct_gradients(path, x64):
    model, ys = _noise_free_model(), _ys()
    for which in (5,) if path[1] else (5, 3):  # R (at 0), and Q sequentially
        expect = _reference_grad(model, ys, which)

        def loss(a, which=which):
            args = list(model)
            args[which] = a
            return _log_lik(args, ys, path)

        got = jax.jit(jax.grad(loss))(jnp.asarray(model[which]))
        np.testing.assert_allclose(got, expect, rtol=1e-6, atol=1e-6)


def _singular_q_model():
    """The README's allowance: Q = diag(1e-2, 0) (a noise-free velocity)."""
    return (np.zeros(2), np.eye(2), F2, np.diag([1e-2, 0.0]), H2, np.array([[0.5]]))


def _singular_p0_model():
    return (
        np.zeros(2),
        np.diag([1.0, 0.0]),
        F2,
        0.01 * np.eye(2),
        H2,
        np.array([[0.5]]),
    )


@pytest.mark.parametrize(
    "path", COVARIANCE_PATHS + [("sqrt", False, True), ("sqrt", False, False)], ids=str
)
def test_a_singular_q_has_correct_gradients(path, x64):
    model, ys = _singular_q_model(), _ys()
    expect = _reference_grad(model, ys, 3)
    loss = lambda Q: _log_lik((*model[:3], Q, *model[4:]), ys, path)
    got = jax.jit(jax.grad(loss))(jnp.asarray(model[3]))
    np.testing.assert_allclose(got, expect, rtol=1e-6, atol=1e-6)
    assert abs(expect[1, 1]) > 1.0  # the zero variance's gradient is not trivial


@pytest.mark.parametrize("path", COVARIANCE_PATHS, ids=str)
def test_a_singular_prior_has_correct_gradients(path, x64):
    model, ys = _singular_p0_model(), _ys()
    expect = _reference_grad(model, ys, 1)
    loss = lambda P0: _log_lik((model[0], P0, *model[2:]), ys, path)
    got = jax.jit(jax.grad(loss))(jnp.asarray(model[1]))
    np.testing.assert_allclose(got, expect, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("fast", [True, False])
def test_square_root_gradients_through_a_singular_factor_are_nan_not_wrong(fast, x64):
    """Documented: a singular factor has no derivative (d sqrt(p)/dp is infinite
    at 0), so the square-root form returns NaN there; the values stay exact."""
    ys = _ys()
    cases = [
        (_noise_free_model(), 5, False),  # the posterior factor is singular
        (_singular_p0_model(), 1, False),  # the prior's factor is singular
    ]
    if fast:  # the parallel elements' factors are singular (one kernel: compiles)
        cases.append((_singular_q_model(), 3, True))
    for model, which, parallel in cases:
        path = ("sqrt", parallel, fast)

        def loss(a, model=model, which=which, path=path):
            args = list(model)
            args[which] = a
            return _log_lik(args, ys, path)

        value, grad = jax.jit(jax.value_and_grad(loss))(jnp.asarray(model[which]))
        np.testing.assert_allclose(
            value, joint.log_marginal_likelihood(*model, ys), rtol=1e-10
        )
        assert np.all(np.isnan(np.asarray(grad)))


@pytest.mark.parametrize("m", [3, 12])
def test_parallel_square_root_gradients_beyond_the_small_kernels(m, x64):
    """d = 10 > 8 runs the LAPACK kernels. The early parallel elements' information
    factors are rank-deficient (rank <= m, and 0 for the first), where the QR
    derivative is NaN; the gradient of log p(y) must be finite and exact."""
    n, rng = 10, np.random.default_rng(7)
    F = 0.9 * np.eye(n) + 0.05 * rng.normal(size=(n, n))
    model = (
        np.zeros(n),
        np.eye(n),
        F,
        0.1 * np.eye(n) + 0.02 * np.ones((n, n)),
        rng.normal(size=(m, n)),
        0.5 * np.eye(m),
    )
    ys = _ys(T=6, m=m, seed=8)

    @jax.jit  # one compile for both gradients
    def grads(F, Q):
        loss = lambda F, Q: _log_lik((*model[:2], F, Q, *model[4:]), ys, path)
        return jax.grad(loss, argnums=(0, 1))(F, Q)

    path = ("sqrt", True, None)
    got = grads(jnp.asarray(model[2]), jnp.asarray(model[3]))
    for which, g in zip((2, 3), got, strict=True):
        expect = _reference_grad(model, ys, which)
        np.testing.assert_allclose(g, expect, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("path", PATHS, ids=str)
def test_a_deterministic_state_component_smooths_correctly(path, x64):
    """A zero row and column in Q and P0: the velocity is known exactly."""
    form, parallel, fast = path
    model = (
        np.array([0.0, 1.0]),
        np.diag([1.0, 0.0]),
        F2,
        np.diag([1e-2, 0.0]),
        H2,
        np.array([[0.5]]),
    )
    ys = _ys(T=8)
    m0, P0, F, Q, H, R = (jnp.asarray(a) for a in model)
    smoother = jax.jit(
        lambda ys: kj.kalman_smoother(
            kj.LinearDynamics(F, Q),
            kj.LinearObservation(H, R),
            kj.Gaussian(m0, P0),
            ys,
            form=form,
            parallel=parallel,
            fast=fast,
        )
    )
    out = smoother(jnp.asarray(ys))
    for t in range(1, 9):
        mean, cov = joint.smoothed_marginal(*model, ys, t)
        np.testing.assert_allclose(out.smoothed.mean[t - 1], mean, atol=1e-10)
        np.testing.assert_allclose(out.smoothed.cov[t - 1], cov, atol=1e-10)


@pytest.mark.parametrize("path", PATHS, ids=str)
def test_asymmetric_covariances_are_read_as_their_symmetric_part(path, x64):
    """One answer on every path: R, Q and P0 are read as (A + A^T) / 2."""
    rng = np.random.default_rng(5)
    H = rng.normal(size=(2, 3))
    sym = (
        np.zeros(3),
        np.eye(3) + 0.2,
        0.9 * np.eye(3),
        0.1 * np.eye(3) + 0.02,
        H,
        np.array([[1.0, 0.3], [0.3, 1.0]]),
    )
    skew = np.array([[0.0, 0.05, 0.0], [-0.05, 0.0, 0.02], [0.0, -0.02, 0.0]])
    asym = (
        sym[0],
        sym[1] + skew,
        sym[2],
        sym[3] - skew,
        H,
        sym[5] + np.array([[0.0, 0.1], [-0.1, 0.0]]),
    )
    ys = _ys(T=6, m=2)
    np.testing.assert_allclose(
        _log_lik(asym, ys, path), joint.log_marginal_likelihood(*sym, ys), rtol=1e-12
    )


@pytest.mark.parametrize("path", PATHS, ids=str)
def test_a_fixed_covariance_that_is_not_psd_is_nan_on_every_path(path, x64):
    """Documented: a fixed Q, R or prior covariance with a negative eigenvalue
    (beyond rounding) gives NaN in every form and path; before, the square-root
    form projected it (differently per kernel) and the dense form used it."""
    good = _singular_q_model()  # semi-definite Q: must stay exact
    ys = _ys(T=6)
    log_lik = jax.jit(lambda P0, Q, R: _log_lik((good[0], P0, F2, Q, H2, R), ys, path))
    np.testing.assert_allclose(
        log_lik(*(jnp.asarray(good[i]) for i in (1, 3, 5))),
        joint.log_marginal_likelihood(*good, ys),
        rtol=1e-10,
    )
    not_psd = {  # each has one negative eigenvalue; S stays definite for all
        1: np.diag([1.0, -0.5]),
        3: np.array([[1e-2, 0.0], [0.0, -1e-3]]),
        5: np.array([[-0.1]]),
    }
    for which, bad in not_psd.items():
        args = [jnp.asarray(bad if i == which else good[i]) for i in (1, 3, 5)]
        assert np.isnan(log_lik(*args)), which


# ------------------------------------------------------------ validation mode


def test_validate_names_the_bad_argument():
    good_dyn = kj.LinearDynamics(F=jnp.eye(2), Q=0.1 * jnp.eye(2))
    good_obs = kj.LinearObservation(H=jnp.eye(1, 2), R=jnp.eye(1))
    prior = kj.Gaussian(jnp.zeros(2), jnp.eye(2))
    ys = jnp.ones((3, 1)).at[1, 0].set(jnp.nan)  # NaN is missing data, not an error
    assert (
        kj.validate(dynamics=good_dyn, observation=good_obs, prior=prior, xs=ys) is None
    )
    cases = [
        (
            dict(dynamics=good_dyn._replace(F=jnp.eye(2).at[0, 1].set(jnp.inf))),
            r"dynamics.F contains NaN or inf \(first at index \(0, 1\)\)",
        ),
        (
            dict(dynamics=good_dyn._replace(Q=jnp.diag(jnp.array([1.0, -0.5])))),
            r"dynamics.Q is not positive semi-definite \(smallest eigenvalue -0.5",
        ),
        (
            dict(observation=good_obs._replace(R=jnp.array([[jnp.nan]]))),
            "observation.R contains NaN",
        ),
        (
            dict(prior=prior._replace(cov=jnp.array([[1.0, 2.0], [2.0, 1.0]]))),
            "prior.cov is not positive semi-definite",
        ),
        (
            dict(prior=prior._replace(cov=jnp.array([[1.0, 0.5], [0.0, 1.0]]))),
            "prior.cov is not symmetric",
        ),
        (
            dict(observation=good_obs, xs=ys.at[2, 0].set(jnp.inf)),
            r"xs \(observations\) contains inf at index \(2, 0\)",
        ),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError, match="kalmanjax.validate: " + message):
            kj.validate(**kwargs)


def test_validate_finds_an_observation_function_singular_where_it_is_linearised(x64):
    """A range reading ||x|| has no Jacobian at x = 0 (0 / 0). Started there, the
    EKF is NaN from the first step (documented); validate names observation.fn."""
    rng_obs = kj.NonlinearObservation(
        fn=lambda x, u: jnp.sqrt(jnp.sum(x * x))[None], R=0.1 * jnp.eye(1)
    )
    dyn = kj.LinearDynamics(F=jnp.eye(2), Q=0.01 * jnp.eye(2))
    ys = jnp.ones((4, 1))
    at_zero = kj.Gaussian(jnp.zeros(2), jnp.eye(2))
    out = kj.run(kj.extended_kalman_filter(dyn, rng_obs), at_zero, ys)
    assert np.all(np.isnan(np.asarray(out.states.mean)))
    with pytest.raises(ValueError, match="observation.fn at step 0 .* NaN or inf Jac"):
        kj.validate(dynamics=dyn, observation=rng_obs, prior=at_zero, xs=ys)
    # the same model started away from 0 is fine, and validates
    away = at_zero._replace(mean=jnp.array([3.0, 4.0]))
    np.testing.assert_allclose(  # the reference: the EKF's first update by hand
        kj.run(kj.extended_kalman_filter(dyn, rng_obs), away, ys[:1]).states.mean[0],
        np.array([3.0, 4.0]) + np.array([0.6, 0.8]) * 1.01 * (1.0 - 5.0) / 1.11,
        rtol=1e-10,
    )
    assert kj.validate(dynamics=dyn, observation=rng_obs, prior=away, xs=ys) is None
    sqrt_dyn = kj.NonlinearDynamics(fn=lambda x, u: jnp.sqrt(x), Q=0.01 * jnp.eye(2))
    with pytest.raises(ValueError, match="dynamics.fn has a NaN or inf Jacobian at"):
        kj.validate(dynamics=sqrt_dyn, prior=at_zero)


def test_validate_checks_time_varying_models_and_tokens_per_step(x64):
    R = jnp.stack([jnp.eye(1), -jnp.eye(1), jnp.eye(1)])
    obs = lambda u: kj.LinearObservation(H=jnp.eye(1, 2), R=u["R"])
    xs = {"obs": jnp.ones((3, 1)), "R": R}
    with pytest.raises(ValueError, match=r"observation.R at step 1 \(xs\[1\]\) is not"):
        kj.validate(observation=obs, xs=xs)
    with pytest.raises(ValueError, match="pass xs"):
        kj.validate(observation=obs)
    cat, _, _ = _categorical()
    tokens = jnp.asarray([0, 3, V, 1, -2])
    with pytest.raises(ValueError, match=r"ids outside 0..3 at steps \[2, 4\]"):
        kj.validate(observation=cat, xs=tokens, vocab_size=V)
    with pytest.raises(ValueError, match="must be integer ids"):
        kj.validate(observation=cat, xs=jnp.ones(3), vocab_size=V)
    kj.validate(observation=cat, xs=tokens[:2], vocab_size=V)  # in range: fine


# ------------------------------------------------ parallel float32, large means


@pytest.mark.parametrize("form", kj.FORMS)
def test_parallel_float32_with_large_means_is_as_accurate_as_sequential(form):
    """|m0| ~ 1e6 in float32: the parallel elements are centred on the prior means,
    so their error is the sequential filter's, not 10-1000x it (was 600x for the
    covariance forms on this model)."""
    T = 1000
    F, Q = np.eye(2), np.diag([1e-2, 1e-10])
    H, R = np.array([[1.0, 0.0]]), np.array([[1.0]])
    m0, P0 = np.array([1e6, -1e6]), np.eye(2)
    _, y = ref.simulate(np.random.default_rng(0), m0, P0, F, Q, H, R, T)
    as32 = lambda a: np.asarray(a, np.float32).astype(np.float64)
    arrays = [as32(a) for a in (m0, P0, F, Q, H, R, y)]
    expect = ref.kalman_filter(*arrays)["log_marginal_likelihood"]
    c = lambda a: jnp.asarray(a, jnp.float32)
    filt = kj.kalman_filter(
        kj.LinearDynamics(c(F), c(Q)), kj.LinearObservation(c(H), c(R)), form=form
    )
    prior = kj.Gaussian(c(m0), c(P0))

    def lml(parallel):
        run = jax.jit(
            lambda ys: kj.log_marginal_likelihood(filt, prior, ys, parallel=parallel)
        )
        return abs(float(run(c(y))) - expect)

    seq_error, par_error = lml(False), lml(True)
    assert seq_error < 1.0  # float32 on 1e6-sized means: ~0.2 nats of 1441
    assert par_error <= 10 * max(seq_error, 1e-2)


# ------------------------------------------------------------- diffuse priors


def _trend_model():
    """A local linear trend (level, slope) and a static weight, two readings."""
    F = np.array([[1.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    Q = np.diag([0.1, 0.01, 0.0])
    H = np.array([[1.0, 0.0, 0.5], [0.0, 0.0, 1.0]])
    return F, Q, H, np.array([[0.5, 0.1], [0.1, 0.3]])


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize(
    "diffuse_cols, p0", [((0, 1, 2), (0.0, 0.0, 0.0)), ((0,), (0.0, 0.3, 2.0))]
)
def test_diffuse_prior_is_the_exact_limit(diffuse_cols, p0, fast, x64):
    F, Q, H, R = _trend_model()
    A0 = np.eye(3)[:, list(diffuse_cols)]
    m0, P0 = np.array([0.0, 0.0, 1.0]), np.diag(p0)
    ys = 3.0 + _ys(T=10, m=2)
    ys[1, 1] = np.nan  # missing data inside and after the diffuse phase
    ys[4, 0] = np.nan
    filt = kj.diffuse_kalman_filter(
        kj.LinearDynamics(jnp.asarray(F), jnp.asarray(Q)),
        kj.LinearObservation(jnp.asarray(H), jnp.asarray(R)),
        diffuse=jnp.asarray(A0),
        fast=fast,
    )
    prior = kj.Gaussian(jnp.asarray(m0), jnp.asarray(P0))
    out = jax.jit(lambda y: kj.run(filt, prior, y))(jnp.asarray(ys))
    beliefs = kj.collapse(out.states)
    identified = 0
    for t in range(1, 11):
        expect = joint.diffuse_posterior(m0, P0, A0, F, Q, H, R, ys, t)
        if expect is None:  # not identified yet: documented NaN
            assert np.all(np.isnan(np.asarray(beliefs.mean[t - 1])))
            continue
        identified += 1
        log_lik, mean, cov = expect
        np.testing.assert_allclose(beliefs.mean[t - 1], mean, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(beliefs.cov[t - 1], cov, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(
            np.sum(out.infos.log_likelihood[:t]), log_lik, rtol=1e-10
        )
    assert identified >= 7


def test_diffuse_prior_beats_a_vague_one_in_float32():
    """A vague P0 = 1e8 I in float32 against the exact diffuse start."""
    F, Q, H, R = _trend_model()
    m0 = np.zeros(3)
    ys = 3.0 + _ys(T=200, m=2)
    T = ys.shape[0]
    with jax.enable_x64(True):
        expect, _, _ = joint.diffuse_posterior(
            m0, np.zeros((3, 3)), np.eye(3), F, Q, H, R, ys, T
        )
    c = lambda a: jnp.asarray(a, jnp.float32)
    dyn, obs = kj.LinearDynamics(c(F), c(Q)), kj.LinearObservation(c(H), c(R))
    diffuse = kj.diffuse_kalman_filter(dyn, obs, diffuse=c(np.eye(3)))
    exact = float(
        kj.log_marginal_likelihood(
            diffuse, kj.Gaussian(c(m0), c(np.zeros((3, 3)))), c(ys)
        )
    )
    kappa = 1e8
    vague = kj.kalman_filter(dyn, obs)
    approx = float(
        kj.log_marginal_likelihood(
            vague, kj.Gaussian(c(m0), c(kappa * np.eye(3))), c(ys)
        )
    )
    approx += 1.5 * np.log(kappa)  # + k/2 log kappa: the same limit
    assert abs(exact - expect) < 1e-3 * abs(expect)
    assert abs(exact - expect) < 0.1 * abs(approx - expect)
