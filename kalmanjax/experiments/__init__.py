"""The paper's experiments as functions that return data, plus their plots.

Each experiment module exposes ``run(quick: bool, seed: int) -> ExperimentResult``
(pure computation, no plotting) and ``plot(result, path)`` (matplotlib, imported
lazily). :data:`EXPERIMENTS` maps the names used by the command line to those
modules. It is a lazy registry: it holds each experiment's module name, one-line
description and optional dependencies (:class:`ExperimentSpec`), and imports the
module only when it is looked up (``EXPERIMENTS[name]``), so that listing the
experiments needs none of them (``flax``, ``optax``, ``matplotlib``: the
``experiments`` extra). :meth:`Registry.load` checks that they are installed
before anything runs; a missing one raises :class:`MissingDependencyError`, whose
message names the extra to install.

Examples:
    >>> from kalmanjax.experiments import EXPERIMENTS
    >>> "collapse" in EXPERIMENTS, len(EXPERIMENTS)
    (True, 16)
    >>> EXPERIMENTS.describe("contraction"), EXPERIMENTS.claims("contraction")
    ('Contraction rates, regime by regime.', (4,))
    >>> EXPERIMENTS.module_name("limits")
    'kalmanjax.experiments.degenerate_limits'
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from types import ModuleType
from typing import NamedTuple

from ._result import (
    Claim,
    ExperimentResult,
    paired_difference,
    verdict_of_difference,
)

__all__ = [
    "EXPERIMENTS",
    "INSTALL_HINT",
    "PLOT_REQUIRES",
    "Claim",
    "ExperimentResult",
    "ExperimentSpec",
    "MissingDependencyError",
    "Registry",
    "paired_difference",
    "require",
    "verdict_of_difference",
]

#: how to install what the experiments need beyond the base install
INSTALL_HINT = "pip install 'kalmanjax[experiments]'"

#: what every experiment's ``plot`` imports (lazily)
PLOT_REQUIRES = ("matplotlib",)


class MissingDependencyError(ModuleNotFoundError):
    """An optional dependency of the experiments is not installed.

    Its message is one line that names the missing module, what needs it and the
    extra to install (:data:`INSTALL_HINT`); ``name`` is the missing module.
    """


class ExperimentSpec(NamedTuple):
    """A registry entry: where an experiment lives, what it tests and needs.

    Attributes:
        module: the module's name under :mod:`kalmanjax.experiments`.
        description: one line (the first of the module's docstring).
        claims: the numbers of the claims of docs/theory.md that it tests.
        requires: the optional modules its ``run`` needs beyond the base install
            (some are imported only inside ``run``, so importing the module does
            not check them); plotting needs :data:`PLOT_REQUIRES` besides.
    """

    module: str
    description: str
    claims: tuple[int, ...]
    requires: tuple[str, ...] = ()


def _import(module: str, needed_by: str) -> ModuleType:
    """Import ``module``; a missing third-party module is a MissingDependencyError."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        missing = (err.name or "").partition(".")[0]
        if not missing or missing == __name__.partition(".")[0]:
            raise  # kalmanjax itself is broken: not a missing extra
        raise MissingDependencyError(
            f"{needed_by} needs {missing}, which is not installed: {INSTALL_HINT}",
            name=missing,
        ) from err


def require(*modules: str, needed_by: str = "the experiments") -> None:
    """Import each of ``modules`` or raise :class:`MissingDependencyError`.

    Args:
        *modules: module names, e.g. :data:`PLOT_REQUIRES`.
        needed_by: what needs them, for the message.

    Examples:
        >>> require("json")
        >>> require("no_such_module_xyz", needed_by="plotting")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        kalmanjax.experiments.MissingDependencyError: plotting needs no_such_module...
    """
    for module in modules:
        _import(module, needed_by)


class Registry(Mapping[str, ModuleType]):
    """Experiment name -> module, imported on first lookup.

    Iterating, ``len``, ``in`` and :meth:`describe` import nothing;
    ``registry[name]`` imports the module (once; Python caches it) and raises
    :class:`MissingDependencyError` when one of its dependencies is missing.
    """

    def __init__(self, specs: Mapping[str, ExperimentSpec]):
        """Hold ``specs``, name -> :class:`ExperimentSpec`."""
        self.specs = dict(specs)

    def __getitem__(self, name: str) -> ModuleType:
        """Import and return the experiment's module (``KeyError`` if unknown)."""
        return _import(self.module_name(name), f"experiment {name!r}")

    def __iter__(self) -> Iterator[str]:
        """Iterate over the names, in the command line's order."""
        return iter(self.specs)

    def __len__(self) -> int:
        """Return the number of experiments."""
        return len(self.specs)

    def __contains__(self, name: object) -> bool:
        """Whether ``name`` is an experiment (imports nothing)."""
        return name in self.specs

    def module_name(self, name: str) -> str:
        """Return the full name of the experiment's module (imports nothing)."""
        return f"{__name__}.{self.specs[name].module}"

    def describe(self, name: str) -> str:
        """Return the experiment's one-line description (imports nothing)."""
        return self.specs[name].description

    def claims(self, name: str) -> tuple[int, ...]:
        """Return the numbers of the claims (docs/theory.md) the experiment tests."""
        return self.specs[name].claims

    def requires(self, name: str) -> tuple[str, ...]:
        """Return the optional modules the experiment's ``run`` needs."""
        return self.specs[name].requires

    def load(self, names: list[str], plot: bool = True) -> dict[str, ModuleType]:
        """Import the experiments ``names``; check what they and plotting need.

        Everything is checked before anything runs: a missing dependency raises
        :class:`MissingDependencyError` here, not after other experiments ran.
        ``plot=False`` skips the plotting check.

        Returns:
            name -> module, for each of ``names``.
        """
        modules = {}
        for name in names:
            require(*self.requires(name), needed_by=f"experiment {name!r}")
            modules[name] = self[name]
        if plot and modules:
            require(*PLOT_REQUIRES, needed_by="plotting the figures")
        return modules


#: name -> module with ``run(quick, seed)`` and ``plot(result, path)``, lazily;
#: the claims are those of docs/theory.md (one numbering, 1 to 9)
EXPERIMENTS = Registry(
    {
        "collapse": ExperimentSpec(
            "collapse", "Covariance collapse on in-context linear regression.", (1,)
        ),
        "precedes": ExperimentSpec(
            "precedes", "Does covariance collapse precede mean convergence?", (2,)
        ),
        "observability": ExperimentSpec(
            "observability",
            "Observability: the window Gramian bounds the covariance.",
            (3,),
        ),
        "contraction": ExperimentSpec(
            "contraction", "Contraction rates, regime by regime.", (4,)
        ),
        "calibration": ExperimentSpec(
            "calibration",
            "MSE calibration: is the filter's covariance its error?",
            (5,),
        ),
        "informativeness": ExperimentSpec(
            "informativeness",
            "Prompt informativeness as information accumulation.",
            (8,),
        ),
        "finetune": ExperimentSpec(
            "finetune",
            "Filtering vs fine-tuning and refits on the linear testbed.",
            (7,),
            ("optax",),
        ),
        "limits": ExperimentSpec(
            "degenerate_limits",
            "Degenerate limits of the filter, each with its measured order.",
            (6,),
            ("optax",),
        ),
        "transformer_icl": ExperimentSpec(
            "transformer_icl",
            "Is the trained transformer's in-context learning a Kalman filter?",
            (9,),
            ("flax",),
        ),
        "transformer_finetune": ExperimentSpec(
            "transformer_finetune",
            "Filtering vs fine-tuning an adaptation state of the trained transformer.",
            (7, 9),
            ("flax", "optax"),
        ),
        "network_covariance": ExperimentSpec(
            "network_covariance",
            r"The covariance claims on the network, with a known :math:`\theta^*`.",
            (2, 3, 4, 5, 7),
            ("flax", "optax"),
        ),
        "network_informativeness": ExperimentSpec(
            "network_informativeness",
            "Prompt informativeness on the network: prompts chosen by their "
            "information.",
            (8,),
            ("flax",),
        ),
        "markov_logits": ExperimentSpec(
            "markov_logits",
            "Token streams, tier A: filtering a Markov chain's logits against exact "
            "Bayes.",
            (1, 3, 7, 9),
            ("optax",),
        ),
        "markov_transformer": ExperimentSpec(
            "markov_transformer",
            "Token streams, tier B: a trained transformer's in-context learning of "
            "Markov chains.",
            (1, 7, 9),
            ("flax", "optax"),
        ),
        "markov_adapter": ExperimentSpec(
            "markov_adapter",
            "Token streams, tier C: filtering an adapter of the trained network under "
            "a shift.",
            (5, 7, 9),
            ("flax", "optax"),
        ),
        "whole_network": ExperimentSpec(
            "whole_network",
            "Filtering every weight vs a small adapter vs fine-tuning, under a shift.",
            (7, 9),
            ("flax", "optax"),
        ),
    }
)
