-- Two sessions store near-duplicates for the same user and type at the same time: the second
-- waits for the first to commit, then refreshes its memory instead of adding a row.
CREATE EXTENSION memori CASCADE;
CREATE EXTENSION dblink;
SELECT dblink_connect('other', pg_catalog.format('dbname=%s port=%s host=%s user=postgres',
    current_database(), current_setting('port'), split_part(current_setting('unix_socket_directories'), ',', 1)));
BEGIN;
SELECT memori_store('User prefers JOINs instead of subqueries', 'rule', user_id => 'u1') AS first \gset
SELECT dblink_send_query('other',
    $$SELECT memori_store('The user prefers JOINs instead of subqueries', 'rule', user_id => 'u1')$$);
SELECT pg_sleep(0.5);
SELECT dblink_is_busy('other') AS other_is_waiting;
COMMIT;
SELECT id = :'first' AS same_memory FROM dblink_get_result('other') AS t(id uuid);
SELECT count(*) AS rest FROM dblink_get_result('other') AS t(id uuid);
SELECT count(*) AS memories, max(access_count) AS refreshed FROM memori_memories;
-- Another user is not held up.
BEGIN;
SELECT memori_store('User prefers JOINs instead of subqueries', 'rule', user_id => 'u2') IS NOT NULL AS stored;
SELECT count(*) AS stored_meanwhile
  FROM dblink('other', $$SELECT memori_store('User prefers JOINs instead of subqueries', 'rule', user_id => 'u3')$$) AS t(id uuid);
COMMIT;
SELECT user_id, count(*) FROM memori_memories GROUP BY user_id ORDER BY user_id;
-- REPEATABLE READ: a store whose snapshot predates another store's commit fails with 40001
-- (the application retries) instead of missing that row and adding a twin.
BEGIN ISOLATION LEVEL REPEATABLE READ;
SELECT count(*) AS u4_before FROM memori_memories WHERE user_id = 'u4';
SELECT count(*) AS stored_by_other
  FROM dblink('other', $$SELECT memori_store('User prefers JOINs instead of subqueries', 'rule', user_id => 'u4')$$) AS t(id uuid);
\set VERBOSITY sqlstate
SELECT memori_store('The user prefers JOINs instead of subqueries', 'rule', user_id => 'u4');
\set VERBOSITY default
ROLLBACK;
SELECT count(*) AS u4_memories FROM memori_memories WHERE user_id = 'u4';
SELECT dblink_disconnect('other');
DROP EXTENSION dblink;
DROP EXTENSION memori;
DROP EXTENSION vector;
