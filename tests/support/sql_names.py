#!/usr/bin/env python3
"""The names memori's SQL resolves (types, functions, operators, relations), collected from its
own sources and catalog, and the traps and calls the capture test (tests/system/capture.sh)
generates from them. Python 3 standard library only.

    sql_names.py catalog-sql
        The SQL (one JSON value) to run as a superuser in a database: memori's functions'
        bodies and declared types, its policies, CHECK constraints and index definitions (when
        memori is installed), and the catalog the traps are built from (pg_proc, pg_operator,
        pg_type, relations' columns).
    sql_names.py names ROOT CATALOG.json OUT.json
        Collects the names from ROOT's src/**/*.rs string literals, sql/schema.sql,
        sql/finalize.sql, sql/memori--*--*.sql and the catalog's memori objects; writes them to
        OUT.json and prints one line of counts.
    sql_names.py plant public|temp NAMES.json CATALOG.json ATTACKER [--without-memori]
        A psql script, run as ATTACKER, that plants the traps: in public (overloads of every
        function name, operators for pairs of the types, domains for free type names) or in
        pg_temp (domains for every type name, views for every relation name). Each object is
        created on its own (failures are counted, not fatal); the script prints
        "planted N of M". --without-memori leaves memori's own function names out (for a
        database where memori is yet to be created or updated: an overload planted first would
        only make that fail).
    sql_names.py calls CATALOG.json [--memory UUID] [--conversation UUID] [--every-function]
        One statement per line: calls of every function memori_api() returns (or, with
        --every-function, of every memori function and procedure: the DBA's too), once with
        the defaults left out and once with every argument given, each argument cast to its
        exact, qualified type; a count(*) of each of memori's tables; memori_acting_user().

Every trap raises WARNING 'captured: <what> ran as <role>' and, in a sub-block, tries
ALTER ROLE <attacker> SUPERUSER: it escalates whenever it runs as a superuser.
"""
import glob
import json
import os
import re
import sys

# --- collecting --------------------------------------------------------------------------------

# Words that may stand before "(" without being a function call.
KEYWORDS = set("""
all and any array as asc between by case cast check coalesce collate column constraint create
cross cube current_date current_time current_timestamp default delete desc distinct do else end
except exists extract filter for foreign from full greatest group grouping having if ilike in
index inner insert intersect into is join key lateral least like limit local localtime
localtimestamp not null nullif nulls offset on only or order outer over overlay partition position
primary raise references returning returns row rows select set similar some substring
table then to trim union unique update using values when where window with within xmlelement
xmlforest xmlparse xmlpi xmlroot xmlserialize xmlconcat xmlexists bit character char varchar
numeric decimal float interval timestamp time national nchar dec precision varying perform
execute query loop foreach while elsif exception materialized view conflict
sequence type domain function procedure trigger policy rule aggregate operator extension schema
grant revoke alter drop comment begin commit rollback return declare language immutable stable
volatile strict security definer invoker parallel cost setof inout out variadic raise notice
warning info debug hnsw ivfflat gin gist btree brin hash include tablespace
""".split())

# Types the grammar spells with keywords, mapped to their pg_type names.
TYPE_SPELLINGS = [
    ("double precision", "float8"), ("timestamp with time zone", "timestamptz"),
    ("timestamp without time zone", "timestamp"), ("time with time zone", "timetz"),
    ("time without time zone", "time"), ("character varying", "varchar"),
    ("bit varying", "varbit"), ("integer", "int4"), ("int", "int4"), ("bigint", "int8"),
    ("smallint", "int2"), ("real", "float4"), ("boolean", "bool"), ("decimal", "numeric"),
    ("character", "bpchar"), ("char", "bpchar"), ("float", "float8"), ("dec", "numeric"),
]

OPERATOR_CHARS = "+-*/<>=~!@#%^&|`?"
# Relation-like words that follow FROM/JOIN/... but are not relations.
NOT_RELATIONS = KEYWORDS | {"lateral", "only", "unnest", "generate_series"}


def rust_strings(text):
    """The string literals of a Rust source (normal, raw, byte and C strings), decoded."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
            continue
        if text.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
            continue
        m = re.compile(r'(?:b|c)?r(#*)"').match(text, i)
        if m and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            close = '"' + m.group(1)
            j = text.find(close, m.end())
            if j < 0:
                break
            out.append(text[m.end():j])
            i = j + len(close)
            continue
        if c == '"' or (c in "bc" and text.startswith('"', i + 1)
                        and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_"))):
            i = i + 1 if c == '"' else i + 2
            buf = []
            while i < n and text[i] != '"':
                if text[i] == "\\" and i + 1 < n:
                    e = text[i + 1]
                    if e == "\n":  # line continuation: skips the newline and leading blanks
                        i += 2
                        while i < n and text[i] in " \t\n\r":
                            i += 1
                        continue
                    buf.append({"n": "\n", "t": "\t", "r": "\r", "0": "\0", '"': '"', "'": "'", "\\": "\\"}.get(e, e))
                    i += 2
                    if e == "u":  # \u{...}
                        j = text.find("}", i)
                        i = j + 1
                    elif e == "x":
                        i += 2
                    continue
                buf.append(text[i])
                i += 1
            out.append("".join(buf))
            i += 1
            continue
        if c == "'":
            # A char literal ('a', '\n', '\'') or a lifetime ('a): skip only the former.
            m = re.compile(r"'(?:\\.[^']*|[^'\\])'").match(text, i)
            i = m.end() if m else i + 1
            continue
        i += 1
    return out


def looks_like_sql(s):
    return bool(re.search(r"\b(SELECT|INSERT|UPDATE|DELETE|FROM|WHERE|JOIN|CREATE|ALTER|DROP|GRANT|"
                          r"REVOKE|LOCK|WITH|VALUES|RETURNING|SET|AND|OR|CASE|ORDER BY|ON CONFLICT)\b", s)
                or "::" in s or "OPERATOR(" in s or re.search(r"\$\d", s))


def strip_format(s):
    """format!'s placeholders ({nsp}, {}, {0:?}) removed, {{ and }} unescaped."""
    s = re.sub(r"(?<!\{)\{[A-Za-z_0-9.]*(?::[^{}]*)?\}(?!\})", " ", s)
    return s.replace("{{", "{").replace("}}", "}")


