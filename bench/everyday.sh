#!/usr/bin/env bash
# The two slow paths of everyday use (issue 26), beside cp -a and restic in
# one run, on a copy of a documentation tree (/usr/share/doc by default:
# about 4,500 files here).
# Usage: bench/everyday.sh [RUNS] [TREE]
# Each run, for an open and a sealed client on a fresh relay: the first
# backup (set a); a backup of the same files as a new set (set b: every
# chunk already on the relay; its first backup borrows set a's files
# cache); a backup as set c after the files cache was deleted (a
# reinstalled laptop: every file read again); a restore of set a into an
# empty directory (durable when ferry exits). Beside them, alternately: cp -a of
# the tree then sync, and restic's restore of the same tree from a local
# repository then sync (Debian's restic, installed here). The table gives
# medians, and the goals' ratios: reused / first backup (goal <= 0.3; the
# lost cache's ratio beside it),
# restore / (cp -a + sync) (goal <= 2), restore / restic's.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
TREE=${2:-/usr/share/doc}
source bench/lib.sh
command -v restic >/dev/null || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq restic >/dev/null
}
bench_setup
SRC="$WORK/tree"
cp -a "$TREE" "$SRC"
files=$(find "$SRC" -type f | wc -l)
bytes=$(du -sb "$SRC" | cut -f1)
export RESTIC_PASSWORD=bench RESTIC_REPOSITORY="$WORK/restic"
restic init -q >/dev/null
restic backup -q "$SRC" >/dev/null


for run in $(seq 1 "$RUNS"); do
  for mode in open sealed; do
    R="$WORK/relay-$mode-$run"; E="$WORK/ep-$mode-$run"
    init_relay "$R"; start_relay "$R"; pair_endpoint "$R" "$E" b "$mode"
    record "$mode-first" "$(seconds "$BIN/ferry" --state "$E" backup --set a "$SRC")"
    record "$mode-reused" "$(seconds "$BIN/ferry" --state "$E" backup --set b "$SRC")"
    # A lost files cache (a reinstalled laptop): every file read again.
    rm -f "$E"/cache.sqlite*
    record "$mode-lost" "$(seconds "$BIN/ferry" --state "$E" backup --set c "$SRC")"
    record "$mode-restore" "$(seconds "$BIN/ferry" --state "$E" restore --set a --map-from "$SRC" --map-to "$WORK/out-$mode")"
    cmp <(cd "$SRC" && find . | sort) <(cd "$WORK/out-$mode" && find . | sort) >/dev/null || {
      echo "the restore differs from the tree" >&2; exit 1; }
    stop_relay
    rm -rf "$WORK/out-$mode" "$R" "$E"
  done
  sync
  record cp "$(seconds sh -c "cp -a '$SRC' '$WORK/cp' && sync")"
  rm -rf "$WORK/cp"; sync
  record restic "$(seconds sh -c "restic restore -q latest --target '$WORK/restic-out' && sync")"
  rm -rf "$WORK/restic-out"; sync
done

cp_s=$(med cp); restic_s=$(med restic)
echo "Everyday paths: $files files, $((bytes >> 20)) MiB ($TREE), medians of $RUNS runs"
echo
echo "| client | first backup | same files, new set | ratio (goal <= 0.3) | files cache lost | ratio | restore into empty | / cp -a + sync (goal <= 2) | / restic restore + sync |"
echo "|---|---|---|---|---|---|---|---|---|"
for mode in open sealed; do
  first=$(med "$mode-first"); reused=$(med "$mode-reused"); lost=$(med "$mode-lost"); restore=$(med "$mode-restore")
  printf "| %s | %s s | %s s | %.2f | %s s | %.2f | %s s | %.2f | %.2f |\n" "$mode" "$first" "$reused" \
    "$(echo "$reused / $first" | bc -l)" "$lost" "$(echo "$lost / $first" | bc -l)" "$restore" \
    "$(echo "$restore / $cp_s" | bc -l)" "$(echo "$restore / $restic_s" | bc -l)"
done
echo
echo "cp -a + sync: $cp_s s; restic restore + sync: $restic_s s"
