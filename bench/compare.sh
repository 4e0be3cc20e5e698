#!/usr/bin/env bash
# ferry against rsync over ssh, side by side in one run, on generated data.
# Usage: bench/compare.sh [--quick] [--link road|hotel|office] [RUNS]
#   --quick: small datasets (under 2 minutes; through a link under 3:
#     4 MiB D1, 1,000 files D2); default: the full sizes of issue 4.
#   --link: every scenario, ferry's and rsync's alike, through an emulated
#     link (bench/src/bin/link.rs: delay, rate per direction, bounded queue):
#     road 60 ms / 10 Mbit/s up / 50 down, hotel 200 ms / 2 / 8, office
#     20 ms / 100 / 100; the table then gives the physical bound beside each
#     figure (the wire bytes at the rate of the direction that carries most
#     of them, plus one round trip).
# Each scenario runs ferry (an open client, then a sealed one: the
# "ferry-sealed" rows; D1 and D2), rsync -a and rsync -az alternately, RUNS times
# (default 3), and the table gives medians: wall time, bytes on the wire
# (ferry: --json bytes_sent + bytes_received; rsync: --stats), peak RSS of both
# sides (/usr/bin/time -v; the relay's VmHWM, restarted before each run), and
# ferry's ratios to rsync -a (time) and rsync -az (wire).
set -euo pipefail
cd "$(dirname "$0")/.."
QUICK=0; LINK=
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1; shift ;;
    --link) LINK=$2; shift 2 ;;
    *) break ;;
  esac
done
RUNS=${1:-3}
if [ $QUICK = 1 ] && [ -n "$LINK" ]; then
  # Small enough that the slowest link (hotel, 2 Mbit/s up) stays under
  # 3 minutes in all.
  D1_MIB=4; D2_FILES=1000; D2_BYTES=5000000; D3_FILES=200; D3_BYTES=10000000
elif [ $QUICK = 1 ]; then
  D1_MIB=64; D2_FILES=2000; D2_BYTES=20000000; D3_FILES=200; D3_BYTES=10000000
else
  D1_MIB=1024; D2_FILES=20000; D2_BYTES=1000000000; D3_FILES=2000; D3_BYTES=100000000
fi

source bench/lib.sh
[ -n "$LINK" ] && link_profile
bench_setup
start_sshd
if [ -n "$LINK" ]; then
  start_link "$SSHD_PORT"
  SSH=${SSH/-p $SSHD_PORT/-p $LINK_PORT}
fi

echo "generating datasets in $WORK ..." >&2
"$BIN/gen" "$WORK/D1.img" $((D1_MIB << 20)) 1
cp "$WORK/D1.img" "$WORK/D1m.img"
"$BIN/gen-tree" edit "$WORK/D1m.img" 200 2
"$BIN/gen-tree" tree "$WORK/D2" "$D2_FILES" "$D2_BYTES" 3
"$BIN/gen-tree" tree "$WORK/D3" "$D3_FILES" "$D3_BYTES" 5

RESULTS="$WORK/results.tsv"
: > "$RESULTS"
record() { # SCENARIO TOOL WALL WIRE CLIENT_MIB SERVER_MIB
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >> "$RESULTS"
}
json_num() { grep -o "\"$1\":[0-9.]*" "$2" | head -n1 | cut -d: -f2; }

# --- ferry -------------------------------------------------------------------
# A fresh relay and endpoint for a scenario: $WORK/f-relay, $WORK/f-ep; the
# client open (tool "ferry") or sealed ($1 = sealed: tool "ferry-sealed").
ferry_fresh() {
  local mode=${1:-open}
  FERRY_TOOL=ferry; [ "$mode" = sealed ] && FERRY_TOOL=ferry-sealed
  stop_relay
  rm -rf "$WORK/f-relay" "$WORK/f-relay.log" "$WORK/f-ep"
  init_relay "$WORK/f-relay"
  start_relay "$WORK/f-relay"
  pair_endpoint "$WORK/f-relay" "$WORK/f-ep" bench "$mode"
  if [ -n "$LINK" ]; then
    # Sessions go through the link (pairing stays on the LAN, as for users).
    local session; session=$(grep -o '"session":"[^"]*"' "$WORK/f-relay/run/listen.json" | cut -d'"' -f4)
    start_link "${session##*:}"
    sed -i "s|^addresses = .*|addresses = [\"127.0.0.1:$LINK_PORT\"]|" "$WORK/f-ep/relay.toml"
  fi
}
# Runs `ferry ARGS` measured; the relay is restarted first so its VmHWM is this run's.
ferry_measured() { # SCENARIO ARGS...
  local scenario=$1; shift
  stop_relay; start_relay "$WORK/f-relay"
  sync  # no dirty pages left by the step before to slow this one down
  /usr/bin/time -v -o "$WORK/t" "$BIN/ferry" --state "$WORK/f-ep" "$@" --json > "$WORK/out.json"
  local relay_mib; relay_mib=$(awk '/VmHWM/ {printf "%.0f", $2/1024}' "/proc/$RELAY_PID/status")
  local wire=$(( $(json_num bytes_sent "$WORK/out.json") + $(json_num bytes_received "$WORK/out.json") ))
  record "$scenario" "$FERRY_TOOL" "$(wall_s "$WORK/t")" "$wire" "$(peak_mib "$WORK/t")" "$relay_mib"
}
ferry_unmeasured() { "$BIN/ferry" --state "$WORK/f-ep" "$@" >/dev/null; }

