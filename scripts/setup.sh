#!/usr/bin/env bash
# README command 1: install what is missing, build, and run the main job on its embedded
# default (a tiny GLA 3:1 hybrid on the MQAR recall task; CPU unless a GPU build is present).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/build.sh
./build/hla train --out runs/quickstart "$@"
