"""The main job end to end in smoke mode, and its error messages."""

import json
import subprocess
import sys

import numpy as np
import pytest

from kalmanjax import cli
from kalmanjax.experiments import EXPERIMENTS, collapse
from tests.reference import ridge

assert EXPERIMENTS  # an empty table must fail, not pass vacuously


# every experiment at smoke size in one process: 6.5 min alone on 2 cores before
# issue 19; 353 s in CI (fbb5c7b) beside the other test worker
@pytest.mark.timeout(1260)
def test_quick_run_writes_every_figure_and_verdict(tmp_path):
    env = {"MPLBACKEND": "Agg", "JAX_PLATFORMS": "cpu"}
    proc = subprocess.run(
        [sys.executable, "-m", "kalmanjax", "--quick", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=1200,
        env={**__import__("os").environ, **env},
    )
    assert proc.returncode == 0, proc.stderr
    for name in EXPERIMENTS:
        assert (tmp_path / f"{name}.png").stat().st_size > 10_000
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["schema_version"] == cli.SCHEMA_VERSION
    assert list(data["experiments"]) == list(EXPERIMENTS)
    rows = [c for e in data["experiments"].values() for c in e["claims"]]
    for name, entry in data["experiments"].items():
        assert entry["metadata"]["quick"] is True and entry["time_s"] > 0
        assert json.loads((tmp_path / f"{name}.json").read_text()) == entry
    # the terminal gets a line per experiment, not the table
    assert "| --- |" not in proc.stdout
    for name in EXPERIMENTS:
        assert f"\n{name} (" in "\n" + proc.stdout
    for r in rows:
        assert r["verdict"] in ("holds", "fails") or r["verdict"].startswith(
            ("holds only", "fails (", "inconclusive")
        )
        assert r["measured"] and r["settings"]
    md = (tmp_path / "results.md").read_text()
    assert md.count("\n| ") == len(rows) + 2  # header, separator, one row a claim


def test_unknown_experiment_is_a_clear_error(capsys):
    with pytest.raises(SystemExit) as err:
        cli.main(["nonsense"])
    assert err.value.code == 2
    assert "unknown experiment(s) nonsense; choose from" in capsys.readouterr().err


def test_list(capsys):
    assert cli.main(["--list"]) == 0
    assert "collapse:" in capsys.readouterr().out


def test_collapse_filter_is_bayesian_ridge():
    # the experiment's filter, checked against the closed form on one task
    rng = np.random.default_rng(0)
    import jax.numpy as jnp

    import kalmanjax as kj

    X = rng.normal(size=(12, 4)).astype(np.float32)
    y = (X @ rng.normal(size=4) + 0.3 * rng.normal(size=12)).astype(np.float32)
    filt = kj.regression_filter(4, 0.1)
    prior = kj.Gaussian(mean=jnp.zeros(4), cov=jnp.eye(4))
    out = kj.run(filt, prior, {"obs": jnp.asarray(y)[:, None], "x": jnp.asarray(X)})
    means, covs = ridge.posterior_path(X.astype(float), y.astype(float), 0.1, np.eye(4))
    np.testing.assert_allclose(out.states.mean, means, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out.states.cov, covs, rtol=1e-4, atol=1e-6)


def test_collapse_claims_on_smoke_sizes():
    res = collapse.run(quick=True)
    verdicts = {c.claim.split(":")[0]: c.verdict for c in res.claims}
    assert all(v == "holds" for v in verdicts.values()), verdicts
    t = res.data["t"]
    # 1/t tail against the closed form for E[tr Sigma_t] at large t: d r / t
    np.testing.assert_allclose(
        t[-1] * res.data["trace"][-1], res.data["dim"] * res.data["noise_var"], rtol=0.2
    )


def test_a_partial_run_updates_the_merged_results(tmp_path, capsys):
    """Running one experiment replaces its entry and keeps the others'."""
    other = {
        "metadata": {"quick": False, "seed": 3},
        "time_s": 12.0,
        "claims": [
            {"claim": "c", "verdict": "holds", "measured": {"v": 1.0}, "settings": {}}
        ],
    }
    stale = {"metadata": {"quick": False}, "time_s": 1.0, "claims": []}
    (tmp_path / "results.json").write_text(
        json.dumps(
            {
                "schema_version": cli.SCHEMA_VERSION,
                "experiments": {"precedes": other, "collapse": stale},
            }
        )
    )
    assert cli.main(["collapse", "--quick", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "results.json").read_text())
    assert list(data["experiments"]) == ["collapse", "precedes"]  # registry order
    assert data["experiments"]["precedes"] == other
    fresh = data["experiments"]["collapse"]
    assert fresh["claims"] and fresh["metadata"]["quick"] is True
    meta = fresh["metadata"]
    assert meta["seed"] == 0 and meta["packages"]["jax"] and meta["date"]
    md = (tmp_path / "results.md").read_text()
    assert md.count("\n| ") == 2 + len(fresh["claims"]) + 1
    assert "| quick |" in md and "| default |" in md
    printed = capsys.readouterr().out
    assert "collapse (" in printed and "kept the entries of 1 experiments" in printed
    # an older or unreadable results.json is replaced, not merged
    (tmp_path / "results.json").write_text("[1, 2]")
    assert cli.main(["collapse", "--quick", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "results.json").read_text())
    assert list(data["experiments"]) == ["collapse"]


def test_registry_lists_every_module_with_its_docstring():
    # the lazy registry's one-line descriptions are the modules' first doc lines
    import importlib

    for name in EXPERIMENTS:
        module = importlib.import_module(EXPERIMENTS.module_name(name))
        assert EXPERIMENTS[name] is module
        assert module.NAME == name
        assert EXPERIMENTS.describe(name) == module.__doc__.strip().splitlines()[0]
    assert "limits" in EXPERIMENTS and "nonsense" not in EXPERIMENTS
    with pytest.raises(KeyError):
        EXPERIMENTS["nonsense"]


# ------------------------------------------------ the base install (jax only)

# flax, optax, matplotlib and tqdm made unimportable, then ``python -m kalmanjax``
BASE_INSTALL = (
    "import runpy, sys\n"
    "for m in ('flax', 'optax', 'matplotlib', 'tqdm'):\n"
    "    sys.modules[m] = None\n"
    "runpy.run_module('kalmanjax', run_name='__main__', alter_sys=True)\n"
)
EXTRA = "pip install 'kalmanjax[experiments]'"


def _base_install(*args, prelude=BASE_INSTALL, cwd=None):
    env = {**__import__("os").environ, "JAX_PLATFORMS": "cpu"}
    return subprocess.run(
        [sys.executable, "-c", prelude, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=cwd,
    )


def test_help_and_list_need_only_the_base_install():
    proc = _base_install("--help")
    assert proc.returncode == 0, proc.stderr
    assert "usage: kalmanjax" in proc.stdout
    assert "collapse" in proc.stdout and "transformer_finetune" in proc.stdout
    proc = _base_install("--list")
    assert proc.returncode == 0, proc.stderr
    listed = [line.split(":")[0] for line in proc.stdout.splitlines()]
    assert listed == list(EXPERIMENTS)
    assert "limits: Degenerate limits of the filter" in proc.stdout


def test_list_imports_no_experiment():
    prelude = (
        "import sys\n"
        "from kalmanjax.cli import main\n"
        "assert main(['--list']) == 0\n"
        "heavy = ('flax', 'optax', 'matplotlib', 'tqdm')\n"
        "print('LOADED', sorted(m for m in sys.modules\n"
        "    if m.startswith('kalmanjax.experiments.') or m.split('.')[0] in heavy))\n"
    )
    proc = _base_install(prelude=prelude)
    assert proc.returncode == 0, proc.stderr
    loaded = "['kalmanjax.experiments._result', 'kalmanjax.experiments.progress']"
    assert "LOADED " + loaded in proc.stdout


@pytest.mark.parametrize(
    "name, missing",
    [
        ("collapse", "matplotlib"),
        ("finetune", "optax"),
        ("limits", "optax"),
        ("transformer_icl", "flax"),
    ],
)
def test_a_missing_extra_is_a_one_line_error(name, missing, tmp_path):
    out = tmp_path / "figures"
    proc = _base_install(name, "--quick", "--out", str(out))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("kalmanjax: error: ")
    assert f"needs {missing}, which is not installed" in lines[0]
    assert EXTRA in lines[0]
    assert not out.exists()  # checked before anything ran or was written


def test_markdown_escapes_the_column_separator():
    from kalmanjax.experiments import Claim, ExperimentResult

    claim = Claim(
        claim="|x| < 1", verdict="holds", measured={"v": 1.0}, settings={"s": "a|b"}
    )
    entry = cli._entry(
        ExperimentResult(name="e", data={}, claims=[claim]), {"quick": False}, 1.0
    )
    row = cli._markdown({"e": entry}).splitlines()[2]
    assert row.count("|") - row.count("\\|") == 7  # the cell borders only
    assert "\\|x\\| < 1" in row and "a\\|b" in row


# ------------------------------------------------ progress inside an experiment


class _RecordingBar:
    made: list = []

    def __init__(self, desc, total):
        self.desc, self.total, self.n, self.labels, self.closed = desc, total, 0, [], 0
        _RecordingBar.made.append(self)

    def update(self, n=1):
        self.n += n

    def set_postfix_str(self, s):
        self.labels.append(s)

    def close(self):
        self.closed += 1


def testprogress_reports_loops_and_stages_only_when_asked():
    from kalmanjax.experiments import progress

    _RecordingBar.made = []
    assert list(progress.track(iter("abc"), "quiet")) == ["a", "b", "c"]
    with progress.stages("quiet", ("one",)) as begin:
        begin("one")
    assert _RecordingBar.made == []  # no reporter: nothing is made
    with progress.reporting(_RecordingBar):
        assert list(progress.track([1, 2, 3], "loop")) == [1, 2, 3]
        with progress.stages("parts", ("a", "b", "c")) as begin:
            begin("a")
            begin("b")
            begin("c")
        with pytest.raises(ValueError, match="unknown stage 'd'"):
            with progress.stages("parts", ("a",)) as begin:
                begin("d")
    loop, parts, bad = _RecordingBar.made
    assert (loop.desc, loop.total, loop.n, loop.closed) == ("loop", 3, 3, 1)
    assert (parts.total, parts.n, parts.labels, parts.closed) == (3, 3, list("abc"), 1)
    assert bad.closed == 1  # closed even when the block raises


def test_the_command_line_showsprogress_inside_an_experiment(tmp_path, capsys):
    from kalmanjax.experiments import progress

    class Fake:
        @staticmethod
        def run(quick, seed):
            for _ in progress.track(range(4), "fake loop"):
                pass
            return collapse.run(quick=True, seed=seed)

        plot = staticmethod(collapse.plot)

    original = EXPERIMENTS.load
    EXPERIMENTS.load = lambda names, plot=True: {n: Fake for n in names}
    try:
        assert cli.main(["collapse", "--quick", "--out", str(tmp_path)]) == 0
        first = capsys.readouterr().err
        # a second run knows each experiment's time: the bar counts seconds
        assert cli.main(["collapse", "--quick", "--out", str(tmp_path)]) == 0
        second = capsys.readouterr().err
    finally:
        EXPERIMENTS.load = original
    assert "fake loop" in first and "/4 " in first  # its own bar, of 4 steps
    assert "experiments" in first and "run:" not in first
    assert "run:" in second and "fake loop" in second


def test_expected_times_need_every_experiment_in_the_same_mode():
    entry = {"metadata": {"quick": True}, "time_s": 5.0, "claims": []}
    previous = {"collapse": entry, "precedes": {**entry, "time_s": 7.0}}
    got = cli._expected_times(previous, ["collapse", "precedes"], quick=True)
    assert got == {"collapse": 5.0, "precedes": 7.0}
    assert cli._expected_times(previous, ["collapse", "limits"], quick=True) is None
    assert cli._expected_times(previous, ["collapse"], quick=False) is None
