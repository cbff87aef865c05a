#!/usr/bin/env python3
"""Helper of scripts/queue.sh: talks to a queue gateway over HTTP and prints one JSON line.

  queue_jobs.py drain BASE LOAD_JSON      backlog when the load stopped, and the time to drain it
  queue_jobs.py pickup BASE COUNT         idle pickup latency: one job at a time, with pauses
  queue_jobs.py open BASE RATE SECS PATH  open-loop enqueue at RATE/s, then enqueue-to-done latency
  queue_jobs.py median FILE KEY...        median of KEY over the JSON lines of FILE

Job times come from GET /jobs/{id} (enqueued_at, started_at, finished_at: unix ms, so latencies
have millisecond resolution). Standard library only."""
import http.client, json, random, re, statistics, sys, time, urllib.parse


def conn_for(base):
    u = urllib.parse.urlsplit(base)
    return http.client.HTTPConnection(u.hostname, u.port, timeout=30)


class Client:
    """One keep-alive connection, reopened after an error."""

    def __init__(self, base):
        self.base = base
        self.conn = conn_for(base)

    def get(self, path):
        for attempt in range(3):
            try:
                self.conn.request("GET", path)
                r = self.conn.getresponse()
                return r.status, r.read()
            except (OSError, http.client.HTTPException):
                self.conn.close()
                self.conn = conn_for(self.base)
                if attempt == 2:
                    raise

    def job(self, id):
        status, body = self.get(f"/jobs/{id}")
        assert status == 200, (status, body)
        return json.loads(body)

    def jobs_by_state(self):
        _, body = self.get("/metrics")
        counts = {}
        for m in re.finditer(rb'^offload_jobs\{state="(\w+)"\} (\d+)', body, re.M):
            counts[m.group(1).decode()] = int(m.group(2))
        return counts


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * q))] if xs else None


def summary(xs):
    return {"n": len(xs), "p50": pct(xs, 0.5), "p90": pct(xs, 0.9), "p99": pct(xs, 0.99),
            "max": max(xs) if xs else None}


def wait_done(c, ids, limit_s=600):
    """Polls until every job is finished; returns their views."""
    views, left = {}, list(ids)
    end = time.time() + limit_s
    while left and time.time() < end:
        still = []
        for id in left:
            v = c.job(id)
            if v["status"] in ("done", "failed"):
                views[id] = v
            else:
                still.append(id)
        left = still
        if left:
            time.sleep(0.05)
    return views, left


def drain(base, load_json):
    """The load has just stopped: backlog now, then poll until nothing is queued or running."""
    load = json.load(open(load_json))
    end_of_load = load["started_at_unix_ms"] / 1000 + load["warmup_s"] + load["elapsed_s"]
    c = Client(base)
    first = c.jobs_by_state()
    backlog = first.get("queued", 0) + first.get("running", 0)
    counts = first
    while counts.get("queued", 0) + counts.get("running", 0) > 0:
        time.sleep(0.1)
        counts = c.jobs_by_state()
    drained = time.time()
    accepted = load["requests"]["by_status"].get("202", 0)
    done = counts.get("done", 0)
    drain_s = max(drained - end_of_load, 0.0)
    total_s = load["elapsed_s"] + drain_s
    print(json.dumps({
        "accepted": accepted,
        "accepted_per_s": accepted / load["elapsed_s"],
        "rejected_503": load["requests"]["by_status"].get("503", 0),
        "other_errors": load["requests"]["errors"] + load["requests"]["timeouts"],
        "enqueue_p50_ms": load["latency"]["p50"],
        "enqueue_p99_ms": load["latency"]["p99"],
        "load_s": load["elapsed_s"],
        "backlog_at_stop": backlog,
        "done_at_stop": first.get("done", 0),
        "drain_s": drain_s,
        "done": done,
        "failed": counts.get("failed", 0),
        "completed_per_s": done / total_s,
    }))


def pickup(base, count):
    """One tiny job at a time on an idle worker, with random pauses so that each lands at a
    random point of the worker's poll or blocking read."""
    c = Client(base)
    pick, e2e = [], []
    for _ in range(count):
        time.sleep(random.uniform(0.05, 0.25))
        status, body = c.get("/heavy?n=1000")
        assert status == 202, (status, body)
        id = json.loads(body)["id"]
        views, left = wait_done(c, [id], 30)
        assert not left, f"job {id} not done in 30 s"
        v = views[id]
        pick.append(v["started_at"] - v["enqueued_at"])
        e2e.append(v["finished_at"] - v["enqueued_at"])
    print(json.dumps({"pickup_ms": summary(pick), "enqueue_to_done_ms": summary(e2e)}))


def open_loop(base, rate, secs, path):
    """Enqueues at a fixed rate (scheduled send times, so a slow answer does not slow the
    schedule down... as far as one connection allows), records ids, then waits for all."""
    c = Client(base)
    ids, errors, late = [], 0, 0
    start = time.perf_counter()
    i = 0
    while True:
        due = start + i / rate
        if due - start >= secs:
            break
        now = time.perf_counter()
        if due > now:
            time.sleep(due - now)
        elif now - due > 0.1:
            late += 1
        status, body = c.get(path)
        if status == 202:
            ids.append(json.loads(body)["id"])
        else:
            errors += 1
        i += 1
    sent_s = time.perf_counter() - start
    views, left = wait_done(c, ids)
    e2e = [v["finished_at"] - v["enqueued_at"] for v in views.values() if v["status"] == "done"]
    pick = [v["started_at"] - v["enqueued_at"] for v in views.values() if v["status"] == "done"]
    print(json.dumps({
        "rate": rate, "sent": i, "send_s": sent_s, "accepted": len(ids), "errors": errors,
        "late_sends": late, "not_finished": len(left),
        "failed": sum(1 for v in views.values() if v["status"] == "failed"),
        "enqueue_to_done_ms": summary(e2e), "pickup_ms": summary(pick),
    }))


def get_key(d, key):
    for part in key.split("."):
        d = d[part]
    return d


def median(path, keys):
    rows = [json.loads(l) for l in open(path) if l.strip()]
    out = {}
    for k in keys:
        vals = [get_key(r, k) for r in rows]
        vals = [v for v in vals if v is not None]
        out[k] = round(statistics.median(vals), 2) if vals else None
    out["runs"] = len(rows)
    print(json.dumps(out))


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "drain":
        drain(args[0], args[1])
    elif cmd == "pickup":
        pickup(args[0], int(args[1]))
    elif cmd == "open":
        open_loop(args[0], float(args[1]), float(args[2]), args[3])
    elif cmd == "median":
        median(args[0], args[1:])
    else:
        sys.exit(__doc__)
