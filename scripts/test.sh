#!/usr/bin/env bash
# Build ferroloop and run every test: Rust unit tests, the pytest behaviour
# suite (each test on stock asyncio and on ferroloop), the conformance run of
# CPython's own test_asyncio modules against both loops, and uvloop's test
# suite (its asyncio variants) against both loops. The pytest suite includes
# asyncpg and redis-py against real PostgreSQL and Redis servers, which this
# script installs from Debian's packages when it can.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
bash scripts/build.sh 'pytest>=7' asyncpg redis cryptography
bash scripts/test-servers.sh && export FERROLOOP_SERVERS_REQUIRED=1
export FERROLOOP_REQUIRED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

echo "== cargo fmt / clippy"
if cargo fmt --version >/dev/null 2>&1; then cargo fmt --check; fi
if cargo clippy --version >/dev/null 2>&1; then
  cargo clippy --profile fastdev --no-default-features -- -D warnings
fi

echo "== cargo test"
cargo test --profile fastdev --no-default-features

echo "== pytest"
"$PY" -m pytest tests -q -p no:cacheprovider

echo "== conformance (CPython's test_asyncio on asyncio and on ferroloop)"
"$PY" conformance/run.py

echo "== uvloop's test suite, asyncio variants (on asyncio and on ferroloop)"
"$PY" compat/uvloop_suite.py
