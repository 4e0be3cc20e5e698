#!/usr/bin/env bash
# `ferry-relay verify` over a store of SIZE_MIB of incompressible data,
# side by side with b3sum over the same pack files in the same run: wall
# time (median of 3, page cache warm for both, then dropped before each
# when the kernel allows it) and peak RSS.
# Usage: bench/verify.sh [SIZE_MIB]   (default 4096)
# Installs b3sum (Debian's package) and GNU time if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MIB=${1:-4096}
RUNS=3

source bench/lib.sh
bench_setup
command -v b3sum >/dev/null || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq b3sum >/dev/null
}

echo "generating and backing up ${SIZE_MIB} MiB..."
mkdir -p "$WORK/src"
for i in 1 2 3 4; do
  "$BIN/gen" "$WORK/src/part$i.img" $(((SIZE_MIB << 20) / 4)) "$i"
done
init_relay "$WORK/relay"
start_relay "$WORK/relay"
pair_endpoint "$WORK/relay" "$WORK/ep" bench
"$BIN/ferry" --state "$WORK/ep" backup "$WORK/src" >/dev/null
stop_relay
rm -rf "$WORK/src"
PACKS=("$WORK"/relay/store/packs/*.pack)
STORE_BYTES=$(cat "${PACKS[@]}" | wc -c)

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
# Cold runs need the page cache dropped (root, and a kernel that allows it).
cold() { sync && echo 3 > /proc/sys/vm/drop_caches 2>/dev/null; }
COLD=no; cold && COLD=yes
for run in $(seq 1 $RUNS); do
  /usr/bin/time -v -o "$WORK/t-b3-$run" b3sum "${PACKS[@]}" >/dev/null
  /usr/bin/time -v -o "$WORK/t-b3one-$run" b3sum --num-threads 1 "${PACKS[@]}" >/dev/null
  /usr/bin/time -v -o "$WORK/t-verify-$run" "$BIN/ferry-relay" --data "$WORK/relay" verify --json > "$WORK/verify-$run.json"
  if [ "$COLD" = yes ]; then
    cold; /usr/bin/time -v -o "$WORK/t-b3cold-$run" b3sum "${PACKS[@]}" >/dev/null
    cold; /usr/bin/time -v -o "$WORK/t-verifycold-$run" "$BIN/ferry-relay" --data "$WORK/relay" verify >/dev/null
  fi
done
B3=$(for r in $(seq 1 $RUNS); do wall_s "$WORK/t-b3-$r"; echo; done | median)
B3ONE=$(for r in $(seq 1 $RUNS); do wall_s "$WORK/t-b3one-$r"; echo; done | median)
VERIFY=$(for r in $(seq 1 $RUNS); do wall_s "$WORK/t-verify-$r"; echo; done | median)
RSS=$(for r in $(seq 1 $RUNS); do peak_mib "$WORK/t-verify-$r"; echo; done | sort -g | tail -1)
B3RSS=$(for r in $(seq 1 $RUNS); do peak_mib "$WORK/t-b3-$r"; echo; done | sort -g | tail -1)

echo
echo "## verify over a ${SIZE_MIB} MiB store ($(printf '%.2f' "$(echo "$STORE_BYTES / 1073741824" | bc -l)") GiB of packs, ${#PACKS[@]} packs; $(nproc) cores; medians of $RUNS, cache warm)"
echo
echo "| job | wall | GiB/s | ratio to b3sum | peak RSS |"
echo "| --- | --- | --- | --- | --- |"
rate() { echo "scale=2; $STORE_BYTES / 1073741824 / $1" | bc -l; }
echo "| b3sum (all cores) | $B3 s | $(rate "$B3") | 1.00 | $B3RSS MiB |"
echo "| b3sum --num-threads 1 | $B3ONE s | $(rate "$B3ONE") | $(echo "scale=2; $B3ONE / $B3" | bc -l) | |"
echo "| ferry-relay verify | $VERIFY s | $(rate "$VERIFY") | $(echo "scale=2; $VERIFY / $B3" | bc -l) | $RSS MiB |"
if [ "$COLD" = yes ]; then
  B3COLD=$(for r in $(seq 1 $RUNS); do wall_s "$WORK/t-b3cold-$r"; echo; done | median)
  VCOLD=$(for r in $(seq 1 $RUNS); do wall_s "$WORK/t-verifycold-$r"; echo; done | median)
  echo "| b3sum, page cache dropped | $B3COLD s | $(rate "$B3COLD") | 1.00 | |"
  echo "| ferry-relay verify, page cache dropped | $VCOLD s | $(rate "$VCOLD") | $(echo "scale=2; $VCOLD / $B3COLD" | bc -l) | |"
fi
echo
echo "last verify: $(cat "$WORK/verify-$RUNS.json" | head -c 400)"
