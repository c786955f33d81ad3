"""Matplotlib set-up shared by the experiments' ``plot`` functions.

One style for every figure, sized for a two-column paper at its printed size:
:data:`WIDTH` = 7 in across both columns (:data:`COLUMN` = 3.4 in for one),
saved at :data:`DPI` = 200 (1400 px across), fonts of 8 pt (titles 9 pt) and
never below :data:`MIN_FONT`, constrained layout, titles on the left after the
panel letter. Use::

    with style():
        fig, axes = subplots(1, 3)
        ...  # draw; label every axis; short titles
        integer_ticks(axes[0], "x")  # an axis that counts (tokens, steps)
        headroom(axes[1])  # free the top for a legend
        panel_letters(axes)  # (a), (b), ... in reading order
        save(fig, path)

:func:`legend_panel` turns a spare grid cell into a legend, :func:`in_words`
names methods in words, and :func:`audit` lists what a reviewer would reject in
a figure (an unlabelled axis, text under 8 pt, letters out of order, overlaps).
"""

from __future__ import annotations

import contextlib
import itertools
import string
import weakref
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.typing import RcKeyType

#: a figure across both columns of the page (inches)
WIDTH = 7.0
#: a figure in one column (inches)
COLUMN = 3.4
#: resolution of the saved PNGs (dots per inch)
DPI = 200
#: the smallest font (points) any text of a figure may have
MIN_FONT = 8.0

#: the rcParams of every figure
STYLE: dict[RcKeyType, Any] = {
    "font.size": 8,
    "axes.titlesize": 9,
    "axes.titlelocation": "left",
    "axes.labelsize": 8,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 8,
    "legend.title_fontsize": 8,
    "legend.framealpha": 0.85,
    "legend.borderpad": 0.3,
    "legend.labelspacing": 0.25,
    "legend.handlelength": 1.8,
    "legend.handletextpad": 0.5,
    "legend.columnspacing": 1.0,
    "lines.linewidth": 1.2,
    "lines.markersize": 3.5,
    "axes.linewidth": 0.6,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "xtick.major.width": 0.6,
    "ytick.major.width": 0.6,
    "figure.dpi": DPI,
    "savefig.dpi": DPI,
    "figure.constrained_layout.use": True,
    "mathtext.fontset": "dejavusans",
}

#: the code names of methods and cases, in words (see :func:`in_words`)
WORDS = {
    "ekf": "EKF",
    "iekf": "iterated EKF",
    "ekf_probit": "EKF, probit",
    "map_refit": "MAP refit",
    "refit": "ridge refit",
    "sgd": "SGD",
    "sgd_1/t": "SGD, 1/t rate",
    "sgd_1/n": "SGD, 1/n rate",
    "sgd_1/s": "SGD, 1/s rate",
    "polyak": "Polyak average",
    "adam": "Adam",
    "adam_5_passes": "Adam, 5 passes",
    "network": "transformer",
    "best_fine_tuning": "best fine-tuning",
    "head": "head adapter",
    "block1": "block-1 adapter",
    "ekf_q0": "EKF, $Q = 0$",
    "ekf_q": "EKF, tuned $Q$",
}


def in_words(key: str) -> str:
    """A method's code name in words (``sgd_1/t`` -> ``SGD, 1/t rate``)."""
    return WORDS.get(key, key.replace("_", " "))


#: the axes (x or y) that count something: their ticks must be integers
_INTEGER: weakref.WeakSet[Any] = weakref.WeakSet()


def pyplot():
    """Return ``matplotlib.pyplot``, with a file backend unless one is already set."""
    import matplotlib

    if matplotlib.get_backend().lower() not in ("agg", "pdf", "svg", "png"):
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


@contextlib.contextmanager
def style() -> Iterator[None]:
    """Apply :data:`STYLE` inside the ``with`` block (draw and save inside it)."""
    with pyplot().rc_context(STYLE):
        yield


def subplots(nrows: int = 1, ncols: int = 1, width: float = WIDTH, height=None, **kw):
    """A figure ``width`` in wide and its axes, flat in reading order.

    ``height`` defaults to 2.3 in per row; ``kw`` goes to ``plt.subplots``
    (``width_ratios=...``). Call inside :func:`style`.

    Returns:
        ``(fig, axes)`` with ``axes`` a 1-D array of ``nrows * ncols`` axes.
    """
    plt = pyplot()
    height = 2.3 * nrows if height is None else height
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, height), squeeze=False, **kw)
    return fig, axes.ravel()


