"""psycopg 3 calls memori the way applications do: Python floats go out as float8, ints as
int2/int4/int8, and every numeric parameter must accept them (issue: `importance => 0.8`
failed with 42883 while the parameter was real). Run by tests/system/clients.sh.

    python psycopg_numbers.py HOST PORT DBNAME
Prints "ok - ..." / "FAILED - ..." lines.
"""
import sys

import psycopg

host, port, db = sys.argv[1], int(sys.argv[2]), sys.argv[3]
failed = 0


def check(name, cond):
    global failed
    print(("ok - " if cond else "FAILED - ") + name)
    failed += not cond


with psycopg.connect(host=host, port=port, dbname=db, user="postgres", autocommit=True) as conn:
    # Server-side binding with binary floats: the parameter types are what Python gives.
    mid = conn.execute(
        "SELECT memori_store(%s, %s, importance => %s, user_id => %s)",
        ("User prefers JOINs over subqueries", "rule", 0.8, "py_user"),
    ).fetchone()[0]
    check("memori_store(importance => <Python float>) stores", mid is not None)
    imp = conn.execute("SELECT importance_score FROM memori_memories WHERE memory_id = %s", (mid,)).fetchone()[0]
    check(f"the importance is 0.8 ({imp})", abs(imp - 0.8) < 1e-6)
    check("memori_store(importance => <Python int>)", conn.execute(
        "SELECT memori_store(%s, 'long_term', importance => %s, user_id => 'py_user') IS NOT NULL",
        ("The user works in Berlin", 1)).fetchone()[0])
    rows = conn.execute(
        "SELECT content, similarity FROM memori_search(%s, k => %s, min_similarity => %s, user_id => %s)",
        ("How should SQL be written?", 5, 0.2, "py_user"),
    ).fetchall()
    check(f"memori_search(min_similarity => <float>, k => <int>) finds the rule ({len(rows)} rows)",
          rows and rows[0][0] == "User prefers JOINs over subqueries")
    check("similarity comes back as a Python float", isinstance(rows[0][1], float))
    ids = conn.execute(
        "SELECT * FROM memori_store_batch(%s, 'long_term', importance => %s, user_id => 'py_user')",
        (["fact one about orders", "fact two about invoices"], 0.3),
    ).fetchall()
    check("memori_store_batch(importance => <float>) with a list parameter", len(ids) == 2)
    check("memori_update(importance => <float>)", conn.execute(
        "SELECT memori_update(%s, importance => %s)", (mid, 0.25)).fetchone()[0] is False)
    conn.execute("SET memori.user_id = 'py_user'")
    check("memori_update(importance => <float>) as the owner", conn.execute(
        "SELECT memori_update(%s, importance => %s)", (mid, 0.25)).fetchone()[0])
    check("memori_relate(importance => <float>)", conn.execute(
        "SELECT memori_relate(%s, %s, %s, importance => %s) IS NOT NULL",
        ("orders.customer_id", "references", "customers.id", 0.7)).fetchone()[0])
    # Explicit binary transfer of a float8 (prepared statement) too.
    cur = conn.cursor(binary=True)
    cur.execute("SELECT count(*) FROM memori_search(%s, min_similarity => %s, mode => %s)",
                ("orders", 0.1, "hybrid"), prepare=True)
    check("a prepared binary call with float8 works", cur.fetchone()[0] >= 1)
    try:
        conn.execute("SELECT memori_store(%s, importance => %s)", ("x", 1.5))
        check("importance 1.5 is refused", False)
    except psycopg.Error as e:
        check(f"importance 1.5 is refused with 22023 ({e.sqlstate})", e.sqlstate == "22023")
    # A merge is told through a NOTICE, which drivers surface.
    notices = []
    conn.add_notice_handler(lambda d: notices.append(d.message_primary))
    conn.execute("SELECT memori_store('The user prefers JOINs over subqueries', 'rule')")
    check("a merge raises a NOTICE the driver sees", any("merged" in n for n in notices))

sys.exit(1 if failed else 0)
