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
its maximum error against the same recursion in NumPy float64 (:func:`references`).

Run ``python -m benchmarks.bench_limits --help``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import kalmanjax as kj
from benchmarks import _harness as H
from kalmanjax import limits as kl

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


def references(xs: dict, eta: float) -> dict[str, np.ndarray]:
    """The final parameters of every row's recursion from ``theta = 0``, in NumPy
    float64, written as ``theta += gain (y - x.theta)`` with each row's gain."""
    X, y = xs["x"][:, 0, :], xs["obs"][:, 0]
    k = X.shape[1]
    recursions = ("sgd", "frozen", "kaczmarz", "natural_gradient")
    theta = {name: np.zeros(k) for name in recursions}
    information = np.eye(k)  # prior precision + sum of x x^T (the online Fisher)
    for x, obs in zip(X, y, strict=True):
        information += np.outer(x, x)
        gains = {
            "sgd": eta * x,  # gradient step on 1/2 (y - x.theta)^2
            "frozen": eta * x / (eta * (x @ x) + 1.0),  # Kalman gain, P = eta I, R = 1
            "kaczmarz": x / (x @ x),  # projection onto {theta: x.theta = y}
            "natural_gradient": np.linalg.solve(information, x),  # Q = 0, R = 1
        }
        for name, gain in gains.items():
            theta[name] = theta[name] + gain * (obs - x @ theta[name])
    return {
        "optax_sgd": theta["sgd"],
        "gd_limit_filter": theta["sgd"],
        "gd_limit_transformation": theta["sgd"],
        "frozen_filter": theta["frozen"],
        "kaczmarz": theta["kaczmarz"],
        "natural_gradient_filter": theta["natural_gradient"],
        "natural_gradient_transformation": theta["natural_gradient"],
    }


def run_k(k: int, T: int, args) -> list[dict[str, Any]]:
    """All rows of one parameter count ``k`` over ``T`` tokens."""
    xs64 = make_problem(args.seed, k, T)
    refs = references(xs64, ETA)
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
            H.log(f"  k={k} {name}: skipped")
            continue
        compiled, ct = H.compile_fn(fn, m0, xs)
        first_s, out = H.time_call(compiled, (m0, xs))
        err = float(np.max(np.abs(np.asarray(out, np.float64) - refs[name])))
        scale = float(np.max(np.abs(refs[name])))
        calls[name] = (compiled, (m0, xs))
        row.update(ct)
        row["first_call_s"] = first_s
        row["checks"] = {"max_abs_err_vs_reference": err, "max_abs_reference": scale}
        H.log(f"  k={k} {name}: compile {ct['compile_s']:.2f} s, err {err:.2e}")
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
            H.time_interleaved(
                group_calls,
                repeats=args.repeats,
                max_time_s=args.max_time,
                min_repeats=1 if slow > args.max_time else 3,
                rotate=True,
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
        H.log(
            f"  k={k} {name}: {row['per_step_s'] * 1e6:.2f} us/step "
            f"(x{row['ratio_vs_optax_sgd']:.2f})"
        )
    return rows


def parse_args(argv: list[str] | None):
    """The harness's common arguments and the parameter counts / tokens."""
    p = H.Parser(__doc__, repeats=(50, 3), max_time=(20.0, 1.0))
    p.add_argument("--ks", nargs="+", type=int, default=None, help="parameter counts")
    p.add_argument("--T", type=int, default=None, help="tokens per run")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; return the payload written to ``<out>``."""
    args = parse_args(argv)
    ks = args.ks or (QUICK_KS if args.quick else FULL_KS)
    T = args.T or (QUICK_T if args.quick else FULL_T)
    settings = H.settings(
        args,
        ks=ks,
        T=T,
        learning_rate=ETA,
        methods=list(METHODS),
        gd_limit_budget=GD_LIMIT_BUDGET,
    )
    out = H.Output(BENCHMARK, args, settings, packages=("optax",))
    H.log(f"{BENCHMARK}: k {ks}")
    out.summary["by_k"] = []
    for k in ks:
        rows = run_k(k, T, args)
        out.rows.extend(rows)
        ratio = {r["params"]["method"]: r["ratio_vs_optax_sgd"] for r in rows}
        ratio = {m: v for m, v in ratio.items() if v is not None}
        out.summary["by_k"].append(
            {
                "k": k,
                "ratio_vs_optax_sgd": ratio,
                "gd_limit_within_budget": ratio["gd_limit_filter"] <= GD_LIMIT_BUDGET,
            }
        )
        out.save()
    return out.save(complete=True)


if __name__ == "__main__":
    main()
