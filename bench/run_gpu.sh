#!/bin/bash
# Builds hla on a GPU machine and, in one call: runs the [cuda] tests, times the CUDA ops and the
# 340M training steps, optionally times fla's baseline on the same card, and prints one table.
#
#   OUT=/tmp/out bash bench/run_gpu.sh                 (from the repository root)
#   TESTS=0 FLA=1 STAGES=ops bash bench/run_gpu.sh
#   HLA_BENCH_B=2 HLA_BENCH_T=256 HLA_BENCH_LAYERS=2 bash bench/run_gpu.sh   (a quick smoke run)
#   TESTS=0 HLA_BENCH_DTYPE=bf16 HLA_BENCH_PRECISION=bf16 bash bench/run_gpu.sh   (bf16 only)
#
# Sections (environment, 0 or 1):
#   TESTS=1   build test_cuda and run its "[cuda]" cases (summary here, full log $OUT/test.log)
#   SAN=0     the same suite under compute-sanitizer memcheck ($OUT/san.log)
#   BENCH=1   bench_cuda_ops and bench_cuda_model ($OUT/bench_cuda_*.json, console $OUT/bench.log);
#             they read HLA_BENCH_DTYPE (ops: f32, bf16 or both; default both),
#             HLA_BENCH_PRECISION (models' train.precision: fp32, bf16, pure_bf16, a comma
#             list, both = fp32,bf16 or all; default both),
#             HLA_BENCH_B, HLA_BENCH_T, HLA_BENCH_LAYERS, HLA_BENCH_STEPS, HLA_TF32,
#             HLA_PEAK_TFLOPS (see their header comments); BENCH_ARGS go to both programs
#   FLA=0     bench/baselines/fla_bench.py (torch + Triton + fla from $FLA_SRC) with STAGES
#             (default ceil,ops; add models for the training steps) and MODELS (default
#             llama_sdpa,hgrn2): $OUT/anchors.json, console $OUT/fla.log. fla's Triton kernels
#             autotune on first use (1-6 minutes per op or model on an H200), so with FLA=1 the
#             tuning starts first, one process per op and model (FLA_PHASE=tune, log
#             $OUT/fla_tune.log), beside the build and the tests; the timed runs (hla's, then
#             fla's) wait for it. Autotuning results persist in TRITON_CACHE_DIR (default
#             $BUILD_DIR/triton; TRITON_CACHE_AUTOTUNING=1 is set, without which Triton keeps
#             them in memory only) and are packed into $OUT/fla_autotune.tgz; carried back as
#             $HLA_DEPS/fla_autotune.tgz they are unpacked first, and fla then only compiles
#             the chosen configurations (same Triton, same GPU: the results are keyed by both).
# Dependencies the GPU machine lacks (Catch2, Google Benchmark, toml++, PCRE2, pkgconf) come from
# a prefix directory carried with the working tree: HLA_DEPS (default .carry), used through
# CMAKE_PREFIX_PATH, PKG_CONFIG_PATH and LD_LIBRARY_PATH. Build directory: BUILD_DIR (build-gpu).
# Files in $OUT: build.log test.log san.log bench.log bench_cuda_ops.json bench_cuda_model.json
# fla_tune.log fla.log anchors.json fla_autotune.tgz. The table (bench/gpu_table.py) is printed last.
set -o pipefail
export OUT=${OUT:?set OUT to the folder for logs and JSON}
mkdir -p "$OUT"
DEPS=$(cd "${HLA_DEPS:-.carry}" && pwd) || { echo "no dependency prefix ${HLA_DEPS:-.carry}"; exit 1; }
BUILD=${BUILD_DIR:-build-gpu}
TESTS=${TESTS:-1} SAN=${SAN:-0} BENCH=${BENCH:-1} FLA=${FLA:-0}
# the dtypes of the benchmarks, passed to both programs
export HLA_BENCH_DTYPE=${HLA_BENCH_DTYPE:-both} HLA_BENCH_PRECISION=${HLA_BENCH_PRECISION:-both}

export CMAKE_PREFIX_PATH=$DEPS${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}
export PKG_CONFIG_PATH=$DEPS/lib/pkgconfig:$DEPS/lib/x86_64-linux-gnu/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}
export LD_LIBRARY_PATH=$DEPS/lib/x86_64-linux-gnu:$DEPS/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
PKGCONF=()
command -v pkg-config >/dev/null || PKGCONF=(-DPKG_CONFIG_EXECUTABLE="$DEPS/bin/pkgconf")
on_off() { [ "$1" = 1 ] && echo ON || echo OFF; }

GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
FLA_STAGES=${STAGES:-ceil,ops} FLA_MODELS=${MODELS:-llama_sdpa,hgrn2}

