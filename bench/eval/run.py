"""memori's retrieval eval (`make eval`): loads bench/eval/data.py into a fresh database on the
local cluster, asks every question in every search mode, and prints hit@1, MRR@10 and
recall@5 per mode and kind of question, plus how many negatives came back empty at the
memori.min_similarity threshold. Uses the configured embedding provider (the local model by
default). Prints figures; asserts nothing.

    python run.py [--host /var/run/memori] [--port 5499] [--db memori_eval] [--keep]
"""

import argparse
import time

import psycopg

import data

MODES = ("vector", "text", "hybrid")


def load(conn):
    ids = {}
    for user, key, memory_type, content in data.memories():
        with conn.transaction():
            ids[key] = conn.execute(
                "SELECT memori_store(%s, %s, metadata => jsonb_build_object('key', %s::text), user_id => %s)",
                (content, memory_type, key, user),
            ).fetchone()[0]
    stored = conn.execute("SELECT count(*) FROM memori_memories").fetchone()[0]
    if stored != len(ids):
        raise SystemExit(f"eval: {len(ids)} memories stored, {stored} rows: some were merged")
    return stored


def ask(conn, user, question, mode, k, min_similarity=None):
    rows = conn.execute(
        "SELECT metadata->>'key' FROM memori_search(%s, k => %s, user_id => %s, mode => %s,"
        " min_similarity => %s)",
        (question, k, user, mode, min_similarity),
    ).fetchall()
    return [r[0] for r in rows]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="/var/run/memori")
    ap.add_argument("--port", default=5499, type=int)
    ap.add_argument("--db", default="memori_eval")
    ap.add_argument("--keep", action="store_true", help="keep the database afterwards")
    args = ap.parse_args()
    admin = psycopg.connect(host=args.host, port=args.port, user="postgres", dbname="postgres", autocommit=True)
    admin.execute(f'DROP DATABASE IF EXISTS "{args.db}" WITH (FORCE)')
    admin.execute(f'CREATE DATABASE "{args.db}"')
    try:
        with psycopg.connect(host=args.host, port=args.port, user="postgres", dbname=args.db, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION memori CASCADE")
            t0 = time.monotonic()
            n = load(conn)
            print(f"eval: {n} memories of {len(data.DOMAINS)} users stored in {time.monotonic() - t0:.1f} s")
            threshold = conn.execute("SELECT current_setting('memori.min_similarity')::float8").fetchone()[0]
            queries = data.queries()
            print(f"eval: {len(queries)} questions; negatives judged at memori.min_similarity = {threshold}")
            print(f"{'mode':<7} {'kind':<11} {'n':>4} {'hit@1':>6} {'MRR@10':>7} {'recall@5':>9} {'ms/query':>9}")
            for mode in MODES:
                totals = {}
                for user, kind, question, expected in queries:
                    t = totals.setdefault(kind, {"n": 0, "hit1": 0.0, "mrr": 0.0, "r5": 0.0, "empty": 0, "ms": 0.0})
                    t0 = time.monotonic()
                    if kind == "negative":
                        # Text mode has no similarity: a negative is empty when no word matches.
                        found = ask(conn, user, question, mode, 10, None if mode == "text" else threshold)
                        t["empty"] += not found
                    else:
                        found = ask(conn, user, question, mode, 10)
                        ranks = [found.index(e) + 1 for e in expected if e in found]
                        best = min(ranks) if ranks else None
                        t["hit1"] += best == 1
                        t["mrr"] += 1.0 / best if best else 0.0
                        t["r5"] += sum(1 for r in ranks if r <= 5) / len(expected)
                    t["ms"] += (time.monotonic() - t0) * 1000
                    t["n"] += 1
                for kind in ("identifier", "paraphrase"):
                    t = totals[kind]
                    n = t["n"]
                    print(f"{mode:<7} {kind:<11} {n:>4} {t['hit1'] / n:>6.3f} {t['mrr'] / n:>7.3f} {t['r5'] / n:>9.3f} {t['ms'] / n:>9.1f}")
                t = totals["negative"]
                print(f"{mode:<7} {'negative':<11} {t['n']:>4} {'empty: ' + str(t['empty']) + '/' + str(t['n']):>24} {t['ms'] / t['n']:>9.1f}")
    finally:
        if not args.keep:
            admin.execute(f'DROP DATABASE IF EXISTS "{args.db}" WITH (FORCE)')


if __name__ == "__main__":
    main()
