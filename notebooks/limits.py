# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Optimisers as degenerate filters
#
# Claim 6 (docs/theory.md): gradient descent, natural gradient and meta-learning are
# singular, noise-free limits of the Kalman filter. `kalmanjax.limits` builds each
# limit from the core filter (`kj.update` on an observation `h(theta, inputs)`
# linearised with `jax.jacfwd`) and walks the filter's parameters along a path to
# the limit. Here we plot the gap to an independent reference along each path on
# log-log axes: the slope is the order of convergence.
#
# Everything runs in float64, so gaps can be followed down to ~1e-8.

# %%
import os

import jax

jax.config.update("jax_enable_x64", True)  # a notebook, not library code

import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax

import kalmanjax as kj
from kalmanjax import limits as kl
from kalmanjax.experiments.degenerate_limits import h_linear, h_nonlinear

SMOKE = os.environ.get("KALMANJAX_SMOKE") == "1"
K = 4 if SMOKE else 8  # parameters
T = 6 if SMOKE else 16  # tokens on a path
POINTS = 4 if SMOKE else 7  # points on a path
rng = np.random.default_rng(0)
plt.rcParams["figure.dpi"] = 80  # small committed outputs

# %% [markdown]
# ## 1. Gradient descent: frozen covariance, $\eta|J|^2 \to 0$
#
# Frozen prior covariance $\sigma^2 I$, $R = rI$: the Kalman step is
# $m + \eta J^\top(\eta JJ^\top + I)^{-1} e$ with $\eta = \sigma^2/r$, which tends
# to one SGD step $m + \eta J^\top e$ as $\eta|J|^2 \to 0$. The token model is
# nonlinear with two outputs; the reference is `optax.sgd(eta)` itself.

# %%
xs = {
    "obs": jnp.asarray(rng.normal(size=(T, 2))),
    "x": jnp.asarray(rng.normal(size=(T, 2, K)) / np.sqrt(K)),
}
m0 = jnp.asarray(0.2 * rng.normal(size=K))
etas = jnp.asarray(np.logspace(-2, -5, POINTS))
gd = kl.gd_gap_path(h_nonlinear, m0, xs, etas)
gd_slope = kl.loglog_slope(gd.path, gd.relative_gap)
print(f"GD limit: order {gd_slope:.3f} (predicted 1)")

# %% [markdown]
# ## 2. Noise-free projection: $R \to 0$
#
# From $\Sigma_0 = I$ on $T < d$ linear tokens the noise-free filter lands on the
# minimum-norm interpolant $X^+ y$, and its covariance becomes singular: $T$
# eigenvalues collapse like $r$, the other $d - T$ stay at 1.

# %%
d, n = (8, 5) if SMOKE else (32, 20)
X = rng.normal(size=(n, d))
y = rng.normal(size=n)
lin = {"obs": jnp.asarray(y[:, None]), "x": jnp.asarray(X[:, None, :])}
prior = kj.Gaussian(jnp.zeros(d), jnp.eye(d))
rs = jnp.asarray(np.logspace(-2, -7, POINTS))
proj = kl.projection_gap_path(h_linear, prior, lin, rs)
limit = kj.run(kl.projection_filter(h_linear), prior, lin).final
pinv_err = float(jnp.max(jnp.abs(limit.mean - np.linalg.pinv(X) @ y)))
limit_rank = int(np.sum(np.linalg.eigvalsh(np.asarray(limit.cov)) > 1e-8))
proj_slope = kl.loglog_slope(proj.path, proj.gap)
print(
    f"projection: order {proj_slope:.3f}, |m - pinv(X) y| = {pinv_err:.1e}, "
    f"rank {limit_rank} = d - T = {d - n}"
)

# %% [markdown]
# ## 3. Natural gradient: an identity, and a limit
#
# With $Q = 0$ the extended Kalman mean *is* online natural gradient with the
# Gauss-Newton estimate $F_t = (\Sigma_0^{-1} + \sum_s J_s^\top R^{-1}J_s)/t$ and step
# $1/t$. We run the filter and, in an ordinary optax loop, the
# `natural_gradient_transformation` on the gradient of the weighted loss.

# %%
R = jnp.asarray([[0.3, 0.1], [0.1, 0.2]])
ngd_tokens = 20 if SMOKE else 200
long = {
    "obs": jnp.asarray(0.5 * np.tanh(rng.normal(size=(ngd_tokens, 2)))),
    "x": jnp.asarray(rng.normal(size=(ngd_tokens, 2, K)) / np.sqrt(K)),
}
ekf = kj.run(
    kl.natural_gradient_filter(h_nonlinear, R), kj.Gaussian(m0, jnp.eye(K)), long
)

tx = kl.natural_gradient_transformation(h_nonlinear, R, 1.0)
Rinv = jnp.linalg.inv(R)


def weighted_loss(theta, u):
    e = u["obs"] - h_nonlinear(theta, u)
    return 0.5 * e @ Rinv @ e


@jax.jit
def train(theta, xs):
    def body(carry, u):
        theta, state = carry
        g = jax.grad(weighted_loss)(theta, u)
        upd, state = tx.update(g, state, theta, inputs=u)
        theta = optax.apply_updates(theta, upd)
        return (theta, state), theta

    return jax.lax.scan(body, (theta, tx.init(theta)), xs)[1]


ngd_iterates = train(m0, long)
ngd_identity_err = float(jnp.max(jnp.abs(ekf.states.mean - ngd_iterates)))
print(f"max |EKF mean - online NGD| over {ngd_tokens} tokens: {ngd_identity_err:.1e}")

