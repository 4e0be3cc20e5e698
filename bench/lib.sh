# Shared by the benchmark scripts: peers, a throwaway sshd, a ferry relay.
# Source it after `set -euo pipefail` from the repository root, then call
# `bench_setup`.

# Builds the release binaries (BIN), makes a work dir (WORK), installs the
# peers and removes everything (relay, sshd, WORK) on exit.
bench_setup() {
  cargo build --release --quiet -p ferry-relay -p ferry-endpoint -p ferry-bench
  BIN="$PWD/target/release"
  WORK=$(mktemp -d)
  RELAY_PID=; SSHD_PID=
  trap bench_cleanup EXIT
  install_peers
}

bench_cleanup() {
  stop_relay
  for pid in "${LINK_PIDS[@]:-}"; do [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; done
  [ -n "${SSHD_PID:-}" ] && kill "$SSHD_PID" 2>/dev/null || true
  rm -rf "$WORK"
}

install_peers() {
  local need=()
  command -v rsync >/dev/null || need+=(rsync)
  [ -x /usr/sbin/sshd ] || need+=(openssh-server)
  command -v ssh-keygen >/dev/null || need+=(openssh-client)
  [ -x /usr/bin/time ] || need+=(time)
  command -v bc >/dev/null || need+=(bc)
  if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Starts sshd on 127.0.0.1 with keys and config under $WORK/ssh; sets SSH and SSHD_PID.
start_sshd() {
  mkdir -p "$WORK/ssh" /run/sshd
  ssh-keygen -q -t ed25519 -N '' -f "$WORK/ssh/host" <<<y >/dev/null
  ssh-keygen -q -t ed25519 -N '' -f "$WORK/ssh/user" <<<y >/dev/null
  cp "$WORK/ssh/user.pub" "$WORK/ssh/authorized_keys"
  local port; port=$(free_port)
  SSHD_PORT=$port
  cat > "$WORK/ssh/sshd_config" <<CFG
Port $port
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
  SSH="ssh -p $port -i $WORK/ssh/user -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR"
  for _ in $(seq 1 100); do $SSH 127.0.0.1 true 2>/dev/null && return 0; sleep 0.1; done
  echo "sshd did not start" >&2; return 1
}

# Creates a relay in $1 on fixed free ports (so it can be restarted).
init_relay() {
  "$BIN/ferry-relay" --data "$1" init --listen "127.0.0.1:$(free_port)" --pair-listen "127.0.0.1:$(free_port)" >/dev/null
}

# Starts the relay in $1; sets RELAY_PID.
start_relay() {
  rm -f "$1/run/listen.json"
  "$BIN/ferry-relay" --data "$1" serve 2>>"$1.log" &
  RELAY_PID=$!
  for _ in $(seq 1 200); do [ -s "$1/run/listen.json" ] && return 0; sleep 0.05; done
  echo "relay did not start: $(tail -3 "$1.log")" >&2; return 1
}

# The session address of the running relay in $1.
session_addr() {
  grep -o '"session":"[^"]*"' "$1/run/listen.json" | cut -d'"' -f4
}

stop_relay() {
  [ -n "${RELAY_PID:-}" ] && kill "$RELAY_PID" 2>/dev/null && wait "$RELAY_PID" 2>/dev/null || true
  RELAY_PID=
}

# Pairs endpoint state $2 with the running relay in $1 as client $3, in
# mode $4: open (the default here, as the figures before sealed mode were
# taken) or sealed.
pair_endpoint() {
  local pair code mode=()
  [ "${4:-open}" = open ] && mode=(--open)
  pair=$(grep -o '"pairing":"[^"]*"' "$1/run/listen.json" | cut -d'"' -f4)
  code=$("$BIN/ferry-relay" --data "$1" pair --name "$3" --json | grep -o '"code":"[^"]*"' | cut -d'"' -f4)
  "$BIN/ferry" --state "$2" pair --relay "$pair" --code "$code" "${mode[@]}" >/dev/null
}

# Peak RSS in MiB and wall seconds from a `/usr/bin/time -v` report.
peak_mib() { awk -F: '/Maximum resident set size/ {gsub(/ /, "", $2); printf "%.0f", $2/1024}' "$1"; }
wall_s() {
  awk -F': ' '/Elapsed \(wall clock\)/ { n = split($2, p, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + p[i]; printf "%.2f", s }' "$1"
}

# The shape of link profile $LINK: LINK_ARGS for bench/src/bin/link.rs, and
# LINK_UP / LINK_DOWN (bytes/s) and LINK_RTT (s) for the physical bound.
link_profile() {
  case "$LINK" in
    road) LINK_ARGS=(--rtt 60ms --up 10Mbit --down 50Mbit); LINK_UP=1250000; LINK_DOWN=6250000; LINK_RTT=0.06 ;;
    hotel) LINK_ARGS=(--rtt 200ms --up 2Mbit --down 8Mbit); LINK_UP=250000; LINK_DOWN=1000000; LINK_RTT=0.2 ;;
    office) LINK_ARGS=(--rtt 20ms --up 100Mbit --down 100Mbit); LINK_UP=12500000; LINK_DOWN=12500000; LINK_RTT=0.02 ;;
    *) echo "unknown link profile ${LINK:-} (road, hotel, office)" >&2; return 1 ;;
  esac
}

# Starts an emulated link (profile $LINK) in front of 127.0.0.1:$1; sets
# LINK_PORT. "Up" is from the connecting side (the endpoint, rsync's client).
LINK_PIDS=()
start_link() {
  link_profile
  rm -f "$WORK/link.$1"
  "$BIN/link" --to "127.0.0.1:$1" "${LINK_ARGS[@]}" > "$WORK/link.$1" &
  LINK_PIDS+=($!)
  for _ in $(seq 1 100); do [ -s "$WORK/link.$1" ] && break; sleep 0.05; done
  LINK_PORT=$(head -n1 "$WORK/link.$1")
}

# CPU seconds processes PIDS... have used so far (user + system, with
# their waited-for children), from /proc: `cpu_s PID...`.
cpu_s() {
  local ticks=0 p
  for p in "$@"; do
    [ -r "/proc/$p/stat" ] && ticks=$((ticks + $(awk '{print $14 + $15 + $16 + $17}' "/proc/$p/stat")))
  done
  echo "$ticks / $(getconf CLK_TCK)" | bc -l
}

# Timings by name: `record NAME "$(seconds CMD…)"` in each run, then
# `med NAME` for the median of the runs.
seconds() {
  local start; start=$(date +%s.%N)
  "$@" >/dev/null
  echo "$(date +%s.%N) - $start" | bc
}
median() { sort -n | awk '{ v[NR] = $1 } END { printf "%.2f", (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
declare -A T
record() { T[$1]="${T[$1]:-} $2"; }
med() { tr ' ' '\n' <<<"${T[$1]}" | grep . | median; }