# ---- fla's autotuning, first and in the background: one process per op and per model
TUNE_PIDS=()
if [ "$FLA" = 1 ]; then
  FLA_SRC=$(cd "${FLA_SRC:-$DEPS/fla_src}" && pwd) || { echo "no fla source tree (FLA_SRC)"; exit 1; }
  export FLA_SRC PYTHONUNBUFFERED=1
  export TRITON_CACHE_DIR=${TRITON_CACHE_DIR:-$PWD/$BUILD/triton}
  # Triton writes its autotuning timings to disk (*.autotune.json) only when asked
  export TRITON_CACHE_AUTOTUNING=${TRITON_CACHE_AUTOTUNING:-1}
  mkdir -p "$TRITON_CACHE_DIR"
  [ -f "$DEPS/fla_autotune.tgz" ] && tar xzf "$DEPS/fla_autotune.tgz" -C "$TRITON_CACHE_DIR" \
    && echo "fla: autotuning results from $DEPS/fla_autotune.tgz"
  mkdir -p "$OUT/tune"
  tune() {  # NAME, then environment settings for fla_bench.py
    local name=$1; shift
    env FLA_PHASE=tune OUT="$OUT/tune" "$@" python3 bench/baselines/fla_bench.py > "$OUT/tune/$name.log" 2>&1 &
    TUNE_PIDS+=($!)
  }
  if [[ ,$FLA_STAGES, == *,ops,* ]]; then
    for op in chunk_gla chunk_retention chunk_delta_rule chunk_gated_delta_rule fused_recurrent_hgrn \
      causal_conv1d; do
      tune "$op" STAGES=ops OPS="$op"
    done
  fi
  if [[ ,$FLA_STAGES, == *,models,* ]]; then
    for m in ${FLA_MODELS//,/ }; do tune "$m" STAGES=models MODELS="$m"; done
  fi
  echo "fla: tuning in ${#TUNE_PIDS[@]} processes"
fi
wait_for_tuning() {
  [ ${#TUNE_PIDS[@]} -eq 0 ] && return
  local t0; t0=$(date +%s)
  wait "${TUNE_PIDS[@]}"
  cat "$OUT"/tune/*.log > "$OUT/fla_tune.log"; rm -rf "$OUT/tune"
  echo "fla: tuning done ($(( $(date +%s) - t0 )) s more after the tests)"
  TUNE_PIDS=()
}
echo "GPU: $GPU ($(nvidia-smi --query-gpu=driver_version --format=csv,noheader | head -1)), $(nproc) cores, $(date -u +%F)"

# ---- configure, then build what the sections need; a section whose targets fail to build is
# skipped (the compiler errors are printed) and the others still run
build() {
  local t0; t0=$(date +%s)
  if cmake --build "$BUILD" --target "$@" -j"$(nproc)" >> "$OUT/build.log" 2>&1; then
    echo "build ($*): $(( $(date +%s) - t0 )) s"
  else
    grep -A12 -E "error|Error" "$OUT/build.log" | head -80
    echo "build ($*) FAILED: section skipped (log: build.log)"
    return 1
  fi
}
if [ "$TESTS" = 1 ] || [ "$SAN" = 1 ] || [ "$BENCH" = 1 ]; then
  cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90 \
    -DHLA_CUDA=ON -DHLA_BUILD_TESTS="$(on_off $((TESTS | SAN)))" -DHLA_BUILD_BENCH="$(on_off "$BENCH")" \
    "${PKGCONF[@]}" > "$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; }
fi
if [ "$BENCH" = 1 ]; then build bench_cuda_ops bench_cuda_model || BENCH=0; fi
if [ "$TESTS" = 1 ] || [ "$SAN" = 1 ]; then build test_cuda || TESTS=0 SAN=0; fi

# ---- [cuda] tests
failed_tests() {  # the failures with their expansion, then Catch2's summary
  grep -E -A5 ": FAILED:" "$1" | head -60
  grep -E "^test cases|^assertions|All tests passed|No tests ran" "$1"
}
if [ "$TESTS" = 1 ]; then
  T0=$(date +%s)
  "./$BUILD/tests/test_cuda" "[cuda]" > "$OUT/test.log" 2>&1; rc=$?
  failed_tests "$OUT/test.log"
  echo "tests [cuda]: rc=$rc ($(( $(date +%s) - T0 )) s)"
fi
if [ "$SAN" = 1 ]; then
  T0=$(date +%s)
  timeout 400 compute-sanitizer --tool memcheck --error-exitcode 9 "./$BUILD/tests/test_cuda" "[cuda]" \
    > "$OUT/san.log" 2>&1; rc=$?
  grep -E "ERROR SUMMARY|Invalid|^test cases|All tests passed" "$OUT/san.log" | head -20
  echo "compute-sanitizer memcheck [cuda]: rc=$rc ($(( $(date +%s) - T0 )) s)"
fi

# ---- hla benchmarks, on a quiet GPU
wait_for_tuning
if [ "$BENCH" = 1 ]; then
  : > "$OUT/bench.log"
  echo "benchmarks: ops HLA_BENCH_DTYPE=$HLA_BENCH_DTYPE, models HLA_BENCH_PRECISION=$HLA_BENCH_PRECISION"
  for b in bench_cuda_ops bench_cuda_model; do
    T0=$(date +%s)
    # BENCH_ARGS holds several arguments: split on purpose
    # shellcheck disable=SC2086
    "./$BUILD/bench/$b" --benchmark_out="$OUT/$b.json" --benchmark_out_format=json $BENCH_ARGS \
      >> "$OUT/bench.log" 2>&1; rc=$?
    echo "$b: rc=$rc ($(( $(date +%s) - T0 )) s)"
  done
fi

# ---- fla baseline, same card, same call
if [ "$FLA" = 1 ]; then
  T0=$(date +%s)
  STAGES=$FLA_STAGES MODELS=$FLA_MODELS python3 bench/baselines/fla_bench.py > "$OUT/fla.log" 2>&1; rc=$?
  grep -E "^op |^model |^ceilings|Error|error" "$OUT/fla.log" | grep -v Warning | head -30
  echo "fla baseline: rc=$rc ($(( $(date +%s) - T0 )) s)"
  (cd "$TRITON_CACHE_DIR" && find . -name '*.autotune.json' -print0 | tar czf "$OUT/fla_autotune.tgz" --null -T -)
  echo "fla: $(tar tzf "$OUT/fla_autotune.tgz" | wc -l) autotuning results in $OUT/fla_autotune.tgz"
fi

python3 bench/gpu_table.py --gpu "$GPU" "$OUT"
