#!/usr/bin/env bash
# Reading a large file through `ferry mount` (issue 26), beside the other
# ways out in one run: `ferry restore` and `ferry dump` of the same file,
# and `cat` of the local source (the disk's bound; the relay is on
# loopback). Each for an open and a sealed client on a fresh relay.
# Usage: [LINK=office|road|hotel] bench/mount.sh [RUNS] [SIZE_MIB]
#   (default 3 runs of 1024 MiB on loopback; with LINK, sessions go through
#   the emulated link and the table gives its downstream bound)
# The first read through the mount fetches the file into the mount's
# cache (a restore of it and, ahead, its neighbours); the second read
# comes from that cache. Medians, in MiB/s.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
SIZE_MIB=${2:-1024}
source bench/lib.sh
bench_setup
[ -e /dev/fuse ] || { echo "bench/mount.sh needs /dev/fuse" >&2; exit 1; }
command -v fusermount3 >/dev/null || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fuse3 >/dev/null
}
mkdir -p "$WORK/src"
"$BIN/gen" "$WORK/src/big.bin" $((SIZE_MIB << 20)) 7
FILE="$WORK/src/big.bin"

drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true; }

for run in $(seq 1 "$RUNS"); do
  for mode in open sealed; do
    R="$WORK/relay-$mode"; E="$WORK/ep-$mode"; M="$WORK/mnt"
    init_relay "$R"; start_relay "$R"; pair_endpoint "$R" "$E" b "$mode"
    if [ -n "${LINK:-}" ]; then
      # Sessions through the link (pairing stays on the LAN, as for users).
      session=$(grep -o '"session":"[^"]*"' "$R/run/listen.json" | cut -d'"' -f4)
      start_link "${session##*:}"
      sed -i "s|^addresses = .*|addresses = [\"127.0.0.1:$LINK_PORT\"]|" "$E/relay.toml"
    fi
    "$BIN/ferry" --state "$E" backup "$WORK/src" >/dev/null
    mkdir -p "$M"
    "$BIN/ferry" --state "$E" mount --cache-size "$((SIZE_MIB * 2))MiB" "$M" 2>/dev/null &
    MOUNT_PID=$!
    until [ -e "$M/sets/default/latest" ]; do sleep 0.05; done
    IN="$M/sets/default/latest$FILE"
    drop_caches
    record "$mode-mount-first" "$(seconds cat "$IN")"
    drop_caches
    record "$mode-mount-again" "$(seconds cat "$IN")"
    cmp "$IN" "$FILE" || { echo "the mount's copy differs" >&2; exit 1; }
    fusermount3 -u "$M"; wait "$MOUNT_PID"
    record "$mode-restore" "$(seconds "$BIN/ferry" --state "$E" restore --map-from "$FILE" --map-to "$WORK/restored.bin")"
    rm -f "$WORK/restored.bin"
    record "$mode-dump" "$(seconds sh -c "'$BIN/ferry' --state '$E' dump '$FILE' > '$WORK/dumped.bin'")"
    rm -f "$WORK/dumped.bin"
    stop_relay
    rm -rf "$R" "$E"
  done
  drop_caches
  record cat "$(seconds cat "$FILE")"
done

rate() { echo "scale=0; $SIZE_MIB / $1" | bc -l; }
where="relay on loopback"
[ -n "${LINK:-}" ] && where="sessions through the emulated $LINK link"
echo "Reading one ${SIZE_MIB} MiB file (random, incompressible) through ferry mount, medians of $RUNS runs; $where, page cache dropped before each read"
echo
echo "| client | mount: first read | mount: again (cached) | ferry restore | ferry dump |"
echo "|---|---|---|---|---|"
for mode in open sealed; do
  row="| $mode"
  for what in mount-first mount-again restore dump; do
    s=$(med "$mode-$what")
    row="$row | $s s ($(rate "$s") MiB/s)"
  done
  echo "$row |"
done
cat_s=$(med cat)
echo
echo "Bound: cat of the local file $cat_s s ($(rate "$cat_s") MiB/s)."
if [ -n "${LINK:-}" ]; then
  link_profile
  echo "Link bound: ${SIZE_MIB} MiB down at $((LINK_DOWN / 1000)) kB/s = $(echo "scale=1; $SIZE_MIB * 1048576 / $LINK_DOWN" | bc) s ($(echo "scale=1; $LINK_DOWN / 1048576" | bc) MiB/s), plus a round trip of ${LINK_RTT} s per wait."
fi
