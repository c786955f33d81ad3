"""Particle filters against exact answers: the Kalman filter's likelihood (the
estimate is unbiased), its moments and score (within Monte Carlo error),
Gauss-Hermite quadrature on nonlinear steps, exact token-stream likelihoods,
and cuthbert's particle filter."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import kalmanjax as kj
from tests.reference import numpy_kalman
from tests.reference import numpy_sigma_point as ref

F = np.array([[0.9, 0.1], [0.0, 0.8]])
Q = 0.2 * np.eye(2)
H = np.array([[1.0, 0.5]])
R = np.array([[0.5]])
M0, P0 = np.zeros(2), np.eye(2)


def _data(T=20, seed=0):
    rng = np.random.default_rng(seed)
    out = numpy_kalman.simulate(rng, M0, P0, F, Q, H, R, T)
    return out[1]


def _model(scale=1.0):
    dyn = kj.LinearDynamics(jnp.asarray(F), jnp.asarray(Q))
    obs = kj.LinearObservation(jnp.asarray(H), scale * jnp.asarray(R))
    prior = kj.Gaussian(jnp.asarray(M0), jnp.asarray(P0))
    return dyn, obs, prior


def _log_likelihoods(pf, prior, ys, num_particles, num_runs, seed=0, **run_kw):
    """``log p-hat(y_{1:T})`` of ``num_runs`` independent runs (vmapped keys)."""

    def one(key):
        start = kj.sample_particles(key, prior, num_particles)
        return jnp.sum(kj.run(pf, start, ys, lean=True, **run_kw).infos.log_likelihood)

    keys = jax.random.split(jax.random.key(seed), num_runs)
    return np.asarray(jax.jit(jax.vmap(one))(keys))


def _within(values, target, k=4.0):
    se = values.std(ddof=1) / np.sqrt(values.size)
    assert abs(values.mean() - target) < k * se, (values.mean(), target, se)


CASES = [
    ("systematic", None),
    ("stratified", None),
    ("multinomial", None),
    ("systematic", "extended"),
]


@pytest.mark.parametrize(("resampling", "proposal"), CASES)
def test_likelihood_estimate_is_unbiased_for_the_kalman_filter(
    resampling, proposal, x64
):
    """E[p-hat / p] = 1: the mean of exp(log p-hat - log p) within 4 standard errors."""
    ys = _data()
    exact = numpy_kalman.kalman_filter(M0, P0, F, Q, H, R, ys)[
        "log_marginal_likelihood"
    ]
    dyn, obs, prior = _model()
    pf = kj.particle_filter(dyn, obs, resampling=resampling, proposal=proposal)
    lls = _log_likelihoods(pf, prior, jnp.asarray(ys), 32, 2000)
    ratios = np.exp(lls - exact)
    _within(ratios, 1.0)
    # not trivially so: the estimates do spread, and log p-hat is biased low
    assert ratios.std() > 0.05
    assert lls.mean() < exact


def test_update_first_likelihood_is_unbiased(x64):
    ys = _data(T=10)
    dyn, obs, prior = _model()
    kf = kj.kalman_filter(dyn, obs)
    exact = kj.log_marginal_likelihood(kf, prior, jnp.asarray(ys), update_first=True)
    pf = kj.particle_filter(dyn, obs)
    lls = _log_likelihoods(pf, prior, jnp.asarray(ys), 32, 2000, update_first=True)
    _within(np.exp(lls - float(exact)), 1.0)


@pytest.mark.parametrize("proposal", [None, "extended"])
def test_filtered_moments_match_the_kalman_filter(proposal, x64):
    """Many particles: every filtered mean within 5 Monte Carlo standard errors."""
    ys = _data(T=15)
    ys[6] = np.nan  # a missing reading: the weights do not move
    kf = numpy_kalman.kalman_filter(M0, P0, F, Q, H, R, ys)
    dyn, obs, prior = _model()
    pf = kj.particle_filter(dyn, obs, proposal=proposal)
    start = kj.sample_particles(jax.random.key(3), prior, 20_000)
    out = kj.run(pf, start, jnp.asarray(ys))
    moments = kj.particle_moments(out.states)
    ess = np.asarray(out.infos.ess)
    se = np.sqrt(np.diagonal(kf["filtered_covs"], axis1=1, axis2=2) / ess[:, None])
    err = np.abs(np.asarray(moments.mean) - kf["filtered_means"])
    assert np.all(err < 5 * se), (err / se).max()
    np.testing.assert_allclose(moments.cov, kf["filtered_covs"], rtol=0.1, atol=0.01)
    assert float(out.infos.log_likelihood[6]) == 0.0
    if proposal == "extended":
        # the locally optimal proposal: a step's weights are p(y | x_prev) =
        # N(y; H F x_prev, H Q H^T + R), whatever was drawn
        first = kj.run(pf, start, jnp.asarray(ys[:1])).final
        x0 = np.asarray(start.particles)
        S = H @ Q @ H.T + R
        r = ys[0][None] - x0 @ (H @ F).T
        logw = -0.5 * np.sum(r @ np.linalg.inv(S) * r, axis=1)
        logw -= np.log(np.sum(np.exp(logw - logw.max()))) + logw.max()
        np.testing.assert_allclose(first.log_weights, logw, atol=1e-9)


def test_nonlinear_prediction_matches_high_order_gauss_hermite(x64):
    """A step with no reading: the GHKF's predicted moments are quadrature, exact
    to rounding at order 20; the particles' are within their Monte Carlo error."""

    def f(x, u=None):
        return jnp.stack([x[0] + 0.8 * jnp.sin(x[1]), 0.9 * x[1] + 0.3 * x[0] ** 2])

    dyn = kj.NonlinearDynamics(fn=f, Q=0.05 * jnp.eye(2))
    obs = kj.NonlinearObservation(fn=lambda x, u: x[:1], R=jnp.eye(1))
    prior = kj.Gaussian(jnp.array([0.5, -0.3]), jnp.diag(jnp.array([0.3, 0.6])))
    ys = jnp.full((1, 1), jnp.nan)
    gh = kj.run(
        kj.sigma_point_kalman_filter(dyn, obs, rule=kj.gauss_hermite(20)), prior, ys
    ).final
    num = 400_000
    start = kj.sample_particles(jax.random.key(0), prior, num)
    final = kj.run(kj.particle_filter(dyn, obs), start, ys).final
    x = np.asarray(final.particles)
    se = x.std(axis=0) / np.sqrt(num)
    assert np.all(np.abs(x.mean(axis=0) - np.asarray(gh.mean)) < 5 * se)
    centred = x - x.mean(axis=0)
    products = centred[:, :, None] * centred[:, None, :]
    se_cov = products.std(axis=0) / np.sqrt(num)
    assert np.all(np.abs(products.mean(axis=0) - np.asarray(gh.cov)) < 5 * se_cov)
    # and the prediction is far from Gaussian-linear: the EKF's is off by many SEs
    ekf = kj.run(kj.extended_kalman_filter(dyn, obs), prior, ys).final
    assert np.max(np.abs(np.asarray(ekf.mean) - x.mean(axis=0)) / se) > 50


