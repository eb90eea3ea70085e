"""memori on LoCoMo (`make eval`, after the Text2SQL set): retrieval on real multi-session
conversations (Maharana et al., "Evaluating Very Long-Term Conversational Memory of LLM Agents",
ACL 2024).

Reads LoCoMo in its own layout from $MEMORI_LOCOMO, else from
../shared/data/locomo-dev/locomo-dev.json beside the checkout (licensed CC BY-NC 4.0: read in
place, never copied into the repository). Where the file is absent it says so in one line and
exits 0.

In a throw-away database on the given cluster, each conversation becomes one memori user
('locomo/conv-26'), each turn one `long_term` memory "<speaker>: <text>" (plus
" [shared a photo: <caption>]" when a photo was shared), stored with one memori_store_batch
call per session with the session's date as event_at, merging off (memori.dedup_threshold = 1);
afterwards each memory also gets that date as created_at/updated_at (as if it had been stored
live) and {"dia_id": ...} as metadata.

Every question is asked with memori_search(question, k => 10, mode => m, user_id => <conv>)
for m in hybrid, vector, text. Against each question's evidence turns it reports recall@5,
recall@10 (share of the evidence turns returned, averaged over questions), hit@5 and hit@10
(any evidence turn returned), per category and over categories 1-4 (category 5, adversarial,
apart), for memori's three modes and two references computed here over the same texts: Okapi
BM25 (k1 1.5, b 0.75, lowercase word tokens, one index per conversation) and plain reciprocal
rank fusion (k 60) of memori's vector and text top-10 lists. Also store throughput and search
latency (client-side wall time per call, after a warm-up). Prints figures; asserts nothing.

    python run.py [--host /var/run/memori] [--port 5499] [--db memori_locomo] [--json out.json] [--keep]
                  [--data locomo.json] [--no-adversarial] [--no-captions]
"""

import argparse
import datetime
import json
import math
import os
import re
import sys
import time
from collections import Counter
from pathlib import Path

MODES = ("hybrid", "vector", "text")
METHODS = MODES + ("bm25", "rrf")
K = 10
CATEGORIES = {1: "multi-hop", 2: "temporal", 3: "open", 4: "single-hop"}
ADVERSARIAL = 5
DEFAULT_DATA = Path(__file__).resolve().parents[2].parent / "shared/data/locomo-dev/locomo-dev.json"
MONTHS = {m: i for i, m in enumerate(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1)}


# ---------------------------------------------------------------------------------- the data

def parse_when(s):
    """LoCoMo's session time, "1:56 pm on 8 May, 2023", as a UTC datetime (LoCoMo names no zone)."""
    m = re.fullmatch(r"\s*(\d{1,2}):(\d{2})\s*([ap])\.?m\.?\s+on\s+(\d{1,2})\s+([A-Za-z]+),?\s+(\d{4})\s*", s, re.I)
    if not m:
        raise ValueError(f"unrecognised LoCoMo date: {s!r}")
    hour, minute, ampm, day, month, year = m.groups()
    hour = int(hour) % 12 + (12 if ampm.lower() == "p" else 0)
    mon = MONTHS.get(month[:3].lower())
    if mon is None:
        raise ValueError(f"unrecognised month in LoCoMo date: {s!r}")
    return datetime.datetime(int(year), mon, int(day), hour, int(minute), tzinfo=datetime.timezone.utc)


