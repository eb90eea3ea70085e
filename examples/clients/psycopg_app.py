"""memori from psycopg 3, as an application does: it connects as a role granted
memori_grant(role, 'app') and names the end user at the start of every transaction.

    python psycopg_app.py "host=/var/run/memori port=5499 dbname=app user=my_app"
"""
import sys

import psycopg
from psycopg.types.json import Jsonb

QUESTION = "How should SQL be written for this user?"


def main(dsn):
    with psycopg.connect(dsn) as conn:
        with conn.transaction():
            # SET LOCAL, in effect: the setting ends with the transaction, so a pooled
            # connection never carries one end user's name into another's transaction.
            conn.execute("SELECT set_config('memori.user_id', %s, true)", ("customer-psycopg",))
            memory_id = conn.execute(
                "SELECT memori_store(%s, 'rule', importance => %s, metadata => %s)",
                ("User prefers JOINs over subqueries", 0.9, Jsonb({"source": "psycopg"})),
            ).fetchone()[0]
            hits = conn.execute(
                "SELECT content, similarity FROM memori_search(%s, k => 3)", (QUESTION,)
            ).fetchall()
            context = conn.execute("SELECT memori_context(%s)", (QUESTION,)).fetchone()[0]
        with conn.transaction():
            conn.execute("SELECT set_config('memori.user_id', %s, true)", ("someone-else",))
            others = conn.execute("SELECT count(*) FROM memori_search(%s)", (QUESTION,)).fetchone()[0]
    assert hits[0][0] == "User prefers JOINs over subqueries", hits
    assert "JOINs over subqueries" in context, context
    assert others == 0, "another end user sees nothing of this one"
    print(f"ok psycopg: stored {memory_id}, found {hits[0][0]!r} at {hits[0][1]:.2f}, context of {len(context)} characters")


if __name__ == "__main__":
    main(sys.argv[1])
