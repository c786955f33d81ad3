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

Run ``python -m benchmarks.bench_kalman --help``; see ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.scipy.linalg import cho_factor, cho_solve

import kalmanjax as kj
from benchmarks import _harness as H
from benchmarks import _models as M

BENCHMARK = "bench_kalman"
#: largest state / observation size of the elementwise small-state kernels that
#: ``fast=None`` picks (the README's "small-state fast path", d, m <= 8)
SMALL_MAX_DIM = 8

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

PEERS = ("dynamax", "cuthbert", "pykalman", "filterpy")
QUICK_PEERS = ("dynamax", "cuthbert")  # the NumPy loops are slow to even start


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
            + y.shape[0] * M.LOG_2PI
        )
        return (m, P), (m, ll)

    _, (means, lls) = lax.scan(step, (model["m0"], model["P0"]), ys)
    return jnp.sum(lls), means


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
        with warnings.catch_warnings():  # a peer's own deprecation warnings
            warnings.simplefilter("ignore", DeprecationWarning)
            __import__(modules[name])
    except Exception as e:  # noqa: BLE001  (any import failure skips the peer)
        return f"{type(e).__name__}: {e}"
    return None


# ------------------------------------------------------------------------- rows


def build_rows(d: int, m: int, peers: list[str]) -> list[dict[str, Any]]:
    """The methods for one size: ``{"method", "kind", "fn", "extra"}``."""
    auto_fast = max(d, m) <= SMALL_MAX_DIM
    rows = []
    for form in kj.FORMS:
        rows.append(
            {
                "method": f"kalmanjax/{form}",
                "kind": "jax",
                "fn": M.kalmanjax_filter(form),
                "extra": {"form": form, "fast": auto_fast},
            }
        )
    rows.append(
        {
            "method": "kalmanjax/dense-nomissing",
            "kind": "jax",
            "fn": M.kalmanjax_filter("dense", missing=False),
            "extra": {"form": "dense", "fast": auto_fast, "missing": False},
        }
    )
    if auto_fast:  # else fast=None already means fast=False
        rows.append(
            {
                "method": "kalmanjax/dense-nofast",
                "kind": "jax",
                "fn": M.kalmanjax_filter("dense", fast=False),
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


# ---------------------------------------------------------------------- driving


def run_size(size, dtype: str, args, peers: list[str]) -> list[dict[str, Any]]:
    """All rows of one size and dtype (call inside the dtype's x64 scope)."""
    name, d, m, T, batch = size
    prob = M.problem(args.seed, d, m, T, batch, dtype)
    jargs = prob.on_device()
    n_steps = T * (1 if batch is None else batch)

    rows, timed = [], {}
    for method in build_rows(d, m, peers):
        params = {
            "size": name,
            "d": d,
            "m": m,
            "T": T,
            "batch": batch,
            "dtype": dtype,
            "method": method["method"],
            **method["extra"],
        }
        if method["kind"] == "numpy":
            if batch is not None or T > NUMPY_PEER_MAX_T or dtype != "float64":
                continue
            t = H.time_python(
                method["fn"], prob.model, prob.ys, repeats=min(args.repeats, 3)
            )
            row = {"params": params, "compile_s": None, "run_s": t["run_s"]}
            out = t["out"]
        else:
            fn = method["fn"]
            if batch is not None:
                fn = jax.vmap(fn, in_axes=(None, 0))
            compiled, ct = H.compile_repeated(fn, jargs, args.compile_repeats)
            _, out = H.time_call(compiled, jargs)  # warm-up
            timed[method["method"]] = (compiled, jargs)
            row = {"params": params, **ct}
        row["returns"] = RETURNS[method["method"]]
        row["checks"] = M.checks(out, prob.refs, batch is not None)
        row["checks_on"] = {"T": T, "sequences": len(prob.refs)}
        rows.append(row)

    run_s = H.time_interleaved(timed, repeats=args.repeats, max_time_s=args.max_time)
    for row in rows:
        method = row["params"]["method"]
        if method in run_s:
            row["run_s"] = run_s[method]
        row["throughput"] = {"steps_per_s": n_steps / row["run_s"]["median"]}

    # ratios of medians, and of minima (steadier when the machine is busy)
    med = {r["params"]["method"]: r["run_s"]["median"] for r in rows}
    best = {r["params"]["method"]: r["run_s"]["min"] for r in rows}
    for row in rows:
        method = row["params"]["method"]
        if not method.startswith("kalmanjax/"):
            continue
        row["ratios"] = {
            "ratio_vs_bare_scan": med[method] / med["bare_scan"],
            "ratio_vs_bare_scan_min": best[method] / best["bare_scan"],
        }
        if "dynamax" in med:
            row["ratios"]["speedup_vs_dynamax"] = med["dynamax"] / med[method]
            row["ratios"]["speedup_vs_dynamax_min"] = best["dynamax"] / best[method]
    for row in rows:
        c = row["checks"]
        H.log(
            f"  {name:22s} {dtype:8s} {row['params']['method']:24s} "
            f"run {row['run_s']['median'] * 1e3:10.3f} ms  "
            f"compile {row['compile_s'] or 0.0:6.3f} s  "
            f"err(mean) {c['max_abs_err_vs_reference']:.1e} "
            f"err(ll) {c['loglik_rel_err_vs_reference']:.1e}"
        )
    return rows


def ratios_summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per (size, dtype, kalmanjax method) with its ratios."""
    return [
        {
            "size": r["params"]["size"],
            "dtype": r["params"]["dtype"],
            "method": r["params"]["method"],
            "compile_s": r["compile_s"],
            "run_s": r["run_s"]["median"],
            **r["ratios"],
        }
        for r in rows
        if "ratios" in r
    ]


def parse_args(argv: list[str] | None):
    """The harness's common arguments (sizes by name) and ``--peers``."""
    p = H.Parser(
        __doc__,
        repeats=(100, 3),
        max_time=(30.0, 5.0),
        compile_repeats=(3, 1),
        dtypes=H.DTYPES,
        sizes=[s[0] for s in FULL_SIZES + QUICK_SIZES],
    )
    p.add_argument("--peers", action=argparse.BooleanOptionalAction, default=True)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; return the payload written to ``<out>``."""
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
    settings = H.settings(
        args,
        sizes=[
            {"size": s[0], "d": s[1], "m": s[2], "T": s[3], "batch": s[4]}
            for s in sizes
        ],
        peers=peers,
        skipped_peers=skipped,
        numpy_peer_max_T=NUMPY_PEER_MAX_T,
        returns=RETURNS,
    )
    out = H.Output(BENCHMARK, args, settings, packages=PEERS)
    H.log(f"{BENCHMARK}: peers {peers}")
    M.warm_up(args.dtypes)
    for size in sizes:
        for dtype in args.dtypes:
            with jax.enable_x64(dtype == "float64"):
                out.rows.extend(run_size(size, dtype, args, peers))
        out.summary["ratios"] = ratios_summary(out.rows)
        out.save()
    return out.save(complete=True)


if __name__ == "__main__":
    main()
