"""Benchmark: the structured-covariance filters against the state size ``k``.

Online linear regression with ``k`` parameters, one scalar reading per step
(``y_t = x_t . theta + v_t``, a static state ``F = 1, Q = 0``), ``T`` steps inside
one ``jax.jit`` (``kj.run(..., lean=True)``), float32. Rows:

* ``dense``: ``kj.kalman_filter`` (a ``k x k`` covariance, ``O(k^2)`` memory and
  ``O(k^3)`` per step for the predict ``F P F^T``; run up to :data:`DENSE_MAX_K`);
* ``diagonal``: ``kj.diagonal_filter`` (``O(k)``);
* ``low_rank_r10``, ``low_rank_r20``: ``kj.low_rank_filter`` with rank 10 / 20
  (``O(k (r + 1)^2)`` time, ``O(k (r + 1))`` memory).

Per-step time is the median run time divided by ``T``; ``state_floats`` is the size
of the belief; ``memory`` is XLA's own account of the compiled program (argument,
output and temporary bytes) where the backend gives one. The summary fits log-log
slopes of the per-step time against ``k`` over the sizes at least
:data:`SLOPE_MIN_K` (below it the step is per-op overhead). Every row also records
its error against NumPy float64: the dense Kalman filter's final mean where
``k <= REFERENCE_MAX_K``; for a low-rank row whose rank holds all ``T`` readings
this is rounding, else it is the truncation (reported, not bounded).

Run ``python -m benchmarks.bench_structured --help``.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np

import kalmanjax as kj
from benchmarks import _harness as H

BENCHMARK = "bench_structured"
FULL_KS = [100, 1_000, 10_000, 100_000, 1_000_000]
QUICK_KS = [16, 64]
FULL_T = 64
QUICK_T = 8
#: the dense rows stop here (the predict is O(k^3) per step)
DENSE_MAX_K = 1_000
#: the NumPy float64 reference (O(k^2) memory, O(k^3) per step) stops here
REFERENCE_MAX_K = 1_000
#: per-step times are fitted against k from this size up
SLOPE_MIN_K = 1_000
NOISE_VAR = 0.01

METHODS = ("dense", "diagonal", "low_rank_r10", "low_rank_r20")
STATE_FLOATS = {
    "dense": lambda k: k + k * k,
    "diagonal": lambda k: 2 * k,
    "low_rank_r10": lambda k: 2 * k + 10 * k,
    "low_rank_r20": lambda k: 2 * k + 20 * k,
}


def _observation(u):
    return kj.LinearObservation(
        H=u["x"][None, :], R=jnp.full((1, 1), NOISE_VAR, u["x"].dtype)
    )


def _filter(name: str, k: int, dtype):
    if name == "dense":
        dyn = kj.LinearDynamics(F=jnp.eye(k, dtype=dtype), Q=jnp.zeros((k, k), dtype))
        return kj.kalman_filter(dyn, _observation, form="dense")
    static = kj.DiagonalDynamics(F=jnp.asarray(1.0, dtype), Q=jnp.asarray(0.0, dtype))
    if name == "diagonal":
        return kj.diagonal_filter(static, _observation)
    return kj.low_rank_filter(static, _observation, rank=int(name.rsplit("_r", 1)[1]))


def _runner(name: str):
    def fn(xs):
        k, dtype = xs["x"].shape[1], xs["x"].dtype
        mean, var = jnp.zeros(k, dtype), jnp.ones(k, dtype)
        prior = (
            kj.Gaussian(mean, jnp.diag(var))
            if name == "dense"
            else kj.DiagonalGaussian(mean, var)
        )
        return kj.run(_filter(name, k, dtype), prior, xs, lean=True).final.mean

    return fn


def make_problem(seed: int, k: int, T: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    theta = rng.normal(size=k)
    x = rng.normal(size=(T, k)) / np.sqrt(k)
    y = x @ theta + np.sqrt(NOISE_VAR) * rng.normal(size=T)
    return {"obs": y[:, None], "x": x}


def reference_mean(xs: dict[str, np.ndarray]) -> np.ndarray:
    """The exact posterior mean in NumPy float64 (prior N(0, I), static state)."""
    X, y = xs["x"], xs["obs"][:, 0]
    k = X.shape[1]
    return np.linalg.solve(np.eye(k) + X.T @ X / NOISE_VAR, X.T @ y / NOISE_VAR)


def _memory(compiled) -> dict[str, int] | None:
    try:
        stats = compiled.memory_analysis()
    except Exception:  # noqa: BLE001  (a backend without the account)
        return None
    if stats is None:
        return None
    fields = (
        "argument_size_in_bytes",
        "output_size_in_bytes",
        "temp_size_in_bytes",
    )
    return {f: int(getattr(stats, f)) for f in fields if hasattr(stats, f)}


def run_k(k: int, T: int, args) -> list[dict[str, Any]]:
    """All rows of one state size ``k`` over ``T`` readings."""
    xs64 = make_problem(args.seed, k, T)
    ref = reference_mean(xs64) if k <= REFERENCE_MAX_K else None
    xs = {key: jnp.asarray(v, jnp.float32) for key, v in xs64.items()}
    rows, calls = [], {}
    for name in METHODS:
        rank = None if not name.startswith("low_rank") else int(name.rsplit("_r", 1)[1])
        row: dict[str, Any] = {
            "params": {"k": k, "T": T, "obs_dim": 1, "dtype": "float32"}
            | {"method": name, "rank": rank},
            "state_floats": STATE_FLOATS[name](k),
            "skipped": None,
        }
        rows.append(row)
        if name == "dense" and k > DENSE_MAX_K:
            row["skipped"] = (
                f"k = {k} > {DENSE_MAX_K}: a k x k covariance ({4 * k * k / 1e9:.1f}"
                " GB) and O(k^3) per step"
            )
            continue
        compiled, ct = H.compile_fn(_runner(name), xs)
        _, out = H.time_call(compiled, (xs,))
        row.update(ct)
        row["memory"] = _memory(compiled)
        exact = rank is None or rank >= T
        row["checks"] = {
            "max_abs_err_vs_reference": None
            if ref is None
            else float(np.max(np.abs(np.asarray(out, np.float64) - ref))),
            "max_abs_reference": None if ref is None else float(np.max(np.abs(ref))),
            "exact_in_exact_arithmetic": name != "diagonal" and exact,
            "finite": bool(np.all(np.isfinite(np.asarray(out)))),
        }
        calls[name] = (compiled, (xs,))
        H.log(f"  k={k} {name}: compile {ct['compile_s']:.2f} s")
    timings = H.time_interleaved(
        calls, repeats=args.repeats, max_time_s=args.max_time, rotate=True
    )
    for row in rows:
        name = row["params"]["method"]
        if name not in timings:
            row["run_s"] = row["per_step_s"] = None
            continue
        row["run_s"] = timings[name]
        row["per_step_s"] = timings[name]["median"] / T
        H.log(f"  k={k} {name}: {row['per_step_s'] * 1e6:.1f} us/step")
    return rows


def slopes(rows: list[dict[str, Any]], min_k: int) -> dict[str, float | None]:
    """Log-log slope of the per-step time against k, per method, for k >= min_k."""
    out: dict[str, float | None] = {}
    for name in METHODS:
        pts = [
            (r["params"]["k"], r["per_step_s"])
            for r in rows
            if r["params"]["method"] == name
            and r["per_step_s"] is not None
            and r["params"]["k"] >= min_k
        ]
        if len(pts) < 2:
            out[name] = None
            continue
        k, t = np.log(np.array(pts, dtype=float)).T
        out[name] = float(np.polyfit(k, t, 1)[0])
    return out


def parse_args(argv: list[str] | None):
    """The harness's common arguments and the state sizes / readings."""
    p = H.Parser(__doc__, repeats=(10, 3), max_time=(20.0, 1.0))
    p.add_argument("--ks", nargs="+", type=int, default=None, help="state sizes")
    p.add_argument("--T", type=int, default=None, help="readings per run")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; return the payload written to ``<out>``."""
    args = parse_args(argv)
    ks = args.ks or (QUICK_KS if args.quick else FULL_KS)
    T = args.T or (QUICK_T if args.quick else FULL_T)
    min_k = min(ks) if args.quick else SLOPE_MIN_K
    settings = H.settings(
        args, ks=ks, T=T, methods=list(METHODS), dense_max_k=DENSE_MAX_K
    )
    settings["slope_min_k"] = min_k
    out = H.Output(BENCHMARK, args, settings)
    H.log(f"{BENCHMARK}: k {ks}, T {T}")
    for k in ks:
        out.rows.extend(run_k(k, T, args))
        out.summary["slopes_per_step_vs_k"] = slopes(out.rows, min_k)
        out.save()
    return out.save(complete=True)


if __name__ == "__main__":
    main()
