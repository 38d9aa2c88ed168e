#!/usr/bin/env bash
# GPU benchmarks 5, 2 and 1 at ViT-B scale (experiments/configs/bench_vitb.py), in under 5 minutes.
#
# Installs nothing. The GPU image has jax, flax, optax, orbax and chex but not ml_collections, so
# the device call carries the pure-Python copy from this checkout's .venv. From the repo root:
#
#   device run: command="bash experiments/bench/gpu.sh", timeout_s=420,
#               carry=[".venv/lib/python3.11/site-packages/ml_collections"]
#
# Locally (any machine with a GPU and the packages): OUT=/tmp/gpu_out bash experiments/bench/gpu.sh
# Dry run of the script's logic on a CPU: PYTHON=.venv/bin/python GPU_CONFIG=bench_tiny GPU_OPTIONS=absorbed_fusion_kv=True \
#   GPU_MATMUL_SIZE=256 GPU_ROUNDS=3 OUT=/tmp/gpu_dry bash experiments/bench/gpu.sh
#
# Order: compile time first (cold, benchmark 5), then efficiency (benchmark 2) and the IMRO
# overhead (benchmark 1), which reuse the persistent compilation cache; last, if time is left,
# the model options `attention_impl=cudnn` and `absorbed_fusion_kv=True` against the default
# (`options.py`; `GPU_OPTIONS=` skips them, `GPU_OPTIONS=absorbed_fusion_kv=True` on a CPU, where
# cuDNN does not exist). Each step gets the time
# left before the deadline (GPU_BUDGET_S, default 280 s); a step that would not fit is skipped
# and says so. Results: $OUT/gpu_results.md (the tables, also in the log), $OUT/gpu_log.txt,
# $OUT/env.txt. Copy the tables into experiments/bench/RESULTS.md with the date.
set -uo pipefail

OUT=${OUT:-/tmp/imro_gpu_out}
mkdir -p "$OUT"
RESULTS="$OUT/gpu_results.md"
LOG="$OUT/gpu_log.txt"
PY=${PYTHON:-python3}
BUDGET=${GPU_BUDGET_S:-280}
DEADLINE=$((SECONDS + BUDGET))
CONFIG=${GPU_CONFIG:-bench_vitb}
MATMUL=${GPU_MATMUL_SIZE:-8192}  # n of the n x n bf16 ceiling product
ROUNDS=${GPU_ROUNDS:-30}
OVERRIDES=${GPU_OVERRIDES:-}  # e.g. "--override data.batch_size=64 --override model.depth=6"

export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-/tmp/imro_jax_cache}
export JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES=0
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0

if ! "$PY" -c "import ml_collections" 2>/dev/null; then
    carried=$(ls -d .venv/lib/python3*/site-packages/ml_collections 2>/dev/null | head -1)
    if [ -z "$carried" ]; then
        echo "ml_collections is missing: carry .venv/lib/python3.11/site-packages/ml_collections" | tee "$LOG"
        exit 2
    fi
    mkdir -p /tmp/imro_site
    ln -sfn "$PWD/$carried" /tmp/imro_site/ml_collections
    export PYTHONPATH="$PYTHONPATH:/tmp/imro_site"
fi

{
    date -u
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv 2>&1
    "$PY" -c "import jax, jaxlib, flax, optax; print('jax', jax.__version__, 'jaxlib', jaxlib.__version__, 'flax', flax.__version__, 'optax', optax.__version__); print(jax.devices()); print('backend', jax.default_backend())"
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt" | tee "$LOG"
echo "# GPU benchmarks $(date -u +%Y-%m-%dT%H:%MZ), config $CONFIG $OVERRIDES" > "$RESULTS"

# step NAME MIN_SECONDS CMD...: runs CMD with the time left, if at least MIN_SECONDS remain.
step() {
    local name=$1 need=$2
    shift 2
    local left=$((DEADLINE - SECONDS))
    if [ "$left" -lt "$need" ]; then
        echo "SKIPPED $name: ${left}s left < ${need}s needed" | tee -a "$LOG" "$RESULTS"
        return
    fi
    echo "=== $name (limit ${left}s) ===" | tee -a "$LOG"
    timeout --signal=INT "$left" "$@" 2>&1 | grep -v -E "^\s*warnings.warn|UserWarning" | tee -a "$LOG"
    local rc=${PIPESTATUS[0]}
    if [ "$rc" -ne 0 ]; then
        echo "FAILED $name: exit $rc" | tee -a "$LOG" "$RESULTS"
        STATUS=1
    fi
}
STATUS=0

# shellcheck disable=SC2086
step "benchmark 5: compile time" 60 \
    "$PY" experiments/bench/compile_time.py --configs "$CONFIG" --steps 5 --results "$RESULTS" $OVERRIDES
# shellcheck disable=SC2086
step "benchmark 2: efficiency (bf16)" 45 \
    "$PY" experiments/bench/efficiency.py --config "$CONFIG" --matmul_size "$MATMUL" --rounds "$ROUNDS" \
    --results "$RESULTS" $OVERRIDES
# shellcheck disable=SC2086
step "benchmark 1: overhead (train step)" 90 \
    "$PY" experiments/bench/overhead.py --config "$CONFIG" --variants imro,uniform,plain \
    --modes train --rounds "$ROUNDS" --results "$RESULTS" $OVERRIDES
# shellcheck disable=SC2086
step "benchmark 1: overhead (forward, inference)" 90 \
    "$PY" experiments/bench/overhead.py --config "$CONFIG" --variants imro,uniform \
    --modes forward,inference --rounds "$ROUNDS" --results "$RESULTS" $OVERRIDES

# Optional, last (not one of the three benchmarks the issue asks for): the fused cuDNN attention
# option against XLA's attention, same process, same state; skipped if the budget is spent.
OPTIONS=${GPU_OPTIONS-attention_impl=cudnn;absorbed_fusion_kv=True}
if [ -n "$OPTIONS" ]; then
    # shellcheck disable=SC2086
    step "model options: $OPTIONS" 120 \
        "$PY" experiments/bench/options.py --config "$CONFIG" --variants "$OPTIONS" --rounds "$ROUNDS" \
        --results "$RESULTS" $OVERRIDES
fi

echo "done in ${SECONDS}s; results in $RESULTS" | tee -a "$LOG"
exit $STATUS
