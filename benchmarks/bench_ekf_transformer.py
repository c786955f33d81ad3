"""Benchmark: the EKF over an adaptation state inside a Flax transformer.

Sections (JSON rows, ``section`` field):

* ``ekf_step``: one EKF step over :math:`\\theta \\in \\mathbb R^k` (linearise the
  network's output at one token with ``jacfwd`` or ``jacrev``, then the Kalman
  update), against one forward pass of the network on the same prompt, for
  ``k`` in 4, 16, 64 and two insertion points: a low-rank adapter on the output
  head (``head.proj``) and a residual shift entering the first block
  (``block0``). ``ratio`` = step time / forward time; the target is
  ``<= k + 2`` forward-pass equivalents with ``jacfwd``. Also the per-token cost
  inside a ``lax.scan`` over the whole prompt (not in ``--quick`` runs), and the
  compile times.
* ``categorical``: the moment-matched next-token update (``kj.categorical_update``)
  for vocabularies V = 1e3 .. 5e4 at k = 16: time and the compiled executable's
  temporary memory, both expected linear in V (no V x V matrix is formed).

The network has the shape of the shipped in-context regression model (width 64,
3 blocks, 4 heads, a 40-token prompt); weights are random (cost does not depend
on them). Run ``python benchmarks/bench_ekf_transformer.py --help``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

import kalmanjax as kj  # noqa: E402
from benchmarks import _harness as H  # noqa: E402
from kalmanjax.nn import (  # noqa: E402
    LowRankAdapter,
    ResidualShift,
    Transformer,
    observation_fn,
)

BENCHMARK = "bench_ekf_transformer"
SITES = {"head.proj": LowRankAdapter, "block0": ResidualShift}
FULL_KS = [4, 16, 64]
QUICK_KS = [4]
FULL_VOCABS = [1_000, 3_000, 10_000, 30_000, 50_000]
QUICK_VOCABS = [1_000, 3_000]
METHODS = ("jacfwd", "jacrev")
PROMPT_LEN = 40
POSITION = 30  # the token whose output is linearised in the single-step rows


def make_network(seed: int = 0) -> Transformer:
    return Transformer(
        output_dim=1,
        input_dim=6,
        width=64,
        depth=3,
        heads=4,
        max_len=PROMPT_LEN,
        rngs=nnx.Rngs(seed),
    )


def ekf_rows(ks, repeats, max_time_s, with_scan=True):
    net = make_network()
    prompt = jax.random.normal(jax.random.key(1), (PROMPT_LEN, 6))
    ys = jax.random.normal(jax.random.key(2), (PROMPT_LEN, 1))
    inputs = {"obs": ys[POSITION], "pos": jnp.asarray(POSITION)}
    xs = {"obs": ys, "pos": jnp.arange(PROMPT_LEN)}
    rows = []
    for site, cls in SITES.items():
        for k in ks:
            fn = observation_fn(net, cls(net, site, k, rngs=nnx.Rngs(3)))
            theta = 0.01 * jax.random.normal(jax.random.key(4), (k,))
            obs = kj.NonlinearObservation(
                fn=lambda th, u, fn=fn: fn(th, prompt)[u["pos"]], R=0.1 * jnp.eye(1)
            )
            dyn = kj.LinearDynamics(F=jnp.eye(k), Q=jnp.zeros((k, k)))
            prior = kj.Gaussian(mean=theta, cov=jnp.eye(k))
            calls, compile_s, means = {}, {}, {}
            forward, compile_s["forward"] = H.compile_fn(
                lambda th, fn=fn: fn(th, prompt), theta
            )
            calls["forward"] = (forward, (theta,))
            for method in METHODS:
                filt = kj.extended_kalman_filter(dyn, obs, method=method)
                step, compile_s[f"step/{method}"] = H.compile_fn(
                    filt.step, prior, inputs
                )
                calls[f"step/{method}"] = (step, (prior, inputs))
                if with_scan:
                    scan, compile_s[f"scan/{method}"] = H.compile_fn(
                        lambda p, x, filt=filt: kj.run(filt, p, x, lean=True).final,
                        prior,
                        xs,
                    )
                    calls[f"scan/{method}"] = (scan, (prior, xs))
                means[method] = np.asarray(step(prior, inputs)[0].mean)
            for fn_, args in calls.values():  # warm up
                jax.block_until_ready(fn_(*args))
            timed = H.time_interleaved(calls, repeats=repeats, max_time_s=max_time_s)
            fwd = timed["forward"]["median"]
            diff = float(np.max(np.abs(means["jacfwd"] - means["jacrev"])))
            for method in METHODS:
                step_s = timed[f"step/{method}"]
                scan_s = timed.get(f"scan/{method}", {"median": float("nan")})
                rows.append(
                    dict(
                        section="ekf_step",
                        site=site,
                        k=k,
                        method=method,
                        forward_s=timed["forward"],
                        step_s=step_s,
                        per_token_in_scan_s=scan_s["median"] / PROMPT_LEN,
                        ratio=step_s["median"] / fwd,
                        ratio_in_scan=scan_s["median"] / PROMPT_LEN / fwd,
                        target_ratio=k + 2,
                        compile_forward_s=compile_s["forward"]["compile_s"],
                        compile_step_s=compile_s[f"step/{method}"]["compile_s"],
                        compile_scan_s=compile_s.get(f"scan/{method}", {}).get(
                            "compile_s"
                        ),
                        finite=bool(np.all(np.isfinite(means[method]))),
                        jacfwd_vs_jacrev_max_abs_diff=diff,
                    )
                )
                r = rows[-1]
                print(
                    f"{site:10s} k={k:3d} {method}: step/forward = {r['ratio']:.1f} "
                    f"(per token in a scan {r['ratio_in_scan']:.1f}), "
                    f"target <= {k + 2}",
                    flush=True,
                )
    return rows


def categorical_rows(vocabs, k, repeats, max_time_s):
    rows = []
    for vocab in vocabs:
        kz, kc = jax.random.split(jax.random.key(vocab))
        jz = jax.random.normal(kz, (vocab, k)) / np.sqrt(k)
        c = jax.random.normal(kc, (vocab,))
        obs = kj.CategoricalObservation(fn=lambda th, u, jz=jz, c=c: c + jz @ th)
        prior = kj.Gaussian(mean=jnp.zeros(k), cov=jnp.eye(k))

        def update(belief, token, obs=obs):
            return kj.categorical_update(belief, token, obs)

        token = jnp.asarray(7)
        timed = H.time_jitted(
            update, prior, token, repeats=repeats, max_time_s=max_time_s
        )
        compiled = jax.jit(update).lower(prior, token).compile()
        mem = compiled.memory_analysis()
        temp = None if mem is None else int(mem.temp_size_in_bytes)
        rows.append(
            dict(
                section="categorical",
                vocab=vocab,
                k=k,
                run_s=timed["run_s"],
                compile_s=timed["compile_s"],
                temp_bytes=temp,
                finite=bool(np.all(np.isfinite(np.asarray(timed["out"][0].mean)))),
            )
        )
        print(
            f"categorical V={vocab:6d}: {timed['run_s']['median'] * 1e3:.2f} ms, "
            f"temp {temp} B",
            flush=True,
        )
    return rows


def linear_fit(xs, ys):
    """Slope of log y on log x (1 = linear scaling)."""
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke sizes")
    p.add_argument("--out", default=None, help="JSON path")
    args = p.parse_args(argv)
    ks = QUICK_KS if args.quick else FULL_KS
    vocabs = QUICK_VOCABS if args.quick else FULL_VOCABS
    repeats = 3 if args.quick else 30
    max_time_s = 1.0 if args.quick else 10.0
    rows = ekf_rows(ks, repeats, max_time_s, with_scan=not args.quick)
    cat = categorical_rows(vocabs, 16, repeats, max_time_s)
    times = [r["run_s"]["median"] for r in cat]
    summary = dict(
        categorical_time_loglog_slope=linear_fit(vocabs, times),
        categorical_memory_loglog_slope=(
            linear_fit(vocabs, [r["temp_bytes"] for r in cat])
            if all(r["temp_bytes"] for r in cat)
            else None
        ),
        jacfwd_within_target={
            f"{r['site']}/k={r['k']}": r["ratio"] <= r["target_ratio"]
            for r in rows
            if r["method"] == "jacfwd"
        },
    )
    payload = dict(
        benchmark=BENCHMARK,
        schema_version=H.SCHEMA_VERSION,
        quick=args.quick,
        env=H.env_info(["flax"]),
        settings=dict(prompt_len=PROMPT_LEN, position=POSITION, width=64, depth=3),
        rows=rows + cat,
        summary=summary,
    )
    suffix = "cpu" if jax.default_backend() == "cpu" else "gpu"
    out = args.out or _ROOT / "benchmarks" / "results" / f"{BENCHMARK}_{suffix}.json"
    H.write_json(out, payload)
    print(f"wrote {out}")
    return payload


if __name__ == "__main__":
    main()
