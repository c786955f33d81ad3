"""kalmanjax.diagnostics against NumPy float64 references and closed forms."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

import kalmanjax as kj
from kalmanjax import diagnostics as kd
from tests.reference import numpy_kalman as ref
from tests.reference import ridge


def _regression(rng, T, d, r, tau2=1.0):
    X = rng.normal(size=(T, d))
    theta = np.sqrt(tau2) * rng.normal(size=d)
    y = X @ theta + np.sqrt(r) * rng.normal(size=T)
    return X, theta, y


def _kj_regression(X, y, r, prior_cov, prior_mean=None, form="dense", q=0.0):
    d = X.shape[1]
    dt = jnp.asarray(X).dtype
    dyn = kj.LinearDynamics(F=jnp.eye(d, dtype=dt), Q=q * jnp.eye(d, dtype=dt))
    R = jnp.asarray(r * np.eye(1), dt)
    filt = kj.kalman_filter(
        dyn, lambda u: kj.LinearObservation(H=u["x"][None, :], R=R), form=form
    )
    m0 = jnp.zeros(d, dt) if prior_mean is None else jnp.asarray(prior_mean, dt)
    prior = kj.Gaussian(mean=m0, cov=jnp.asarray(prior_cov, dt))
    xs = {"obs": jnp.asarray(y, dt)[:, None], "x": jnp.asarray(X, dt)}
    return kj.run(filt, prior, xs), prior


def _loewner_max(a, b):
    """Largest eigenvalue of a - b (<= 0 means a <= b), per leading index."""
    return np.linalg.eigvalsh(0.5 * (a - b + np.swapaxes(a - b, -1, -2)))[..., -1]


# ------------------------------------------------------------- covariance collapse


@pytest.mark.parametrize("form", ["dense", "sqrt"])
def test_trace_logdet_eigenvalues_match_numpy(x64, rng, form, variant):
    X, _, y = _regression(rng, 12, 4, 0.1)
    out, _ = _kj_regression(X, y, 0.1, np.eye(4), form=form)
    _, covs = ridge.posterior_path(X, y, 0.1, np.eye(4))
    tr = variant(kd.covariance_trace)(out.states)
    ld = variant(kd.covariance_logdet)(out.states)
    ev = variant(kd.covariance_eigenvalues)(out.states)
    np.testing.assert_allclose(tr, np.trace(covs, axis1=1, axis2=2), rtol=1e-10)
    np.testing.assert_allclose(ld, np.linalg.slogdet(covs)[1], rtol=1e-10)
    np.testing.assert_allclose(ev, np.linalg.eigvalsh(covs), rtol=1e-8, atol=1e-14)


def test_collapse_functions_keep_float32(rng):
    covs = jnp.asarray(np.stack([np.eye(3) * (k + 1) for k in range(5)]), jnp.float32)
    b = kj.Gaussian(mean=jnp.zeros((5, 3), jnp.float32), cov=covs)
    for f in (kd.covariance_trace, kd.covariance_logdet, kd.covariance_eigenvalues):
        assert f(b).dtype == jnp.float32
        assert f(kj.to_sqrt(kj.Gaussian(b.mean[0], b.cov[0]))).dtype == jnp.float32


# --------------------------------------------------------------------- information


def test_information_gains_sum_to_logdet_difference(x64, rng):
    # Q = 0: sum_t dI_t = 1/2 log det Sigma_0 - 1/2 log det Sigma_T (chain rule)
    X, _, y = _regression(rng, 30, 5, 0.2)
    prior_cov = np.diag(rng.uniform(0.5, 2.0, size=5))
    out, prior = _kj_regression(X, y, 0.2, prior_cov)
    _, covs = ridge.posterior_path(X, y, 0.2, prior_cov)
    expected = 0.5 * (np.linalg.slogdet(prior_cov)[1] - np.linalg.slogdet(covs)[1])
    np.testing.assert_allclose(kd.cumulative_information(out.infos), expected, 1e-10)
    np.testing.assert_allclose(
        kd.information_from_covariances(prior, out.states), expected, rtol=1e-10
    )


def test_information_with_process_noise_differs_from_logdet(x64, rng):
    # with Q > 0 the covariance re-inflates between tokens: the identity must not hold
    X, _, y = _regression(rng, 30, 3, 0.2)
    out, prior = _kj_regression(X, y, 0.2, np.eye(3), q=0.05)
    cum = kd.cumulative_information(out.infos)[-1]
    from_cov = kd.information_from_covariances(prior, out.states)[-1]
    assert cum > from_cov + 0.5


def test_token_information_and_duplicates_match_reference(x64, rng):
    d = 3
    P = np.cov(rng.normal(size=(d, 10)))
    H = rng.normal(size=(1, d))
    r = 0.3
    copies = 5
    got = kd.duplicated_token_information(
        jnp.asarray(P), jnp.asarray(H), r * jnp.eye(1), copies
    )
    # the NumPy reference filter run on the token repeated: its per-step gains
    out = ref.kalman_filter(
        np.zeros(d),
        P,
        np.eye(d),
        np.zeros((d, d)),
        H,
        r * np.eye(1),
        rng.normal(size=(copies, 1)),
    )
    np.testing.assert_allclose(got, out["information_gains"], rtol=1e-10)
    # closed form: copy k adds 1/2 log((r + k v) / (r + (k - 1) v)), v = H P H^T
    v = float((H @ P @ H.T)[0, 0])
    k = np.arange(1, copies + 1)
    np.testing.assert_allclose(
        got, 0.5 * np.log((r + k * v) / (r + (k - 1) * v)), 1e-10
    )
    assert np.all(got[1:] <= 0.5 * np.log(2.0) + 1e-12)
    single = kd.token_information(jnp.asarray(P), jnp.asarray(H), r * jnp.eye(1))
    np.testing.assert_allclose(single, out["information_gains"][0], rtol=1e-10)


def _numpy_greedy(H, P, R, k):
    order, gains, taken = [], [], np.zeros(len(H), bool)
    for _ in range(k):
        g = np.array(
            [
                0.5 * np.linalg.slogdet(h @ P @ h.T + R)[1]
                - 0.5 * np.linalg.slogdet(R)[1]
                for h in H
            ]
        )
        g[taken] = -np.inf
        i = int(np.argmax(g))
        order.append(i)
        gains.append(g[i])
        taken[i] = True
        h = H[i]
        K = P @ h.T @ np.linalg.inv(h @ P @ h.T + R)
        P = P - K @ h @ P
    return np.array(order), np.array(gains)


def test_greedy_token_order_matches_numpy_greedy(x64, rng, variant):
    n, d = 12, 4
    H = rng.normal(size=(n, 1, d)) * rng.uniform(0.2, 2.0, size=(n, 1, 1))
    P = np.diag(rng.uniform(0.5, 2.0, size=d))
    R = 0.5 * np.eye(1)
    f = variant(kd.greedy_token_order, static_argnames="num_select")
    order, gains = f(jnp.asarray(H), jnp.asarray(P), jnp.asarray(R), num_select=8)
    ref_order, ref_gains = _numpy_greedy(H, P, R, 8)
    np.testing.assert_array_equal(order, ref_order)
    np.testing.assert_allclose(gains, ref_gains, rtol=1e-10)
    # the gains of the chosen set add up to its information (ridge closed form)
    _, cov = ridge.posterior(H[ref_order, 0, :], np.zeros(8), 0.5, P)
    total = 0.5 * (np.linalg.slogdet(P)[1] - np.linalg.slogdet(cov)[1])
    np.testing.assert_allclose(np.sum(gains), total, rtol=1e-10)


# -------------------------------------------------------------------- observability


def test_gramian_matches_numpy_window_sums(x64, rng):
    T, d, m = 9, 3, 2
    H = rng.normal(size=(T, m, d))
    A = rng.normal(size=(T, m, m))
    R = A @ np.swapaxes(A, 1, 2) + np.eye(m)
    J = np.einsum("tmi,tmn,tnj->tij", H, np.linalg.inv(R), H)
    for window in (None, 1, 4, T + 3):
        G = kd.observability_gramian(jnp.asarray(H), jnp.asarray(R), window)
        for t in range(T):
            lo = 0 if window is None else max(0, t - window + 1)
            np.testing.assert_allclose(
                G[t], J[lo : t + 1].sum(0), rtol=1e-10, atol=1e-12
            )


def test_gramian_bound_is_the_q0_posterior_and_bounds_it_windowed(x64, rng):
    X, _, y = _regression(rng, 25, 4, 0.3)
    prior_cov = np.diag(rng.uniform(0.5, 2.0, size=4))
    _, covs = ridge.posterior_path(X, y, 0.3, prior_cov)
    H = jnp.asarray(X)[:, None, :]
    G = kd.observability_gramian(H, 0.3 * jnp.eye(1, dtype=H.dtype))
    bound = kd.gramian_covariance_bound(jnp.asarray(prior_cov), G)
    np.testing.assert_allclose(bound, covs, rtol=1e-9, atol=1e-12)  # equality, Q = 0
    Gw = kd.observability_gramian(H, 0.3 * jnp.eye(1, dtype=H.dtype), window=6)
    bound_w = np.asarray(kd.gramian_covariance_bound(jnp.asarray(prior_cov), Gw))
    assert np.all(_loewner_max(covs, bound_w) <= 1e-12)
    assert np.max(_loewner_max(bound_w, covs)[6:]) > 1e-3  # a bound, not an equality


def test_windowed_bound_brackets_the_filter_with_process_noise(x64, rng):
    T, d, r, window = 40, 3, 0.2, 5
    Q = 0.02 * np.eye(d) + 0.01 * np.ones((d, d))
    X = rng.normal(size=(T, d))
    prior_cov = 4.0 * np.eye(d)
    out = ref.kalman_filter(
        np.zeros(d),
        prior_cov,
        np.eye(d),
        Q,
        X[:, None, :],
        r * np.eye(1),
        rng.normal(size=(T, 1)),
    )
    P = out["filtered_covs"]
    H = jnp.asarray(X)[:, None, :]
    R = r * jnp.eye(1, dtype=H.dtype)
    upper = np.asarray(kd.windowed_covariance_bound(H, R, jnp.asarray(Q), window))
    lower = np.asarray(
        kd.gramian_covariance_bound(
            jnp.asarray(prior_cov), kd.observability_gramian(H, R)
        )
    )
    full = slice(window - 1, None)  # windows with N tokens (G_{t,N} > 0 from t = d)
    assert np.all(_loewner_max(P[full], upper[full]) <= 1e-10)
    assert np.all(_loewner_max(lower, P) <= 1e-10)
    # process noise makes the filter strictly worse than the Q = 0 posterior
    assert np.min(_loewner_max(P, lower)[5:]) > 1e-3


def test_windowed_bound_is_the_window_estimators_error_covariance(x64, rng):
    # independent construction: the estimator's error as a linear map of (v, w)
    T, d, r, window = 7, 2, 0.4, 4
    Q = np.array([[0.05, 0.01], [0.01, 0.03]])
    X = rng.normal(size=(T, d))
    got = np.asarray(
        kd.windowed_covariance_bound(
            jnp.asarray(X)[:, None, :], r * jnp.eye(1), jnp.asarray(Q), window
        )
    )
    t = T  # 1-based time of the estimate; window tokens s = t - N + 1 .. t
    s_idx = np.arange(t - window + 1, t + 1)
    Hs = X[s_idx - 1]
    G = Hs.T @ Hs / r
    # error = G^-1 sum_s H_s^T/r (v_s - H_s sum_{k=s+1}^t w_k)
    Mv = np.linalg.solve(G, Hs.T / r)  # (d, N) acting on v
    ks = np.arange(t - window + 2, t + 1)
    Mw = np.zeros((d, d * len(ks)))
    for a, k in enumerate(ks):
        for s, h in zip(s_idx, Hs, strict=True):
            if s + 1 <= k:
                Mw[:, a * d : (a + 1) * d] -= np.linalg.solve(G, np.outer(h, h) / r)
    cov = Mv @ (r * np.eye(window)) @ Mv.T + Mw @ np.kron(np.eye(len(ks)), Q) @ Mw.T
    np.testing.assert_allclose(got[t - 1], cov, rtol=1e-10)


# ---------------------------------------------------------------- contraction fits


def _scalar_riccati(p0, q, r, T):
    ps, p = [], p0
    for _ in range(T):
        pm = p + q
        p = pm * r / (pm + r)
        ps.append(p)
    return np.array(ps)


def test_exponential_rate_towards_the_floor_matches_riccati_closed_form(x64):
    # scalar random walk, H = 1: P_inf solves P^2 + q P - q r = 0 and the Riccati
    # map's slope there is f'(P_inf) = r^2 / (P_inf + q + r)^2
    q, r = 0.05, 1.0
    p_inf = 0.5 * (-q + np.sqrt(q * q + 4 * q * r))
    rate = -np.log(r**2 / (p_inf + q + r) ** 2)
    P = _scalar_riccati(10.0, q, r, 120)
    fit = kd.fit_exponential_rate(jnp.asarray(P), floor=p_inf, start=15, stop=45)
    np.testing.assert_allclose(fit.slope, rate, rtol=1e-3)
    assert fit.r_squared > 0.9999
    # two initialisations forget their difference at the same rate (log metric)
    P2 = _scalar_riccati(0.01, q, r, 120)
    dist = kd.riccati_distance(
        jnp.asarray(P)[:, None, None], jnp.asarray(P2)[:, None, None]
    )
    np.testing.assert_allclose(dist, np.abs(np.log(P / P2)), rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(
        kd.fit_exponential_rate(dist, start=15, stop=45).slope, rate, rtol=1e-3
    )


def test_q0_tail_is_one_over_t(x64):
    # scalar, H = 1, Q = 0: Sigma_t = 1 / (1/tau^2 + t/r) exactly
    tau2, r = 2.0, 0.5
    t = np.arange(1, 2001, dtype=float)
    sigma = 1.0 / (1.0 / tau2 + t / r)
    fit = kd.tail_exponent(jnp.asarray(sigma), start=1000)
    loglog = np.polyfit(np.log(t[1000:]), np.log(sigma[1000:]), 1)[0]
    np.testing.assert_allclose(fit.slope, loglog, rtol=1e-10)
    np.testing.assert_allclose(fit.slope, -1.0, atol=1e-3)
    ratio = kd.inverse_t_ratio(jnp.asarray(sigma), dim=1, noise_var=r)
    np.testing.assert_allclose(ratio, t * tau2 / (r + t * tau2), rtol=1e-10)
    # an exponential fit to a 1/t law: the rate falls as the window moves out
    early = kd.fit_exponential_rate(jnp.asarray(sigma), start=10, stop=50).slope
    late = kd.fit_exponential_rate(jnp.asarray(sigma), start=1000, stop=2000).slope
    assert late < early / 20


def test_riccati_distance_matches_scipy_generalised_eigenvalues(x64, rng, variant):
    A = [np.cov(rng.normal(size=(3, 8))) for _ in range(4)]
    B = [np.cov(rng.normal(size=(3, 8))) for _ in range(4)]
    got = variant(kd.riccati_distance)(
        jnp.asarray(np.stack(A)), jnp.asarray(np.stack(B))
    )
    expected = [
        np.sqrt(np.sum(np.log(scipy.linalg.eigh(b, a, eigvals_only=True)) ** 2))
        for a, b in zip(A, B, strict=True)
    ]
    np.testing.assert_allclose(got, expected, rtol=1e-9)
    np.testing.assert_allclose(
        kd.riccati_distance(jnp.asarray(B[0]), jnp.asarray(A[0])), expected[0], 1e-9
    )


def test_riccati_distance_q0_decays_like_one_over_t(x64, rng):
    X = rng.normal(size=(400, 2))
    _, c1 = ridge.posterior_path(X, np.zeros(400), 0.5, np.eye(2))
    _, c2 = ridge.posterior_path(X, np.zeros(400), 0.5, 9.0 * np.eye(2))
    dist = kd.riccati_distance(jnp.asarray(c1), jnp.asarray(c2))
    np.testing.assert_allclose(kd.tail_exponent(dist, start=100).slope, -1.0, atol=0.05)


# ---------------------------------------------------------------------- calibration


def test_calibration_of_a_correct_model_is_one_within_its_stderr(x64):
    # one input sequence, many tasks: theta* - m_t ~ N(0, Sigma_t) exactly, so
    # |e|^2 has mean tr Sigma and variance 2 tr Sigma^2 (Gaussian quadratic form)
    rng = np.random.default_rng(1)
    n, T, d, r = 4000, 10, 3, 0.5
    X = rng.normal(size=(T, d))
    theta = rng.normal(size=(n, d))
    y = theta @ X.T + np.sqrt(r) * rng.normal(size=(n, T))
    _, covs = ridge.posterior_path(X, y[0], r, np.eye(d))
    means = np.stack([ridge.posterior(X, yi, r, np.eye(d))[0] for yi in y])
    sq = np.sum((means - theta) ** 2, axis=1)
    cal = kd.mse_calibration(jnp.asarray(sq), jnp.asarray(np.trace(covs[-1])))
    se_closed = np.sqrt(2 * np.trace(covs[-1] @ covs[-1]) / n) / np.trace(covs[-1])
    np.testing.assert_allclose(cal.stderr, se_closed, rtol=0.1)
    assert abs(float(cal.ratio) - 1.0) < 4 * float(cal.stderr)


def test_calibration_detects_an_overconfident_model(x64):
    # the filter assumes r / 4: its ratio must match the closed-form misspecified
    # error  tr(Sigma X^T X Sigma) r_true / r_model^2 + tr(Sigma Sigma0^-2 Sigma)
    rng = np.random.default_rng(2)
    n, T, d, r_true = 3000, 8, 3, 0.8
    r_model = r_true / 4
    X = rng.normal(size=(T, d))
    theta = rng.normal(size=(n, d))
    y = theta @ X.T + np.sqrt(r_true) * rng.normal(size=(n, T))
    out, _ = jax.vmap(lambda yi: _kj_regression(X, yi, r_model, np.eye(d)))(
        jnp.asarray(y)
    )
    sq = np.sum((np.asarray(out.final.mean) - theta) ** 2, axis=1)
    S = np.asarray(out.final.cov)[0]
    cal = kd.mse_calibration(jnp.asarray(sq), jnp.asarray(np.trace(S)))
    expected = (
        r_true / r_model**2 * np.trace(S @ X.T @ X @ S) + np.trace(S @ S)
    ) / np.trace(S)
    assert abs(float(cal.ratio) - expected) < 4 * float(cal.stderr)
    assert float(cal.ratio) > 1 + 10 * float(cal.stderr)


def test_calibration_broadcasts_per_task_traces():
    e = jnp.array([[1.0, 2.0], [3.0, 2.0], [2.0, 5.0]])
    c = jnp.array([[1.0, 2.0], [2.0, 2.0], [3.0, 2.0]])
    cal = kd.mse_calibration(e, c)
    ratio = e.sum(0) / c.sum(0)
    se = np.std(np.asarray(e) - np.asarray(ratio) * np.asarray(c), axis=0, ddof=1) / (
        np.sqrt(3) * np.asarray(c).mean(0)
    )
    np.testing.assert_allclose(cal.ratio, ratio, rtol=1e-6)
    np.testing.assert_allclose(cal.stderr, se, rtol=1e-5)


# ------------------------------------------------------------ collapse vs the mean


def test_time_to_eps_matches_a_loop(rng):
    v = rng.uniform(size=(20, 5)).cumsum(0)[::-1].copy()
    for eps in (0.9, 0.3, 0.01):
        got = np.asarray(
            kd.time_to_eps(
                jnp.asarray(v, jnp.float32), jnp.asarray(v[0] * 1.1, jnp.float32), eps
            )
        )
        for j in range(5):
            hits = [t + 1 for t in range(20) if v[t, j] <= eps * v[0, j] * 1.1]
            assert got[j] == (hits[0] if hits else 21)


def test_expected_mean_error_identity_is_exact_on_noise_free_data(x64, rng):
    # m_t is linear in y, so E over noise = the noise-free run, and antithetic
    # noise pairs average to it exactly
    d, T, r = 4, 15, 0.3
    X = rng.normal(size=(T, d))
    theta = rng.normal(size=d)
    m0 = rng.normal(size=d)
    prior_cov = np.diag(rng.uniform(0.5, 2.0, size=d))
    _, covs = ridge.posterior_path(X, X @ theta, r, prior_cov, m0)
    prior = kj.Gaussian(mean=jnp.asarray(m0), cov=jnp.asarray(prior_cov))
    bias = kd.expected_mean_error(jnp.asarray(covs), prior, jnp.asarray(theta))
    clean, _ = _kj_regression(X, X @ theta, r, prior_cov, m0)
    np.testing.assert_allclose(
        bias, np.asarray(clean.states.mean) - theta, rtol=1e-9, atol=1e-12
    )
    v = np.sqrt(r) * rng.normal(size=T)
    plus, _ = _kj_regression(X, X @ theta + v, r, prior_cov, m0)
    minus, _ = _kj_regression(X, X @ theta - v, r, prior_cov, m0)
    avg = 0.5 * np.asarray(plus.states.mean + minus.states.mean) - theta
    np.testing.assert_allclose(avg, bias, rtol=1e-9, atol=1e-12)
    t_mu = kd.mean_time_to_eps(clean.states, prior, jnp.asarray(theta), 0.1)
    err = np.sum(np.asarray(bias) ** 2, axis=1) / np.sum((m0 - theta) ** 2)
    hits = np.nonzero(err <= 0.1)[0]
    assert int(t_mu) == (hits[0] + 1 if len(hits) else T + 1)


# ------------------------------------------------------------------------ bad input


def test_bad_shapes_are_clear_errors():
    with pytest.raises(ValueError, match=r"H_seq must have shape \(T, obs, state\)"):
        kd.observability_gramian(jnp.ones((3, 2)), jnp.eye(1))
    with pytest.raises(ValueError, match=r"R must have shape \(1, 1\) or \(3, 1, 1\)"):
        kd.observability_gramian(jnp.ones((3, 1, 2)), jnp.eye(2))
    with pytest.raises(ValueError, match="window must be a positive int"):
        kd.observability_gramian(jnp.ones((3, 1, 2)), jnp.eye(1), window=0)
    with pytest.raises(ValueError, match=r"Q must have shape \(2, 2\)"):
        kd.windowed_covariance_bound(jnp.ones((3, 1, 2)), jnp.eye(1), jnp.eye(3), 2)
    with pytest.raises(ValueError, match="cov_a and cov_b must have the same shape"):
        kd.riccati_distance(jnp.eye(2), jnp.eye(3))
    with pytest.raises(ValueError, match="need at least 2 tasks"):
        kd.mse_calibration(jnp.ones(1), jnp.ones(1))
    with pytest.raises(ValueError, match="num_select must be in 1..3"):
        kd.greedy_token_order(jnp.ones((3, 1, 2)), jnp.eye(2), jnp.eye(1), 4)
    with pytest.raises(ValueError, match=r"beliefs must be a belief or an array"):
        kd.covariance_trace(jnp.ones(3))
