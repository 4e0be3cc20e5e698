#!/usr/bin/env bash
# Runs ferry's benchmarks with release builds. Issue 2: session throughput
# against raw snow, and handshakes per second of a real relay.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet -p ferry-relay -p ferry-endpoint -p ferry-bench
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
target/release/session --relay-bin target/release/ferry-relay --endpoint-bin target/release/ferry
