#!/usr/bin/env bash
# How fast one worker drains a queue, apart from how fast the gateway accepts:
#  1. with no worker running, JOBS requests of /heavy?n=N at -c 100 (offload load -a): accepted/s;
#  2. then one `offload worker` (defaults: concurrency = cores) drains them: jobs/s, from its
#     start until /jobs counts every job done; its claim and completion calls are in its report.
# Everything (gateway, worker, the store) shares this machine's cores; the load generator is
# idle during the drain. The SQLite file is fresh per run; Redis and Postgres runs use their
# own --queue-name.
# Usage: scripts/queue-drain.sh QUEUE_URL [N] [JOBS]
#   e.g. scripts/queue-drain.sh sqlite:///tmp/drain.db 200000 30000
#        scripts/queue-drain.sh postgres://postgres@127.0.0.1:5432/test 20000000 1000
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${BIN:-${CARGO_TARGET_DIR:-target}/release/offload}
[ -x "$bin" ] || cargo build --release -q
url=$1; n=${2:-200000}; jobs=${3:-30000}
name=drain-$RANDOM$RANDOM
tmp=$(mktemp -d)
case $url in sqlite://*) url="sqlite://$tmp/queue.db" ;; esac
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT

"$bin" serve --strategy queue --port 0 --queue "$url" --queue-name "$name" --max-backlog $((jobs * 2)) >"$tmp/gw.log" 2>/dev/null &
pids+=($!)
for _ in $(seq 200); do grep -q 'listening on' "$tmp/gw.log" && break; sleep 0.05; done
addr=$(grep -o 'http://[0-9.:]*' "$tmp/gw.log" | head -1)
[ -n "$addr" ] || { echo "the gateway did not start" >&2; exit 1; }

"$bin" load "$addr/heavy?n=$n" -c 100 -a "$jobs" --json --no-progress >"$tmp/accept.json"
python3 - "$tmp/accept.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1])); q = r["requests"]; ok = q["by_status"].get("202", 0)
print(f"accepted: {ok} of {q['sent']} answered 202 in {r['elapsed_s']:.2f}s = {ok / r['elapsed_s']:.0f}/s (non-2xx {q['non_2xx']}, errors {q['errors']})")
EOF

finished() { curl -s "$addr/jobs" | python3 -c 'import json,sys; c=json.load(sys.stdin)["counts"]; print(c["done"]+c["failed"])'; }
t0=$(date +%s.%N)
"$bin" worker --queue "$url" --queue-name "$name" >/dev/null 2>"$tmp/worker.log" &
worker=$!; pids+=("$worker")
while [ "$(finished)" -lt "$jobs" ]; do sleep 0.2; done
t1=$(date +%s.%N)
python3 -c "print(f'drained: $jobs jobs of count n=$n in {$t1 - $t0:.2f}s = {$jobs / ($t1 - $t0):.0f} jobs/s (worker start included)')"
kill -TERM "$worker"; wait "$worker" 2>/dev/null || true
grep -o 'report=WorkerReport {[^}]*}' "$tmp/worker.log" | tail -1 || true
