r"""In-context learning of random Markov chains, with its exact Bayes reference.

After Edelman et al. 2024 ("The evolution of statistical induction heads"). A
sequence draws each row of a ``V x V`` transition matrix from
:math:`\operatorname{Dirichlet}(c)` (independently) and a uniform first state,
then runs the chain for ``T`` tokens. Rows are exchangeable given the counts, so
the Bayes-optimal next-token predictor is Dirichlet counting,

.. math::

    p(x_t = j \mid x_{<t}) = \frac{c_j + N_{ij}}{\textstyle\sum_l c_l + N_i},
    \qquad i = x_{t-1},

with :math:`N_{ij}` the number of :math:`i \to j` transitions in :math:`x_{<t}`
(and the uniform distribution at ``t = 0``); each row's posterior is
:math:`\operatorname{Dirichlet}(c + N_{i\cdot})`. Families:
``MarkovFamily(vocab, alpha)`` has :math:`c = \alpha \mathbf 1` (``alpha`` 1:
the training family; 0.25 and 4: sparse and dense shifted families), and
``MarkovFamily(vocab, alpha, base)`` has :math:`c = \alpha V \cdot
\text{base}` (the same total concentration, a non-uniform base measure).

Scores: :func:`expected_log_loss` is the log loss of a predictor's
distribution in expectation over the true next token (``-sum_j P[x_{t-1}, j] log
q_t(j)``), which has less variance than the loss of the sampled token;
:func:`entropy_rate` is the oracle's (the true chain's) loss per token in the
stationary regime. Shapes: ``tokens`` ``(T,)`` int32, predictive
distributions ``(T, V)``, transition matrices ``(V, V)``; batch with ``vmap``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import digamma, polygamma
from jaxtyping import Array, Float, Int

__all__ = [
    "MarkovFamily",
    "bayes_predictive",
    "dirichlet_moments",
    "entropy_rate",
    "expected_log_loss",
    "logit_prior",
    "posterior_concentration",
    "sample_chains",
    "transition_counts",
    "unigram_predictive",
]


class MarkovFamily(NamedTuple):
    r"""Random Markov chains: rows :math:`\sim \operatorname{Dirichlet}(c)`.

    Attributes:
        vocab: ``V``, the number of states (tokens).
        alpha: the concentration per state (``c = alpha`` everywhere), or with
            ``base`` the mean concentration (``c = alpha * V * base``).
        base: a base measure ``(V,)`` (positive, summing to 1), or ``None``
            (uniform).
    """

    vocab: int
    alpha: float = 1.0
    base: tuple[float, ...] | None = None

    @property
    def concentration(self) -> np.ndarray:
        """:math:`c`, shape ``(V,)``."""
        if self.base is None:
            return np.full(self.vocab, float(self.alpha))
        base = np.asarray(self.base, float)
        if base.shape != (self.vocab,) or np.any(base <= 0):
            raise ValueError(
                f"MarkovFamily: base must be {self.vocab} positive weights (V,), "
                f"got {self.base}"
            )
        return self.alpha * self.vocab * base / base.sum()


def sample_chains(
    key: Array, family: MarkovFamily, num: int, length: int
) -> tuple[Float[Array, "num vocab vocab"], Int[Array, "num time"]]:
    """``(transitions, tokens)`` of ``num`` chains of ``length`` tokens (float32)."""
    V = family.vocab
    conc = jnp.asarray(family.concentration, jnp.float32)
    k_rows, k_first, k_steps = jax.random.split(key, 3)
    P = jax.random.dirichlet(k_rows, conc, (num, V))
    first = jax.random.randint(k_first, (num,), 0, V)

    def run(P, x0, key):
        def step(x, k):
            nxt = jax.random.categorical(k, jnp.log(P[x]))
            return nxt, nxt

        rest = jax.lax.scan(step, x0, jax.random.split(key, length - 1))[1]
        return jnp.concatenate([x0[None], rest]).astype(jnp.int32)

    tokens = jax.vmap(run)(P, first, jax.random.split(k_steps, num))
    return P, tokens


def transition_counts(tokens: Int[Array, " time"], vocab: int) -> Array:
    r"""``N[t]``: the ``(V, V)`` transition counts of ``tokens[:t]``, ``(T, V, V)``.

    ``N[t, i, j]`` counts the :math:`i \to j` transitions among the first ``t``
    tokens (so ``N[0] = N[1] = 0``), the counts the predictor of ``tokens[t]``
    may use.
    """
    pairs = (
        jax.nn.one_hot(tokens[:-1], vocab)[:, :, None]
        * jax.nn.one_hot(tokens[1:], vocab)[:, None, :]
    )
    zero = jnp.zeros((2, vocab, vocab), pairs.dtype)
    return jnp.concatenate([zero, jnp.cumsum(pairs, axis=0)[:-1]], axis=0)


def bayes_predictive(
    tokens: Int[Array, " time"], family: MarkovFamily
) -> Float[Array, "time vocab"]:
    """The Bayes predictive of every position given the tokens before it."""
    V = family.vocab
    conc = jnp.asarray(family.concentration, jnp.float32)
    N = transition_counts(tokens, V)
    prev = jnp.concatenate([jnp.zeros((1,), tokens.dtype), tokens[:-1]])
    rows = N[jnp.arange(tokens.shape[0]), prev] + conc[None, :]  # (T, V)
    pred = rows / jnp.sum(rows, axis=1, keepdims=True)
    return pred.at[0].set(jnp.full((V,), 1.0 / V))


def unigram_predictive(
    tokens: Int[Array, " time"], family: MarkovFamily
) -> Float[Array, "time vocab"]:
    r"""Unigram counting, :math:`(c_j + M_j) / (\sum_l c_l + t)`, ``(T, V)``.

    :math:`M_j` counts the tokens ``j`` among :math:`x_{<t}`, whatever came before
    them: the Bayes predictor of an i.i.d. sequence with a Dirichlet(c) prior,
    and the stage a transformer passes through before it learns to count
    transitions (Edelman et al. 2024). A near-miss rival to
    :func:`bayes_predictive`.
    """
    V = family.vocab
    conc = jnp.asarray(family.concentration, jnp.float32)
    seen = jnp.cumsum(jax.nn.one_hot(tokens, V), axis=0)
    counts = jnp.concatenate([jnp.zeros((1, V), seen.dtype), seen[:-1]]) + conc[None, :]
    return counts / jnp.sum(counts, axis=1, keepdims=True)


def posterior_concentration(tokens: Int[Array, " time"], family: MarkovFamily):
    """Each row's Dirichlet posterior after all of ``tokens``: ``c + N``, ``(V, V)``."""
    V = family.vocab
    pairs = (
        jax.nn.one_hot(tokens[:-1], V)[:, :, None]
        * jax.nn.one_hot(tokens[1:], V)[:, None, :]
    )
    conc = jnp.asarray(family.concentration, jnp.float32)
    return conc[None, :] + jnp.sum(pairs, axis=0)


