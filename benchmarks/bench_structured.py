"""Benchmark: the structured-covariance filters against the state size ``k``.

Sections (``params.section``):

* ``linear``: online linear regression, below;
* ``categorical``: next tokens, ``V = 64`` (:func:`categorical_rows`);
* ``network``: one EKF step over every weight of the shipped in-context
  transformer (``k = 153153``) in units of the network's forward+backward pass
  (:func:`network_rows`);
* ``truncation``: the low-rank and diagonal posteriors' KL divergence to the exact
  one at ``k = 64..512``, float64 (:func:`truncation_rows`).

**linear**: ``k`` parameters, one scalar reading per step
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

import re
from typing import Any

import jax
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


def _rank(name: str) -> int | None:
    """The rank in a method's name (``"low_rank_r10_observed"``: 10), else None."""
    match = re.search(r"_r(\d+)", name)
    return None if match is None else int(match.group(1))


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
    return kj.low_rank_filter(static, _observation, rank=_rank(name))


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


def run_k(k: int, T: int, args) -> list[dict[str, Any]]:
    """All rows of one state size ``k`` over ``T`` readings."""
    xs64 = make_problem(args.seed, k, T)
    ref = reference_mean(xs64) if k <= REFERENCE_MAX_K else None
    xs = {key: jnp.asarray(v, jnp.float32) for key, v in xs64.items()}
    rows, calls = [], {}
    for name in METHODS:
        rank = _rank(name)
        row: dict[str, Any] = {
            "params": {"section": "linear", "k": k, "T": T, "obs_dim": 1}
            | {"dtype": "float32", "method": name, "rank": rank},
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
        row["memory"] = H.memory(compiled)
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
    return _timed(rows, calls, T, args)


def _timed(rows, calls, T: int, args) -> list[dict[str, Any]]:
    """Time the compiled ``calls`` interleaved; fill the rows' run times."""
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
        H.log(
            f"  {row['params']['section']} k={row['params']['k']} {name}: "
            f"{row['per_step_s'] * 1e6:.1f} us/step"
        )
    return rows


def slopes(
    rows: list[dict[str, Any]], min_k: int, section: str = "linear"
) -> dict[str, float | None]:
    """Log-log slope of the per-step time against k, per method, for k >= min_k."""
    out: dict[str, float | None] = {}
    methods = sorted({r["params"]["method"] for r in rows})
    for name in methods:
        pts = [
            (r["params"]["k"], r["per_step_s"])
            for r in rows
            if r["params"]["method"] == name
            and r["params"]["section"] == section
            and r["per_step_s"] is not None
            and r["params"]["k"] >= min_k
        ]
        if len(pts) < 2:
            out[name] = None
            continue
        k, t = np.log(np.array(pts, dtype=float)).T
        out[name] = float(np.polyfit(k, t, 1)[0])
    return out


# ------------------------------------------------------------------ categorical

CATEGORICAL_VOCAB = 64
CATEGORICAL_T = (8, 4)  # full, quick
CATEGORICAL_METHODS = (
    "dense",
    "diagonal",
    "low_rank_r10",
    "low_rank_r20",
    "low_rank_r10_observed",
)


def make_categorical(seed: int, k: int, T: int, vocab: int) -> dict[str, np.ndarray]:
    """Logits ``c + Z theta`` (``Z`` ``(V, k)``, unit-variance rows over ``N(0, I)``)
    and ``T`` tokens drawn from them at a true ``theta``."""
    rng = np.random.default_rng(seed)
    Z = rng.normal(size=(vocab, k)) / np.sqrt(k)
    c = rng.normal(size=vocab)
    z = c + Z @ rng.normal(size=k)
    p = np.exp(z - z.max())
    tokens = rng.choice(vocab, size=T, p=p / p.sum())
    return {"Z": Z, "c": c, "obs": tokens}


def _categorical_runner(name: str):
    def fn(Z, c, tokens):
        k, dtype = Z.shape[1], Z.dtype
        obs = kj.CategoricalObservation(fn=lambda th, u: c + Z @ th)
        mean, var = jnp.zeros(k, dtype), jnp.ones(k, dtype)
        if name == "dense":
            dyn = kj.LinearDynamics(
                F=jnp.eye(k, dtype=dtype), Q=jnp.zeros((k, k), dtype)
            )
            filt = kj.extended_kalman_filter(dyn, obs)
            prior = kj.Gaussian(mean, jnp.diag(var))
        else:
            static = kj.DiagonalDynamics(
                F=jnp.asarray(1.0, dtype), Q=jnp.asarray(0.0, dtype)
            )
            fisher = "observed" if name.endswith("_observed") else "exact"
            filt = (
                kj.diagonal_filter(static, obs, fisher=fisher)
                if name == "diagonal"
                else kj.low_rank_filter(
                    static,
                    obs,
                    rank=_rank(name),
                    fisher=fisher,
                )
            )
            prior = kj.DiagonalGaussian(mean, var)
        return kj.run(filt, prior, {"obs": tokens}, lean=True).final.mean

    return fn


def categorical_rows(k: int, T: int, args) -> list[dict[str, Any]]:
    """Next-token rows at one ``k``: ``T`` tokens of a ``V = 64`` vocabulary."""
    prob = make_categorical(args.seed, k, T, CATEGORICAL_VOCAB)
    arrays = (
        jnp.asarray(prob["Z"], jnp.float32),
        jnp.asarray(prob["c"], jnp.float32),
        jnp.asarray(prob["obs"], jnp.int32),
    )
    rows, calls, means = [], {}, {}
    for name in CATEGORICAL_METHODS:
        row: dict[str, Any] = {
            "params": {"section": "categorical", "k": k, "T": T}
            | {"vocab": CATEGORICAL_VOCAB, "dtype": "float32", "method": name},
            "skipped": None,
        }
        rows.append(row)
        if name == "dense" and k > DENSE_MAX_K:
            row["skipped"] = f"k = {k} > {DENSE_MAX_K}: a k x k covariance"
            continue
        compiled, ct = H.compile_fn(_categorical_runner(name), *arrays)
        _, out = H.time_call(compiled, arrays)
        means[name] = np.asarray(out, np.float64)
        row.update(ct)
        row["memory"] = H.memory(compiled)
        row["checks"] = {"finite": bool(np.all(np.isfinite(means[name])))}
        calls[name] = (compiled, arrays)
        H.log(f"  categorical k={k} {name}: compile {ct['compile_s']:.2f} s")
    for row in rows:  # the truncations' distance to the dense filter, reported
        name = row["params"]["method"]
        if "dense" in means and name in means:
            row["checks"]["max_abs_diff_vs_dense"] = float(
                np.max(np.abs(means[name] - means["dense"]))
            )
    return _timed(rows, calls, T, args)


# ---------------------------------------------------------------------- network

NETWORK_METHODS = ("diagonal", "low_rank_r10", "low_rank_r20")


def network_rows(args) -> list[dict[str, Any]]:
    """One EKF step over every weight of the shipped transformer, in passes.

    The state is all :math:`k = 153153` parameters (a
    :class:`~kalmanjax.nn.WeightAdapter`, prior variance ``1e-4``); the step
    observes the prediction at the last query of one prompt (``p = 1``, one
    reverse pass for ``H``). ``ratio_to_forward_backward`` is the step's median
    time over that of one forward+backward pass (``jax.grad`` of the same output
    with respect to :math:`\theta`), timed interleaved in one run; the target is
    ``<= rank + 3``. ``temp_floats_per_k`` is XLA's temporary memory of the
    compiled step in units of ``k`` floats (the backward pass's own included;
    the belief, an argument and an output, not); the target is ``<= rank + 4``.
    """
    from kalmanjax.nn import WeightAdapter, icl, observation_fn  # noqa: PLC0415

    model, config, _ = icl.load_pretrained()
    adapter = WeightAdapter(model)
    k = adapter.dim
    fn = observation_fn(model, adapter)
    _, x, y = icl.sample_prompts(jax.random.key(args.seed), 1, config)
    tokens = icl.encode(x[0], y[0])
    position = 2 * (config.num_pairs - 1)  # the last query's x token

    def output(theta):
        return fn(theta, tokens)[position]  # (1,)

    theta = jnp.zeros(k, jnp.float32)
    obs = kj.NonlinearObservation(
        fn=lambda th, u: output(th), R=jnp.full((1, 1), config.noise_var, jnp.float32)
    )
    static = kj.DiagonalDynamics(
        F=jnp.asarray(1.0, jnp.float32), Q=jnp.asarray(0.0, jnp.float32)
    )
    prior = kj.DiagonalGaussian(theta, jnp.full(k, 1e-4, jnp.float32))
    inputs = {"obs": y[0, -1:]}
    calls, info = {}, {}
    for name, fn_, fargs in (
        ("forward", output, (theta,)),
        ("forward_backward", jax.grad(lambda th: output(th)[0]), (theta,)),
    ):
        calls[name] = H.compile_fn(fn_, *fargs)[0], fargs
        info[name] = H.memory(calls[name][0])
    for name in NETWORK_METHODS:
        if name == "diagonal":
            filt = kj.diagonal_filter(static, obs)
        else:
            filt = kj.low_rank_filter(static, obs, rank=_rank(name))
        belief = filt.init(prior)
        if name != "diagonal":  # a full factor (the cost does not depend on it)
            W = 1e-2 * jax.random.normal(
                jax.random.key(1), belief.precision_factor.shape
            )
            belief = belief._replace(precision_factor=W)
        compiled, ct = H.compile_fn(filt.step, belief, inputs)
        new, _ = compiled(belief, inputs)
        calls[name] = compiled, (belief, inputs)
        info[name] = (
            H.memory(compiled)
            | ct
            | {"finite": bool(np.all(np.isfinite(np.asarray(new.mean))))}
        )
        H.log(f"  network k={k} {name}: compile {ct['compile_s']:.2f} s")
    timings = H.time_interleaved(
        calls, repeats=args.repeats, max_time_s=args.max_time, rotate=True
    )
    unit = timings["forward_backward"]["median"]
    rows = []
    for name in NETWORK_METHODS:
        rank = _rank(name)
        mem = info[name]
        temp = mem.get("temp_size_in_bytes")
        rows.append(
            {
                "params": {"section": "network", "k": k, "method": name}
                | {"rank": rank, "obs_dim": 1, "prompt_tokens": int(tokens.shape[0])},
                "step_s": timings[name],
                "forward_s": timings["forward"],
                "forward_backward_s": timings["forward_backward"],
                "ratio_to_forward_backward": timings[name]["median"] / unit,
                "target_ratio": None if rank is None else rank + 3,
                "memory": {key: v for key, v in mem.items() if key.endswith("bytes")},
                "forward_backward_memory": info["forward_backward"],
                "temp_floats_per_k": None if temp is None else temp / 4 / k,
                "target_temp_floats_per_k": None if rank is None else rank + 4,
                "compile_s": mem["compile_s"],
                "checks": {"finite": mem["finite"]},
            }
        )
        H.log(
            f"  network {name}: {rows[-1]['ratio_to_forward_backward']:.1f} "
            f"forward+backward passes, temp {rows[-1]['temp_floats_per_k']} k floats"
        )
    return rows


# ------------------------------------------------------------------- truncation

TRUNCATION_KS = ([64, 128, 256, 512], [16, 32])
TRUNCATION_RANKS = ((2, 8, 16, 32), (2, 8))
TRUNCATION_T = (32, 8)


def kl_gaussian(mean_q, cov_q, mean_p, cov_p) -> float:
    """KL(N(mean_q, cov_q) || N(mean_p, cov_p)), NumPy float64."""
    inv_p = np.linalg.inv(cov_p)
    diff = mean_p - mean_q
    return float(
        0.5
        * (
            np.trace(inv_p @ cov_q)
            + diff @ inv_p @ diff
            - len(mean_q)
            + np.linalg.slogdet(cov_p)[1]
            - np.linalg.slogdet(cov_q)[1]
        )
    )


def truncation_rows(ks, ranks, T: int, args) -> list[dict[str, Any]]:
    """KL of each structured posterior to the exact one (NumPy), float64.

    The linear section's problem with ``T`` readings; the exact posterior is
    :func:`reference_mean` with covariance :math:`(I + X^\top X / r)^{-1}`. A
    rank ``>= T`` holds every reading (KL is rounding); ``prior`` is the prior's
    KL, the scale.
    """
    rows = []
    with jax.enable_x64(True):
        for k in ks:
            xs64 = make_problem(args.seed, k, T)
            X = xs64["x"]
            cov = np.linalg.inv(np.eye(k) + X.T @ X / NOISE_VAR)
            mean = reference_mean(xs64)
            xs = {key: jnp.asarray(v, jnp.float64) for key, v in xs64.items()}
            static = kj.DiagonalDynamics(F=jnp.asarray(1.0), Q=jnp.asarray(0.0))
            prior = kj.DiagonalGaussian(jnp.zeros(k), jnp.ones(k))
            filters = {"diagonal": kj.diagonal_filter(static, _observation)}
            for r in ranks:
                filters[f"low_rank_r{r}"] = kj.low_rank_filter(
                    static, _observation, rank=r
                )
            kls = {"prior": kl_gaussian(np.zeros(k), np.eye(k), mean, cov)}
            for name, filt in filters.items():
                final = jax.jit(lambda xs, f=filt, p=prior: kj.run(f, p, xs).final)(xs)
                if name == "diagonal":
                    got_cov = np.diag(np.asarray(final.var))
                else:
                    got_cov = np.linalg.inv(np.asarray(final.precision))
                kls[name] = kl_gaussian(np.asarray(final.mean), got_cov, mean, cov)
            for name, kl in kls.items():
                rank = _rank(name)
                rows.append(
                    {
                        "params": {"section": "truncation", "k": k, "T": T}
                        | {"method": name, "rank": rank, "dtype": "float64"},
                        "kl_to_exact": kl,
                        "holds_every_reading": rank is not None and rank >= T,
                    }
                )
            H.log(
                f"  truncation k={k}: "
                + ", ".join(f"{n} {v:.3g}" for n, v in kls.items())
            )
    return rows


def parse_args(argv: list[str] | None):
    """The harness's common arguments and the state sizes / readings."""
    p = H.Parser(__doc__, repeats=(10, 3), max_time=(20.0, 1.0))
    p.add_argument("--ks", nargs="+", type=int, default=None, help="state sizes")
    p.add_argument("--T", type=int, default=None, help="readings per run")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; return the payload written to ``<out>``."""
    args = parse_args(argv)
    quick = int(bool(args.quick))
    ks = args.ks or (QUICK_KS if args.quick else FULL_KS)
    T = args.T or (QUICK_T if args.quick else FULL_T)
    min_k = min(ks) if args.quick else SLOPE_MIN_K
    cat_ks = ks[:1] if args.quick else ks
    settings = H.settings(
        args, ks=ks, T=T, methods=list(METHODS), dense_max_k=DENSE_MAX_K
    )
    settings |= {
        "slope_min_k": min_k,
        "categorical": {"vocab": CATEGORICAL_VOCAB, "T": CATEGORICAL_T[quick]}
        | {"methods": list(CATEGORICAL_METHODS), "ks": cat_ks},
        "truncation": {"ks": TRUNCATION_KS[quick], "T": TRUNCATION_T[quick]}
        | {"ranks": list(TRUNCATION_RANKS[quick])},
    }
    out = H.Output(BENCHMARK, args, settings, packages=("flax",))
    H.log(f"{BENCHMARK}: k {ks}, T {T}")
    for k in ks:
        out.rows.extend(run_k(k, T, args))
        out.summary["slopes_per_step_vs_k"] = slopes(out.rows, min_k)
        out.save()
    for k in cat_ks:
        out.rows.extend(categorical_rows(k, CATEGORICAL_T[quick], args))
        out.summary["categorical_slopes_per_step_vs_k"] = slopes(
            out.rows, min_k, "categorical"
        )
        out.save()
    network = network_rows(args)
    out.rows.extend(network)
    out.summary["network"] = {
        r["params"]["method"]: {
            "ratio_to_forward_backward": r["ratio_to_forward_backward"],
            "temp_floats_per_k": r["temp_floats_per_k"],
            "within_targets": None
            if r["target_ratio"] is None
            else bool(
                r["ratio_to_forward_backward"] <= r["target_ratio"]
                and r["temp_floats_per_k"] is not None
                and r["temp_floats_per_k"] <= r["target_temp_floats_per_k"]
            ),
        }
        for r in network
    }
    out.save()
    trunc = truncation_rows(
        TRUNCATION_KS[quick], TRUNCATION_RANKS[quick], TRUNCATION_T[quick], args
    )
    out.rows.extend(trunc)
    out.summary["kl_to_exact"] = {
        f"k={r['params']['k']}/{r['params']['method']}": r["kl_to_exact"] for r in trunc
    }
    return out.save(complete=True)


if __name__ == "__main__":
    main()
