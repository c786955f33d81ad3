"""Result records shared by the experiments and the command line."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np


@dataclasses.dataclass(frozen=True)
class Claim:
    """One checked statement, with its verdict and the numbers behind it.

    Attributes:
        claim: the statement tested, in words.
        verdict: ``"holds"``, ``"holds only when ..."`` or ``"fails"``.
        measured: the numbers the verdict rests on.
        settings: the settings they were measured with.
    """

    claim: str
    verdict: str
    measured: dict[str, Any]
    settings: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class ExperimentResult:
    """An experiment's data (arrays, for plotting) and its checked claims."""

    name: str
    data: dict[str, Any]
    claims: list[Claim]


def paired_difference(a, b) -> tuple[float, float]:
    """Mean and standard error of ``a - b`` over paired samples (seeds, chains)."""
    diff = np.asarray(a) - np.asarray(b)
    se = float(np.std(diff, ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else np.nan
    return float(np.mean(diff)), se


def verdict_of_difference(diff: float, se: float, better: str, worse: str) -> str:
    """The verdict on ``better > worse`` from their paired difference ``diff``.

    "holds" when ``diff > 2 se``, "fails" when ``diff < -2 se``, else
    "inconclusive".
    """
    if not np.isfinite(se):
        return "inconclusive (one seed)"
    if diff > 2 * se:
        return "holds"
    if diff < -2 * se:
        return f"fails ({worse} is better)"
    return "inconclusive (within 2 standard errors)"


def quick_verdict(verdict: str, quick: bool, sample: str) -> str:
    """A verdict as a ``quick`` run may state it.

    Where the quick run is another regime (a smaller state, fewer prompts), a
    decided verdict could contradict the default run's, so it is reported as
    ``"inconclusive (quick: SAMPLE; VERDICT)"``: the direction it points to stays
    visible, the decision is left to the default run. Undecided verdicts and
    non-quick runs pass through.
    """
    if quick and not verdict.startswith("inconclusive"):
        return f"inconclusive (quick: {sample}; {verdict})"
    return verdict
