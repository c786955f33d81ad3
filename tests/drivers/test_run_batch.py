"""Batches of sequences of different lengths: against the dense joint Gaussian."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import kalmanjax as kj
from kalmanjax import constraints as C
from tests.reference import joint_gaussian

optax = pytest.importorskip("optax")

F = np.array([[0.9, 0.2], [-0.1, 0.8]])
Q = np.array([[0.2, 0.05], [0.05, 0.1]])
H = np.array([[1.0, 0.5]])
R = np.array([[0.3]])
M0, P0 = np.array([1.0, -1.0]), np.array([[1.0, 0.3], [0.3, 0.5]])
LENGTHS = np.array([7, 3, 0, 5, 1])
T = 7


def _model():
    return (
        kj.LinearDynamics(F=jnp.asarray(F), Q=jnp.asarray(Q)),
        kj.LinearObservation(H=jnp.asarray(H), R=jnp.asarray(R)),
        kj.Gaussian(jnp.asarray(M0), jnp.asarray(P0)),
    )


def _padded(seed=0, gaps=True, pad=np.nan):
    """(5, 7, 1) readings, some missing inside, ``pad`` beyond each length."""
    rng = np.random.default_rng(seed)
    ys = rng.normal(size=(len(LENGTHS), T, 1))
    if gaps:
        ys[0, 2] = np.nan
        ys[3, 4] = np.nan
    for b, length in enumerate(LENGTHS):
        ys[b, length:] = pad
    return ys


def _reference(ys, b, first=False):
    """Sequence b's final belief and log-likelihood from the dense joint Gaussian."""
    y = ys[b, : LENGTHS[b]]
    if LENGTHS[b] == 0:
        return M0, P0, 0.0
    Fs, Qs = F, Q
    if first:  # y_0 observes x_0: a first step that is the identity, noise-free
        Fs = np.stack([np.eye(2)] + [F] * (len(y) - 1))
        Qs = np.stack([np.zeros((2, 2))] + [Q] * (len(y) - 1))
    mean, cov = joint_gaussian.filtered_marginal(M0, P0, Fs, Qs, H, R, y, len(y))
    ll = joint_gaussian.log_marginal_likelihood(M0, P0, Fs, Qs, H, R, y)
    return mean, cov, ll


