"""Print markdown tables from a ``bench_kalman`` results JSON.

python benchmarks/table.py benchmarks/results/bench_kalman_cpu.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

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


def _groups(data: dict[str, Any]) -> list[tuple[str, str]]:
    seen: list[tuple[str, str]] = []
    for r in data["results"]:
        key = (r["params"]["size"], r["params"]["dtype"])
        if key not in seen:
            seen.append(key)
    return seen


def _rows(data, size, dtype):
    return {
        r["params"]["method"]: r
        for r in data["results"]
        if r["params"]["size"] == size and r["params"]["dtype"] == dtype
    }


def times_table(data: dict[str, Any]) -> str:
    """Median run time (ms) of every method, one line per size and dtype."""
    methods = [
        m
        for m in KJ_ORDER + OTHER_ORDER
        if any(r["params"]["method"] == m for r in data["results"])
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
            for r in data["results"]
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
    for r in data["results"]:
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


def render(data: dict[str, Any]) -> str:
    env = data["env"]
    head = (
        f"{env['device_kind']} ({env.get('processor')}, {env.get('cpu_count')} "
        f"cores), jax {env['jax_version']}, kalmanjax {env['kalmanjax_version']}, "
        f"{env['utc']}, load average {env.get('loadavg')}"
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


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description="markdown tables from a results JSON")
    p.add_argument("path", type=Path)
    args = p.parse_args(argv)
    text = render(json.loads(args.path.read_text()))
    print(text)
    return text


if __name__ == "__main__":
    main()
