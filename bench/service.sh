#!/usr/bin/env bash
# Issue 27's scenario against a real object store: three relays on one host
# (one identity, one catalog file, one bucket: STORE=garage for three
# Garage nodes with replication 3, or STORE=moto), ENDPOINTS endpoints
# backing up at once, spread over the relays; the second relay killed with
# -9 as soon as it serves a session; a collection asked of the third during
# the backups; the backups that failed run once more (as their daemons
# would) through the next address; every endpoint's snapshot is then
# restored through each of the three relays and compared; verify runs.
# Usage: [STORE=garage|moto] bench/service.sh [ENDPOINTS] [MIB_EACH]
set -euo pipefail
cd "$(dirname "$0")/.."
ENDPOINTS=${1:-20}
MIB_EACH=${2:-8}
source bench/lib.sh
source bench/s3.sh
bench_setup
start_store
PIDS=()
trap '[ ${#PIDS[@]} -eq 0 ] || kill "${PIDS[@]}" 2>/dev/null; stop_store; bench_cleanup' EXIT
make_bucket service

# Starts relay $1 of the three, keeping its pid.
start_one() {
  start_relay "$WORK/relay-$1"
  PIDS[$1]=$RELAY_PID
}

addresses=()
for r in 1 2 3; do
  identity=()
  [ "$r" -gt 1 ] && identity=(--identity "$WORK/relay-1/keys/relay.key")
  "$BIN/ferry-relay" --data "$WORK/relay-$r" init --listen "127.0.0.1:$(free_port)" \
    --pair-listen "127.0.0.1:$(free_port)" --catalog "sqlite://$WORK/catalog.sqlite" "${identity[@]}" >/dev/null
  storage_toml service >>"$WORK/relay-$r/relay.toml"
  start_one "$r"
  addresses+=("\"$(session_addr "$WORK/relay-$r")\"")
done

for n in $(seq 1 "$ENDPOINTS"); do
  mkdir -p "$WORK/src-$n"
  for f in 1 2 3 4; do head -c $((MIB_EACH * 262144)) /dev/urandom >"$WORK/src-$n/file-$f.bin"; done
  mode=open; [ $((n % 2)) = 0 ] && mode=sealed
  pair_endpoint "$WORK/relay-1" "$WORK/ep-$n" "laptop-$n" "$mode"
  k=$((n % 3))
  list=$(printf '%s\n' "${addresses[@]:$k}" "${addresses[@]:0:$k}" | paste -sd, -)
  sed -i "s|^addresses = .*|addresses = [$list]|" "$WORK/ep-$n/relay.toml"
done

start=$(date +%s.%N)
backups=()
for n in $(seq 1 "$ENDPOINTS"); do
  "$BIN/ferry" --state "$WORK/ep-$n" backup "$WORK/src-$n" >/dev/null 2>"$WORK/ep-$n.err" &
  backups[$n]=$!
done
for _ in $(seq 1 600); do grep -q "session opened" "$WORK/relay-2.log" 2>/dev/null && break; sleep 0.05; done
kill -9 "${PIDS[2]}"
"$BIN/ferry-relay" --data "$WORK/relay-3" gc --json >"$WORK/gc.json" &
gc=$!
retried=0
for n in $(seq 1 "$ENDPOINTS"); do
  if ! wait "${backups[$n]}"; then
    retried=$((retried + 1))
    "$BIN/ferry" --state "$WORK/ep-$n" backup "$WORK/src-$n" >/dev/null
  fi
done
wall=$(echo "$(date +%s.%N) - $start" | bc -l)
wait "$gc"
collected=$(grep -l "snapshots kept;" "$WORK"/relay-[13].log | wc -l)

start_one 2
restored=0
for n in $(seq 1 "$ENDPOINTS"); do
  for r in 1 2 3; do
    sed -i "s|^addresses = .*|addresses = [${addresses[$((r - 1))]}]|" "$WORK/ep-$n/relay.toml"
    rm -rf "$WORK/out"
    "$BIN/ferry" --state "$WORK/ep-$n" restore --map-from "$WORK/src-$n" --map-to "$WORK/out" >/dev/null
    diff -r "$WORK/src-$n" "$WORK/out" >/dev/null || { echo "endpoint $n through relay $r differs" >&2; exit 1; }
    restored=$((restored + 1))
  done
done
"$BIN/ferry-relay" --data "$WORK/relay-1" verify >"$WORK/verify.txt"

echo "Service scenario ($STORE): 3 relays, $ENDPOINTS endpoints x $MIB_EACH MiB (open and sealed), relay 2 killed -9 mid-backup"
echo
echo "- every endpoint finished: $ENDPOINTS of $ENDPOINTS ($retried ran again after the kill), wall $(printf %.1f "$wall") s"
echo "- a gc asked during the backups ran on $collected relay(s): $(cat "$WORK/gc.json")"
echo "- restores identical: $restored of $((ENDPOINTS * 3)) (each endpoint through each relay)"
echo "- verify: $(head -1 "$WORK/verify.txt")"