def dirichlet_moments(conc: Float[Array, "*rows vocab"]):
    r"""Mean and covariance of :math:`\operatorname{Dirichlet}(c)` (per row).

    :math:`m = c / c_0` and :math:`\operatorname{Cov} = (\operatorname{diag} m -
    m m^\top) / (c_0 + 1)`, :math:`c_0 = \sum_j c_j`; shapes ``(..., V)`` and
    ``(..., V, V)``.
    """
    total = jnp.sum(conc, axis=-1, keepdims=True)
    m = conc / total
    eye = jnp.eye(conc.shape[-1], dtype=conc.dtype)
    cov = (m[..., :, None] * eye - m[..., :, None] * m[..., None, :]) / (
        total[..., None] + 1.0
    )
    return m, cov


def logit_prior(family: MarkovFamily, dtype=jnp.float32):
    r"""The Gaussian over one row's logits moment-matched to the Dirichlet prior.

    If :math:`g_j \sim \operatorname{Gamma}(c_j, 1)` independently, then
    :math:`g / \sum g \sim \operatorname{Dirichlet}(c)`: the logits
    :math:`\theta_j = \log g_j` give the Dirichlet exactly through the softmax.
    Their mean and variance are :math:`\psi(c_j)` and :math:`\psi_1(c_j)`
    (digamma, trigamma), independent across ``j``. Returns ``(mean, var)``, each
    ``(V,)``, in ``dtype``.
    """
    conc = jnp.asarray(family.concentration, dtype)
    return digamma(conc), polygamma(1, conc)


def expected_log_loss(
    predictive: Float[Array, "time vocab"],
    transitions: Float[Array, "vocab vocab"],
    tokens: Int[Array, " time"],
) -> Float[Array, " time"]:
    r"""``-sum_j P[x_{t-1}, j] log q_t(j)`` for ``t >= 1`` (the first entry: 0).

    The log loss of the predictive ``q_t`` in expectation over the true next
    token given the previous one, in nats.
    """
    rows = transitions[tokens[:-1]]  # (T - 1, V)
    loss = -jnp.sum(rows * jnp.log(predictive[1:]), axis=1)
    return jnp.concatenate([jnp.zeros((1,), loss.dtype), loss])


def entropy_rate(transitions: Float[Array, "vocab vocab"]) -> Array:
    r"""The chain's entropy rate :math:`\sum_i \pi_i H(P_{i\cdot})` in nats.

    :math:`\pi` is the stationary distribution, solved from :math:`\pi (P - I) =
    0` with :math:`\sum_i \pi_i = 1` (unique for an irreducible chain, which a
    Dirichlet draw is almost surely); the oracle's loss per token in the
    stationary regime.
    """
    V = transitions.shape[0]
    A = (transitions.T - jnp.eye(V, dtype=transitions.dtype)).at[-1].set(1.0)
    pi = jnp.linalg.solve(A, jnp.zeros((V,), transitions.dtype).at[-1].set(1.0))
    safe = jnp.where(transitions > 0, transitions, 1.0)
    row_entropy = -jnp.sum(transitions * jnp.log(safe), axis=1)
    return pi @ row_entropy
