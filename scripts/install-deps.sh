#!/usr/bin/env bash
# Installs what hla needs from Debian 12 packages, if anything is missing (no-op otherwise).
set -euo pipefail
pkgs=(build-essential cmake ninja-build ccache pkg-config libeigen3-dev libhdf5-dev catch2
      libbenchmark-dev libpcre2-dev nlohmann-json3-dev libtomlplusplus-dev libcli11-dev
      python3-h5py python3-matplotlib python3-numpy)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "hla: installing ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
fi