def repair_evidence(raw, known):
    """A question's evidence list as valid dia_ids (first occurrence order, no duplicates), and
    how many ids came out of a repair and how many were dropped. A malformed entry is repaired
    only into ids that name a turn of the conversation: "D8:6; D9:17" -> D8:6, D9:17;
    "D:11:26" -> D11:26; "D30:05" -> D30:5. Anything else, or an id naming no turn, is dropped."""
    out, repaired, dropped = [], 0, 0
    for entry in raw:
        entry = str(entry)
        if entry in known:
            if entry not in out:
                out.append(entry)
            continue
        parts = [p for p in re.split(r"[;,\s]+", entry) if p]
        if not parts:
            dropped += 1
            continue
        for p in parts:
            m = re.fullmatch(r"[Dd]:?(\d+):(\d+)", p)
            ident = f"D{int(m.group(1))}:{int(m.group(2))}" if m else None
            if ident in known:
                repaired += 1
                if ident not in out:
                    out.append(ident)
            else:
                dropped += 1
    return out, repaired, dropped


def load(path, captions=True):
    """The conversations: [{"id", "user", "sessions": [(when, [(dia_id, content)])], "questions":
    [(category, question, [dia_id])]}], and counts of what the evidence repair did."""
    with open(path, encoding="utf-8") as f:
        raw = json.load(f)
    convs, stats = [], Counter()
    for sample in raw:
        conv = sample["conversation"]
        numbers = sorted(int(k.split("_")[1]) for k in conv if re.fullmatch(r"session_\d+", k))
        sessions, known = [], set()
        for n in numbers:
            turns = []
            for t in conv[f"session_{n}"]:
                content = f"{t['speaker']}: {t['text']}"
                if captions and t.get("blip_caption"):
                    content += f" [shared a photo: {t['blip_caption']}]"
                turns.append((t["dia_id"], content))
                known.add(t["dia_id"])
            if turns:
                sessions.append((parse_when(conv[f"session_{n}_date_time"]), turns))
        questions = []
        for q in sample["qa"]:
            evidence, r, d = repair_evidence(q.get("evidence", []), known)
            stats["repaired"] += r
            stats["dropped"] += d
            if not evidence:
                stats[f"no_evidence_cat{q['category']}"] += 1
                continue
            questions.append((int(q["category"]), q["question"], evidence))
        convs.append({"id": sample["sample_id"], "user": f"locomo/{sample['sample_id']}",
                      "sessions": sessions, "questions": questions})
    return convs, stats


# ------------------------------------------------------------------------------- references

def tokens(text):
    return re.findall(r"\w+", text.lower())


class BM25:
    """Okapi BM25, k1 1.5, b 0.75, with rank_bm25's BM25Okapi idf: log((N - n + 0.5) / (n + 0.5)),
    and terms in more than half the documents (negative idf) floored at 0.25 x the mean idf."""

    def __init__(self, docs, k1=1.5, b=0.75, epsilon=0.25):
        self.k1, self.b = k1, b
        self.tf = [Counter(tokens(d)) for d in docs]
        self.len = [sum(tf.values()) for tf in self.tf]
        self.avglen = sum(self.len) / len(docs)
        df = Counter(t for tf in self.tf for t in tf)
        n = len(docs)
        self.idf = {t: math.log((n - c + 0.5) / (c + 0.5)) for t, c in df.items()}
        floor = epsilon * sum(self.idf.values()) / len(self.idf)
        self.idf = {t: (v if v >= 0 else floor) for t, v in self.idf.items()}

    def top(self, query, k):
        """Indexes of the k best documents, best first (ties in document order); documents sharing
        no term with the query are not returned."""
        q = [t for t in tokens(query) if t in self.idf]
        scores = []
        for i, tf in enumerate(self.tf):
            s = 0.0
            norm = self.k1 * (1 - self.b + self.b * self.len[i] / self.avglen)
            for t in q:
                f = tf.get(t)
                if f:
                    s += self.idf[t] * f * (self.k1 + 1) / (f + norm)
            if s > 0:
                scores.append((-s, i))
        scores.sort()
        return [i for _, i in scores[:k]]


def rrf(lists, k, c=60):
    """Reciprocal rank fusion: sum of 1 / (c + rank) over the lists; ties keep first appearance
    (lists read rank by rank, in the order given)."""
    score, first = {}, {}
    for rank in range(max((len(l) for l in lists), default=0)):
        for l in lists:
            if rank < len(l):
                d = l[rank]
                score[d] = score.get(d, 0.0) + 1.0 / (c + rank + 1)
                first.setdefault(d, len(first))
    return sorted(score, key=lambda d: (-score[d], first[d]))[:k]


