# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Observability, contraction rates and calibration (claims 3, 4 and 5)
#
# The same in-context regression filter ($F = I$, $H_t = x_t^\top$, $R = r$), now
# also with a drifting task ($Q = qI$). Claims checked at the end:
#
# 1. **Observability.** With the window Gramian $G_{t,N} = \sum_{s=t-N+1}^t x_s
#    x_s^\top / r \succeq \alpha I$, the covariance stays under the bound it implies
#    ($Q = 0$: $(\Sigma_0^{-1} + G_{t,N})^{-1}$; $Q > 0$: the window estimator's
#    error covariance), and a direction no token excites keeps $\tau^2$ ($Q = 0$) or
#    grows as $\tau^2 + tq$.
# 2. **Contraction, honestly.** With $Q = 0$ the tail is $1/t$ ($t\operatorname{tr}
#    \Sigma_t \to d r$), not exponential; two initial covariances forget their
#    difference geometrically (Riccati metric) only when $Q > 0$ (the convergence
#    towards the floor for $Q > 0$ is fitted in `python -m kalmanjax contraction`).
# 3. **Calibration.** $\mathbb E|\theta^* - m_t|^2 = \mathbb E\operatorname{tr}
#    \Sigma_t$ for the right model (within its standard error), not for a wrong one.

# %%
import os

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import kalmanjax as kj
from kalmanjax import diagnostics as kd

jax.config.update("jax_enable_x64", True)  # a notebook may; the library never does

SMOKE = os.environ.get("KALMANJAX_SMOKE") == "1"
plt.rcParams["figure.dpi"] = 72  # small outputs in the committed .ipynb
dim, r, tau2, q, window = 4, 0.1, 1.0, 1e-3, 8
num_tokens = 64 if SMOKE else 1024
x = jax.random.normal(jax.random.key(0), (num_tokens, dim))
H = x[:, None, :]
R = r * jnp.eye(1)


def regression(q_var, prior_var, tokens):
    filt = kj.kalman_filter(
        kj.LinearDynamics(F=jnp.eye(dim), Q=q_var * jnp.eye(dim)),
        lambda u: kj.LinearObservation(H=u["x"][None, :], R=R),
    )
    prior = kj.Gaussian(mean=jnp.zeros(dim), cov=prior_var * jnp.eye(dim))
    xs = {"obs": jnp.zeros((tokens.shape[0], 1)), "x": tokens}  # covariances only
    return kj.run(filt, prior, xs).states


# %% [markdown]
# ## 1. Observability: the Gramian and the bounds

# %%
cov_q0 = regression(0.0, tau2, x).cov
cov_q = regression(q, tau2, x).cov
G = kd.observability_gramian(H, R, window)
alpha = kd.covariance_eigenvalues(G)[:, 0]
bound_q0 = kd.gramian_covariance_bound(tau2 * jnp.eye(dim), G)
bound_q = kd.windowed_covariance_bound(H, R, q * jnp.eye(dim), window)
excess_q0 = kd.covariance_eigenvalues(cov_q0 - bound_q0)[:, -1]
excess_q = kd.covariance_eigenvalues(cov_q - bound_q)[window - 1 :, -1]

mask = jnp.ones(dim).at[-1].set(0.0)  # the last direction is never excited
unexcited_q0 = regression(0.0, tau2, x * mask[None, :]).cov[:, -1, -1]
unexcited_q = regression(q, tau2, x * mask[None, :]).cov[:, -1, -1]
t = np.arange(1, num_tokens + 1)

fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
axes[0].loglog(t, kd.covariance_trace(cov_q0), label="Q = 0")
axes[0].loglog(
    t[window - 1 :], kd.covariance_trace(bound_q0)[window - 1 :], "--", label="bound"
)
axes[0].loglog(t, kd.covariance_trace(cov_q), label="Q = qI")
axes[0].loglog(
    t[window - 1 :], kd.covariance_trace(bound_q)[window - 1 :], "--", label="bound"
)
axes[0].set_title(r"tr $\Sigma_t$ under its window bounds")
axes[0].legend(fontsize=7)
axes[1].plot(t, unexcited_q0, label="never excited, Q = 0")
axes[1].plot(t, unexcited_q, label="never excited, Q = qI")
axes[1].plot(t, tau2 + t * q, "k--", lw=1, label=r"$\tau^2 + tq$")
axes[1].legend(fontsize=7)
fig.tight_layout()
plt.show()
print(
    f"alpha = min eig G_(t,N) over full windows: {float(alpha[window - 1 :].min()):.3f}"
)

