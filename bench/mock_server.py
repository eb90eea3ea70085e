#!/usr/bin/env python3
"""A minimal OpenAI-compatible /embeddings server on loopback, for bench/run.sh and
bench/scale/run.sh. Answers every request at once with pseudo-random unit vectors of the asked
width (the request's `dimensions`, default 1536), each drawn from a seed that is the SHA-256
of its text: the same text always gets the same vector, two texts practically never near ones
(so memori's near-duplicate check merges nothing)."""
import hashlib
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

try:
    import numpy as np
except ImportError:  # pure Python fallback: slower, same behaviour
    np = None
    import random

WIDTH = 1536


def vector(text, width):
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    if np is not None:
        v = np.random.default_rng(seed).standard_normal(width)
        return (v / np.linalg.norm(v)).round(7).tolist()
    r = random.Random(seed)
    v = [r.gauss(0.0, 1.0) for _ in range(width)]
    n = sum(x * x for x in v) ** 0.5
    return [round(x / n, 7) for x in v]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        width = int(body.get("dimensions") or WIDTH)
        out = json.dumps({"data": [{"index": i, "embedding": vector(t, width)} for i, t in enumerate(inputs)]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
