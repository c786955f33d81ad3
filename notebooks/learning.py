# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Learning a model's parameters: EM, and the marginal likelihood with optax
#
# One linear-Gaussian model, fitted two ways to the same data with gaps:
#
# 1. `kj.fit_em`: expectation-maximisation, the E-step a Kalman filter and RTS
#    smoother, the M-step closed form (missing entries are imputed inside the
#    E-step, so the iteration stays an exact EM);
# 2. `kj.fit_marginal_likelihood`: any optax optimiser on
#    $-\log p(y \mid \theta)$, through the filter by `jax.grad`, with the
#    covariances kept positive definite by the reparametrisation
#    `kj.constraints.psd()` (the optimiser moves a free matrix $u$; the model sees
#    $L L^\top$, $L$ its lower triangle with a softplus diagonal).
#
# Model: $x_t = F x_{t-1} + w_t$, $w_t \sim N(0, Q)$; $y_t = x_t + v_t$,
# $v_t \sim N(0, R)$, with $F$, $Q$, $R$ unknown ($2 \times 2$, $Q$ and $R$ full)
# and the prior $N(0, I)$ known. With $H = I$ held fixed the parameters are
# identifiable, so the two fits can be compared parameter by parameter.
#
# What this notebook shows, each checked by an `assert` at the end:
#
# 1. EM's log-likelihood never decreases;
# 2. both reach the same maximum of the likelihood, and the same parameters;
# 3. on a held-out sequence, the fitted models predict about as well as the true
#    one (they lose what estimating 10 numbers should cost, within 3 standard
#    errors of the paired difference), and better than the starting guess.

# %%
import os

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax

import kalmanjax as kj
from kalmanjax import constraints as C

SMOKE = os.environ.get("KALMANJAX_SMOKE") == "1"
plt.rcParams["figure.dpi"] = 72  # small outputs in the committed .ipynb
T = 100 if SMOKE else 1000
EM_ITERS = 30 if SMOKE else 300
LBFGS_STEPS = 20 if SMOKE else 150

# %% [markdown]
# ## Simulate, with 20 % of the readings missing

# %%
true = {
    "F": jnp.array([[0.8, 0.3], [-0.2, 0.6]]),
    "Q": jnp.array([[0.5, 0.1], [0.1, 0.3]]),
    "R": jnp.array([[0.2, 0.05], [0.05, 0.4]]),
}
prior = kj.Gaussian(mean=jnp.zeros(2), cov=jnp.eye(2))


def models(p):
    """The parameters as kalmanjax models (H = I)."""
    return (
        kj.LinearDynamics(F=p["F"], Q=p["Q"]),
        kj.LinearObservation(H=jnp.eye(2), R=p["R"]),
    )


def log_likelihood_per_reading(p, ys):
    """log p(ys | p) per observed number (one-step predictive terms summed)."""
    filt = kj.kalman_filter(*models(p))
    return float(kj.log_marginal_likelihood(filt, prior, ys) / jnp.sum(~jnp.isnan(ys)))


key_train, key_test, key_gaps = jax.random.split(jax.random.key(0), 3)
train = kj.simulate(key_train, prior, *models(true), num_steps=T).observations
test = kj.simulate(key_test, prior, *models(true), num_steps=T).observations
gaps = jax.random.uniform(key_gaps, train.shape) < 0.2
train = jnp.where(gaps, jnp.nan, train)
num_observed = int(jnp.sum(~jnp.isnan(train)))
print(f"{T} steps, {num_observed} of {train.size} readings observed")

start = {"F": 0.5 * jnp.eye(2), "Q": jnp.eye(2), "R": 0.5 * jnp.eye(2)}

# %% [markdown]
# ## 1. EM
# `fixed=` holds the prior and $H$; the iterations run in one `lax.scan`.

# %%
em = jax.jit(
    lambda ys: kj.fit_em(
        prior,
        *models(start),
        ys,
        num_iters=EM_ITERS,
        fixed=("prior_mean", "prior_cov", "H"),
    )
)(train)
em_params = {"F": em.dynamics.F, "Q": em.dynamics.Q, "R": em.observation.R}
em_trace = np.asarray(em.log_likelihoods) / num_observed
print(f"EM: log-likelihood per observation {em_trace[0]:.4f} -> {em_trace[-1]:.4f}")

