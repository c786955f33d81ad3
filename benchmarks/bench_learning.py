"""Benchmark: EM against dynamax's ``fit_em``; the iterated extended smoother.

Sections (``params.section``):

* ``em``: ``kj.fit_em`` (its iterations in one ``lax.scan`` under ``jax.jit``)
  against dynamax's ``LinearGaussianSSM.fit_em`` (a Python loop over a jitted EM
  step) on the same model, data and starting point, in the update-first
  convention with both offsets (dynamax's model), float32. The rows give EM
  iterations per second: ``num_iters`` over the median run time, our compile
  excluded. dynamax's ``fit_em`` jits its EM step again on every call, so its
  ``iters_per_s`` is per call as a user sees it, and
  ``iters_per_s_without_its_compile`` is ``num_iters`` over the difference
  between calls of ``2 num_iters`` and ``num_iters`` iterations. Each row also
  gives the largest difference of the two log-likelihood traces relative to
  their scale.
* ``ieks``: ``kj.iterated_extended_smoother`` on a pendulum (angle and rate,
  ``sin`` of the angle observed, 30 % of the readings missing), float64, with
  and without the line search, sequential and parallel. The rows give the time
  per Gauss-Newton iteration, the iterations until the cost is within
  :data:`CONVERGED` (relative) of its value after ``num_iters`` iterations,
  and the increases of the cost larger than that along the way.

Run ``python -m benchmarks.bench_learning --help``.
"""

from __future__ import annotations

import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import kalmanjax as kj
from benchmarks import _harness as H

BENCHMARK = "bench_learning"
#: (state, obs, T) of the EM rows
EM_SIZES = {"full": [(4, 2, 1_000), (8, 4, 1_000)], "quick": [(2, 2, 50)]}
EM_ITERS = {"full": 50, "quick": 5}
IEKS_T = {"full": [100, 1_000], "quick": [20]}
IEKS_ITERS = {"full": 40, "quick": 5}
#: an iteration has converged when its cost is within this of the last one's
CONVERGED = 1e-9


def _em_problem(seed: int, n: int, m: int, T: int):
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(n, n))
    F = 0.9 * A / np.max(np.abs(np.linalg.eigvals(A)))
    true = {
        "m0": rng.normal(size=n),
        "P0": np.eye(n),
        "F": F,
        "b": 0.1 * rng.normal(size=n),
        "Q": 0.1 * np.eye(n),
        "H": rng.normal(size=(m, n)),
        "d": rng.normal(size=m),
        "R": 0.2 * np.eye(m),
    }
    x = rng.multivariate_normal(true["m0"], true["P0"])
    ys = []
    for _ in range(T):  # update-first: y_0 observes x_0
        ys.append(
            true["H"] @ x + true["d"] + rng.multivariate_normal(np.zeros(m), true["R"])
        )
        x = true["F"] @ x + true["b"] + rng.multivariate_normal(np.zeros(n), true["Q"])
    start = {
        "m0": np.zeros(n),
        "P0": np.eye(n),
        "F": 0.5 * np.eye(n),
        "b": np.zeros(n),
        "Q": np.eye(n),
        "H": rng.normal(size=(m, n)),
        "d": np.zeros(m),
        "R": np.eye(m),
    }
    f32 = {k: np.asarray(v, np.float32) for k, v in start.items()}
    return f32, np.asarray(ys, np.float32)


def em_rows(n: int, m: int, T: int, num_iters: int, args) -> list[dict[str, Any]]:
    """kalmanjax's and dynamax's EM on one problem."""
    start, ys = _em_problem(args.seed, n, m, T)
    a = {k: jnp.asarray(v) for k, v in start.items()}
    y = jnp.asarray(ys)

    def ours(a, y):
        fit = kj.fit_em(
            kj.Gaussian(a["m0"], a["P0"]),
            kj.LinearDynamics(a["F"], a["Q"], b=a["b"]),
            kj.LinearObservation(a["H"], a["R"], d=a["d"]),
            y,
            num_iters=num_iters,
            update_first=True,
            missing=False,  # no gaps in these data; dynamax has no imputation
        )
        return fit.log_likelihoods

    params = {"section": "em", "state": n, "obs": m, "T": T, "num_iters": num_iters}
    timed = H.time_jitted(ours, a, y, repeats=args.repeats, max_time_s=args.max_time)
    lls_ours = np.asarray(timed.pop("out"), np.float64)
    rows = [
        {
            "params": params | {"method": "kalmanjax"},
            "skipped": None,
            **timed,
            "iters_per_s": num_iters / timed["run_s"]["median"],
        }
    ]
    try:
        with warnings.catch_warnings():  # tfp's deprecation warnings on import
            warnings.simplefilter("ignore", DeprecationWarning)
            from dynamax.linear_gaussian_ssm import LinearGaussianSSM
    except ImportError as err:
        rows.append({"params": params | {"method": "dynamax"}, "skipped": str(err)})
        return rows
    with jax.numpy_dtype_promotion("standard"):
        model = LinearGaussianSSM(n, m)
        dparams, props = model.initialize(
            jax.random.key(0),
            initial_mean=a["m0"],
            initial_covariance=a["P0"],
            dynamics_weights=a["F"],
            dynamics_bias=a["b"],
            dynamics_covariance=a["Q"],
            emission_weights=a["H"],
            emission_bias=a["d"],
            emission_covariance=a["R"],
        )

        def theirs(iters):
            return model.fit_em(dparams, props, y, num_iters=iters, verbose=False)[1]

        repeats = max(3, min(args.repeats, 5))
        once = H.time_python(theirs, num_iters, repeats=repeats)
        twice = H.time_python(theirs, 2 * num_iters, repeats=repeats)
    lls_theirs = np.asarray(once["out"], np.float64)
    scale = np.abs(lls_theirs).max()
    # every fit_em call jits its EM step afresh; the difference of the two call
    # lengths is the cost of num_iters iterations without that fixed part
    marginal = twice["run_s"]["median"] - once["run_s"]["median"]
    rows.append(
        {
            "params": params | {"method": "dynamax"},
            "skipped": None,
            "run_s": once["run_s"],
            "run_s_double_iters": twice["run_s"],
            "iters_per_s": num_iters / once["run_s"]["median"],
            "iters_per_s_without_its_compile": num_iters / marginal
            if marginal > 0
            else None,
            "log_likelihood_max_rel_diff": float(
                np.abs(lls_ours - lls_theirs).max() / scale
            ),
        }
    )
    theirs_rate = rows[-1]["iters_per_s_without_its_compile"]
    rows[0]["speedup_vs_dynamax_without_its_compile"] = (
        None if theirs_rate is None else rows[0]["iters_per_s"] / theirs_rate
    )
    rows[0]["speedup_vs_dynamax"] = rows[0]["iters_per_s"] / rows[1]["iters_per_s"]
    return rows


