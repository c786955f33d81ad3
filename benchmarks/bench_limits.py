"""Benchmark: per-step cost of the limit filters of ``kalmanjax.limits`` against
the optax optimisers they degenerate to (same jit, same sizes).

Every timed function runs ``T`` steps of in-context linear regression with
``k`` parameters, one scalar token per step (``h(theta, u) = x_t . theta``),
inside one ``jax.jit`` (a ``lax.scan`` over the tokens) and returns the final
parameters, shape ``(k,)``. Rows:

* ``optax_sgd``: ``jax.grad`` of ``1/2 (y - x.theta)^2`` + ``optax.sgd(eta)``
  (the baseline, ratio 1);
* ``gd_limit_filter``: ``kj.run(kl.gd_limit_filter(h, eta), ...)``, one VJP per
  token, O(k) memory;
* ``gd_limit_transformation``: ``optax.sgd`` replaced by
  ``kl.gd_limit_transformation(eta)``;
* ``frozen_filter``: the filter on the path, ``kl.frozen_covariance_filter``
  with ``P = eta I`` (a k x k covariance, O(k^2));
* ``kaczmarz``: ``kl.projection_filter(h, frozen=True)`` (R = 0, P = I, O(k^2));
* ``natural_gradient_filter``: the Q = 0 (extended) Kalman filter, O(k^2) per
  token;
* ``natural_gradient_transformation``: online NGD in optax form, accumulating the
  k x k Fisher estimate and solving with it (Cholesky, O(k^3) per token).

Per-step time is the median run time divided by ``T``; ``ratio_vs_optax_sgd``
divides it by the ``optax_sgd`` row's at the same ``k``. Every row also records
its maximum error against a NumPy float64 recursion (``tests/reference/limits.py``).

Run ``python benchmarks/bench_limits.py --help``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

import kalmanjax as kj  # noqa: E402
from benchmarks import _harness as H  # noqa: E402
from kalmanjax import limits as kl  # noqa: E402
from tests.reference import limits as ref  # noqa: E402

BENCHMARK = "bench_limits"
FULL_KS = [4, 64, 1024]
QUICK_KS = [4, 16]
FULL_T = 256
QUICK_T = 16
ETA = 0.05
#: the GD limit must cost no more than optax.sgd within this factor (the issue)
GD_LIMIT_BUDGET = 1.2

METHODS = (
    "optax_sgd",
    "gd_limit_filter",
    "gd_limit_transformation",
    "frozen_filter",
    "kaczmarz",
    "natural_gradient_filter",
    "natural_gradient_transformation",
)
#: the rows that hold only the k parameters (timed as one round-robin group)
CHEAP = ("optax_sgd", "gd_limit_filter", "gd_limit_transformation")
#: largest k timed per method (the O(k^3) online-NGD solve is skipped above it)
MAX_K = {"natural_gradient_transformation": 256}
#: floats held per step in the state (k parameters)
STATE_FLOATS = {
    "optax_sgd": lambda k: k,
    "gd_limit_filter": lambda k: k,
    "gd_limit_transformation": lambda k: k,
    "frozen_filter": lambda k: k + k * k,
    "kaczmarz": lambda k: k + k * k,
    "natural_gradient_filter": lambda k: k + k * k,
    "natural_gradient_transformation": lambda k: k + k * k + 1,
}


def h(theta, u):
    return u["x"] @ theta


def loss(theta, u):
    return 0.5 * jnp.sum((u["obs"] - h(theta, u)) ** 2)


def _optax_loop(tx):
    def fn(m0, xs):
        def body(carry, u):
            theta, state = carry
            upd, state = tx.update(jax.grad(loss)(theta, u), state, theta, inputs=u)
            return (optax.apply_updates(theta, upd), state), None

        (theta, _), _ = jax.lax.scan(body, (m0, tx.init(m0)), xs)
        return theta

    return fn


def _filter_loop(filt, cov_scale=None):
    def fn(m0, xs):
        if cov_scale is None:
            start = m0
        else:
            start = kj.Gaussian(m0, cov_scale * jnp.eye(m0.shape[0], dtype=m0.dtype))
        final = kj.run(filt, start, xs, lean=True).final
        return final if cov_scale is None else final.mean

    return fn


def methods() -> dict[str, Any]:
    return {
        "optax_sgd": _optax_loop(optax.with_extra_args_support(optax.sgd(ETA))),
        "gd_limit_filter": _filter_loop(kl.gd_limit_filter(h, ETA)),
        "gd_limit_transformation": _optax_loop(
            optax.with_extra_args_support(kl.gd_limit_transformation(ETA))
        ),
        "frozen_filter": _filter_loop(kl.frozen_covariance_filter(h, 1.0), ETA),
        "kaczmarz": _filter_loop(kl.projection_filter(h, frozen=True), 1.0),
        "natural_gradient_filter": _filter_loop(
            kl.natural_gradient_filter(h, 1.0), 1.0
        ),
        "natural_gradient_transformation": _optax_loop(
            kl.natural_gradient_transformation(h, 1.0, 1.0)
        ),
    }


def make_problem(seed: int, k: int, T: int):
    rng = np.random.default_rng(seed)
    theta = rng.normal(size=k)
    x = rng.normal(size=(T, 1, k)) / np.sqrt(k)
    y = x @ theta + 0.1 * rng.normal(size=(T, 1))
    return {"obs": y, "x": x}


def references(xs: dict, k: int) -> dict[str, np.ndarray]:
    m0 = np.zeros(k)
    lin = ref.linear_model()
    sgd = ref.sgd(lin, m0, xs, ETA)
    ngd = ref.online_natural_gradient(lin, m0, xs, np.eye(k), np.eye(1))[-1]
    X, y = xs["x"][:, 0, :], xs["obs"][:, 0]
    return {
        "optax_sgd": sgd,
        "gd_limit_filter": sgd,
        "gd_limit_transformation": sgd,
        "frozen_filter": ref.frozen_kalman(lin, m0, xs, ETA * np.eye(k), np.eye(1)),
        "kaczmarz": ref.kaczmarz(X, y, 1),
        "natural_gradient_filter": ngd,
        "natural_gradient_transformation": ngd,
    }


def _rotating_rounds(calls: dict, repeats: int, max_time: float, min_repeats: int):
    """Round-robin timing whose order rotates every round (no row always first)."""
    names = list(calls)
    times: dict[str, list[float]] = {n: [] for n in names}
    total = 0.0
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            fn, fargs = calls[name]
            t, _ = H.time_call(fn, fargs)
            times[name].append(t)
            total += t
        if r + 1 >= min_repeats and total > max_time:
            break
    return {n: H.summarize(ts) for n, ts in times.items()}


def run_k(k: int, args, log) -> list[dict[str, Any]]:
    T = args.T or (QUICK_T if args.quick else FULL_T)
    xs64 = make_problem(args.seed, k, T)
    refs = references(xs64, k)
    dtype = jnp.float32
    xs = {key: jnp.asarray(v, dtype) for key, v in xs64.items()}
    m0 = jnp.zeros(k, dtype)
    rows, calls = [], {}
    for name, fn in methods().items():
        row: dict[str, Any] = {
            "params": {
                "k": k,
                "T": T,
                "obs_dim": 1,
                "dtype": "float32",
                "method": name,
            },
            "state_bytes": 4 * STATE_FLOATS[name](k),
            "skipped": None,
        }
        rows.append(row)
        if k > MAX_K.get(name, k):
            row["skipped"] = (
                f"k = {k} > {MAX_K[name]}: O(k^3) per step (a k x k Cholesky per "
                f"token), minutes per run on CPU; see the smaller k"
            )
            log(f"  k={k} {name}: skipped")
            continue
        compiled, ctimes = H.compile_fn(fn, m0, xs)
        first_s, out = H.time_call(compiled, (m0, xs))
        err = float(np.max(np.abs(np.asarray(out, np.float64) - refs[name])))
        scale = float(np.max(np.abs(refs[name])))
        calls[name] = (compiled, (m0, xs))
        row.update(ctimes)
        row["first_call_s"] = first_s
        row["checks"] = {"max_abs_err_vs_reference": err, "max_abs_reference": scale}
        log(f"  k={k} {name}: compile {ctimes['compile_s']:.2f} s, err {err:.2e}")
    # two round-robin groups: the O(k) rows among themselves, the filters among
    # themselves (a cheap row timed right after an O(k^2) one pays for the evicted
    # caches); a group whose slowest first call exceeds --max-time keeps >= 1 round
    timings = {}
    for group in (CHEAP, tuple(m for m in METHODS if m not in CHEAP)):
        group_calls = {m: calls[m] for m in group if m in calls}
        slow = max(
            r["first_call_s"] for r in rows if r["params"]["method"] in group_calls
        )
        timings.update(
            _rotating_rounds(
                group_calls,
                args.repeats,
                args.max_time,
                1 if slow > args.max_time else 3,
            )
        )
    base = timings["optax_sgd"]["median"] / T
    for row in rows:
        name = row["params"]["method"]
        if name not in timings:
            row["run_s"] = row["per_step_s"] = row["ratio_vs_optax_sgd"] = None
            continue
        row["run_s"] = timings[name]
        row["per_step_s"] = timings[name]["median"] / T
        row["ratio_vs_optax_sgd"] = row["per_step_s"] / base
        log(
            f"  k={k} {name}: {row['per_step_s'] * 1e6:.2f} us/step "
            f"(x{row['ratio_vs_optax_sgd']:.2f})"
        )
    return rows


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes, few repeats")
    p.add_argument("--out", type=Path, default=None, help="output JSON path")
    p.add_argument("--repeats", type=int, default=None, help="timed rounds")
    p.add_argument(
        "--max-time",
        type=float,
        default=None,
        help="seconds of timed rounds per k before stopping early",
    )
    p.add_argument("--ks", nargs="+", type=int, default=None, help="parameter counts")
    p.add_argument("--T", type=int, default=None, help="tokens per run")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.repeats is None:
        args.repeats = 3 if args.quick else 50
    if args.max_time is None:
        args.max_time = 1.0 if args.quick else 20.0
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    ks = args.ks or (QUICK_KS if args.quick else FULL_KS)
    log = H.print_err
    env = H.env_info(extra_packages=("optax",))
    out = (
        args.out
        or _ROOT / "benchmarks" / "results" / f"{BENCHMARK}_{H.device_slug()}.json"
    )
    log(f"{BENCHMARK}: {env['backend']} ({env['device_kind']}), k {ks}")
    payload: dict[str, Any] = {
        "schema_version": H.SCHEMA_VERSION,
        "benchmark": BENCHMARK,
        "env": env,
        "config": {
            "quick": args.quick,
            "ks": ks,
            "T": args.T or (QUICK_T if args.quick else FULL_T),
            "learning_rate": ETA,
            "methods": list(METHODS),
            "repeats": args.repeats,
            "max_time_s": args.max_time,
            "gd_limit_budget": GD_LIMIT_BUDGET,
            "seed": args.seed,
        },
        "complete": False,
        "results": [],
        "summary": [],
    }
    for k in ks:
        rows = run_k(k, args, log)
        payload["results"] += rows
        ratio = {r["params"]["method"]: r["ratio_vs_optax_sgd"] for r in rows}
        ratio = {m: v for m, v in ratio.items() if v is not None}
        payload["summary"].append(
            {
                "k": k,
                "ratio_vs_optax_sgd": ratio,
                "gd_limit_within_budget": ratio["gd_limit_filter"] <= GD_LIMIT_BUDGET,
            }
        )
        H.write_json(out, payload)
    payload["complete"] = True
    env["loadavg_end"] = H.loadavg()
    H.write_json(out, payload)
    log(f"wrote {out}")
    return payload


if __name__ == "__main__":
    main()
