#!/usr/bin/env bash
# Configures (Release, Ninja) and builds everything into ./build. Extra arguments go to cmake,
# e.g. scripts/build.sh -DHLA_CUDA=OFF.
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
cmake --build build -j"$(nproc)"
