#!/usr/bin/env bash
# Runs `txbank bench` for SECONDS (default 600) at CONCURRENCY (default 8) and prints the
# resident memory (VmRSS, MiB) of each bank and of the broker every 30 s, to show whether
# memory grows over a long run. Usage: scripts/memory-run.sh [SECONDS] [CONCURRENCY]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-600}"
concurrency="${2:-8}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/tmp/txbank-target}"
cargo build --release -q
dir="$(mktemp -d)"
"$CARGO_TARGET_DIR/release/txbank" bench --duration "$seconds" --concurrency "$concurrency" \
  --reference-seconds 1 --data-dir "$dir/run" --out "$dir/report.json" >"$dir/bench.out" 2>/dev/null &
bench=$!
rss() { awk '/VmRSS/ {printf "%.1f", $2 / 1024}' "/proc/$1/status" 2>/dev/null || echo "-"; }
echo "second bank1 bank2 broker (VmRSS MiB)"
for ((t = 30; t <= seconds + 30; t += 30)); do
  sleep 30
  kill -0 "$bench" 2>/dev/null || break
  echo "$t $(rss "$(pgrep -f 'bank --preset bank1' | head -1)") $(rss "$(pgrep -f 'bank --preset bank2' | head -1)") $(rss "$(pgrep -f 'txbank broker' | head -1)")"
done
wait "$bench" || true
tail -12 "$dir/bench.out"
echo "report: $dir/report.json"
