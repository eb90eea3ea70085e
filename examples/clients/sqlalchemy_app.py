"""memori from SQLAlchemy 2 (on psycopg 3): the same steps as psycopg_app.py, with text()
statements; a jsonb parameter is bound with the JSONB type.

    python sqlalchemy_app.py "postgresql+psycopg://my_app@/app?host=/var/run/memori&port=5499"
"""
import sys

from sqlalchemy import bindparam, create_engine, text
from sqlalchemy.dialects.postgresql import JSONB

QUESTION = "How should SQL be written for this user?"

name_user = text("SELECT set_config('memori.user_id', :user, true)")
store = text("SELECT memori_store(:content, 'rule', importance => :importance, metadata => :metadata)").bindparams(
    bindparam("metadata", type_=JSONB)
)
search = text("SELECT content, similarity FROM memori_search(:question, k => 3)")
context = text("SELECT memori_context(:question)")


def main(url):
    engine = create_engine(url)
    with engine.begin() as conn:  # one transaction: commits at the end of the block
        conn.execute(name_user, {"user": "customer-sqlalchemy"})
        memory_id = conn.execute(
            store, {"content": "User prefers JOINs over subqueries", "importance": 0.9, "metadata": {"source": "sqlalchemy"}}
        ).scalar_one()
        hits = conn.execute(search, {"question": QUESTION}).all()
        block = conn.execute(context, {"question": QUESTION}).scalar_one()
    with engine.begin() as conn:
        conn.execute(name_user, {"user": "someone-else"})
        others = conn.execute(search, {"question": QUESTION}).all()
    assert hits[0].content == "User prefers JOINs over subqueries", hits
    assert "JOINs over subqueries" in block, block
    assert others == [], "another end user sees nothing of this one"
    print(f"ok sqlalchemy: stored {memory_id}, found {hits[0].content!r} at {hits[0].similarity:.2f}, context of {len(block)} characters")


if __name__ == "__main__":
    main(sys.argv[1])