def strip_comments(sql):
    sql = re.sub(r"/\*.*?\*/", " ", sql, flags=re.S)
    return re.sub(r"--[^\n]*", " ", sql)


def unquote(ident):
    if ident.startswith('"') and ident.endswith('"'):
        return ident[1:-1].replace('""', '"')
    return ident.lower()


IDENT = r'(?:"(?:[^"]|"")+"|[A-Za-z_][A-Za-z_0-9$]*)'
QUALIFIED = IDENT + r'(?:\s*\.\s*' + IDENT + r')*'


def type_name(spelled):
    """'pg_catalog.oid' -> 'oid'; 'double precision' -> 'float8'; 'text[]' -> 'text'."""
    t = re.sub(r"\s+", " ", spelled.strip())
    t = re.sub(r"(\s*\[\s*\d*\s*\])+$", "", t)
    t = re.sub(r"\s*\([^)]*\)$", "", t)  # vector(384), numeric(3,2)
    low = t.lower()
    for k, v in TYPE_SPELLINGS:
        if low == k or low == "pg_catalog." + k:
            return v
    parts = re.findall(IDENT, t)
    return unquote(parts[-1]) if parts else None


MULTIWORD = "|".join(re.escape(k) for k, _ in TYPE_SPELLINGS if " " in k)
TYPE_AFTER = r"(?:" + MULTIWORD + r"|" + QUALIFIED + r")(?:\s*\(\s*\d+(?:\s*,\s*\d+)?\s*\))?(?:\s*\[\s*\d*\s*\])*"


class Names:
    def __init__(self):
        self.types, self.functions, self.operators, self.relations = set(), set(), set(), set()
        self.array_types = set()

    def add_type(self, spelled):
        t = type_name(spelled)
        if t and re.match(r"^[a-z_][a-z_0-9]*$", t) and t not in ("setof", "table"):
            self.types.add(t)
            if re.search(r"\]\s*$", spelled):
                self.array_types.add(t)
        return t

    def scan(self, sql):
        """Collects the names one piece of SQL uses."""
        sql = strip_comments(sql)
        # Types: after ::, in CAST(.. AS t), and plpgsql DECLARE sections.
        for m in re.finditer(r"::\s*(" + TYPE_AFTER + ")", sql, flags=re.I):
            self.add_type(m.group(1))
        for m in re.finditer(r"\bAS\s+(" + TYPE_AFTER + r")\s*\)", sql, flags=re.I):
            pre = sql[max(0, m.start() - 400):m.start()]
            if re.search(r"CAST\s*\([^()]*(?:\([^()]*\)[^()]*)*$", pre, flags=re.I):
                self.add_type(m.group(1))
        for d in re.finditer(r"\bDECLARE\b(.*?)\bBEGIN\b", sql, flags=re.I | re.S):
            for line in d.group(1).split(";"):
                m = re.match(r"\s*" + IDENT + r"\s+(?:CONSTANT\s+)?(" + TYPE_AFTER + r")", line, flags=re.I)
                if m and not re.match(r"(?i)\s*(ALIAS|CURSOR|REFCURSOR)\b", m.group(1)):
                    self.add_type(m.group(1))
        # Operators: OPERATOR(schema.op) and bare ones (outside literals and quoted names).
        for m in re.finditer(r"OPERATOR\s*\(\s*(?:" + IDENT + r"\s*\.\s*)?([^\s()]+)\s*\)", sql, flags=re.I):
            self.operators.add(m.group(1))
        bare = re.sub(r"OPERATOR\s*\([^()]*\)", " ", sql, flags=re.I)
        bare = re.sub(r"'(?:[^']|'')*'", " '' ", bare)
        bare = re.sub(r'"(?:[^"]|"")*"', " x ", bare)
        bare = re.sub(r"\$[A-Za-z_0-9]*\$", " ", bare)
        for m in re.finditer(r"[" + re.escape(OPERATOR_CHARS) + r"]+", bare):
            op = m.group(0)
            # PostgreSQL's lexer: a multi-char operator ending in + or - is cut unless it holds
            # one of ~ ! @ # % ^ & | ` ?.
            while len(op) > 1 and op[-1] in "+-" and not re.search(r"[~!@#%^&|`?]", op):
                op = op[:-1]
            if op in ("=>", ":=") or "--" in op or "/*" in op:
                continue
            self.operators.add(op)
        # Functions: identifiers followed by "(" that are not keywords, nor after :: / INTO /
        # TABLE / REFERENCES / ON ... / USING (type modifiers, column lists, index methods).
        for m in re.finditer(r"(" + QUALIFIED + r")\s*\(", sql):
            name = unquote(re.findall(IDENT, m.group(1))[-1])
            pre = sql[max(0, m.start() - 400):m.start()].rstrip()
            if name in KEYWORDS or name.startswith("$"):
                continue
            if re.search(r"(::|\bINTO|\bTABLE|\bREFERENCES|\bUSING|\bINDEX\s+\S+\s+ON|\bON\s+CONFLICT|\bKEY|\bEXISTS"
                         r"|\bCONSTRAINT\s+\S+\s+(?:CHECK|UNIQUE|PRIMARY\s+KEY)|\bOF)\s*$", pre, flags=re.I):
                continue
            if re.search(r"\bON\s*$", pre, flags=re.I) and re.search(r"\bINDEX\b[^;]*$", pre, flags=re.I):
                continue
            # A type modifier in a declaration: "embedding vector(384)", "numeric(3,2)".
            if re.search(r"\b(vector|halfvec|sparsevec|bit|varchar|numeric|timestamp|interval|char)$", name):
                if re.search(r"(::|\bAS|\bRETURNS|,|\()\s*$", pre, flags=re.I):
                    continue
            self.functions.add(name)
        # Relations: after FROM / JOIN / UPDATE / INTO (and DELETE FROM, TRUNCATE, LOCK TABLE).
        for m in re.finditer(r"\b(?:FROM|JOIN|UPDATE|INTO|TRUNCATE|LOCK\s+TABLE|LOCK)\s+(?:ONLY\s+)?(" + QUALIFIED + r")(\s*\()?", sql, flags=re.I):
            if m.group(2):  # FROM f(...): a function
                continue
            name = unquote(re.findall(IDENT, m.group(1))[-1])
            if name not in NOT_RELATIONS and not name.startswith("$"):
                self.relations.add(name)

    def as_json(self):
        return {k: sorted(getattr(self, k)) for k in ("types", "functions", "operators", "relations", "array_types")}


