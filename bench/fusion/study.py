"""Offline study of hybrid fusion functions (issue 20): memori's features once, fusions offline.

    python study.py collect [--host /var/run/memori] [--port 5499] [--features F]
    python study.py fuse    [--features F] [--json out.json]
    python study.py report  [--features F] [--data locomo-dev.json]

`collect` stores each data set once in a throw-away database (LoCoMo with bench/locomo/run.py's
loader and storing, the Text2SQL set with bench/eval's), asks every question once with
memori_search(k => 1000, mode => 'hybrid', explain => true): for these scopes (at most 663
memories per user) that returns every memory of the user with its cosine similarity, its full
vector rank (from the ordering of similarities), and, for each memory sharing a term with the
question, its text rank and text score. It also records memori's own top 10 in each mode
(k => 10), so that `fuse` can check that it reproduces memori exactly, and drops the databases.
The features hold LoCoMo text ids (CC BY-NC 4.0): they are written outside the repository
(default /tmp/memori_fusion/features.json).

`fuse` evaluates fusion functions on those features, with memori's candidate pools simulated
(pool(k) = max(4k, 40) per ranking: a memory is a candidate when its vector rank or its text
rank is within the pool; a rank outside it counts as absent, as in memori), at pool 40 (k 10,
memori's default) and 100. It first checks that memori's own top 10 per mode is reproduced
(one LoCoMo text-mode search of 2,115 differs: tied text scores whose float sums differ in the
last bit between plans), then prints one row per function: LoCoMo recall@5/@10, hit@10, recall@10
per category and for category 5; Text2SQL identifier and paraphrase hit@1, MRR@10, recall@5;
negatives empty at memori.min_similarity. Then, for a few functions, LoCoMo recall@10 per
conversation and paired differences to text mode with their standard errors.

`report` compares the short list of candidates in full (issue 20's acceptance figures): LoCoMo
recall@5, recall@10 and hit@10 overall and per category, recall@10 per conversation; Text2SQL
identifier and paraphrase hit@1 and MRR@10, negatives; paired differences (recall@10 per question,
hit@1 per question) to text, vector and today's hybrid with their standard errors, overall, per
category and per conversation; and sensitivity sweeps of the chosen function's one weight and of
the candidate pool depth. BM25 (bench/locomo/run.py's, over the same texts; bench/eval's memories
for Text2SQL) is computed in the same run when the LoCoMo data is present.

Features collected once take about 95 s on the 2-core machine; `fuse` about 10 s, `report` 20 s.
"""

import argparse
import importlib.util
import json
import math
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCH = HERE.parent
DEFAULT_FEATURES = "/tmp/memori_fusion/features.json"


