#!/usr/bin/env bash
# README command 2: install what is missing, build, and run the whole test suite (ctest).
# CUDA tests ([cuda]) skip with a message when no GPU is present.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
ctest --test-dir build --output-on-failure -j"$(nproc)"