def source_sql(root):
    """(origin, sql) for every piece of SQL in memori's sources."""
    pieces = []
    for path in sorted(glob.glob(os.path.join(root, "src", "**", "*.rs"), recursive=True)):
        with open(path, encoding="utf-8") as f:
            for s in rust_strings(f.read()):
                if looks_like_sql(s):
                    pieces.append((os.path.relpath(path, root), strip_format(s)))
    files = [os.path.join(root, "sql", "schema.sql"), os.path.join(root, "sql", "finalize.sql")]
    files += sorted(glob.glob(os.path.join(root, "sql", "memori--*--*.sql")))
    for path in files:
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                pieces.append((os.path.relpath(path, root), f.read().replace("@extschema@", "public")))
    return pieces


# --- the catalog -------------------------------------------------------------------------------

CATALOG_SQL = r"""
WITH ext AS (SELECT e.oid FROM pg_catalog.pg_extension e WHERE e.extname OPERATOR(pg_catalog.=) 'memori'::pg_catalog.name),
mine AS (SELECT d.classid, d.objid FROM pg_catalog.pg_depend d, ext
          WHERE d.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_extension'::pg_catalog.regclass
            AND d.refobjid OPERATOR(pg_catalog.=) ext.oid AND d.deptype OPERATOR(pg_catalog.=) 'e'::pg_catalog."char"),
myprocs AS (SELECT p.* FROM pg_catalog.pg_proc p JOIN mine ON mine.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_proc'::pg_catalog.regclass AND mine.objid OPERATOR(pg_catalog.=) p.oid),
myrels AS (SELECT c.* FROM pg_catalog.pg_class c JOIN mine ON mine.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass AND mine.objid OPERATOR(pg_catalog.=) c.oid)
SELECT pg_catalog.json_build_object(
  'sql', (SELECT COALESCE(pg_catalog.json_agg(x.s), '[]'::pg_catalog.json) FROM (
            SELECT p.prosrc AS s FROM myprocs p
            UNION ALL SELECT pg_catalog.pg_get_functiondef(p.oid) FROM myprocs p WHERE p.prokind OPERATOR(pg_catalog.<>) 'a'::pg_catalog."char"
            UNION ALL SELECT pg_catalog.pg_get_expr(pol.polqual, pol.polrelid) FROM pg_catalog.pg_policy pol JOIN myrels r ON r.oid OPERATOR(pg_catalog.=) pol.polrelid WHERE pol.polqual IS NOT NULL
            UNION ALL SELECT pg_catalog.pg_get_expr(pol.polwithcheck, pol.polrelid) FROM pg_catalog.pg_policy pol JOIN myrels r ON r.oid OPERATOR(pg_catalog.=) pol.polrelid WHERE pol.polwithcheck IS NOT NULL
            UNION ALL SELECT pg_catalog.pg_get_constraintdef(con.oid) FROM pg_catalog.pg_constraint con JOIN myrels r ON r.oid OPERATOR(pg_catalog.=) con.conrelid WHERE con.contype OPERATOR(pg_catalog.=) 'c'::pg_catalog."char"
            UNION ALL SELECT pg_catalog.pg_get_indexdef(i.indexrelid) FROM pg_catalog.pg_index i JOIN myrels r ON r.oid OPERATOR(pg_catalog.=) i.indrelid
            UNION ALL SELECT pg_catalog.pg_get_expr(ad.adbin, ad.adrelid) FROM pg_catalog.pg_attrdef ad JOIN myrels r ON r.oid OPERATOR(pg_catalog.=) ad.adrelid
          ) x),
  'declared_types', (SELECT COALESCE(pg_catalog.json_agg(DISTINCT t.typname), '[]'::pg_catalog.json)
                       FROM myprocs p, LATERAL pg_catalog.unnest(p.proargtypes::pg_catalog.oid[] OPERATOR(pg_catalog.||) COALESCE(p.proallargtypes, '{}'::pg_catalog.oid[]) OPERATOR(pg_catalog.||) p.prorettype) a(t0)
                       JOIN pg_catalog.pg_type t0t ON t0t.oid OPERATOR(pg_catalog.=) a.t0
                       JOIN pg_catalog.pg_type t ON t.oid OPERATOR(pg_catalog.=) CASE WHEN t0t.typelem OPERATOR(pg_catalog.<>) 0::pg_catalog.oid AND t0t.typlen OPERATOR(pg_catalog.=) (-1)::pg_catalog.int2 THEN t0t.typelem ELSE t0t.oid END),
  'tables', (SELECT COALESCE(pg_catalog.json_agg(pg_catalog.format('%I.%I', n.nspname, r.relname) ORDER BY r.relname), '[]'::pg_catalog.json)
               FROM myrels r JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) r.relnamespace WHERE r.relkind OPERATOR(pg_catalog.=) ANY ('{r,p,v,m}'::pg_catalog."char"[])),
  'ext_procs', (SELECT COALESCE(pg_catalog.json_agg(p.proname), '[]'::pg_catalog.json) FROM myprocs p),
  'api', (SELECT COALESCE(pg_catalog.json_agg(pg_catalog.json_build_object(
              'sig', a.f, 'name', p.proname, 'schema', n.nspname, 'retset', p.proretset,
              'args', (SELECT pg_catalog.json_agg(pg_catalog.format_type(t, NULL) ORDER BY o) FROM pg_catalog.unnest(p.proargtypes::pg_catalog.oid[]) WITH ORDINALITY u(t, o)),
              'argnames', p.proargnames, 'ndefaults', p.pronargdefaults) ORDER BY a.o), '[]'::pg_catalog.json)
            FROM pg_catalog.unnest(CASE WHEN EXISTS (SELECT FROM myprocs WHERE proname OPERATOR(pg_catalog.=) 'memori_api'::pg_catalog.name)
                                        THEN pg_catalog.xpath('//f/text()'::pg_catalog.text, pg_catalog.query_to_xml('SELECT pg_catalog.unnest(public.memori_api()) AS f', false, false, ''))::pg_catalog.text[]
                                        ELSE '{}'::pg_catalog.text[] END) WITH ORDINALITY a(f, o)
            JOIN pg_catalog.pg_proc p ON p.oid OPERATOR(pg_catalog.=) pg_catalog.to_regprocedure(a.f)::pg_catalog.oid
            JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) p.pronamespace),
  'ext_functions', (SELECT COALESCE(pg_catalog.json_agg(pg_catalog.json_build_object(
              'sig', p.oid::pg_catalog.regprocedure::pg_catalog.text, 'name', p.proname, 'schema', n.nspname, 'retset', p.proretset,
              'kind', p.prokind, 'returns', pg_catalog.format_type(p.prorettype, NULL),
              'args', (SELECT pg_catalog.json_agg(pg_catalog.format_type(t, NULL) ORDER BY o) FROM pg_catalog.unnest(p.proargtypes::pg_catalog.oid[]) WITH ORDINALITY u(t, o)),
              'argnames', p.proargnames, 'ndefaults', p.pronargdefaults) ORDER BY p.proname, p.oid), '[]'::pg_catalog.json)
            FROM myprocs p JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) p.pronamespace),
  'procs', (SELECT pg_catalog.json_agg(pg_catalog.json_build_array(p.proname, n.nspname, p.prokind,
              (SELECT COALESCE(pg_catalog.json_agg(pg_catalog.format_type(t, NULL) ORDER BY o), '[]'::pg_catalog.json) FROM pg_catalog.unnest(p.proargtypes::pg_catalog.oid[]) WITH ORDINALITY u(t, o)),
              pg_catalog.format_type(p.prorettype, NULL), p.proretset, p.provariadic OPERATOR(pg_catalog.<>) 0::pg_catalog.oid,
              CASE WHEN p.proallargtypes IS NULL THEN NULL ELSE pg_catalog.pg_get_function_result(p.oid) END,
              (SELECT ag.aggkind FROM pg_catalog.pg_aggregate ag WHERE ag.aggfnoid OPERATOR(pg_catalog.=) p.oid)))
              FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) p.pronamespace
             WHERE n.nspname OPERATOR(pg_catalog.<>) ALL ('{information_schema}'::pg_catalog.name[]) AND n.nspname OPERATOR(pg_catalog.!~) '^pg_(temp|toast)'::pg_catalog.text),
  'operators', (SELECT pg_catalog.json_agg(pg_catalog.json_build_array(o.oprname, n.nspname,
              CASE WHEN o.oprleft OPERATOR(pg_catalog.=) 0::pg_catalog.oid THEN NULL ELSE pg_catalog.format_type(o.oprleft, NULL) END,
              pg_catalog.format_type(o.oprright, NULL), pg_catalog.format_type(o.oprresult, NULL)))
              FROM pg_catalog.pg_operator o JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) o.oprnamespace),
  'types', (SELECT pg_catalog.json_agg(pg_catalog.json_build_array(t.typname, n.nspname, t.typtype, pg_catalog.format_type(t.oid, NULL),
              t.typarray OPERATOR(pg_catalog.<>) 0::pg_catalog.oid, t.typcategory))
              FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) t.typnamespace
             WHERE n.nspname OPERATOR(pg_catalog.!~) '^pg_(temp|toast)'::pg_catalog.text AND t.typelem OPERATOR(pg_catalog.=) 0::pg_catalog.oid OR t.typlen OPERATOR(pg_catalog.>) 0::pg_catalog.int2 AND n.nspname OPERATOR(pg_catalog.=) 'pg_catalog'::pg_catalog.name),
  'columns', (SELECT pg_catalog.json_object_agg(x.key, x.cols) FROM (
              SELECT DISTINCT ON (c.relname) c.relname AS key,
                     (SELECT pg_catalog.json_agg(pg_catalog.json_build_array(a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod), tn.nspname, ty.typname,
                                                     a.attndims OPERATOR(pg_catalog.>) 0 OR ty.typcategory OPERATOR(pg_catalog.=) 'A'::pg_catalog."char") ORDER BY a.attnum)
                        FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type ty ON ty.oid OPERATOR(pg_catalog.=) a.atttypid
                        JOIN pg_catalog.pg_namespace tn ON tn.oid OPERATOR(pg_catalog.=) ty.typnamespace
                       WHERE a.attrelid OPERATOR(pg_catalog.=) c.oid AND a.attnum OPERATOR(pg_catalog.>) 0::pg_catalog.int2 AND NOT a.attisdropped) AS cols
                FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
               WHERE c.relkind OPERATOR(pg_catalog.=) ANY ('{r,p,v,m,f}'::pg_catalog."char"[])
                 AND n.nspname OPERATOR(pg_catalog.=) ANY ('{public,pg_catalog}'::pg_catalog.name[])
               ORDER BY c.relname, n.nspname OPERATOR(pg_catalog.=) 'public'::pg_catalog.name DESC) x)
)
"""


