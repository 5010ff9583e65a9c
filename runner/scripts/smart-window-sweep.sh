#!/bin/bash
cd "$(dirname "$0")/../.."
# Smart Stop window sweep: smart-stop rows (codec none and all) for windows 1..12 on the
# built-in workloads and on the expanded redis trace in $TRACE (default /tmp/traces/redis-fill-128m).
TRACE=${TRACE:-/tmp/traces/redis-fill-128m}
cargo build --quiet --release -p pagewire-runner
for w in 1 2 3 5 8 12; do
  ./target/release/pagewire simulate --no-group --smart-window $w --out /tmp/ws --json /tmp/ws-$w.json >/dev/null 2>&1
  ./target/release/pagewire simulate "$TRACE" --no-group --smart-window $w --out /tmp/ws --json /tmp/wsr-$w.json >/dev/null 2>&1
  python3 - $w <<'PY'
import json,sys
w=sys.argv[1]
for f in [f"/tmp/ws-{w}.json", f"/tmp/wsr-{w}.json"]:
    r=json.load(open(f))
    for row in r["rows"]:
        if row["policy"]=="smart-stop" and row["codec"] in ("all","none"):
            print(f"window {w:>2} {row['workload']:<16} {row['codec']:<5} total {row['total_s']:6.2f} s downtime {row['downtime_s']*1e3:6.0f} ms bytes {row['bytes']/2**20:7.1f} MiB iters {row['iterations']}")
PY
done
