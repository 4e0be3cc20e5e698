#!/usr/bin/env bash
# The relay's storage backends side by side in one run (issue 27): local
# pack files against an S3-compatible object store (moto's server on
# loopback, installed here from PyPI), on a copy of a documentation tree
# (/usr/share/doc by default).
# Usage: bench/storage.sh [RUNS] [TREE]
# Each run, for each backend on a fresh relay and an open client: the first
# backup; an incremental after 5% of the files were rewritten; a restore
# into an empty directory with the relay just restarted (so the object
# store's read cache is cold: every byte is a ranged GET). The table gives
# medians and each one's ratio to local disk (goal <= 1.3).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
TREE=${2:-/usr/share/doc}
source bench/lib.sh
python3 -c 'import moto.server' 2>/dev/null || python3 -m pip install --quiet 'moto[server]'
bench_setup
SRC="$WORK/tree"
cp -a "$TREE" "$SRC"
files=$(find "$SRC" -type f | wc -l)
bytes=$(du -sb "$SRC" | cut -f1)

# moto on a free port, ended with this script.
MOTO_PORT=$(free_port)
python3 -c "from moto.server import main; main(['-H', '127.0.0.1', '-p', '$MOTO_PORT'])" 2>"$WORK/moto.log" &
MOTO_PID=$!
trap 'kill $MOTO_PID 2>/dev/null; bench_cleanup' EXIT
for _ in $(seq 1 100); do curl -s "http://127.0.0.1:$MOTO_PORT/" >/dev/null && break; sleep 0.1; done
printf 'access-key-id = "bench"\nsecret-access-key = "bench"\n' >"$WORK/s3.keys"
chmod 600 "$WORK/s3.keys"

# Points relay $1 at bucket $2 (created now).
use_bucket() {
  curl -sf -X PUT "http://127.0.0.1:$MOTO_PORT/$2" >/dev/null
  cat >>"$1/relay.toml" <<TOML

[storage]
kind = "s3"
endpoint = "http://127.0.0.1:$MOTO_PORT"
bucket = "$2"
credentials-file = "$WORK/s3.keys"
TOML
}

# Rewrites every 20th file of the tree (run $1): new bytes, same size.
touch_files() {
  find "$SRC" -type f | sort | awk 'NR % 20 == 0' | while read -r f; do
    head -c "$(stat -c %s "$f")" /dev/urandom >"$f"
  done
}

for run in $(seq 1 "$RUNS"); do
  rm -rf "$SRC" && cp -a "$TREE" "$SRC"
  for backend in local s3; do
    R="$WORK/relay-$backend-$run"; E="$WORK/ep-$backend-$run"
    init_relay "$R"
    [ "$backend" = s3 ] && use_bucket "$R" "bench-$run"
    start_relay "$R"; pair_endpoint "$R" "$E" b open
    record "$backend-first" "$(seconds "$BIN/ferry" --state "$E" backup "$SRC")"
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

echo "Storage backends: $files files, $((bytes >> 20)) MiB ($TREE), medians of $RUNS runs, open client, loopback"
echo
echo "| backend | first backup | ratio | incremental (5% of files rewritten) | ratio | restore, cold cache | ratio |"
echo "|---|---|---|---|---|---|---|"
for backend in local s3; do
  row="| $backend"
  for what in first incremental restore; do
    v=$(med "$backend-$what"); base=$(med "local-$what")
    row="$row | $v s | $(printf %.2f "$(echo "$v / $base" | bc -l)")"
  done
  echo "$row |"
done