@pytest.mark.parametrize("form", ["dense", "joseph", "sqrt"])
@pytest.mark.parametrize(
    "lean, parallel", [(False, False), (True, False), (True, True)]
)
@pytest.mark.parametrize("update_first", [False, True])
def test_ragged_batch_matches_the_dense_joint_gaussian(
    form, lean, parallel, update_first, x64
):
    dyn, obs, prior = _model()
    ys = _padded()
    filt = kj.kalman_filter(dyn, obs, form=form)
    out = jax.jit(
        lambda ys, lengths: kj.run_batch(
            filt,
            prior,
            ys,
            lengths=lengths,
            lean=lean,
            parallel=parallel,
            update_first=update_first,
        )
    )(jnp.asarray(ys), jnp.asarray(LENGTHS))
    final = kj.to_dense(out.final)
    lls = out.infos.log_likelihood.sum(-1)
    for b in range(len(LENGTHS)):
        mean, cov, ll = _reference(ys, b, first=update_first)
        np.testing.assert_allclose(final.mean[b], mean, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(final.cov[b], cov, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(lls[b], ll, rtol=1e-10, atol=1e-12)
        assert np.all(np.asarray(out.infos.log_likelihood[b, LENGTHS[b] :]) == 0)
    if not lean:  # beyond its length a sequence's states repeat its final belief
        states = kj.to_dense(out.states)
        b = 1
        np.testing.assert_allclose(
            states.mean[b, LENGTHS[b] :],
            np.broadcast_to(final.mean[b], (T - LENGTHS[b], 2)),
        )


def test_lengths_default_to_the_whole_sequences_and_other_filters(x64):
    dyn, obs, prior = _model()
    ys = _padded(gaps=False, pad=0.0)
    full = kj.run_batch(kj.kalman_filter(dyn, obs), prior, jnp.asarray(ys))
    for b in range(len(LENGTHS)):
        ll = joint_gaussian.log_marginal_likelihood(M0, P0, F, Q, H, R, ys[b])
        np.testing.assert_allclose(full.infos.log_likelihood[b].sum(), ll, rtol=1e-10)
    # the EKF on this linear model, and finite padding
    ekf = kj.extended_kalman_filter(dyn, obs)
    out = kj.run_batch(ekf, prior, jnp.asarray(ys), lengths=jnp.asarray(LENGTHS))
    for b in range(len(LENGTHS)):
        mean, cov, ll = _reference(ys, b)
        np.testing.assert_allclose(out.final.mean[b], mean, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(out.final.cov[b], cov, rtol=1e-10, atol=1e-12)


def _scan_carries(fn, *args):
    """The carry shapes of every scan in ``fn``'s jaxpr."""
    shapes = []

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "scan":
                carry = eqn.outvars[: eqn.params["num_carry"]]
                shapes.extend(tuple(v.aval.shape) for v in carry)
            for value in eqn.params.values():
                for sub in value if isinstance(value, tuple) else (value,):
                    inner = getattr(sub, "jaxpr", sub)  # a ClosedJaxpr or a Jaxpr
                    if hasattr(inner, "eqns"):
                        walk(inner)

    walk(jax.make_jaxpr(fn)(*args).jaxpr)
    return shapes


@pytest.mark.parametrize("missing", [False, True])
def test_the_covariance_recursion_is_shared_when_the_data_allow(missing, x64):
    """missing=False: the scan carries one (2, 2) covariance, not one per sequence."""
    dyn, obs, prior = _model()
    filt = kj.kalman_filter(dyn, obs, form="joseph", missing=missing)
    ys = jnp.asarray(_padded(gaps=False, pad=0.0))
    carries = _scan_carries(
        lambda ys, n: kj.run_batch(filt, prior, ys, lengths=n, lean=True),
        ys,
        jnp.asarray(LENGTHS),
    )
    batch = len(LENGTHS)
    assert ((2, 2) in carries) is not missing, carries
    # with missing=True the covariance depends on the data: one per sequence
    assert carries.count((batch, 2, 2)) == (2 if missing else 1), carries


def test_fit_marginal_likelihood_counts_only_the_data(x64):
    ys = _padded(pad=123.0)  # finite nonsense beyond each length
    num = sum(int(np.sum(~np.isnan(ys[b, : LENGTHS[b]]))) for b in range(len(LENGTHS)))

    def build(p):
        dyn = kj.LinearDynamics(F=jnp.asarray(F), Q=p["q"] * jnp.asarray(Q))
        obs = kj.LinearObservation(H=jnp.asarray(H), R=jnp.asarray(R))
        return kj.kalman_filter(dyn, obs), kj.Gaussian(jnp.asarray(M0), jnp.asarray(P0))

    fit = kj.fit_marginal_likelihood(
        build,
        {"q": jnp.array(1.0)},
        jnp.asarray(ys),
        optax.adam(0.01),
        constraints={"q": C.positive()},
        num_steps=2,
        batch=True,
        lengths=jnp.asarray(LENGTHS),
    )
    total = sum(_reference(ys, b)[2] for b in range(len(LENGTHS)))
    np.testing.assert_allclose(fit.losses[0] * num, -total, rtol=1e-10)
    with pytest.raises(ValueError, match="lengths needs batch=True"):
        kj.fit_marginal_likelihood(
            build,
            {"q": jnp.array(1.0)},
            jnp.asarray(ys[0]),
            optax.adam(0.01),
            lengths=jnp.asarray([3]),
        )


def test_gradients_through_nan_padding_match_finite_differences(x64):
    """d/dR of the batch's log-likelihood: NaN padding adds nothing, not NaN."""
    dyn, obs, prior = _model()
    ys = _padded()  # NaN inside and beyond each length

    def total(r):
        filt = kj.kalman_filter(dyn, obs._replace(R=r))
        out = kj.run_batch(
            filt, prior, jnp.asarray(ys), lengths=jnp.asarray(LENGTHS), lean=True
        )
        return out.infos.log_likelihood.sum()

    def reference(r):
        return sum(
            joint_gaussian.log_marginal_likelihood(
                M0, P0, F, Q, H, r, ys[b, : LENGTHS[b]]
            )
            for b in range(len(LENGTHS))
            if LENGTHS[b] > 0
        )

    grad = jax.grad(total)(jnp.asarray(R))
    h = 1e-6
    fd = (reference(R + h) - reference(R - h)) / (2 * h)
    np.testing.assert_allclose(grad[0, 0], fd, rtol=1e-6)


def test_bad_lengths_raise(x64):
    dyn, obs, prior = _model()
    filt = kj.kalman_filter(dyn, obs)
    ys = jnp.asarray(_padded())
    with pytest.raises(ValueError, match=r"lengths must be \(5,\) integers"):
        kj.run_batch(filt, prior, ys, lengths=jnp.ones(4, jnp.int32))
    with pytest.raises(ValueError, match=r"lengths must be \(5,\) integers"):
        kj.run_batch(filt, prior, ys, lengths=jnp.ones(5))
    with pytest.raises(ValueError, match=r"lengths must lie in \[0, 7\]"):
        kj.run_batch(filt, prior, ys, lengths=jnp.array([1, 2, 3, 4, 8]))
    with pytest.raises(ValueError, match=r"leading axes \(batch, T\)"):
        kj.run_batch(filt, prior, ys[0, :, 0])
