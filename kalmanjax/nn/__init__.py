r"""Networks whose adaptation state kalmanjax filters (needs ``flax``).

* :class:`Transformer`: a small decoder-only causal transformer (Flax NNX);
* :class:`ResidualShift`, :class:`LowRankAdapter`: where a low-dimensional
  :math:`\theta` enters it; :class:`WeightAdapter`: :math:`\theta` as an offset
  of all its parameters (or those of chosen modules), one flat vector;
* :func:`observation_fn`: the adapted network as a pure ``fn(theta, inputs)``, for
  :func:`kalmanjax.linearize` and :func:`kalmanjax.extended_kalman_filter`.
"""

from .adapters import (
    Adapter,
    AdapterBasis,
    LowRankAdapter,
    ResidualShift,
    WeightAdapter,
)
from .observation import observation_fn
from .transformer import Transformer

__all__ = [
    "Adapter",
    "AdapterBasis",
    "LowRankAdapter",
    "ResidualShift",
    "Transformer",
    "WeightAdapter",
    "observation_fn",
]
