"""Benchmark: kalmanjax's linear Kalman filter against a bare ``lax.scan`` filter
and the peers (dynamax, cuthbert, pykalman, filterpy).

Every timed function takes the model ``(m0, P0, F, Q, H, R)`` and observations
``ys`` of shape ``(T, m)`` and returns the same two things:

* the log marginal likelihood :math:`\\log p(y_{1:T})` (a scalar), and
* the filtered means :math:`E[x_t \\mid y_{1:t}]`, shape ``(T, d)``,

for the model ``x_0 ~ N(m0, P0)``, ``x_t = F x_{t-1} + w_t``, ``y_t = H x_t + v_t``
(predict, then update, for ``t = 1..T``). Peers whose convention starts with an
observation of the initial state get the exactly equivalent prior
``N(F m0, F P0 F^T + Q)``. Unused outputs of a library (covariances, infos) are
dead code under ``jit`` and removed by XLA.

Run ``python benchmarks/bench_kalman.py --help``; see ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.scipy.linalg import cho_factor, cho_solve

_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

import kalmanjax as kj  # noqa: E402
from benchmarks import _harness as H  # noqa: E402
from kalmanjax._linalg import SMALL_MAX_DIM  # noqa: E402
from tests.reference import numpy_kalman as ref  # noqa: E402

_LOG_2PI = math.log(2.0 * math.pi)

#: (name, state d, obs m, T, batch); batch None = one sequence, else jax.vmap.
FULL_SIZES = [
    ("d4_m2_T1e3", 4, 2, 1_000, None),
    ("d4_m2_T1e5", 4, 2, 100_000, None),
    ("d32_m8_T1e4", 32, 8, 10_000, None),
    ("d128_m32_T2e3", 128, 32, 2_000, None),
    ("batch256_d4_m2_T1e3", 4, 2, 1_000, 256),
]
QUICK_SIZES = [
    ("d4_m2_T64", 4, 2, 64, None),
    ("d12_m3_T32", 12, 3, 32, None),
    ("batch4_d4_m2_T32", 4, 2, 32, 4),
]
#: NumPy peers run only up to this many steps (and never on batches).
NUMPY_PEER_MAX_T = 1_000
#: the batch sequences compared against the reference
CHECK_SEQUENCES = 2

PEERS = ("dynamax", "cuthbert", "pykalman", "filterpy")
QUICK_PEERS = ("dynamax", "cuthbert")  # the NumPy loops are slow to even start


# ------------------------------------------------------------------------- data


def make_problem(seed: int, d: int, m: int, T: int, batch: int | None):
    """A random stable model (reference ``random_model``, offsets dropped) and
    observations simulated from it; float64 NumPy."""
    rng = np.random.default_rng(seed)
    model = ref.random_model(rng, d, m)
    model = {k: model[k] for k in ("m0", "P0", "F", "Q", "H", "R")}
    n_seq = 1 if batch is None else batch
    lp = np.linalg.cholesky(model["P0"])
    lq = np.linalg.cholesky(model["Q"])
    lr = np.linalg.cholesky(model["R"])
    x = model["m0"][None, :] + rng.standard_normal((n_seq, d)) @ lp.T
    ys = np.empty((n_seq, T, m))
    for t in range(T):
        x = x @ model["F"].T + rng.standard_normal((n_seq, d)) @ lq.T
        ys[:, t] = x @ model["H"].T + rng.standard_normal((n_seq, m)) @ lr.T
    return model, (ys[0] if batch is None else ys)


def reference(model: dict[str, np.ndarray], ys: np.ndarray) -> dict[str, Any]:
    out = ref.kalman_filter(
        model["m0"], model["P0"], model["F"], model["Q"], model["H"], model["R"], ys
    )
    return {"ll": out["log_marginal_likelihood"], "means": out["filtered_means"]}


# ---------------------------------------------------------------------- methods


def bare_scan(model, ys):
    """The yardstick: the covariance filter as a user would write it in JAX."""
    F, Q, H_, R = model["F"], model["Q"], model["H"], model["R"]

    def step(carry, y):
        m, P = carry
        m = F @ m
        P = F @ P @ F.T + Q
        S = H_ @ P @ H_.T + R
        c = cho_factor(S, lower=True)
        K = cho_solve(c, H_ @ P).T
        e = y - H_ @ m
        m = m + K @ e
        P = P - K @ S @ K.T
        ll = -0.5 * (
            e @ cho_solve(c, e)
            + 2.0 * jnp.sum(jnp.log(jnp.diagonal(c[0])))
            + y.shape[0] * _LOG_2PI
        )
        return (m, P), (m, ll)

    _, (means, lls) = lax.scan(step, (model["m0"], model["P0"]), ys)
    return jnp.sum(lls), means


def kalmanjax_fn(form: str, fast: bool | None, missing: bool = True) -> Callable:
    def fn(model, ys):
        filt = kj.kalman_filter(
            kj.LinearDynamics(model["F"], model["Q"]),
            kj.LinearObservation(model["H"], model["R"]),
            form=form,
            fast=fast,
            missing=missing,
        )
        res = kj.run(filt, kj.Gaussian(model["m0"], model["P0"]), ys)
        return jnp.sum(res.infos.log_likelihood), res.states.mean

    return fn


def _first_step_prior(model):
    """``N(F m0, F P0 F^T + Q)``: the prior for libraries that observe x_1 first."""
    F = model["F"]
    return F @ model["m0"], F @ model["P0"] @ F.T + model["Q"]


def dynamax_fn(model, ys):
    from dynamax.linear_gaussian_ssm.inference import (
        lgssm_filter,
        make_lgssm_params,
    )

    m1, P1 = _first_step_prior(model)
    params = make_lgssm_params(m1, P1, model["F"], model["Q"], model["H"], model["R"])
    post = lgssm_filter(params, ys)
    return post.marginal_loglik, post.filtered_means


def cuthbert_fn(model, ys):
    import cuthbert
    from cuthbert.gaussian import kalman

    F, H_ = model["F"], model["H"]
    d, m = H_.shape[1], H_.shape[0]
    chol_q = jnp.linalg.cholesky(model["Q"])
    chol_r = jnp.linalg.cholesky(model["R"])
    zd, zm = jnp.zeros(d, F.dtype), jnp.zeros(m, F.dtype)
    filt = kalman.build_filter(
        model["m0"],
        jnp.linalg.cholesky(model["P0"]),
        lambda _: (F, zd, chol_q),
        lambda y: (H_, zm, chol_r, y),
    )
    states = cuthbert.filter(filt, ys, filt.init_prepare())
    return states.log_normalizing_constant[-1], states.mean[1:]


def pykalman_fn(model, ys):
    from pykalman.standard import _filter, _loglikelihoods

    d, m = model["F"].shape[0], model["H"].shape[0]
    m1, P1 = _first_step_prior(model)
    zd, zm = np.zeros(d), np.zeros(m)
    pred_m, pred_p, _, filt_m, _ = _filter(
        model["F"], model["H"], model["Q"], model["R"], zd, zm, m1, P1, ys
    )
    ll = _loglikelihoods(model["H"], zm, model["R"], pred_m, pred_p, ys)
    return float(np.sum(ll)), filt_m


def filterpy_fn(model, ys):
    from filterpy.kalman import KalmanFilter

    d, m = model["F"].shape[0], model["H"].shape[0]
    kf = KalmanFilter(dim_x=d, dim_z=m)
    kf.x = model["m0"].reshape(d, 1).copy()
    kf.P = model["P0"].copy()
    kf.F, kf.Q, kf.H, kf.R = model["F"], model["Q"], model["H"], model["R"]
    ll = 0.0
    means = np.empty((ys.shape[0], d))
    for t in range(ys.shape[0]):
        kf.predict()
        kf.update(ys[t])
        ll += kf.log_likelihood
        means[t] = kf.x[:, 0]
    return ll, means


def _peer_available(name: str) -> str | None:
    """None if the peer imports, else the reason it does not."""
    modules = {
        "dynamax": "dynamax.linear_gaussian_ssm",
        "cuthbert": "cuthbert.gaussian.kalman",
        "pykalman": "pykalman.standard",
        "filterpy": "filterpy.kalman",
    }
    try:
        __import__(modules[name])
    except Exception as e:  # noqa: BLE001  (any import failure skips the peer)
        return f"{type(e).__name__}: {e}"
    return None


# ------------------------------------------------------------------------- rows


def build_rows(d: int, m: int, peers: list[str]) -> list[dict[str, Any]]:
    """The methods for one size: ``{"method", "kind", "fn", "returns"}``."""
    auto_fast = max(d, m) <= SMALL_MAX_DIM
    rows = []
    for form in kj.FORMS:
        rows.append(
            {
                "method": f"kalmanjax/{form}",
                "kind": "jax",
                "fn": kalmanjax_fn(form, None),
                "extra": {"form": form, "fast": auto_fast},
            }
        )
    rows.append(
        {
            "method": "kalmanjax/dense-nomissing",
            "kind": "jax",
            "fn": kalmanjax_fn("dense", None, missing=False),
            "extra": {"form": "dense", "fast": auto_fast, "missing": False},
        }
    )
    if auto_fast:  # else fast=None already means fast=False
        rows.append(
            {
                "method": "kalmanjax/dense-nofast",
                "kind": "jax",
                "fn": kalmanjax_fn("dense", False),
                "extra": {"form": "dense", "fast": False},
            }
        )
    rows.append({"method": "bare_scan", "kind": "jax", "fn": bare_scan, "extra": {}})
    for peer in peers:
        kind = "numpy" if peer in ("pykalman", "filterpy") else "jax"
        fn = {
            "dynamax": dynamax_fn,
            "cuthbert": cuthbert_fn,
            "pykalman": pykalman_fn,
            "filterpy": filterpy_fn,
        }[peer]
        rows.append({"method": peer, "kind": kind, "fn": fn, "extra": {}})
    return rows


RETURNS = {
    "kalmanjax/dense": "kj.run(lean=False): sum of infos.log_likelihood, "
    "states.mean; P - W^T W update; elementwise kernels when d, m <= 8",
    "kalmanjax/joseph": "as kalmanjax/dense with the Joseph covariance update",
    "kalmanjax/sqrt": "as kalmanjax/dense, square-root (Cholesky factor) form",
    "kalmanjax/dense-nofast": "kalmanjax/dense with fast=False (XLA dots + LAPACK)",
    "kalmanjax/dense-nomissing": "kalmanjax/dense with missing=False (no NaN "
    "handling, like the bare scan and the peers): the covariance recursion is "
    "data-independent, so vmap shares it across a batch",
    "bare_scan": "lax.scan: FPF^T+Q, cho_factor/cho_solve gain, P - K S K^T; "
    "returns sum of per-step log-likelihoods and the means",
    "dynamax": "lgssm_filter: marginal_loglik, filtered_means",
    "cuthbert": "cuthbert.filter(gaussian.kalman.build_filter), sequential scan: "
    "final log_normalizing_constant, means[1:]",
    "pykalman": "pykalman.standard._filter + _loglikelihoods (one pass, NumPy)",
    "filterpy": "KalmanFilter predict/update loop, sum of log_likelihood (NumPy)",
}


# ----------------------------------------------------------------------- checks


def _checks(out, refs: list[dict[str, Any]], batched: bool) -> dict[str, float]:
    ll, means = np.asarray(out[0], np.float64), np.asarray(out[1], np.float64)
    if not batched:
        ll, means = ll[None], means[None]
    ll_err, mean_err = 0.0, 0.0
    for i, r in enumerate(refs):
        ll_err = max(ll_err, abs(ll[i] - r["ll"]) / max(1.0, abs(r["ll"])))
        mean_err = max(mean_err, float(np.max(np.abs(means[i] - r["means"]))))
    return {
        "max_abs_err_vs_reference": mean_err,
        "loglik_rel_err_vs_reference": float(ll_err),
    }


# ---------------------------------------------------------------------- driving


def _cast(model, ys, dtype):
    np_dtype = np.dtype(dtype)
    model_c = {k: v.astype(np_dtype) for k, v in model.items()}
    return model_c, ys.astype(np_dtype)


def run_size(
    size, dtype: str, args, peers: list[str], seed: int, log: Callable
) -> list[dict[str, Any]]:
    name, d, m, T, batch = size
    model64, ys64 = make_problem(seed, d, m, T, batch)
    model_np, ys_np = _cast(model64, ys64, dtype)
    # the reference runs in float64 on the (rounded) inputs this dtype sees
    ref_model = {k: v.astype(np.float64) for k, v in model_np.items()}
    if batch is None:
        refs = [reference(ref_model, ys_np.astype(np.float64))]
    else:
        refs = [
            reference(ref_model, ys_np[i].astype(np.float64))
            for i in range(min(batch, CHECK_SEQUENCES))
        ]
    model_j = {k: jnp.asarray(v) for k, v in model_np.items()}
    ys_j = jnp.asarray(ys_np)
    n_steps = T * (1 if batch is None else batch)

    results, timed = [], {}
    for row in build_rows(d, m, peers):
        method = row["method"]
        params = {
            "size": name,
            "d": d,
            "m": m,
            "T": T,
            "batch": batch,
            "dtype": dtype,
            "method": method,
            **row["extra"],
        }
        if row["kind"] == "numpy":
            if batch is not None or T > NUMPY_PEER_MAX_T or dtype != "float64":
                continue
            t = H.time_python(row["fn"], model_np, ys_np, repeats=min(args.repeats, 3))
            res = {
                "params": params,
                "compile_s": None,
                "run_s": t["run_s"],
                "out": t["out"],
            }
        else:
            fn = row["fn"]
            if batch is not None:
                fn = jax.vmap(fn, in_axes=(None, 0))
            compiles = []
            for _ in range(args.compile_repeats):
                compiled, ct = H.compile_fn(fn, model_j, ys_j)
                compiles.append(ct)
            _, out = H.time_call(compiled, (model_j, ys_j))  # warm-up
            timed[method] = (compiled, (model_j, ys_j))
            res = {
                "params": params,
                "compile_s": float(np.median([c["compile_s"] for c in compiles])),
                "compile": {
                    "lower_s": float(np.median([c["lower_s"] for c in compiles])),
                    "xla_compile_s": float(
                        np.median([c["xla_compile_s"] for c in compiles])
                    ),
                    "all_compile_s": [c["compile_s"] for c in compiles],
                },
                "out": out,
            }
        res["returns"] = RETURNS[method]
        res["checks"] = _checks(res.pop("out"), refs, batch is not None)
        res["checks_on"] = {"T": T, "sequences": len(refs)}
        results.append(res)

    run_s = H.time_interleaved(
        timed, repeats=args.repeats, max_time_s=args.max_time, min_repeats=3
    )
    for res in results:
        method = res["params"]["method"]
        if method in run_s:
            res["run_s"] = run_s[method]
        res["throughput"] = {"steps_per_s": n_steps / res["run_s"]["median"]}

    # ratios of medians, and of minima (steadier when the machine is busy)
    med = {r["params"]["method"]: r["run_s"]["median"] for r in results}
    best = {r["params"]["method"]: r["run_s"]["min"] for r in results}
    for res in results:
        method = res["params"]["method"]
        if not method.startswith("kalmanjax/"):
            continue
        res["ratios"] = {
            "ratio_vs_bare_scan": med[method] / med["bare_scan"],
            "ratio_vs_bare_scan_min": best[method] / best["bare_scan"],
        }
        if "dynamax" in med:
            res["ratios"]["speedup_vs_dynamax"] = med["dynamax"] / med[method]
            res["ratios"]["speedup_vs_dynamax_min"] = best["dynamax"] / best[method]
    for res in results:
        c = res["checks"]
        log(
            f"  {name:22s} {dtype:8s} {res['params']['method']:24s} "
            f"run {res['run_s']['median'] * 1e3:10.3f} ms  "
            f"compile {res['compile_s'] or 0.0:6.3f} s  "
            f"err(mean) {c['max_abs_err_vs_reference']:.1e} "
            f"err(ll) {c['loglik_rel_err_vs_reference']:.1e}"
        )
    return results


def _warm_up(dtypes: list[str]) -> None:
    """Compile a tiny filter once per dtype, so that the first measured row does not
    pay for JAX's one-off start-up (backend init, first traces of jnp helpers)."""
    for dtype in dtypes:
        with jax.enable_x64(dtype == "float64"):
            model, ys = make_problem(0, 3, 2, 4, None)
            model, ys = _cast(model, ys, dtype)
            model_j = {k: jnp.asarray(v) for k, v in model.items()}
            for fn in (kalmanjax_fn("dense", None), kalmanjax_fn("sqrt", False)):
                compiled, _ = H.compile_fn(fn, model_j, jnp.asarray(ys))
                jax.block_until_ready(compiled(model_j, jnp.asarray(ys)))