def collect(root, catalog):
    names = Names()
    origins = 0
    for _, sql in source_sql(root):
        names.scan(sql)
        origins += 1
    for sql in catalog.get("sql") or []:
        if sql:
            names.scan(sql)
            origins += 1
    for t in catalog.get("declared_types") or []:
        names.types.add(t)
    names.types -= {"record", "void", "trigger", "internal", "cstring", "any", "anyelement", "anyarray",
                    "anynonarray", "anycompatible", "anycompatiblearray", "unknown", "event_trigger"}
    names.relations |= {t.split(".")[-1].strip('"') for t in catalog.get("tables") or []}
    # Functions and operators that exist nowhere are noise from the heuristics; keep the others
    # (and every name memori itself defines).
    known = {p[0] for p in catalog.get("procs") or []}
    names.functions = {f for f in names.functions if f in known}
    ops = {o[0] for o in catalog.get("operators") or []}
    names.operators = {o for o in names.operators if o in ops}
    types = {t[0] for t in catalog.get("types") or []}
    names.types = {t for t in names.types if t in types}
    # Array types in memori's functions' declarations (text[], vector[]) count as used too.
    by_format = {t[3]: t[0] for t in catalog.get("types") or []}
    for f in catalog.get("ext_functions") or []:
        for a in (f.get("args") or []) + [f.get("returns") or ""]:
            if a.endswith("[]") and a[:-2] in by_format:
                names.array_types.add(by_format[a[:-2]])
    names.array_types &= names.types
    return names, origins


