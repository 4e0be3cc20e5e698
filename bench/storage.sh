#!/usr/bin/env bash
# The relay's storage backends side by side in one run (issue 27): local
# pack files against an S3-compatible object store (STORE=moto, the
# default: moto's server on loopback, installed here from PyPI; or
# STORE=garage: three Garage nodes, see bench/s3.sh), on a copy of a
# documentation tree (/usr/share/doc by default).
# Usage: [STORE=moto|garage] bench/storage.sh [RUNS] [TREE]
# Each run, for each backend on a fresh relay and an open client: the first
# backup; an incremental after 5% of the files were rewritten; a restore
# into an empty directory with the relay just restarted (so the object
# store's read cache is cold: every byte is a ranged GET). Backends: local
# (pack files, SQLite catalog), s3 (the object store, SQLite catalog) and
# s3+pg (the object store and a PostgreSQL catalog, bench/pg.sh). The table
# gives medians and each one's ratio to local disk (goal <= 1.3); a second
# one the first backup's CPU seconds, ferry's and the engines', and the
# floor they put under the wall on this machine's cores.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
TREE=${2:-/usr/share/doc}
source bench/lib.sh
source bench/s3.sh
source bench/pg.sh
bench_setup
SRC="$WORK/tree"
cp -a "$TREE" "$SRC"
files=$(find "$SRC" -type f | wc -l)
bytes=$(du -sb "$SRC" | cut -f1)

start_store
start_postgres
trap 'stop_store; stop_postgres; bench_cleanup' EXIT

# Points relay $1 at bucket $2 (created now).
use_bucket() {
  make_bucket "$2"
  storage_toml "$2" >>"$1/relay.toml"
}

# Rewrites every 20th file of the tree (run $1): new bytes, same size.
touch_files() {
  find "$SRC" -type f | sort | awk 'NR % 20 == 0' | while read -r f; do
    head -c "$(stat -c %s "$f")" /dev/urandom >"$f"
  done
}

for run in $(seq 1 "$RUNS"); do
  rm -rf "$SRC" && cp -a "$TREE" "$SRC"
  for backend in local s3 s3+pg; do
    R="$WORK/relay-$backend-$run"; E="$WORK/ep-$backend-$run"
    init_relay "$R"
    case "$backend" in
      s3) use_bucket "$R" "bench-$run" ;;
      s3+pg)
        use_bucket "$R" "bench-pg-$run"
        printf '\n[catalog]\nurl = "%s"\n' "$(make_database "bench_$run")" >>"$R/relay.toml" ;;
    esac
    start_relay "$R"; pair_endpoint "$R" "$E" b open
    # CPU seconds of the first backup: ferry's own (endpoint and relay)
    # and the engines' (moto or Garage, PostgreSQL), on the same cores.
    engines_before=$(cpu_s "${STORE_PIDS[@]}" $(pg_pids)); relay_before=$(cpu_s "$RELAY_PID")
    record "$backend-first" "$(seconds /usr/bin/time -f "%U %S" -o "$WORK/endpoint.cpu" "$BIN/ferry" --state "$E" backup "$SRC")"
    record "$backend-ferry-cpu" "$(echo "$(cpu_s "$RELAY_PID") - $relay_before + $(awk '{print $1 + $2}' "$WORK/endpoint.cpu")" | bc -l)"
    record "$backend-engine-cpu" "$(echo "$(cpu_s "${STORE_PIDS[@]}" $(pg_pids)) - $engines_before" | bc -l)"
    cp -a "$SRC" "$WORK/before"
    touch_files
    record "$backend-incremental" "$(seconds "$BIN/ferry" --state "$E" backup "$SRC")"
    stop_relay; start_relay "$R"
    record "$backend-restore" "$(seconds "$BIN/ferry" --state "$E" restore --map-from "$SRC" --map-to "$WORK/out")"
    diff -r --no-dereference "$SRC" "$WORK/out" >/dev/null || { echo "$backend: the restore differs from the tree" >&2; exit 1; }
    stop_relay
    rm -rf "$WORK/out" "$R" "$E"
    rm -rf "$SRC" && mv "$WORK/before" "$SRC"
  done
done

echo "Storage backends: $files files, $((bytes >> 20)) MiB ($TREE), medians of $RUNS runs, open client, loopback, s3 = $STORE"
echo
echo "| backend | first backup | ratio | incremental (5% of files rewritten) | ratio | restore, cold cache | ratio |"
echo "|---|---|---|---|---|---|---|"
for backend in local s3 s3+pg; do
  row="| $backend"
  for what in first incremental restore; do
    v=$(med "$backend-$what"); base=$(med "local-$what")
    row="$row | $v s | $(printf %.2f "$(echo "$v / $base" | bc -l)")"
  done
  echo "$row |"
done

# Where the first backup's time goes. Everything shares this machine's
# cores: the engines' CPU (moto is one Python process) is taken from
# ferry's, so the wall cannot be below (ferry's + the engines' CPU) / cores
# however ferry overlaps its work; a store and a database on hosts of
# their own give those cores back.
cores=$(nproc)
echo
echo "First backup, CPU seconds (medians) on $cores cores: the wall's floor is their sum / $cores"
echo
echo "| backend | wall | ferry's CPU (endpoint + relay) | engines' CPU (store, PostgreSQL) | floor: sum / $cores |"
echo "|---|---|---|---|---|"
for backend in local s3 s3+pg; do
  f=$(med "$backend-ferry-cpu"); e=$(med "$backend-engine-cpu")
  echo "| $backend | $(med "$backend-first") s | $f s | $e s | $(printf %.2f "$(echo "($f + $e) / $cores" | bc -l)") s |"
done
