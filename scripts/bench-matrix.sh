#!/usr/bin/env bash
# The benchmark matrix for a machine with many cores: the hot account and the load over
# 10,000 accounts, single requests and batches, one way and both, one broker and one
# instance per bank or two of each. With THREADS_PY naming a per-thread CPU sampler (a
# script that prints each txbank thread's CPU over N seconds, given N), each run is
# sampled in its middle. Writes each run's JSON report, summary and sample into OUT_DIR.
# Usage: [THREADS_PY=threads.py] scripts/bench-matrix.sh OUT_DIR [TXBANK_LAB_BINARY] [SECONDS]
set -u
out=${1:?usage: scripts/bench-matrix.sh OUT_DIR [TXBANK_LAB_BINARY] [SECONDS]}
txbank=${2:-target/release/txbank-lab}
seconds=${3:-20}
threads=${THREADS_PY:-}
mkdir -p "$out"
ulimit -n 65536 2>/dev/null || true
echo "cores $(nproc)"
run() {
  local name=$1; shift
  echo "=== $name: $*"
  if [ -n "$threads" ] && [ -f "$threads" ]; then
    (sleep $((seconds / 2 + 10)); python3 "$threads" 4 > "$out/$name.threads" 2>&1) &
  fi
  timeout $((seconds + 150)) "$txbank" bench --reference-seconds 2 --duration "$seconds" \
    --out "$out/$name.json" "$@" > "$out/$name.txt" 2>&1
  echo "exit $?"
  wait
  grep -vE "INFO|WARN" "$out/$name.txt" | grep -E "^(load| {10,}in|[0-9]+ s at|credited in|\(a\)|\(b\)|CPU per|\(c\)|group commits|SQLite writer|HTTP|debit|audit)"
}
run c512-hot --concurrency 512
run c512-spread --concurrency 512 --accounts 10000
run c1024-spread-b2 --concurrency 1024 --accounts 10000 --brokers 2
run c512-spread-b2-i2 --concurrency 512 --accounts 10000 --brokers 2 --instances 2
run c64-batch200-spread --concurrency 64 --batch 200 --accounts 10000
run c512-both-ways --concurrency 512 --accounts 10000 --both-ways
