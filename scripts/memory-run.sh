#!/usr/bin/env bash
# Runs `txbank-lab bench` for SECONDS (default 600) at CONCURRENCY (default 8) and prints the
# resident memory (MiB) of each bank and of the broker every 30 s, to show whether memory
# grows over a long run: each bank's VmRSS, and its two parts, its own memory (RssAnon)
# and pages of files it maps (RssFile, mostly the txbank-lab binary's code). A run of more
# than ten minutes ends with how much each bank's own memory changed over its last ten,
# after the first minutes in which a bank's heaps grow to what it uses under the load.
# Usage: scripts/memory-run.sh [SECONDS] [CONCURRENCY]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-600}"
concurrency="${2:-8}"
cargo build --release -q -p txbank-lab
target="${CARGO_TARGET_DIR:-target}"
dir="$(mktemp -d)"
"$target/release/txbank-lab" bench --duration "$seconds" --concurrency "$concurrency" \
  --reference-seconds 1 --data-dir "$dir/run" --out "$dir/report.json" >"$dir/bench.out" 2>/dev/null &
bench=$!
# MiB of each named field of /proc/PID/status, joined by "/".
mib() {
  local pid=$1; shift
  awk -v want="$*" 'BEGIN { n = split(want, f, " ") } { v[$1] = $2 }
    END { for (i = 1; i <= n; i++) printf "%s%.1f", (i > 1 ? "/" : ""), v[f[i] ":"] / 1024 }' \
    "/proc/$pid/status" 2>/dev/null || echo "-"
}
bank() { mib "$(pgrep -f "bank --preset $1" | head -1)" VmRSS RssAnon RssFile; }
echo "second bank1 bank2 (VmRSS/RssAnon/RssFile MiB) broker (VmRSS MiB)"
declare -A own # "bank second" -> RssAnon MiB
last=0
for ((t = 30; t <= seconds + 30; t += 30)); do
  sleep 30
  kill -0 "$bench" 2>/dev/null || break
  one=$(bank bank1) two=$(bank bank2)
  own["bank1 $t"]=$(cut -d/ -f2 <<<"$one") own["bank2 $t"]=$(cut -d/ -f2 <<<"$two") last=$t
  echo "$t $one $two $(mib "$(pgrep -f 'txbank-lab broker' | head -1)" VmRSS)"
done
wait "$bench" || true
tail -12 "$dir/bench.out"
from=$((last - 600))
if ((from >= 30)); then
  for b in bank1 bank2; do
    awk -v b="$b" -v f="$from" -v l="$last" -v x="${own["$b $from"]}" -v y="${own["$b $last"]}" \
      'BEGIN { printf "%s own memory (RssAnon) from second %d to %d: %.1f -> %.1f MiB (%+.1f)\n", b, f, l, x, y, y - x }'
  done
fi
echo "report: $dir/report.json"
