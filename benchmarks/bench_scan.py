r"""Benchmark: the two parallel prefix scans against the length ``T``.

``"tree"`` is ``lax.associative_scan``, which inlines the combine about
:math:`2\log_2 T` times, so its program and its compile grow with ``T``;
``"blocked"`` is :func:`kalmanjax.core.scan.prefix_scan`'s default, sequential
inside about :math:`\sqrt T` blocks on CPU (``T / 16`` elsewhere) and doubling
across them, a program whose size does not depend on ``T``. ``"sequential"`` is
the ``lax.scan`` filter, for scale. The model is ``bench_parallel``'s (``d = 4``,
``m = 2``, float32, the dense form unless ``--forms`` says otherwise).

Tasks (``params.task``), each a function of ``(model, ys)``:

* ``filter``: ``kj.run(kalman_filter(...), prior, ys, parallel=method)``, returns
  the log marginal likelihood and the filtered means ``(T, d)``;
* ``smoother``: ``kj.kalman_smoother(..., parallel=method)``, returns the log
  marginal likelihood and the smoothed means ``(T, d)``;
* ``gradient``: ``jax.grad`` of the filter's log marginal likelihood with respect
  to every model array ``(m0, P0, F, Q, H, R)``, returned flattened.

Row fields: ``compile_s`` (``compile.lower_s`` + ``compile.xla_compile_s``),
``program`` (operations in the lowered StableHLO and in XLA's optimised HLO: a loop
body counts once), ``memory`` (XLA's account of argument, output and temporary
bytes), ``first_call_s``, ``run_s`` and ``checks``: the filter and the smoother
against NumPy float64 references (``max_abs_err_vs_reference``,
``loglik_rel_err_vs_reference``) up to :data:`REFERENCE_MAX_T`, every row against
the sequential row of its task (``rel_diff_vs_sequential``: per output, the
largest absolute difference over ``max(1, largest |value|)``, the worst output).

On CPU a row is skipped where its compile, projected from the two shorter lengths,
exceeds ``--max-compile``, or its first call plus timed runs, projected linearly
in ``T``, exceed ``--max-run`` (the row then keeps its compile). The summary gives,
per task and ``T``, blocked over tree for compile and run, and the targets of the
scan (CPU: compile <= 5 s up to ``T = 1e5`` forward, <= 10 s for the gradient;
run <= 1.5x the tree scan).

Run ``python -m benchmarks.bench_scan --help``; see ``benchmarks/README.md``.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import kalmanjax as kj
from benchmarks import _harness as H
from benchmarks import _models as M
from kalmanjax.core.scan import default_num_blocks

BENCHMARK = "bench_scan"
D, M_OBS = 4, 2
FULL_TS = [100, 1_000, 10_000, 100_000, 1_000_000]
QUICK_TS = [64]
TASKS = ("filter", "smoother", "gradient")
METHODS = ("sequential", "tree", "blocked")
FORMS = ("dense", "sqrt")
#: the NumPy float64 references run up to this length (a Python loop per step)
REFERENCE_MAX_T = 100_000
#: the targets: forward compile up to this length, and the run-time ratio
TARGETS = {
    "forward_compile_s": 5.0,
    "forward_compile_max_T": 100_000,
    "gradient_compile_s": 10.0,
    "run_over_tree": 1.5,
}

RETURNS = {
    "filter": "kj.run(kj.kalman_filter(dyn, obs, form=form), prior, ys, "
    "parallel=method): sum of infos.log_likelihood, states.mean",
    "smoother": "kj.kalman_smoother(dyn, obs, prior, ys, form=form, "
    "parallel=method): log_marginal_likelihood, smoothed.mean",
    "gradient": "jax.grad of the filter's sum of infos.log_likelihood with respect "
    "to (m0, P0, F, Q, H, R), concatenated",
}


def _parallel(method: str) -> bool | str:
    return False if method == "sequential" else method


def task_fn(task: str, method: str, form: str):
    """``fn(model, ys)`` of one row: see the module docstring."""
    parallel = _parallel(method)

    def parts(model):
        dyn = kj.LinearDynamics(model["F"], model["Q"])
        obs = kj.LinearObservation(model["H"], model["R"])
        return dyn, obs, kj.Gaussian(model["m0"], model["P0"])

    def loglik(model, ys):
        dyn, obs, prior = parts(model)
        filt = kj.kalman_filter(dyn, obs, form=form)
        res = kj.run(filt, prior, ys, parallel=parallel)
        return jnp.sum(res.infos.log_likelihood), res.states.mean

    if task == "filter":
        return loglik
    if task == "smoother":

        def smooth(model, ys):
            dyn, obs, prior = parts(model)
            res = kj.kalman_smoother(dyn, obs, prior, ys, form=form, parallel=parallel)
            return res.log_marginal_likelihood, res.smoothed.mean

        return smooth
    if task == "gradient":

        def gradient(model, ys):
            grads = jax.grad(lambda mdl: loglik(mdl, ys)[0])(model)
            return jnp.concatenate([jnp.ravel(grads[k]) for k in sorted(grads)])

        return gradient
    raise ValueError(f"task must be one of {TASKS}, got {task!r}")


def _leaves(out) -> list[np.ndarray]:
    return [np.asarray(x, np.float64) for x in jax.tree_util.tree_leaves(out)]


def _rel_diff(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    """The worst output of a row against the same output of another: the largest
    absolute difference over ``max(1, largest |value|)`` of that output."""
    return max(
        float(np.max(np.abs(x - y)) / max(1.0, float(np.max(np.abs(y)))))
        for x, y in zip(a, b, strict=True)
    )


def _projected_compile(history: list[tuple[int, float]], T: int) -> float | None:
    """The next compile from the last two ``(T, compile_s)``: the last one times
    its growth per decade of ``T`` (at least 1), carried to ``T``."""
    if len(history) < 2:
        return None
    (t0, c0), (t1, c1) = history[-2:]
    growth = max(1.0, c1 / c0) ** (math.log10(T / t1) / math.log10(t1 / t0))
    return c1 * growth


def run_length(T: int, args, history: dict) -> list[dict[str, Any]]:
    """The rows of one length: every task x form x method; ``history`` carries the
    compile times and first calls of the shorter lengths per row kind."""
    reference = T <= REFERENCE_MAX_T
    prob = M.problem(args.seed, D, M_OBS, T, None, "float32", reference=None)
    model_j, ys_j = prob.on_device()
    refs: dict[str, tuple[float, np.ndarray]] = {}
    if reference:
        refs["filter"] = M.reference_filter(prob.model, prob.ys)
        refs["smoother"] = M.reference_smoother(prob.model, prob.ys)
    on_cpu = jax.default_backend() == "cpu" and not args.no_skip
    rows: list[dict[str, Any]] = []
    for task in args.tasks:
        for form in args.forms:
            group: dict[str, tuple] = {}
            outs: dict[str, list[np.ndarray]] = {}
            slowest = 0.0
            for method in METHODS:
                key = (task, form, method)
                past = history.setdefault(key, [])
                params = {"task": task, "form": form, "method": method, "T": T}
                params |= {"d": D, "m": M_OBS, "dtype": "float32"}
                row: dict[str, Any] = {"params": params, "returns": RETURNS[task]}
                row["skipped"] = None
                rows.append(row)
                proj = _projected_compile([(t, c) for t, c, _ in past], T)
                if on_cpu and proj is not None and proj > args.max_compile:
                    row["skipped"] = (
                        f"projected compile {proj:.0f} s > --max-compile "
                        f"{args.max_compile:.0f} s on CPU"
                    )
                    row["compile_s"] = None
                    H.log(f"  T={T} {task}/{form}/{method}: {row['skipped']}")
                    continue
                fn = task_fn(task, method, form)
                compiled, ct = H.compile_fn(fn, model_j, ys_j, program=True)
                row.update(ct)
                row["memory"] = H.memory(compiled)
                last = past[-1] if past else None
                if on_cpu and last is not None and last[2] is not None:
                    first = last[2] * T / last[0]
                    cost = first * (1 + args.min_repeats)
                    if cost > args.max_run:
                        row["skipped"] = (
                            f"projected first call + {args.min_repeats} runs "
                            f"{cost:.0f} s (linear in T from T={last[0]}) > "
                            f"--max-run {args.max_run:.0f} s on CPU"
                        )
                        past.append((T, row["compile_s"], None))
                        H.log(
                            f"  T={T} {task}/{form}/{method}: compile "
                            f"{row['compile_s']:.1f} s, run {row['skipped']}"
                        )
                        continue
                first_s, out = H.time_call(compiled, (model_j, ys_j))
                row["first_call_s"] = first_s
                slowest = max(slowest, first_s)
                past.append((T, row["compile_s"], first_s))
                outs[method] = _leaves(out)
                checks: dict[str, float] = {}
                if task in refs:
                    checks |= M.checks(out, [refs[task]], False)
                row["checks"] = checks
                group[method] = (compiled, (model_j, ys_j))
                H.log(
                    f"  T={T} {task}/{form}/{method}: compile "
                    f"{row['compile_s']:.2f} s, first call {first_s:.3f} s, "
                    f"program {row['program']}"
                )
            if "sequential" in outs:
                for row in rows[-len(METHODS) :]:
                    method = row["params"]["method"]
                    if method in outs:
                        row["checks"]["rel_diff_vs_sequential"] = _rel_diff(
                            outs[method], outs["sequential"]
                        )
            min_repeats = 1 if slowest > args.max_time else args.min_repeats
            times = (
                H.time_interleaved(
                    group,
                    repeats=args.repeats,
                    max_time_s=args.max_time,
                    min_repeats=min_repeats,
                    rotate=True,
                )
                if group
                else {}
            )
            for row in rows[-len(METHODS) :]:
                method = row["params"]["method"]
                row["run_s"] = times.get(method)
                if row["run_s"] is not None:
                    row["throughput"] = {"steps_per_s": T / row["run_s"]["median"]}
                    H.log(
                        f"  T={T} {task}/{form}/{method}: run "
                        f"{row['run_s']['median'] * 1e3:.2f} ms (n={row['run_s']['n']})"
                    )
    return rows


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Blocked over tree per ``(task, form, T)``, the program sizes against ``T``
    and the targets (``None`` where a row is missing)."""
    by: dict[tuple, dict[str, dict]] = {}
    for r in rows:
        p = r["params"]
        by.setdefault((p["task"], p["form"], p["T"]), {})[p["method"]] = r

    def get(r, *path):
        for k in path:
            if r is None:
                return None
            r = r.get(k)
        return r

    ratios = []
    order = {task: i for i, task in enumerate(TASKS)}
    for (task, form, T), rs in sorted(
        by.items(), key=lambda kv: (order[kv[0][0]], *kv[0][1:])
    ):
        entry: dict[str, Any] = {"task": task, "form": form, "T": T}
        for name, r in rs.items():
            entry[f"{name}_compile_s"] = get(r, "compile_s")
            entry[f"{name}_run_s"] = get(r, "run_s", "median")
            entry[f"{name}_temp_bytes"] = get(r, "memory", "temp_size_in_bytes")
            entry[f"{name}_stablehlo_ops"] = get(r, "program", "stablehlo_ops")
        for field in ("compile_s", "run_s"):
            a, b = entry.get(f"blocked_{field}"), entry.get(f"tree_{field}")
            entry[f"blocked_over_tree_{field[:-2]}"] = a / b if a and b else None
        gradient = task == "gradient"
        limit = TARGETS["gradient_compile_s" if gradient else "forward_compile_s"]
        in_range = gradient or T <= TARGETS["forward_compile_max_T"]
        comp = entry.get("blocked_compile_s")
        entry["compile_target_s"] = limit if in_range else None
        entry["compile_target_met"] = (
            None if comp is None or not in_range else bool(comp <= limit)
        )
        ratio = entry["blocked_over_tree_run"]
        entry["run_target_met"] = (
            None if ratio is None else bool(ratio <= TARGETS["run_over_tree"])
        )
        ratios.append(entry)

    programs: dict[str, Any] = {}
    for r in rows:
        p = r["params"]
        ops = get(r, "program", "stablehlo_ops")
        if ops is None or p["method"] == "sequential":
            continue
        key = f"{p['task']}/{p['form']}/{p['method']}"
        programs.setdefault(key, {})[str(p["T"])] = ops
    met = [e[k] for e in ratios for k in ("compile_target_met", "run_target_met")]
    return {
        "blocked_vs_tree": ratios,
        "stablehlo_ops_by_T": programs,
        "targets": TARGETS,
        # False once one is missed; None while one is unmeasured (a skipped row)
        "all_targets_met": False
        if False in met
        else (None if None in met or not met else True),
        "targets_missed": [
            f"{e['task']}/{e['form']} T={e['T']}: "
            + ", ".join(
                k for k in ("compile_target_met", "run_target_met") if e[k] is False
            )
            for e in ratios
            if False in (e["compile_target_met"], e["run_target_met"])
        ],
    }


