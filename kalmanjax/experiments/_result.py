"""Result records shared by the experiments and the command line."""

from __future__ import annotations

import dataclasses
from typing import Any


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
