-- bench/scale: the indexes memori's schema defines, built after loading, then statistics.
\set ON_ERROR_STOP on
SET maintenance_work_mem = '3GB';
SET max_parallel_maintenance_workers = 1;
DO $$
DECLARE r record;
BEGIN
    FOR r IN SELECT def FROM bench_indexdefs ORDER BY def LIKE '%hnsw%' DESC, name LOOP
        EXECUTE r.def;
    END LOOP;
END $$;
VACUUM (ANALYZE) memori_memories;