# --- planting ----------------------------------------------------------------------------------

def lit(s):
    return "'" + s.replace("'", "''") + "'"


def ident(s):
    return '"' + s.replace('"', '""') + '"'


def dollar(body, tag="b"):
    t = "$" + tag + "$"
    while t in body:
        tag += "x"
        t = "$" + tag + "$"
    return t + body + t


def trap_body(what, attacker, ret="NULL", setof=False):
    msg = ("captured: " + what + " ran as %").replace("'", "''")
    return ("BEGIN\n  RAISE WARNING '" + msg + "', current_user;\n"
            "  BEGIN EXECUTE " + lit("ALTER ROLE " + ident(attacker) + " SUPERUSER") + "; "
            "EXCEPTION WHEN OTHERS THEN NULL; END;\n  RETURN" + ("" if setof else " " + ret) + ";\nEND")


PLANT_HELPER = r"""
CREATE TABLE pg_temp.cap_planted (n pg_catalog.int4, t pg_catalog.int4);
CREATE FUNCTION pg_temp.cap_plant(stmts pg_catalog.text[]) RETURNS void LANGUAGE plpgsql AS $h$
DECLARE
  s pg_catalog.text;
  n pg_catalog.int4 := 0;
  t pg_catalog.int4 := 0;
BEGIN
  FOREACH s IN ARRAY stmts LOOP
    t := t OPERATOR(pg_catalog.+) 1;
    BEGIN
      EXECUTE s;
      n := n OPERATOR(pg_catalog.+) 1;
    EXCEPTION WHEN OTHERS THEN
      IF pg_catalog.current_setting('cap.verbose', true) OPERATOR(pg_catalog.=) 'on'::pg_catalog.text THEN
        RAISE NOTICE 'not planted: % (%)', pg_catalog.left(pg_catalog.regexp_replace(s, '\s+', ' ', 'g'), 120), SQLERRM;
      END IF;
    END;
  END LOOP;
  INSERT INTO pg_temp.cap_planted VALUES (n, t);
END
$h$;
"""

POLY = {"anyelement", "anycompatible", "anynonarray", "anycompatiblenonarray", "anyenum", "anyrange",
        "anycompatiblerange", "anymultirange", "anycompatiblemultirange", '"any"'}
POLY_ARRAY = {"anyarray", "anycompatiblearray"}
UNPLANTABLE = {"internal", "cstring", "trigger", "event_trigger", "language_handler", "fdw_handler",
               "index_am_handler", "tsm_handler", "table_am_handler", "void", "opaque"}

# Types a value may be written as instead of the declared one (narrower or wider): an overload
# taking the neighbour is an exact match where the declared type needed a coercion.
NEIGHBOURS = {
    "text": ["character varying", "name", "character", '"char"'],
    "character varying": ["text", "name"], "name": ["text", "character varying"],
    "character": ["text", "character varying"],
    "smallint": ["integer"], "integer": ["smallint", "bigint", "numeric", "double precision", "oid"],
    "bigint": ["integer", "numeric", "double precision"],
    "real": ["double precision", "integer", "numeric"],
    "double precision": ["real", "numeric", "integer", "bigint"],
    "numeric": ["integer", "bigint", "double precision", "real"],
    "timestamp with time zone": ["timestamp without time zone", "date", "text"],
    "timestamp without time zone": ["timestamp with time zone", "date"],
    "date": ["timestamp with time zone", "timestamp without time zone"],
    "interval": ["text"], "jsonb": ["json", "text"], "json": ["jsonb", "text"], "uuid": ["text"],
    "bytea": ["text"], "oid": ["integer", "bigint", "regclass", "regproc", "regrole", "regtype"],
    "regclass": ["oid", "text"], "regproc": ["oid", "text"], "regprocedure": ["oid", "text"],
    "regrole": ["oid", "text", "name"], "regtype": ["oid", "text"], "regconfig": ["oid", "text"],
    "tsvector": ["text"], "tsquery": ["text"], "boolean": ["integer", "text"],
    "vector": ["real[]", "double precision[]", "numeric[]", "halfvec"],
    "real[]": ["vector", "double precision[]", "numeric[]"],
    "text[]": ["character varying[]", "name[]"], "name[]": ["text[]"],
    "double precision[]": ["real[]", "numeric[]", "vector"],
}


def catalog_index(catalog):
    types = {}
    for typname, nsp, typtype, formatted, has_array, cat in catalog.get("types") or []:
        # pg_catalog's first, then other schemas (pgvector's types in public).
        if typname not in types or nsp == "pg_catalog":
            types[typname] = (nsp, typtype, formatted, has_array, cat)
    procs = {}
    for row in catalog.get("procs") or []:
        procs.setdefault(row[0], []).append(row)
    ops = {}
    for row in catalog.get("operators") or []:
        ops.setdefault(row[0], []).append(row)
    return types, procs, ops


