#!/usr/bin/env python3
"""Independent reference for memori's local model: all-MiniLM-L6-v2 in numpy.

Reads the same weights (model.safetensors) and tokenizer.json that memori installs, runs BERT
in float64 with numpy (no candle, no torch), mean-pools over the real tokens and L2-normalises,
as sentence-transformers does. Writes tests/reference/minilm.json, which the #[pg_test]s compare
memori_embed() against (cosine within 1e-3).

    python3 tests/reference/minilm_reference.py /usr/share/postgresql/15/extension/memori/all-MiniLM-L6-v2
Needs: pip install numpy tokenizers
"""
import json
import math
import struct
import sys
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

TEXTS = [
    "User prefers using JOINs instead of subqueries",
    "How does the user prefer SQL queries?",
    "The customers table has columns: id, name, email, created_at",
    "SQL query preferences",
    "User prefers using table aliases in SQL queries",
    "The weather in Lisbon is sunny today.",
]


def load_safetensors(path):
    raw = Path(path).read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + n])
    data = raw[8 + n :]
    out = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        dtype = {"F32": np.float32, "I64": np.int64}[meta["dtype"]]
        a, b = meta["data_offsets"]
        out[name] = np.frombuffer(data[a:b], dtype=dtype).reshape(meta["shape"]).astype(np.float64)
    return out


def layer_norm(x, w, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


def gelu(x):  # the exact (erf) GELU BERT uses
    return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


def embed(w, cfg, ids):
    n = len(ids)
    h = w["embeddings.word_embeddings.weight"][ids]
    h = h + w["embeddings.position_embeddings.weight"][np.arange(n)]
    h = h + w["embeddings.token_type_embeddings.weight"][np.zeros(n, dtype=int)]
    eps = cfg["layer_norm_eps"]
    h = layer_norm(h, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"], eps)
    heads = cfg["num_attention_heads"]
    d = cfg["hidden_size"] // heads
    for i in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        lin = lambda x, name: x @ w[p + name + ".weight"].T + w[p + name + ".bias"]
        q = lin(h, "attention.self.query").reshape(n, heads, d).transpose(1, 0, 2)
        k = lin(h, "attention.self.key").reshape(n, heads, d).transpose(1, 0, 2)
        v = lin(h, "attention.self.value").reshape(n, heads, d).transpose(1, 0, 2)
        s = q @ k.transpose(0, 2, 1) / math.sqrt(d)
        s = np.exp(s - s.max(-1, keepdims=True))
        s = s / s.sum(-1, keepdims=True)
        a = (s @ v).transpose(1, 0, 2).reshape(n, heads * d)
        a = lin(a, "attention.output.dense")
        h = layer_norm(a + h, w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"], eps)
        f = gelu(lin(h, "intermediate.dense"))
        f = lin(f, "output.dense")
        h = layer_norm(f + h, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"], eps)
    v = h.mean(0)
    return v / np.linalg.norm(v)


def main():
    model = Path(sys.argv[1])
    cfg = json.loads((model / "config.json").read_text())
    w = load_safetensors(model / "model.safetensors")
    tok = Tokenizer.from_file(str(model / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(256)
    vecs = [embed(w, cfg, tok.encode(t).ids) for t in TEXTS]
    sims = [[float(a @ b) for b in vecs] for a in vecs]
    out = {
        "model": "all-MiniLM-L6-v2",
        "texts": TEXTS,
        "vectors": [[round(float(x), 7) for x in v] for v in vecs],
        "cosine": [[round(x, 6) for x in row] for row in sims],
    }
    dest = Path(__file__).with_name("minilm.json")
    dest.write_text(json.dumps(out, indent=None) + "\n")
    print(f"wrote {dest}")
    for t, row in zip(TEXTS, sims):
        print(f"{t[:50]:50s}", " ".join(f"{x:.3f}" for x in row))


if __name__ == "__main__":
    main()
