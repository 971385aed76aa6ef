#!/usr/bin/env bash
# Builds a GPT-2 token corpus (.h5, the format of data/token_dataset.h) larger than the shipped
# Moby Dick: the text files and directories given as arguments (for example the State of the
# Union addresses in the project's shared corpora) plus public-domain text from Debian packages:
#   jargon-text   the Jargon File, /usr/share/doc/jargon-text/jargon.txt.gz (installed with
#                 apt-get if missing)
# Every file is one document; the work is done by `hla data prepare`.
#
# usage: scripts/build_corpus.sh [--out FILE.h5] [--hla PATH] [--val-fraction F] [--no-debian]
#                                FILES_OR_DIRS...
#   e.g. scripts/build_corpus.sh --out corpus.h5 /work/shared/data/corpus/sotu data/assets/moby_dick.txt
#
# --hla defaults to $HLA, then build/hla next to this script's repository, then `hla` on PATH.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
out=corpus.h5
val_fraction=0.01
hla=${HLA:-}
debian=1
inputs=()
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out=$2; shift 2 ;;
    --hla) hla=$2; shift 2 ;;
    --val-fraction) val_fraction=$2; shift 2 ;;
    --no-debian) debian=0; shift ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    -*) echo "build_corpus.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) inputs+=("$1"); shift ;;
  esac
done

if [ -z "$hla" ]; then
  if [ -x "$repo/build/hla" ]; then hla=$repo/build/hla
  elif command -v hla >/dev/null 2>&1; then hla=$(command -v hla)
  else
    echo "build_corpus.sh: no hla binary; build it (cmake --build build --target hla) or pass --hla PATH" >&2
    exit 1
  fi
fi

staging=$(mktemp -d "${TMPDIR:-/tmp}/hla_corpus.XXXXXX")
trap 'rm -rf "$staging"' EXIT

# Installs a Debian package unless `path` exists already.
ensure_package() {
  local package=$1 path=$2
  [ -e "$path" ] && return 0
  echo "build_corpus.sh: installing Debian package $package for $path" >&2
  local sudo=""
  [ "$(id -u)" -ne 0 ] && sudo="sudo -n"
  if ! { $sudo apt-get install -y --no-install-recommends "$package" >/dev/null 2>&1 ||
         { $sudo apt-get update >/dev/null 2>&1 &&
           $sudo apt-get install -y --no-install-recommends "$package" >/dev/null 2>&1; }; }; then
    echo "build_corpus.sh: could not install $package; run: sudo apt-get install $package" \
         "(or pass --no-debian)" >&2
    exit 1
  fi
}

if [ "$debian" = 1 ]; then
  jargon=/usr/share/doc/jargon-text/jargon.txt.gz
  ensure_package jargon-text "$jargon"
  gzip -dc "$jargon" > "$staging/jargon.txt"
  inputs+=("$staging")
fi

if [ ${#inputs[@]} -eq 0 ]; then
  echo "build_corpus.sh: nothing to tokenize; pass text files or directories (see --help)" >&2
  exit 2
fi

"$hla" data prepare --tokenizer gpt2 --in "${inputs[@]}" --out "$out" --val-fraction "$val_fraction"
"$hla" data info "$out"
