"""Benchmark: the temporally parallel Kalman filter (``kj.run(..., parallel=True)``,
a ``lax.associative_scan`` with span O(log T)) against the sequential ``lax.scan``
filter, in the dense and the square-root form; and the throughput of a batch of
sequences sharded across devices with ``kj.batch_map``.

Every timed function takes the model ``(m0, P0, F, Q, H, R)`` and observations
``ys`` of shape ``(T, m)`` and returns the log marginal likelihood
:math:`\\log p(y_{1:T})` (the sum of ``infos.log_likelihood``) and the filtered
means, shape ``(T, d)``, as in ``bench_kalman``.

Rows carry ``params.section``: ``"filter"`` (sequential vs parallel) or
``"sharded"`` (one device count each). Run ``python -m benchmarks.bench_parallel
--help``; see ``benchmarks/README.md``. Print the markdown tables of a results file
with ``python -m benchmarks.table RESULTS.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import kalmanjax as kj
from benchmarks import _harness as H
from benchmarks import _models as M

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
SHARDED_PARAMS = {**SHARDED, "dtype": "float32", "method": "sequential"}
FULL_DEVICE_COUNTS = [1, 2, 4, 8]
QUICK_DEVICE_COUNTS = [1, 2]
#: host devices forced in the CPU workers (XLA_FLAGS, set before jax is imported)
FORCED_HOST_DEVICES = 8
#: sequences of the sharded batch compared with the reference
CHECK_SEQUENCES = 2

RETURNS = {
    "sequential": "kj.run(kalman_filter(dyn, obs, form=form), prior, ys) (lax.scan, "
    "lean=False): sum of infos.log_likelihood, states.mean",
    "parallel": "kj.run(..., parallel=True) (the blocked prefix scan, "
    "kalmanjax.core.scan, over the Sarkka & Garcia-Fernandez elements, then one "
    "vmapped update for the infos): "
    "sum of infos.log_likelihood, states.mean",
    "sharded": "jax.jit(kj.batch_map(fn, mesh=kj.batch_mesh(devices[:k]))) on "
    "kj.shard_batch(ys): per sequence, the sequential dense filter's sum of "
    "infos.log_likelihood and states.mean",
}


def size_name(d: int, m: int, T: int) -> str:
    """``d4_m2_T1e3``-style name of a size."""
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


def run_size(d: int, T: int, dtype: str, args, history: dict) -> list[dict[str, Any]]:
    """All rows (method x form) of one ``(d, T, dtype)``; ``history`` carries the
    last parallel measurements per ``(d, form, dtype)`` for the CPU projections."""
    m = OBS_DIM[d]
    name = size_name(d, m, T)
    prob = M.problem(args.seed, d, m, T, None, dtype)
    jargs = prob.on_device()
    on_cpu = jax.default_backend() == "cpu" and not args.no_skip
    log = H.log

    rows: list[dict[str, Any]] = []
    timed: dict[str, dict[str, tuple]] = {method: {} for method in METHODS}
    for method in METHODS:
        for form in FORMS:
            params = {
                "section": "filter",
                "size": name,
                "d": d,
                "m": m,
                "T": T,
                "batch": None,
                "dtype": dtype,
                "method": method,
                "form": form,
            }
            row: dict[str, Any] = {
                "params": params,
                "returns": RETURNS[method],
                "skipped": None,
            }
            rows.append(row)
            key = (d, form, dtype)
            proj = None
            if method == "parallel" and on_cpu:
                proj = _projection(history.get(key), T)
                if proj is not None:
                    row["projection"] = proj
                why = _skip_reason_before_compile(proj, args)
                if why is not None:
                    row.update(compile_s=None, skipped=why)
                    history[key] = {"T": T, **{k: proj.get(k) for k in proj}}
                    log(f"  {name} {dtype} {method}/{form}: skipped ({why})")
                    continue
            fn = M.kalmanjax_filter(form, parallel=method == "parallel")
            compiled, ct = H.compile_repeated(fn, jargs, args.compile_repeats)
            row.update(ct)
            if method == "parallel" and on_cpu:
                why = _skip_reason_after_compile(row["compile_s"], proj, args)
                if why is not None:
                    row["skipped"] = why
                    history[key] = {
                        "T": T,
                        "compile_s": row["compile_s"],
                        "first_call_s": proj.get("first_call_s") if proj else None,
                        "run_s": proj.get("run_s") if proj else None,
                    }
                    log(
                        f"  {name} {dtype} {method}/{form}: compiled in "
                        f"{row['compile_s']:.1f} s, run skipped ({why})"
                    )
                    continue
            first_s, out = H.time_call(compiled, jargs)  # warm-up
            row["first_call_s"] = first_s
            row["checks"] = M.checks(out, prob.refs, False)
            row["checks_on"] = {"T": T, "sequences": 1}
            timed[method][f"{method}/{form}"] = (compiled, jargs)
            log(
                f"  {name} {dtype} {method}/{form}: compile {row['compile_s']:.2f} s, "
                f"first call {first_s:.3f} s"
            )

    # sequential rows round-robin, parallel rows round-robin (rows of similar cost
    # share a time budget; the slow CPU parallel rows do not starve the others)
    run_s: dict[str, dict[str, float | int]] = {}
    for method in METHODS:
        if timed[method]:
            slowest = max(
                r["first_call_s"]
                for r in rows
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
    for row in rows:
        p = row["params"]
        label = f"{p['method']}/{p['form']}"
        if label in run_s:
            row["run_s"] = run_s[label]
            row["throughput"] = {"steps_per_s": T / run_s[label]["median"]}
            if p["method"] == "parallel":
                history[(d, p["form"], dtype)] = {
                    "T": T,
                    "compile_s": row["compile_s"],
                    "first_call_s": row["first_call_s"],
                    "run_s": run_s[label]["median"],
                }
        else:
            row["run_s"] = None
        c = row.get("checks")
        log(
            f"  {name:16s} {dtype:8s} {label:20s} "
            + (
                f"run {row['run_s']['median'] * 1e3:11.3f} ms (n={row['run_s']['n']})  "
                if row["run_s"]
                else "run      skipped          "
            )
            + (f"compile {row['compile_s']:6.2f} s  " if row["compile_s"] else "")
            + (
                f"err(mean) {c['max_abs_err_vs_reference']:.1e} "
                f"err(ll) {c['loglik_rel_err_vs_reference']:.1e}"
                if c
                else ""
            )
        )
    return rows


def parallel_vs_sequential(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per (d, T, dtype, form) of the filter rows: parallel vs sequential."""
    out: dict[tuple, dict[str, Any]] = {}
    for r in rows:
        p = r["params"]
        if p["section"] != "filter":
            continue
        entry = out.setdefault(
            (p["size"], p["dtype"], p["form"]),
            {k: p[k] for k in ("size", "d", "m", "T", "dtype", "form")},
        )
        meth = p["method"]
        entry[f"{meth}_run_s"] = r["run_s"]["median"] if r["run_s"] else None
        entry[f"{meth}_run_min_s"] = r["run_s"]["min"] if r["run_s"] else None
        entry[f"{meth}_compile_s"] = r["compile_s"]
        entry[f"{meth}_first_call_s"] = r.get("first_call_s")
        if r["skipped"]:
            entry[f"{meth}_skipped"] = r["skipped"]
    for entry in out.values():
        seq, par = entry.get("sequential_run_s"), entry.get("parallel_run_s")
        both = bool(seq and par)
        entry["ratio_parallel_over_sequential"] = par / seq if both else None
        entry["ratio_parallel_over_sequential_min"] = (
            entry["parallel_run_min_s"] / entry["sequential_run_min_s"]
            if both
            else None
        )
        entry["speedup_parallel_vs_sequential"] = seq / par if both else None
    return list(out.values())


