#!/bin/bash
# Where the CPU goes under a queue flood: runs `serve --strategy queue` and a `worker` on one
# SQLite file under a closed loop (-c ${C:-100}), and after 10 s of load reads, over the next
# 10 s, each thread's CPU ticks and context switches (/proc/<pid>/task/*) of both processes,
# and the jobs done. Needs a release build; run it with nothing else busy.
# Usage: scripts/queue-threads.sh   (C=1000 for a thousand connections)
set -u
O=${OFFLOAD:-target/release/offload}
DB=$(mktemp -d)/q.db
threads() {
    for t in /proc/$1/task/*; do
        printf '%s cpu=%s switches=%s\n' "$(cat "$t/comm")" "$(awk '{print $14+$15}' "$t/stat")" \
            "$(awk '/ctxt_switches/{s+=$2} END{print s}' "$t/status")"
    done
}
"$O" serve --strategy queue --queue "sqlite://$DB" --port 3972 --timeout 10s > /dev/null 2>&1 &
S=$!
"$O" worker --queue "sqlite://$DB" > /dev/null 2>&1 &
W=$!
trap 'kill $S $W 2>/dev/null; rm -rf "$(dirname "$DB")"' EXIT
sleep 1
"$O" load -c "${C:-100}" -d 20 --warmup 5 'http://127.0.0.1:3972/heavy' > /dev/null 2>&1 &
L=$!
sleep 10
threads $S > /tmp/qt-gateway-0; threads $W > /tmp/qt-worker-0
d0=$(sqlite3 "$DB" "select done from qmeta")
sleep 10
threads $S > /tmp/qt-gateway-1; threads $W > /tmp/qt-worker-1
d1=$(sqlite3 "$DB" "select done from qmeta")
wait $L
echo "jobs done in 10 s: $((d1 - d0))"
echo "gateway threads (before | after 10 s):"; paste /tmp/qt-gateway-0 /tmp/qt-gateway-1
echo "worker threads (before | after 10 s):"; paste /tmp/qt-worker-0 /tmp/qt-worker-1
