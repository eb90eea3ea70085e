-- Whom an app may act for, and what counts as "named in this transaction" (issue 19, review
-- G2 and G3): two apps and one person in one database. Run on a cluster that preloads memori
-- and on one that does not: the first statements of each session below run before the
-- library is loaded there.
SET client_min_messages = warning;
DROP ROLE IF EXISTS memori_a_tmp, memori_a_bob, memori_a_robert, memori_a_alice, memori_a_shop, memori_a_clinic, memori_a_shop2, memori_a_legacy, memori_a_nobody;
RESET client_min_messages;
CREATE EXTENSION memori CASCADE;
CREATE ROLE memori_a_alice LOGIN;
SELECT memori_grant('memori_a_alice', 'user');
CREATE ROLE memori_a_shop LOGIN;
SELECT memori_grant('memori_a_shop', 'app');
CREATE ROLE memori_a_clinic LOGIN;
SELECT memori_grant('memori_a_clinic', 'app', namespace => 'clinic');
-- An app in the empty namespace (as apps granted before 0.5.0 are): end users without a prefix.
CREATE ROLE memori_a_legacy LOGIN;
CREATE ROLE memori_a_nobody;
SELECT memori_grant('memori_a_legacy', 'app', namespace => '');
-- A role default, which RESET brings back.
ALTER ROLE memori_a_legacy SET memori.user_id = 'customer-1';
SELECT role_name, kind, namespace FROM memori_roles ORDER BY role_name;
-- A namespace is one path segment, and only apps have one.
SELECT memori_grant('memori_a_alice', 'user', namespace => 'x');
SELECT memori_grant('memori_a_shop', 'app', namespace => 'a/b');
-- Memories of the person, and of one end user of each app (stored by the DBA under the keys
-- the apps reach).
SELECT memori_store('alice: my salary is 100k', 'rule', user_id => 'memori_a_alice') IS NOT NULL AS stored;
SELECT memori_store('shop customer-1: card ends 4242', 'rule', user_id => 'memori_a_shop/customer-1') IS NOT NULL AS stored;
SELECT memori_store('clinic customer-1: diagnosis X', 'rule', user_id => 'clinic/customer-1') IS NOT NULL AS stored;

-- (a) A plain SET in an earlier transaction of a new session (what a pooler hands on): the
-- transaction that loads the library does not count it as named.
\c - memori_a_shop
SET memori.user_id = 'customer-1';
SELECT count(*) AS rows_seen FROM memori_memories;
SELECT content FROM memori_search('card', k => 1);
-- Named in this transaction: the app reaches its own end user, under its namespace.
BEGIN;
SET LOCAL memori.user_id = 'customer-1';
SELECT user_id, content FROM memori_memories;
SELECT memori_acting_user();
SELECT content FROM memori_search('card', k => 5);
COMMIT;
-- (b) A function's SET clause that puts the stale value back does not name it.
CREATE FUNCTION pg_temp.touch() RETURNS int LANGUAGE sql SET memori.user_id = '' AS 'SELECT 1';
BEGIN;
SELECT pg_temp.touch();
SELECT count(*) AS rows_seen FROM memori_memories;
SELECT content FROM memori_search('card', k => 1);
ROLLBACK;
-- (c) ROLLBACK TO SAVEPOINT keeps what the transaction named before the savepoint.
BEGIN;
SET LOCAL memori.user_id = 'customer-1';
SAVEPOINT s;
SET LOCAL memori.user_id = 'customer-3';
ROLLBACK TO s;
SELECT content FROM memori_search('card', k => 5);
COMMIT;
-- A SET (not LOCAL) inside the transaction names the user for this transaction only.
BEGIN;
SET memori.user_id = 'customer-1';
SELECT count(*) AS rows_seen FROM memori_memories;
COMMIT;
SELECT count(*) AS rows_seen_next_transaction FROM memori_memories;
RESET memori.user_id;

-- G3: an app never acts for another app's end users; naming a person's role name only names
-- an end user of its own.
BEGIN;
SET LOCAL memori.user_id = 'memori_a_alice';
SELECT memori_acting_user();
SELECT content FROM memori_search('salary', k => 1);
ROLLBACK;
BEGIN;
SET LOCAL memori.user_id = 'clinic/customer-1';
SELECT count(*) AS rows_seen FROM memori_memories;
SELECT content FROM memori_search('diagnosis', k => 5);
SELECT memori_store('stored by the shop for the clinic''s customer') IS NOT NULL AS stored;
ROLLBACK;
\c - postgres

-- The other app: its own customer-1 is another memori user; it reaches neither the shop's nor
-- the person's memories, by any function or by SELECT.
\c - memori_a_clinic
BEGIN;
SET LOCAL memori.user_id = 'customer-1';
SELECT user_id, content FROM memori_memories;
SELECT content FROM memori_search('card diagnosis salary', k => 5);
SELECT memori_context('card diagnosis salary') LIKE '%diagnosis%' AS own_context,
       memori_context('card diagnosis salary') LIKE '%card%' AS shops_context;