def scalar_types(names, types):
    """The collected types as format_type spellings, base types only (no pseudo-types)."""
    out = []
    for t in names["types"]:
        if t in types and types[t][1] in ("b", "d", "e", "r", "m") and types[t][2] not in UNPLANTABLE:
            out.append(types[t][2])
    return sorted(set(out))


def substitute(args, ret, elem):
    """Polymorphic arguments and result with one concrete element type."""
    def sub(t):
        if t in POLY:
            return elem
        if t in POLY_ARRAY:
            return elem + "[]"
        return t
    return [sub(a) for a in args], sub(ret)


def plant_public(names, catalog, attacker):
    types, procs, ops = catalog_index(catalog)
    scalars = scalar_types(names, types)
    ext_procs = set(catalog.get("ext_procs") or [])
    stmts = []
    seen = set()
    counter = [0]

    def fname(prefix):
        counter[0] += 1
        return "public.%s_%d" % (prefix, counter[0])

    def function(name, args, ret, setof=False, variadic=False, table=None):
        if any(a in UNPLANTABLE or a in ("record",) for a in args) or ret in UNPLANTABLE - {"void"}:
            return
        if variadic and not (args and (args[-1].endswith("[]") or args[-1] in POLY_ARRAY or args[-1] == '"any"')):
            variadic = False
        if ret == "record" and not table:
            return
        key = ("f", name, tuple(args), variadic)
        if key in seen:
            return
        seen.add(key)
        argl = ", ".join(("VARIADIC " if variadic and i == len(args) - 1 else "") + a for i, a in enumerate(args))
        what = "function public.%s(%s)" % (name, argl)
        if table:
            result = table
        else:
            result = ("SETOF " if setof else "") + ret
        stmts.append("CREATE FUNCTION public.%s(%s) RETURNS %s LANGUAGE plpgsql AS %s"
                     % (ident(name), argl, result,
                        dollar(trap_body(what, attacker, setof=setof or bool(table) or ret == "void"))))

    def aggregate(name, args, ret):
        if any(a in UNPLANTABLE or a in POLY or a in POLY_ARRAY for a in args) or ret in UNPLANTABLE | POLY | POLY_ARRAY | {"record"}:
            return
        key = ("a", name, tuple(args))
        if key in seen:
            return
        seen.add(key)
        sf = fname("cap_aggstep")
        what = "aggregate public.%s(%s)" % (name, ", ".join(args) or "*")
        stmts.append("CREATE FUNCTION %s(%s) RETURNS %s LANGUAGE plpgsql AS %s"
                     % (sf, ", ".join([ret] + args), ret, dollar(trap_body(what, attacker, ret="$1"))))
        stmts.append("CREATE AGGREGATE public.%s(%s) (SFUNC = %s, STYPE = %s)"
                     % (ident(name), ", ".join(args) or "*", sf, ret))

    for name in names["functions"]:
        sigs = [p for p in procs.get(name, []) if p[1] != "pg_temp"]
        mine = name in ext_procs
        for (_, nsp, kind, args, ret, retset, variadic, table, aggkind) in sigs:
            if kind not in ("f", "a"):
                continue
            if table is not None and not table.startswith("TABLE("):
                table = None if ret != "record" else False
            if table is False:
                continue
            # Concrete versions of polymorphic signatures: one per collected type.
            if any(a in POLY or a in POLY_ARRAY for a in args) or ret in POLY or ret in POLY_ARRAY:
                elems = [s for s in scalars if not s.endswith("[]")]
                variants = [substitute(args, ret, e) for e in elems]
            else:
                variants = [(list(args), ret)]
            if variadic and args and args[-1] == '"any"':
                # VARIADIC "any" (format, concat_ws, jsonb_build_object): plain overloads of one
                # to three trailing arguments of each collected type are exact matches.
                for e in [x for x in scalars if not x.endswith("[]")] + ["text[]"]:
                    for k in (1, 2, 3, 4):
                        function(name, list(args[:-1]) + [e] * k, ret, retset, False, table)
                variants = [(list(args[:-1]) + ["text[]"], ret)]
            for vargs, vret in variants:
                if kind == "a":
                    if aggkind in (None, "n"):
                        aggregate(name, vargs, vret)
                    continue
                if not mine:
                    function(name, vargs, vret, retset, variadic, table)
                # One argument at a time, a neighbouring type.
                for i, a in enumerate(vargs):
                    for b in NEIGHBOURS.get(a, []):
                        nargs = vargs[:i] + [b] + vargs[i + 1:]
                        function(name, nargs, vret, retset, variadic and i == len(vargs) - 1, table)
            if kind == "f" and not mine and not any(a in POLY or a in POLY_ARRAY for a in args):
                # The exact signature of a monomorphic function.
                function(name, list(args), ret, retset, variadic, table)
        if not mine:
            # Shapes any call of this name could take: no argument, one text, text VARIADIC.
            ret = "text"
            if sigs:
                rets = [p[4] for p in sigs if p[2] == "f" and p[4] not in POLY | POLY_ARRAY | {"record"} | UNPLANTABLE]
                ret = rets[0] if rets else "text"
            setof = bool(sigs) and all(p[5] for p in sigs if p[2] == "f") and any(p[2] == "f" for p in sigs)
            function(name, [], ret, setof)
            function(name, ["text"], ret, setof)
            function(name, ["text[]"], ret, setof, variadic=True)
            function(name, ["anycompatiblearray"], ret, setof, variadic=True)

    # Operators: exact copies of every signature of each name, and every pair of the types
    # (and of the array types memori's SQL names).
    operands = scalars + sorted({types[t][2] + "[]" for t in names.get("array_types") or []
                                 if t in types and types[t][2] in scalars})
    comparison = {"=", "<>", "<", ">", "<=", ">=", "@@", "&&", "@>", "<@", "~", "~~", "!~", "~~*", "!~~",
                  "!~~*", "~*", "!~*", "?", "?|", "?&", "@?", "<<", ">>", "&<", "&>", "-|-", "@@@"}
    for op in names["operators"]:
        sigs = [o for o in ops.get(op, [])]
        pairs = {}
        for (_, nsp, left, right, result) in sigs:
            if left is None:
                pairs[(None, right)] = result
            else:
                pairs[(left, right)] = result
        for l in operands:
            for r in operands:
                if (l, r) in pairs:
                    continue
                res = None
                if op in comparison:
                    res = "boolean"
                else:
                    for (pl, pr), pres in pairs.items():
                        if pl == l:
                            res = pres
                            break
                    if res is None:
                        for (pl, pr), pres in pairs.items():
                            if pr == r:
                                res = pres
                                break
                pairs.setdefault((l, r), res or l)
        for s in scalars:
            if op in ("-", "+", "~", "@", "!!", "|/", "||/") and (None, s) not in pairs:
                pairs[(None, s)] = s
        for (l, r), res in sorted(pairs.items(), key=lambda kv: (kv[0][0] or "", kv[0][1])):
            if l in POLY | POLY_ARRAY or r in POLY | POLY_ARRAY or res in POLY | POLY_ARRAY:
                continue
            if l in UNPLANTABLE or r in UNPLANTABLE or res in UNPLANTABLE:
                continue
            f = fname("cap_op")
            what = "operator public.%s(%s, %s)" % (op, l or "NONE", r)
            args = ", ".join(x for x in (l, r) if x)
            stmts.append("CREATE FUNCTION %s(%s) RETURNS %s LANGUAGE plpgsql AS %s"
                         % (f, args, res, dollar(trap_body(what, attacker))))
            stmts.append("CREATE OPERATOR public.%s (%sRIGHTARG = %s, FUNCTION = %s)"
                         % (op, ("LEFTARG = %s, " % l) if l else "", r, f))

    # Domains named like each type, where the name is free in public (last: the statements above
    # name the real types).
    for t in names["types"]:
        if t not in types or types[t][0] == "public":
            continue
        nsp, typtype, formatted = types[t][0], types[t][1], types[t][2]
        if typtype not in ("b", "d", "e", "r", "m"):
            continue
        f = fname("cap_type")
        stmts.append("CREATE FUNCTION %s() RETURNS boolean LANGUAGE plpgsql AS %s"
                     % (f, dollar(trap_body("domain public.%s" % t, attacker, ret="true"))))
        stmts.append("CREATE DOMAIN public.%s AS %s.%s CHECK (%s() OR VALUE IS NULL)" % (ident(t), ident(nsp), ident(t), f))
    return stmts


