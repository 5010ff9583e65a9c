#!/usr/bin/env bash
# Checks that a firmware image links neither std nor alloc nor a C library: no dynamic
# loader, no undefined symbols (host build), and no symbol of std, alloc, an allocator or
# the unwinder. Usage: check-symbols.sh IMAGE [--static]
set -euo pipefail
img=$1
fail() { echo "FAIL: $img: $*" >&2; exit 1; }
[ -f "$img" ] || fail "no such file"
if [ "${2:-}" = "--static" ]; then
  if readelf -l "$img" | grep -q INTERP; then fail "has a program interpreter (dynamically linked)"; fi
  if readelf -d "$img" 2>/dev/null | grep -q NEEDED; then fail "needs shared libraries"; fi
  undefined=$(nm -u "$img" || true)
  [ -z "$undefined" ] || fail "undefined symbols: $undefined"
fi
# demangled names: a std or alloc path, an allocator shim, libc's allocator or unwinder
bad=$(nm -C "$img" | grep -E '[ <](std|alloc)::|__rust_alloc|__rust_dealloc|__rust_realloc|__rdl_|__rg_|__rust_alloc_error|[ _](malloc|calloc|realloc|free)$|_Unwind_|__libc_start' || true)
[ -z "$bad" ] || fail "links std/alloc/libc symbols:
$bad"
echo "OK: $img links no std, no alloc, no libc ($(nm "$img" | wc -l) symbols checked)"
