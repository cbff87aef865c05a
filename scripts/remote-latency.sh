#!/usr/bin/env bash
# What the network hop of `remote` adds at low load: one connection (-c 1) on /heavy with the
# default work, against a `pool` gateway and against a `remote` gateway with one compute
# service, REPEATS times each, alternating; prints p50/p99 and the median difference.
# Usage: scripts/remote-latency.sh   (env: REPEATS=3 DURATION=10)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q
bin=$PWD/target/release/offload
REPEATS=${REPEATS:-3}; DURATION=${DURATION:-10}
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done' EXIT
start() { # start ARGS...: prints the address the process listens on
  local out; out=$(mktemp)
  "$bin" "$@" --port 0 >"$out" 2>/dev/null &
  pids+=($!)
  for _ in $(seq 100); do grep -q 'listening on' "$out" && break; sleep 0.05; done
  sed -n 's/.*listening on http:\/\/\([^ ]*\).*/\1/p' "$out"
}
pool=$(start serve --strategy pool)
compute=$(start compute)
remote=$(start serve --strategy remote --compute "http://$compute")
measure() {
  "$bin" load "http://$1/heavy" -c 1 -d "$DURATION" --warmup 1 --json --no-progress |
    python3 -c 'import json,sys; r=json.load(sys.stdin); q=r["requests"]
assert q["errors"] == 0 and q["timeouts"] == 0 and q["non_2xx"] == 0, q
print(r["latency"]["p50"], r["latency"]["p99"], round(q["throughput"], 1))'
}
echo "$(date -u +%FT%TZ) $(nproc) cores; -c 1 -d $DURATION on /heavy (count 20,000,000)"
printf '%-4s %-7s %9s %9s %9s\n' run target 'p50 ms' 'p99 ms' 'req/s'
p50s_pool=(); p50s_remote=()
for i in $(seq "$REPEATS"); do
  for t in pool remote; do
    read -r p50 p99 rps < <(measure "${!t}")
    printf '%-4s %-7s %9s %9s %9s\n' "$i" "$t" "$p50" "$p99" "$rps"
    [[ $t == pool ]] && p50s_pool+=("$p50") || p50s_remote+=("$p50")
  done
done
python3 - "${p50s_pool[*]}" "${p50s_remote[*]}" <<'PY'
import statistics as st, sys
p, r = ([float(x) for x in a.split()] for a in sys.argv[1:3])
print(f"median p50: pool {st.median(p):.3f} ms, remote {st.median(r):.3f} ms, "
      f"remote adds {st.median(r) - st.median(p):+.3f} ms (goal < 0.5 ms)")
PY
