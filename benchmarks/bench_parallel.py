"""Benchmark: the temporally parallel Kalman filter (``kj.run(..., parallel=True)``,
a ``lax.associative_scan`` with span O(log T)) against the sequential ``lax.scan``
filter, in the dense and the square-root form; and the throughput of a batch of
sequences sharded across devices with ``kj.batch_map``.

Every timed function takes the model ``(m0, P0, F, Q, H, R)`` and observations
``ys`` of shape ``(T, m)`` and returns the log marginal likelihood
:math:`\\log p(y_{1:T})` (the sum of ``infos.log_likelihood``) and the filtered
means, shape ``(T, d)``, as in ``bench_kalman.py``.

Run ``python benchmarks/bench_parallel.py --help``; see ``benchmarks/README.md``.
Print the markdown tables of a results file with
``python benchmarks/bench_parallel.py --table RESULTS.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

import kalmanjax as kj  # noqa: E402
from benchmarks import _harness as H  # noqa: E402
from benchmarks.bench_kalman import (  # noqa: E402
    _cast,
    _checks,
    _warm_up,
    make_problem,
    reference,
)

BENCHMARK = "bench_parallel"

#: state dimension -> observation dimension
OBS_DIM = {4: 2, 32: 8}
FULL_TS = [100, 1_000, 10_000, 100_000]
FULL_DS = [4, 32]
QUICK_TS = [100]
QUICK_DS = [4]
METHODS = ("sequential", "parallel")
FORMS = ("dense", "sqrt")

#: the sharded-batch section: ``batch`` sequences of ``(d, m, T)``, sequential filter
SHARDED = {"batch": 64, "d": 4, "m": 2, "T": 1_000, "form": "dense"}
FULL_DEVICE_COUNTS = [1, 2, 4, 8]
QUICK_DEVICE_COUNTS = [1, 2]
#: host devices forced in the CPU workers (XLA_FLAGS, set before jax is imported)
FORCED_HOST_DEVICES = 8
#: sequences of the sharded batch compared with the reference
CHECK_SEQUENCES = 2

RETURNS = {
    "sequential": "kj.run(kalman_filter(dyn, obs, form=form), prior, ys) (lax.scan, "
    "lean=False): sum of infos.log_likelihood, states.mean",
    "parallel": "kj.run(..., parallel=True) (lax.associative_scan over the "
    "Sarkka & Garcia-Fernandez elements, then one vmapped update for the infos): "
    "sum of infos.log_likelihood, states.mean",
    "sharded": "jax.jit(kj.batch_map(fn, mesh=kj.batch_mesh(devices[:k]))) on "
    "kj.shard_batch(ys): per sequence, the sequential dense filter's sum of "
    "infos.log_likelihood and states.mean",
}


# ---------------------------------------------------------------------- methods


def filter_fn(form: str, parallel: bool) -> Callable:
    """``fn(model, ys) -> (log p(y_1:T), filtered means)``."""

    def fn(model, ys):
        filt = kj.kalman_filter(
            kj.LinearDynamics(model["F"], model["Q"]),
            kj.LinearObservation(model["H"], model["R"]),
            form=form,
        )
        res = kj.run(filt, kj.Gaussian(model["m0"], model["P0"]), ys, parallel=parallel)
        return jnp.sum(res.infos.log_likelihood), res.states.mean

    return fn


def size_name(d: int, m: int, T: int) -> str:
    e = round(math.log10(T))
    t = f"1e{e}" if 10**e == T else str(T)
    return f"d{d}_m{m}_T{t}"


# -------------------------------------------------------------- skipping on CPU


def _projection(prev: dict[str, float] | None, T: int) -> dict[str, float] | None:
    """Extrapolate a parallel row from the same (d, form, dtype) at a smaller T:
    run and first-call time linear in T, compile time linear in log T."""
    if prev is None or prev["T"] >= T:
        return None
    out = {"from_T": prev["T"]}
    out["compile_s"] = prev["compile_s"] * math.log(T) / math.log(prev["T"])
    for key in ("first_call_s", "run_s"):
        if prev.get(key) is not None:
            out[key] = prev[key] * T / prev["T"]
    return out


def _skip_reason_before_compile(proj, args) -> str | None:
    if proj is not None and proj["compile_s"] > args.max_compile:
        return (
            f"projected compile {proj['compile_s']:.0f} s (from T={proj['from_T']}) "
            f"> --max-compile {args.max_compile:.0f} s on CPU"
        )
    return None


def _min_repeats(first_call_s: float, args) -> int:
    """Timed rounds kept at least: fewer for rows slower than the time budget."""
    return args.slow_min_repeats if first_call_s > args.max_time else args.min_repeats


def _skip_reason_after_compile(compile_s, proj, args) -> str | None:
    if compile_s > args.max_compile:
        return (
            f"compile took {compile_s:.0f} s > --max-compile {args.max_compile:.0f} s"
        )
    if proj is not None and "run_s" in proj and "first_call_s" in proj:
        n = _min_repeats(proj["first_call_s"], args)
        cost = proj["first_call_s"] + n * proj["run_s"]
        if cost > args.max_run:
            return (
                f"projected first call {proj['first_call_s']:.0f} s + "
                f"{n} x run {proj['run_s']:.0f} s (from T="
                f"{proj['from_T']}, linear in T) > --max-run {args.max_run:.0f} s "
                "on CPU"
            )
    return None


# ---------------------------------------------------------------------- driving


def run_size(
    d: int, T: int, dtype: str, args, history: dict, log: Callable
) -> list[dict[str, Any]]:
    """All rows (method x form) of one ``(d, T, dtype)``; ``history`` carries the
    last parallel measurements per ``(d, form, dtype)`` for the CPU projections."""
    m = OBS_DIM[d]
    name = size_name(d, m, T)
    model64, ys64 = make_problem(args.seed, d, m, T, None)
    model_np, ys_np = _cast(model64, ys64, dtype)
    ref_model = {k: v.astype(np.float64) for k, v in model_np.items()}
    refs = [reference(ref_model, ys_np.astype(np.float64))]
    model_j = {k: jnp.asarray(v) for k, v in model_np.items()}
    ys_j = jnp.asarray(ys_np)
    on_cpu = jax.default_backend() == "cpu" and not args.no_skip

    results: list[dict[str, Any]] = []
    timed: dict[str, dict[str, tuple]] = {method: {} for method in METHODS}
    for method in METHODS:
        for form in FORMS:
            params = {
                "size": name,
                "d": d,
                "m": m,
                "T": T,
                "batch": None,
                "dtype": dtype,
                "method": method,
                "form": form,
            }
            res: dict[str, Any] = {
                "params": params,
                "returns": RETURNS[method],
                "skipped": None,
            }
            results.append(res)
            key = (d, form, dtype)
            proj = None
            if method == "parallel" and on_cpu:
                proj = _projection(history.get(key), T)
                if proj is not None:
                    res["projection"] = proj
                why = _skip_reason_before_compile(proj, args)
                if why is not None:
                    res.update(compile_s=None, skipped=why)
                    history[key] = {"T": T, **{k: proj.get(k) for k in proj}}
                    log(f"  {name} {dtype} {method}/{form}: skipped ({why})")
                    continue
            fn = filter_fn(form, method == "parallel")
            compiles = []
            for _ in range(args.compile_repeats):
                compiled, ct = H.compile_fn(fn, model_j, ys_j)
                compiles.append(ct)
            res["compile_s"] = float(np.median([c["compile_s"] for c in compiles]))
            res["compile"] = {
                "lower_s": float(np.median([c["lower_s"] for c in compiles])),
                "xla_compile_s": float(
                    np.median([c["xla_compile_s"] for c in compiles])
                ),
                "all_compile_s": [c["compile_s"] for c in compiles],
            }
            if method == "parallel" and on_cpu:
                why = _skip_reason_after_compile(res["compile_s"], proj, args)
                if why is not None:
                    res["skipped"] = why
                    history[key] = {
                        "T": T,
                        "compile_s": res["compile_s"],
                        "first_call_s": proj.get("first_call_s") if proj else None,
                        "run_s": proj.get("run_s") if proj else None,
                    }
                    log(
                        f"  {name} {dtype} {method}/{form}: compiled in "
                        f"{res['compile_s']:.1f} s, run skipped ({why})"
                    )
                    continue
            first_s, out = H.time_call(compiled, (model_j, ys_j))  # warm-up
            res["first_call_s"] = first_s
            res["checks"] = _checks(out, refs, False)
            res["checks_on"] = {"T": T, "sequences": 1}
            timed[method][f"{method}/{form}"] = (compiled, (model_j, ys_j))
            log(
                f"  {name} {dtype} {method}/{form}: compile {res['compile_s']:.2f} s, "
                f"first call {first_s:.3f} s"
            )

    # sequential rows round-robin, parallel rows round-robin (rows of similar cost
    # share a time budget; the slow CPU parallel rows do not starve the others)
    run_s: dict[str, dict[str, float | int]] = {}
    for method in METHODS:
        if timed[method]:
            slowest = max(
                r["first_call_s"]
                for r in results
                if r["params"]["method"] == method and r.get("first_call_s")
            )
            run_s.update(
                H.time_interleaved(
                    timed[method],
                    repeats=args.repeats,
                    max_time_s=args.max_time,
                    min_repeats=_min_repeats(slowest, args),
                )
            )
    for res in results:
        p = res["params"]
        label = f"{p['method']}/{p['form']}"
        if label in run_s:
            res["run_s"] = run_s[label]
            res["throughput"] = {"steps_per_s": T / run_s[label]["median"]}
            if p["method"] == "parallel":
                history[(d, p["form"], dtype)] = {
                    "T": T,
                    "compile_s": res["compile_s"],
                    "first_call_s": res["first_call_s"],
                    "run_s": run_s[label]["median"],
                }
        else:
            res["run_s"] = None
        c = res.get("checks")
        log(
            f"  {name:16s} {dtype:8s} {label:20s} "
            + (
                f"run {res['run_s']['median'] * 1e3:11.3f} ms (n={res['run_s']['n']})  "
                if res["run_s"]
                else "run      skipped          "
            )
            + (f"compile {res['compile_s']:6.2f} s  " if res["compile_s"] else "")
            + (
                f"err(mean) {c['max_abs_err_vs_reference']:.1e} "
                f"err(ll) {c['loglik_rel_err_vs_reference']:.1e}"
                if c
                else ""
            )
        )
    return results


def summary_table(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per (d, T, dtype, form): parallel vs sequential."""
    rows: dict[tuple, dict[str, Any]] = {}
    for r in results:
        p = r["params"]
        key = (p["size"], p["dtype"], p["form"])
        row = rows.setdefault(
            key,
            {
                "size": p["size"],
                "d": p["d"],
                "m": p["m"],
                "T": p["T"],
                "dtype": p["dtype"],
                "form": p["form"],
            },
        )
        meth = p["method"]
        row[f"{meth}_run_s"] = r["run_s"]["median"] if r["run_s"] else None
        row[f"{meth}_run_min_s"] = r["run_s"]["min"] if r["run_s"] else None
        row[f"{meth}_compile_s"] = r["compile_s"]
        row[f"{meth}_first_call_s"] = r.get("first_call_s")
        if r["skipped"]:
            row[f"{meth}_skipped"] = r["skipped"]
    out = []
    for row in rows.values():
        seq, par = row.get("sequential_run_s"), row.get("parallel_run_s")
        if seq and par:
            row["ratio_parallel_over_sequential"] = par / seq
            row["ratio_parallel_over_sequential_min"] = (
                row["parallel_run_min_s"] / row["sequential_run_min_s"]
            )
            row["speedup_parallel_vs_sequential"] = seq / par
        else:
            row["ratio_parallel_over_sequential"] = None
            row["ratio_parallel_over_sequential_min"] = None
            row["speedup_parallel_vs_sequential"] = None
        out.append(row)
    return out


