#!/usr/bin/env bash
# The two examples past their limit, as README "Use it in your service" reports them: closed
# loops that resend every answer at once (offload load ignores Retry-After unless told).
#   - crates/pool/examples/axum.rs: GET /count?n=200000000, 4 then 200 connections, 8 s each;
#   - crates/axum/examples/auto.rs: POST /collatz {"below":300000}, 1,000 connections, 8 s.
# Release builds. Run it with nothing else on the machine. Ports 3111 and 3112 on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q --bin offload
cargo build --release -q -p offload-pool --example axum -p offload-axum --example auto
bin=${CARGO_TARGET_DIR:-target}/release
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$tmp"; }
trap cleanup EXIT

summary() { # the load report's answers by status, timeouts
  python3 -c 'import json,sys; q=json.load(open(sys.argv[1]))["requests"]; print("by status", q["by_status"], "timeouts", q["timeouts"])' "$1"
}

"$bin/examples/axum" 127.0.0.1:3111 >"$tmp/axum.log" 2>&1 &
pids+=($!)
sleep 0.5
for c in 4 200; do
  "$bin/offload" load -c "$c" -d 8s --timeout 30s --json "http://127.0.0.1:3111/count?n=200000000" >"$tmp/pool-$c.json"
  echo "pool example, -c $c, 8 s: $(summary "$tmp/pool-$c.json")"
done

"$bin/examples/auto" 127.0.0.1:3112 "$tmp/jobs.db" >"$tmp/auto.log" 2>&1 &
pids+=($!)
sleep 1
"$bin/offload" load -c 1000 -d 8s --timeout 60s --json -m POST -H 'content-type: application/json' \
  -b '{"below":300000}' http://127.0.0.1:3112/collatz >"$tmp/auto.json"
echo "auto example, -c 1000, 8 s: $(summary "$tmp/auto.json")"
