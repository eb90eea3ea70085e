#!/usr/bin/env python3
"""A minimal OpenAI-compatible /embeddings server on loopback, for bench/run.sh.
Answers every request at once with fixed unit vectors of the asked width (default 1536)."""
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

WIDTH = 1536
VEC = [1.0 / WIDTH ** 0.5] * WIDTH


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        out = json.dumps({"data": [{"index": i, "embedding": VEC} for i in range(len(inputs))]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
