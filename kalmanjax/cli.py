"""The main job: reproduce the experiments' figures and verdict table.

Usage::

    python -m kalmanjax                 # every experiment, default sizes
    python -m kalmanjax --quick         # smoke sizes (~6 min on 2 cores)
    python -m kalmanjax collapse        # one experiment
    python -m kalmanjax --list          # what exists, and the claims each tests

Writes ``<out>/<name>.png`` and ``<out>/<name>.json`` per experiment (its claims,
the run's metadata and time), and merges them into ``<out>/results.json`` and
``<out>/results.md`` (one row per claim: verdict, numbers, settings, mode): a run
of some experiments replaces their entries and keeps the others'. The terminal
gets one line per experiment; the full table is in ``results.md``.

``results.json`` is ``{"schema_version": 1, "experiments": {name: entry}}`` and
each entry (also ``<name>.json``) is ``{"metadata": {...}, "time_s": ...,
"claims": [{"claim", "verdict", "measured", "settings"}, ...]}`` with the
package versions, the git commit, the seed, ``quick`` and the date in
``metadata``.

``--help`` and ``--list`` work on the base install (jax only): the registry
imports an experiment's module only when it runs. Running one whose optional
dependencies (flax, optax, matplotlib) are missing exits with status 1 and a
one-line error naming the extra, ``pip install 'kalmanjax[experiments]'``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import subprocess
import sys
import time
from collections import Counter
from contextlib import nullcontext
from importlib import metadata
from pathlib import Path

from .experiments import EXPERIMENTS, MissingDependencyError, progress


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kalmanjax",
        description="Reproduce kalmanjax's figures and the verdict table.",
    )
    p.add_argument(
        "experiments",
        nargs="*",
        metavar="NAME",
        help=f"experiments to run (default: all of {', '.join(EXPERIMENTS)})",
    )
    p.add_argument(
        "--quick", action="store_true", help="smoke sizes (~6 min on 2 cores)"
    )
    p.add_argument("--out", default="figures", help="output folder (default: figures)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--list", action="store_true", help="list the experiments and exit")
    return p


def _format_numbers(measured: dict) -> str:
    def fmt(v):
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    return ", ".join(f"{k} = {fmt(v)}" for k, v in measured.items())


def _cell(text: str) -> str:
    """A markdown table cell: ``|`` escaped (it would end the cell), one line."""
    return text.replace("|", "\\|").replace("\n", " ")


#: the format of results.json
SCHEMA_VERSION = 1
#: the distributions whose versions a result records
PACKAGES = ("kalmanjax", "jax", "jaxlib", "flax", "optax", "numpy", "matplotlib")


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _git_commit() -> str | None:
    """The checkout's commit (``+dirty`` with local changes), None outside git."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


def _metadata(args) -> dict:
    return {
        "quick": bool(args.quick),
        "seed": args.seed,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "git_commit": _git_commit(),
        "python": platform.python_version(),
        "packages": {name: _version(name) for name in PACKAGES},
    }


def _entry(res, meta: dict, seconds: float) -> dict:
    claims = [
        {
            "claim": c.claim,
            "verdict": c.verdict,
            "measured": c.measured,
            "settings": c.settings,
        }
        for c in res.claims
    ]
    return {"metadata": meta, "time_s": round(seconds, 2), "claims": claims}


def _previous(path: Path) -> dict:
    """The experiments of an earlier ``results.json`` (empty if absent or older)."""
    try:
        data = json.loads(path.read_text())
        if isinstance(data, dict) and data.get("schema_version") == SCHEMA_VERSION:
            return dict(data["experiments"])
    except (OSError, ValueError, KeyError, TypeError):
        pass  # absent, unreadable or an older format: start afresh
    return {}


def _expected_times(previous: dict, names: list[str], quick: bool) -> dict | None:
    """Each experiment's time in the last run of the same mode, if all are known.

    The progress bar then advances by seconds, not by experiments, so that its ETA
    is not thrown off by one experiment that takes half the run.
    """
    times = {}
    for name in names:
        entry = previous.get(name, {})
        try:
            if bool(entry["metadata"]["quick"]) != quick:
                return None
            times[name] = max(float(entry["time_s"]), 0.1)
        except (KeyError, TypeError, ValueError):
            return None
    return times