def test_nonlinear_update_matches_gauss_hermite_quadrature(x64):
    """Poisson counts of a Gaussian state: the evidence E[g(y | x)] and the
    posterior mean E[x g] / E[g] by NumPy's Gauss-Hermite nodes (order 30)."""
    W = np.array([[1.0, 0.3], [-0.5, 0.8]])
    c = np.array([0.2, -0.1])
    y = np.array([3.0, 0.0])
    m1, P1 = F @ M0, F @ P0 @ F.T + Q  # x_1 is Gaussian: linear dynamics
    xi, w, _ = ref.points("gauss_hermite", 2, order=30)
    X = m1[None] + xi @ np.linalg.cholesky(P1).T
    eta = X @ W.T + c
    g = np.exp(np.sum(y * eta - np.exp(eta), axis=1) - np.log(6.0))  # 3! for y_1 = 3
    evidence = w @ g
    post_mean = (w * g) @ X / evidence
    dyn, _, prior = _model()
    obs = kj.poisson_likelihood(lambda x, u: jnp.asarray(W) @ x + jnp.asarray(c))
    num = 200_000
    start = kj.sample_particles(jax.random.key(1), prior, num)
    out = kj.run(kj.particle_filter(dyn, obs), start, jnp.asarray(y)[None])
    weights = np.exp(np.asarray(out.final.log_weights))
    rel_se = (num * weights).std() / np.sqrt(num)  # of p-hat / p, one step
    assert abs(np.exp(float(out.infos.log_likelihood[0])) / evidence - 1) < 5 * rel_se
    post = kj.particle_moments(out.final)
    se = np.sqrt(np.diag(np.asarray(post.cov)) / float(out.infos.ess[0]))
    assert np.all(np.abs(np.asarray(post.mean) - post_mean) < 5 * se)


