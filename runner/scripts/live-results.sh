#!/usr/bin/env bash
# The live-migration results matrix of docs/RUNNER.md: every built-in workload, codec off
# and on, Xen classic and Smart Stop, over two shaped loopback links, each a real
# `pagewire demo` (KVM guest, two ends, mutual TLS). Writes one JSON per run into OUT and
# prints the markdown table.
#   usage: runner/scripts/live-results.sh [OUT] [MEM_MIB]
set -euo pipefail
out=${1:-live-results}
mem=${2:-128}
bin=${PAGEWIRE:-target/release/pagewire}
mkdir -p "$out"
for link in "100mbit 20ms" "1gbit 5ms"; do
  set -- $link
  for w in hot-set database compile idle; do
    for codec in off on; do
      for policy in xen-classic smart-stop; do
        f="$out/$1-$2-$w-$codec-$policy.json"
        [ -s "$f" ] && continue
        echo "$1 $2 $w codec=$codec $policy" >&2
        "$bin" demo --json --mem-mib "$mem" --workload "$w" --codec "$codec" \
          --policy "$policy" --rate "$1" --delay "$2" > "$f.tmp"
        mv "$f.tmp" "$f"
      done
    done
  done
done
python3 - "$out" <<'PY'
import json, os, sys
d = sys.argv[1]
rows = {}
for f in sorted(os.listdir(d)):
    if not f.endswith(".json"):
        continue
    j = json.load(open(os.path.join(d, f)))
    s = j["source"]
    rate = "100 Mb/s, 20 ms" if f.startswith("100mbit") else "1 Gb/s, 5 ms"
    rows[(rate, s["label"], s["codec"], s["policy"])] = s
print("| link | workload | codec | policy | total s | downtime ms | wire MiB | iterations |")
print("|---|---|---|---|---|---|---|---|")
for rate in ["100 Mb/s, 20 ms", "1 Gb/s, 5 ms"]:
    for w in ["hot-set", "database", "compile", "idle"]:
        for codec in ["off", "on"]:
            for pol in ["xen-classic", "smart-stop"]:
                s = rows.get((rate, w, codec, pol))
                if not s:
                    continue
                print(f"| {rate} | {w} | {codec} | {pol} | {s['total_s']:.2f} | "
                      f"{s['downtime_s']*1e3:.0f} | {s['wire_bytes']/2**20:.1f} | {s['iterations']} |")
PY
