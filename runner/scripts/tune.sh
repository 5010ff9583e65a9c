#!/usr/bin/env bash
# Sweep of codec settings with `pagewire replay`: total wire/raw ratio and encode/decode
# speed, on the built-in synthetic workload and on every real trace in the shared traces
# folder (expanded on first use with expand.py, which needs the zstd CLI or the python
# module zstandard).
#
#   runner/scripts/tune.sh                      # from anywhere in the checkout
#   REPEAT=3 runner/scripts/tune.sh             # best speed of 3 runs per cell
#   TRACES=/path/to/traces TRACES_OUT=/scratch runner/scripts/tune.sh
#
# Environment: TRACES (default <repo>/../shared/traces), TRACES_OUT (default /tmp/traces:
# expanded series, 2 GiB per trace), REPEAT (default 1), SOURCES (space-separated subset of
# "synthetic" and trace names; default all).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TRACES=${TRACES:-$ROOT/../shared/traces}
TRACES_OUT=${TRACES_OUT:-/tmp/traces}
REPEAT=${REPEAT:-1}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}

cargo build --quiet --release -p pagewire-runner --manifest-path "$ROOT/Cargo.toml"
BIN=$TARGET/release/pagewire

# sources: "name<TAB>dir" ("-" for the synthetic workload)
sources=("synthetic	-")
if [ -d "$TRACES" ]; then
    for t in "$TRACES"/*/; do
        [ -f "$t/manifest.json" ] || continue
        name=$(basename "$t")
        out="$TRACES_OUT/$name"
        if [ ! -f "$out/manifest.json" ]; then
            echo "expanding $name into $out ..." >&2
            python3 "$TRACES/expand.py" "$t" "$out" >/dev/null
        fi
        sources+=("$name	$out")
    done
else
    echo "no traces folder at $TRACES: synthetic workload only" >&2
fi
if [ -n "${SOURCES:-}" ]; then
    keep=()
    for s in "${sources[@]}"; do
        for want in $SOURCES; do [ "${s%%	*}" = "$want" ] && keep+=("$s"); done
    done
    sources=("${keep[@]}")
fi

configs=(
    "default|"
    "--no-lz4|--no-lz4"
    "--delta-threshold 512|--delta-threshold 512"
    "--delta-threshold 1024|--delta-threshold 1024"
    "--delta-threshold 2048|--delta-threshold 2048"
    "--delta-threshold 3072|--delta-threshold 3072"
    "--delta-threshold 4096|--delta-threshold 4096"
    "--blocks 1|--blocks 1"
    "--blocks 2|--blocks 2"
    "--blocks 4|--blocks 4"
    "--blocks 8|--blocks 8"
    "--frame-kib 32|--frame-kib 32"
    "--frame-kib 64|--frame-kib 64"
    "--frame-kib 128|--frame-kib 128"
    "--frame-kib 256|--frame-kib 256"
    "--cache-mib 16|--cache-mib 16"
    "--cache-mib 64|--cache-mib 64"
    "--cache-mib 128|--cache-mib 128"
    "--cache-mib 256|--cache-mib 256"
)

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
results=$tmp/results.tsv
: >"$results"
for s in "${sources[@]}"; do
    name=${s%%	*}
    dir=${s#*	}
    for c in "${configs[@]}"; do
        label=${c%%|*}
        # shellcheck disable=SC2206
        args=(${c#*|})
        [ "$dir" = "-" ] && where=() || where=("$dir")
        for r in $(seq "$REPEAT"); do
            "$BIN" replay "${where[@]}" "${args[@]}" --json "$tmp/r.json" >/dev/null
            python3 - "$tmp/r.json" "$name" "$label" >>"$results" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["total"]
print("\t".join([sys.argv[2], sys.argv[3], f"{r['ratio_percent']:.2f}",
                 f"{r['encode_mb_s']:.0f}", f"{r['decode_mb_s']:.0f}"]))
PY
        done
        echo "done: $name $label" >&2
    done
done

python3 - "$results" <<'PY'
import sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
sources, configs, best = [], [], {}
for src, cfg, ratio, enc, dec in rows:
    if src not in sources: sources.append(src)
    if cfg not in configs: configs.append(cfg)
    k = (src, cfg)
    r, e, d = best.get(k, (float(ratio), 0.0, 0.0))
    best[k] = (float(ratio), max(e, float(enc)), max(d, float(dec)))
head = ["config"] + [f"{s}: wire% / enc / dec MB/s" for s in sources]
table = [head]
for c in configs:
    row = [c]
    for s in sources:
        v = best.get((s, c))
        row.append("-" if v is None else f"{v[0]:6.2f}% {v[1]:6.0f} {v[2]:6.0f}")
    table.append(row)
w = [max(len(r[i]) for r in table) for i in range(len(head))]
fmt = lambda r: "| " + " | ".join(x.ljust(w[i]) for i, x in enumerate(r)) + " |"
print(fmt(table[0]))
print("|" + "|".join("-" * (x + 2) for x in w) + "|")
for r in table[1:]:
    print(fmt(r))
PY
