#!/usr/bin/env bash
# The whole GPU benchmark run, in a few minutes, on one machine with an NVIDIA GPU:
#   1. python -m benchmarks.bench_parallel  (sequential vs parallel filter, full
#      sizes, fewer repeats; sharded batch on the real devices)
#   2. python -m benchmarks.bench_kalman --no-peers  (all single-sequence and batch
#      sizes, one process per size)
# and then prints the parallel-filter targets (>= 30x parallel over sequential at
# T = 1e5, d = 4, float32; parallel compile <= 5 s) computed from the JSON.
#
# PREREQUISITE (the GPU machine may have no internet, so nothing is installed
# here): a Python environment prepared beforehand with jax + CUDA, e.g. a venv with
# `pip install "jax[cuda12]" numpy jaxtyping` (or the machine's own CUDA-enabled
# jax). Activate it first, or point PYTHON at its interpreter. kalmanjax itself is
# taken from this checkout (`python -m` from the repository root puts it on sys.path).
#
# Usage:  benchmarks/run_gpu.sh [OUTDIR]
#   OUTDIR defaults to $OUT if set, else the untracked bench-results/gpu (copying
#   results into benchmarks/results/ is a deliberate step, see benchmarks/README.md).
#   Writes 6 JSON files: OUTDIR/bench_parallel_<device>.json and
#   OUTDIR/kalman_<size>/bench_kalman_<device>.json, one folder per size. Both
#   scripts rewrite their JSON after every size ("complete": false until the end),
#   so a timeout keeps the sizes done.
# Time: everything runs under one budget, TOTAL_BUDGET seconds (default 540; the
#   GPU sessions allow 600 s per command): bench_parallel gets at most
#   PARALLEL_TIMEOUT (default 300) s, each bench_kalman size at most
#   KALMAN_SIZE_TIMEOUT (default 120) s of what is left.
# Other knobs: PYTHON (interpreter), KALMAN_DTYPES (bench_kalman dtypes, default
#   "float32").
# Exit status: non-zero if the GPU is missing or any step failed or timed out.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUTDIR="${1:-${OUT:-bench-results/gpu}}"
mkdir -p "$OUTDIR"
PY="${PYTHON:-python}"
KALMAN_DTYPES="${KALMAN_DTYPES:-float32}"
TOTAL_BUDGET="${TOTAL_BUDGET:-540}"
PARALLEL_TIMEOUT="${PARALLEL_TIMEOUT:-300}"
KALMAN_SIZE_TIMEOUT="${KALMAN_SIZE_TIMEOUT:-120}"
# cheapest first; the long sequential scans (T = 1e5) last
KALMAN_SIZES=(d4_m2_T1e3 batch256_d4_m2_T1e3 d32_m8_T1e4 d128_m32_T2e3 d4_m2_T1e5)

export XLA_PYTHON_CLIENT_PREALLOCATE=false
export PYTHONUNBUFFERED=1

echo "== nvidia-smi -L"
if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi -L || echo "WARNING: nvidia-smi -L failed" >&2
else
    echo "WARNING: nvidia-smi not found" >&2
fi

echo "== jax devices"
SLUG="$("$PY" - <<'EOF'
import sys

try:
    import jax
except Exception as e:  # noqa: BLE001
    sys.exit(f"run_gpu.sh: cannot import jax ({e}); prepare a venv with jax[cuda12]")
print(f"jax {jax.__version__}, backend {jax.default_backend()}, devices {jax.devices()}",
      file=sys.stderr)
if jax.default_backend() != "gpu":
    sys.exit(
        f"run_gpu.sh: jax.default_backend() is {jax.default_backend()!r}, not 'gpu': "
        "this needs a CUDA-enabled jax (e.g. jax[cuda12]) and a visible NVIDIA GPU"
    )
from benchmarks._harness import device_slug

print(device_slug())
EOF
)" || { echo "run_gpu.sh: FAILED: no usable GPU backend (see above)" >&2; exit 2; }
echo "device slug: $SLUG"

