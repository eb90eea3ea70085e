"""Pathological inputs, as a tenant (issue 19, item 6): every function memori gives a granted
role is called with inputs up to the size memori allows, shaped to hurt (repeated separators,
many distinct tokens, deep JSON, huge arrays), and with an ordinary input of the same size.
Each pathological call must either end within RATIO times the ordinary call's time (measured
in the same run, on this machine) or be refused with a clear error (an SQLSTATE other than
XX000, the backend alive). The backend's peak memory (VmHWM) may not grow by more than
MEMORY_MB over the whole run.

    python pathological.py HOST PORT DBNAME ROLE
Prints "ok - ..." / "FAILED - ..." lines. Run by tests/system/pathological.sh.
"""
import json
import sys
import time

import psycopg

host, port, db, role = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
RATIO = 10          # a pathological call may cost this many ordinary calls of the same size
FLOOR_S = 0.05      # ordinary calls faster than this are measured as this (timer noise)
MEMORY_MB = 256     # growth of the backend's peak memory over the whole run
SIZE = 60_000       # bytes of text: under memori.max_content_bytes (64 kB)
failed = 0


def check(name, cond, detail=""):
    global failed
    print(("ok - " if cond else "FAILED - ") + name + (f": {detail}" if detail and not cond else ""))
    failed += not cond


def ordinary_text(n):
    words = "the orders table keeps one row per order and its customer and total amount ".split()
    out, i = [], 0
    while sum(len(w) + 1 for w in out) < n:
        out.append(words[i % len(words)])
        i += 1
    return " ".join(out)[:n]


