r"""Tasks with an exact Bayes reference, for the in-context learning claims.

* :mod:`kalmanjax.tasks.markov`: random Markov chains (Dirichlet rows), whose
  Bayes predictor is Dirichlet counting.
"""

from .markov import (
    MarkovFamily,
    bayes_predictive,
    dirichlet_moments,
    entropy_rate,
    expected_log_loss,
    logit_prior,
    posterior_concentration,
    sample_chains,
    transition_counts,
    unigram_predictive,
)

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
