"""What every benchmark script shares: arguments, timing, provenance, one JSON schema.

Run a script from the repository root as ``python -m benchmarks.<name> [--quick]
[--out DIR] ...``; it writes ``DIR/<name>_<device>.json`` (default ``DIR`` is the
untracked ``bench-results/``).

Timing protocol (every jitted row):

1. compile: ``jax.jit(fn).lower(*args).compile()``, timed on its own (trace +
   lowering is reported as ``lower_s``, XLA compilation as ``xla_compile_s``, and
   ``compile_s`` is their sum, i.e. the first-call overhead a user pays);
2. one warm-up call of the compiled executable;
3. the timed calls, each ending in ``jax.block_until_ready``; the rows of a group
   are timed round-robin (:func:`time_interleaved`).

Timing summaries are ``{"median", "iqr", "min", "n"}`` in seconds.

JSON schema (:data:`SCHEMA_VERSION`), written by :class:`Output` and checked by
:func:`validate`::

    {"schema_version": 2, "benchmark": name, "complete": bool,
     "environment": {...},   # environment(): versions, device, git, env variables
     "settings": {...},      # the run's arguments and constants
     "rows": [{"params": {...}, ...}],   # one measured configuration each
     "summary": {...}}       # figures derived from the rows, per benchmark
"""

from __future__ import annotations

import argparse
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

SCHEMA_VERSION = 2
REPO_ROOT = Path(__file__).resolve().parent.parent
#: the default output folder (untracked: committing results is a deliberate copy)
DEFAULT_OUT = REPO_ROOT / "bench-results"
DTYPES = ("float32", "float64")
#: environment variables that change timings, recorded in ``environment.env_vars``
ENV_VARS = ("NPROC", "XLA_FLAGS", "JAX_PLATFORMS", "OPENBLAS_NUM_THREADS")
#: the keys of the top level and of ``environment`` (``loadavg_end`` once complete)
TOP_KEYS = (
    "schema_version",
    "benchmark",
    "complete",
    "environment",
    "settings",
    "rows",
    "summary",
)
ENVIRONMENT_KEYS = (
    "date",
    "python",
    "platform",
    "processor",
    "cpu_count",
    "jax",
    "jaxlib",
    "numpy",
    "kalmanjax",
    "packages",
    "backend",
    "device_kind",
    "device_count",
    "x64",
    "git_commit",
    "git_dirty",
    "env_vars",
    "loadavg",
)
TIMING_KEYS = {"median", "iqr", "min", "n"}


def log(*a: Any) -> None:
    """Progress to stderr (stdout stays free for a worker's JSON line)."""
    print(*a, file=sys.stderr, flush=True)


# --------------------------------------------------------------------- arguments


class Parser(argparse.ArgumentParser):
    """The arguments the benchmarks share; a script adds its own with ``add_argument``.

    ``repeats``, ``max_time`` and ``compile_repeats`` are ``(full, quick)`` default
    pairs, resolved by :meth:`parse_args` from ``--quick``. ``--compile-repeats``,
    ``--dtypes``, ``--sizes`` and ``--seed`` exist only where the script asks.
    """

    def __init__(
        self,
        doc: str,
        *,
        repeats: tuple[int, int],
        max_time: tuple[float, float],
        compile_repeats: tuple[int, int] | None = None,
        dtypes: Sequence[str] | None = None,
        sizes: Sequence[str] | None = None,
        seed: bool = True,
    ) -> None:
        super().__init__(description=doc.split("\n\n")[0])
        self._by_mode = {"repeats": repeats, "max_time": max_time}
        self.add_argument(
            "--quick", action="store_true", help="smoke sizes and few repeats"
        )
        self.add_argument(
            "--out",
            type=Path,
            default=DEFAULT_OUT,
            help="output folder, gets <benchmark>_<device>.json (default: the "
            "untracked bench-results/ of the repository)",
        )
        self.add_argument(
            "--repeats",
            type=int,
            default=None,
            help=f"timed rounds per group of rows (default {repeats[0]}, "
            f"--quick {repeats[1]})",
        )
        self.add_argument(
            "--max-time",
            type=float,
            default=None,
            help="stop a group's timed rounds after this many seconds (default "
            f"{max_time[0]:g}, --quick {max_time[1]:g})",
        )
        if compile_repeats is not None:
            self._by_mode["compile_repeats"] = compile_repeats
            self.add_argument(
                "--compile-repeats",
                type=int,
                default=None,
                help="compilations per row, median reported (default "
                f"{compile_repeats[0]}, --quick {compile_repeats[1]})",
            )
        if dtypes is not None:
            self.add_argument(
                "--dtypes", nargs="+", default=list(dtypes), choices=DTYPES
            )
        if sizes is not None:
            self.add_argument(
                "--sizes",
                nargs="+",
                default=None,
                choices=list(sizes),
                help="restrict to these sizes",
            )
        if seed:
            self.add_argument("--seed", type=int, default=0)

    def parse_args(self, args=None, namespace=None):
        """Parse, then fill the unset ``(full, quick)`` defaults."""
        ns = super().parse_args(args, namespace)
        for name, (full, quick) in self._by_mode.items():
            if getattr(ns, name) is None:
                setattr(ns, name, quick if ns.quick else full)
        return ns


