"""Benchmark: the EKF over an adaptation state inside a Flax transformer.

Sections (JSON rows, ``params.section``):

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
on them). Run ``python -m benchmarks.bench_ekf_transformer --help``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import kalmanjax as kj
from benchmarks import _harness as H
from kalmanjax.nn import LowRankAdapter, ResidualShift, Transformer, observation_fn

BENCHMARK = "bench_ekf_transformer"
SITES = {"head.proj": LowRankAdapter, "block0": ResidualShift}
FULL_KS = [4, 16, 64]
QUICK_KS = [4]
FULL_VOCABS = [1_000, 3_000, 10_000, 30_000, 50_000]
QUICK_VOCABS = [1_000, 3_000]
METHODS = ("jacfwd", "jacrev")
PROMPT_LEN = 40
POSITION = 30  # the token whose output is linearised in the single-step rows
WIDTH, DEPTH, HEADS = 64, 3, 4
#: latent size of the categorical section
CATEGORICAL_K = 16


def make_network(seed: int = 0) -> Transformer:
    """A random network of the shipped in-context model's shape."""
    return Transformer(
        output_dim=1,
        input_dim=6,
        width=WIDTH,
        depth=DEPTH,
        heads=HEADS,
        max_len=PROMPT_LEN,
        rngs=nnx.Rngs(seed),
    )


def ekf_rows(ks, repeats, max_time_s, with_scan=True) -> list[dict[str, Any]]:
    """The ``ekf_step`` rows: per site, k and Jacobian method, step vs forward."""
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
                ratio = step_s["median"] / fwd
                rows.append(
                    {
                        "params": {
                            "section": "ekf_step",
                            "site": site,
                            "k": k,
                            "method": method,
                        },
                        "forward_s": timed["forward"],
                        "step_s": step_s,
                        "per_token_in_scan_s": scan_s["median"] / PROMPT_LEN,
                        "ratio": ratio,
                        "ratio_in_scan": scan_s["median"] / PROMPT_LEN / fwd,
                        "target_ratio": k + 2,
                        "compile_forward_s": compile_s["forward"]["compile_s"],
                        "compile_step_s": compile_s[f"step/{method}"]["compile_s"],
                        "compile_scan_s": compile_s.get(f"scan/{method}", {}).get(
                            "compile_s"
                        ),
                        "finite": bool(np.all(np.isfinite(means[method]))),
                        "jacfwd_vs_jacrev_max_abs_diff": diff,
                    }
                )
                H.log(
                    f"{site:10s} k={k:3d} {method}: step/forward = {ratio:.1f} "
                    f"(per token in a scan {rows[-1]['ratio_in_scan']:.1f}), "
                    f"target <= {k + 2}"
                )
    return rows


def categorical_rows(vocabs, k, repeats, max_time_s) -> list[dict[str, Any]]:
    """The ``categorical`` rows: time and temporary memory of one update per V."""
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
            {
                "params": {"section": "categorical", "vocab": vocab, "k": k},
                "run_s": timed["run_s"],
                "compile_s": timed["compile_s"],
                "temp_bytes": temp,
                "finite": bool(np.all(np.isfinite(np.asarray(timed["out"][0].mean)))),
            }
        )
        H.log(
            f"categorical V={vocab:6d}: {timed['run_s']['median'] * 1e3:.2f} ms, "
            f"temp {temp} B"
        )
    return rows


def parse_args(argv: list[str] | None):
    """The harness's common arguments (no sizes: ``--quick`` picks them)."""
    p = H.Parser(__doc__, repeats=(30, 3), max_time=(10.0, 1.0), seed=False)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; return the payload written to ``<out>``."""
    args = parse_args(argv)
    ks = QUICK_KS if args.quick else FULL_KS
    vocabs = QUICK_VOCABS if args.quick else FULL_VOCABS
    settings = H.settings(
        args,
        prompt_len=PROMPT_LEN,
        position=POSITION,
        width=WIDTH,
        depth=DEPTH,
        heads=HEADS,
        ks=ks,
        vocabs=vocabs,
        categorical_k=CATEGORICAL_K,
    )
    out = H.Output(BENCHMARK, args, settings, packages=("flax",))
    out.rows.extend(ekf_rows(ks, args.repeats, args.max_time, not args.quick))
    out.save()
    cat = categorical_rows(vocabs, CATEGORICAL_K, args.repeats, args.max_time)
    out.rows.extend(cat)
    temps = [r["temp_bytes"] for r in cat]
    out.summary.update(
        categorical_time_loglog_slope=kj.diagnostics.loglog_slope(
            vocabs, [r["run_s"]["median"] for r in cat]
        ),
        categorical_memory_loglog_slope=(
            kj.diagnostics.loglog_slope(vocabs, temps) if all(temps) else None
        ),
        jacfwd_within_target={
            f"{r['params']['site']}/k={r['params']['k']}": r["ratio"]
            <= r["target_ratio"]
            for r in out.rows
            if r["params"].get("method") == "jacfwd"
        },
    )
    return out.save(complete=True)


if __name__ == "__main__":
    main()