def _module(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ------------------------------------------------------------------------------- collect

FEATURES_SQL = """
SELECT s.ord, m.id, {key}, s.explain
  FROM memori_search(%s, k => 1000, mode => 'hybrid', explain => true, user_id => %s)
       WITH ORDINALITY AS s(memory_id, content, memory_type, similarity, score, importance,
                            context_tags, metadata, conversation_id, created_at, explain, ord)
  JOIN memori_memories m ON m.memory_id = s.memory_id
 ORDER BY s.ord"""

TOP_SQL = """
SELECT {key} FROM memori_search(%s, k => 10, mode => %s, user_id => %s, min_similarity => %s) s"""


def features(conn, key, user, question):
    rows = conn.execute(FEATURES_SQL.format(key=key), (question, user)).fetchall()
    out = []
    for _, mid, k, e in rows:
        out.append({"id": mid, "key": k, "sim": e["similarity"], "vrank": None,
                    "trank": e["text_rank"], "tscore": e["text_score"],
                    "imp": e["importance"], "rec": e["recency"], "rel": e["relevance"],
                    "score": e["score"]})
    # Full vector rank: memori's exact order (similarity desc, id).
    for n, c in enumerate(sorted(out, key=lambda c: (-c["sim"], c["id"])), 1):
        c["vrank"] = n
    ident = conn.execute("SELECT memori_identifiers(%s) <> ''", (question,)).fetchone()[0]
    return out, ident


def tops(conn, key, user, question, min_sim=None):
    out = {}
    for mode in ("hybrid", "vector", "text"):
        out[mode] = [r[0] for r in conn.execute(
            TOP_SQL.format(key=key), (question, mode, user, None if mode == "text" else min_sim)).fetchall()]
    return out


def fresh_db(admin, db):
    admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    admin.execute(f'CREATE DATABASE "{db}"')


def collect(args):
    import psycopg

    locomo = _module("locomo_run", BENCH / "locomo/run.py")
    sys.path.insert(0, str(BENCH / "eval"))
    t2s = _module("eval_run", BENCH / "eval/run.py")
    import data as t2s_data

    conninfo = dict(host=args.host, port=args.port, user="postgres")
    admin = psycopg.connect(**conninfo, dbname="postgres", autocommit=True)
    out = {"locomo": [], "text2sql": []}
    t0 = time.monotonic()

    # LoCoMo
    db = "memori_fusion_locomo"
    convs, _ = locomo.load(args.data)
    fresh_db(admin, db)
    try:
        with psycopg.connect(**conninfo, dbname=db, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION memori CASCADE")
            conn.execute(f'ALTER DATABASE "{db}" SET memori.archive_threshold_days = 36500')
            turns, spent, _ = locomo.store(conn, convs)
            print(f"collect: LoCoMo {turns} turns stored in {spent:.0f} s", flush=True)
            key = "s.metadata->>'dia_id'"
            for c in convs:
                for category, question, evidence in c["questions"]:
                    top = tops(conn, key, c["user"], question)
                    cands, ident = features(conn, key, c["user"], question)
                    out["locomo"].append({"conv": c["id"], "category": category, "question": question,
                                          "evidence": evidence, "ident": ident, "top": top,
                                          "cands": cands})
            print(f"collect: LoCoMo {len(out['locomo'])} questions, {time.monotonic() - t0:.0f} s", flush=True)
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')

    # Text2SQL
    db = "memori_fusion_t2s"
    fresh_db(admin, db)
    try:
        with psycopg.connect(**conninfo, dbname=db, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION memori CASCADE")
            t2s.load(conn)
            threshold = conn.execute("SELECT current_setting('memori.min_similarity')::float8").fetchone()[0]
            out["min_similarity"] = threshold
            key = "s.metadata->>'key'"
            for user, kind, question, expected in t2s_data.queries():
                top = tops(conn, key, user, question, threshold if kind == "negative" else None)
                cands, ident = features(conn, key, user, question)
                out["text2sql"].append({"user": user, "kind": kind, "question": question,
                                        "expected": expected, "ident": ident, "top": top,
                                        "cands": cands})
            print(f"collect: Text2SQL {len(out['text2sql'])} questions, {time.monotonic() - t0:.0f} s", flush=True)
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')

    Path(args.features).parent.mkdir(parents=True, exist_ok=True)
    with open(args.features, "w", encoding="utf-8") as f:
        json.dump(out, f)
    print(f"collect: features written to {args.features}")



# ---------------------------------------------------------------------------------- fuse

RRF_K = 60.0
WI, WR = 0.15, 0.05  # memori.importance_weight, memori.recency_weight (defaults)


def pool(k):
    return max(4 * k, 40)


def rr(rank, k=RRF_K):
    """memori's reciprocal rank, (K+1)/(K+rank): 1 for the first, 0 when absent."""
    return 0.0 if rank is None else (k + 1.0) / (k + rank)


def candidates(q, mode, depth):
    """The candidates memori would score for a search whose pool is `depth`, each with v (its
    vector rank, None outside the pool), t, ts (text rank and score, None outside the pool)."""
    out = []
    for c in q["cands"]:
        v = c["vrank"] if mode != "text" and c["vrank"] <= depth else None
        t = c["trank"] if mode != "vector" and c["trank"] is not None and c["trank"] <= depth else None
        if v is None and t is None:
            continue
        out.append({"id": c["id"], "key": c["key"], "v": v, "t": t,
                    "ts": c["tscore"] if t is not None else None,
                    "sim": c["sim"] if mode != "text" else None,
                    "imp": c["imp"], "rec": c["rec"]})
    return out


def ranked(q, fn, k=10, mode="hybrid", depth=None, min_sim=None, blend=True):
    """memori's rank(): filter by min_similarity, relevance by `fn`, score blended with importance
    and recency, ordered by score, similarity, id; the best k keys."""
    cs = candidates(q, mode, depth or pool(k))
    if min_sim is not None:
        cs = [c for c in cs if c["sim"] is not None and c["sim"] >= min_sim]
    if not cs:
        return []
    rel = fn(cs, q)
    scored = []
    for c, r in zip(cs, rel):
        s = r * (1 - WI - WR) + WI * c["imp"] + WR * c["rec"] if blend else r
        sim = c["sim"] if c["sim"] is not None else -2.0
        scored.append((-s, -sim, c["id"], c["key"]))
    scored.sort()
    return [x[3] for x in scored[:k]]


# Fusion functions: fn(candidates, question) -> relevance per candidate.

def f_vector(cs, q):
    return [c["sim"] if c["sim"] is not None else -1.0 for c in cs]


def f_text(cs, q):
    return [rr(c["t"]) for c in cs]


def f_current(exponent=None, bonus=0.2, use_rank=True):
    def fn(cs, q):
        e = exponent if exponent is not None else (1 if q["ident"] else 3)
        return [c["sim"] + bonus * min(max(c["ts"] or 0.0, 0.0), 1.0) ** e * (rr(c["t"]) if use_rank else (1.0 if c["t"] else 0.0))
                for c in cs]
    return fn


def f_lin(lam):
    """cos + lam * text_score (0 without a text match): absolute scores, so a memory's relevance
    depends neither on the other candidates nor on the pool depth."""
    def fn(cs, q):
        return [c["sim"] + lam * min(max(c["ts"] or 0.0, 0.0), 1.0) for c in cs]
    return fn


def f_rrf(wv=1.0, wt=1.0, k=RRF_K):
    """Weighted RRF, scaled so that first in both lists is 1: (wv rr(v) + wt rr(t)) / (wv + wt)."""
    def fn(cs, q):
        return [(wv * rr(c["v"], k) + wt * rr(c["t"], k)) / (wv + wt) for c in cs]
    return fn


def f_rrf_cov(k=RRF_K):
    """RRF whose text term is weighted by the coverage (text_score) of the query it matched."""
    def fn(cs, q):
        return [(rr(c["v"], k) + (c["ts"] or 0.0) * rr(c["t"], k)) / 2 for c in cs]
    return fn


def _mm(xs):
    """min-max over the values present; absent -> 0."""
    present = [x for x in xs if x is not None]
    if not present:
        return [0.0] * len(xs)
    lo, hi = min(present), max(present)
    if hi <= lo:
        return [1.0 if x is not None else 0.0 for x in xs]
    return [(x - lo) / (hi - lo) if x is not None else 0.0 for x in xs]


def _tmm(xs, inf):
    """theoretical min-max (Bruch et al. 2023): (x - inf) / (observed max - inf); absent -> 0."""
    present = [x for x in xs if x is not None]
    if not present:
        return [0.0] * len(xs)
    hi = max(present)
    if hi <= inf:
        return [0.0] * len(xs)
    return [(x - inf) / (hi - inf) if x is not None else 0.0 for x in xs]


def _z(xs):
    """z-score over the values present; absent -> the minimum present."""
    present = [x for x in xs if x is not None]
    if len(present) < 2:
        return [1.0 if x is not None else 0.0 for x in xs]
    m = sum(present) / len(present)
    sd = math.sqrt(sum((x - m) ** 2 for x in present) / len(present)) or 1.0
    lo = (min(present) - m) / sd
    return [(x - m) / sd if x is not None else lo for x in xs]


def f_cc(alpha, norm="raw", sim_inf=-1.0):
    """Convex combination alpha * N(cos) + (1 - alpha) * N(text_score); a memory without a text
    match has text_score 0 (raw, tmm) or the normalisation's floor (mm, z)."""
    def fn(cs, q):
        sims = [c["sim"] for c in cs]
        tss = [c["ts"] for c in cs]
        if norm == "raw":
            a, b = sims, [t or 0.0 for t in tss]
        elif norm == "mm":
            a, b = _mm(sims), _mm(tss)
        elif norm == "tmm":
            a, b = _tmm(sims, sim_inf), _tmm(tss, 0.0)
        elif norm == "z":
            a, b = _z(sims), _z(tss)
        else:
            raise ValueError(norm)
        return [alpha * x + (1 - alpha) * y for x, y in zip(a, b)]
    return fn


# ------------------------------------------------------------------------------- metrics

LOCOMO_CATS = {1: "multi-hop", 2: "temporal", 3: "open", 4: "single-hop"}


def locomo_scores(qs, fn, **kw):
    """per question: recall@5, recall@10, hit@5, hit@10."""
    out = []
    for q in qs:
        found = ranked(q, fn, **kw)
        ev = set(q["evidence"])
        r5 = len(ev & set(found[:5])) / len(ev)
        r10 = len(ev & set(found[:10])) / len(ev)
        out.append((r5, r10, float(r5 > 0), float(r10 > 0)))
    return out


def locomo_summary(qs, per_q):
    def mean(rows):
        return [sum(r[i] for r in rows) / len(rows) for i in range(4)] if rows else [float("nan")] * 4
    main = [s for q, s in zip(qs, per_q) if q["category"] in LOCOMO_CATS]
    res = {"all": mean(main)}
    for cat, name in LOCOMO_CATS.items():
        res[name] = mean([s for q, s in zip(qs, per_q) if q["category"] == cat])
    res["adversarial"] = mean([s for q, s in zip(qs, per_q) if q["category"] == 5])
    return res


def t2s_scores(qs, fn, min_sim, **kw):
    res = {}
    for q in qs:
        t = res.setdefault(q["kind"], {"n": 0, "hit1": 0.0, "mrr": 0.0, "r5": 0.0, "empty": 0, "per_q": []})
        t["n"] += 1
        if q["kind"] == "negative":
            t["empty"] += not ranked(q, fn, min_sim=min_sim, **kw)
            continue
        found = ranked(q, fn, **kw)
        ranks = [found.index(e) + 1 for e in q["expected"] if e in found]
        best = min(ranks) if ranks else None
        t["hit1"] += best == 1
        t["mrr"] += 1.0 / best if best else 0.0
        t["r5"] += sum(1 for r in ranks if r <= 5) / len(q["expected"])
        t["per_q"].append(float(best == 1))
    for t in res.values():
        for m in ("hit1", "mrr", "r5"):
            t[m] /= t["n"]
    return res


def check_reproduction(feat):
    """memori's own top 10 per mode against the offline ranking of the same features."""
    fns = {"hybrid": f_current(), "vector": f_vector, "text": f_text}
    bad = defaultdict(int)
    total = 0
    for name in ("locomo", "text2sql"):
        for q in feat[name]:
            min_sim = feat["min_similarity"] if q.get("kind") == "negative" else None
            for mode, fn in fns.items():
                total += 1
                mine = ranked(q, fn, mode=mode, min_sim=None if mode == "text" else min_sim)
                if mine != q["top"][mode]:
                    bad[(name, mode)] += 1
    return total, dict(bad)


def functions():
    """(name, fn, family) of every function studied."""
    fs = [("vector", f_vector, "single"), ("text", f_text, "single"),
          ("current (e=1 ident / 3 other)", f_current(), "current"),
          ("current, e=1 everywhere", f_current(1), "current"),
          ("current, e=3 everywhere", f_current(3), "current")]
    for b in (0.1, 0.3, 0.5):
        fs.append((f"current e=1, bonus {b}", f_current(1, b), "current"))
    for lam in (0.2, 0.3, 0.4, 0.45, 0.5, 0.6, 0.7, 1.0):
        fs.append((f"cos + {lam} ts", f_current(1, lam, False), "linear"))
    fs.append(("cos + 0.5 ts rr(t)", f_current(1, 0.5), "linear"))
    fs.append(("cos + 0.5 ts^2", f_current(2, 0.5, False), "linear"))
    fs.append(("cos + 0.5 ts (ident: e=1, else e=3)", f_current(None, 0.5, False), "linear"))
    fs.append(("RRF k=60, text x coverage", f_rrf_cov(), "rrf"))
    fs.append(("RRF k=60", f_rrf(), "rrf"))
    for k in (10, 30, 100):
        fs.append((f"RRF k={k}", f_rrf(k=k), "rrf"))
    for wv, wt in ((2, 1), (1.5, 1), (1, 1.5), (1, 2)):
        fs.append((f"RRF k=60 wv={wv} wt={wt}", f_rrf(wv, wt), "rrf"))
    for norm in ("raw", "tmm", "mm", "z"):
        for a in (0.3, 0.4, 0.5, 0.6, 0.7, 0.8):
            fs.append((f"CC {norm} a={a}", f_cc(a, norm), "cc-" + norm))
    for a in (0.3, 0.4, 0.5, 0.6, 0.7, 0.8):
        fs.append((f"CC tmm(inf cos=0) a={a}", f_cc(a, "tmm", 0.0), "cc-tmm0"))
    return fs


def fuse(args):
    with open(args.features, encoding="utf-8") as f:
        feat = json.load(f)
    total, bad = check_reproduction(feat)
    print(f"reproduction of memori's top 10 (hybrid, vector, text; {total} searches): "
          + ("exact" if not bad else f"differs: {bad}"))
    loc, t2s, min_sim = feat["locomo"], feat["text2sql"], feat["min_similarity"]
    n_main = sum(1 for q in loc if q["category"] in LOCOMO_CATS)
    print(f"LoCoMo {n_main} questions (cat 1-4), Text2SQL {len(t2s)}; min_similarity {min_sim}")

    results = []
    for depth_name, depth in (("pool 40", None), ("pool 100", 100)):
        print(f"\n== candidates: {depth_name} per ranking ==")
        hdr = (f"{'function':<32} {'r@5':>5} {'r@10':>5} {'h@10':>5} | {'mhop':>5} {'temp':>5} {'open':>5} {'shop':>5} {'adv':>5} |"
               f" {'id h1':>5} {'mrr':>5} {'r@5':>5} | {'pa h1':>5} {'mrr':>5} {'r@5':>5} | neg")
        print(hdr)
        for name, fn, fam in functions():
            mode = "vector" if name == "vector" else "text" if name == "text" else "hybrid"
            kw = {"mode": mode, "depth": depth}
            pq = locomo_scores(loc, fn, **kw)
            ls = locomo_summary(loc, pq)
            ts = t2s_scores(t2s, fn, None if mode == "text" else min_sim, **kw)
            i, p, n = ts["identifier"], ts["paraphrase"], ts["negative"]
            print(f"{name:<32} {ls['all'][0]:.3f} {ls['all'][1]:.3f} {ls['all'][3]:.3f} |"
                  f" {ls['multi-hop'][1]:.3f} {ls['temporal'][1]:.3f} {ls['open'][1]:.3f} {ls['single-hop'][1]:.3f} {ls['adversarial'][1]:.3f} |"
                  f" {i['hit1']:.3f} {i['mrr']:.3f} {i['r5']:.3f} | {p['hit1']:.3f} {p['mrr']:.3f} {p['r5']:.3f} | {n['empty']}/{n['n']}")
            results.append({"pool": depth_name, "function": name, "family": fam, "locomo": ls,
                            "locomo_per_q": pq,
                            "text2sql": {k: {m: v for m, v in t.items()} for k, t in ts.items()}})
    analysis(feat)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f)
    return results


SELECTED = [("vector", f_vector, "vector"), ("text", f_text, "text"),
            ("current", f_current(), "hybrid"), ("RRF k=60", f_rrf(), "hybrid"),
            ("cos + 0.5 ts", f_current(1, 0.5, False), "hybrid"),
            ("cos + 0.5 ts rr(t)", f_current(1, 0.5), "hybrid"),
            ("CC mm a=0.5", f_cc(0.5, "mm"), "hybrid"), ("CC z a=0.5", f_cc(0.5, "z"), "hybrid"),
            ("CC tmm0 a=0.6", f_cc(0.6, "tmm", 0.0), "hybrid")]


def analysis(feat):
    """Per conversation, paired differences against text mode with their standard errors,
    negatives' nearest similarity, evidence below min_similarity."""
    loc, t2s, min_sim = feat["locomo"], feat["text2sql"], feat["min_similarity"]
    main = [q for q in loc if q["category"] in LOCOMO_CATS]
    convs = sorted({q["conv"] for q in main})
    per = {name: locomo_scores(main, fn, mode=mode) for name, fn, mode in SELECTED}
    print("\n== LoCoMo recall@10 per conversation; paired difference to text mode (+- 1 SE) ==")
    print(f"{'function':<20} " + " ".join(f"{c:>7}" for c in convs)
          + " | " + " ".join(f"{n:>13}" for n in ["all"] + list(LOCOMO_CATS.values())))
    for name, _, _ in SELECTED:
        cells = []
        for c in convs:
            xs = [s[1] for q, s in zip(main, per[name]) if q["conv"] == c]
            cells.append(f"{sum(xs) / len(xs):>7.3f}")
        diffs = []
        for sel in [None] + list(LOCOMO_CATS):
            d = [a[1] - b[1] for q, a, b in zip(main, per[name], per["text"]) if sel in (None, q["category"])]
            m = sum(d) / len(d)
            se = math.sqrt(sum((x - m) ** 2 for x in d) / (len(d) - 1) / len(d))
            diffs.append(f"{m:+.3f}+-{se:.3f}")
        print(f"{name:<20} " + " ".join(cells) + " | " + " ".join(f"{x:>13}" for x in diffs))

    neg = [max(c["sim"] for c in q["cands"]) for q in t2s if q["kind"] == "negative"]
    print(f"\nnegatives: nearest memory's similarity max {max(neg):.3f}, median {sorted(neg)[len(neg) // 2]:.3f}"
          f" (min_similarity {min_sim}); every function keeps the filter on similarity before fusing")
    low = [c["sim"] for q in main for c in q["cands"] if c["key"] in q["evidence"]]
    print(f"LoCoMo evidence turns below min_similarity {min_sim}: {sum(s < min_sim for s in low)}/{len(low)}")
    ties = 0
    tot = 0
    for q in main:
        ts = [c["tscore"] for c in q["cands"] if c["trank"] is not None and c["trank"] <= 10]
        tot += 1
        ties += len(ts) != len(set(ts))
    print(f"LoCoMo questions whose text top 10 holds tied text scores: {ties}/{tot}")


# -------------------------------------------------------------------------------- report

def _mean_se(xs):
    m = sum(xs) / len(xs)
    se = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1) / len(xs)) if len(xs) > 1 else 0.0
    return m, se


