#!/usr/bin/env bash
# Compares `offload load` with wrk on a trivial endpoint, both tools in the same run.
#
# Starts examples/health_server (axum, GET /health -> "ok") on a loopback port, then runs
# each tool REPEATS times (alternating which goes first) with the same connections and
# duration, and prints every run and the medians: req/s and p50 latency, and the ratios.
#
# Usage: scripts/load-vs-wrk.sh            (env: CONNECTIONS=100 DURATION=10 REPEATS=3
#                                          PORT=3901 WRK_THREADS=<cores> SERVER_THREADS=<cores>
#                                          TARGET=health_server|gateway)
# TARGET=gateway loads /health of an offload gateway (`offload serve --strategy pool`) instead.
# Needs: wrk (Debian package `wrk`), python3 (to read JSON), cargo.
set -euo pipefail

cd "$(dirname "$0")/.."
CONNECTIONS=${CONNECTIONS:-100}
DURATION=${DURATION:-10}
REPEATS=${REPEATS:-3}
PORT=${PORT:-3901}
CORES=$(nproc)
WRK_THREADS=${WRK_THREADS:-$CORES}
SERVER_THREADS=${SERVER_THREADS:-$CORES}
URL="http://127.0.0.1:${PORT}/health"

command -v wrk >/dev/null || { echo "wrk not found: apt-get install -y wrk" >&2; exit 1; }
# The load-bench profile is release with fat LTO (see Cargo.toml): wrk is C built with -O2;
# the generator's CPU per request is what the server loses, so build it as well as we can.
cargo build --profile load-bench --quiet --bin offload --example health_server
BIN=target/load-bench/offload
SERVER=target/load-bench/examples/health_server
TARGET=${TARGET:-health_server}

if [[ $TARGET == gateway ]]; then
  "$BIN" serve --strategy pool --port "$PORT" --runtime-threads "$SERVER_THREADS" >/dev/null 2>&1 &
else
  "$SERVER" "$PORT" "$SERVER_THREADS" 2>/dev/null &
fi
SERVER_PID=$!
trap 'kill "$SERVER_PID" 2>/dev/null || true' EXIT
for _ in $(seq 50); do
  curl -fsS "$URL" >/dev/null 2>&1 && break
  (exec 3<>"/dev/tcp/127.0.0.1/${PORT}") 2>/dev/null && break
  sleep 0.1
done

# wrk prints latency with a unit (us, ms, s); convert to ms.
to_ms() {
  python3 -c 'import re,sys
v=sys.argv[1]; m=re.fullmatch(r"([0-9.]+)(us|ms|s)", v)
n,u=float(m[1]),m[2]; print(round(n/1000 if u=="us" else n*1000 if u=="s" else n, 3))' "$1"
}

run_wrk() {
  local out; out=$(wrk -t"$WRK_THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency "$URL")
  local rps p50 avg
  rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
  p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
  avg=$(awk '$1 == "Latency" {print $2; exit}' <<<"$out")
  echo "$rps $(to_ms "$p50") $(to_ms "$avg")"
}

run_offload() {
  "$BIN" load "$URL" -c "$CONNECTIONS" -d "$DURATION" --json |
    python3 -c 'import json,sys; r=json.load(sys.stdin)
assert r["requests"]["errors"] == 0 and r["requests"]["timeouts"] == 0, r["requests"]
print(round(r["requests"]["throughput"], 1), r["latency"]["p50"], round(r["latency"]["avg"], 3))'
}

echo "$(date -u +%FT%TZ) $(uname -sr); $(rustc -V); $(wrk -v 2>&1 | head -1 | cut -d' ' -f1-2)"
echo "target $URL ($TARGET, $SERVER_THREADS threads); $CORES cores; load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "wrk -t$WRK_THREADS -c$CONNECTIONS -d${DURATION}s --latency"
echo "$BIN load -c $CONNECTIONS -d $DURATION --json   (one event-loop thread per core)"
# Little's law: with every connection always busy, mean latency = connections / throughput.
# The last column is that figure, a check that each tool's own mean latency is consistent.
printf '%-4s %-8s %12s %10s %10s %14s\n' run tool 'req/s' 'p50 ms' 'avg ms' 'c/(req/s) ms'
wrk_rps=(); wrk_p50=(); off_rps=(); off_p50=()
for i in $(seq "$REPEATS"); do
  order=(wrk offload); (( i % 2 == 0 )) && order=(offload wrk)
  for tool in "${order[@]}"; do
    sleep 1 # let TIME_WAIT sockets and the scheduler settle between runs
    if [[ $tool == wrk ]]; then read -r rps p50 avg < <(run_wrk); wrk_rps+=("$rps"); wrk_p50+=("$p50")
    else read -r rps p50 avg < <(run_offload); off_rps+=("$rps"); off_p50+=("$p50"); fi
    little=$(python3 -c "print(round($CONNECTIONS / $rps * 1000, 3))")
    printf '%-4s %-8s %12s %10s %10s %14s\n' "$i" "$tool" "$rps" "$p50" "$avg" "$little"
  done
done

echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "${wrk_rps[*]}" "${wrk_p50[*]}" "${off_rps[*]}" "${off_p50[*]}" <<'PY'
import statistics as st, sys
w_rps, w_p50, o_rps, o_p50 = ([float(x) for x in a.split()] for a in sys.argv[1:5])
m = {k: st.median(v) for k, v in dict(w_rps=w_rps, w_p50=w_p50, o_rps=o_rps, o_p50=o_p50).items()}
print()
print(f"median req/s: offload load {m['o_rps']:.0f}, wrk {m['w_rps']:.0f}, "
      f"ratio {m['o_rps'] / m['w_rps']:.2f}x (goal >= 0.90x)")
print(f"median p50:   offload load {m['o_p50']:.3f} ms, wrk {m['w_p50']:.3f} ms, "
      f"difference {100 * (m['o_p50'] / m['w_p50'] - 1):+.1f}% (goal within 10%)")
PY
