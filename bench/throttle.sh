#!/usr/bin/env bash
# Bandwidth limits, measured: a global limit shared by 4 concurrent clients,
# one client's own limit, and an unlimited client beside a limited one.
# Usage: bench/throttle.sh        (about a minute; release build)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet -p ferry-relay -p ferry-endpoint -p ferry-bench
BIN="$PWD/target/release"
WORK=$(mktemp -d)
RELAY_PID=
cleanup() { [ -n "$RELAY_PID" ] && kill "$RELAY_PID" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
field() { grep -o "\"$1\":[0-9.]*" | head -n1 | cut -d: -f2; }
relay() { "$BIN/ferry-relay" --data "$WORK/relay" "$@"; }

relay init --listen 127.0.0.1:0 --pair-listen 127.0.0.1:0 >/dev/null
relay serve 2>"$WORK/relay.log" &
RELAY_PID=$!
for _ in $(seq 1 200); do [ -s "$WORK/relay/run/listen.json" ] && break; sleep 0.05; done
PAIR=$(grep -o '"pairing":"[^"]*"' "$WORK/relay/run/listen.json" | cut -d'"' -f4)
for i in 1 2 3 4; do
  CODE=$(relay pair --name "c$i" --json | grep -o '"code":"[^"]*"' | cut -d'"' -f4)
  "$BIN/ferry" --state "$WORK/ep$i" pair --relay "$PAIR" --code "$CODE" >/dev/null
done
# Each run backs up fresh random data (its own seed), so nothing deduplicates.
backup() { # ENDPOINT MIB SEED -> prints "bytes seconds"
  local seed=$3
  "$BIN/gen" "$WORK/data-$1-$seed" $(($2 << 20)) "$seed"
  "$BIN/ferry" --state "$WORK/ep$1" backup --json "$WORK/data-$1-$seed" > "$WORK/out-$1-$seed"
  echo "$(field bytes_sent < "$WORK/out-$1-$seed") $(field duration_s < "$WORK/out-$1-$seed")"
}
rate() { awk -v b="$1" -v s="$2" 'BEGIN { printf "%.2f", b / s / 1048576 }'; }

echo "## Throttling ($(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'))"
echo
echo "| scenario | configured | measured | error |"
echo "| --- | --- | --- | --- |"

# 1. Global 8 MiB/s, 4 clients at once, 20 MiB each: about 10 s in all.
relay limit --global 8MiB/s >/dev/null
start=$(date +%s.%N)
pids=()
for i in 1 2 3 4; do backup "$i" 20 "$i" > "$WORK/par-$i" & pids+=($!); done
wait "${pids[@]}"
end=$(date +%s.%N)
total=0; for i in 1 2 3 4; do total=$((total + $(cut -d' ' -f1 < "$WORK/par-$i"))); done
agg=$(awk -v b="$total" -v s="$(echo "$end - $start" | bc)" 'BEGIN { printf "%.2f", b / s / 1048576 }')
echo "| global limit, 4 clients at once (aggregate over $(echo "$end - $start" | bc | cut -c1-5) s) | 8 MiB/s | $agg MiB/s | $(awk -v m="$agg" 'BEGIN { printf "%+.1f %%", (m / 8 - 1) * 100 }') |"
relay limit --reset >/dev/null

# 2. One client limited to 1 MiB/s, 10 MiB.
relay clients limit c1 1MiB/s >/dev/null
read -r b s < <(backup 1 10 11)
one=$(rate "$b" "$s")
echo "| client limit | 1 MiB/s | $one MiB/s | $(awk -v m="$one" 'BEGIN { printf "%+.1f %%", (m - 1) * 100 }') |"

# 3. An unlimited client alone, then beside the limited one.
read -r b s < <(backup 2 400 12)
alone=$(rate "$b" "$s")
backup 1 10 13 > "$WORK/limited" &
limited_pid=$!
read -r b s < <(backup 2 400 14)
wait "$limited_pid"
beside=$(rate "$b" "$s")
echo "| unlimited client alone | unlimited | $alone MiB/s | |"
echo "| unlimited client beside a 1 MiB/s one | unlimited | $beside MiB/s | $(awk -v a="$alone" -v b="$beside" 'BEGIN { printf "%+.1f %% vs alone", (b / a - 1) * 100 }') |"
