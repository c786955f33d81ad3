# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Filter basics and conventions
#
# What this notebook shows, each checked by an `assert` at the end:
#
# 1. the time convention: the prior is over $x_0$; step $t$ predicts $x_t$ and then
#    conditions on $y_t$, so `states[t-1]` is $p(x_t \mid y_{1:t})$;
# 2. the three covariance forms (`dense`, `joseph`, `sqrt`) agree;
# 3. missing data: a NaN observation skips the update (only the predict happens);
# 4. the RTS smoother and the log marginal likelihood (checked against one dense
#    Gaussian over all observations);
# 5. composing your own filter from `predict` and `update`.
#
# Model: a scalar random walk observed in noise,
# $x_t = x_{t-1} + w_t$, $w_t \sim N(0, q)$; $y_t = x_t + v_t$, $v_t \sim N(0, r)$.

# %%
import os

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
from scipy.stats import multivariate_normal

import kalmanjax as kj

SMOKE = os.environ.get("KALMANJAX_SMOKE") == "1"
plt.rcParams["figure.dpi"] = 72  # small outputs in the committed .ipynb
T = 30 if SMOKE else 200
q, r, p0 = 0.05, 0.5, 2.0

# %% [markdown]
# ## Simulate and filter

# %%
key_w, key_v, key_x0 = jax.random.split(jax.random.key(0), 3)
x0 = jnp.sqrt(p0) * jax.random.normal(key_x0, ())
x = x0 + jnp.cumsum(jnp.sqrt(q) * jax.random.normal(key_w, (T,)))
y = (x + jnp.sqrt(r) * jax.random.normal(key_v, (T,)))[:, None]  # (T, obs)

dynamics = kj.LinearDynamics(F=jnp.eye(1), Q=q * jnp.eye(1))
observation = kj.LinearObservation(H=jnp.eye(1), R=r * jnp.eye(1))
prior = kj.Gaussian(mean=jnp.zeros(1), cov=p0 * jnp.eye(1))

filt = kj.kalman_filter(dynamics, observation)
out = kj.run(filt, prior, y)
print("states.mean", out.states.mean.shape, "states.cov", out.states.cov.shape)
print("infos.log_likelihood", out.infos.log_likelihood.shape)

# %% [markdown]
# ## 1. The time convention
# The first filtered belief is the prior, *predicted* one step (covariance
# $p_0 + q$), then conditioned on $y_1$: $P_1 = (p_0 + q) r / (p_0 + q + r)$.

# %%
p1 = (p0 + q) * r / (p0 + q + r)
m1 = (p0 + q) / (p0 + q + r) * float(y[0, 0])
print(f"P_1 = {float(out.states.cov[0, 0, 0]):.6f} (closed form {p1:.6f})")

# %% [markdown]
# ## 2. Three covariance forms
# `dense` ($P - KSK^\top$), `joseph` and `sqrt` (Cholesky factors, QR updates).

# %%
forms = {
    f: kj.run(kj.kalman_filter(dynamics, observation, form=f), prior, y)
    for f in kj.FORMS
}
gaps = {
    f: float(jnp.max(jnp.abs(kj.to_dense(o.states).cov - out.states.cov)))
    for f, o in forms.items()
}
print(gaps)

# %% [markdown]
# ## 3. Missing data
# NaN entries of `y` are missing: that step predicts and does not update.

# %%
y_missing = y.at[T // 2].set(jnp.nan)
out_missing = kj.run(filt, prior, y_missing)
k = T // 2
predicted_var = float(out_missing.states.cov[k - 1, 0, 0]) + q
print(f"variance at the missing step: {float(out_missing.states.cov[k, 0, 0]):.4f}")
print(f"previous variance + q:        {predicted_var:.4f}")

# %% [markdown]
# ## 4. Smoother and log marginal likelihood
# `kalman_smoother` runs the filter and the RTS pass; the log marginal likelihood is
# the sum of the per-step predictive log densities, which must equal the log density
# of $y_{1:T}$ under its joint Gaussian: $\mathrm{Cov}(y_s, y_t) = p_0 + \min(s, t)\,q
# + r\,\delta_{st}$.

# %%
sm = kj.kalman_smoother(dynamics, observation, prior, y)
s_idx = np.arange(1, T + 1)
joint_cov = p0 + np.minimum.outer(s_idx, s_idx) * q + r * np.eye(T)
joint_logpdf = multivariate_normal(np.zeros(T), joint_cov).logpdf(
    np.asarray(y[:, 0], np.float64)
)
lml = float(kj.log_marginal_likelihood(filt, prior, y))
print(f"log p(y) filter: {lml:.4f}   joint Gaussian: {joint_logpdf:.4f}")

fig, ax = plt.subplots(figsize=(7, 3))
t = np.arange(1, T + 1)
for name, b in (("filtered", sm.filtered), ("smoothed", sm.smoothed)):
    m, s = np.asarray(b.mean[:, 0]), np.sqrt(np.asarray(b.cov[:, 0, 0]))
    ax.plot(t, m, label=name)
    ax.fill_between(t, m - 2 * s, m + 2 * s, alpha=0.2)
ax.plot(t, np.asarray(x), "k", lw=0.8, label="true state")
ax.plot(t, np.asarray(y[:, 0]), ".", ms=3, color="grey", label="observations")
ax.legend(fontsize=7)
ax.set_xlabel("t")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 5. Your own filter from `predict` and `update`
# A `Filter` is a pair of pure functions; `kj.run` is a `lax.scan` over `step`.


# %%
def my_step(belief, y_t):
    predicted = kj.predict(belief, dynamics)
    return kj.update(predicted, y_t, observation)


my_filter = kj.Filter(init=lambda p: p, step=my_step)
mine = jax.jit(lambda ys: kj.run(my_filter, prior, ys))(y)
print(float(jnp.max(jnp.abs(mine.states.mean - out.states.mean))))

# %% [markdown]
# ## Checks

# %%
np.testing.assert_allclose(float(out.states.cov[0, 0, 0]), p1, rtol=1e-5)
np.testing.assert_allclose(float(out.states.mean[0, 0]), m1, rtol=1e-5, atol=1e-6)
assert all(g < 1e-5 for g in gaps.values()), gaps
np.testing.assert_allclose(
    float(out_missing.states.cov[k, 0, 0]), predicted_var, rtol=1e-5
)
np.testing.assert_allclose(
    float(out_missing.states.mean[k, 0]),
    float(out_missing.states.mean[k - 1, 0]),
    rtol=1e-6,
)
np.testing.assert_allclose(lml, joint_logpdf, rtol=1e-4)
assert np.all(np.asarray(sm.smoothed.cov) <= np.asarray(sm.filtered.cov) + 1e-6)
np.testing.assert_allclose(mine.states.mean, out.states.mean, rtol=1e-6, atol=1e-6)
print("all checks passed")