def settings(args: argparse.Namespace, **extra: Any) -> dict[str, Any]:
    """The common arguments of a run (those its parser has) plus ``extra``."""
    common = {
        "quick": "quick",
        "repeats": "repeats",
        "compile_repeats": "compile_repeats",
        "max_time_s": "max_time",
        "dtypes": "dtypes",
        "seed": "seed",
    }
    out = {key: getattr(args, name) for key, name in common.items() if name in args}
    return {**out, **extra}


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


def compile_fn(
    fn: Callable, *args: Any, program: bool = False
) -> tuple[Any, dict[str, Any]]:
    """Trace, lower and compile ``fn`` for ``args``; return the executable and the
    row fields ``{"compile_s", "compile": {"lower_s", "xla_compile_s"}}`` (with
    ``program``, also ``"program"``: :func:`program_size` of the lowering).

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
    fields: dict[str, Any] = {
        "compile_s": t2 - t0,
        "compile": {"lower_s": t1 - t0, "xla_compile_s": t2 - t1},
    }
    if program:
        fields["program"] = program_size(lowered, compiled)
    return compiled, fields


def program_size(lowered: Any, compiled: Any) -> dict[str, int]:
    """How big a program is: ``stablehlo_ops`` (operations in the lowered
    StableHLO text, loop bodies counted once) and ``hlo_instructions`` (in XLA's
    optimised HLO, where the backend gives its text)."""
    text = lowered.as_text()
    out = {"stablehlo_ops": sum(1 for line in text.splitlines() if " = " in line)}
    try:
        hlo = compiled.as_text()
    except Exception:  # noqa: BLE001  (a backend without the text)
        hlo = None
    if hlo:
        out["hlo_instructions"] = sum(1 for line in hlo.splitlines() if " = " in line)
    return out


def memory(compiled: Any) -> dict[str, int] | None:
    """XLA's own account of a compiled program's memory: argument, output and
    temporary bytes (``None`` where the backend gives none)."""
    try:
        stats = compiled.memory_analysis()
    except Exception:  # noqa: BLE001  (a backend without the account)
        return None
    if stats is None:
        return None
    fields = (
        "argument_size_in_bytes",
        "output_size_in_bytes",
        "temp_size_in_bytes",
    )
    return {f: int(getattr(stats, f)) for f in fields if hasattr(stats, f)}


def compile_repeated(
    fn: Callable, args: Sequence[Any], repeats: int
) -> tuple[Any, dict[str, Any]]:
    """:func:`compile_fn` ``repeats`` times: the last executable, and the medians
    in the same fields plus ``compile.all_compile_s``."""
    times = [compile_fn(fn, *args) for _ in range(repeats)]
    compiled = times[-1][0]
    ct = [t for _, t in times]
    return compiled, {
        "compile_s": float(np.median([t["compile_s"] for t in ct])),
        "compile": {
            key: float(np.median([t["compile"][key] for t in ct]))
            for key in ("lower_s", "xla_compile_s")
        }
        | {"all_compile_s": [t["compile_s"] for t in ct]},
    }


def time_call(fn: Callable, args: Sequence[Any]) -> tuple[float, Any]:
    """Seconds for one call of ``fn(*args)`` including ``block_until_ready``."""
    t0 = time.perf_counter()
    out = jax.block_until_ready(fn(*args))
    return time.perf_counter() - t0, out


def time_jitted(
    fn: Callable, *args: Any, repeats: int, max_time_s: float | None = None
) -> dict[str, Any]:
    """Compile ``fn`` (timed separately), warm up once, then time up to ``repeats``
    runs (at least 3 when ``max_time_s`` cuts in).

    Returns:
        ``{"compile_s", "compile", "run_s": summary, "out"}`` where ``out`` is the
        output of the warm-up call.
    """
    compiled, ctimes = compile_fn(fn, *args)
    _, out = time_call(compiled, args)  # warm-up
    run_s = time_interleaved(
        {"fn": (compiled, args)}, repeats=repeats, max_time_s=max_time_s
    )
    return {**ctimes, "run_s": run_s["fn"], "out": out}


def time_interleaved(
    calls: dict[str, tuple[Callable, Sequence[Any]]],
    *,
    repeats: int,
    max_time_s: float | None = None,
    min_repeats: int = 3,
    rotate: bool = False,
) -> dict[str, dict[str, float | int]]:
    """Time already compiled (and warmed-up) callables round-robin.

    One timed call of every entry per round, so that slow drifts of a noisy
    machine hit all rows alike; with ``rotate`` the order shifts by one every
    round (no row is always first). Stops after ``repeats`` rounds, or earlier once
    ``min_repeats`` rounds are done and the total time exceeds ``max_time_s``.
    """
    names = list(calls)
    times: dict[str, list[float]] = {name: [] for name in names}
    total = 0.0
    for r in range(repeats):
        shift = r % len(names) if rotate else 0
        for name in names[shift:] + names[:shift]:
            fn, args = calls[name]
            t, _ = time_call(fn, args)
            times[name].append(t)
            total += t
        if max_time_s is not None and r + 1 >= min_repeats and total > max_time_s:
            break
    return {name: summarize(ts) for name, ts in times.items()}


def time_python(fn: Callable, *args: Any, repeats: int = 3) -> dict[str, Any]:
    """Time a plain (NumPy) function: one warm-up call, then ``repeats`` runs."""
    _, out = time_call(fn, args)
    times = [time_call(fn, args)[0] for _ in range(repeats)]
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


def loadavg() -> list[float] | None:
    """1, 5 and 15 minute load averages (other work on the machine skews timings)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def environment(packages: Sequence[str] = ()) -> dict[str, Any]:
    """Where and with what the numbers were measured (``packages``: the versions of
    the peers or other libraries a benchmark uses, None where not installed)."""
    import kalmanjax

    devices = jax.devices()
    status = _git("status", "--porcelain")
    return {
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "jax": jax.__version__,
        "jaxlib": _version("jaxlib"),
        "numpy": np.__version__,
        "kalmanjax": kalmanjax.__version__,
        "packages": {name: _version(name) for name in packages},
        "backend": jax.default_backend(),
        "device_kind": devices[0].device_kind,
        "device_count": len(devices),
        "x64": bool(jax.config.jax_enable_x64),
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": None if status is None else bool(status),
        "env_vars": {name: os.environ.get(name) for name in ENV_VARS},
        "loadavg": loadavg(),
    }


