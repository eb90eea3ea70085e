"""memori from asyncpg: the same steps as psycopg_app.py. asyncpg returns a vector as a string
unless pgvector's codec is registered (register_vector); jsonb parameters go as JSON text with a
::jsonb cast.

    python asyncpg_app.py "postgresql://my_app@/app?host=/var/run/memori&port=5499"
"""
import asyncio
import json
import sys

import asyncpg
from pgvector.asyncpg import register_vector

QUESTION = "How should SQL be written for this user?"


async def main(dsn):
    conn = await asyncpg.connect(dsn)
    try:
        await register_vector(conn)  # vector values come back as numpy arrays
        async with conn.transaction():
            await conn.execute("SELECT set_config('memori.user_id', $1, true)", "customer-asyncpg")
            memory_id = await conn.fetchval(
                "SELECT memori_store($1, 'rule', importance => $2, metadata => $3::jsonb)",
                "User prefers JOINs over subqueries", 0.9, json.dumps({"source": "asyncpg"}),
            )
            hits = await conn.fetch("SELECT content, similarity FROM memori_search($1, k => 3)", QUESTION)
            block = await conn.fetchval("SELECT memori_context($1)", QUESTION)
            embedding = await conn.fetchval("SELECT memori_embed($1)", QUESTION)
        async with conn.transaction():
            await conn.execute("SELECT set_config('memori.user_id', $1, true)", "someone-else")
            others = await conn.fetchval("SELECT count(*) FROM memori_search($1)", QUESTION)
    finally:
        await conn.close()
    assert hits[0]["content"] == "User prefers JOINs over subqueries", hits
    assert "JOINs over subqueries" in block, block
    assert others == 0, "another end user sees nothing of this one"
    assert embedding.shape == (384,), type(embedding)
    print(f"ok asyncpg: stored {memory_id}, found {hits[0]['content']!r} at {hits[0]['similarity']:.2f}, "
          f"context of {len(block)} characters, embedding {embedding.shape}")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
