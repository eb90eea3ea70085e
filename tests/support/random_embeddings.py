#!/usr/bin/env python3
"""An OpenAI-compatible /embeddings server on loopback for the retrieval tests: every text gets a
pseudo-random unit vector (384 dimensions) seeded by its SHA-256, the hard case for an
approximate index. A text "near:<base>#<n>" gets <base>'s vector plus a little noise, so a
test can crowd the neighbourhood of a query.

    random_embeddings.py PORT [DELAY_SECONDS]

DELAY_SECONDS (default 0) holds every answer back, as a slow provider would.
"""
import hashlib
import json
import math
import random
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

WIDTH = 384
DELAY = float(sys.argv[2]) if len(sys.argv) > 2 else 0.0


def unit(v):
    n = math.sqrt(sum(x * x for x in v))
    return [x / n for x in v]


def raw(text):
    rng = random.Random(hashlib.sha256(text.encode()).digest())
    return [rng.gauss(0.0, 1.0) for _ in range(WIDTH)]


def embed(text):
    if text.startswith("near:"):
        base, _, n = text[5:].rpartition("#")
        rng = random.Random(hashlib.sha256(text.encode()).digest())
        return unit([x + rng.gauss(0.0, 0.05) for x in unit(raw(base))])
    return unit(raw(text))


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = [{"index": i, "embedding": embed(t)} for i, t in enumerate(inputs)]
        time.sleep(DELAY)
        out = json.dumps({"data": data, "model": body.get("model")}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
