#!/usr/bin/env bash
# Prints the footprint of a firmware image: code, read-only data, and every static buffer.
# Usage: footprint.sh NAME IMAGE [STACK_BYTES]
set -euo pipefail
name=$1 img=$2 stack=${3:-not measured}
# size of a section, 0 if there is none
sec() { size -A "$img" | awk -v s="$1" '$1 == s { n = $2 } END { print n + 0 }'; }
text=$(( $(sec .text) + $(sec .vector_table) ))
rodata=$(( $(sec .rodata) + $(sec .data.rel.ro) ))
data=$(sec .data)
bss=$(sec .bss)
sym() {
  local hex
  hex=$(nm -S -C "$img" | awk -v s="$1" '$4 ~ s"$" { print $2; exit }')
  [ -n "$hex" ] && echo $((16#$hex)) || echo 0
}
storage=$(sym '::STORAGE')
region=$(sym '::REGION')
scratch=$(sym '::SCRATCH')
page=$(sym '::PAGE')
out=$(sym '::OUT')
rest=$(( data + bss - storage - region - scratch - page - out ))
own=$(( data + bss - storage - region - scratch ))
printf '%s: code (.text incl. vectors) %d B, read-only data %d B\n' "$name" "$text" "$rodata"
printf '%s: static RAM %d B = encoder storage (cache, indexes, frame body, scratch) %d B' "$name" $((data + bss)) "$storage"
[ "$region" -gt 0 ] && printf ' + shared region %d B' "$region"
[ "$scratch" -gt 0 ] && printf ' + self-test page %d B' "$scratch"
printf ' + firmware RAM %d B (page copy %d B, output buffer %d B, other %d B)\n' "$own" "$page" "$out" "$rest"
printf '%s: maximum stack depth %s B\n' "$name" "$stack"
