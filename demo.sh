#!/usr/bin/env bash
# ferry demo: a relay and an endpoint on loopback, in a temporary directory.
# Builds the release binaries, then: init a relay, pair an endpoint with a
# one-time code, open an encrypted session, and show what each side printed.
set -euo pipefail
cd "$(dirname "$0")"

if [ -n "${FERRY_BIN:-}" ]; then
  # Binaries built already (tests/tests/readme.rs runs the demo on the suite's).
  BIN=$(cd "$FERRY_BIN" && pwd)
else
  echo "== building ferry-relay and ferry (release)"
  cargo build --release --quiet -p ferry-relay -p ferry-endpoint
  BIN="$PWD/target/release"
fi
WORK=$(mktemp -d)
RELAY_PID=
cleanup() {
  [ -n "$RELAY_PID" ] && kill "$RELAY_PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
json_field() { grep -o "\"$1\":\"[^\"]*\"" | head -n1 | cut -d'"' -f4; }
run() { echo "\$ $*" | sed "s#$BIN/##g; s#$WORK#\$DEMO#g"; "$@"; }

echo
echo "== 1. the relay: create its key, config and catalog, then serve"
run "$BIN/ferry-relay" --data "$WORK/relay" init --listen 127.0.0.1:0 --pair-listen 127.0.0.1:0
"$BIN/ferry-relay" --data "$WORK/relay" serve --web 127.0.0.1:0 2> "$WORK/relay.log" &
RELAY_PID=$!
for _ in $(seq 1 200); do [ -s "$WORK/relay/run/listen.json" ] && break; sleep 0.05; done
PAIR_ADDR=$(json_field pairing < "$WORK/relay/run/listen.json")
WEB_ADDR=$(json_field web < "$WORK/relay/run/listen.json")
echo "relay is serving: $(cat "$WORK/relay/run/listen.json")"

echo
echo "== 2. the operator creates a one-time pairing code (the relay waits for the endpoint)"
"$BIN/ferry-relay" --data "$WORK/relay" pair --name demo-laptop > "$WORK/pair.out" &
PAIR_PID=$!
for _ in $(seq 1 200); do grep -q "pairing code" "$WORK/pair.out" 2>/dev/null && break; sleep 0.05; done
sed -n 1,3p "$WORK/pair.out"
CODE=$(sed -n 's/.*: \([0-9]*-[0-9]*-[0-9]*\) .*/\1/p' "$WORK/pair.out" | head -n1)

echo
echo "== 3. the endpoint pairs over the LAN (SPAKE2 on the code, then Noise_XXpsk3), sealed: the relay will hold nothing it can read"
run "$BIN/ferry" --state "$WORK/endpoint" pair --relay "$PAIR_ADDR" --code "$CODE"
wait "$PAIR_PID"
echo "-- the relay side printed:"
tail -n1 "$WORK/pair.out"

echo
echo "== 4. a session from anywhere (Noise_IK): who answered, where, how fast"
run "$BIN/ferry" --state "$WORK/endpoint" status

echo
echo "== 5. back up a directory (a 32 MiB file and some text)"
mkdir -p "$WORK/data/docs"
head -c $((32 << 20)) /dev/urandom > "$WORK/data/disk.img"
for i in $(seq 1 50); do echo "note $i: ferry moves only what changed" > "$WORK/data/docs/note-$i.txt"; done
run "$BIN/ferry" --state "$WORK/endpoint" backup "$WORK/data"

echo
echo "== 6. change 4 KiB in the middle of the big file and one note, back up again: only the change crosses"
head -c 4096 /dev/urandom | dd of="$WORK/data/disk.img" bs=4096 seek=4000 conv=notrunc status=none
echo "edited" >> "$WORK/data/docs/note-7.txt"
run "$BIN/ferry" --state "$WORK/endpoint" backup "$WORK/data"

echo
echo "== 7. restore the last snapshot into an empty directory"
run "$BIN/ferry" --state "$WORK/endpoint" restore --map-from "$WORK/data" --map-to "$WORK/restored"
diff -r "$WORK/data" "$WORK/restored" && echo "restored tree is identical to the source"

echo
echo "== 8. restore the first snapshot over it: files changed since are kept (a local edit is never"
echo "      overwritten unless asked), then rolled back with --overwrite if-changed; unchanged ones are skipped"
run "$BIN/ferry" --state "$WORK/endpoint" restore -b 1 --map-from "$WORK/data" --map-to "$WORK/restored"
run "$BIN/ferry" --state "$WORK/endpoint" restore -b 1 --map-from "$WORK/data" --map-to "$WORK/restored" --overwrite if-changed
run "$BIN/ferry" --state "$WORK/endpoint" snapshots

echo
echo "== 9. the relay's view, and a check of every stored byte"
run "$BIN/ferry-relay" --data "$WORK/relay" clients list
run "$BIN/ferry-relay" --data "$WORK/relay" snapshots list
run "$BIN/ferry-relay" --data "$WORK/relay" verify
echo "\$ curl -s http://$WEB_ADDR/metrics | grep demo-laptop   # the status page: http://$WEB_ADDR/"
fetch() { # URL (curl, or python3 where curl is missing)
  if command -v curl >/dev/null; then curl -s "$1"; else
    python3 -c 'import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1]).read().decode())' "$1"; fi
}
fetch "http://$WEB_ADDR/metrics" | grep 'demo-laptop' || true

echo
echo "== 10. the relay's log (each session: bytes in and out), then a clean stop"
kill -TERM "$RELAY_PID"; wait "$RELAY_PID" || true; RELAY_PID=
sed 's/^[^ ]* *//' "$WORK/relay.log"
echo
echo "demo done."
