# %% [markdown]
# # Filtering a trained transformer's adaptation state
#
# Theory.md, item 9: the paper's claim on a real network. kalmanjax ships a small
# transformer trained on in-context linear regression (`kalmanjax.nn.icl`:
# $w \sim N(0, I_5)$, $y_i = w^\top x_i + v_i$, 20 pairs per prompt). We ask:
#
# a. is its in-context learning the Kalman filter over $w$ (predictions, and what
#    its residual stream encodes)?
# b. across a stream of prompts from a *shifted* task family, does an EKF over a
#    low-dimensional adapter $\theta$ (Jacobians by `jax.jacfwd` through the
#    network) adapt faster than fine-tuning $\theta$ with SGD / Adam?
# c. within a single prompt, does adapting $\theta$ token by token help?
#
# Each section calls the experiment the main job runs (`python -m kalmanjax
# transformer_icl transformer_finetune`) and plots it; the last cell asserts the
# verdicts that hold.

# %%
import os
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
from flax import nnx
from IPython.display import Image, display

import kalmanjax as kj
from kalmanjax.experiments import transformer_finetune, transformer_icl
from kalmanjax.nn import LowRankAdapter, icl, observation_fn

SMOKE = os.environ.get("KALMANJAX_SMOKE") == "1"
plt.rcParams["figure.dpi"] = 80
FIGURES = Path(tempfile.mkdtemp())

model, config, meta = icl.load_pretrained()
print(config)
print({k: meta[k] for k in ("steps", "seed", "mean_ratio", "mean_ratio_se")})

# %% [markdown]
# ## The EKF over an adapter, by hand
#
# $\theta \in \mathbb R^k$ enters as a low-rank adapter on the output head,
# $W h + B\,\mathrm{diag}(\theta) A h$; `observation_fn` makes the adapted network a
# pure function of $\theta$, and the EKF filters $\theta$ over one prompt's tokens
# exactly as it filters any state.

# %%
k = 8
h = observation_fn(model, LowRankAdapter(model, "head.proj", k, rngs=nnx.Rngs(0)))
_, x, y = icl.sample_prompts(
    jax.random.key(0), 1, config, weight_mean=jnp.ones(config.dim)
)
tokens = icl.encode(x[0], y[0])
filt = kj.extended_kalman_filter(
    kj.LinearDynamics(F=jnp.eye(k), Q=jnp.zeros((k, k))),
    kj.NonlinearObservation(
        fn=lambda theta, u: h(theta, tokens)[2 * u["pos"]], R=0.5 * jnp.eye(1)
    ),
)
out = kj.run(
    filt,
    kj.Gaussian(jnp.zeros(k), jnp.eye(k)),
    {"obs": y[0][:, None], "pos": jnp.arange(config.num_pairs)},
)
print("tr Sigma_t:", np.round(np.trace(out.states.cov, axis1=1, axis2=2), 2))

# %% [markdown]
# ## a. Is in-context learning a Kalman filter?

# %%
res_a = transformer_icl.run(quick=SMOKE)
transformer_icl.plot(res_a, FIGURES / "a.png")
display(Image(str(FIGURES / "a.png"), width=900))
for c in res_a.claims:
    print(f"[{c.verdict}] {c.claim}\n    {c.measured}")

# %% [markdown]
# ## b and c. Filtering vs fine-tuning

# %%
with jax.numpy_dtype_promotion("standard"):  # optax is not strict-promotion clean
    res_b = transformer_finetune.run(quick=SMOKE)
transformer_finetune.plot(res_b, FIGURES / "b.png")
display(Image(str(FIGURES / "b.png"), width=900))
for c in res_b.claims:
    print(f"[{c.verdict}] {c.claim}\n    {c.measured}")

# %% [markdown]
# ## The claims, checked
#
# What holds on this network (at both the notebook's sizes):
#
# * its in-context predictions are within 10% of the Kalman filter's (Bayes) error
#   on the observed targets from position d on, and correlate with them at > 0.95;
#   against the noise-free targets $x_i^\top w$ the gap is larger (about 17%, and
#   more at the last positions);
# * of a family of estimators (ridge over a grid of $\lambda$, least squares,
#   gradient descent), its predictions are closest to a ridge regression, with a
#   penalty within a factor 4 of Bayes' $\sigma^2/\tau^2$: at the default size it
#   is measurably closer to a slightly *larger* penalty than Bayes' (see the
#   verdict above), so "it is the Bayes predictor" is an approximation;
# * its residual stream carries the filter's uncertainty $\log\det\Sigma$
#   (mostly through the position);
# * filtering an adapter across prompts of a shifted family improves on the frozen
#   network on held-out prompts;
# * within a single prompt, filtering the adapter token by token makes things worse,
#   on the shifted family and on the unshifted control alike: the network already
#   uses those tokens in context, and the filter counts them a second time.
#
# What does not: a linear read-out of the filter's *mean* from the residual stream
# (the network predicts like the filter without representing $m_t$ linearly); and
# whether the filter beats tuned fine-tuning across prompts depends on the budget
# (see the verdicts above and `python -m kalmanjax transformer_finetune`).

# %%
icl_claim, family_claim, mean_claim, uncertainty_claim = res_a.claims
speed_claim, one_pass_claim, within_claim, why_claim = res_b.claims
assert icl_claim.measured["noisy_targets_mean_ratio"] < 1.10, icl_claim
assert icl_claim.measured["min_correlation_with_bayes_late"] > 0.95
closest = family_claim.measured["closest"]
assert closest.startswith("ridge x"), family_claim
assert 0.25 <= float(closest.removeprefix("ridge x")) <= 4.0, family_claim
assert uncertainty_claim.verdict.startswith("holds"), uncertainty_claim
assert mean_claim.verdict == "fails" and mean_claim.measured["best_r2"] < 0.5
assert one_pass_claim.measured["ekf_gap_closed"] > 0.1
assert within_claim.measured["ekf_over_frozen_shifted"] > 1.0
assert why_claim.measured["ekf_over_frozen_control"] > 1.0
