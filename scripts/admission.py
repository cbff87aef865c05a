#!/usr/bin/env python3
"""The seed's load (`GET /heavy`, closed loop) against pool and remote set-ups, with a light
open-loop probe of /health beside it. Set-ups run in turns, round after round, so a slow
minute of a shared machine hits every set-up alike; req/s counts every 2xx that arrived in the window (answered_2xx_per_s). The table gives medians and the spread
(min-max) over the rounds, and each set-up's req/s as a ratio to the default pool's in the
same round.

Usage: python3 scripts/admission.py [--rounds 3] [--only LABEL,...] [-c 100|1000] [--c100-secs 10] [--c1000-secs 15]
Needs a release build: cargo build --release.
"""

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "offload")
CORES = os.cpu_count() or 1

# label -> (gateway flags, compute flags or None, connections)
SETUPS = [
    ("pool", ["--strategy", "pool"], None, 100),
    (f"pool --split {CORES} (old default)", ["--strategy", "pool", "--split", str(CORES)], None, 100),
    ("pool --split 1", ["--strategy", "pool", "--split", "1"], None, 100),
    ("pool --nice 0 (old default)", ["--strategy", "pool", "--nice", "0"], None, 100),
    ("pool --threads 16", ["--strategy", "pool", "--threads", "16"], None, 100),
    ("pool --threads 16 --split 16 (old default)", ["--strategy", "pool", "--threads", "16", "--split", "16"], None, 100),
    ("remote", ["--strategy", "remote"], [], 100),
    ("remote, compute --max-inflight 4", ["--strategy", "remote"], ["--max-inflight", "4"], 100),
    ("pool", ["--strategy", "pool"], None, 1000),
    ("pool --threads 16", ["--strategy", "pool", "--threads", "16"], None, 1000),
    ("remote", ["--strategy", "remote"], [], 1000),
    ("remote, compute --max-inflight 4", ["--strategy", "remote"], ["--max-inflight", "4"], 1000),
]


def start(args):
    p = subprocess.Popen([BIN, *args, "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = p.stdout.readline()
    addr = line.split("listening on http://")[1].split()[0]
    for _ in range(100):
        try:
            urllib.request.urlopen(f"http://{addr}/health", timeout=1).read()
            return p, addr
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{args} did not come up")


def load(url, extra):
    out = subprocess.run([BIN, "load", url, "--json", "--no-progress", *extra], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def one(setup, secs, warm):
    label, gw, comp, conns = setup
    procs = []
    try:
        if comp is not None:
            c, caddr = start(["compute", *comp])
            procs.append(c)
            gw = [*gw, "--compute", f"http://{caddr}"]
            time.sleep(0.3)  # one health check: the gateway learns the capacity
        g, addr = start(["serve", *gw])
        procs.append(g)
        probe = subprocess.Popen(
            [BIN, "load", f"http://{addr}/health", "-R", "20", "-c", "4", "-d", str(secs), "--warmup", str(warm), "--json", "--no-progress"],
            stdout=subprocess.PIPE, text=True)
        heavy = load(f"http://{addr}/heavy", ["-c", str(conns), "-d", str(secs), "--warmup", str(warm), "-t", "60"])
        health = json.loads(probe.communicate()[0])
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
    q = heavy["requests"]
    return {
        "rps": q["answered_2xx_per_s"],
        "non2xx": q["non_2xx"],
        "errors": q["errors"] + q["timeouts"],
        "p50": heavy["latency"]["p50"],
        "p99": heavy["latency"]["p99"],
        "health_p99": health["latency_with_timeouts"]["p99"],
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", default="")
    ap.add_argument("-c", type=int, default=0, help="only the set-ups at this many connections")
    ap.add_argument("--c100-secs", type=float, default=10)
    ap.add_argument("--c1000-secs", type=float, default=15)
    a = ap.parse_args()
    setups = [s for s in SETUPS if (not a.only or s[0] in a.only.split(",")) and (not a.c or s[3] == a.c)]
    rows = {}
    for r in range(a.rounds):
        for s in setups:
            secs, warm = (a.c100_secs, 2) if s[3] <= 100 else (a.c1000_secs, 8)
            m = one(s, secs, warm)
            rows.setdefault((s[0], s[3]), []).append(m)
            print(f"round {r + 1}: {s[0]} -c {s[3]}: {m['rps']:.0f} req/s, {m['non2xx']} non-2xx, "
                  f"{m['errors']} errors/timeouts, p50 {m['p50']:.0f} ms, p99 {m['p99']:.0f} ms, "
                  f"/health p99 {m['health_p99']:.2f} ms", file=sys.stderr, flush=True)
    print(f"{CORES} cores; medians over {a.rounds} rounds, (min-max); ratio: req/s over the default pool's at the same -c in the same round")
    print("p50/p99 0 ms: no request both started and ended inside the window (latency longer than the window)")
    print(f"{'set-up':<44} {'-c':>5} {'req/s':>16} {'ratio':>6} {'non-2xx':>8} {'err':>4} {'p50 ms':>7} {'p99 ms':>7} {'p99/p50':>7} {'/health p99 ms':>20}")
    for (label, conns), ms in rows.items():
        base = rows.get(("pool", conns))
        ratios = [m["rps"] / b["rps"] for m, b in zip(ms, base)] if base else []
        med = lambda k: statistics.median(m[k] for m in ms)
        spread = lambda k, f: f"{med(k):{f}} ({min(m[k] for m in ms):{f}}-{max(m[k] for m in ms):{f}})"
        print(f"{label:<44} {conns:>5} {spread('rps', '.0f'):>16} {statistics.median(ratios) if ratios else float('nan'):>6.2f} "
              f"{sum(m['non2xx'] for m in ms):>8} {sum(m['errors'] for m in ms):>4} {med('p50'):>7.0f} {med('p99'):>7.0f} "
              f"{statistics.median(m['p99'] / m['p50'] if m['p50'] else float('nan') for m in ms):>7.2f} {spread('health_p99', '.2f'):>20}")


if __name__ == "__main__":
    main()
