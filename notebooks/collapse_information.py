# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Covariance collapse and information (claims 1, 2 and 8)
#
# In-context linear regression as Kalman filtering: a task is
# $\theta^* \sim N(0, \tau^2 I_d)$, the prompt's tokens are $(x_t, y_t)$ with
# $y_t = x_t^\top\theta^* + v_t$, $v_t \sim N(0, r)$, and the filter has $F = I$,
# $Q = 0$, $H_t = x_t^\top$. The instruments are in `kalmanjax.diagnostics`.
#
# Claims checked at the end:
#
# 1. one direction of $\Sigma_t$ collapses per scalar token until $t = d$, and the
#    per-token information gains sum to $\tfrac12\log\det\Sigma_0 - \tfrac12\log\det
#    \Sigma_T$ (exactly, $Q = 0$);
# 2. $\mathbb E[m_t - \theta^* \mid X] = \Sigma_t\Sigma_0^{-1}(m_0 - \theta^*)$
#    (exact on noise-free prompts), and whether collapse precedes mean convergence
#    depends on the task: it does for tasks near the prior mean, not for far ones;
# 3. greedy information-ordered prompts collapse the covariance faster than random
#    order, and a duplicated demonstration adds at most $\tfrac12\log 2$ nats.
#
# Change the parameters in the next cell and rerun.

# %%
import os

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np

import kalmanjax as kj
from kalmanjax import diagnostics as kd
from kalmanjax.experiments.testbed import simulate_tasks

SMOKE = os.environ.get("KALMANJAX_SMOKE") == "1"
plt.rcParams["figure.dpi"] = 72  # small outputs in the committed .ipynb
dim, r, tau2 = (4, 0.1, 1.0) if SMOKE else (8, 0.1, 1.0)
num_tokens = 48 if SMOKE else 512
num_tasks = 32 if SMOKE else 256

# %% [markdown]
# ## 1. Collapse: trace, log det and eigenvalues per token

# %%
theta, x, y = simulate_tasks(jax.random.key(0), dim, num_tokens, num_tasks, r, tau2)
filt = kj.regression_filter(dim, r)
prior = kj.Gaussian(mean=jnp.zeros(dim), cov=tau2 * jnp.eye(dim))


@jax.jit
def one_task(x_task, y_task):
    out = kj.run(filt, prior, {"obs": y_task[:, None], "x": x_task})
    return out.states, out.infos


# lax.map rather than vmap over tasks (see kalmanjax.diagnostics.arrays.per_matrix)
states, infos = jax.lax.map(lambda xy: one_task(*xy), (x, y))
trace = kd.covariance_trace(states)  # (tasks, T)
eig = jax.lax.map(kd.covariance_eigenvalues, states.cov)  # (tasks, T, d)
cum_info = kd.cumulative_information(infos, axis=1)
info_from_cov = jax.lax.map(
    lambda c: kd.information_from_covariances(prior, c), states.cov
)
collapsed = np.sum(np.asarray(eig) < (1 - 1e-4) * tau2, axis=-1)
t = np.arange(1, num_tokens + 1)

fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
axes[0].loglog(t, np.asarray(trace).mean(0), label=r"E tr $\Sigma_t$")
axes[0].loglog(t, dim * r / t, "k--", lw=1, label=r"$d r / t$")
axes[0].legend(fontsize=7)
axes[0].set_xlabel("token t")
axes[1].semilogy(t[: 3 * dim], np.asarray(eig[0])[: 3 * dim])
axes[1].axvline(dim, color="grey", ls=":")
axes[1].set_title("eigenvalues, one task")
axes[2].plot(t, np.asarray(cum_info).mean(0), label="sum of dI_t")
axes[2].plot(
    t, np.asarray(info_from_cov).mean(0), "--", label=r"$\frac{1}{2}\log\det$ ratio"
)
axes[2].legend(fontsize=7)
axes[2].set_title("information (nats)")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 2. Collapse vs the mean
# The identity on a noise-free prompt, then $t_\Sigma(\varepsilon)$ vs
# $t_\mu(\varepsilon)$ for tasks at distance $k$ from the prior mean
# ($|m_0 - \theta^*|^2 = k^2\operatorname{tr}\Sigma_0$).

