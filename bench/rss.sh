#!/usr/bin/env bash
# Peak memory of ferry (endpoint and relay) backing up and restoring one big
# file, side by side with rsync over ssh on the same file in the same run.
# Usage: bench/rss.sh [SIZE_MIB]   (default 4096: a 4 GiB file)
# Installs rsync, openssh-server and GNU time if missing; runs sshd on
# 127.0.0.1 with a throwaway key and config under a temp dir (the system's
# ssh setup is never touched).
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE_MIB=${1:-4096}

source bench/lib.sh
bench_setup
peak() { peak_mib "$1"; }
wall() { wall_s "$1"; }

echo "generating a ${SIZE_MIB} MiB file..."
"$BIN/gen" "$WORK/big.img" $((SIZE_MIB << 20)) 7

# ferry: relay and endpoint on loopback.
init_relay "$WORK/relay"
start_relay "$WORK/relay"
pair_endpoint "$WORK/relay" "$WORK/ep" bench
/usr/bin/time -v -o "$WORK/t-backup" "$BIN/ferry" --state "$WORK/ep" backup --json "$WORK/big.img" > "$WORK/backup.json"
RELAY_AFTER_BACKUP=$(awk '/VmHWM/ {printf "%.0f", $2/1024}' /proc/$RELAY_PID/status)
/usr/bin/time -v -o "$WORK/t-restore" "$BIN/ferry" --state "$WORK/ep" restore --json --map-from "$WORK" --map-to "$WORK/restored" > "$WORK/restore.json"
RELAY_PEAK=$(awk '/VmHWM/ {printf "%.0f", $2/1024}' /proc/$RELAY_PID/status)
cmp "$WORK/big.img" "$WORK/restored/big.img"
rm -f "$WORK/restored/big.img"

# rsync over ssh: a throwaway sshd on 127.0.0.1.
start_sshd
mkdir -p "$WORK/rsync-dest" "$WORK/rsync-back"
/usr/bin/time -v -o "$WORK/t-rsync-up" rsync -a --stats -e "$SSH" \
  --rsync-path="/usr/bin/time -v -o $WORK/t-rsync-up-server rsync" "$WORK/big.img" 127.0.0.1:"$WORK/rsync-dest/" >/dev/null
/usr/bin/time -v -o "$WORK/t-rsync-down" rsync -a --stats -e "$SSH" \
  --rsync-path="/usr/bin/time -v -o $WORK/t-rsync-down-server rsync" 127.0.0.1:"$WORK/rsync-dest/big.img" "$WORK/rsync-back/" >/dev/null

echo
echo "## Peak RSS, ${SIZE_MIB} MiB file ($(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'))"
echo
echo "| job | client peak RSS | server peak RSS | wall |"
echo "| --- | --- | --- | --- |"
echo "| ferry backup | $(peak "$WORK/t-backup") MiB | ${RELAY_AFTER_BACKUP} MiB | $(wall "$WORK/t-backup") |"
echo "| ferry restore | $(peak "$WORK/t-restore") MiB | ${RELAY_PEAK} MiB (peak of the relay's whole life) | $(wall "$WORK/t-restore") |"
echo "| rsync -a over ssh, upload | $(peak "$WORK/t-rsync-up") MiB | $(peak "$WORK/t-rsync-up-server") MiB | $(wall "$WORK/t-rsync-up") |"
echo "| rsync -a over ssh, download | $(peak "$WORK/t-rsync-down") MiB | $(peak "$WORK/t-rsync-down-server") MiB | $(wall "$WORK/t-rsync-down") |"
echo
echo "ferry backup: $(cat "$WORK/backup.json")"
echo "ferry restore: $(cat "$WORK/restore.json")"
