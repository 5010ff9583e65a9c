#!/usr/bin/env bash
# Live migration between two Linux network namespaces joined by a veth pair, with real
# kernel shaping (tc netem: rate and delay on the sender's egress) instead of pagewire's
# built-in shaper. Needs root (or CAP_NET_ADMIN), iproute2 (`apt-get install iproute2`) and
# /dev/kvm. The namespaces use link-local addresses (169.254.77.0/24), reachable only
# between them, and are removed on exit.
#   usage: runner/scripts/netns-migrate.sh [extra `pagewire send` arguments...]
#   env:   RATE (100mbit) DELAY (20ms) MEM_MIB (128) WORKLOAD (hot-set) PAGEWIRE (binary)
set -euo pipefail
rate=${RATE:-100mbit}
delay=${DELAY:-20ms}
mem=${MEM_MIB:-128}
workload=${WORKLOAD:-hot-set}
bin=$(realpath "${PAGEWIRE:-target/release/pagewire}")
tag=pw$$
src=$tag-src
dst=$tag-dst
keys=$(mktemp -d)
cleanup() {
  ip netns del "$src" 2>/dev/null || true
  ip netns del "$dst" 2>/dev/null || true
  rm -rf "$keys"
}
trap cleanup EXIT

ip netns add "$src"
ip netns add "$dst"
ip link add "$tag-s" type veth peer name "$tag-d"
ip link set "$tag-s" netns "$src"
ip link set "$tag-d" netns "$dst"
ip -n "$src" addr add 169.254.77.1/24 dev "$tag-s"
ip -n "$dst" addr add 169.254.77.2/24 dev "$tag-d"
ip -n "$src" link set "$tag-s" up
ip -n "$dst" link set "$tag-d" up
ip -n "$src" link set lo up
ip -n "$dst" link set lo up
# The WAN: everything the source sends is delayed and rate-limited by the kernel (netem).
# Kernels built without netem still have tbf: then the kernel limits the rate and
# pagewire's own shaper adds the delay.
extra=()
if ! ip netns exec "$src" tc qdisc add dev "$tag-s" root netem delay "$delay" rate "$rate" \
    limit 100000 2>/dev/null; then
  ip netns exec "$src" tc qdisc add dev "$tag-s" root tbf rate "$rate" burst 64kb latency 200ms
  extra=(--delay "$delay")
  echo "this kernel has no netem qdisc: rate by tbf, delay $delay by pagewire's shaper" >&2
fi
echo "netns $src -> $dst: $(ip netns exec "$src" tc qdisc show dev "$tag-s")" >&2

"$bin" keygen "$keys" >/dev/null
ip netns exec "$dst" "$bin" receive --listen 169.254.77.2:7700 --keys "$keys" --run 1 >&2 &
recv=$!
# wait until the receiver listens
for _ in $(seq 100); do
  ip netns exec "$dst" ss -ltn 2>/dev/null | grep -q 169.254.77.2:7700 && break
  sleep 0.05
done
ip netns exec "$src" "$bin" send --to 169.254.77.2:7700 --keys "$keys" \
  --mem-mib "$mem" --workload "$workload" "${extra[@]}" "$@"
wait "$recv"
