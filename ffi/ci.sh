#!/usr/bin/env bash
# CI for the C API (called by .ci/run): header freshness, the C tests against the static
# and shared library plain and under ASan/UBSan, the ABI layout check, and the example
# built the way the README shows (install into a prefix, then pkg-config). Installs what it
# needs; works on a machine with only Rust and gcc (pkg-config is installed if missing,
# and the example falls back to explicit flags if that fails).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}

say() { printf '\n--- ffi: %s\n' "$*"; }

say "tools"
if ! command -v pkg-config >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1 &&
    (apt-get update -qq && apt-get install -y -qq pkg-config) >/dev/null 2>&1; then
    echo "installed pkg-config"
  else
    echo "NOTE: could not install pkg-config; the example is built with explicit flags"
  fi
fi
"${CC:-gcc}" --version | head -1
command -v pkg-config >/dev/null 2>&1 && echo "pkg-config $(pkg-config --version)"

say "header is current (cbindgen), panic boundary on every entry point, Rust-side tests (zstd feature on)"
cargo test -p pagewire-ffi --features zstd --lib --test header --test boundary

say "C tests: static, shared, ASan/UBSan; ABI layout from C; C++; install.sh; example"
# --nocapture so that the C tests' own lines and any SKIPPED: line show in the log
log=$(mktemp)
set +e
cargo test -p pagewire-ffi --test c_api -- --nocapture --test-threads=1 >"$log" 2>&1
status=$?
set -e
grep -E '^(c test |[0-9]+ passed|SKIPPED|sanitizer options|pkg-config|test result)' "$log" || true
if [ "$status" -ne 0 ]; then
  cat "$log"
  echo "ffi: C tests FAILED"
  exit 1
fi
rm -f "$log"

say "example, as the README builds it"
prefix=$(mktemp -d)
trap 'rm -rf "$prefix"' EXIT
ffi/install.sh "$prefix"
if command -v pkg-config >/dev/null 2>&1; then
  export PKG_CONFIG_PATH=$prefix/lib/pkgconfig
  flags=$(pkg-config --cflags --libs pagewire)
  echo "pkg-config --cflags --libs pagewire: $flags"
else
  flags="-I$prefix/include -L$prefix/lib -lpagewire"
  echo "SKIPPED: pkg-config path (not installed); explicit flags: $flags"
fi
# shellcheck disable=SC2086 # $flags is a list of compiler flags
"${CC:-gcc}" -std=c11 -Wall -Wextra -Werror -o "$prefix/migrate" ffi/examples/migrate.c $flags \
  -Wl,-rpath,"$prefix/lib"
"$prefix/migrate" 16 smart-stop | tail -4

echo "ffi: all C API checks passed"