# ------------------------------------------------------------------ sharded batch


def sharded_run(k: int, args) -> dict[str, Any]:
    """The row of ``jax.jit(kj.batch_map(fn, mesh))`` on ``k`` devices of this
    process."""
    devices = jax.devices()
    if len(devices) < k:
        raise RuntimeError(f"sharded: {k} devices asked, {len(devices)} present")
    cfg = SHARDED
    prob = M.problem(
        args.seed,
        cfg["d"],
        cfg["m"],
        cfg["T"],
        cfg["batch"],
        "float32",
        CHECK_SEQUENCES,
    )
    model_j, ys_j = prob.on_device()
    seq_fn = M.kalmanjax_filter(cfg["form"])

    def one(y):
        return seq_fn(model_j, y)

    mesh = kj.batch_mesh(devices=devices[:k])
    ys_s = kj.shard_batch(ys_j, mesh=mesh)
    compiled, ct = H.compile_fn(kj.batch_map(one, mesh=mesh), ys_s)
    first_s, out = H.time_call(compiled, (ys_s,))
    run_s = H.time_interleaved(
        {"sharded": (compiled, (ys_s,))},
        repeats=args.repeats,
        max_time_s=args.max_time,
        min_repeats=args.min_repeats,
    )["sharded"]
    # the same batch with plain vmap on one device, in this process
    single = jax.jit(jax.vmap(one))(ys_j)
    out_devices = {dev.id for dev in out[1].sharding.device_set}
    return {
        "params": {"section": "sharded", "devices": k, **SHARDED_PARAMS},
        "returns": RETURNS["sharded"],
        "skipped": None,
        "devices_used": len(out_devices),
        "backend": jax.default_backend(),
        "device_kind": devices[0].device_kind,
        "device_count": len(devices),
        **ct,
        "first_call_s": first_s,
        "run_s": run_s,
        "throughput": {
            "sequences_per_s": cfg["batch"] / run_s["median"],
            "steps_per_s": cfg["batch"] * cfg["T"] / run_s["median"],
        },
        "checks": M.checks(out, prob.refs, True),
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
        "-m",
        "benchmarks.bench_parallel",
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
    }
    proc = subprocess.run(
        _worker_cmd(k, args),
        capture_output=True,
        text=True,
        timeout=args.worker_timeout,
        env=env,
        cwd=H.REPO_ROOT,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"sharded worker k={k} failed (exit {proc.returncode}):\n"
            f"{proc.stderr[-4000:]}"
        )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def sharded_settings(args) -> dict[str, Any]:
    """The sharded section's configuration, device counts and how it runs here."""
    ks = args.device_counts or (
        QUICK_DEVICE_COUNTS if args.quick else FULL_DEVICE_COUNTS
    )
    backend = jax.default_backend()
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
    return {**SHARDED_PARAMS, "device_counts": ks, "note": note}