def _merged(path: Path, entries: dict) -> dict:
    """``path``'s experiments with ``entries`` replacing theirs (registry order)."""
    old = _previous(path)
    both = {**old, **entries}
    order = [n for n in EXPERIMENTS if n in both] + [
        n for n in both if n not in EXPERIMENTS
    ]
    return {
        "schema_version": SCHEMA_VERSION,
        "experiments": {n: both[n] for n in order},
    }


def _markdown(experiments: dict) -> str:
    lines = [
        "| experiment | claim | verdict | measured | settings | mode |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, entry in experiments.items():
        mode = "quick" if entry["metadata"]["quick"] else "default"
        for c in entry["claims"]:
            settings = ", ".join(f"{k}={v}" for k, v in c["settings"].items())
            cells = (name, c["claim"], f"**{c['verdict']}**")
            cells += (_format_numbers(c["measured"]), settings, mode)
            lines.append("| " + " | ".join(_cell(x) for x in cells) + " |")
    return "\n".join(lines) + "\n"


def _summary(name: str, entry: dict) -> str:
    """One terminal line: the experiment, its time and its verdicts counted."""
    kinds = Counter(c["verdict"].split(" (")[0] for c in entry["claims"])
    counts = ", ".join(f"{n} {kind}" for kind, n in kinds.items())
    return f"{name} ({entry['time_s']:.0f} s): {counts}"


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.list:
        for name in EXPERIMENTS:
            claims = EXPERIMENTS.claims(name)
            label = "claim" if len(claims) == 1 else "claims"
            numbers = ", ".join(map(str, claims))
            print(f"{name}: {EXPERIMENTS.describe(name)} ({label} {numbers})")
        return 0
    names = args.experiments or list(EXPERIMENTS)
    unknown = [n for n in names if n not in EXPERIMENTS]
    if unknown:
        parser.error(
            f"unknown experiment(s) {', '.join(unknown)}; "
            f"choose from {', '.join(EXPERIMENTS)}"
        )
    try:  # every module and plotting dependency, before anything runs
        modules = EXPERIMENTS.load(names)
    except MissingDependencyError as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 1
    try:
        from tqdm import tqdm
    except ImportError:  # progress bars are optional
        tqdm = None
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        parser.error(f"cannot create the output folder {out}: {err}")

    meta = _metadata(args)
    entries = {}
    expected = _expected_times(_previous(out / "results.json"), names, args.quick)
    bar = None
    if tqdm is not None and expected is None:
        bar = tqdm(total=len(names), desc="experiments", unit="exp")
    elif tqdm is not None and expected is not None:  # seconds, from the last run
        fmt = "{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}{postfix}]"
        bar = tqdm(total=sum(expected.values()), desc="run", bar_format=fmt)

    open_bars: list = []  # nested bars (a loop inside a stage) get a line each

    def inner_bar(desc: str, total: int | None):
        assert tqdm is not None
        line = 1 + len(open_bars)
        inner = tqdm(total=total, desc=f"  {desc}", leave=False, position=line)
        open_bars.append(inner)
        close = inner.close

        def close_and_pop():
            if inner in open_bars:
                open_bars.remove(inner)
            close()

        inner.close = close_and_pop
        return inner

    for name in names:
        if bar is not None:
            bar.set_postfix_str(name)
        start = time.perf_counter()
        module = modules[name]
        with progress.reporting(inner_bar) if bar is not None else nullcontext():
            res = module.run(quick=args.quick, seed=args.seed)
        module.plot(res, out / f"{name}.png")
        entries[name] = _entry(res, meta, time.perf_counter() - start)
        (out / f"{name}.json").write_text(json.dumps(entries[name], indent=2) + "\n")
        msg = f"{name}: {entries[name]['time_s']:.1f} s -> {out / (name + '.png')}"
        (print if bar is None else bar.write)(msg)
        if bar is not None:
            bar.update(1 if expected is None else expected[name])
    if bar is not None:
        bar.close()

    merged = _merged(out / "results.json", entries)
    table = _markdown(merged["experiments"])
    (out / "results.md").write_text(
        "# kalmanjax: claims and verdicts\n\n"
        "The mode column says which rows come from smoke sizes (--quick).\n\n" + table
    )
    (out / "results.json").write_text(json.dumps(merged, indent=2) + "\n")
    for name, entry in entries.items():
        print(_summary(name, entry))
    kept = len(merged["experiments"]) - len(entries)
    print(
        f"wrote {out / 'results.md'} (the full table) and {out / 'results.json'}"
        + (f"; kept the entries of {kept} experiments not run" if kept else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
