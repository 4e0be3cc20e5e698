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

need=()
command -v rsync >/dev/null || need+=(rsync)
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
[ -x /usr/bin/time ] || need+=(time)
command -v ssh-keygen >/dev/null || need+=(openssh-client)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

cargo build --release --quiet -p ferry-relay -p ferry-endpoint -p ferry-bench
BIN="$PWD/target/release"
WORK=$(mktemp -d)
RELAY_PID=; SSHD_PID=
cleanup() {
  [ -n "$RELAY_PID" ] && kill "$RELAY_PID" 2>/dev/null || true
  [ -n "$SSHD_PID" ] && kill "$SSHD_PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
peak() { awk -F: '/Maximum resident set size/ {gsub(/ /, "", $2); printf "%.0f", $2/1024}' "$1"; }
wall() { awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$1"; }

echo "generating a ${SIZE_MIB} MiB file..."
"$BIN/gen" "$WORK/big.img" $((SIZE_MIB << 20)) 7

# ferry: relay and endpoint on loopback.
"$BIN/ferry-relay" --data "$WORK/relay" init --listen 127.0.0.1:0 --pair-listen 127.0.0.1:0 >/dev/null
"$BIN/ferry-relay" --data "$WORK/relay" serve 2>"$WORK/relay.log" &
RELAY_PID=$!
for _ in $(seq 1 200); do [ -s "$WORK/relay/run/listen.json" ] && break; sleep 0.05; done
PAIR=$(grep -o '"pairing":"[^"]*"' "$WORK/relay/run/listen.json" | cut -d'"' -f4)
CODE=$("$BIN/ferry-relay" --data "$WORK/relay" pair --name bench --json | grep -o '"code":"[^"]*"' | cut -d'"' -f4)
"$BIN/ferry" --state "$WORK/ep" pair --relay "$PAIR" --code "$CODE" >/dev/null
/usr/bin/time -v -o "$WORK/t-backup" "$BIN/ferry" --state "$WORK/ep" backup --json "$WORK/big.img" > "$WORK/backup.json"
RELAY_AFTER_BACKUP=$(awk '/VmHWM/ {printf "%.0f", $2/1024}' /proc/$RELAY_PID/status)
/usr/bin/time -v -o "$WORK/t-restore" "$BIN/ferry" --state "$WORK/ep" restore --json --map-from "$WORK" --map-to "$WORK/restored" > "$WORK/restore.json"
RELAY_PEAK=$(awk '/VmHWM/ {printf "%.0f", $2/1024}' /proc/$RELAY_PID/status)
cmp "$WORK/big.img" "$WORK/restored/big.img"
rm -f "$WORK/restored/big.img"

# rsync over ssh: a throwaway sshd on 127.0.0.1.
mkdir -p "$WORK/ssh" /run/sshd
ssh-keygen -q -t ed25519 -N '' -f "$WORK/ssh/host" <<<y >/dev/null
ssh-keygen -q -t ed25519 -N '' -f "$WORK/ssh/user" <<<y >/dev/null
cp "$WORK/ssh/user.pub" "$WORK/ssh/authorized_keys"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$WORK/ssh/sshd_config" <<CFG
Port $PORT
ListenAddress 127.0.0.1
HostKey $WORK/ssh/host
AuthorizedKeysFile $WORK/ssh/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
StrictModes no
UsePAM no
PidFile $WORK/ssh/sshd.pid
CFG
/usr/sbin/sshd -f "$WORK/ssh/sshd_config" -D -e 2>"$WORK/ssh/log" &
SSHD_PID=$!
SSH="ssh -p $PORT -i $WORK/ssh/user -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR"
for _ in $(seq 1 100); do $SSH 127.0.0.1 true 2>/dev/null && break; sleep 0.1; done
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