def panel_letters(axes: Iterable[Any]) -> None:
    """Put ``(a)``, ``(b)``, ... in front of the titles of ``axes``, in that order."""
    for letter, ax in zip(string.ascii_lowercase, axes, strict=False):
        title = " ".join(ax.get_title(loc=k) for k in ("left", "center")).strip()
        ax.set_title("", loc="center")
        ax.set_title(f"({letter}) {title}".rstrip(), loc="left")


def integer_ticks(ax, axis: str = "x") -> None:
    """Integer ticks on an axis that counts (tokens, steps); plain numbers if log.

    Call after the data are drawn (a log axis picks its ticks from its range).
    """
    from matplotlib import ticker

    target = ax.xaxis if axis == "x" else ax.yaxis
    _INTEGER.add(target)
    if target.get_scale() != "log":
        target.set_major_locator(ticker.MaxNLocator(integer=True))
        return
    lo, hi = sorted(ax.get_xlim() if axis == "x" else ax.get_ylim())
    decades = np.log10(hi / max(lo, 1e-300))
    base = getattr(target.get_transform(), "base", 10.0)
    if base == 10.0 and decades < 1.6:  # short: ticks at 1, 2, 5 (or 1..9) x 10^k
        subs = (1.0, 2.0, 5.0) if decades > 0.8 else tuple(map(float, range(1, 10)))
        target.set_major_locator(ticker.LogLocator(10.0, subs=subs))
    target.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    target.set_minor_formatter(ticker.NullFormatter())


def headroom(ax, fraction: float = 0.3) -> None:
    """Raise the y-axis' top so that its upper ``fraction`` is free (for a legend)."""
    scale = ax.yaxis.get_transform()  # linear, log or symlog: free in its own units
    lo, hi = scale.transform(np.array(ax.get_ylim()))
    top = scale.inverted().transform(
        np.array([hi + (hi - lo) * fraction / (1 - fraction)])
    )
    ax.set_ylim(ax.get_ylim()[0], float(top[0]))


def legend_panel(ax, handles: list, labels: list[str], **kw) -> None:
    """Turn ``ax`` into a legend of ``handles`` (no axes); see collect_handles."""
    ax.axis("off")
    ax.legend(handles, labels, loc="center", frameon=False, **kw)


def collect_handles(sources: Iterable[Any]) -> tuple[list, list[str]]:
    """The legend handles and labels of ``sources`` (axes), each label once."""
    seen: dict[str, Any] = {}
    for ax in sources:
        for h, label in zip(*ax.get_legend_handles_labels(), strict=True):
            seen.setdefault(label, h)
    return list(seen.values()), list(seen)


def save(fig, path: str | Path) -> None:
    """Save ``fig`` at :data:`DPI` and close it."""
    fig.savefig(path, dpi=DPI)
    pyplot().close(fig)


def _texts(fig) -> list[Any]:
    """Every text ``fig`` shows: ticks, labels, titles, legends, annotations."""
    from matplotlib.legend import Legend

    texts = list(fig.texts)
    for legend in fig.findobj(Legend):
        texts += [*legend.get_texts(), legend.get_title()]
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        texts += [ax.title, ax._left_title, ax._right_title, *ax.texts]
        if ax.axison:
            for axis in (ax.xaxis, ax.yaxis):
                texts += [axis.label, axis.get_offset_text()]
                texts += _tick_labels(axis)
    return [t for t in texts if t.get_visible() and t.get_text().strip()]


def _tick_labels(axis) -> list[Any]:
    """The tick labels ``axis`` draws: those of its ticks inside the view."""
    lo, hi = sorted(axis.get_view_interval())
    ticks = axis.get_major_ticks() + axis.get_minor_ticks()
    ticks = [t for t in ticks if lo <= t.get_loc() <= hi]
    labels = [label for t in ticks for label in (t.label1, t.label2)]
    return [t for t in labels if t.get_visible() and t.get_text().strip()]