def _pendulum(seed: int, T: int):
    g, dt = 9.81, 0.01
    fn = lambda x, u: jnp.stack([x[0] + dt * x[1], x[1] - g * dt * jnp.sin(x[0])])  # noqa: E731
    q = jnp.array([[dt**3 / 3, dt**2 / 2], [dt**2 / 2, dt]])
    dyn = kj.NonlinearDynamics(fn=fn, Q=q)
    obs = kj.NonlinearObservation(fn=lambda x, u: jnp.sin(x[:1]), R=0.1 * jnp.eye(1))
    prior = kj.Gaussian(jnp.array([1.5, 0.0]), 0.1 * jnp.eye(2))
    sim = kj.simulate(jax.random.key(seed), prior, dyn, obs, num_steps=T)
    gaps = jax.random.uniform(jax.random.key(seed + 1), (T, 1)) < 0.3
    return dyn, obs, prior, jnp.where(gaps, jnp.nan, sim.observations), sim.states


def ieks_rows(T: int, num_iters: int, args) -> list[dict[str, Any]]:
    """The IEKS on the pendulum, each way, float64."""
    rows = []
    with jax.enable_x64(True):
        dyn, obs, prior, ys, truth = _pendulum(args.seed, T)
        for line_search in (True, False):
            for parallel in (False, True):

                def fn(ys, line_search=line_search, parallel=parallel):
                    out = kj.iterated_extended_smoother(
                        dyn,
                        obs,
                        prior,
                        ys,
                        num_iters=num_iters,
                        line_search=line_search,
                        parallel=parallel,
                    )
                    return out.costs, out.smoothed.mean

                timed = H.time_jitted(
                    fn, ys, repeats=args.repeats, max_time_s=args.max_time
                )
                costs, mean = (np.asarray(v) for v in timed.pop("out"))
                # sin(angle) is what the readings identify: a path and its
                # mirror image through pi/2 read the same
                gap = np.sin(mean[:, 0]) - np.sin(np.asarray(truth)[:, 0])
                within = np.abs(costs - costs[-1]) <= CONVERGED * np.abs(costs[-1])
                rows.append(
                    {
                        "params": {"section": "ieks", "T": T, "num_iters": num_iters}
                        | {"line_search": line_search, "parallel": parallel},
                        "skipped": None,
                        **timed,
                        "per_iteration_s": timed["run_s"]["median"] / num_iters,
                        "iterations_to_converge": int(np.argmax(within)),
                        "initial_cost": float(costs[0]),
                        "final_cost": float(costs[-1]),
                        "cost_increases": int(
                            np.sum(np.diff(costs) > CONVERGED * np.abs(costs[-1]))
                        ),
                        "rmse_sin_angle_to_truth": float(np.sqrt(np.mean(gap**2))),
                    }
                )
                H.log(
                    f"  ieks T={T} line_search={line_search} parallel={parallel}: "
                    f"{rows[-1]['per_iteration_s'] * 1e3:.2f} ms/iteration"
                )
    return rows


def parse_args(argv):
    parser = H.Parser(__doc__, repeats=(10, 3), max_time=(10.0, 1.0))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; return the payload written to ``<out>``."""
    args = parse_args(argv)
    mode = "quick" if args.quick else "full"
    settings = H.settings(
        args,
        em={"sizes": EM_SIZES[mode], "num_iters": EM_ITERS[mode], "dtype": "float32"},
        ieks={"T": IEKS_T[mode], "num_iters": IEKS_ITERS[mode], "dtype": "float64"},
        converged_rel=CONVERGED,
    )
    out = H.Output(BENCHMARK, args, settings, packages=("dynamax",))
    for n, m, T in EM_SIZES[mode]:
        out.rows.extend(em_rows(n, m, T, EM_ITERS[mode], args))
        H.log(f"  em n={n} m={m} T={T}: done")
        out.save()
    for T in IEKS_T[mode]:
        out.rows.extend(ieks_rows(T, IEKS_ITERS[mode], args))
        out.save()
    out.summary["em_speedup_vs_dynamax"] = {
        f"n{r['params']['state']}_m{r['params']['obs']}_T{r['params']['T']}": {
            "per_call": r.get("speedup_vs_dynamax"),
            "without_its_compile": r.get("speedup_vs_dynamax_without_its_compile"),
        }
        for r in out.rows
        if r["params"]["section"] == "em" and r["params"]["method"] == "kalmanjax"
    }
    return out.save(complete=True)


if __name__ == "__main__":
    main()
