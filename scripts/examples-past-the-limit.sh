#!/usr/bin/env bash
# The two examples past their limit, as docs/embedding.md reports them: closed
# loops that resend every answer at once (offload load ignores Retry-After unless told).
#   - crates/pool/examples/axum.rs: GET /count?n=200000000, 4, 200, then 4 connections, 8 s each;
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

started() { # the example we started still runs: not another process on its port
  sleep "$2"
  kill -0 "$1" 2>/dev/null || { echo "the example did not start (port taken?):" >&2; cat "$3" >&2; exit 1; }
}
"$bin/examples/axum" 127.0.0.1:3111 >"$tmp/axum.log" 2>&1 &
pids+=($!)
started $! 0.5 "$tmp/axum.log"
# -c 4 before and after the flood: the loop's speed wanders (see docs/embedding.md), so the flood is
# compared with the slower of the two, as tests/it/past_the_limit.rs does.
for c in 4 200 4; do
  "$bin/offload" load -c "$c" -d 8s --timeout 30s --json "http://127.0.0.1:3111/count?n=200000000" >"$tmp/pool-$c.json"
  echo "pool example, -c $c, 8 s: $(summary "$tmp/pool-$c.json")"
done

"$bin/examples/auto" 127.0.0.1:3112 "$tmp/jobs.db" >"$tmp/auto.log" 2>&1 &
pids+=($!)
started $! 1 "$tmp/auto.log"
"$bin/offload" load -c 1000 -d 8s --timeout 60s --json -m POST -H 'content-type: application/json' \
  -b '{"below":300000}' http://127.0.0.1:3112/collatz >"$tmp/auto.json"
echo "auto example, -c 1000, 8 s: $(summary "$tmp/auto.json")"