# %% [markdown]
# ## 2. The marginal likelihood with optax
# `build(params)` returns the filter and the prior; the constraints make `Q` and `R`
# positive definite whatever the optimiser does. L-BFGS gets the loss and its
# function as optax's extra arguments (its line search needs them).


# %%
def build(p):
    return kj.kalman_filter(*models(p)), prior


fit = jax.jit(
    lambda ys: kj.fit_marginal_likelihood(
        build,
        start,
        ys,
        optax.lbfgs(),
        constraints={"Q": C.psd(), "R": C.psd()},
        num_steps=LBFGS_STEPS,
    )
)(train)
opt_trace = -np.asarray(fit.losses)
print(f"L-BFGS: {opt_trace[0]:.4f} -> {-float(fit.loss):.4f}")

# %% [markdown]
# ## Compare the fits

# %%
fig, ax = plt.subplots(figsize=(7, 3))
ax.plot(np.arange(EM_ITERS), em_trace, label="EM")
ax.plot(np.arange(LBFGS_STEPS), opt_trace, label="L-BFGS (optax)")
truth_ll = log_likelihood_per_reading(true, train)
ax.axhline(truth_ll, color="k", lw=0.8, ls="--", label="true parameters")
ax.set_xscale("symlog")
ax.set_xlabel("iteration")
ax.set_ylabel("log p(y) per observation")
ax.legend(fontsize=7)
fig.tight_layout()
plt.show()

em_final = log_likelihood_per_reading(em_params, train)  # after EM's last M-step
opt_final = -float(fit.loss)
print(
    f"training log-likelihood per observation: EM {em_final:.6f}, "
    f"L-BFGS {opt_final:.6f}, true parameters {truth_ll:.6f}"
)
for name in ("F", "Q", "R"):
    gap = float(jnp.max(jnp.abs(em_params[name] - fit.params[name])))
    err = float(jnp.max(jnp.abs(fit.params[name] - true[name])))
    print(f"{name}: EM vs L-BFGS {gap:.2e}; L-BFGS vs truth {err:.3f}")

# %% [markdown]
# ## 3. Held-out prediction
# The one-step predictive log-likelihood of a fresh sequence from the same model,
# step by step, compared in pairs (the same steps under two models), so the
# standard error is that of the per-step differences. Fitting 10 numbers to
# $N$ readings should cost about $10 / (2N)$ nats per reading on new data (the
# AIC's penalty): the fitted models may lose that much to the truth, no more.


# %%
def per_step(p, ys):
    out = kj.run(kj.kalman_filter(*models(p)), prior, ys, lean=True)
    return np.asarray(out.infos.log_likelihood, np.float64) / ys.shape[-1]


def paired(a, b):
    """Mean per-reading gain of a over b on the test sequence, and its stderr."""
    diff = per_step(a, test) - per_step(b, test)
    return float(diff.mean()), float(diff.std(ddof=1) / np.sqrt(diff.size))


expected_cost = 10 / (2 * num_observed)
verdicts = {
    "EM vs truth": paired(em_params, true),
    "L-BFGS vs truth": paired(fit.params, true),
    "L-BFGS vs start": paired(fit.params, start),
}
for name, (gain, se) in verdicts.items():
    print(f"{name:16s} {gain:+.4f} +- {se:.4f} nats per reading")
print(f"expected cost of estimation: -{expected_cost:.4f}")

# %% [markdown]
# ## Checks

# %%
assert np.all(np.diff(em_trace) > -1e-5), np.diff(em_trace).min()
assert em_final > em_trace[0] and opt_final > opt_trace[0]
if not SMOKE:  # the smoke run stops before either converges
    assert abs(em_final - opt_final) < 1e-4, (em_final, opt_final)
    for name in ("F", "Q", "R"):
        np.testing.assert_allclose(em_params[name], fit.params[name], atol=5e-3)
    # the maximum likelihood is at least the truth's on the data it was fitted to
    assert opt_final >= truth_ll - 1e-6
    for name in ("EM vs truth", "L-BFGS vs truth"):  # within 3 standard errors
        gain, se = verdicts[name]
        assert abs(gain + expected_cost) < 3 * se, (name, gain, se)
    gain, se = verdicts["L-BFGS vs start"]
    assert gain > 3 * se, (gain, se)
print("all checks passed")
