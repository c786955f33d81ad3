# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Token streams: in-context learning of Markov chains against exact Bayes
#
# The paper's own object is a language model reading tokens. Random Markov chains
# (Edelman et al. 2024) are the token task with an exact Bayes reference: each
# sequence draws the rows of a $V \times V$ transition matrix from a Dirichlet, and
# the Bayes predictor is Dirichlet counting,
# $p(x_t = j \mid x_{<t}) = (c_j + N_{ij}) / (\sum_l c_l + N_i)$ with $i = x_{t-1}$.
#
# a. **Tier A**: filter the transition logits $\theta$ themselves with the
#    categorical EKF ($x_t \sim \mathrm{softmax}(\theta[x_{t-1}])$, a prior
#    moment-matched to the Dirichlet), against Bayes, a MAP refit and online
#    fine-tuning at its best rate; and watch each row's covariance collapse with
#    its visits, against the exact Dirichlet posterior.
# b. **Tier B**: a transformer trained on these chains (`kalmanjax.nn.icl_markov`,
#    shipped): how close to Bayes is it, does it count transitions or tokens, and
#    does its residual stream carry a row's posterior precision?
# c. **Tier C**: on sparser chains (Dirichlet(0.25) rows) the frozen network smooths
#    too much; filter an 8-dimensional adapter of its head across chains and within
#    a chain, against fine-tuning and a MAP refit, and check the filter against an
#    importance-sampling posterior when the true adapter is known.
#
# Each section calls the experiment the main job runs (`python -m kalmanjax
# markov_logits markov_transformer markov_adapter`); the last cell asserts the
# verdicts that hold.

# %%
import os
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
from IPython.display import Image, display

import kalmanjax as kj
from kalmanjax.experiments import markov_adapter, markov_logits, markov_transformer
from kalmanjax.tasks import markov

SMOKE = os.environ.get("KALMANJAX_SMOKE") == "1"
plt.rcParams["figure.dpi"] = 80
FIGURES = Path(tempfile.mkdtemp())

# %% [markdown]
# ## The categorical EKF on one chain, by hand
#
# The state is the flattened $V \times V$ logit matrix ($k = V^2$); the token
# $x_t$ is a categorical observation of row $x_{t-1}$. The prior is the Gaussian
# whose softmax is (moment-matched to) the Dirichlet: the logits of independent
# Gamma$(c_j)$ variables have mean $\psi(c_j)$ and variance $\psi_1(c_j)$.

# %%
V = 4
family = markov.MarkovFamily(V, alpha=1.0)
P, chains = markov.sample_chains(jax.random.key(0), family, num=1, length=64)
x = chains[0]
mean, var = markov.logit_prior(family)
filt = kj.extended_kalman_filter(
    kj.LinearDynamics(F=jnp.eye(V * V), Q=jnp.zeros((V * V, V * V))),
    kj.CategoricalObservation(fn=lambda th, u: th.reshape(V, V)[u["prev"]]),
)
prior = kj.Gaussian(jnp.tile(mean, V), jnp.diag(jnp.tile(var, V)))
out = kj.run(filt, prior, {"obs": x[1:], "prev": x[:-1]})
final = out.states.mean[-1].reshape(V, V)
print("visits per row:", np.bincount(np.asarray(x[:-1]), minlength=V))
print("filtered rows (softmax of the mean):")
print(np.round(np.asarray(jax.nn.softmax(final, axis=1)), 2))
print("Dirichlet posterior means:")
conc = markov.posterior_concentration(x, family)
print(np.round(np.asarray(conc / conc.sum(1, keepdims=True)), 2))

# %% [markdown]
# ## a. Tier A: logits filtered, refit and fine-tuned

# %%
with jax.numpy_dtype_promotion("standard"):  # optax is not strict-promotion clean
    res_a = markov_logits.run(quick=SMOKE)