# %% [markdown]
# ## 2. Contraction rates, regime by regime

# %%
half = num_tokens // 2
tail = kd.tail_exponent(kd.covariance_trace(cov_q0), start=half)
ratio_end = float(kd.inverse_t_ratio(kd.covariance_trace(cov_q0), dim, r)[-1])
# Riccati forgetting: the same tokens from a second initial covariance
dist_q = kd.riccati_distance(cov_q, regression(q, 100 * tau2, x).cov)
dist_q0 = kd.riccati_distance(cov_q0, regression(0.0, 100 * tau2, x).cov)
fit_window = np.flatnonzero((dist_q < 1e-1) & (dist_q > 1e-10))
ric = kd.fit_exponential_rate(
    dist_q, start=int(fit_window[0]), stop=int(fit_window[-1]) + 1
)
ric_q0 = kd.tail_exponent(dist_q0, start=half)
print(
    f"Q = 0 tail: log-log slope {float(tail.slope):.3f}, "
    f"t tr Sigma_t / (d r) = {ratio_end:.3f}"
)
print(
    f"Riccati distance, Q > 0: rate {float(ric.slope):.3f} "
    f"(R^2 {float(ric.r_squared):.4f})"
)
print(f"Riccati distance, Q = 0: log-log slope {float(ric_q0.slope):.3f}")

fig, ax = plt.subplots(figsize=(5, 3.2))
ax.loglog(t, dist_q0, label="Q = 0")
ax.loglog(t, np.maximum(np.asarray(dist_q), 1e-16), label="Q = qI")
ax.set_title("Riccati distance between two initialisations")
ax.legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 3. Calibration over many tasks

# %%
num_tasks = 256 if SMOKE else 2048
T_cal = 4 * dim
k_th, k_x, k_v = jax.random.split(jax.random.key(3), 3)
theta = jnp.sqrt(tau2) * jax.random.normal(k_th, (num_tasks, dim))
xc = jax.random.normal(k_x, (num_tasks, T_cal, dim))
yc = jnp.einsum("ntd,nd->nt", xc, theta) + jnp.sqrt(r) * jax.random.normal(
    k_v, (num_tasks, T_cal)
)


def calibration(r_model):
    filt = kj.kalman_filter(
        kj.LinearDynamics(F=jnp.eye(dim), Q=jnp.zeros((dim, dim))),
        lambda u: kj.LinearObservation(H=u["x"][None, :], R=r_model * jnp.eye(1)),
    )
    prior = kj.Gaussian(mean=jnp.zeros(dim), cov=tau2 * jnp.eye(dim))

    def per_task(x_task, y_task, theta_task):
        out = kj.run(filt, prior, {"obs": y_task[:, None], "x": x_task}).final
        return jnp.sum((out.mean - theta_task) ** 2), jnp.trace(out.cov)

    err, tr = jax.vmap(per_task)(xc, yc, theta)
    return kd.mse_calibration(err, tr)


cal_right = calibration(r)
cal_wrong = calibration(r / 4)
print(
    f"right model: ratio {float(cal_right.ratio):.3f} +- {float(cal_right.stderr):.3f}"
)
print(
    f"R assumed 4x too small: ratio {float(cal_wrong.ratio):.3f} "
    f"+- {float(cal_wrong.stderr):.3f}"
)

# %% [markdown]
# ## Checks

# %%
full = slice(window - 1, None)
assert float(alpha[full].min()) > 0
assert float(excess_q0.max()) <= 1e-9 and float(excess_q.max()) <= 1e-9
np.testing.assert_allclose(unexcited_q0, tau2, rtol=1e-12)
np.testing.assert_allclose(unexcited_q, tau2 + t * q, rtol=1e-12)
assert abs(float(tail.slope) + 1) < 0.15 and abs(ratio_end - 1) < 0.3
assert float(ric.r_squared) > 0.99 and float(ric.slope) > 0
assert float(ric_q0.slope) < -0.8  # Q = 0: only ~1/t forgetting
assert abs(float(cal_right.ratio) - 1) < 4 * float(cal_right.stderr)
assert float(cal_wrong.ratio) > 1 + 4 * float(cal_wrong.stderr)
print("all checks passed")
