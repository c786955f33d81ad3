"""The main job: reproduce the experiments' figures and verdict table.

Usage::

    python -m kalmanjax                 # every experiment, default sizes
    python -m kalmanjax --quick         # smoke sizes (seconds)
    python -m kalmanjax collapse        # one experiment
    python -m kalmanjax --list          # what exists

Writes ``<out>/<name>.png``, ``<out>/results.md`` (one row per claim: verdict,
numbers, settings) and ``<out>/results.json``.

``--help`` and ``--list`` work on the base install (jax only): the registry
imports an experiment's module only when it runs. Running one whose optional
dependencies (flax, optax, matplotlib) are missing exits with status 1 and a
one-line error naming the extra, ``pip install 'kalmanjax[experiments]'``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .experiments import EXPERIMENTS, MissingDependencyError


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
    p.add_argument("--quick", action="store_true", help="smoke sizes (seconds)")
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


def _markdown(results) -> str:
    lines = [
        "| experiment | claim | verdict | measured | settings |",
        "| --- | --- | --- | --- | --- |",
    ]
    for res in results:
        for c in res.claims:
            settings = ", ".join(f"{k}={v}" for k, v in c.settings.items())
            cells = (res.name, c.claim, f"**{c.verdict}**")
            cells += (_format_numbers(c.measured), settings)
            lines.append("| " + " | ".join(_cell(x) for x in cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.list:
        for name in EXPERIMENTS:
            print(f"{name}: {EXPERIMENTS.describe(name)}")
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

    results = []
    bar = tqdm(names, desc="experiments", unit="exp") if tqdm else None
    for name in names if bar is None else bar:
        if bar is not None:
            bar.set_postfix_str(name)
        start = time.perf_counter()
        module = modules[name]
        res = module.run(quick=args.quick, seed=args.seed)
        module.plot(res, out / f"{name}.png")
        results.append(res)
        msg = f"{name}: {time.perf_counter() - start:.1f} s -> {out / (name + '.png')}"
        (print if bar is None else bar.write)(msg)

    table = _markdown(results)
    (out / "results.md").write_text(
        "# kalmanjax: claims and verdicts\n\n"
        + ("Smoke sizes (--quick).\n\n" if args.quick else "")
        + table
    )
    payload = [
        dict(
            experiment=r.name,
            claim=c.claim,
            verdict=c.verdict,
            measured=c.measured,
            settings=c.settings,
        )
        for r in results
        for c in r.claims
    ]
    (out / "results.json").write_text(json.dumps(payload, indent=2) + "\n")
    print(table)
    print(f"wrote {out / 'results.md'} and {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
