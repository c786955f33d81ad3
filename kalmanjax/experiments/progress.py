"""Progress inside an experiment: shown by the command line, silent elsewhere.

An experiment marks its long loops with :func:`track` and its stages with
:func:`stages`; both do nothing unless a caller installed a bar factory with
:func:`reporting` (``python -m kalmanjax`` does, with tqdm), so ``run(quick, seed)``
stays a pure computation when called from code or tests.

Examples:
    >>> from kalmanjax.experiments import progress
    >>> [x for x in progress.track(range(3), "silent")]  # no reporter: a no-op
    [0, 1, 2]
    >>> class Bar:
    ...     def __init__(self, desc, total):
    ...         self.n = 0
    ...         print("start", desc, total)
    ...     def update(self, n=1):
    ...         self.n += n
    ...     def set_postfix_str(self, s):
    ...         print("at", s)
    ...     def close(self):
    ...         print("done", self.n)
    >>> with progress.reporting(Bar):
    ...     total = sum(progress.track([1, 2, 3], "sum"))
    start sum 3
    done 3
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Protocol, TypeVar

__all__ = ["Bar", "reporting", "stages", "track"]

T = TypeVar("T")


class Bar(Protocol):
    """What a progress bar needs (a ``tqdm`` bar is one)."""

    def update(self, n: int = 1) -> Any: ...  # noqa: D102
    def set_postfix_str(self, s: str) -> Any: ...  # noqa: D102
    def close(self) -> Any: ...  # noqa: D102


#: ``factory(desc, total) -> Bar``, or None: no progress is shown
_FACTORY: ContextVar[Callable[[str, int | None], Bar] | None] = ContextVar(
    "kalmanjax_experimentprogress", default=None
)


@contextmanager
def reporting(factory: Callable[[str, int | None], Bar]) -> Iterator[None]:
    """Show the progress of the experiments run inside this block with ``factory``."""
    token = _FACTORY.set(factory)
    try:
        yield
    finally:
        _FACTORY.reset(token)


def track(items: Iterable[T], desc: str, total: int | None = None) -> Iterator[T]:
    """Yield ``items``, advancing a bar named ``desc`` after each (if reporting)."""
    factory = _FACTORY.get()
    if factory is None:
        yield from items
        return
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    bar = factory(desc, total)
    try:
        for item in items:
            yield item
            bar.update(1)
    finally:
        bar.close()


@contextmanager
def stages(desc: str, names: tuple[str, ...]) -> Iterator[Callable[[str], None]]:
    """A bar over an experiment's named stages; call the yielded ``begin(name)``.

    ``begin(name)`` marks the previous stage done and shows ``name``; the block's
    end marks the last one done. Each name must be one of ``names``.
    """
    factory = _FACTORY.get()
    bar = None if factory is None else factory(desc, len(names))
    started = []

    def begin(name: str) -> None:
        if name not in names:
            raise ValueError(f"unknown stage {name!r}; expected one of {names}")
        if bar is not None:
            if started:
                bar.update(1)
            bar.set_postfix_str(name)
        started.append(name)

    try:
        yield begin
        if bar is not None and started:
            bar.update(1)
    finally:
        if bar is not None:
            bar.close()
