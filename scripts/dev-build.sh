#!/usr/bin/env bash
# Fast rebuild while developing: compile and swap the extension in atomically,
# so processes that already loaded the old one keep running.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release
so=ferroloop/_ferroloop$(python3 -c "import sysconfig;print(sysconfig.get_config_var('EXT_SUFFIX'))")
cp target/release/lib_ferroloop.so "$so.tmp" && mv -f "$so.tmp" "$so"