def device_slug() -> str:
    """The device kind as a file-name fragment, e.g. ``cpu`` or ``nvidia_h100``."""
    kind = jax.devices()[0].device_kind.lower()
    return "".join(c if c.isalnum() else "_" for c in kind).strip("_") or "unknown"


# ------------------------------------------------------------------------ output


def jsonable(x: Any) -> Any:
    """``x`` with NumPy scalars as Python numbers, NaN as None and +-inf as
    ``"inf"``/``"-inf"`` (so that every number in the JSON is finite)."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [jsonable(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not np.isfinite(x):
        return None if np.isnan(x) else ("inf" if x > 0 else "-inf")
    return x


def write_json(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Write ``payload`` as indented JSON (creating parent folders)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        json.dump(jsonable(payload), f, indent=1, allow_nan=False)
        f.write("\n")
    return path


class Output:
    """The results file of one run, ``<args.out>/<benchmark>_<device>.json``.

    Fill ``rows`` and ``summary``; :meth:`save` after every group of rows keeps the
    rows of a run that times out (``complete`` stays false until the last save).
    """

    def __init__(
        self,
        benchmark: str,
        args: argparse.Namespace,
        settings: dict[str, Any],
        packages: Sequence[str] = (),
    ) -> None:
        self.path = Path(args.out) / f"{benchmark}_{device_slug()}.json"
        self.payload: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "benchmark": benchmark,
            "complete": False,
            "environment": environment(packages),
            "settings": settings,
            "rows": [],
            "summary": {},
        }
        env = self.payload["environment"]
        log(f"{benchmark}: {env['backend']} ({env['device_kind']}) -> {self.path}")

    @property
    def rows(self) -> list[dict[str, Any]]:
        """The measured rows, ``{"params": {...}, ...}`` each."""
        return self.payload["rows"]

    @property
    def summary(self) -> dict[str, Any]:
        """Figures derived from the rows."""
        return self.payload["summary"]

    def save(self, *, complete: bool = False) -> dict[str, Any]:
        """Write the file (the last time with ``complete=True``); return the payload."""
        if complete:
            self.payload["complete"] = True
            self.payload["environment"]["loadavg_end"] = loadavg()
        write_json(self.path, self.payload)
        if complete:
            log(f"wrote {self.path}")
        return self.payload


def validate(data: dict[str, Any]) -> None:
    """Raise ``ValueError`` unless ``data`` follows the schema: the top-level and
    environment keys, rows with a ``params`` dict and a ``skipped`` that is absent,
    None or a reason, and well-formed timing summaries (``0 < min <= median``)."""
    problems = []
    extra = set(data) - set(TOP_KEYS) - {"converted_from_schema_version"}
    if set(TOP_KEYS) - set(data) or extra:
        problems.append(f"top-level keys {sorted(data)}, expected {list(TOP_KEYS)}")
    elif data["schema_version"] != SCHEMA_VERSION:
        problems.append(f"schema_version {data['schema_version']} != {SCHEMA_VERSION}")
    else:
        missing = set(ENVIRONMENT_KEYS) - set(data["environment"])
        if missing:
            problems.append(f"environment lacks {sorted(missing)}")
        if not isinstance(data["settings"], dict) or not isinstance(
            data["summary"], dict
        ):
            problems.append("settings and summary must be objects")
        for i, row in enumerate(data["rows"]):
            where = f"row {i} {row.get('params')}"
            if not isinstance(row.get("params"), dict):
                problems.append(f"{where}: no params")
            if not isinstance(row.get("skipped"), str | None):
                problems.append(f"{where}: skipped {row['skipped']!r}")
            problems += [f"{where}: {p}" for p in _timing_problems(row)]
    if problems:
        raise ValueError(f"{data.get('benchmark')}: " + "; ".join(problems))


def _timing_problems(x: Any) -> list[str]:
    """Malformed timing summaries anywhere inside ``x``."""
    if isinstance(x, list):
        return [p for v in x for p in _timing_problems(v)]
    if not isinstance(x, dict):
        return []
    if set(x) == TIMING_KEYS:
        ok = x["n"] >= 1 and 0 < x["min"] <= x["median"] and x["iqr"] >= 0
        return [] if ok else [f"bad timing summary {x}"]
    return [p for v in x.values() for p in _timing_problems(v)]
