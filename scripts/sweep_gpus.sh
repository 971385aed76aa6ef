#!/usr/bin/env bash
# Runs one `hla sweep` grid over every visible GPU: one process per GPU, each on its own shard of
# the cells (hla sweep --shard I/N with CUDA_VISIBLE_DEVICES=I), then a plain `hla sweep` that
# trains nothing, merges the shard files into results.csv and writes results.md and the plots.
#
#   scripts/sweep_gpus.sh experiments/grids/gpu_paper.toml [any hla sweep option ...]
#
# HLA (default build/hla) is the binary; GPUS (default: all that nvidia-smi lists) the count, or
# GPU_LIST (e.g. "1" or "2,3") the devices to use, leaving the others free for other work;
# PER_GPU (default 1) processes share each GPU: small models are bound by kernel launches, not by
# the GPU, so several cells at once use it better. MPS=1 (with PER_GPU > 1) runs them under CUDA
# MPS (nvidia-cuda-mps-control, started here and stopped at exit), so kernels of different
# processes share the GPU at once instead of taking turns. Each shard's log is
# <out>/shard-I.log; rerunning resumes every shard where it stopped.
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: $0 GRID.toml [hla sweep options ...]" >&2; exit 2; }
HLA="${HLA:-build/hla}"
[ -x "$HLA" ] || { echo "error: $HLA not found or not executable (build first: scripts/build.sh)" >&2; exit 1; }
GPUS="${GPUS:-$(nvidia-smi --list-gpus 2>/dev/null | wc -l)}"
[ "$GPUS" -ge 1 ] || { echo "error: no GPU visible (nvidia-smi lists none); run hla sweep directly" >&2; exit 1; }
IFS=, read -r -a gpu_list <<< "${GPU_LIST:-$(seq -s, 0 $((GPUS - 1)))}"
GPUS=${#gpu_list[@]}
PER_GPU="${PER_GPU:-1}"
[ "$PER_GPU" -ge 1 ] || { echo "error: PER_GPU must be a positive integer, not '$PER_GPU'" >&2; exit 2; }
SHARDS=$((GPUS * PER_GPU))
grid="$1"; shift
out=$("$HLA" sweep --grid "$grid" --dry-run "$@" | sed -n 's/.*cells (grid .*, out \(.*\))$/\1/p')
[ -n "$out" ] || { echo "error: could not read the grid's output directory" >&2; exit 1; }
mkdir -p "$out"
if [ "${MPS:-0}" = 1 ]; then
  command -v nvidia-cuda-mps-control >/dev/null || { echo "error: MPS=1 but nvidia-cuda-mps-control is not installed" >&2; exit 1; }
  # a short absolute path: the daemon's sockets live there
  export CUDA_MPS_PIPE_DIRECTORY="${TMPDIR:-/tmp}/hla-mps-$$" CUDA_MPS_LOG_DIRECTORY="$(cd "$out" && pwd)/mps-log"
  mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
  nvidia-cuda-mps-control -d || { echo "error: the MPS daemon did not start (log: $CUDA_MPS_LOG_DIRECTORY)" >&2; exit 1; }
  trap 'echo quit | nvidia-cuda-mps-control' EXIT
fi
echo "sweep over GPU(s) ${gpu_list[*]}, $PER_GPU process(es) each: $grid -> $out"
pids=()
# stopped (Ctrl-C, timeout): stop the shards too; their finished cells are on record
trap 'echo "stopped: stopping the shards" >&2; kill "${pids[@]}" 2>/dev/null; exit 130' INT TERM
for ((i = 0; i < SHARDS; i++)); do
  CUDA_VISIBLE_DEVICES=${gpu_list[$((i % GPUS))]} "$HLA" sweep --grid "$grid" --shard "$i/$SHARDS" --no-plots "$@" \
    > "$out/shard-$i.log" 2>&1 &
  pids+=($!)
done
status=0
for ((i = 0; i < SHARDS; i++)); do
  if wait "${pids[$i]}"; then echo "shard $i/$SHARDS: $(tail -1 "$out/shard-$i.log")"
  else status=1; echo "shard $i/$SHARDS FAILED; last lines of $out/shard-$i.log:"; tail -5 "$out/shard-$i.log"; fi
done
if [ $status -ne 0 ]; then
  echo "not merged: a shard failed (its finished cells are kept; rerun this script to retry the rest)"
  exit 1
fi
"$HLA" sweep --grid "$grid" "$@"