# ---------------------------------------------------------------------------------- metrics

def judge(found, evidence):
    ev = set(evidence)
    r5 = len(ev & set(found[:5])) / len(ev)
    r10 = len(ev & set(found[:10])) / len(ev)
    return {"recall@5": r5, "recall@10": r10, "hit@5": float(r5 > 0), "hit@10": float(r10 > 0)}


def mean_of(rows):
    if not rows:
        return None
    return {m: sum(r[m] for r in rows) / len(rows) for m in rows[0]}


def percentile(xs, p):
    xs = sorted(xs)
    if not xs:
        return float("nan")
    i = (len(xs) - 1) * p
    lo, hi = math.floor(i), math.ceil(i)
    return xs[lo] + (xs[hi] - xs[lo]) * (i - lo)


# -------------------------------------------------------------------------------- the run

def store(conn, convs):
    """Stores every turn; returns (turns, seconds inside memori_store_batch, calls)."""
    conn.execute("SET memori.dedup_threshold = 1")
    turns, spent, calls = 0, 0.0, 0
    for c in convs:
        for when, session in c["sessions"]:
            dia = [d for d, _ in session]
            texts = [t for _, t in session]
            with conn.transaction():
                t0 = time.perf_counter()
                ids = [r[0] for r in conn.execute(
                    "SELECT * FROM memori_store_batch(%s::text[], 'long_term', user_id => %s, event_at => %s)",
                    (texts, c["user"], when)).fetchall()]
                spent += time.perf_counter() - t0
                calls += 1
                if len(ids) != len(texts):
                    raise SystemExit(f"locomo: {len(texts)} turns stored, {len(ids)} ids returned")
                conn.execute(
                    "UPDATE memori_memories m SET created_at = %s, updated_at = %s,"
                    " metadata = m.metadata || jsonb_build_object('dia_id', u.dia_id)"
                    " FROM unnest(%s::uuid[], %s::text[]) AS u(memory_id, dia_id)"
                    " WHERE m.user_id = %s AND m.memory_id = u.memory_id",
                    (when, when, ids, dia, c["user"]))
            turns += len(texts)
    rows = conn.execute("SELECT count(*) FROM memori_memories WHERE metadata ? 'dia_id'").fetchone()[0]
    if rows != turns:
        raise SystemExit(f"locomo: {turns} turns stored, {rows} rows: some were merged")
    conn.execute("RESET memori.dedup_threshold")
    return turns, spent, calls


def search(conn, user, question, mode):
    t0 = time.perf_counter()
    rows = conn.execute(
        "SELECT metadata->>'dia_id' FROM memori_search(%s, k => %s, mode => %s, user_id => %s)",
        (question, K, mode, user)).fetchall()
    return [r[0] for r in rows], (time.perf_counter() - t0) * 1000


def summarise(per_q, methods):
    """{method: {"all": metrics over cat 1-4, "by_category": {name: metrics}, "adversarial": ..}}"""
    out = {}
    for m in methods:
        main = [q["scores"][m] for q in per_q if q["category"] in CATEGORIES]
        out[m] = {
            "all": mean_of(main),
            "by_category": {name: mean_of([q["scores"][m] for q in per_q if q["category"] == cat])
                            for cat, name in CATEGORIES.items()},
            "adversarial": mean_of([q["scores"][m] for q in per_q if q["category"] == ADVERSARIAL]),
        }
    return out


