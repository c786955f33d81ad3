"""The shared figure style (experiments._plot) and the figures drawn with it."""

import matplotlib.legend
import matplotlib.ticker
import numpy as np
import pytest

from kalmanjax.experiments import (
    ExperimentResult,
    _plot,
    collapse,
    degenerate_limits,
    finetune,
    transformer_finetune,
)

plt = _plot.pyplot()  # a file backend


@pytest.fixture
def kept(monkeypatch):
    """The figures ``save`` closes, kept open to be inspected."""
    figs = []
    monkeypatch.setattr(plt, "close", figs.append)
    yield figs
    monkeypatch.undo()
    for fig in figs:
        plt.close(fig)


def _is_colorbar(ax):
    return getattr(ax, "_colorbar", None) is not None


def _legend_sizes(fig):
    legends = fig.findobj(matplotlib.legend.Legend)
    return [t.get_fontsize() for leg in legends for t in leg.get_texts()]


def _letters(fig):
    panels = [ax for ax in fig.axes if ax.axison and not _is_colorbar(ax)]
    panels.sort(key=lambda a: (-round(a.get_position().y1, 2), a.get_position().x0))
    return [ax.get_title(loc="left")[:3] for ax in panels]


# ---------------------------------------------------------------- the helpers


def test_style_sizes_and_save(tmp_path, kept):
    before = dict(plt.rcParams)
    with _plot.style():
        fig, axes = _plot.subplots(1, 2)
        for ax in axes:
            ax.plot([0.0, 1.0], [0.0, 1.0], label="a line")
            ax.legend()
        assert plt.rcParams["legend.fontsize"] >= _plot.MIN_FONT
        _plot.save(fig, tmp_path / "f.png")
    assert dict(plt.rcParams) == before  # the style is scoped to the block
    png = plt.imread(tmp_path / "f.png")
    assert png.shape[1] == round(_plot.WIDTH * _plot.DPI)
    assert kept == [fig]
    assert min(_legend_sizes(fig)) >= _plot.MIN_FONT


def test_panel_letters_in_order():
    with _plot.style():
        fig, axes = _plot.subplots(2, 2)
        for ax, title in zip(axes, "wxyz", strict=True):
            ax.set_title(title)
        _plot.panel_letters(axes)
        assert [ax.get_title(loc="left") for ax in axes] == [
            "(a) w",
            "(b) x",
            "(c) y",
            "(d) z",
        ]
        assert all(ax.get_title(loc="center") == "" for ax in axes)
        plt.close(fig)


def test_integer_ticks_on_a_count_axis():
    with _plot.style():
        fig, (lin, log) = _plot.subplots(1, 2)
        lin.plot([1, 2, 3], [0.0, 1.0, 0.5])  # default ticks: 1, 1.25, 1.5, ...
        log.loglog([20, 40, 80, 320], [1.0, 0.5, 0.3, 0.1])
        for ax in (lin, log):
            _plot.integer_ticks(ax, "x")
        fig.canvas.draw()
        for ax in (lin, log):
            lo, hi = ax.get_xlim()
            ticks = [v for v in ax.get_xticks() if lo <= v <= hi]
            assert len(ticks) >= 2
            assert all(float(v).is_integer() for v in ticks), ticks
        # plain numbers on the log axis, minor ticks unlabelled
        shown = [t.get_text() for t in log.get_xticklabels() if t.get_text()]
        assert shown and all(s.isdigit() for s in shown), shown
        plt.close(fig)


def test_audit_flags_what_a_reviewer_rejects():
    with _plot.style():
        fig, axes = _plot.subplots(1, 2)
        axes[0].plot([1.0, 2.5], [0.0, 1.0], label="x")
        axes[0].legend(fontsize=5)
        axes[0].set_title("(b) second")
        axes[1].set_title("(a) first")
        axes[1].set_xlabel("tokens")
        _plot.integer_ticks(axes[0], "x")  # a count axis, then non-integer ticks:
        axes[0].xaxis.set_major_locator(matplotlib.ticker.AutoLocator())
        problems = _plot.audit(fig)
        plt.close(fig)
    assert any("no x label" in p for p in problems)
    assert any("no y label" in p for p in problems)
    assert any("at 5 pt" in p for p in problems)
    assert any("expected (a)" in p for p in problems)
    assert any("non-integer x ticks" in p for p in problems)


# ------------------------------------------------- figures drawn with the style


