#!/usr/bin/env bash
# Run the pytest suite and the conformance run on another CPython (3.12,
# 3.13, ...) without touching the checkout's own build.
#
#   bash scripts/test-python.sh /path/to/python3.13 [pytest args...]
#
# CI tests 3.11 only (what its machines have); this is the by-hand check that
# nothing in the design ties ferroloop to 3.11. The extension is built for
# that interpreter (per-version ABI, not the limited API) into
# target/py<X.Y>/, and the package, tests and conformance harness are copied
# into a scratch directory whose venv sees them through a .pth file (so
# tests that start `python -E` children find ferroloop too).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:?usage: scripts/test-python.sh PYTHON [pytest args...]}
shift
if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
ver=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
suffix=$("$PY" -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')

echo "== build for Python $ver"
PYO3_PYTHON="$PY" CARGO_TARGET_DIR="target/py$ver" \
  cargo rustc --profile fastdev --lib --crate-type cdylib

scratch=$(mktemp -d "${TMPDIR:-/tmp}/ferroloop-py$ver.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
chmod 755 "$scratch"  # the test PostgreSQL server runs as another user
mkdir "$scratch/pkg"
cp -r ferroloop tests conformance "$scratch/pkg/"
find "$scratch/pkg" \( -name '_ferroloop*.so' -o -name __pycache__ \) -prune -exec rm -rf {} +
cp "target/py$ver/fastdev/lib_ferroloop.so" "$scratch/pkg/ferroloop/_ferroloop$suffix"

"$PY" -m venv "$scratch/venv"
vpy="$scratch/venv/bin/python"
"$vpy" -m pip install -q --disable-pip-version-check 'pytest>=7' asyncpg redis cryptography
site=$("$vpy" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
echo "$scratch/pkg" > "$site/ferroloop-scratch.pth"

cd "$scratch/pkg"
export FERROLOOP_REQUIRED=1
# Both run even if the first fails (stock asyncio of a .0 release can fail
# a test of ours where a later patch release fixed it).
rc=0
echo "== pytest on Python $ver"
"$vpy" -m pytest tests -q -p no:cacheprovider "$@" || rc=1
echo "== conformance on Python $ver"
"$vpy" conformance/run.py || rc=1
exit $rc