# %%
clean, _ = one_task(x[0], x[0] @ theta[0])
bias = kd.expected_mean_error(clean, prior, theta[0])
identity_gap = float(jnp.max(jnp.abs(clean.mean - theta[0][None, :] - bias)))
print(f"max |m_t - theta* - Sigma_t Sigma_0^-1 (m_0 - theta*)| = {identity_gap:.2e}")

eps = 0.03
noise = y - jnp.einsum("ntd,nd->nt", x, theta)
u = theta / jnp.linalg.norm(theta, axis=1, keepdims=True)
t_sigma = np.asarray(
    jax.vmap(lambda tr: kd.time_to_eps(tr, dim * tau2, eps))(trace)
)  # covariances do not depend on the task
frac_sigma_first = {}
for k in (0.25, 1.0, 4.0):
    theta_k = k * np.sqrt(dim * tau2) * u
    y_k = jnp.einsum("ntd,nd->nt", x, theta_k) + noise
    st_k, _ = jax.lax.map(lambda xy: one_task(*xy), (x, y_k))
    t_mu = np.asarray(
        jax.vmap(lambda b, th: kd.mean_time_to_eps(b, prior, th, eps))(st_k, theta_k)
    )
    frac_sigma_first[k] = float(np.mean(t_sigma <= t_mu))
print("fraction of tasks with t_Sigma <= t_mu, by distance k:", frac_sigma_first)

# %% [markdown]
# ## 3. Prompt informativeness
# A pool of candidate tokens with unequal scales, ordered greedily by information
# gain vs at random; then the information the filter counts for a duplicate.

# %%
pool_size = 4 * dim
scales = jnp.logspace(-1.0, 1.0, dim)
pool = jnp.sqrt(scales)[None, :] * jax.random.normal(
    jax.random.key(1), (pool_size, dim)
)
R = r * jnp.eye(1)
order, gains = kd.greedy_token_order(pool[:, None, :], prior.cov, R)


def cum_info_of(order):
    out = kj.run(filt, prior, {"obs": jnp.zeros((pool_size, 1)), "x": pool[order]})
    return kd.cumulative_information(out.infos)


greedy_info = cum_info_of(order)
perms = jax.vmap(lambda k: jax.random.permutation(k, pool_size))(
    jax.random.split(jax.random.key(2), 64)
)
random_info = jax.vmap(cum_info_of)(perms)
dup_gains = kd.duplicated_token_information(prior.cov, pool[order[0]][None, :], R, 4)
print(
    "information each copy of the most informative token adds:", np.round(dup_gains, 3)
)

fig, ax = plt.subplots(figsize=(5, 3.2))
ax.plot(np.arange(1, pool_size + 1), greedy_info, label="greedy")
ax.plot(np.arange(1, pool_size + 1), random_info.mean(0), label="random (mean)")
ax.set_xlabel("tokens")
ax.set_ylabel("cumulative information (nats)")
ax.legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Checks

# %%
early = collapsed[:, : dim - 1] == np.minimum(t[: dim - 1], dim)[None, :]
assert early.all(), "one direction per token before t = d"
np.testing.assert_allclose(cum_info, info_from_cov, rtol=1e-3, atol=1e-3)
assert identity_gap < 1e-4
assert frac_sigma_first[0.25] > 0.8 and frac_sigma_first[4.0] < 0.3
assert np.all(np.asarray(greedy_info) >= np.asarray(random_info).mean(0) - 1e-4)
assert np.all(np.asarray(dup_gains[1:]) <= 0.5 * np.log(2.0) + 1e-6)
print("all checks passed")
