-- An ordinary role sets provider settings before memori's library is loaded: the values are
-- placeholders then, and loading the library must refuse them.
CREATE EXTENSION memori CASCADE;
SET client_min_messages = warning;
DROP ROLE IF EXISTS memori_regress_plain;
RESET client_min_messages;
CREATE ROLE memori_regress_plain;
SELECT memori_grant('memori_regress_plain', 'user');
-- A new session: memori's library is not loaded yet.
\c
SELECT count(*) AS memori_settings_defined FROM pg_settings WHERE name = 'memori.embedding_url';
SET ROLE memori_regress_plain;
SET memori.embedding_url = 'http://attacker.invalid/v1';
SET memori.embedding_provider = 'openai';
SET memori.embedding_api_key = 'sk-attacker';
SELECT vector_dims(memori_embed('load the library'));
SHOW memori.embedding_url;
SHOW memori.embedding_provider;
SET memori.embedding_url = 'http://attacker.invalid/v1';
SHOW memori.embedding_api_key;
RESET ROLE;
-- The settings and their defaults, as a DBA sees them.
SELECT name, setting, unit, context, vartype, min_val, max_val
  FROM pg_settings WHERE name LIKE 'memori.%' ORDER BY name;
-- Unknown memori.* names are refused once the library is loaded.
SET memori.no_such_setting = 1;
-- Without preloading there are no counters: memori_stats() says so, and the catalog figures
-- still work.
SELECT memori_store('a memory', 'rule', user_id => 'u1') IS NOT NULL AS stored;
SELECT metric, labels, value FROM memori_stats()
 WHERE metric IN ('counters_available', 'memories', 'users') ORDER BY metric;
SELECT count(*) AS counters FROM memori_counters();
SELECT memori_stats_reset() AS reset;
DROP EXTENSION memori;
DROP EXTENSION vector;
DROP OWNED BY memori_regress_plain;
DROP ROLE memori_regress_plain;
