#!/usr/bin/env bash
# Issue 13: 50 paired clients each push 10^6 tiny chunks without a Sync;
# prints how the relay ended each and its peak RSS (target: under 512 MiB).
# Usage: bench/flood.sh [CLIENTS] [ENTRIES]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet -p ferry-relay -p ferry-endpoint -p ferry-bench
target/release/flood --relay-bin target/release/ferry-relay --endpoint-bin target/release/ferry \
  --clients "${1:-50}" --entries "${2:-1000000}"