def fmt(x):
    return "  -  " if x is None else f"{x:.3f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--host", default="/var/run/memori")
    ap.add_argument("--port", default=5499, type=int)
    ap.add_argument("--db", default="memori_locomo")
    ap.add_argument("--data", default=os.environ.get("MEMORI_LOCOMO") or str(DEFAULT_DATA),
                    help="LoCoMo JSON (default $MEMORI_LOCOMO, else %(default)s)")
    ap.add_argument("--json", help="also write the figures to this file as JSON")
    ap.add_argument("--no-adversarial", action="store_true", help="skip category 5")
    ap.add_argument("--no-captions", action="store_true", help="store turns without their photo captions")
    ap.add_argument("--keep", action="store_true", help="keep the database afterwards")
    args = ap.parse_args()

    if not Path(args.data).is_file():
        print(f"eval: LoCoMo skipped: {args.data} not found")
        return
    import psycopg  # only once there is something to run

    convs, ev = load(args.data, captions=not args.no_captions)
    if args.no_adversarial:
        for c in convs:
            c["questions"] = [q for q in c["questions"] if q[0] in CATEGORIES]
    n_turns = sum(len(s) for c in convs for _, s in c["sessions"])
    n_main = sum(1 for c in convs for q in c["questions"] if q[0] in CATEGORIES)
    n_adv = sum(1 for c in convs for q in c["questions"] if q[0] == ADVERSARIAL)
    no_ev = sum(v for k, v in ev.items() if k.startswith("no_evidence_cat") and int(k[-1]) in CATEGORIES)

    admin = psycopg.connect(host=args.host, port=args.port, user="postgres", dbname="postgres", autocommit=True)
    admin.execute(f'DROP DATABASE IF EXISTS "{args.db}" WITH (FORCE)')
    admin.execute(f'CREATE DATABASE "{args.db}"')
    try:
        with psycopg.connect(host=args.host, port=args.port, user="postgres", dbname=args.db, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION memori CASCADE")
            # The memories are dated 2022-2023 and have never been read: keep the maintenance
            # worker from archiving them should it pass over this database during the run.
            conn.execute(f'ALTER DATABASE "{args.db}" SET memori.archive_threshold_days = 36500')

            turns, spent, calls = store(conn, convs)
            model = conn.execute("SELECT string_agg(DISTINCT embedding_model, ', ') FROM memori_memories").fetchone()[0]
            print(f"locomo: {turns:,} turns stored in {calls} memori_store_batch calls, {spent:.1f} s "
                  f"({turns / spent:.1f} turns/s); model {model}", flush=True)

            # Every question as a new question: no embedding cache, so each hybrid and vector
            # call embeds it (as a question never asked before), whatever the order of modes.
            conn.execute("SET memori.embedding_cache_ttl = 0")
            for c in convs:  # warm-up: the backend loads the model, plans are made
                for mode in MODES:
                    for _, question, _ in c["questions"][:3]:
                        search(conn, c["user"], question, mode)

            per_q, latency, errors = [], {m: [] for m in MODES}, Counter()
            for c in convs:
                docs = [t for _, s in c["sessions"] for t in s]
                ids = [d for d, _ in docs]
                bm25 = BM25([t for _, t in docs])
                for category, question, evidence in c["questions"]:
                    found = {}
                    for mode in MODES:
                        try:
                            found[mode], ms = search(conn, c["user"], question, mode)
                            latency[mode].append(ms)
                        except psycopg.Error as e:
                            errors[f"{mode}: {e.sqlstate} {str(e).splitlines()[0]}"] += 1
                            found[mode] = []
                    found["bm25"] = [ids[i] for i in bm25.top(question, K)]
                    found["rrf"] = rrf([found["vector"], found["text"]], K)
                    per_q.append({"conversation": c["id"], "category": category, "question": question,
                                  "evidence": evidence, "found": found,
                                  "scores": {m: judge(found[m], evidence) for m in METHODS}})

            # The same searches with the question's embedding cached (a question asked before:
            # the search without the model call).
            conn.execute("RESET memori.embedding_cache_ttl")
            cached = {m: [] for m in ("hybrid", "vector")}
            differ = 0
            for q in per_q:
                user = f"locomo/{q['conversation']}"
                search(conn, user, q["question"], "vector")  # fills the cache
                for mode in cached:
                    found, ms = search(conn, user, q["question"], mode)
                    cached[mode].append(ms)
                    differ += found != q["found"][mode]
            archived = conn.execute("SELECT count(*) FROM memori_memories WHERE is_archived").fetchone()[0]
    finally:
        if not args.keep:
            admin.execute(f'DROP DATABASE IF EXISTS "{args.db}" WITH (FORCE)')

    res = summarise(per_q, METHODS)
    counts = Counter(q["category"] for q in per_q)
    lat = {m: {"p50": percentile(v, 0.5), "p95": percentile(v, 0.95), "n": len(v)} for m, v in latency.items()}
    lat_cached = {m: {"p50": percentile(v, 0.5), "p95": percentile(v, 0.95), "n": len(v)} for m, v in cached.items()}

    print(f"locomo: {n_main} questions (cat 1-4), {len(convs)} conversations, {n_turns:,} turns; "
          f"evidence ids repaired {ev['repaired']}, dropped {ev['dropped']}"
          + (f"; {no_ev} questions without evidence left out" if no_ev else ""))
    print("questions per category: " + ", ".join(f"{name} {counts[c]}" for c, name in CATEGORIES.items())
          + (f"; adversarial (cat 5, apart) {n_adv}" if n_adv else "; adversarial (cat 5) skipped"))
    print(f"{'method':<8} {'recall@5':>8} {'recall@10':>9} {'hit@5':>6} {'hit@10':>6}  | "
          + " ".join(CATEGORIES.values()) + " (recall@10)")
    for m in METHODS:
        a, by = res[m]["all"], res[m]["by_category"]
        cells = " ".join(f"{fmt((by[name] or {}).get('recall@10')):>{len(name)}}" for name in CATEGORIES.values())
        print(f"{m:<8} {fmt(a['recall@5']):>8} {fmt(a['recall@10']):>9} {fmt(a['hit@5']):>6} {fmt(a['hit@10']):>6}  | {cells}")
    if n_adv:
        print(f"adversarial (cat 5, {n_adv} questions) recall@10: "
              + " ".join(f"{m} {fmt(res[m]['adversarial']['recall@10'])}" for m in METHODS))
    print(f"store: {turns / spent:.1f} turns/s; search p50/p95 ms: "
          + " ".join(f"{m} {lat[m]['p50']:.1f}/{lat[m]['p95']:.1f}" for m in MODES)
          + "; question embedding cached: "
          + " ".join(f"{m} {lat_cached[m]['p50']:.1f}/{lat_cached[m]['p95']:.1f}" for m in cached))
    notes = []
    if errors:
        notes.append("search errors (counted as nothing found): "
                     + "; ".join(f"{k} x{v}" for k, v in errors.items()))
    if differ:
        notes.append(f"{differ} searches ranked differently with the embedding cached")
    if archived:
        notes.append(f"{archived} memories were archived during the run")
    for n in notes:
        print("locomo: " + n)

    if args.json:
        out = {
            "data": str(args.data), "model": model, "captions": not args.no_captions,
            "conversations": len(convs), "turns": n_turns,
            "questions": {"cat_1_4": n_main, "adversarial": n_adv,
                          "by_category": {name: counts[c] for c, name in CATEGORIES.items()}},
            "evidence": {"repaired": ev["repaired"], "dropped": ev["dropped"],
                         "questions_without_evidence": dict((k, v) for k, v in ev.items() if k.startswith("no_evidence"))},
            "k": K, "methods": res,
            "store": {"turns": turns, "calls": calls, "seconds": spent, "turns_per_s": turns / spent},
            "search_ms": lat, "search_ms_embedding_cached": lat_cached,
            "notes": notes,
        }
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(out, f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()
