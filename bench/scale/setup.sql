-- bench/scale: the database before loading (run by bench/scale/run.sh).
\set ON_ERROR_STOP on
SET client_min_messages = warning;
CREATE EXTENSION memori CASCADE;
CREATE EXTENSION pg_stat_statements;
CREATE EXTENSION pg_prewarm;

-- Memory texts: ten words drawn from a vocabulary of 60 (the question's words among them, so
-- each of its terms is in about 15% of all memories, every user's alike), one in four naming a
-- table.column as well. Deterministic in g.
CREATE FUNCTION bench_content(g bigint) RETURNS text LANGUAGE sql IMMUTABLE AS $$
SELECT pg_catalog.array_to_string(ARRAY(
         SELECT w[1 + (hashint8(g * 16 + i) & 2147483647) % pg_catalog.array_length(w, 1)]
           FROM generate_series(1, 10) i), ' ')
       || CASE WHEN hashint8(g * 16 + 11) & 3 = 0
               THEN ' in ' || t[1 + (hashint8(g * 16 + 12) & 2147483647) % 6] || '.' || c[1 + (hashint8(g * 16 + 13) & 2147483647) % 6]
               ELSE '' END
  FROM (SELECT '{user,prefers,orders,customer,id,report,weekly,daily,monthly,dashboard,query,table,column,index,schema,invoice,payment,status,total,revenue,region,product,team,sales,chart,export,filter,join,date,created,updated,email,account,billing,shipping,address,refund,discount,price,quantity,warehouse,stock,supplier,contract,ticket,support,priority,latency,error,alert,metric,budget,forecast,summary,always,never,likes,wants,uses,checks}'::text[] AS w,
               '{orders,customers,invoices,payments,products,users}'::text[] AS t,
               '{customer_id,created_at,status,total,user_id,region}'::text[] AS c) v
$$;

-- A pseudo-random 384-d unit vector (uniform in the cube, normalised).
CREATE FUNCTION bench_vector() RETURNS vector LANGUAGE sql VOLATILE AS $$
SELECT l2_normalize(array_agg(random() - 0.5)::real[]::vector) FROM generate_series(1, 384)
$$;

-- The users: u0001..uNNNN with :per_small memories each, 'mid' and 'big'. Row g of the load
-- goes to the user at position g of a shuffled list, so each user's memories are spread over
-- the table as if stored over time among everyone else's.
CREATE UNLOGGED TABLE bench_rows (g int PRIMARY KEY, user_id text NOT NULL);
INSERT INTO bench_rows
SELECT row_number() OVER (ORDER BY hashint8(n::bigint * 7919 + 17), n), u
  FROM (SELECT n, CASE WHEN n <= :small_users * :per_small THEN 'u' || lpad(((n - 1) / :per_small + 1)::text, 4, '0')
                       WHEN n <= :small_users * :per_small + :mid THEN 'mid'
                       ELSE 'big' END AS u
          FROM generate_series(1, :small_users * :per_small + :mid + :big) n) s;

-- Indexes are built after loading: keep their definitions (the constraints' stay).
CREATE TABLE bench_indexdefs AS
SELECT c.relname AS name, pg_get_indexdef(i.indexrelid) AS def
  FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
 WHERE i.indrelid = 'memori_memories'::regclass
   AND NOT EXISTS (SELECT FROM pg_constraint k WHERE k.conindid = i.indexrelid);
DO $$
DECLARE r record;
BEGIN
    FOR r IN SELECT name FROM bench_indexdefs LOOP
        EXECUTE format('DROP INDEX %I', r.name);
    END LOOP;
END $$;