def bm25_found(feat, data):
    """BM25 top 10 per question (bench/locomo/run.py's BM25 over the same turn texts, one index per
    conversation; bench/eval's memories, one index per user), keyed like the features; None
    without the LoCoMo data."""
    if not data or not Path(data).exists():
        return None
    locomo = _module("locomo_run", BENCH / "locomo/run.py")
    sys.path.insert(0, str(BENCH / "eval"))
    import data as t2s_data
    convs, _ = locomo.load(data)
    out = {}
    for c in convs:
        docs = [t for _, s in c["sessions"] for t in s]
        bm = locomo.BM25([t for _, t in docs])
        for _, question, _ in c["questions"]:
            out[("locomo", c["id"], question)] = [docs[i][0] for i in bm.top(question, 10)]
    mems = defaultdict(list)
    for user, key, _, content in t2s_data.memories():
        mems[user].append((key, content))
    for user, docs in mems.items():
        bm = locomo.BM25([t for _, t in docs])
        for u, _, question, _ in t2s_data.queries():
            if u == user:
                out[("text2sql", user, question)] = [docs[i][0] for i in bm.top(question, 10)]
    return out


def evaluate(feat, fn, mode="hybrid", depth=None, bm25=None):
    """Per question: LoCoMo (r5, r10, h5, h10) and Text2SQL hit@1 / reciprocal rank / empty."""
    loc = [q for q in feat["locomo"] if q["category"] in LOCOMO_CATS]
    min_sim = feat["min_similarity"]
    res = {"loc": [], "t2s": {"identifier": [], "paraphrase": [], "negative": []}}
    for q in loc:
        found = bm25[("locomo", q["conv"], q["question"])] if bm25 else ranked(q, fn, mode=mode, depth=depth)
        ev = set(q["evidence"])
        r5, r10 = len(ev & set(found[:5])) / len(ev), len(ev & set(found[:10])) / len(ev)
        res["loc"].append((r5, r10, float(r5 > 0), float(r10 > 0)))
    for q in feat["text2sql"]:
        if bm25:
            found = bm25[("text2sql", q["user"], q["question"])]
        else:
            found = ranked(q, fn, mode=mode, depth=depth,
                           min_sim=min_sim if q["kind"] == "negative" and mode != "text" else None)
        if q["kind"] == "negative":
            res["t2s"]["negative"].append(float(not found))
            continue
        ranks = [found.index(e) + 1 for e in q["expected"] if e in found]
        best = min(ranks) if ranks else None
        res["t2s"][q["kind"]].append((float(best == 1), 1.0 / best if best else 0.0))
    return loc, res


