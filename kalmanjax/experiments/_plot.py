"""Matplotlib set-up shared by the experiments' ``plot`` functions."""

from __future__ import annotations


def pyplot():
    """Return ``matplotlib.pyplot``, with a file backend unless one is already set."""
    import matplotlib

    if matplotlib.get_backend().lower() not in ("agg", "pdf", "svg", "png"):
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