COMMIT;
BEGIN;
SET LOCAL memori.user_id = 'memori_a_shop/customer-1';
SELECT count(*) AS rows_seen FROM memori_memories;
SELECT content FROM memori_search('card', k => 1);
SELECT memori_forget(memory_id) FROM memori_memories;
ROLLBACK;
\c - postgres

-- An app in the empty namespace never acts for a person's role either.
\c - memori_a_legacy
-- (d) RESET brings back the role's default, which nobody named in this transaction.
BEGIN;
SET LOCAL memori.user_id = 'customer-9';
RESET memori.user_id;
SHOW memori.user_id;
SELECT count(*) AS rows_seen FROM memori_memories;
SELECT content FROM memori_search('card', k => 1);
ROLLBACK;
BEGIN;
SET LOCAL memori.user_id = 'memori_a_alice';
SELECT count(*) AS rows_seen FROM memori_memories;
SELECT memori_acting_user() IS NULL AS acts_for_nobody;
SELECT content FROM memori_search('salary', k => 1);
ROLLBACK;
BEGIN;
SET LOCAL memori.user_id = 'memori_a_alice';
SELECT memori_store('planted for alice');
ROLLBACK;
-- Nor for another app's end users, nor for a role's name that is not granted (yet).
BEGIN;
SET LOCAL memori.user_id = 'memori_a_shop/customer-1';
SELECT count(*) AS rows_seen FROM memori_memories;
SELECT content FROM memori_search('card', k => 1);
ROLLBACK;
BEGIN;
SET LOCAL memori.user_id = 'memori_a_nobody';
SELECT memori_store('planted for a role not granted yet');
ROLLBACK;
\c - postgres

-- A person's role name may not look like an app's end user.
CREATE ROLE "memori_a_shop/customer-2" LOGIN;
SELECT memori_grant('"memori_a_shop/customer-2"', 'user');
DROP ROLE "memori_a_shop/customer-2";

-- The DBA shares a namespace explicitly: a second role of the shop reaches the shop's users.
CREATE ROLE memori_a_shop2 LOGIN;
SELECT memori_grant('memori_a_shop2', 'app', namespace => 'memori_a_shop');
\c - memori_a_shop2
BEGIN;
SET LOCAL memori.user_id = 'customer-1';
SELECT user_id, content FROM memori_memories;
COMMIT;
\c - postgres

-- G11: a grant holds for the role granted, not for a role that takes its name later.
CREATE ROLE memori_a_bob LOGIN;
SELECT memori_grant('memori_a_bob', 'user');
\c - memori_a_bob
SELECT memori_store('bob: private note', 'rule') IS NOT NULL AS stored;
\c - postgres
ALTER ROLE memori_a_bob RENAME TO memori_a_robert;
DROP OWNED BY memori_a_robert;
DROP ROLE memori_a_robert;
CREATE ROLE memori_a_bob LOGIN;  -- another person, the same name
GRANT USAGE ON SCHEMA public TO memori_a_bob;
GRANT SELECT ON memori_memories TO memori_a_bob;
GRANT EXECUTE ON FUNCTION memori_acting_user() TO memori_a_bob;
\c - memori_a_bob
SELECT count(*) AS rows_seen FROM memori_memories;
\c - postgres
SELECT memori_grant('memori_a_bob', 'user');
-- Not after a revoke either (the off-boarding path): it is decided from the data.
SELECT memori_revoke('memori_a_bob');
SELECT memori_grant('memori_a_bob', 'user');
-- The DBA hands them over on purpose.
SELECT memori_grant('memori_a_bob', 'user', adopt => true);
\c - memori_a_bob
SELECT content FROM memori_memories;
\c - postgres
SELECT memori_revoke('memori_a_bob');
DROP OWNED BY memori_a_bob;
DROP ROLE memori_a_bob;

-- An app that took a dropped app's name does not get its end users, unless adopted.
CREATE ROLE memori_a_tmp LOGIN;
SELECT memori_grant('memori_a_tmp', 'app');
SELECT memori_store('tmp customer-1: allergic to nuts', 'rule', user_id => 'memori_a_tmp/customer-1') IS NOT NULL AS stored;
DROP OWNED BY memori_a_tmp;
DROP ROLE memori_a_tmp;
CREATE ROLE memori_a_tmp LOGIN;
SELECT memori_grant('memori_a_tmp', 'app');
SELECT memori_grant('memori_a_tmp', 'app', adopt => true);
DROP OWNED BY memori_a_tmp;
DROP ROLE memori_a_tmp;

-- Nothing changed hands.
SELECT user_id, content FROM memori_memories ORDER BY user_id, content;

DROP EXTENSION memori;
DROP EXTENSION vector;
DROP ROLE memori_a_alice, memori_a_shop, memori_a_clinic, memori_a_shop2, memori_a_legacy, memori_a_nobody;
