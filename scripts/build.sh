#!/usr/bin/env bash
# Build ferroloop in place (editable install): the Rust extension lands in
# ferroloop/ so the repo checkout is importable and `python -m ferroloop` works.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi
"$PY" -m pip install -q --disable-pip-version-check 'maturin>=1.5,<2' "$@"
"$PY" -m pip install -q --disable-pip-version-check --no-build-isolation -e .