def summary_table(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per (size, dtype, kalmanjax method) with its ratios."""
    rows = []
    for r in results:
        if "ratios" in r:
            p = r["params"]
            rows.append(
                {
                    "size": p["size"],
                    "dtype": p["dtype"],
                    "method": p["method"],
                    "compile_s": r["compile_s"],
                    "run_s": r["run_s"]["median"],
                    **r["ratios"],
                }
            )
    return rows


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes, few repeats")
    p.add_argument("--out", type=Path, default=None, help="output JSON path")
    p.add_argument("--repeats", type=int, default=None, help="timed runs per row")
    p.add_argument(
        "--compile-repeats",
        type=int,
        default=None,
        help="compilations per row (median reported)",
    )
    p.add_argument(
        "--max-time",
        type=float,
        default=None,
        help="seconds of timed runs per size/dtype before stopping early",
    )
    p.add_argument(
        "--dtypes",
        nargs="+",
        default=["float32", "float64"],
        choices=["float32", "float64"],
    )
    p.add_argument(
        "--sizes", nargs="+", default=None, help="restrict to these size names"
    )
    p.add_argument("--peers", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.repeats is None:
        args.repeats = 3 if args.quick else 100
    if args.compile_repeats is None:
        args.compile_repeats = 1 if args.quick else 3
    if args.max_time is None:
        args.max_time = 5.0 if args.quick else 30.0
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    sizes = QUICK_SIZES if args.quick else FULL_SIZES
    if args.sizes:
        sizes = [s for s in sizes if s[0] in args.sizes]
    peers, skipped = [], {}
    if args.peers:
        for peer in QUICK_PEERS if args.quick else PEERS:
            why = _peer_available(peer)
            if why is None:
                peers.append(peer)
            else:
                skipped[peer] = why
    log = H.print_err
    env = H.env_info(("dynamax", "cuthbert", "pykalman", "filterpy"))
    log(f"bench_kalman: {env['backend']} ({env['device_kind']}), peers {peers}")

    _warm_up(args.dtypes)
    results: list[dict[str, Any]] = []
    for size in sizes:
        for dtype in args.dtypes:
            with jax.enable_x64(dtype == "float64"):
                results += run_size(size, dtype, args, peers, args.seed, log)

    env["loadavg_end"] = H.loadavg()
    payload = {
        "schema_version": H.SCHEMA_VERSION,
        "benchmark": "bench_kalman",
        "env": env,
        "config": {
            "quick": args.quick,
            "sizes": [
                {"size": s[0], "d": s[1], "m": s[2], "T": s[3], "batch": s[4]}
                for s in sizes
            ],
            "dtypes": args.dtypes,
            "repeats": args.repeats,
            "compile_repeats": args.compile_repeats,
            "max_time_s": args.max_time,
            "peers": peers,
            "skipped_peers": skipped,
            "numpy_peer_max_T": NUMPY_PEER_MAX_T,
            "seed": args.seed,
            "returns": RETURNS,
        },
        "results": results,
        "summary": summary_table(results),
    }
    out = args.out
    if out is None:
        out = _ROOT / "benchmarks" / "results" / f"bench_kalman_{H.device_slug()}.json"
    H.write_json(out, payload)
    log(f"wrote {out}")
    return payload


if __name__ == "__main__":
    main()