def _overlap(a, b, pad: float = 0.0) -> bool:
    """Whether boxes ``a`` and ``b`` overlap by more than ``pad`` pixels."""
    return bool(
        a.x0 < b.x1 - pad
        and b.x0 < a.x1 - pad
        and a.y0 < b.y1 - pad
        and b.y0 < a.y1 - pad
    )


def _inside(box, frame) -> bool:
    """Whether ``box`` lies inside ``frame``."""
    return bool(
        frame.x0 <= box.x0
        and box.x1 <= frame.x1
        and frame.y0 <= box.y0
        and box.y1 <= frame.y1
    )


def audit(fig) -> list[str]:
    """What a reviewer would reject in ``fig``, one line each (empty: none).

    Every shown axes has x and y labels (a colorbar: its long one); no text is
    under :data:`MIN_FONT` or outside the figure; several panels have titles
    ``(a)``, ``(b)``, ... in reading order; tick labels of an axis, titles, and
    the legends of an axes do not overlap; a legend stays inside its axes and
    off its tick and axis labels; axes marked by :func:`integer_ticks` show
    integer ticks only.
    """
    from matplotlib.legend import Legend

    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    problems = []
    shown = [ax for ax in fig.axes if ax.get_visible() and ax.axison]
    bars = {ax: ax._colorbar for ax in shown if getattr(ax, "_colorbar", None)}
    for i, ax in enumerate(shown):
        name = f"axes {i} {ax.get_title(loc='left')!r}"
        for which, axis in (("x", ax.xaxis), ("y", ax.yaxis)):
            long = "y" if ax in bars and bars[ax].orientation == "vertical" else "x"
            if (ax not in bars or which == long) and not axis.get_label_text():
                problems.append(f"{name}: no {which} label")
            boxes = sorted(
                (t.get_window_extent(renderer) for t in _tick_labels(axis)),
                key=lambda b: b.x0 if which == "x" else b.y0,
            )
            if any(_overlap(a, b, 0.5) for a, b in itertools.pairwise(boxes)):
                problems.append(f"{name}: {which} tick labels overlap")
            if axis in _INTEGER:
                lo, hi = sorted(axis.get_view_interval())
                ticks = [v for v in axis.get_majorticklocs() if lo <= v <= hi]
                if any(abs(v - round(v)) > 1e-9 for v in ticks):
                    problems.append(f"{name}: non-integer {which} ticks {ticks}")
        marks = [ax.xaxis.label, ax.yaxis.label]
        marks += _tick_labels(ax.xaxis) + _tick_labels(ax.yaxis)
        marks = [t.get_window_extent(renderer) for t in marks if t.get_text()]
        legends = [c for c in ax.get_children() if isinstance(c, Legend)]
        boxes = [legend.get_window_extent(renderer) for legend in legends]
        frame = ax.get_window_extent(renderer).padded(2)
        if any(_overlap(box, m) for box in boxes for m in marks):
            problems.append(f"{name}: a legend covers tick or axis labels")
        if any(_overlap(a, b) for a, b in itertools.combinations(boxes, 2)):
            problems.append(f"{name}: legends overlap")
        if any(not _inside(box, frame) for box in boxes):
            problems.append(f"{name}: a legend sticks out of its axes")
    panels = [ax for ax in shown if ax not in bars]
    if len(panels) > 1:
        order = sorted(
            panels,
            key=lambda ax: (-round(ax.get_position().y1, 2), ax.get_position().x0),
        )
        for letter, ax in zip(string.ascii_lowercase, order, strict=False):
            title = ax.get_title(loc="left")
            if not title.startswith(f"({letter}) "):
                problems.append(f"panel {title!r}: expected ({letter}) first")
    page = fig.bbox.padded(1)
    for t in _texts(fig):
        if t.get_fontsize() < MIN_FONT:
            problems.append(f"text {t.get_text()!r} at {t.get_fontsize():g} pt")
        if not _inside(t.get_window_extent(renderer), page):
            problems.append(f"text {t.get_text()!r} extends outside the figure")
    titles = [ax._left_title for ax in shown if ax.get_title(loc="left")]
    for a, b in itertools.combinations(titles, 2):
        if _overlap(a.get_window_extent(renderer), b.get_window_extent(renderer)):
            problems.append(f"titles {a.get_text()!r} and {b.get_text()!r} overlap")
    return problems