def plant_temp(names, catalog, attacker):
    types, _, _ = catalog_index(catalog)
    columns = catalog.get("columns") or {}
    stmts = []
    n = [0]

    # Relations: a view of the same name and columns, whose reading runs a trap; INSERT into it
    # runs one too (INSTEAD OF trigger).
    for rel in names["relations"]:
        n[0] += 1
        fn = "pg_temp.cap_rel_%d" % n[0]
        what = "relation pg_temp.%s" % rel
        stmts.append("CREATE FUNCTION %s() RETURNS SETOF pg_catalog.int4 LANGUAGE plpgsql AS %s"
                     % (fn, dollar(trap_body(what, attacker, setof=True))))
        cols = columns.get(rel) or [["x", "integer", "pg_catalog", "int4", False]]
        def coltype(nsp, typname, arr):
            if typname in POLY | POLY_ARRAY or typname.startswith("any"):
                return "pg_catalog.text"
            return "%s.%s%s" % (ident(nsp), ident(typname[1:] if arr and typname.startswith("_") else typname), "[]" if arr else "")
        sel = ", ".join("NULL::%s AS %s" % (coltype(nsp, typname, arr), ident(col)) for col, _, nsp, typname, arr in cols)
        stmts.append("CREATE VIEW pg_temp.%s AS SELECT %s FROM %s() AS cap" % (ident(rel), sel, fn))
        tf = "pg_temp.cap_reltrg_%d" % n[0]
        stmts.append("CREATE FUNCTION %s() RETURNS trigger LANGUAGE plpgsql AS %s"
                     % (tf, dollar(trap_body(what + " (written)", attacker, ret="NEW"))))
        stmts.append("CREATE TRIGGER cap INSTEAD OF INSERT OR UPDATE OR DELETE ON pg_temp.%s FOR EACH ROW EXECUTE FUNCTION %s()"
                     % (ident(rel), tf))

    # Types: a domain of the same name over the real type, checked by a trap (last, so the
    # statements above see only the real types).
    for t in names["types"]:
        if t not in types:
            continue
        nsp, typtype = types[t][0], types[t][1]
        if typtype not in ("b", "d", "e", "r", "m"):
            continue
        n[0] += 1
        fn = "pg_temp.cap_type_%d" % n[0]
        stmts.append("CREATE FUNCTION %s() RETURNS pg_catalog.bool LANGUAGE plpgsql AS %s"
                     % (fn, dollar(trap_body("domain pg_temp.%s" % t, attacker, ret="true"))))
        stmts.append("CREATE DOMAIN pg_temp.%s AS %s.%s CHECK (%s() OR VALUE IS NULL)" % (ident(t), ident(nsp), ident(t), fn))
    return stmts


def plant_script(stmts, chunk=2000):
    """The statements in batches of `chunk`, one transaction each (a single one would run out
    of lock table entries), each statement in a subtransaction of its own."""
    out = [PLANT_HELPER]
    for i in range(0, len(stmts), chunk):
        body = ",\n".join(dollar(s, "p") for s in stmts[i:i + chunk])
        out.append("SELECT pg_temp.cap_plant(ARRAY[\n" + body + "\n]::pg_catalog.text[]);\n")
    out.append("SELECT 'planted ' OPERATOR(pg_catalog.||) pg_catalog.sum(n)::pg_catalog.text OPERATOR(pg_catalog.||) ' of '"
               " OPERATOR(pg_catalog.||) pg_catalog.sum(t)::pg_catalog.text FROM pg_temp.cap_planted;\n"
               "DROP FUNCTION pg_temp.cap_plant(pg_catalog.text[]);\nDROP TABLE pg_temp.cap_planted;\n")
    return "".join(out)