PAR_JSON="$OUTDIR/bench_parallel_${SLUG}.json"
failed=()
timed_out() { if [ "$1" -eq 124 ]; then echo ": timed out"; fi; }
# seconds for the next step: min(cap, what is left of TOTAL_BUDGET)
left() { local l=$((TOTAL_BUDGET - SECONDS)); echo $((l < $1 ? l : $1)); }

echo "== bench_parallel -> $PAR_JSON"
t0=$SECONDS
rc=0
timeout "$(left "$PARALLEL_TIMEOUT")" "$PY" -m benchmarks.bench_parallel \
    --repeats 10 --max-time 2 --min-repeats 1 --out "$OUTDIR" || rc=$?
if [ "$rc" -ne 0 ]; then
    failed+=("bench_parallel (exit $rc$(timed_out "$rc"); partial JSON: $PAR_JSON)")
fi
echo "bench_parallel: $((SECONDS - t0)) s"

KAL_JSONS=()
for size in "${KALMAN_SIZES[@]}"; do
    budget="$(left "$KALMAN_SIZE_TIMEOUT")"
    if [ "$budget" -lt 20 ]; then
        failed+=("bench_kalman $size: not run, TOTAL_BUDGET=$TOTAL_BUDGET s spent")
        continue
    fi
    dir="$OUTDIR/kalman_$size"
    json="$dir/bench_kalman_${SLUG}.json"
    echo "== bench_kalman $size -> $json (at most $budget s)"
    t0=$SECONDS
    rc=0
    # shellcheck disable=SC2086  # KALMAN_DTYPES is a word list
    timeout "$budget" "$PY" -m benchmarks.bench_kalman --no-peers --sizes "$size" \
        --dtypes $KALMAN_DTYPES --repeats 10 --compile-repeats 1 --max-time 2 \
        --out "$dir" || rc=$?
    if [ "$rc" -ne 0 ]; then
        failed+=("bench_kalman $size (exit $rc$(timed_out "$rc"))")
    else
        KAL_JSONS+=("$json")
    fi
    echo "bench_kalman $size: $((SECONDS - t0)) s"
done

echo "== tables"
[ -f "$PAR_JSON" ] && "$PY" -m benchmarks.table "$PAR_JSON" || true
for json in "${KAL_JSONS[@]}"; do
    "$PY" -m benchmarks.table "$json" || true
done

echo "== targets (d = 4, T = 1e5, float32)"
if [ -f "$PAR_JSON" ]; then
    "$PY" - "$PAR_JSON" <<'EOF' || failed+=("target summary")
import json
import sys

data = json.load(open(sys.argv[1]))
if not data.get("complete"):
    print("WARNING: bench_parallel JSON is partial (the run did not finish)")
summary = data["summary"].get("parallel_vs_sequential", [])
rows = [
    s for s in summary if s["d"] == 4 and s["T"] == 100_000 and s["dtype"] == "float32"
]
if not rows:
    sys.exit("no (d=4, T=1e5, float32) rows in the JSON")
for s in rows:
    speedup = s.get("speedup_parallel_vs_sequential")
    comp = s.get("parallel_compile_s")
    sp = "n/a" if speedup is None else f"{speedup:.1f}x"
    cp = "n/a" if comp is None else f"{comp:.2f} s"
    ok_s = speedup is not None and speedup >= 30
    ok_c = comp is not None and comp <= 5
    print(
        f"form={s['form']:5s}  parallel speed-up over sequential: {sp:>8s} "
        f"(target >= 30x: {'met' if ok_s else 'NOT met'})   parallel compile: "
        f"{cp:>8s} (target <= 5 s: {'met' if ok_c else 'NOT met'})"
    )
par_compiles = [s["parallel_compile_s"] for s in summary if s.get("parallel_compile_s")]
if par_compiles:
    print(f"parallel compile over all sizes: max {max(par_compiles):.2f} s")
EOF
fi

if [ ${#failed[@]} -gt 0 ]; then
    echo "run_gpu.sh: FAILED steps:" >&2
    printf '  %s\n' "${failed[@]}" >&2
    exit 1
fi
echo "run_gpu.sh: done; JSON in $OUTDIR"
