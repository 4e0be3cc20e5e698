#!/usr/bin/env bash
# A/B of one scenario, restore of a 2,000-file tree (~20 MB) into an empty
# directory, between two builds' binaries, alternating runs so drift hits
# both alike.
# Usage: bench/ab_restore.sh BEFORE_BIN_DIR AFTER_BIN_DIR [RUNS]
#   AB_BIG_MIB=256: one random file of that size instead of the tree.
#   AB_TREE=/usr/share/doc: a copy of that tree instead.
#   e.g. git worktree add /tmp/before REV && (cd /tmp/before && cargo build --release)
#        bench/ab_restore.sh /tmp/before/target/release target/release 6
set -euo pipefail
BEFORE=$1; AFTER=$2; RUNS=${3:-6}
W=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$W"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
bin() { if [ "$1" = before ]; then echo "$BEFORE"; else echo "$AFTER"; fi; }
if [ -n "${AB_TREE:-}" ]; then
  cp -a "$AB_TREE" "$W/D2"
elif [ -n "${AB_BIG_MIB:-}" ]; then
  mkdir -p "$W/D2"; "$AFTER/gen" "$W/D2/disk.img" $((AB_BIG_MIB << 20)) 9 >/dev/null
else
  "$AFTER/gen-tree" tree "$W/D2" 2000 20000000 3 >/dev/null
fi
for v in before after; do
  B=$(bin $v)
  "$B/ferry-relay" --data "$W/r-$v" init --listen "127.0.0.1:$(free_port)" --pair-listen "127.0.0.1:$(free_port)" >/dev/null
  "$B/ferry-relay" --data "$W/r-$v" serve 2>/dev/null &
  for _ in $(seq 1 200); do [ -s "$W/r-$v/run/listen.json" ] && break; sleep 0.05; done
  pair=$(grep -o '"pairing":"[^"]*"' "$W/r-$v/run/listen.json" | cut -d'"' -f4)
  code=$("$B/ferry-relay" --data "$W/r-$v" pair --name ab --json | grep -o '"code":"[^"]*"' | cut -d'"' -f4)
  "$B/ferry" --state "$W/e-$v" pair --relay "$pair" --code "$code" >/dev/null
  "$B/ferry" --state "$W/e-$v" backup "$W/D2" >/dev/null
done
for _ in $(seq 1 "$RUNS"); do
  for v in before after; do
    rm -rf "$W/out"; sync
    s=$(date +%s.%N)
    "$(bin $v)/ferry" --state "$W/e-$v" restore --map-from "$W/D2" --map-to "$W/out" >/dev/null
    e=$(date +%s.%N)
    echo "$v $(echo "$e - $s" | bc)"
  done
done
