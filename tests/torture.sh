#!/usr/bin/env bash
# The full torture suite (the README's figures): release binaries, many
# iterations, one test at a time. Needs root for the tmpfs of the disk-full
# test. Takes about half an hour on 2 cores.
# Usage: tests/torture.sh [TEST_NAME_FILTER]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet -p ferry-relay -p ferry-endpoint
FERRY_TORTURE=full cargo test --release -p ferry-tests --test torture -- \
  --nocapture --test-threads 1 "$@" 2>&1 | grep -E '^(figure|test |thread)|panicked'