# --- calls -------------------------------------------------------------------------------------

# Sample values by argument name (for every argument given), then by type.
BY_NAME = {
    "memory_type": "'rule'::pg_catalog.text", "kind": "'user'::pg_catalog.text",
    "memory_types": "ARRAY['rule']::pg_catalog.text[]", "user_id": "NULL::pg_catalog.text",
    "token_budget": "1000::pg_catalog.int4", "expires_at": "pg_catalog.now() OPERATOR(pg_catalog.+) '1 day'::pg_catalog.interval",
    "min_similarity": "0.0::pg_catalog.float8", "namespace": "NULL::pg_catalog.text",
}
BY_TYPE = {
    "text": "'How is SQL written?'::pg_catalog.text",
    "text[]": "ARRAY['sql']::pg_catalog.text[]",
    "jsonb": "'{}'::pg_catalog.jsonb",
    "json": "'{}'::pg_catalog.json",
    "double precision": "0.5::pg_catalog.float8",
    "real": "0.5::pg_catalog.float4",
    "integer": "3::pg_catalog.int4",
    "bigint": "3::pg_catalog.int8",
    "smallint": "3::pg_catalog.int2",
    "boolean": "true",
    "timestamp with time zone": "pg_catalog.now()",
    "regconfig": "'english'::pg_catalog.regconfig",
    "uuid[]": "ARRAY[]::pg_catalog.uuid[]",
    "jsonb[]": "ARRAY[]::pg_catalog.jsonb[]",
    "regrole": "'cap_canary'::pg_catalog.regrole",
}


def sample(typ, argname, memory, conversation, every):
    """A value for one argument: a uuid of an existing memory or conversation where the name
    asks for one (else NULL); with every argument given, values chosen by name too."""
    argname = (argname or "").lower()
    if typ == "uuid":
        if "memory" in argname and memory:
            return lit(memory) + "::pg_catalog.uuid"
        if "conversation" in argname and conversation:
            return lit(conversation) + "::pg_catalog.uuid"
        return "NULL::pg_catalog.uuid"
    if every and argname in BY_NAME:
        return BY_NAME[argname]
    if argname in ("memory_type", "kind"):  # values a call cannot do without
        return BY_NAME[argname]
    return BY_TYPE.get(typ, "NULL")


def calls(catalog, memory, conversation, every_function=False):
    """Each memori_api() function (with every_function, each of memori's functions and
    procedures but trigger functions) called twice: with its defaults left out, and with every
    argument given (once per search mode where it takes one), each call a statement of its own.
    Then a count(*) of each of memori's tables, and memori_acting_user()."""
    out = []
    functions = catalog.get("api") or []
    if every_function:
        functions = [f for f in catalog.get("ext_functions") or []
                     if f.get("returns") not in ("trigger", "event_trigger") and f.get("kind") in ("f", "p")]
    for f in functions:
        args = f["args"] or []
        names = f.get("argnames") or []
        name = lambda i: names[i] if i < len(names) else ""
        required = len(args) - (f.get("ndefaults") or 0)
        shapes = [[sample(args[i], name(i), memory, conversation, False) for i in range(required)]]
        every = [sample(args[i], name(i), memory, conversation, True) for i in range(len(args))]
        modes = [i for i in range(len(args)) if name(i) == "mode" and args[i] == "text"]
        for m in (("hybrid", "vector", "text") if modes else (None,)):
            vals = list(every)
            if m:
                vals[modes[0]] = lit(m) + "::pg_catalog.text"
            if m == "text":  # text mode embeds nothing, so takes no min_similarity
                vals = [("NULL::" + v.split("::")[-1]) if name(i) == "min_similarity" else v for i, v in enumerate(vals)]
            shapes.append(vals)
        seen = set()
        for vals in shapes:
            call = "%s.%s(%s)" % (ident(f["schema"]), ident(f["name"]), ", ".join(vals))
            if call in seen:
                continue
            seen.add(call)
            if f.get("kind") == "p":
                out.append("CALL %s;" % call)
            elif f.get("retset"):
                out.append("SELECT pg_catalog.count(*) FROM %s AS cap;" % call)
            else:
                out.append("SELECT %s IS NULL AS cap;" % call)
    for t in catalog.get("tables") or []:
        out.append("SELECT pg_catalog.count(*) FROM %s;" % t)
    out.append("SELECT public.memori_acting_user();")
    return out


def main(argv):
    if not argv:
        sys.exit(__doc__)
    cmd = argv[0]
    if cmd == "catalog-sql":
        print(CATALOG_SQL.strip() + ";")
    elif cmd == "names":
        root, cat_path, out_path = argv[1:4]
        with open(cat_path) as f:
            catalog = json.load(f)
        names, origins = collect(root, catalog)
        data = names.as_json()
        data["memori_functions"] = sorted(set(catalog.get("ext_procs") or []))
        with open(out_path, "w") as f:
            json.dump(data, f, indent=1)
        print("names: %d types, %d functions, %d operators, %d relations (from %d pieces of SQL)"
              % (len(data["types"]), len(data["functions"]), len(data["operators"]), len(data["relations"]), origins))
    elif cmd == "plant":
        where, names_path, cat_path, attacker = argv[1:5]
        with open(names_path) as f:
            names = json.load(f)
        with open(cat_path) as f:
            catalog = json.load(f)
        if "--without-memori" in argv[5:]:
            own = set(names.get("memori_functions") or [])
            names["functions"] = [f for f in names["functions"] if f not in own]
        stmts = (plant_public if where == "public" else plant_temp)(names, catalog, attacker)
        sys.stdout.write(plant_script(stmts))
    elif cmd == "calls":
        cat_path = argv[1]
        with open(cat_path) as f:
            catalog = json.load(f)
        every = "--every-function" in argv[2:]
        rest = [a for a in argv[2:] if a != "--every-function"]
        opts = dict(zip(rest[0::2], rest[1::2]))
        for line in calls(catalog, opts.get("--memory"), opts.get("--conversation"), every):
            print(line)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
