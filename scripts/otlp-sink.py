#!/usr/bin/env python3
"""A collector that takes OTLP/HTTP span exports and throws them away: answers 200 to every
POST, and prints the requests and bytes it took when stopped. For counting what exporting
spans costs offload (scripts/worker-instructions.sh with --otlp-endpoint), with no real
collector on the machine.

    scripts/otlp-sink.py [PORT]        (default 4318)
"""
import http.server
import signal
import sys

taken = {"requests": 0, "bytes": 0}


class Sink(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        n = int(self.headers.get("content-length", 0))
        self.rfile.read(n)
        taken["requests"] += 1
        taken["bytes"] += n
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def stop(*_):
    print(f"otlp-sink: {taken['requests']} exports, {taken['bytes']} bytes", flush=True)
    sys.exit(0)


signal.signal(signal.SIGTERM, stop)
signal.signal(signal.SIGINT, stop)
port = int(sys.argv[1]) if len(sys.argv) > 1 else 4318
http.server.ThreadingHTTPServer(("127.0.0.1", port), Sink).serve_forever()