def parse_args(argv: list[str] | None):
    """The harness's common arguments, the lengths, tasks, forms and CPU skip rules."""
    p = H.Parser(__doc__, repeats=(10, 3), max_time=(10.0, 1.0), dtypes=None)
    p.add_argument("--Ts", nargs="+", type=int, default=None, help="lengths")
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    p.add_argument("--forms", nargs="+", default=["dense"], choices=FORMS)
    p.add_argument(
        "--min-repeats",
        type=int,
        default=2,
        help="timed rounds kept at least when --max-time cuts in (1 for a group "
        "whose slowest first call exceeds --max-time)",
    )
    p.add_argument(
        "--max-compile",
        type=float,
        default=240.0,
        help="CPU only: skip a row whose projected compile exceeds this (seconds)",
    )
    p.add_argument(
        "--max-run",
        type=float,
        default=120.0,
        help="CPU only: skip running a row whose projected first call and "
        "--min-repeats runs exceed this (seconds)",
    )
    p.add_argument("--no-skip", action="store_true", help="never skip a row")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; return the payload written to ``<out>``."""
    args = parse_args(argv)
    ts = sorted(args.Ts or (QUICK_TS if args.quick else FULL_TS))
    settings = H.settings(
        args,
        Ts=ts,
        tasks=args.tasks,
        forms=args.forms,
        methods=list(METHODS),
        d=D,
        m=M_OBS,
        dtype="float32",
        num_blocks={str(t): default_num_blocks(t) for t in ts},
        reference_max_T=REFERENCE_MAX_T,
        min_repeats=args.min_repeats,
        skip_rules=None
        if jax.default_backend() != "cpu" or args.no_skip
        else {"max_compile_s": args.max_compile, "max_run_s": args.max_run},
        returns=RETURNS,
    )
    out = H.Output(BENCHMARK, args, settings)
    H.log(f"{BENCHMARK}: T {ts}, tasks {args.tasks}, forms {args.forms}")
    M.warm_up(["float32"])
    history: dict = {}
    for T in ts:
        out.rows.extend(run_length(T, args, history))
        out.summary.update(summarize(out.rows))
        out.save()  # partial results survive a timeout
    return out.save(complete=True)


if __name__ == "__main__":
    main()