def sharded_rows(ks: list[int], args) -> list[dict[str, Any]]:
    """One row per device count, compared with the 1-device row."""
    backend = jax.default_backend()
    rows = []
    for k in ks:
        if backend == "cpu":
            r = _sharded_subprocess(k, args)
        elif k <= jax.device_count():
            r = sharded_run(k, args)
        else:
            rows.append(
                {
                    "params": {"section": "sharded", "devices": k, **SHARDED_PARAMS},
                    "returns": RETURNS["sharded"],
                    "skipped": f"only {jax.device_count()} {backend} devices",
                }
            )
            continue
        rows.append(r)
        H.log(
            f"  sharded batch {SHARDED['batch']} on {k} device(s): "
            f"{r['throughput']['sequences_per_s']:10.1f} sequences/s "
            f"(run {r['run_s']['median'] * 1e3:.2f} ms, compile {r['compile_s']:.2f} s)"
        )
    done = [r for r in rows if r["skipped"] is None]
    base = next((r for r in done if r["params"]["devices"] == 1), None)
    for r in done:
        if base is not None:
            a, b = np.asarray(r["logliks"]), np.asarray(base["logliks"])
            r["max_abs_diff_loglik_vs_1_device"] = float(np.max(np.abs(a - b)))
            r["max_rel_diff_loglik_vs_1_device"] = float(
                np.max(np.abs(a - b) / np.maximum(1.0, np.abs(b)))
            )
            r["speedup_vs_1_device"] = base["run_s"]["median"] / r["run_s"]["median"]
    return rows


# ------------------------------------------------------------------------ main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The harness's common arguments and this benchmark's sizes and skip rules."""
    p = H.Parser(
        __doc__,
        repeats=(50, 3),
        max_time=(15.0, 2.0),
        compile_repeats=(1, 1),  # parallel compiles are slow on CPU
        dtypes=["float32"],
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
    p.add_argument("--sharded-worker", type=int, default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; return the payload written to ``<out>`` (a sharded
    worker prints its one row as a JSON line instead)."""
    args = parse_args(argv)
    if args.matmul_precision is not None:
        jax.config.update("jax_default_matmul_precision", args.matmul_precision)
    if args.sharded_worker is not None:
        row = sharded_run(args.sharded_worker, args)
        print(json.dumps(H.jsonable(row)), flush=True)
        return row

    ds = args.ds or (QUICK_DS if args.quick else FULL_DS)
    ts = args.Ts or (QUICK_TS if args.quick else FULL_TS)
    sharded = sharded_settings(args) if args.sharded else None
    settings = H.settings(
        args,
        sizes=[
            {"size": size_name(d, OBS_DIM[d], t), "d": d, "m": OBS_DIM[d], "T": t}
            for d in ds
            for t in ts
        ],
        methods=list(METHODS),
        forms=list(FORMS),
        min_repeats=args.min_repeats,
        slow_min_repeats=args.slow_min_repeats,
        skip_rules=None
        if jax.default_backend() != "cpu" or args.no_skip
        else {"max_compile_s": args.max_compile, "max_run_s": args.max_run},
        matmul_precision=jax.config.jax_default_matmul_precision,
        returns=RETURNS,
        sharded=sharded,
    )
    out = H.Output(BENCHMARK, args, settings)
    H.log(f"{BENCHMARK}: d {ds}, T {ts}")
    M.warm_up(args.dtypes)
    history: dict = {}
    for d in ds:
        for t in sorted(ts):
            for dtype in args.dtypes:
                with jax.enable_x64(dtype == "float64"):
                    out.rows.extend(run_size(d, t, dtype, args, history))
            out.summary["parallel_vs_sequential"] = parallel_vs_sequential(out.rows)
            out.save()  # partial results survive a timeout
    if sharded is not None:
        out.rows.extend(sharded_rows(sharded["device_counts"], args))
    return out.save(complete=True)


if __name__ == "__main__":
    main()
