#!/usr/bin/env bash
# The echo_protocol row's ceiling on this machine: builds scripts/echo_ceiling.c
# (the row's work in C, no Python, no loop) and runs it ROUNDS times, each
# alternated with a 3-round run of the row on ferroloop, uvloop and rloop, so
# drift is shared. (rloop's first runs in a process are several times slower
# than its later ones; 3 rounds after the harness's warm-up get past that.)
# Prints every run and the medians. Needs gcc; run after
# `bash scripts/bench.sh` (or scripts/build.sh) so ferroloop, uvloop and rloop are built.
#   usage: bash scripts/echo-ceiling.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
ROUNDS=${1:-5}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
gcc -O2 -o "$out/echo_ceiling" scripts/echo_ceiling.c
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
loops=ferroloop
for l in uvloop rloop; do
  "$PY" -c "import $l" 2>/dev/null && loops="$loops,$l"
done
for r in $(seq "$ROUNDS"); do
  c=$("$out/echo_ceiling" 20000 | awk '{print $1}')
  echo "round $r: C ceiling $c round trips/s"
  echo "$c" >>"$out/c"
  "$PY" -m ferroloop.bench --rows echo_protocol --loops "$loops" --rounds 3 --no-png \
    --json "$out/r$r.json" | grep echo_protocol
done
"$PY" - "$out" "$ROUNDS" <<'PY'
import json, statistics, sys
d, rounds = sys.argv[1], int(sys.argv[2])
c = statistics.median(float(x) for x in open(f"{d}/c"))
rates = {}
for r in range(1, rounds + 1):
    for loop, cell in json.load(open(f"{d}/r{r}.json"))["rows"][0]["loops"].items():
        if cell.get("median"):
            rates.setdefault(loop, []).append(cell["median"])
print(f"median C ceiling: {c:,.0f} round trips/s")
for loop, v in rates.items():
    m = statistics.median(v)
    print(f"median {loop:10s} {m:,.0f} round trips/s = {m / c:.1%} of the ceiling")
PY