# ------------------------------------------------------------------ sharded batch


def sharded_run(k: int, args) -> dict[str, Any]:
    """Time ``jax.jit(kj.batch_map(fn, mesh))`` on ``k`` devices of this process."""
    devices = jax.devices()
    if len(devices) < k:
        raise RuntimeError(f"sharded: {k} devices asked, {len(devices)} present")
    cfg = SHARDED
    model64, ys64 = make_problem(args.seed, cfg["d"], cfg["m"], cfg["T"], cfg["batch"])
    model_np, ys_np = _cast(model64, ys64, "float32")
    ref_model = {key: v.astype(np.float64) for key, v in model_np.items()}
    refs = [
        reference(ref_model, ys_np[i].astype(np.float64))
        for i in range(CHECK_SEQUENCES)
    ]
    model_j = {key: jnp.asarray(v) for key, v in model_np.items()}
    seq_fn = filter_fn(cfg["form"], parallel=False)

    def one(y):
        return seq_fn(model_j, y)

    mesh = kj.batch_mesh(devices=devices[:k])
    ys_s = kj.shard_batch(jnp.asarray(ys_np), mesh=mesh)
    compiled, ct = H.compile_fn(kj.batch_map(one, mesh=mesh), ys_s)
    first_s, out = H.time_call(compiled, (ys_s,))
    run_s = H.time_interleaved(
        {"sharded": (compiled, (ys_s,))},
        repeats=args.repeats,
        max_time_s=args.max_time,
        min_repeats=args.min_repeats,
    )["sharded"]
    # the same batch with plain vmap on one device, in this process
    single = jax.jit(jax.vmap(one))(jnp.asarray(ys_np))
    out_devices = {dev.id for dev in out[1].sharding.device_set}
    return {
        "devices": k,
        "devices_used": len(out_devices),
        "backend": jax.default_backend(),
        "device_kind": devices[0].device_kind,
        "device_count": len(devices),
        "compile_s": ct["compile_s"],
        "compile": {key: ct[key] for key in ("lower_s", "xla_compile_s")},
        "first_call_s": first_s,
        "run_s": run_s,
        "throughput": {
            "sequences_per_s": cfg["batch"] / run_s["median"],
            "steps_per_s": cfg["batch"] * cfg["T"] / run_s["median"],
        },
        "checks": _checks(out, refs, True),
        "checks_on": {"T": cfg["T"], "sequences": CHECK_SEQUENCES},
        "max_abs_diff_means_vs_vmap_1_device": float(
            jnp.max(jnp.abs(out[1] - single[1]))
        ),
        "max_abs_diff_loglik_vs_vmap_1_device": float(
            jnp.max(jnp.abs(out[0] - single[0]))
        ),
        "logliks": [float(v) for v in np.asarray(out[0])],
        "cpu_count": os.cpu_count(),
        "loadavg": H.loadavg(),
    }


