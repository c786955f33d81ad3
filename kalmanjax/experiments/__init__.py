"""The paper's experiments as functions that return data, plus their plots.

Each experiment module exposes ``run(quick: bool) -> ExperimentResult`` (pure
computation, no plotting) and ``plot(result, path)`` (matplotlib, imported lazily).
:data:`EXPERIMENTS` maps the names used by the command line to those modules.
"""

from . import (
    calibration,
    collapse,
    contraction,
    finetune,
    informativeness,
    limits,
    observability,
    precedes,
    transformer_finetune,
    transformer_icl,
)
from ._result import Claim, ExperimentResult

#: name -> module with ``run(quick)`` and ``plot(result, path)``
EXPERIMENTS = {
    "collapse": collapse,
    "precedes": precedes,
    "observability": observability,
    "contraction": contraction,
    "calibration": calibration,
    "informativeness": informativeness,
    "finetune": finetune,
    "limits": limits,
    "transformer_icl": transformer_icl,
    "transformer_finetune": transformer_finetune,
}

__all__ = ["EXPERIMENTS", "Claim", "ExperimentResult"]