def texts(n):
    """(name, text) pairs of n bytes that stress text processing."""
    return [
        ("repeated dots", "a." * (n // 2)),
        ("repeated underscores", "_" * n),
        ("dots and underscores", "a_." * (n // 3)),
        ("one huge identifier", "x" * (n // 2) + "." + "y_z" * (n // 6)),
        ("many distinct identifiers", " ".join(f"t{i}.c_{i}" for i in range(n // 12))[:n]),
        ("many distinct words", " ".join(f"w{i}" for i in range(n // 7))[:n]),
        ("quotes and backslashes", "'\\" * (n // 2)),
        ("tsquery operators", "!&|()<->:*" * (n // 10)),
    ]


def deep_json(depth):
    return "[" * depth + "]" * depth


with psycopg.connect(host=host, port=port, dbname=db, user=role, autocommit=True) as conn:
    pid = conn.execute("SELECT pg_backend_pid()").fetchone()[0]

    def hwm_mb():
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def call(sql, params):
        """(seconds, sqlstate or None)."""
        t = time.monotonic()
        try:
            conn.execute(sql, params)
            state = None
        except psycopg.Error as e:
            state = e.sqlstate or "?"
        return time.monotonic() - t, state

    # Warm up: the model, the caches, the plans.
    conn.execute("SELECT memori_store(%s, 'long_term')", (ordinary_text(200),))
    conn.execute("SELECT count(*) FROM memori_search(%s)", (ordinary_text(200),))
    start_mb = hwm_mb()

    def judge(what, sql, ordinary_params, bad_cases, carrier=None):
        """carrier: a trivial statement taking the same parameters (PostgreSQL's own cost of
        receiving and parsing them): where an input is large in itself (300,000 array elements,
        a megabyte of JSON), the bound is RATIO times that cost when it exceeds the ordinary
        call's, since no ordinary input of that size is accepted to compare with."""
        base, state = call(sql, ordinary_params)
        if state is not None:
            check(f"{what}: the ordinary input works", False, f"SQLSTATE {state}")
            return
        base = max(base, FLOOR_S)
        for name, params in bad_cases:
            ref, what_ref = base, "the ordinary"
            if carrier is not None:
                carried, carrier_state = call(carrier, params)
                if carrier_state is None and carried > ref:
                    ref, what_ref = carried, "the same input to a trivial statement"
            took, state = call(sql, params)
            alive = conn.execute("SELECT 1").fetchone()[0] == 1
            if state is None:
                check(f"{what}, {name}: {took:.2f} s, within {RATIO} x {what_ref} {ref:.2f} s",
                      took <= RATIO * ref and alive, f"took {took:.2f} s")
            else:
                check(f"{what}, {name}: refused with {state}, not XX000", state != "XX000" and alive,
                      f"SQLSTATE {state}")

    ordinary = ordinary_text(SIZE)
    cases = texts(SIZE)
    judge("memori_identifiers", "SELECT length(memori_identifiers(%s))", (ordinary,),
          [(n, (t,)) for n, t in cases])
    judge("memori_text_document", "SELECT length(memori_text_document(%s, 'english'))", (ordinary,),
          [(n, (t,)) for n, t in cases])
    judge("memori_term_mask", "SELECT memori_term_mask(memori_text_document(%s, 'english'), "
          "memori_text_document(%s, 'english'))", (ordinary, ordinary),
          [(n, (t, t)) for n, t in cases])
    judge("memori_store", "SELECT memori_store(%s, 'long_term')", (ordinary,),
          [(n, (t,)) for n, t in cases])
    judge("memori_search (hybrid)", "SELECT count(*) FROM memori_search(%s, k => 10)", (ordinary,),
          [(n, (t,)) for n, t in cases])
    judge("memori_search (text)", "SELECT count(*) FROM memori_search(%s, k => 10, mode => 'text')", (ordinary,),
          [(n, (t,)) for n, t in cases])
    judge("memori_context", "SELECT length(memori_context(%s))", (ordinary,),
          [(n, (t,)) for n, t in cases])
    judge("memori_embed", "SELECT vector_dims(memori_embed(%s))", (ordinary,),
          [(n, (t,)) for n, t in cases[:3]])
    judge("memori_relate", "SELECT memori_relate(%s, 'references', %s)", (ordinary[:200], ordinary[200:400]),
          [(n, (t, t)) for n, t in cases[:4]])
    judge("memori_entity", "SELECT count(*) FROM memori_entity(%s)", (ordinary,),
          [(n, (t,)) for n, t in cases[:4]])
    # Arrays and JSON: many tags and entities, long ones, deep and wide metadata.
    ok_tags = [f"tag{i}" for i in range(50)]
    judge("memori_store tags/entities/metadata", "SELECT memori_store(%s, 'rule', tags => %s, entities => %s, metadata => %s::jsonb)",
          ("a fact about tags", ok_tags, ok_tags, json.dumps({"k": "v" * 1000})),
          [("300,000 distinct tags", ("a fact about tags", [f"t{i}" for i in range(300_000)], [], "{}")),
           ("300,000 distinct entities", ("a fact about tags", [], [f"e{i}" for i in range(300_000)], "{}")),
           ("300,000 equal tags", ("a fact about tags", ["same"] * 300_000, [], "{}")),
           ("a 60 kB tag", ("a fact about tags", ["x" * SIZE], [], "{}")),
           ("metadata nested 5,000 deep", ("a fact about tags", [], [], deep_json(5000))),
           ("metadata of 1 MB", ("a fact about tags", [], [], json.dumps({"blob": "x" * 1_000_000}))),
           ("metadata of 1,000,000 empty strings (small compressed)", ("a fact about tags", [], [], json.dumps([""] * 1_000_000))),
           ("metadata with 100,000 keys", ("a fact about tags", [], [], json.dumps({f"k{i}": i for i in range(100_000)})))],
          carrier="SELECT length(%s::text) + cardinality(%s::text[]) + cardinality(%s::text[]) + length(%s::jsonb::text)")
    judge("memori_store_batch", "SELECT count(*) FROM memori_store_batch(%s, 'short_term')",
          ([f"{ordinary_text(200)} (note {i})" for i in range(50)],),
          [("50 texts of repeated dots", ([f"{'a.' * 100} {i}" for i in range(50)],)),
           ("50 texts of distinct identifiers", ([" ".join(f"t{i}_{j}.c_{j}" for j in range(12)) for i in range(50)],)),
           ("5,000 empty and blank texts", (["", " "] * 2500,)),
           ("100,000 texts (over the batch size)", ([f"x{i}" for i in range(100_000)],))],
          carrier="SELECT cardinality(%s::text[])")
    judge("memori_search filters", "SELECT count(*) FROM memori_search('orders', tags => %s, memory_types => %s)",
          (["tag1"], ["rule"]),
          [("100,000 tags to filter by", ([f"t{i}" for i in range(100_000)], ["rule"])),
           ("100,000 memory types", (["tag1"], ["rule"] * 100_000))],
          carrier="SELECT cardinality(%s::text[]) + cardinality(%s::text[])")

    grown = hwm_mb() - start_mb
    check(f"the backend's peak memory grew by {grown:.0f} MB (at most {MEMORY_MB})", grown <= MEMORY_MB)

print(f"pathological: {failed} failed")
sys.exit(1 if failed else 0)
