#!/usr/bin/env bash
# Build ferroloop (release) and print the benchmark table: every row on stock
# asyncio, ferroloop, uvloop and rloop, interleaved round by round, with
# ratios; writes bench-results.png.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
bash scripts/build.sh matplotlib uvloop rloop
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
"$PY" -m ferroloop.bench "$@"