def _worker_cmd(k: int, args) -> list[str]:
    return [
        sys.executable,
        str(Path(__file__).resolve()),
        "--sharded-worker",
        str(k),
        "--repeats",
        str(args.repeats),
        "--max-time",
        str(args.max_time),
        "--min-repeats",
        str(args.min_repeats),
        "--seed",
        str(args.seed),
        *(
            ["--matmul-precision", args.matmul_precision]
            if args.matmul_precision
            else []
        ),
    ]


def _sharded_subprocess(k: int, args) -> dict[str, Any]:
    """Run one device count in a fresh process with forced host devices (the flag
    must be set before jax is imported)."""
    flags = os.environ.get("XLA_FLAGS", "")
    env = {
        **os.environ,
        "XLA_FLAGS": f"{flags} --xla_force_host_platform_device_count="
        f"{FORCED_HOST_DEVICES}".strip(),
        "JAX_PLATFORMS": "cpu",
        "PYTHONPATH": os.pathsep.join(
            p for p in (str(_ROOT), os.environ.get("PYTHONPATH")) if p
        ),
    }
    proc = subprocess.run(
        _worker_cmd(k, args),
        capture_output=True,
        text=True,
        timeout=args.worker_timeout,
        env=env,
        cwd=_ROOT,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"sharded worker k={k} failed (exit {proc.returncode}):\n"
            f"{proc.stderr[-4000:]}"
        )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def sharded_section(args, log: Callable) -> dict[str, Any]:
    ks = QUICK_DEVICE_COUNTS if args.quick else FULL_DEVICE_COUNTS
    if args.device_counts:
        ks = args.device_counts
    backend = jax.default_backend()
    results, skipped = [], {}
    for k in ks:
        if backend == "cpu":
            r = _sharded_subprocess(k, args)
        elif k <= jax.device_count():
            r = sharded_run(k, args)
        else:
            skipped[str(k)] = f"only {jax.device_count()} {backend} devices"
            continue
        results.append(r)
        log(
            f"  sharded batch {SHARDED['batch']} on {k} device(s): "
            f"{r['throughput']['sequences_per_s']:10.1f} sequences/s "
            f"(run {r['run_s']['median'] * 1e3:.2f} ms, compile {r['compile_s']:.2f} s)"
        )
    base = next((r for r in results if r["devices"] == 1), None)
    for r in results:
        if base is not None:
            a, b = np.asarray(r["logliks"]), np.asarray(base["logliks"])
            r["max_abs_diff_loglik_vs_1_device"] = float(np.max(np.abs(a - b)))
            r["max_rel_diff_loglik_vs_1_device"] = float(
                np.max(np.abs(a - b) / np.maximum(1.0, np.abs(b)))
            )
            r["speedup_vs_1_device"] = base["run_s"]["median"] / r["run_s"]["median"]
    if backend == "cpu":
        note = (
            f"CPU: each device count ran in its own process with "
            f"XLA_FLAGS=--xla_force_host_platform_device_count={FORCED_HOST_DEVICES}; "
            f"the {FORCED_HOST_DEVICES} host 'devices' share the machine's "
            f"{os.cpu_count()} cores. One host device runs its shard on one thread, "
            f"so k up to {os.cpu_count()} can gain from the extra cores; beyond that "
            "no speed-up is expected (the devices only oversubscribe the cores). "
            "The section mainly checks that the sharded results equal the 1-device "
            "ones and measures the overhead."
        )
    else:
        note = (
            f"{backend}: {jax.device_count()} real device(s) in this process; "
            "device counts above that are skipped."
        )
    return {
        "config": {**SHARDED, "dtype": "float32", "method": "sequential"},
        "device_counts": ks,
        "returns": RETURNS["sharded"],
        "note": note,
        "skipped": skipped,
        "results": results,
    }


