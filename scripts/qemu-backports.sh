#!/usr/bin/env bash
# A newer QEMU beside Debian 12's 7.2, without installing it: downloads qemu-system-x86 (10.x)
# and the firmware it wants from bookworm-backports, unpacks them under DIR, and writes
# DIR/bin/qemu-system-x86_64, which runs it with its own modules (bind-mounted over the
# system's in a private mount namespace: QEMU loads only modules of its own build) and
# firmware. Needs root (apt's downloads, the mount). Then:
#
#   PATH=DIR/bin:$PATH pagewire tunnel demo --compare ...
#
# Usage: scripts/qemu-backports.sh [DIR]   (default: target/qemu-backports)
set -euo pipefail
dir=$(realpath -m "${1:-target/qemu-backports}")
mkdir -p "$dir"/apt/lists/partial "$dir"/apt/cache/archives/partial "$dir"/debs "$dir"/root "$dir"/bin
cat > "$dir"/apt/backports.sources <<EOF
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
apt=(-o Dir::Etc::sourcelist=/dev/null -o Dir::Etc::sourceparts="$dir"/apt
     -o Dir::State::Lists="$dir"/apt/lists -o Dir::Cache="$dir"/apt/cache
     -o APT::Sandbox::User=root)
apt-get "${apt[@]}" update -qq
(cd "$dir"/debs && apt-get "${apt[@]}" download -qq \
    qemu-system-x86 qemu-system-common qemu-system-data seabios)
for deb in "$dir"/debs/*.deb; do dpkg-deb -x "$deb" "$dir"/root; done
modules=/usr/lib/x86_64-linux-gnu/qemu
mkdir -p "$modules"
cat > "$dir"/bin/qemu-system-x86_64 <<EOF
#!/bin/sh
exec unshare -m sh -c 'mount --bind $dir/root$modules $modules && exec $dir/root/usr/bin/qemu-system-x86_64 -L $dir/root/usr/share/qemu -L $dir/root/usr/share/seabios "\$@"' qemu "\$@"
EOF
chmod +x "$dir"/bin/qemu-system-x86_64
"$dir"/bin/qemu-system-x86_64 --version | head -1
echo "run with: PATH=$dir/bin:\$PATH"
