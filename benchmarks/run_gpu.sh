#!/usr/bin/env bash
# The whole GPU benchmark run, in a few minutes, on one machine with an NVIDIA GPU:
#   1. python -m benchmarks.bench_scan  (the blocked and the tree prefix scans
#      against T = 1e2..1e6: filter, smoother, gradient; compile, run, memory)
#   2. python -m benchmarks.bench_parallel  (sequential vs parallel filter, full
#      sizes, fewer repeats; sharded batch on the real devices)
#   3. python -m benchmarks.bench_structured  (the diagonal and low-rank filters
#      against k, and the structured-covariance EKF over the shipped transformer)
#   4. python -m benchmarks.bench_kalman --no-peers  (all single-sequence and batch
#      sizes, one process per size)
# and then prints the targets computed from the JSON: the parallel filter >= 30x
# over the sequential one at T = 1e5, d = 4, float32, with a compile <= 5 s; the
# scan's compile and run-time targets (bench_scan's summary).
#
# PREREQUISITE (the GPU machine may have no internet, so nothing is installed
# here): a Python environment prepared beforehand with jax + CUDA, e.g. a venv with
# `pip install "jax[cuda12]" numpy jaxtyping flax` (or the machine's own
# CUDA-enabled jax). Activate it first, or point PYTHON at its interpreter.
# kalmanjax itself is taken from this checkout (`python -m` from the repository
# root puts it on sys.path).
#
# Usage:  benchmarks/run_gpu.sh [--tiny] [OUTDIR]
#   OUTDIR defaults to $OUT if set, else the untracked bench-results/gpu (copying
#   results into benchmarks/results/ is a deliberate step, see benchmarks/README.md).
#   Writes OUTDIR/bench_scan_<device>.json, OUTDIR/bench_parallel_<device>.json,
#   OUTDIR/bench_structured_<device>.json and OUTDIR/kalman_<size>/
#   bench_kalman_<device>.json, one folder per size. Every script rewrites its
#   JSON after each size ("complete": false until the end), so a timeout keeps
#   the sizes done.
#   --tiny: the same steps end to end on any backend (the CPU included) at smoke
#   sizes, in about 80 s on 2 cores: the tests run it this way (tests/benchmarks/
#   test_run_gpu.py). The targets are then only printed, never checked.
# Time: everything runs under one budget, TOTAL_BUDGET seconds (default 540; the
#   GPU sessions allow 600 s per command): bench_scan gets at most SCAN_TIMEOUT
#   (default 150) s, bench_parallel PARALLEL_TIMEOUT (150), bench_structured
#   STRUCTURED_TIMEOUT (90), each bench_kalman size at most KALMAN_SIZE_TIMEOUT
#   (60) s of what is left.
# Other knobs: PYTHON (interpreter), KALMAN_DTYPES (bench_kalman dtypes, default
#   "float32").
# Exit status: non-zero if the GPU is missing (without --tiny) or any step failed
# or timed out.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TINY=0
if [ "${1:-}" = "--tiny" ]; then
    TINY=1
    shift
fi
OUTDIR="${1:-${OUT:-bench-results/gpu}}"
mkdir -p "$OUTDIR"
PY="${PYTHON:-python}"
KALMAN_DTYPES="${KALMAN_DTYPES:-float32}"
TOTAL_BUDGET="${TOTAL_BUDGET:-540}"
SCAN_TIMEOUT="${SCAN_TIMEOUT:-150}"
PARALLEL_TIMEOUT="${PARALLEL_TIMEOUT:-150}"
STRUCTURED_TIMEOUT="${STRUCTURED_TIMEOUT:-90}"
KALMAN_SIZE_TIMEOUT="${KALMAN_SIZE_TIMEOUT:-60}"
if [ "$TINY" -eq 1 ]; then
    KALMAN_SIZES=(d4_m2_T64)
    SCAN_ARGS=(--quick --Ts 8 --tasks filter)
    PARALLEL_ARGS=(--quick --no-sharded)
    STRUCTURED_ARGS=(--quick)
    KALMAN_ARGS=(--quick)
else
    # cheapest first; the long sequential scans (T = 1e5) last
    KALMAN_SIZES=(d4_m2_T1e3 batch256_d4_m2_T1e3 d32_m8_T1e4 d128_m32_T2e3 d4_m2_T1e5)
    SCAN_ARGS=(--repeats 10 --max-time 2 --min-repeats 1)
    PARALLEL_ARGS=(--repeats 10 --max-time 2 --min-repeats 1)
    STRUCTURED_ARGS=(--repeats 5 --max-time 2)
    KALMAN_ARGS=(--repeats 10 --compile-repeats 1 --max-time 2)
fi

export XLA_PYTHON_CLIENT_PREALLOCATE=false
export PYTHONUNBUFFERED=1

echo "== nvidia-smi -L"
if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi -L || echo "WARNING: nvidia-smi -L failed" >&2
else
    echo "WARNING: nvidia-smi not found" >&2
fi

echo "== jax devices"
SLUG="$(TINY="$TINY" "$PY" - <<'EOF'
import os
import sys

try:
    import jax
except Exception as e:  # noqa: BLE001
    sys.exit(f"run_gpu.sh: cannot import jax ({e}); prepare a venv with jax[cuda12]")
print(f"jax {jax.__version__}, backend {jax.default_backend()}, devices {jax.devices()}",
      file=sys.stderr)
