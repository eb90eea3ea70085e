-- CREATE EXTENSION needs pgvector: without CASCADE it says so.
CREATE EXTENSION memori;
CREATE EXTENSION memori CASCADE;
SELECT extname, extversion IS NOT NULL AS has_version
  FROM pg_extension WHERE extname IN ('memori', 'vector') ORDER BY extname;
-- The tables and functions a person sees in psql.
SELECT c.relname, c.relkind, c.relpersistence
  FROM pg_class c JOIN pg_depend d ON d.objid = c.oid AND d.deptype = 'e'
  JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'memori'
 WHERE c.relkind IN ('r', 'u') ORDER BY 1;
SELECT p.proname
  FROM pg_proc p JOIN pg_depend d ON d.objid = p.oid AND d.deptype = 'e'
  JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'memori'
 ORDER BY 1;
-- Every function and table carries a comment.
SELECT p.proname AS uncommented
  FROM pg_proc p JOIN pg_depend d ON d.objid = p.oid AND d.deptype = 'e'
  JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'memori'
 WHERE obj_description(p.oid, 'pg_proc') IS NULL;
SELECT c.relname AS uncommented
  FROM pg_class c JOIN pg_depend d ON d.objid = c.oid AND d.deptype = 'e'
  JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'memori'
 WHERE c.relkind IN ('r', 'u') AND obj_description(c.oid, 'pg_class') IS NULL;
SELECT c.relname || '.' || a.attname AS uncommented_column
  FROM pg_class c JOIN pg_depend d ON d.objid = c.oid AND d.deptype = 'e'
  JOIN pg_extension e ON e.oid = d.refobjid AND e.extname = 'memori'
  JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
 WHERE c.relkind IN ('r', 'u') AND col_description(c.oid, a.attnum) IS NULL;
-- DROP EXTENSION leaves no memori object behind.
SELECT memori_create_index(768);
DROP EXTENSION memori;
SELECT count(*) AS memori_relations FROM pg_class WHERE relname LIKE '%memori%';
SELECT count(*) AS memori_functions FROM pg_proc WHERE proname LIKE 'memori%';
SELECT count(*) AS memori_types FROM pg_type WHERE typname LIKE '%memori%';
-- pgvector stays: other things may use it.
SELECT extname FROM pg_extension WHERE extname = 'vector';
-- A second install works, and memori must live in pgvector's schema.
CREATE SCHEMA elsewhere;
CREATE EXTENSION memori SCHEMA elsewhere;
CREATE EXTENSION memori;
DROP EXTENSION memori;
DROP EXTENSION vector;
