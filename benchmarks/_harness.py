"""Timing and provenance helpers shared by the benchmark scripts.

Timing protocol (every jitted row):

1. compile: ``jax.jit(fn).lower(*args).compile()``, timed on its own (trace +
   lowering is reported as ``lower_s``, XLA compilation as ``xla_compile_s``, and
   ``compile_s`` is their sum, i.e. the first-call overhead a user pays);
2. one warm-up call of the compiled executable;
3. ``repeats`` timed calls, each ending in ``jax.block_until_ready``.

Summaries are ``{"median", "iqr", "min", "n"}`` in seconds.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import jax
import numpy as np

SCHEMA_VERSION = 1
REPO_ROOT = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------------ timing


def summarize(times: Sequence[float]) -> dict[str, float | int]:
    """Median, inter-quartile range, minimum and count of a list of seconds."""
    t = np.asarray(times, dtype=np.float64)
    q1, med, q3 = np.percentile(t, [25.0, 50.0, 75.0])
    return {
        "median": float(med),
        "iqr": float(q3 - q1),
        "min": float(t.min()),
        "n": int(t.size),
    }


def compile_fn(fn: Callable, *args: Any) -> tuple[Any, dict[str, float]]:
    """Trace, lower and compile ``fn`` for ``args``; return the executable and
    the times ``{"lower_s", "xla_compile_s", "compile_s"}``.

    ``fn`` is wrapped in a fresh function first, so that a repeated call really
    retraces and recompiles instead of hitting ``jax.jit``'s caches.
    """

    def fresh(*a: Any) -> Any:
        return fn(*a)

    t0 = time.perf_counter()
    lowered = jax.jit(fresh).lower(*args)
    t1 = time.perf_counter()
    compiled = lowered.compile()
    t2 = time.perf_counter()
    return compiled, {
        "lower_s": t1 - t0,
        "xla_compile_s": t2 - t1,
        "compile_s": t2 - t0,
    }


def time_call(fn: Callable, args: Sequence[Any]) -> tuple[float, Any]:
    """Seconds for one call of ``fn(*args)`` including ``block_until_ready``."""
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return time.perf_counter() - t0, out


def time_jitted(
    fn: Callable,
    *args: Any,
    repeats: int = 10,
    max_time_s: float | None = None,
    min_repeats: int = 3,
) -> dict[str, Any]:
    """Compile ``fn`` (timed separately), warm up once, then time ``repeats`` runs.

    Args:
        fn: a jittable function of ``args``.
        *args: its arguments (arrays or pytrees of arrays).
        repeats: number of timed runs.
        max_time_s: stop early (after at least ``min_repeats`` runs) once the timed
            runs have taken this long in total.
        min_repeats: lower bound on the runs kept when ``max_time_s`` cuts in.

    Returns:
        ``{"compile_s", "lower_s", "xla_compile_s", "run_s": summary, "out"}``
        where ``out`` is the output of the warm-up call.
    """
    compiled, ctimes = compile_fn(fn, *args)
    _, out = time_call(compiled, args)  # warm-up
    times: list[float] = []
    for _ in range(repeats):
        t, _ = time_call(compiled, args)
        times.append(t)
        if (
            max_time_s is not None
            and len(times) >= min_repeats
            and sum(times) > max_time_s
        ):
            break
    return {**ctimes, "run_s": summarize(times), "out": out}


def time_interleaved(
    calls: dict[str, tuple[Callable, Sequence[Any]]],
    *,
    repeats: int,
    max_time_s: float | None = None,
    min_repeats: int = 3,
) -> dict[str, dict[str, float | int]]:
    """Time already compiled (and warmed-up) callables round-robin.

    One timed call of every entry per round, so that slow drifts of a noisy
    machine hit all rows alike. Stops after ``repeats`` rounds, or earlier once
    ``min_repeats`` rounds are done and the total time exceeds ``max_time_s``.
    """
    times: dict[str, list[float]] = {name: [] for name in calls}
    total = 0.0
    for r in range(repeats):
        for name, (fn, args) in calls.items():
            t, _ = time_call(fn, args)
            times[name].append(t)
            total += t
        if max_time_s is not None and r + 1 >= min_repeats and total > max_time_s:
            break
    return {name: summarize(ts) for name, ts in times.items()}


def time_python(
    fn: Callable, *args: Any, repeats: int = 3, max_time_s: float | None = None
) -> dict[str, Any]:
    """Time a plain (NumPy) function: one warm-up call, then ``repeats`` runs."""
    _, out = time_call(fn, args)
    times: list[float] = []
    for _ in range(repeats):
        t, _ = time_call(fn, args)
        times.append(t)
        if max_time_s is not None and sum(times) > max_time_s:
            break
    return {"run_s": summarize(times), "out": out}


# -------------------------------------------------------------------- provenance


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _git(*cmd: str) -> str | None:
    try:
        res = subprocess.run(
            ["git", *cmd],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout.strip() if res.returncode == 0 else None


def env_info(extra_packages: Sequence[str] = ()) -> dict[str, Any]:
    """Where and with what the numbers were measured."""
    import kalmanjax

    devices = jax.devices()
    status = _git("status", "--porcelain")
    return {
        "kalmanjax_version": kalmanjax.__version__,
        "git_sha": _git("rev-parse", "HEAD"),
        "git_dirty": None if status is None else bool(status),
        "jax_version": jax.__version__,
        "jaxlib_version": _version("jaxlib"),
        "numpy_version": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "NPROC": os.environ.get("NPROC"),
        "backend": jax.default_backend(),
        "device_kind": devices[0].device_kind,
        "device_count": len(devices),
        "x64": bool(jax.config.jax_enable_x64),
        "loadavg": loadavg(),
        "packages": {name: _version(name) for name in extra_packages},
        "utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }


def loadavg() -> list[float] | None:
    """1, 5 and 15 minute load averages (other work on the machine skews timings)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def device_slug() -> str:
    """The device kind as a file-name fragment, e.g. ``cpu`` or ``nvidia_h100``."""
    kind = jax.devices()[0].device_kind.lower()
    return "".join(c if c.isalnum() else "_" for c in kind).strip("_") or "unknown"


# ------------------------------------------------------------------------ output


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, float) and not np.isfinite(x):
        return None if np.isnan(x) else ("inf" if x > 0 else "-inf")
    return x


def write_json(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Write ``payload`` as indented JSON (creating parent folders)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        json.dump(_jsonable(payload), f, indent=1, allow_nan=False)
        f.write("\n")
    return path


def print_err(*a: Any) -> None:
    print(*a, file=sys.stderr, flush=True)
