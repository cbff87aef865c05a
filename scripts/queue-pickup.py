#!/usr/bin/env python3
"""Idle pickup: one queue gateway and one worker on QUEUE_URL; N jobs (count n=1000) sent one at a
time with 0.2-0.5 s pauses, so the worker is idle each time; prints started_at - enqueued_at
(ms, as the job view gives them: 1 ms resolution) at p50 / p99 / max.

Usage: python3 scripts/queue-pickup.py QUEUE_URL [N]   (needs cargo build --release)
"""
import json, os, random, subprocess, sys, time, urllib.request

B = os.environ.get("BIN", os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "target", "release", "offload"))
url = sys.argv[1]; n = int(sys.argv[2]) if len(sys.argv) > 2 else 50
name = "pk%d" % random.randint(0, 10**9)
gw = subprocess.Popen([B, "serve", "--strategy", "queue", "--port", "0", "--queue", url, "--queue-name", name], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
addr = gw.stdout.readline().split("http://")[1].split()[0]
w = subprocess.Popen([B, "worker", "--queue", url, "--queue-name", name], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
time.sleep(1.5)
lat = []
for i in range(n):
    r = urllib.request.urlopen(f"http://{addr}/heavy?n=1000")
    jid = json.loads(r.read())["id"]
    while True:
        j = json.loads(urllib.request.urlopen(f"http://{addr}/jobs/{jid}").read())
        if j["status"] == "done": break
        time.sleep(0.005)
    lat.append(j["started_at"] - j["enqueued_at"])
    time.sleep(0.2 + random.random() * 0.3)  # idle gaps so the worker is waiting
w.terminate(); gw.terminate(); w.wait(); gw.wait()
lat.sort()
print(f"{url.split(':')[0]}: pickup (started_at - enqueued_at, ms) over {n}: p50 {lat[len(lat)//2]} p99 {lat[min(len(lat)-1, int(len(lat)*0.99))]} max {lat[-1]}")