# --------------------------------------------------------------------- tables


def _ms(s: float | None) -> str:
    if s is None:
        return "-"
    ms = s * 1e3
    return f"{ms:.3g}" if ms < 100 else f"{ms:.0f}"


def _sec(s: float | None) -> str:
    return "-" if s is None else f"{s:.2f}"


def markdown(data: dict[str, Any]) -> str:
    """Markdown tables of a ``bench_parallel`` results JSON."""
    env = data["env"]
    out = [
        f"{env['device_kind']} ({env['backend']}, {env['cpu_count']} CPUs), "
        f"jax {env['jax_version']}, kalmanjax {env['kalmanjax_version']}, "
        f"{env['utc']}, load average {env.get('loadavg')} -> {env.get('loadavg_end')}",
        "",
        "| size | dtype | form | sequential (ms) | parallel (ms) | parallel / "
        "sequential (min) | compile seq (s) | compile par (s) | first call par (s) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    notes = []
    for s in data["summary"]:
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

    worst: dict[tuple[str, str, str], list[float]] = {}
    for r in data["results"]:
        c = r.get("checks")
        if not c:
            continue
        p = r["params"]
        w = worst.setdefault((p["method"], p["form"], p["dtype"]), [0.0, 0.0, 0])
        w[0] = max(w[0], c["max_abs_err_vs_reference"])
        w[1] = max(w[1], c["loglik_rel_err_vs_reference"])
        w[2] = max(w[2], p["T"])
    out += [
        "",
        "Correctness vs the NumPy float64 reference (worst over the sizes run, "
        "full sequences):",
        "",
        "| method | form | dtype | max abs err, filtered means | max rel err, "
        "log-lik | largest T checked |",
        "|---|---|---|---:|---:|---:|",
    ]
    for (meth, form, dtype), (em, el, t) in worst.items():
        out.append(f"| {meth} | {form} | {dtype} | {em:.1e} | {el:.1e} | {t} |")

    sh = data.get("sharded")
    if sh and sh["results"]:
        cfg = sh["config"]
        out += [
            "",
            f"Sharded batch: {cfg['batch']} sequences, d={cfg['d']}, m={cfg['m']}, "
            f"T={cfg['T']}, sequential {cfg['form']} filter, {cfg['dtype']}, "
            "`jax.jit(kj.batch_map(fn, mesh=kj.batch_mesh(devices[:k])))`:",
            "",
            "| devices k | sequences/s | run (ms) | speed-up vs k=1 | compile (s) "
            "| max abs diff log-lik vs k=1 | max err vs reference (mean, ll) |",
            "|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in sh["results"]:
            c = r["checks"]
            out.append(
                f"| {r['devices']} | {r['throughput']['sequences_per_s']:.0f} "
                f"| {_ms(r['run_s']['median'])} "
                f"| {r.get('speedup_vs_1_device', float('nan')):.2f} "
                f"| {r['compile_s']:.2f} "
                f"| {r.get('max_abs_diff_loglik_vs_1_device', float('nan')):.1e} "
                f"| {c['max_abs_err_vs_reference']:.1e}, "
                f"{c['loglik_rel_err_vs_reference']:.1e} |"
            )
        out += ["", f"Note: {sh['note']}"]
    return "\n".join(out)


# ------------------------------------------------------------------------ main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes, few repeats")
    p.add_argument("--out", type=Path, default=None, help="output JSON path")
    p.add_argument("--repeats", type=int, default=None, help="timed runs per row")
    p.add_argument(
        "--compile-repeats",
        type=int,
        default=1,
        help="compilations per row, median reported (default 1: parallel compiles "
        "are slow on CPU)",
    )
    p.add_argument(
        "--max-time",
        type=float,
        default=None,
        help="seconds of timed runs per (size, dtype, method) before stopping early",
    )
    p.add_argument(
        "--min-repeats",
        type=int,
        default=3,
        help="timed runs kept at least when --max-time cuts in",
    )
    p.add_argument(
        "--max-compile",
        type=float,
        default=120.0,
        help="CPU only: skip a parallel row whose (projected) compile exceeds this",
    )
    p.add_argument(
        "--max-run",
        type=float,
        default=600.0,
        help="CPU only: skip running a parallel row whose projected first call + "
        "its minimum timed runs exceed this many seconds",
    )
    p.add_argument(
        "--slow-min-repeats",
        type=int,
        default=1,
        help="timed rounds kept at least for a (size, method) group whose slowest "
        "first call took longer than --max-time",
    )
    p.add_argument(
        "--no-skip",
        action="store_true",
        help="never skip (the skip rules only apply on CPU anyway)",
    )
    p.add_argument(
        "--dtypes", nargs="+", default=["float32"], choices=["float32", "float64"]
    )
    p.add_argument("--ds", nargs="+", type=int, default=None, choices=FULL_DS)
    p.add_argument("--Ts", nargs="+", type=int, default=None, help="sequence lengths")
    p.add_argument(
        "--device-counts",
        nargs="+",
        type=int,
        default=None,
        help="device counts of the sharded section (default 1 2 4 8; quick 1 2)",
    )
    p.add_argument(
        "--sharded",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run the sharded-batch section",
    )
    p.add_argument(
        "--worker-timeout", type=float, default=600.0, help=argparse.SUPPRESS
    )
    p.add_argument(
        "--matmul-precision",
        default=None,
        choices=["default", "high", "highest"],
        help="set jax_default_matmul_precision in this process (default: leave "
        "JAX's default, which on recent NVIDIA GPUs runs float32 dots in TF32)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sharded-worker", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument(
        "--table", type=Path, default=None, help="print the tables of a results JSON"
    )
    args = p.parse_args(argv)
    if args.repeats is None:
        args.repeats = 3 if args.quick else 50
    if args.max_time is None:
        args.max_time = 2.0 if args.quick else 15.0
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.matmul_precision is not None:
        jax.config.update("jax_default_matmul_precision", args.matmul_precision)
    if args.table is not None:
        data = json.loads(args.table.read_text())
        print(markdown(data))
        return data
    if args.sharded_worker is not None:
        result = sharded_run(args.sharded_worker, args)
        print(json.dumps(H._jsonable(result)), flush=True)
        return result

    ds = args.ds or (QUICK_DS if args.quick else FULL_DS)
    ts = args.Ts or (QUICK_TS if args.quick else FULL_TS)
    log = H.print_err
    env = H.env_info()
    log(f"{BENCHMARK}: {env['backend']} ({env['device_kind']}), d {ds}, T {ts}")
    out = args.out
    if out is None:
        out = _ROOT / "benchmarks" / "results" / f"{BENCHMARK}_{H.device_slug()}.json"

    _warm_up(args.dtypes)
    payload: dict[str, Any] = {
        "schema_version": H.SCHEMA_VERSION,
        "benchmark": BENCHMARK,
        "env": env,
        "config": {
            "quick": args.quick,
            "sizes": [
                {"size": size_name(d, OBS_DIM[d], t), "d": d, "m": OBS_DIM[d], "T": t}
                for d in ds
                for t in ts
            ],
            "dtypes": args.dtypes,
            "methods": list(METHODS),
            "forms": list(FORMS),
            "repeats": args.repeats,
            "compile_repeats": args.compile_repeats,
            "min_repeats": args.min_repeats,
            "slow_min_repeats": args.slow_min_repeats,
            "max_time_s": args.max_time,
            "skip_rules": None
            if env["backend"] != "cpu" or args.no_skip
            else {"max_compile_s": args.max_compile, "max_run_s": args.max_run},
            "matmul_precision": jax.config.jax_default_matmul_precision,
            "seed": args.seed,
            "returns": RETURNS,
        },
        "complete": False,
        "results": [],
        "summary": [],
        "sharded": None,
    }
    history: dict = {}
    for d in ds:
        for t in sorted(ts):
            for dtype in args.dtypes:
                with jax.enable_x64(dtype == "float64"):
                    payload["results"] += run_size(d, t, dtype, args, history, log)
            payload["summary"] = summary_table(payload["results"])
            H.write_json(out, payload)  # partial results survive a timeout
    if args.sharded:
        payload["sharded"] = sharded_section(args, log)
    payload["complete"] = True
    env["loadavg_end"] = H.loadavg()
    H.write_json(out, payload)
    log(f"wrote {out}")
    return payload


if __name__ == "__main__":
    main()
