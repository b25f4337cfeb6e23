#!/usr/bin/env bash
# Build ferroloop (release) and print the benchmark table: every row on stock
# asyncio, ferroloop, uvloop and rloop, interleaved round by round, with
# ratios; writes bench-results.png. Installs what the rows need: uvloop and
# rloop to compare against, matplotlib for the chart, uvicorn + httptools and
# Debian's wrk for the HTTP row.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
bash scripts/build.sh matplotlib uvloop rloop uvicorn httptools
if ! command -v wrk >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk) >/dev/null 2>&1 \
      || echo "note: could not install wrk; the uvicorn row will be skipped"
  else
    echo "note: wrk is not installed (apt-get install wrk); the uvicorn row will be skipped"
  fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
"$PY" -m ferroloop.bench "$@"