def _check(fig, count_axes=()):
    """Every axis labelled, legends >= 8 pt, letters in order, integer counts."""
    assert _plot.audit(fig) == []
    for ax in fig.axes:
        if ax.axison and not _is_colorbar(ax):
            assert ax.get_xlabel() and ax.get_ylabel(), ax.get_title(loc="left")
    assert min(_legend_sizes(fig)) >= 8
    letters = _letters(fig)
    if len(letters) > 1:
        assert letters == [f"({c})" for c in "abcdefgh"[: len(letters)]]
    for ax in count_axes:
        lo, hi = ax.get_xlim()
        ticks = [v for v in ax.get_xticks() if lo <= v <= hi]
        assert ticks and all(float(v).is_integer() for v in ticks), ticks
    assert fig.get_size_inches()[0] <= _plot.WIDTH + 1e-9


def _result(name, **data):
    return ExperimentResult(name=name, data=data, claims=[])


def test_collapse_figure(tmp_path, kept):
    t = np.arange(1, 41)
    dim, r = 4, 0.1
    eig = np.sort(np.minimum(1.0, r * np.outer(1 / t, [1.0, 2.0, 3.0, 4.0])), axis=1)
    res = _result(
        "collapse",
        t=t,
        trace=eig.sum(1),
        logdet=np.log(eig).sum(1),
        mse=1.1 * eig.sum(1),
        eigenvalues=eig,
        dim=dim,
        noise_var=r,
    )
    collapse.plot(res, tmp_path / "c.png")
    (fig,) = kept
    _check(fig, count_axes=[fig.axes[1]])  # (b): a linear token axis
    # the eigenvalue lines are named in a legend
    labels = fig.axes[1].get_legend_handles_labels()[1]
    assert any("largest" in s for s in labels) and any("smallest" in s for s in labels)


def test_limits_figure_is_a_grid(tmp_path, kept):
    path = np.geomspace(1e-2, 1e-5, 4)
    gap = dict(path=path, gap=path**2, relative_gap=path, parameter=path)
    res = _result(
        "limits",
        gd=gap,
        projection=dict(gap, spectrum=np.outer(path, np.ones(6)) + [0, 0, 0, 0, 1, 1]),
        ngd_frozen=gap,
        collapsed=4,
        meta=[
            dict(
                tasks=n, error=n**-0.5, oracle_error=n**-0.5, expected_sampling_error=1
            )
            for n in (16, 64, 256)
        ],
    )
    degenerate_limits.plot(res, tmp_path / "l.png")
    (fig,) = kept
    _check(fig)
    height, width = plt.imread(tmp_path / "l.png").shape[:2]
    assert width / height < 2  # a grid, not a strip of five panels
    assert _letters(fig) == ["(a)", "(b)", "(c)", "(d)", "(e)"]


def test_finetune_figure_uses_plain_names(tmp_path, kept):
    T, rates = 32, np.geomspace(1e-3, 0.5, 5)
    t = np.arange(1, T + 1)
    curve = 4.0 / t
    keys = [
        "filter_oracle",
        "filter_learned",
        "filter_misspecified",
        "sgd",
        "sgd_1/t",
        "polyak",
        "adam",
        "ridge_refit",
        "least_squares_refit",
    ]
    res = _result(
        "finetune",
        t=t,
        level=0.2,
        mse={k: curve * (1 + i / 4) for i, k in enumerate(keys)},
        tokens={k: 20.0 for k in keys},
        grid_mse={k: np.outer(1 + rates, curve) for k in ("sgd", "polyak", "adam")},
        grid_rates={k: rates for k in ("sgd", "polyak", "adam")},
        num_tokens=T,
    )
    finetune.plot(res, tmp_path / "f.png")
    (fig,) = kept
    _check(fig, count_axes=fig.axes[:2])
    labels = [t.get_text() for leg in fig.legends for t in leg.get_texts()]
    assert "learned filter" in labels and "SGD, 1/t rate" in labels
    assert not any("_" in s for s in labels)


def test_transformer_finetune_letters(tmp_path, kept):
    tokens = np.array([20, 40, 80, 160])
    methods = ["learned", "isotropic", "given", "misspecified", "sgd", "sgd_1/t"]
    methods += ["polyak", "adam", "refit", "sgd x3"]
    gap = {k: np.linspace(-0.2, 0.4, 4) for k in methods}
    within = dict(ekf=np.linspace(1.0, 0.8, 12), best=np.ones(12))
    res = _result(
        "transformer_finetune",
        seeds=2,
        num_pairs=12,
        across=dict(
            gap=gap, tokens={k: tokens for k in methods}, trace=np.geomspace(1, 0.1, 8)
        ),
        within=dict(shifted=within, control=within),
    )
    transformer_finetune.plot(res, tmp_path / "t.png")
    (fig,) = kept
    _check(fig, count_axes=[fig.axes[2]])  # (c): positions in the prompt
    assert _letters(fig) == ["(a)", "(b)", "(c)"]
