"""Benchmark: sigma-point filters against the EKF; particle filters against cuthbert.

Sections (``params.section``):

* ``sigma_point``: one filter step of the EKF (``jacfwd``), the unscented and
  cubature filters (``2 d + 1`` and ``2 d`` points) and the Gauss-Hermite filter
  of order 3 (``3^d`` points, for ``d <= 6`` only) on the same model, float32:
  ``x' = 0.9 x + 0.2 tanh(A x) + w``, ``y = sin(H x) + v`` with ``d / 2``
  readings, ``T`` steps in one ``lax.scan`` (lean). The rows of one ``d`` are
  timed round-robin; ``per_step_s`` is the median run time over ``T`` and
  ``vs_ekf`` its ratio to the EKF's.
* ``particle``: the bootstrap particle filter, systematic resampling when the
  effective sample size falls below ``N / 2``, on a linear-Gaussian model
  (``d = 2``, one reading), float32, ``T`` steps: ``kj.particle_filter`` through
  ``kj.run`` (with the particle sets kept, as cuthbert keeps them, and lean)
  against ``cuthbert.smc.particle_filter`` through ``cuthbert.filter``. The rows
  give ``particle_steps_per_s`` (``N T`` over the median run time) and the log
  marginal likelihood estimate of the timed run (the Kalman filter's is in the
  summary). cuthbert's systematic resampling inverts the cumulative weights with
  a numba kernel called back from XLA on CPU.

Run ``python -m benchmarks.bench_nonlinear --help``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import kalmanjax as kj
from benchmarks import _harness as H

BENCHMARK = "bench_nonlinear"
DS = {"full": [4, 8, 16, 32, 64], "quick": [4]}
SIGMA_T = {"full": 200, "quick": 10}
#: the largest state for the Gauss-Hermite rule (3^d points)
GH_MAX_D = 6
PARTICLES = {"full": [1_000, 10_000], "quick": [100]}
PARTICLE_T = {"full": 1_000, "quick": 10}


def _sigma_problem(seed: int, d: int, T: int):
    rng = np.random.default_rng(seed)
    A = jnp.asarray(rng.normal(size=(d, d)) / np.sqrt(d), jnp.float32)
    Hm = jnp.asarray(rng.normal(size=(max(d // 2, 1), d)) / np.sqrt(d), jnp.float32)

    def f(x, u):
        return 0.9 * x + 0.2 * jnp.tanh(A @ x)

    def h(x, u):
        return jnp.sin(Hm @ x)

    m = Hm.shape[0]
    dyn = kj.NonlinearDynamics(fn=f, Q=0.05 * jnp.eye(d, dtype=jnp.float32))
    obs = kj.NonlinearObservation(fn=h, R=0.1 * jnp.eye(m, dtype=jnp.float32))
    prior = kj.Gaussian(jnp.zeros(d, jnp.float32), jnp.eye(d, dtype=jnp.float32))
    sim = kj.simulate(jax.random.key(seed), prior, dyn, obs, num_steps=T)
    return dyn, obs, prior, sim.observations


def sigma_point_rows(d: int, T: int, args) -> list[dict[str, Any]]:
    """EKF, UKF, CKF (and GHKF(3) for small d) on one model, timed round-robin."""
    dyn, obs, prior, ys = _sigma_problem(args.seed, d, T)
    filters = {
        "ekf": kj.extended_kalman_filter(dyn, obs),
        "unscented": kj.sigma_point_kalman_filter(dyn, obs, rule=kj.unscented()),
        "cubature": kj.sigma_point_kalman_filter(dyn, obs, rule=kj.cubature()),
    }
    if d <= GH_MAX_D:
        filters["gauss_hermite_3"] = kj.sigma_point_kalman_filter(
            dyn, obs, rule=kj.gauss_hermite(3)
        )
    points = {
        "ekf": 1,
        "unscented": 2 * d + 1,
        "cubature": 2 * d,
        "gauss_hermite_3": 3**d,
    }
    compiled, compile_times, lls = {}, {}, {}
    for name, filt in filters.items():

        def fn(ys, filt=filt):
            return kj.log_marginal_likelihood(filt, prior, ys)

        compiled[name], compile_times[name] = H.compile_fn(fn, ys)
        _, lls[name] = H.time_call(compiled[name], (ys,))
    run_s = H.time_interleaved(
        {name: (c, (ys,)) for name, c in compiled.items()},
        repeats=args.repeats,
        max_time_s=args.max_time,
        rotate=True,
    )
    ekf = run_s["ekf"]["median"] / T
    rows = []
    for name in filters:
        per_step = run_s[name]["median"] / T
        rows.append(
            {
                "params": {"section": "sigma_point", "method": name, "d": d, "T": T}
                | {"obs": max(d // 2, 1), "dtype": "float32"},
                "skipped": None,
                **compile_times[name],
                "run_s": run_s[name],
                "points": points[name],
                "per_step_s": per_step,
                "vs_ekf": per_step / ekf,
                "log_likelihood": float(lls[name]),
            }
        )
        H.log(f"  sigma_point d={d} {name}: {per_step * 1e6:.1f} us/step")
    if d > GH_MAX_D:
        rows.append(
            {
                "params": {
                    "section": "sigma_point",
                    "method": "gauss_hermite_3",
                    "d": d,
                }
                | {"T": T, "obs": max(d // 2, 1), "dtype": "float32"},
                "skipped": f"3^{d} points (the rule is run for d <= {GH_MAX_D})",
            }
        )
    return rows


def _linear_problem(seed: int, T: int):
    F = np.array([[0.9, 0.1], [0.0, 0.8]], np.float32)
    Q = 0.2 * np.eye(2, dtype=np.float32)
    Hm = np.array([[1.0, 0.5]], np.float32)
    R = np.array([[0.5]], np.float32)
    rng = np.random.default_rng(seed)
    x, ys = np.zeros(2), []
    for _ in range(T):
        x = F @ x + rng.multivariate_normal(np.zeros(2), Q)
        ys.append(Hm @ x + rng.normal(size=1) * np.sqrt(R[0, 0]))
    return F, Q, Hm, R, jnp.asarray(np.array(ys), jnp.float32)


def _cuthbert_fn(F, Q, Hm, R, num_particles):
    import cuthbert
    from cuthbert.smc import particle_filter as cpf
    from cuthbertlib.resampling import ess_decorator, systematic

    Fj, Hj = jnp.asarray(F), jnp.asarray(Hm)
    lq, lr = jnp.linalg.cholesky(jnp.asarray(Q)), jnp.linalg.cholesky(jnp.asarray(R))

    def log_potential(x_prev, x, y):
        r = jax.scipy.linalg.solve_triangular(lr, y - Hj @ x, lower=True)
        return -0.5 * (r @ r + jnp.log(2 * jnp.pi)) - jnp.sum(jnp.log(jnp.diag(lr)))

    filt = cpf.build_filter(
        init_sample=lambda k: jax.random.normal(k, (2,)),
        propagate_sample=lambda k, x, y: Fj @ x + lq @ jax.random.normal(k, (2,)),
        log_potential=log_potential,
        n_filter_particles=num_particles,
        resampling_fn=ess_decorator(systematic.resampling, 0.5),
    )

    def fn(key, ys):
        k0, k1 = jax.random.split(key)
        # cuthbert mixes dtypes and ranks (a strict caller's config refuses it)
        with jax.numpy_dtype_promotion("standard"), jax.numpy_rank_promotion("allow"):
            states = cuthbert.filter(filt, ys, filt.init_prepare(key=k0), key=k1)
        return states.log_normalizing_constant[-1]

    return fn


def particle_rows(num_particles: int, T: int, args) -> list[dict[str, Any]]:
    F, Q, Hm, R, ys = _linear_problem(args.seed, T)
    dyn = kj.LinearDynamics(jnp.asarray(F), jnp.asarray(Q))
    obs = kj.LinearObservation(jnp.asarray(Hm), jnp.asarray(R))
    prior = kj.Gaussian(jnp.zeros(2, jnp.float32), jnp.eye(2, dtype=jnp.float32))
    pf = kj.particle_filter(dyn, obs)

    def ours(key, ys, lean):
        start = kj.sample_particles(key, prior, num_particles)
        out = kj.run(pf, start, ys, lean=lean)
        return jnp.sum(out.infos.log_likelihood), out.states

    calls = {
        "kalmanjax": lambda key, ys: ours(key, ys, False),
        "kalmanjax_lean": lambda key, ys: ours(key, ys, True)[0],
    }
    try:
        calls["cuthbert"] = _cuthbert_fn(F, Q, Hm, R, num_particles)
    except ImportError as err:
        H.log(f"  particle: cuthbert not importable ({err})")
    key = jax.random.key(args.seed)
    compiled, compile_times, lls = {}, {}, {}
    for name, fn in calls.items():
        compiled[name], compile_times[name] = H.compile_fn(fn, key, ys)
        _, out = H.time_call(compiled[name], (key, ys))
        lls[name] = float(out[0] if isinstance(out, tuple) else out)
    run_s = H.time_interleaved(
        {name: (c, (key, ys)) for name, c in compiled.items()},
        repeats=args.repeats,
        max_time_s=args.max_time,
        rotate=True,
    )
    rows = []
    for name in calls:
        rate = num_particles * T / run_s[name]["median"]
        rows.append(
            {
                "params": {"section": "particle", "method": name, "N": num_particles}
                | {"T": T, "d": 2, "dtype": "float32"},
                "skipped": None,
                **compile_times[name],
                "run_s": run_s[name],
                "particle_steps_per_s": rate,
                "log_likelihood": lls[name],
            }
        )
        H.log(f"  particle N={num_particles} {name}: {rate:.3g} particle-steps/s")
    if "cuthbert" in calls:
        base = rows[-1]["particle_steps_per_s"]
        for row in rows[:-1]:
            row["vs_cuthbert"] = row["particle_steps_per_s"] / base
    return rows


def parse_args(argv):
    parser = H.Parser(__doc__, repeats=(20, 3), max_time=(10.0, 1.0))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; return the payload written to ``<out>``."""
    args = parse_args(argv)
    mode = "quick" if args.quick else "full"
    settings = H.settings(
        args,
        sigma_point={"ds": DS[mode], "T": SIGMA_T[mode], "gh_max_d": GH_MAX_D},
        particle={"N": PARTICLES[mode], "T": PARTICLE_T[mode], "ess_threshold": 0.5},
    )
    out = H.Output(BENCHMARK, args, settings, packages=("cuthbert",))
    for d in DS[mode]:
        out.rows.extend(sigma_point_rows(d, SIGMA_T[mode], args))
        out.save()
    for n in PARTICLES[mode]:
        out.rows.extend(particle_rows(n, PARTICLE_T[mode], args))
        out.save()
    sigma = [r for r in out.rows if r["params"]["section"] == "sigma_point"]
    out.summary["sigma_point_vs_ekf"] = {
        f"d{r['params']['d']}_{r['params']['method']}": r["vs_ekf"]
        for r in sigma
        if r.get("skipped") is None and r["params"]["method"] != "ekf"
    }
    F, Q, Hm, R, ys = _linear_problem(args.seed, PARTICLE_T[mode])
    kf = kj.kalman_filter(
        kj.LinearDynamics(jnp.asarray(F), jnp.asarray(Q)),
        kj.LinearObservation(jnp.asarray(Hm), jnp.asarray(R)),
    )
    prior = kj.Gaussian(jnp.zeros(2, jnp.float32), jnp.eye(2, dtype=jnp.float32))
    out.summary["kalman_log_likelihood"] = float(
        kj.log_marginal_likelihood(kf, prior, ys)
    )
    out.summary["particle_vs_cuthbert"] = {
        f"N{r['params']['N']}_{r['params']['method']}": r.get("vs_cuthbert")
        for r in out.rows
        if r["params"]["section"] == "particle" and r["params"]["method"] != "cuthbert"
    }
    return out.save(complete=True)


if __name__ == "__main__":
    main()