B = rng.normal(size=(K, K))
F = jnp.asarray(B @ B.T + 0.5 * np.eye(K))
ngd = kl.natural_gradient_gap_path(h_nonlinear, m0, xs, etas, F)
ngd_slope = kl.loglog_slope(ngd.path, ngd.relative_gap)
print(f"frozen preconditioner eta F^-1 -> fixed-step NGD: order {ngd_slope:.3f}")

# %% [markdown]
# ## 4. Meta-learning: the prior across tasks
#
# Type-II maximum likelihood over many in-context regression tasks learns
# $(m_0, \Sigma_0, r)$ with optax; the learned $\Sigma_0$ approaches the task
# distribution's covariance at the rate of the best possible estimator, the
# sample covariance of the (unseen) true task vectors.

# %%
k, tokens, r = 3, 16, 0.05
mean = rng.normal(size=k)
C = rng.normal(size=(k, k))
cov = C @ C.T / k + 0.2 * np.eye(k)
sizes = (16, 64) if SMOKE else (16, 64, 256, 1024)
top = max(sizes)
fit = jax.jit(
    lambda xs: kl.fit_meta_prior(
        xs, kl.init_meta_params(k), steps=200 if SMOKE else 500
    )
)
meta_err, oracle_err = [], []
for n_tasks in sizes:
    theta = rng.multivariate_normal(mean, cov, size=n_tasks)
    x = rng.normal(size=(n_tasks, tokens, k))
    yy = np.einsum("ntk,nk->nt", x, theta) + np.sqrt(r) * rng.normal(
        size=(n_tasks, tokens)
    )
    # pad with missing (NaN) tasks: they add nothing, and one compilation serves all
    yy = np.concatenate([yy, np.full((top - n_tasks, tokens), np.nan)])
    x = np.concatenate([x, np.zeros((top - n_tasks, tokens, k))])
    res = fit({"obs": jnp.asarray(yy[..., None]), "x": jnp.asarray(x)})
    norm = np.linalg.norm(cov)
    meta_err.append(np.linalg.norm(np.asarray(res.prior.cov) - cov) / norm)
    oracle_err.append(np.linalg.norm(np.cov(theta.T, bias=True) - cov) / norm)
print(
    "relative error of Sigma_0:",
    np.round(meta_err, 3),
    "oracle:",
    np.round(oracle_err, 3),
)

# one GD-limit step from m_0 with a diagonal Sigma_0 is a Meta-SGD step
alpha = kl.meta_sgd_learning_rates(
    kj.Gaussian(res.prior.mean, jnp.diag(jnp.diag(res.prior.cov))), res.noise_var
)
support = {
    "obs": jnp.asarray(rng.normal(size=(8, 1))),
    "x": jnp.asarray(rng.normal(size=(8, 1, k))),
}
task_loss = lambda th: (
    0.5 * jnp.sum((support["obs"][:, 0] - support["x"][:, 0] @ th) ** 2)
)
meta_sgd_err = float(
    jnp.max(
        jnp.abs(
            kl.adapt(h_linear, res.prior.mean, support, alpha)
            - (res.prior.mean - alpha * jax.grad(task_loss)(res.prior.mean))
        )
    )
)
print(f"GD-limit step vs Meta-SGD step by hand: {meta_sgd_err:.1e}")

# %% [markdown]
# ## The plots

# %%
fig, axes = plt.subplots(2, 3, figsize=(14, 7.5))
for ax, p, key, label, title in [
    (axes[0, 0], gd, "relative_gap", r"$\eta|J|^2$", "GD limit vs optax.sgd"),
    (
        axes[0, 1],
        proj,
        "gap",
        r"$r/\lambda_{\min}(XX^\top)$",
        r"$R\to 0$ vs pinv$(X)y$",
    ),
    (
        axes[1, 0],
        ngd,
        "relative_gap",
        r"$\eta|J|^2_{F^{-1}}$",
        "frozen preconditioner vs NGD",
    ),
]:
    x_, y_ = np.asarray(p.path), np.asarray(getattr(p, key))
    ax.loglog(x_, y_, "o-", label="gap")
    ax.loglog(x_, y_[0] * x_ / x_[0], "k--", lw=1, label="order 1")
    ax.set_xlabel(label)
    ax.set_title(title)
    ax.legend()
ax = axes[0, 2]
ax.loglog(np.asarray(rs), np.asarray(proj.spectrum))
ax.set_xlabel("noise variance r")
ax.set_title(rf"spectrum of $\Sigma_T$: {n} collapse, {d - n} stay")
ax = axes[1, 1]
ax.semilogy(np.abs(np.asarray(ekf.states.mean - ngd_iterates)).max(-1) + 1e-18)
ax.set_xlabel("token t")
ax.set_title("|EKF mean - online NGD| (float64)")
ax = axes[1, 2]
ax.loglog(sizes, meta_err, "o-", label=r"learned $\Sigma_0$")
ax.loglog(sizes, oracle_err, "s--", label="oracle sample cov.")
ax.set_xlabel("tasks N")
ax.set_title("meta-learned prior: relative error")
ax.legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# ## The claims, asserted

# %%
assert abs(gd_slope - 1) < 0.05 and float(gd.relative_gap[-1]) < 1e-3
assert abs(proj_slope - 1) < 0.05 and pinv_err < 1e-10 and limit_rank == d - n
assert ngd_identity_err < 1e-10 and abs(ngd_slope - 1) < 0.05
assert meta_err[-1] < meta_err[0] and abs(meta_err[-1] - oracle_err[-1]) < 0.05
assert meta_sgd_err < 1e-12
print("all limits converge with the predicted order")
