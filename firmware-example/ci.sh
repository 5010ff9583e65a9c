#!/usr/bin/env bash
# CI for the offload firmware (its own workspace): format and lints, the freestanding x86_64
# Linux build and its symbol check, the Cortex-M4 build, its run under QEMU against the host
# library's digest, and the footprint of both. Needs only Rust, gcc and python3; the Arm
# target and qemu-system-arm are installed here if possible, else those steps print SKIPPED.
set -euo pipefail
cd "$(dirname "$0")"
export CARGO_TERM_COLOR=never
step() { printf '\n=== firmware: %s\n' "$*"; }
ARM_TARGET=thumbv7em-none-eabihf
ARM_IMAGE=target/$ARM_TARGET/arm/pagewire-fw-arm
HOST_IMAGE=target/release/pagewire-fw

step "format and lints"
cargo fmt -p pagewire-fw-core -p pagewire-fw-linux -p pagewire-fw-arm -- --check
cargo clippy --all-targets -- -D warnings

step "host build: freestanding x86_64 Linux process"
cargo build --release
./check-symbols.sh "$HOST_IMAGE" --static

step "Arm build: $ARM_TARGET (QEMU mps2-an386)"
arm=no
if timeout 300 rustup target add "$ARM_TARGET" >/dev/null 2>&1; then
  cargo build --profile arm -p pagewire-fw-arm --target "$ARM_TARGET"
  cargo clippy -p pagewire-fw-arm -p pagewire-fw-core --target "$ARM_TARGET" -- -D warnings
  ./check-symbols.sh "$ARM_IMAGE"
  arm=yes
else
  echo "SKIPPED: Arm build: 'rustup target add $ARM_TARGET' failed on this machine"
fi

step "QEMU"
if [ "$arm" = yes ] && ! command -v qemu-system-arm >/dev/null 2>&1; then
  (timeout 600 apt-get update -qq && timeout 900 apt-get install -y -qq qemu-system-arm >/dev/null) \
    || echo "NOTE: could not install qemu-system-arm (Debian package)"
fi
arm_stack="not measured"
if [ "$arm" = yes ] && command -v qemu-system-arm >/dev/null 2>&1; then
  qemu_out=$(timeout 120 qemu-system-arm -M mps2-an386 -nographic -monitor none -serial none \
    -semihosting-config enable=on,target=native -kernel "$ARM_IMAGE")
  echo "$qemu_out"
  arm_stack=$(echo "$qemu_out" | sed -n 's/.*stack_max_bytes=\([0-9]*\).*/\1/p')
  export PAGEWIRE_FW_ARM_IMAGE=$PWD/$ARM_IMAGE
elif [ "$arm" = yes ]; then
  echo "SKIPPED: QEMU run: qemu-system-arm is not installed and could not be installed"
else
  echo "SKIPPED: QEMU run: no Arm image (see above)"
fi

step "tests (the QEMU digest test compares the Arm image with the host library)"
cargo test -- --nocapture

step "host build: measured stack (the runner drives the firmware with --stack-report)"
host_stack="not measured"
if out=$(cd .. && cargo test -p pagewire-runner --test offload the_firmware_measures_its_stack -- --nocapture 2>&1); then
  host_stack=$(echo "$out" | sed -n 's/.*stack_max_bytes=\([0-9]*\).*/\1/p' | head -1)
  host_stack=${host_stack:-not measured}
else
  echo "$out" | tail -20
  echo "FAIL: the runner's stack measurement test failed"
  exit 1
fi

step "largest stack frames (nightly -Z emit-stack-sizes, host build)"
if cargo +nightly --version >/dev/null 2>&1 && command -v llvm-readobj >/dev/null 2>&1; then
  if RUSTFLAGS="-Z emit-stack-sizes" CARGO_TARGET_DIR=target/stack-sizes \
      cargo +nightly build --release -p pagewire-fw-linux --target x86_64-unknown-linux-gnu -q; then
    llvm-readobj --stack-sizes target/stack-sizes/x86_64-unknown-linux-gnu/release/pagewire-fw \
      | python3 stack_frames.py
  else
    echo "SKIPPED: stack frames: the nightly build failed"
  fi
else
  echo "SKIPPED: stack frames: needs a nightly toolchain and llvm-readobj"
fi

step "footprint"
./footprint.sh "host (x86_64 Linux)" "$HOST_IMAGE" "$host_stack"
if [ "$arm" = yes ]; then
  ./footprint.sh "arm (thumbv7em, opt-level s)" "$ARM_IMAGE" "$arm_stack"
  # the code budget of a small NIC core (docs/OFFLOAD.md, Footprint)
  arm_code=$(size -A "$ARM_IMAGE" | awk '$1 == ".text" || $1 == ".vector_table" { n += $2 } END { print n + 0 }')
  if [ "$arm_code" -gt 32768 ]; then
    echo "FAIL: the Arm image has $arm_code B of code, over its 32 KiB budget (docs/OFFLOAD.md)"
    exit 1
  fi
fi