# --- rsync -------------------------------------------------------------------
rsync_measured() { # SCENARIO TOOL(rsync|rsync-z) SRC DEST [EXTRA...]
  local scenario=$1 tool=$2 src=$3 dest=$4; shift 4
  local z=(); [ "$tool" = rsync-z ] && z=(-z)
  sync  # as for ferry
  /usr/bin/time -v -o "$WORK/t" rsync -a --delete --stats "${z[@]}" "$@" -e "$SSH" \
    --rsync-path="/usr/bin/time -v -o $WORK/ts rsync" "$src" "$dest" > "$WORK/stats"
  local sent recv
  sent=$(awk -F': ' '/Total bytes sent/ {gsub(/,/, "", $2); print $2}' "$WORK/stats")
  recv=$(awk -F': ' '/Total bytes received/ {gsub(/,/, "", $2); print $2}' "$WORK/stats")
  record "$scenario" "$tool" "$(wall_s "$WORK/t")" $((sent + recv)) "$(peak_mib "$WORK/t")" "$(peak_mib "$WORK/ts")"
}
# Records the last measurement again under another scenario (the same rsync
# run is the reference for two ferry configurations).
record_again() { # SCENARIO
  tail -n1 "$RESULTS" | awk -F'\t' -v s="$1" 'BEGIN { OFS = "\t" } { $1 = s; print }' >> "$RESULTS"
}
REMOTE="127.0.0.1:$WORK/r"

# --- scenarios ---------------------------------------------------------------
S=$WORK/src   # the path backed up: datasets are copied here, so paths stay the same
for run in $(seq 1 "$RUNS"); do
  echo "run $run of $RUNS ($(date +%T)) ..." >&2
  # D1 initial, then D1 -> D1m.
  for mode in open sealed; do
    rm -rf "$S"; mkdir -p "$S"; cp "$WORK/D1.img" "$S/disk.img"
    ferry_fresh "$mode"
    ferry_measured "D1 initial" backup "$S"
    cp "$WORK/D1m.img" "$S/disk.img"
    ferry_measured "D1 -> D1m" backup "$S"
  done
  for tool in rsync rsync-z; do
    rm -rf "$WORK/r"; mkdir -p "$WORK/r"; cp "$WORK/D1.img" "$S/disk.img"
    rsync_measured "D1 initial" "$tool" "$S/" "$REMOTE/"
    cp "$WORK/D1m.img" "$S/disk.img"
    rsync_measured "D1 -> D1m" "$tool" "$S/" "$REMOTE/"
  done

  # D2 initial, D2 -> D2m, D2m again, restores.
  # D2m is D2 edited in place (as a user's edits: inodes stay), the same
  # deterministic edits for every tool.
  for mode in open sealed; do
    rm -rf "$S"; cp -a "$WORK/D2" "$S"
    ferry_fresh "$mode"
    ferry_measured "D2 initial" backup "$S"
    "$BIN/gen-tree" mutate "$S" 10 5 5 4
    ferry_measured "D2 -> D2m" backup "$S"
    ferry_measured "D2m, no change" backup "$S"
    rm -rf "$WORK/restore"
    ferry_measured "restore D2m into empty dir" restore --map-from "$S" --map-to "$WORK/restore"
    rm -rf "$WORK/restore"; cp -a "$WORK/D2" "$WORK/restore"
    ferry_measured "restore D2m onto D2" restore --map-from "$S" --map-to "$WORK/restore"
  done
  # D2 initial again with zstd forced: auto picks lz4 on loopback (compressing
  # is what holds it back there); this is what a slow link gets. Read in
  # place (the same bytes as the copy rsync reads; a fresh relay).
  ferry_fresh
  ferry_measured "D2 initial, --compression zstd" backup --compression zstd "$WORK/D2"
  for tool in rsync rsync-z; do
    rm -rf "$WORK/r" "$S"; mkdir -p "$WORK/r"; cp -a "$WORK/D2" "$S"
    rsync_measured "D2 initial" "$tool" "$S/" "$REMOTE/"
    record_again "D2 initial, --compression zstd"
    "$BIN/gen-tree" mutate "$S" 10 5 5 4
    rsync_measured "D2 -> D2m" "$tool" "$S/" "$REMOTE/"
    rsync_measured "D2m, no change" "$tool" "$S/" "$REMOTE/"
    rm -rf "$WORK/restore"; mkdir -p "$WORK/restore"
    rsync_measured "restore D2m into empty dir" "$tool" "$REMOTE/" "$WORK/restore/"
    rm -rf "$WORK/restore"; cp -a "$WORK/D2" "$WORK/restore"
    rsync_measured "restore D2m onto D2" "$tool" "$REMOTE/" "$WORK/restore/"
  done

  # D3 initial over a 2 MB/s link (not through an emulated link: it is one).
  [ -n "$LINK" ] && continue
  rm -rf "$S"; cp -a "$WORK/D3" "$S"
  ferry_fresh
  ferry_measured "D3 initial, 2 MB/s" backup --limit 2MB/s "$S"
  for tool in rsync rsync-z; do
    rm -rf "$WORK/r"; mkdir -p "$WORK/r"
    rsync_measured "D3 initial, 2 MB/s" "$tool" "$S/" "$REMOTE/" --bwlimit=2000
  done