def test_token_stream_likelihood_is_unbiased(x64):
    """A static 1-d state read through a softmax: the exact evidence by quadrature."""
    rng = np.random.default_rng(6)
    z = rng.normal(size=(4,))
    tokens = rng.integers(0, 4, size=15)
    logits = lambda x, u: jnp.asarray(z) * x[0]  # noqa: E731
    t, w = np.polynomial.hermite.hermgauss(80)
    theta = np.sqrt(2.0) * t  # N(0, 1) nodes
    logp = z[None, :] * theta[:, None]
    logp = logp - np.log(np.exp(logp).sum(axis=1, keepdims=True))
    evidence = (w / np.sqrt(np.pi)) @ np.exp(logp[:, tokens].sum(axis=1))
    dyn = kj.LinearDynamics(jnp.eye(1), jnp.zeros((1, 1)))  # static: Q = 0
    pf = kj.particle_filter(dyn, kj.CategoricalObservation(fn=logits))
    prior = kj.Gaussian(jnp.zeros(1), jnp.eye(1))
    lls = _log_likelihoods(pf, prior, jnp.asarray(tokens), 32, 2000)
    _within(np.exp(lls - np.log(evidence)), 1.0)


@pytest.mark.parametrize("parameter", ["noise", "dynamics"])
def test_differentiable_score_is_consistent(parameter, x64):
    """With differentiable=True the gradient of log p-hat is, on average, the
    Kalman filter's score: in the observation-noise scale (through the weights)
    and in a scale of F (through the reparametrised particles and their
    ancestors). The forward values are unchanged; without the option the
    gradient ignores the resampling and misses the score."""
    ys = jnp.asarray(_data(T=10))

    def models(theta):
        dyn, obs, prior = _model(theta if parameter == "noise" else 1.0)
        if parameter == "dynamics":
            dyn = dyn._replace(F=theta * dyn.F)
        return dyn, obs, prior

    def exact(theta):
        dyn, obs, prior = models(theta)
        return kj.log_marginal_likelihood(kj.kalman_filter(dyn, obs), prior, ys)

    def estimate(theta, key, differentiable):
        dyn, obs, prior = models(theta)
        pf = kj.particle_filter(
            dyn, obs, differentiable=differentiable, ess_threshold=1.0
        )
        start = kj.sample_particles(key, prior, 256)
        return kj.log_marginal_likelihood(pf, start, ys)

    theta = 1.3 if parameter == "noise" else 0.8
    keys = jax.random.split(jax.random.key(2), 200)
    grads = jax.jit(
        jax.vmap(jax.value_and_grad(estimate), in_axes=(None, 0, None)),
        static_argnums=2,
    )
    values, score = (np.asarray(a) for a in grads(theta, keys, True))
    plain_values, plain = (np.asarray(a) for a in grads(theta, keys, False))
    np.testing.assert_allclose(values, plain_values, rtol=1e-14)
    target = float(jax.grad(exact)(theta))
    _within(score, target)
    assert score.std() > 0.01
    # the negative control: the plain gradient is off by many standard errors
    se = plain.std(ddof=1) / np.sqrt(plain.size)
    assert abs(plain.mean() - target) > 8 * se, (plain.mean(), target, se)


def test_matches_cuthbert_bootstrap_filter(x64):
    """The same algorithm (bootstrap, systematic, ESS < N / 2): the same
    distribution of log p-hat, in mean and spread."""
    pytest.importorskip("cuthbert")
    import cuthbert
    from cuthbert.smc import particle_filter as cpf
    from cuthbertlib.resampling import ess_decorator, systematic

    ys = _data(T=20)
    Fj, Qj, Hj, Rj = (jnp.asarray(a) for a in (F, Q, H, R))
    lq, lr = jnp.linalg.cholesky(Qj), jnp.linalg.cholesky(Rj)

    def log_potential(x_prev, x, y):
        r = jax.scipy.linalg.solve_triangular(lr, y - Hj @ x, lower=True)
        return -0.5 * (r @ r + jnp.log(2 * jnp.pi)) - jnp.sum(jnp.log(jnp.diag(lr)))

    filt = cpf.build_filter(
        init_sample=lambda k: jnp.asarray(M0) + jax.random.normal(k, (2,)),
        propagate_sample=lambda k, x, y: Fj @ x + lq @ jax.random.normal(k, (2,)),
        log_potential=log_potential,
        n_filter_particles=32,
        resampling_fn=ess_decorator(systematic.resampling, 0.5),
    )

    @jax.jit
    def theirs_one(key):
        k0, k1 = jax.random.split(key)
        with jax.numpy_rank_promotion("allow"), jax.numpy_dtype_promotion("standard"):
            states = cuthbert.filter(
                filt, jnp.asarray(ys), filt.init_prepare(key=k0), key=k1
            )
        return states.log_normalizing_constant[-1]

    keys = jax.random.split(jax.random.key(9), 600)
    with jax.numpy_rank_promotion("allow"), jax.numpy_dtype_promotion("standard"):
        theirs = np.array([float(theirs_one(k)) for k in keys])
    dyn, obs, prior = _model()
    ours = _log_likelihoods(
        kj.particle_filter(dyn, obs), prior, jnp.asarray(ys), 32, 600
    )
    se = np.sqrt(theirs.var(ddof=1) / theirs.size + ours.var(ddof=1) / ours.size)
    assert abs(ours.mean() - theirs.mean()) < 4 * se, (ours.mean(), theirs.mean(), se)
    assert 0.75 < ours.std() / theirs.std() < 1.33