if jax.default_backend() != "gpu" and os.environ["TINY"] != "1":
    sys.exit(
        f"run_gpu.sh: jax.default_backend() is {jax.default_backend()!r}, not 'gpu': "
        "this needs a CUDA-enabled jax (e.g. jax[cuda12]) and a visible NVIDIA GPU "
        "(--tiny runs the smoke sizes on any backend)"
    )
from benchmarks._harness import device_slug

print(device_slug())
EOF
)" || { echo "run_gpu.sh: FAILED: no usable GPU backend (see above)" >&2; exit 2; }
echo "device slug: $SLUG"

failed=()
timed_out() { if [ "$1" -eq 124 ]; then echo ": timed out"; fi; }
# seconds for the next step: min(cap, what is left of TOTAL_BUDGET)
left() { local l=$((TOTAL_BUDGET - SECONDS)); echo $((l < $1 ? l : $1)); }
# step NAME CAP OUTDIR ARGS...: run `python -m benchmarks.NAME ARGS --out OUTDIR`
# under min(CAP, what is left), recording a failure; returns 1 if it failed
step() {
    local name="$1" cap="$2" dir="$3"
    shift 3
    local budget rc=0 t0=$SECONDS
    budget="$(left "$cap")"
    if [ "$budget" -lt 20 ]; then
        failed+=("$name: not run, TOTAL_BUDGET=$TOTAL_BUDGET s spent")
        return 1
    fi
    echo "== $name -> $dir/${name%% *}_${SLUG}.json (at most $budget s)"
    timeout "$budget" "$PY" -m "benchmarks.${name%% *}" "$@" --out "$dir" || rc=$?
    echo "$name: $((SECONDS - t0)) s"
    if [ "$rc" -ne 0 ]; then
        failed+=("$name (exit $rc$(timed_out "$rc"); partial JSON in $dir)")
        return 1
    fi
}

SCAN_JSON="$OUTDIR/bench_scan_${SLUG}.json"
PAR_JSON="$OUTDIR/bench_parallel_${SLUG}.json"
step bench_scan "$SCAN_TIMEOUT" "$OUTDIR" "${SCAN_ARGS[@]}" || true
step bench_parallel "$PARALLEL_TIMEOUT" "$OUTDIR" "${PARALLEL_ARGS[@]}" || true
step bench_structured "$STRUCTURED_TIMEOUT" "$OUTDIR" "${STRUCTURED_ARGS[@]}" || true
KAL_JSONS=()
for size in "${KALMAN_SIZES[@]}"; do
    dir="$OUTDIR/kalman_$size"
    # shellcheck disable=SC2086  # KALMAN_DTYPES is a word list
    if step "bench_kalman $size" "$KALMAN_SIZE_TIMEOUT" "$dir" --no-peers \
        --sizes "$size" --dtypes $KALMAN_DTYPES "${KALMAN_ARGS[@]}"; then
        KAL_JSONS+=("$dir/bench_kalman_${SLUG}.json")
    fi
done

echo "== tables"
[ -f "$PAR_JSON" ] && "$PY" -m benchmarks.table "$PAR_JSON" || true
for json in "${KAL_JSONS[@]}"; do
    "$PY" -m benchmarks.table "$json" || true
done

echo "== targets"
TINY="$TINY" "$PY" - "$PAR_JSON" "$SCAN_JSON" <<'EOF' || failed+=("target summary")
import json
import os
import sys

tiny = os.environ["TINY"] == "1"
problems = []
par_path, scan_path = sys.argv[1:3]
if os.path.exists(par_path):
    data = json.load(open(par_path))
    if not data.get("complete"):
        print("WARNING: bench_parallel JSON is partial (the run did not finish)")
    summary = data["summary"].get("parallel_vs_sequential", [])
    rows = [
        s for s in summary if s["d"] == 4 and s["T"] == 100_000 and s["dtype"] == "float32"
    ]
    if not rows and not tiny:
        problems.append("no (d=4, T=1e5, float32) rows in bench_parallel's JSON")
    for s in rows:
        speedup = s.get("speedup_parallel_vs_sequential")
        comp = s.get("parallel_compile_s")
        sp = "n/a" if speedup is None else f"{speedup:.1f}x"
        cp = "n/a" if comp is None else f"{comp:.2f} s"
        ok_s = speedup is not None and speedup >= 30
        ok_c = comp is not None and comp <= 5
        print(
            f"bench_parallel form={s['form']:5s} T=1e5: parallel over sequential "
            f"{sp:>8s} (target >= 30x: {'met' if ok_s else 'NOT met'}); parallel "
            f"compile {cp:>8s} (target <= 5 s: {'met' if ok_c else 'NOT met'})"
        )
else:
    problems.append(f"{par_path} is missing")
if os.path.exists(scan_path):
    scan = json.load(open(scan_path))["summary"]
    for e in scan.get("blocked_vs_tree", []):
        print(
            f"bench_scan {e['task']}/{e['form']} T={e['T']}: blocked compile "
            f"{e.get('blocked_compile_s')} s (target {e['compile_target_s']} s: "
            f"{e['compile_target_met']}), run blocked/tree "
            f"{e['blocked_over_tree_run']} (target <= 1.5: {e['run_target_met']})"
        )
    print(f"bench_scan: all targets met: {scan.get('all_targets_met')}")
else:
    problems.append(f"{scan_path} is missing")
if problems:
    sys.exit("; ".join(problems))
EOF

if [ ${#failed[@]} -gt 0 ]; then
    echo "run_gpu.sh: FAILED steps:" >&2
    printf '  %s\n' "${failed[@]}" >&2
    exit 1
fi
echo "run_gpu.sh: done; JSON in $OUTDIR"
