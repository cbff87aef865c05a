#!/usr/bin/env bash
# The README's `cargo test` as CI runs it (Redis, Postgres, network namespaces, Chromium and
# Node required; see docs/testing.md), optionally on a busy machine: `nice -n 10` beside a busy loop pinned to CPU 1.
#   scripts/test-under-load.sh LOG [busy]
# Writes cargo's output to LOG and ends it with `rc=N secs=S`. Run it on a fresh clone.
set -uo pipefail
cd "$(dirname "$0")/.."
log=${1:?usage: scripts/test-under-load.sh LOG [busy]}
export REDIS_URL=redis://127.0.0.1:6379 OFFLOAD_REQUIRE_REDIS=1
export POSTGRES_URL=postgres://postgres@127.0.0.1:5432/test OFFLOAD_REQUIRE_POSTGRES=1
export OFFLOAD_REQUIRE_NETNS=1 OFFLOAD_REQUIRE_CHROMIUM=1 OFFLOAD_REQUIRE_NODE=1 CI=true
busy=""
if [ "${2:-}" = busy ]; then
  taskset -c 1 sh -c 'while :; do :; done' &
  busy=$!
  trap 'kill $busy 2>/dev/null' EXIT
fi
start=$(date +%s)
if [ -n "$busy" ]; then nice -n 10 cargo test --no-fail-fast >"$log" 2>&1; else cargo test --no-fail-fast >"$log" 2>&1; fi
rc=$?
echo "rc=$rc secs=$(( $(date +%s) - start ))" >>"$log"
grep "test result" "$log" | awk '{p+=$4; f+=$6; i+=$8} END {print "passed", p, "failed", f, "ignored", i}'
exit $rc