def report(args):
    with open(args.features, encoding="utf-8") as f:
        feat = json.load(f)
    bm = bm25_found(feat, args.data)
    cands = [("vector", f_vector, "vector", None), ("text", f_text, "text", None),
             ("hybrid today", f_current(), "hybrid", None)]
    if bm:
        cands.append(("BM25 (run.py)", None, "bm25", None))
    cands += [("RRF k=60, pool 40", f_rrf(), "hybrid", None),
              ("RRF k=60, pool 100", f_rrf(), "hybrid", 100),
              ("CC min-max a=.5", f_cc(0.5, "mm"), "hybrid", None),
              ("CC z-score a=.5", f_cc(0.5, "z"), "hybrid", None),
              ("CC z-score a=.5, pool 100", f_cc(0.5, "z"), "hybrid", 100),
              ("cos + .5 ts", f_lin(0.5), "hybrid", None),
              ("cos + .5 ts, pool 100", f_lin(0.5), "hybrid", 100)]
    out = {}
    for name, fn, mode, depth in cands:
        loc, out[name] = evaluate(feat, fn, mode, depth, bm if mode == "bm25" else None)
    convs = sorted({q["conv"] for q in loc})
    groups = [("all", lambda q: True)] + [(n, (lambda c: lambda q: q["category"] == c)(c)) for c, n in LOCOMO_CATS.items()]
    cgroups = [(c, (lambda c: lambda q: q["conv"] == c)(c)) for c in convs]

    def avg(rows, i, sel):
        xs = [r[i] for q, r in zip(loc, rows) if sel(q)]
        return sum(xs) / len(xs)

    print(f"LoCoMo {len(loc)} questions (cat 1-4): " + ", ".join(
        f"{n} {sum(1 for q in loc if s(q))}" for n, s in groups[1:] + cgroups))
    print("\n== LoCoMo: r@5 / r@10 / h@10 overall and per category ==")
    print(f"{'function':<27} " + " ".join(f"{n:>17}" for n, _ in groups))
    for name in out:
        rows = out[name]["loc"]
        print(f"{name:<27} " + " ".join(f"{avg(rows, 0, s):.3f} {avg(rows, 1, s):.3f} {avg(rows, 3, s):.3f}" for _, s in groups))
    print("\n== LoCoMo r@10 per conversation; Text2SQL hit@1 / MRR@10, negatives empty ==")
    print(f"{'function':<27} " + " ".join(f"{c:>7}" for c in convs) + f" | {'ident h1':>8} {'mrr':>5} | {'para h1':>8} {'mrr':>5} | neg")
    for name in out:
        t = out[name]["t2s"]
        i, p, n = t["identifier"], t["paraphrase"], t["negative"]
        print(f"{name:<27} " + " ".join(f"{avg(out[name]['loc'], 1, s):>7.3f}" for _, s in cgroups)
              + f" | {_mean_se([x[0] for x in i])[0]:>8.3f} {_mean_se([x[1] for x in i])[0]:.3f}"
              + f" | {_mean_se([x[0] for x in p])[0]:>8.3f} {_mean_se([x[1] for x in p])[0]:.3f} | {int(sum(n))}/{len(n)}")
    for base in ("text", "vector", "hybrid today"):
        print(f"\n== paired differences to {base} (+- 1 SE): LoCoMo r@10 overall, per category, per conversation; Text2SQL hit@1 ==")
        print(f"{'function':<27} " + " ".join(f"{n:>13}" for n, _ in groups + cgroups) + f" {'ident h1':>13} {'para h1':>13}")
        for name in out:
            if name == base:
                continue
            cells = []
            for _, s in groups + cgroups:
                d = [a[1] - b[1] for q, a, b in zip(loc, out[name]["loc"], out[base]["loc"]) if s(q)]
                cells.append("%+.3f+-%.3f" % _mean_se(d))
            for kind in ("identifier", "paraphrase"):
                d = [a[0] - b[0] for a, b in zip(out[name]["t2s"][kind], out[base]["t2s"][kind])]
                cells.append("%+.3f+-%.3f" % _mean_se(d))
            print(f"{name:<27} " + " ".join(f"{c:>13}" for c in cells))

    print("\n== sensitivity: cos + lam * ts (pool 40 / pool 100) ==")
    print(f"{'lam':>5} {'pool':>4} {'r@5':>5} {'r@10':>5} {'h@10':>5} | " + " ".join(f"{n[:5]:>5}" for n, _ in groups[1:])
          + " | " + " ".join(f"{c:>7}" for c in convs) + " | id h1 pa h1 | neg")
    for lam in (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0):
        for depth in (None, 100):
            _, r = evaluate(feat, f_lin(lam), "hybrid", depth)
            rows, t = r["loc"], r["t2s"]
            print(f"{lam:>5} {depth or 40:>4} {avg(rows, 0, groups[0][1]):.3f} {avg(rows, 1, groups[0][1]):.3f} {avg(rows, 3, groups[0][1]):.3f} | "
                  + " ".join(f"{avg(rows, 1, s):.3f}" for _, s in groups[1:]) + " | "
                  + " ".join(f"{avg(rows, 1, s):>7.3f}" for _, s in cgroups)
                  + f" | {_mean_se([x[0] for x in t['identifier']])[0]:.3f} {_mean_se([x[0] for x in t['paraphrase']])[0]:.3f} | {int(sum(t['negative']))}/{len(t['negative'])}")
    print("\n== pool depth per ranking (k 10): r@10 overall / para h1 ==")
    for name, fn in (("cos + .5 ts", f_lin(0.5)), ("RRF k=60", f_rrf()), ("CC z-score a=.5", f_cc(0.5, "z"))):
        cells = []
        for depth in (10, 20, 40, 50, 100, 200):
            _, r = evaluate(feat, fn, "hybrid", depth)
            cells.append(f"{depth}: {avg(r['loc'], 1, groups[0][1]):.3f}/{_mean_se([x[0] for x in r['t2s']['paraphrase']])[0]:.3f}")
        print(f"{name:<17} " + "  ".join(cells))


# ---------------------------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("step", choices=("collect", "fuse", "report"))
    ap.add_argument("--host", default="/var/run/memori")
    ap.add_argument("--port", default=5499, type=int)
    ap.add_argument("--data", default=os.environ.get("MEMORI_LOCOMO")
                    or str(BENCH.parents[1] / "shared/data/locomo-dev/locomo-dev.json"))
    ap.add_argument("--features", default=DEFAULT_FEATURES)
    ap.add_argument("--json", help="fuse: also write the figures to this file")
    args = ap.parse_args()
    if args.step == "collect":
        collect(args)
    elif args.step == "report":
        report(args)
    else:
        fuse(args)


if __name__ == "__main__":
    main()