def test_float32_runs_stay_finite():
    ys = jnp.asarray(_data(T=500), jnp.float32)
    dyn = kj.LinearDynamics(jnp.asarray(F, jnp.float32), jnp.asarray(Q, jnp.float32))
    obs = kj.LinearObservation(jnp.asarray(H, jnp.float32), jnp.asarray(R, jnp.float32))
    prior = kj.Gaussian(jnp.zeros(2, jnp.float32), jnp.eye(2, dtype=jnp.float32))
    for proposal in (None, "extended"):
        start = kj.sample_particles(jax.random.key(0), prior, 256)
        out = kj.run(kj.particle_filter(dyn, obs, proposal=proposal), start, ys)
        assert out.final.particles.dtype == jnp.float32
        assert out.infos.log_likelihood.dtype == jnp.float32
        assert np.all(np.isfinite(np.asarray(out.infos.log_likelihood)))
        total = jax.nn.logsumexp(out.states.log_weights, axis=1)
        np.testing.assert_allclose(total, 0.0, atol=1e-5)
        assert 0.0 < float(out.infos.resampled.mean()) < 1.0  # adaptive


def test_jit_traces_once_and_vmap_equals_a_loop():
    """The contract of tests/filters/test_contract.py, for a particle state."""
    dyn, obs, prior = (
        kj.LinearDynamics(jnp.asarray(F, jnp.float32), jnp.asarray(Q, jnp.float32)),
        kj.LinearObservation(jnp.asarray(H, jnp.float32), jnp.asarray(R, jnp.float32)),
        kj.Gaussian(jnp.zeros(2, jnp.float32), jnp.eye(2, dtype=jnp.float32)),
    )
    pf = kj.particle_filter(dyn, obs, resampling="stratified")
    traces = []

    @jax.jit
    def total(key, ys):
        traces.append(1)
        start = kj.sample_particles(key, prior, 64)
        return kj.log_marginal_likelihood(pf, start, ys)

    ys = jnp.asarray(_data(T=12), jnp.float32)
    keys = jax.random.split(jax.random.key(4), 3)
    loop = [float(total(k, ys)) for k in keys]
    total(keys[0], ys + 1.0)
    assert len(traces) == 1
    batch = jax.vmap(total, in_axes=(0, None))(keys, ys)
    np.testing.assert_allclose(batch, loop, rtol=1e-6)
    structure = jax.tree_util.tree_structure(kj.sample_particles(keys[0], prior, 64))
    final = kj.run(pf, kj.sample_particles(keys[0], prior, 64), ys).final
    assert jax.tree_util.tree_structure(final) == structure


def test_bad_arguments_are_refused():
    dyn, obs, prior = _model()
    with pytest.raises((ValueError, TypeError), match="resampling"):
        kj.particle_filter(dyn, obs, resampling="residual")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ess_threshold"):
        kj.particle_filter(dyn, obs, ess_threshold=1.5)
    with pytest.raises((ValueError, TypeError), match="proposal"):
        kj.particle_filter(dyn, obs, proposal="optimal")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ParticleState"):
        kj.run(kj.particle_filter(dyn, obs), prior, jnp.ones((3, 1)))
    with pytest.raises(ValueError, match="num_particles"):
        kj.sample_particles(jax.random.key(0), prior, 0)
    start = kj.sample_particles(jax.random.key(0), prior, 8)
    no_density = kj.ConditionalMomentObservation(
        mean=lambda x, u: x[:1], cov=lambda x, u: jnp.eye(1, dtype=x.dtype)
    )
    with pytest.raises(ValueError, match="log_prob"):
        kj.run(kj.particle_filter(dyn, no_density), start, jnp.ones((3, 1)))
    with pytest.raises(ValueError, match="expected"):
        kj.run(kj.particle_filter(dyn, obs), start, jnp.ones((3, 2)))
