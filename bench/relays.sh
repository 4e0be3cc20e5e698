#!/usr/bin/env bash
# Aggregate ingest of many endpoints backing up at once through 1, 2 and 3
# relays sharing one catalog and one object store (STORE=moto, the default,
# or STORE=garage: see bench/s3.sh) — issue 27.
# Usage: [STORE=moto|garage] [CATALOG=sqlite|postgres] bench/relays.sh [RUNS] [ENDPOINTS] [MIB_EACH]
# Each run and relay count: fresh relays (one identity, one catalog — an
# SQLite file, or with CATALOG=postgres a PostgreSQL database, bench/pg.sh —
# one bucket), ENDPOINTS open clients paired once, each listing the relays
# starting at its own so sessions spread; every endpoint backs up its own
# tree of MIB_EACH MiB of incompressible files at the same moment; the
# wall time until the last one finishes gives the aggregate rate.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-1}
ENDPOINTS=${2:-20}
MIB_EACH=${3:-16}
source bench/lib.sh
source bench/s3.sh
source bench/pg.sh
CATALOG=${CATALOG:-sqlite}
bench_setup
start_store
[ "$CATALOG" = postgres ] && start_postgres
RELAY_PIDS=()
trap '[ ${#RELAY_PIDS[@]} -eq 0 ] || kill "${RELAY_PIDS[@]}" 2>/dev/null; stop_store; stop_postgres; bench_cleanup' EXIT

# Each endpoint's tree: 4 files of incompressible bytes.
for n in $(seq 1 "$ENDPOINTS"); do
  mkdir -p "$WORK/src-$n"
  for f in 1 2 3 4; do
    head -c $((MIB_EACH * 1024 * 1024 / 4)) /dev/urandom >"$WORK/src-$n/file-$f.bin"
  done
done

for run in $(seq 1 "$RUNS"); do
  for relays in 1 2 3; do
    tag="$relays-$run"
    make_bucket "bench-$tag"
    case "$CATALOG" in
      postgres) catalog=$(make_database "bench_${relays}_$run") ;;
      *) catalog="sqlite://$WORK/catalog-$tag.sqlite" ;;
    esac
    addresses=()
    for r in $(seq 1 "$relays"); do
      R="$WORK/relay-$tag-$r"
      identity=()
      [ "$r" -gt 1 ] && identity=(--identity "$WORK/relay-$tag-1/keys/relay.key")
      "$BIN/ferry-relay" --data "$R" init --listen "127.0.0.1:0" --pair-listen "127.0.0.1:0" \
        --catalog "$catalog" "${identity[@]}" >/dev/null
      storage_toml "bench-$tag" >>"$R/relay.toml"
      start_relay "$R"
      RELAY_PIDS+=("$RELAY_PID")
      addresses+=("\"$(session_addr "$R")\"")
    done
    for n in $(seq 1 "$ENDPOINTS"); do
      E="$WORK/ep-$tag-$n"
      pair_endpoint "$WORK/relay-$tag-1" "$E" "laptop-$n" open
      # Its list starts at relay n mod count: the sessions spread.
      k=$((n % relays))
      list=$(printf '%s\n' "${addresses[@]:$k}" "${addresses[@]:0:$k}" | paste -sd, -)
      sed -i "s|^addresses = .*|addresses = [$list]|" "$E/relay.toml"
    done
    start=$(date +%s.%N)
    pids=()
    for n in $(seq 1 "$ENDPOINTS"); do
      "$BIN/ferry" --state "$WORK/ep-$tag-$n" backup "$WORK/src-$n" >/dev/null 2>"$WORK/ep-$tag-$n.err" &
      pids+=($!)
    done
    failed=0
    for pid in "${pids[@]}"; do wait "$pid" || failed=$((failed + 1)); done
    wall=$(echo "$(date +%s.%N) - $start" | bc -l)
    [ "$failed" -eq 0 ] || { echo "$failed backups failed with $relays relay(s)" >&2; exit 1; }
    record "wall-$relays" "$wall"
    kill "${RELAY_PIDS[@]}" 2>/dev/null || true
    wait "${RELAY_PIDS[@]}" 2>/dev/null || true
    RELAY_PIDS=()
    rm -rf "$WORK"/relay-"$tag"-* "$WORK"/ep-"$tag"-*
  done
done

total=$((ENDPOINTS * MIB_EACH))
echo "Aggregate ingest: $ENDPOINTS endpoints x $MIB_EACH MiB of incompressible files at once ($total MiB), medians of $RUNS run(s); one catalog ($CATALOG), one bucket ($STORE), loopback, $(nproc) cores"
echo
echo "| relays | wall | aggregate | / 1 relay |"
echo "|---|---|---|---|"
one=$(med wall-1)
for relays in 1 2 3; do
  w=$(med "wall-$relays")
  printf "| %s | %.2f s | %.1f MiB/s | %.2f |\n" "$relays" "$w" "$(echo "$total / $w" | bc -l)" "$(echo "$one / $w" | bc -l)"
done
