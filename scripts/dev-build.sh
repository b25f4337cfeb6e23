#!/usr/bin/env bash
# Fast rebuild while developing: compile and swap the extension in atomically,
# so processes that already loaded the old one keep running.
# PROFILE=release for the fully optimised build (benchmarks); default fastdev.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${PROFILE:-fastdev}
# Only the cdylib, as maturin builds it: with the rlib crate type in the same
# build, fat LTO optimises less and the extension runs measurably slower.
cargo rustc --profile "$profile" --lib --crate-type cdylib
dir=target/$profile
so=ferroloop/_ferroloop$(python3 -c "import sysconfig;print(sysconfig.get_config_var('EXT_SUFFIX'))")
cp "$dir/lib_ferroloop.so" "$so.tmp" && mv -f "$so.tmp" "$so"
