#!/usr/bin/env python3
"""A light open-loop probe: GET a URL at a fixed rate over one keep-alive connection and
print latency percentiles measured from each request's scheduled send time.
Usage: probe.py URL RATE SECONDS"""
import http.client, sys, time, urllib.parse

url, rate, secs = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
u = urllib.parse.urlsplit(url)
conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
lat, errors = [], 0
start = time.perf_counter()
i = 0
while True:
    due = start + i / rate
    if due - start >= secs:
        break
    now = time.perf_counter()
    if due > now:
        time.sleep(due - now)
    try:
        conn.request("GET", u.path or "/")
        r = conn.getresponse(); r.read()
        if r.status != 200:
            errors += 1
    except Exception:
        errors += 1
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    lat.append((time.perf_counter() - due) * 1e3)
    i += 1
lat.sort()
p = lambda q: lat[min(len(lat) - 1, int(len(lat) * q))]
print(f"probe {url}: {len(lat)} requests, {errors} errors, p50 {p(0.5):.2f}ms p99 {p(0.99):.2f}ms max {lat[-1]:.2f}ms")