done

# --- table -------------------------------------------------------------------
echo
echo "## ferry vs rsync over ssh ($([ $QUICK = 1 ] && echo quick || echo full) datasets, medians of $RUNS runs$([ -n "$LINK" ] && echo ", through the emulated $LINK link"); $((SECONDS / 60)) min $((SECONDS % 60)) s in all)"
echo
echo "Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(free -g | awk '/Mem:/ {print $2}') GiB."
echo "D1 ${D1_MIB} MiB random; D2 ${D2_FILES} text files, ${D2_BYTES} B; D3 ${D3_FILES} files, ${D3_BYTES} B."
echo
python3 - "$RESULTS" "${LINK_UP:-}" "${LINK_DOWN:-}" "${LINK_RTT:-}" <<'PY'
import sys, statistics, collections
link = [float(x) for x in sys.argv[2:5]] if sys.argv[2] else None
rows = collections.defaultdict(list)
order = []
for line in open(sys.argv[1]):
    scenario, tool, wall, wire, cmib, smib = line.rstrip("\n").split("\t")
    if scenario not in order:
        order.append(scenario)
    rows[(scenario, tool)].append((float(wall), int(wire), int(cmib or 0), int(smib or 0)))
def med(scenario, tool, i):
    values = [r[i] for r in rows.get((scenario, tool), [])]
    return statistics.median(values) if values else None
def mb(n):
    return f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"
def bound(s, tool):
    # The wire bytes at the rate of the direction carrying most of them
    # (down for restores, up otherwise), plus one round trip.
    up, down, rtt = link
    rate = down if s.startswith("restore") else up
    return med(s, tool, 1) / rate + rtt
extra = " bound (s) |" if link else ""
print("| scenario | tool | wall (s) |" + extra + " wire | client RSS (MiB) | server RSS (MiB) |")
print("| --- | --- | --- |" + (" --- |" if link else "") + " --- | --- | --- |")
for s in order:
    for tool in ("ferry", "ferry-sealed", "rsync", "rsync-z"):
        if (s, tool) in rows:
            b = f" {bound(s, tool):.2f} |" if link else ""
            print(f"| {s} | {tool} | {med(s, tool, 0):.2f} |{b} {mb(med(s, tool, 1))} | {med(s, tool, 2):.0f} | {med(s, tool, 3):.0f} |")
print()
print("| scenario | wall ferry/rsync | wall ferry/rsync -z | wire ferry/rsync -z | wall sealed/open | wire sealed/open | wall sealed/rsync -z |")
print("| --- | --- | --- | --- | --- | --- | --- |")
def ratio(a, b):
    return f"{a / b:.2f}" if a is not None and b else "-"
for s in order:
    f, r, z = (med(s, "ferry", 0), med(s, "rsync", 0), med(s, "rsync-z", 0))
    fw, zw = med(s, "ferry", 1), med(s, "rsync-z", 1)
    sf, sw = med(s, "ferry-sealed", 0), med(s, "ferry-sealed", 1)
    print(f"| {s} | {ratio(f, r)} | {ratio(f, z)} | {ratio(fw, zw)} | {ratio(sf, f)} | {ratio(sw, fw)} | {ratio(sf, z)} |")
PY
