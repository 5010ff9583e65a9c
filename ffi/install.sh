#!/usr/bin/env bash
# Builds libpagewire and installs it into PREFIX:
#   PREFIX/lib/libpagewire.a
#   PREFIX/lib/libpagewire.so.VERSION, with libpagewire.so.ABI (the SONAME) and
#     libpagewire.so (for -lpagewire) as symlinks
#   PREFIX/include/pagewire.h
#   PREFIX/lib/pkgconfig/pagewire.pc
#
# Usage: ffi/install.sh PREFIX
# Environment: DESTDIR (staged installs: files go to $DESTDIR$PREFIX, pagewire.pc still
# says PREFIX), PAGEWIRE_PROFILE (cargo profile, default release; the tests use dev),
# PAGEWIRE_FEATURES (cargo features, e.g. "zstd": zstd over the stream, declared in the
# header under PAGEWIRE_ZSTD, which pagewire.pc's Cflags then define), CARGO (cargo
# binary), CARGO_TARGET_DIR.
set -euo pipefail

if [ $# -ne 1 ] || [ -z "$1" ]; then
  echo "usage: $0 PREFIX" >&2
  exit 2
fi
prefix=$1
case $prefix in
  /*) ;;
  *) prefix=$PWD/$prefix ;;
esac

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
cargo=${CARGO:-cargo}
profile=${PAGEWIRE_PROFILE:-release}
features=${PAGEWIRE_FEATURES:-}
feature_cflags=""
case " ${features//,/ } " in
  *" zstd "*) feature_cflags=" -DPAGEWIRE_ZSTD" ;;
esac
target_dir=${CARGO_TARGET_DIR:-$root/target}
case $profile in
  dev | test) out=$target_dir/debug ;;
  bench) out=$target_dir/release ;;
  *) out=$target_dir/$profile ;;
esac

"$cargo" build --manifest-path "$root/Cargo.toml" -p pagewire-ffi --lib \
  --profile "$profile" --target-dir "$target_dir" ${features:+--features "$features"}

header=$here/include/pagewire.h
version=$(sed -n 's/^#define PAGEWIRE_VERSION "\(.*\)"$/\1/p' "$header")
abi=$(sed -n 's/^#define PAGEWIRE_ABI_VERSION \([0-9][0-9]*\)$/\1/p' "$header")
if [ -z "$version" ] || [ -z "$abi" ]; then
  echo "install.sh: cannot read PAGEWIRE_VERSION / PAGEWIRE_ABI_VERSION from $header" >&2
  exit 1
fi

dest=${DESTDIR:-}$prefix
install -d "$dest/lib/pkgconfig" "$dest/include"
install -m 644 "$out/libpagewire_ffi.a" "$dest/lib/libpagewire.a"
install -m 755 "$out/libpagewire_ffi.so" "$dest/lib/libpagewire.so.$version"
ln -sfn "libpagewire.so.$version" "$dest/lib/libpagewire.so.$abi"
ln -sfn "libpagewire.so.$abi" "$dest/lib/libpagewire.so"
install -m 644 "$header" "$dest/include/pagewire.h"
sed -e "s|@PREFIX@|$prefix|g" -e "s|@VERSION@|$version|g" \
  -e "s|@FEATURE_CFLAGS@|$feature_cflags|g" "$here/pagewire.pc.in" \
  >"$dest/lib/pkgconfig/pagewire.pc"
chmod 644 "$dest/lib/pkgconfig/pagewire.pc"

echo "installed libpagewire $version (SONAME libpagewire.so.$abi${features:+, features: $features}) into $dest"