markov_logits.plot(res_a, FIGURES / "a.png")
display(Image(str(FIGURES / "a.png"), width=900))
for c in res_a.claims:
    print(f"[{c.verdict}] {c.claim}")
for b in res_a.data["collapse"]:
    print(
        f"visits {b['visits']}: EKF / Dirichlet trace of Cov[p] = {b['ratio']:.2f} "
        f"({b['rows']} rows)"
    )

# %% [markdown]
# ## b. Tier B: the trained transformer

# %%
with jax.numpy_dtype_promotion("standard"):
    res_b = markov_transformer.run(quick=SMOKE)
markov_transformer.plot(res_b, FIGURES / "b.png")
display(Image(str(FIGURES / "b.png"), width=900))
for c in res_b.claims:
    print(f"[{c.verdict}] {c.claim}\n    {c.measured}")

# %% [markdown]
# ## c. Tier C: an adapter of the network, filtered under a shift

# %%
with jax.numpy_dtype_promotion("standard"):
    res_c = markov_adapter.run(quick=SMOKE)
markov_adapter.plot(res_c, FIGURES / "c.png")
display(Image(str(FIGURES / "c.png"), width=900))
for c in res_c.claims:
    print(f"[{c.verdict}] {c.claim}\n    {c.measured}")

# %% [markdown]
# ## The claims, checked
#
# What holds at both the notebook's sizes:
#
# * iterating the EKF's update (IEKF) lowers its regret, and predicting with its
#   covariance (the probit predictive) beats the plug-in softmax of its mean and
#   the MAP refit;
# * each row's covariance over its probabilities collapses with its visits like
#   the exact Dirichlet posterior's (ratio of traces within [2/3, 3/2]), and a row
#   never left keeps its prior;
# * the trained transformer's in-context predictive has less regret than
#   fine-tuning at its best rate, and it counts transitions (it is far closer to
#   Bayes than to unigram counting); its residual stream encodes the current
#   row's posterior precision within a position better than an untrained
#   network's; under a shifted concentration its excess over Bayes grows;
# * filtering the head adapter within a chain lowers that excess on the shifted
#   family, and with a known adapter the EKF's mean and covariance agree with
#   the importance-sampling posterior.
#
# What does not: the plug-in EKF loses to a MAP refit under the same prior (the
# refit's mode is closer to the posterior mean than one linearised step), on the
# logits and on the adapter alike.

# %%
ft, refit, iterated, probit, probit_map, shifted, collapse, unvisited = res_a.claims
assert refit.verdict.startswith("fails"), refit
assert iterated.verdict == "holds" and probit.verdict == "holds", (iterated, probit)
assert probit_map.verdict == "holds", probit_map
assert collapse.verdict == "holds" and unvisited.verdict == "holds"
net_ft, net_ekf, counts, probe, shift = res_b.claims
assert net_ft.verdict == "holds" and counts.verdict == "holds", (net_ft, counts)
assert probe.verdict == "holds" and shift.verdict == "holds", (probe, shift)
*across, vs_refit, within_shifted, within_control, known = res_c.claims
# a smoke run checkpoints at 4 and 8 chains, not 8 and 64: it leaves the across-
# chain verdicts to the default run, but says which way they point
assert vs_refit.verdict.startswith("inconclusive (quick" if SMOKE else "fails")
assert "fails" in vs_refit.verdict, vs_refit
assert within_shifted.verdict == "holds" and known.verdict == "holds"
# where the smoke size decides less, it must not contradict the default run
assert ft.verdict.startswith(("holds", "inconclusive")), ft
v8 = shifted.measured["V=8, T=256"]["ekf_vs_best_optimizer"]["verdict"]
assert v8.startswith("fails"), shifted  # at V = 8 fine-tuning wins, at either size
assert net_ekf.verdict.startswith(("fails", "inconclusive")), net_ekf
assert within_control.verdict.startswith(("fails", "inconclusive")), within_control
