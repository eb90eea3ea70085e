-- The maintenance worker (the cluster preloads memori): a launcher runs, and with a short
-- interval it expires memories in this database on its own.
CREATE EXTENSION memori CASCADE;
SELECT count(*) AS launchers FROM pg_stat_activity WHERE backend_type = 'memori launcher';
INSERT INTO memori_memories (user_id, content, memory_type, expires_at)
VALUES ('worker_test', 'this memory has expired', 'short_term', now() - interval '1 minute'),
       ('worker_test', 'this memory has not', 'short_term', now() + interval '1 day');
-- A database that is dropped between two passes does not stop the launcher.
CREATE DATABASE memori_worker_dropped;
ALTER SYSTEM SET memori.maintenance_interval = 1;
SELECT pg_reload_conf();
DROP DATABASE memori_worker_dropped;
DO $$
BEGIN
    FOR i IN 1..300 LOOP
        EXIT WHEN NOT EXISTS (SELECT 1 FROM memori_memories WHERE content = 'this memory has expired');
        PERFORM pg_sleep(0.1);
    END LOOP;
END;
$$;
SELECT content FROM memori_memories ORDER BY content;
ALTER SYSTEM RESET memori.maintenance_interval;
SELECT pg_reload_conf();
SELECT count(*) AS launchers FROM pg_stat_activity WHERE backend_type = 'memori launcher';
DROP EXTENSION memori;
DROP EXTENSION vector;
