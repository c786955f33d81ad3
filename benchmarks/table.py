"""Print the markdown tables of a results JSON (``bench_kalman``, ``bench_parallel``,
``bench_scan``).

python -m benchmarks.table benchmarks/results/bench_kalman_cpu.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from benchmarks import _harness as H

KJ_ORDER = [
    "kalmanjax/dense",
    "kalmanjax/joseph",
    "kalmanjax/sqrt",
    "kalmanjax/dense-nofast",
    "kalmanjax/dense-nomissing",
]
OTHER_ORDER = ["bare_scan", "dynamax", "cuthbert", "pykalman", "filterpy"]


def _ms(s: float | None) -> str:
    if s is None:
        return "-"
    ms = s * 1e3
    return f"{ms:.3g}" if ms < 100 else f"{ms:.0f}"


def _x(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def _sec(s: float | None) -> str:
    return "-" if s is None else f"{s:.2f}"


# ------------------------------------------------------------------ bench_kalman


def _groups(data: dict[str, Any]) -> list[tuple[str, str]]:
    seen: list[tuple[str, str]] = []
    for r in data["rows"]:
        key = (r["params"]["size"], r["params"]["dtype"])
        if key not in seen:
            seen.append(key)
    return seen


def _rows(data, size, dtype):
    return {
        r["params"]["method"]: r
        for r in data["rows"]
        if r["params"]["size"] == size and r["params"]["dtype"] == dtype
    }


def times_table(data: dict[str, Any]) -> str:
    """Median run time (ms) of every method, one line per size and dtype."""
    methods = [
        m
        for m in KJ_ORDER + OTHER_ORDER
        if any(r["params"]["method"] == m for r in data["rows"])
    ]
    lines = [
        "| size | dtype | " + " | ".join(methods) + " |",
        "|---|---|" + "---:|" * len(methods),
    ]
    for size, dtype in _groups(data):
        rows = _rows(data, size, dtype)
        cells = [_ms(rows[m]["run_s"]["median"]) if m in rows else "-" for m in methods]
        lines.append(f"| {size} | {dtype} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ratios_table(data: dict[str, Any]) -> str:
    """kalmanjax / bare scan and dynamax / kalmanjax per size, dtype and form: the
    ratio of the median run times, and in brackets the ratio of the fastest runs."""
    lines = [
        "| size | dtype | method | run (ms) | ratio_vs_bare_scan (min) "
        "| speedup_vs_dynamax (min) | compile (s) |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for size, dtype in _groups(data):
        rows = _rows(data, size, dtype)
        for m in KJ_ORDER:
            if m not in rows:
                continue
            r = rows[m]
            ratios = r.get("ratios", {})
            lines.append(
                f"| {size} | {dtype} | {m} | {_ms(r['run_s']['median'])} "
                f"| {_x(ratios.get('ratio_vs_bare_scan'))} "
                f"({_x(ratios.get('ratio_vs_bare_scan_min'))}) "
                f"| {_x(ratios.get('speedup_vs_dynamax'))} "
                f"({_x(ratios.get('speedup_vs_dynamax_min'))}) "
                f"| {r['compile_s']:.3f} |"
            )
    return "\n".join(lines)


def compile_table(data: dict[str, Any]) -> str:
    """Compile time (trace + lower + XLA, median of the repeats) per method."""
    methods = [
        m
        for m in KJ_ORDER + OTHER_ORDER
        if any(
            r["params"]["method"] == m and r["compile_s"] is not None
            for r in data["rows"]
        )
    ]
    lines = [
        "| size | dtype | " + " | ".join(methods) + " |",
        "|---|---|" + "---:|" * len(methods),
    ]
    for size, dtype in _groups(data):
        rows = _rows(data, size, dtype)
        cells = [
            f"{rows[m]['compile_s']:.2f}"
            if m in rows and rows[m]["compile_s"] is not None
            else "-"
            for m in methods
        ]
        lines.append(f"| {size} | {dtype} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def checks_table(data: dict[str, Any]) -> str:
    """Largest error of each method vs the NumPy float64 reference, per dtype."""
    worst: dict[tuple[str, str], list[float]] = {}
    for r in data["rows"]:
        key = (r["params"]["method"], r["params"]["dtype"])
        c = r["checks"]
        w = worst.setdefault(key, [0.0, 0.0])
        w[0] = max(w[0], c["max_abs_err_vs_reference"])
        w[1] = max(w[1], c["loglik_rel_err_vs_reference"])
    lines = [
        "| method | dtype | max abs err, filtered means | max rel err, log-lik |",
        "|---|---|---:|---:|",
    ]
    order = KJ_ORDER + OTHER_ORDER
    for (m, dtype), (em, el) in sorted(
        worst.items(), key=lambda kv: (order.index(kv[0][0]), kv[0][1])
    ):
        lines.append(f"| {m} | {dtype} | {em:.1e} | {el:.1e} |")
    return "\n".join(lines)


def kalman_tables(data: dict[str, Any]) -> str:
    """All tables of a ``bench_kalman`` run."""
    env = data["environment"]
    head = (
        f"{env['device_kind']} ({env['processor']}, {env['cpu_count']} "
        f"cores), jax {env['jax']}, kalmanjax {env['kalmanjax']}, "
        f"{env['date']}, load average {env['loadavg']}"
    )
    return "\n\n".join(
        [
            head,
            "Median run time (ms):\n\n" + times_table(data),
            "Ratios:\n\n" + ratios_table(data),
            "Compile time (s):\n\n" + compile_table(data),
            "Correctness (worst over sizes):\n\n" + checks_table(data),
        ]
    )


# ---------------------------------------------------------------- bench_parallel


def parallel_table(data: dict[str, Any]) -> list[str]:
    """Sequential vs parallel per size, dtype and form, with footnoted skips."""
    out = [
        "| size | dtype | form | sequential (ms) | parallel (ms) | parallel / "
        "sequential (min) | compile seq (s) | compile par (s) | first call par (s) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    notes = []
    for s in data["summary"]["parallel_vs_sequential"]:
        ratio = s["ratio_parallel_over_sequential"]
        cell = "-"
        if ratio is not None:
            cell = f"{ratio:.3g} ({s['ratio_parallel_over_sequential_min']:.3g})"
        par = _ms(s.get("parallel_run_s"))
        if s.get("parallel_skipped"):
            notes.append(
                f"{s['size']} {s['dtype']} {s['form']}: {s['parallel_skipped']}"
            )
            par = f"skipped [{len(notes)}]"
        out.append(
            f"| {s['size']} | {s['dtype']} | {s['form']} "
            f"| {_ms(s.get('sequential_run_s'))} | {par} | {cell} "
            f"| {_sec(s.get('sequential_compile_s'))} "
            f"| {_sec(s.get('parallel_compile_s'))} "
            f"| {_sec(s.get('parallel_first_call_s'))} |"
        )
    if notes:
        out += [""] + [f"[{i}] {n}" for i, n in enumerate(notes, 1)]
    return out


def parallel_checks_table(rows: list[dict[str, Any]]) -> list[str]:
    """Worst errors vs the reference per method, form and dtype of the filter rows."""
    worst: dict[tuple[str, str, str], list[float]] = {}
    for r in rows:
        c = r.get("checks")
        if not c:
            continue
        p = r["params"]
        w = worst.setdefault((p["method"], p["form"], p["dtype"]), [0.0, 0.0, 0])
        w[0] = max(w[0], c["max_abs_err_vs_reference"])
        w[1] = max(w[1], c["loglik_rel_err_vs_reference"])
        w[2] = max(w[2], p["T"])
    out = [
        "Correctness vs the NumPy float64 reference (worst over the sizes run, "
        "full sequences):",
        "",
        "| method | form | dtype | max abs err, filtered means | max rel err, "
        "log-lik | largest T checked |",
        "|---|---|---|---:|---:|---:|",
    ]
    for (meth, form, dtype), (em, el, t) in worst.items():
        out.append(f"| {meth} | {form} | {dtype} | {em:.1e} | {el:.1e} | {t} |")
    return out


def sharded_table(cfg: dict[str, Any], rows: list[dict[str, Any]]) -> list[str]:
    """Throughput and agreement of the sharded batch per device count."""
    out = [
        f"Sharded batch: {cfg['batch']} sequences, d={cfg['d']}, m={cfg['m']}, "
        f"T={cfg['T']}, sequential {cfg['form']} filter, {cfg['dtype']}, "
        "`jax.jit(kj.batch_map(fn, mesh=kj.batch_mesh(devices[:k])))`:",
        "",
        "| devices k | sequences/s | run (ms) | speed-up vs k=1 | compile (s) "
        "| max abs diff log-lik vs k=1 | max err vs reference (mean, ll) |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        c = r["checks"]
        out.append(
            f"| {r['params']['devices']} | {r['throughput']['sequences_per_s']:.0f} "
            f"| {_ms(r['run_s']['median'])} "
            f"| {r.get('speedup_vs_1_device', float('nan')):.2f} "
            f"| {r['compile_s']:.2f} "
            f"| {r.get('max_abs_diff_loglik_vs_1_device', float('nan')):.1e} "
            f"| {c['max_abs_err_vs_reference']:.1e}, "
            f"{c['loglik_rel_err_vs_reference']:.1e} |"
        )
    return out + ["", f"Note: {cfg['note']}"]


def _machine_line(env: dict[str, Any]) -> str:
    """The device, versions, date and load of a run, one line."""
    return (
        f"{env['device_kind']} ({env['backend']}, {env['cpu_count']} CPUs), "
        f"jax {env['jax']}, kalmanjax {env['kalmanjax']}, {env['date']}, "
        f"load average {env['loadavg']} -> {env.get('loadavg_end')}"
    )


def parallel_tables(data: dict[str, Any]) -> str:
    """All tables of a ``bench_parallel`` run."""
    out = [
        _machine_line(data["environment"]),
        "",
        *parallel_table(data),
        "",
    ]
    rows = [r for r in data["rows"] if r["params"]["section"] == "filter"]
    out += parallel_checks_table(rows)
    sharded = [
        r
        for r in data["rows"]
        if r["params"]["section"] == "sharded" and r["skipped"] is None
    ]
    if sharded:
        out += ["", *sharded_table(data["settings"]["sharded"], sharded)]
    return "\n".join(out)


# -------------------------------------------------------------------- bench_scan


def _mib(b: int | None) -> str:
    return "-" if b is None else f"{b / 2**20:.3g}"


def _length(T: int) -> str:
    e = len(str(T)) - 1
    return f"1e{e}" if T == 10**e and e > 1 else str(T)


def scan_tables(data: dict[str, Any]) -> str:
    """The ``bench_scan`` tables: per task, form and T, compile / run / temporary
    memory of the three methods and the blocked scan's ratios to the tree's."""
    out = [
        _machine_line(data["environment"]),
        "",
        "| task | form | T | compile seq / tree / blocked (s) | run seq / tree / "
        "blocked (ms) | temp memory tree / blocked (MiB) | StableHLO ops tree / "
        "blocked | blocked / tree: compile, run |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    notes = []
    for e in data["summary"]["blocked_vs_tree"]:
        comp = " / ".join(
            _sec(e.get(f"{m}_compile_s")) for m in ("sequential", "tree", "blocked")
        )
        run = " / ".join(
            _ms(e.get(f"{m}_run_s")) for m in ("sequential", "tree", "blocked")
        )
        mem = " / ".join(_mib(e.get(f"{m}_temp_bytes")) for m in ("tree", "blocked"))
        ops = " / ".join(
            str(e.get(f"{m}_stablehlo_ops") or "-") for m in ("tree", "blocked")
        )
        ratio = (
            f"{_x(e.get('blocked_over_tree_compile'))}, "
            f"{_x(e.get('blocked_over_tree_run'))}"
        )
        out.append(
            f"| {e['task']} | {e['form']} | {_length(e['T'])} | {comp} | {run} | "
            f"{mem} | {ops} | {ratio} |"
        )
    for r in data["rows"]:
        if r.get("skipped"):
            p = r["params"]
            notes.append(
                f"- {p['task']}/{p['form']}/{p['method']} T={p['T']}: {r['skipped']}"
            )
    summary = data["summary"]
    out += [
        "",
        f"All targets met: {summary['all_targets_met']}"
        + (
            "; missed: " + "; ".join(summary["targets_missed"])
            if summary["targets_missed"]
            else ""
        ),
    ]
    if notes:
        out += ["", "Skipped (a dash above):", *notes]
    return "\n".join(out)


RENDER = {
    "bench_kalman": kalman_tables,
    "bench_parallel": parallel_tables,
    "bench_scan": scan_tables,
}


def render(data: dict[str, Any]) -> str:
    """The markdown tables of a results payload (schema checked first)."""
    H.validate(data)
    if data["benchmark"] not in RENDER:
        raise SystemExit(f"no tables for {data['benchmark']} (only {list(RENDER)})")
    return RENDER[data["benchmark"]](data)


def main(argv: list[str] | None = None) -> str:
    """Print (and return) the tables of the JSON file given on the command line."""
    p = argparse.ArgumentParser(description="markdown tables from a results JSON")
    p.add_argument("path", type=Path)
    args = p.parse_args(argv)
    text = render(json.loads(args.path.read_text()))
    print(text)
    return text


if __name__ == "__main__":
    main()
