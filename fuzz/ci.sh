#!/usr/bin/env bash
# Fuzzing in CI: every target for a bounded time on its checked-in seeds. Any crash fails
# and prints the reproducer. Needs the nightly toolchain (present on these machines).
#
#   bash fuzz/ci.sh            # FUZZ_SECONDS=30 by default
set -euo pipefail
cd "$(dirname "$0")"
SECONDS_PER_TARGET=${FUZZ_SECONDS:-30}
CARGO_FUZZ_VERSION=0.13.2

if ! rustup toolchain list | grep -q '^nightly'; then
  echo "ERROR: the nightly toolchain is missing; fuzzing needs it (rustup toolchain install nightly)"
  exit 1
fi
if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
  cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi

cargo +nightly fuzz build -O
targets=$(cargo +nightly fuzz list)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=0
for t in $targets; do
  mkdir -p "$work/corpus-$t" "$work/artifacts-$t"
  seeds=seeds/$t
  [ -d "$seeds" ] || seeds=
  echo "--- fuzzing $t for ${SECONDS_PER_TARGET}s"
  if cargo +nightly fuzz run -O "$t" "$work/corpus-$t" $seeds -- \
      -max_total_time="$SECONDS_PER_TARGET" -print_final_stats=1 \
      -artifact_prefix="$work/artifacts-$t/" >"$work/$t.log" 2>&1; then
    grep -E "^Done|stat::number_of_executed_units|stat::average_exec_per_sec" "$work/$t.log" || true
  else
    failed=1
    echo "FAILED: fuzz target $t crashed; last lines of its log:"
    tail -40 "$work/$t.log"
    for a in "$work/artifacts-$t"/*; do
      [ -f "$a" ] || continue
      echo "reproducer (base64) for $t, save to a file and run: cargo +nightly fuzz run $t FILE"
      base64 -w0 "$a"; echo
      cargo +nightly fuzz fmt -O "$t" "$a" 2>/dev/null | tail -60 || true
    done
  fi
done
exit $failed
