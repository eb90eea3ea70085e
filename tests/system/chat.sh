#!/usr/bin/env bash
# Chat and extraction on a real cluster, against a chat model on loopback that speaks both APIs
# (tests/support/mock_chat.py): the Text2SQL example end to end; tenancy of memori_messages as
# an app role (RLS, no direct writes); a pg_dump round trip with messages and superseded
# memories; the anthropic shape; a failing provider's log line without the key.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
MOCK_PORT=18095
trap 'kill $MOCK 2>/dev/null || true; cleanup' EXIT
export MOCK_CHAT_LOG=$ROOT/chat-requests.jsonl
mkdir -p "$ROOT" && rm -f "$MOCK_CHAT_LOG"
python3 "$HERE/tests/support/mock_chat.py" $MOCK_PORT & MOCK=$!

C=chat
cluster_init $C 5493 "memori.llm_provider = 'openai'" "memori.llm_url = 'http://127.0.0.1:$MOCK_PORT/v1'" \
  "memori.llm_model = 'mock-sql'" "memori.llm_api_key = 'sk-chat-system-secret'"
wait_until 10 bash -c "echo > /dev/tcp/127.0.0.1/$MOCK_PORT" 2>/dev/null || true
q $C postgres "CREATE DATABASE t"
q $C t "CREATE EXTENSION memori CASCADE" >/dev/null

# 1. The Text2SQL example.
out=$(qf $C t -f "$HERE/examples/text2sql.sql" 2>&1) || { echo "$out"; fail "examples/text2sql.sql runs"; }
check "the rule was extracted from the chat turn" "1" \
  "$(q $C t "SELECT count(*) FROM memori_memories WHERE user_id = 'analyst' AND memory_type = 'rule' AND content ILIKE '%table aliases%'")"
check "Paris was superseded by Berlin" "The user lives in Paris.|true|The user lives in Berlin." \
  "$(q $C t "SELECT o.content || '|' || (o.valid_to IS NOT NULL) || '|' || n.content FROM memori_memories o JOIN memori_memories n ON n.memory_id = o.superseded_by WHERE o.user_id = 'analyst'")"
check "the later answer follows the rule (aliases)" "1" \
  "$(q $C t "SELECT count(*) FROM memori_messages WHERE user_id = 'analyst' AND role = 'assistant' AND content LIKE 'SELECT o.id%'")"
check "four turns stored in the conversation" "user assistant user assistant" \
  "$(q $C t "SELECT string_agg(role, ' ' ORDER BY id) FROM memori_messages WHERE user_id = 'analyst'")"
check_true "the example prints the later SQL" grep -q "SELECT o.id, o.total, c.name FROM orders o" <<<"$out"
check "one request per extraction, one per chat (2 chats, 1 chat-extract, 1 extract)" "4" "$(wc -l < "$MOCK_CHAT_LOG")"

# 2. Tenancy: an app role chats for its end users and reads only the acting user's messages.
qf $C t >/dev/null <<'SQL'
CREATE ROLE chat_app LOGIN;
SELECT memori_grant('chat_app', 'app');
SQL
as_app() { "$BIN/psql" -h "$(sock $C)" -p "$(port $C)" -U chat_app -d t -X -qAt -v ON_ERROR_STOP=1 -c "$1" 2>&1; }
as_app "BEGIN; SET LOCAL memori.user_id = 'alice'; SELECT memori_chat('Never use SELECT star.'); COMMIT;" >/dev/null
as_app "BEGIN; SET LOCAL memori.user_id = 'bob'; SELECT memori_chat('Hello'); SELECT * FROM memori_extract('Always use CTEs.'); COMMIT;" >/dev/null
check "alice sees her two messages" "2" "$(as_app "BEGIN; SET LOCAL memori.user_id = 'alice'; SELECT count(*) FROM memori_messages; COMMIT;")"
check "bob sees only his (bob of chat_app: chat_app/bob)" "2 chat_app/bob" "$(as_app "BEGIN; SET LOCAL memori.user_id = 'bob'; SELECT count(*) || ' ' || min(user_id) FROM memori_messages; COMMIT;")"
check "no acting user: no messages" "0" "$(as_app "SELECT count(*) FROM memori_messages")"
err=$(as_app "BEGIN; SET LOCAL memori.user_id = 'bob'; INSERT INTO memori_messages (user_id, role, content) VALUES ('alice', 'user', 'forged'); COMMIT;" || true)
check_true "a tenant cannot write messages directly (42501)" grep -q "permission denied" <<<"$err"
analyst_conv=$(q $C t "SELECT conversation_id FROM memori_conversations WHERE user_id = 'analyst'")
err=$(as_app "BEGIN; SET LOCAL memori.user_id = 'bob'; SELECT memori_chat('x', '$analyst_conv'); COMMIT;" || true)
check_true "bob cannot chat in the analyst's conversation" grep -q "does not exist for user \"chat_app/bob\"" <<<"$err"
check "bob's extracted rule is his" "chat_app/bob" "$(q $C t "SELECT user_id FROM memori_memories WHERE content = 'Always use CTEs.'")"

# 3. A dump holds messages and history; a restore gives them back unchanged.
state() { q $C "$1" "SELECT md5(string_agg(m::text, '|' ORDER BY id)) FROM memori_messages m" ; q $C "$1" "SELECT md5(string_agg(concat_ws('|', memory_id, valid_to, superseded_by), '/' ORDER BY id)) FROM memori_memories"; }
as_pg "$BIN/pg_dump" -h "$(sock $C)" -p "$(port $C)" -U postgres -Fc -f "$ROOT/$C/t.dump" t
q $C postgres "CREATE DATABASE restored"
as_pg "$BIN/pg_restore" -h "$(sock $C)" -p "$(port $C)" -U postgres -d restored "$ROOT/$C/t.dump"
check "messages and superseded memories survive pg_dump/pg_restore" "$(state t)" "$(state restored)"
check "after restore, as_of still answers from the past" "The user lives in Paris." \
  "$(q $C restored "SELECT content FROM memori_search('Where does the user live?', k => 1, user_id => 'analyst', as_of => (SELECT valid_to - interval '1 microsecond' FROM memori_memories WHERE content = 'The user lives in Paris.'))")"

# 4. The anthropic shape, through the same server.
qf $C t -c "ALTER SYSTEM SET memori.llm_provider = 'anthropic'" -c "ALTER SYSTEM SET memori.llm_url = 'http://127.0.0.1:$MOCK_PORT'" -c "SELECT pg_reload_conf()" >/dev/null
sleep 0.5
check "anthropic: chat answers" "Noted. (turns seen: 1)" "$(q $C t "SELECT memori_chat('Hi there', user_id => 'carol')")"
check "anthropic: extraction answers through a tool" "add|rule" "$(q $C t "SELECT action || '|' || memory_type FROM memori_extract('Always format dates as ISO 8601.', user_id => 'carol')")"
check_true "anthropic: the requests went to /v1/messages" grep -q '"path": "/v1/messages"' "$MOCK_CHAT_LOG"

# 5. A provider that cannot be reached: a clean error, one log line, no key anywhere.
qf $C t -c "ALTER SYSTEM SET memori.llm_url = 'http://127.0.0.1:9/'" -c "SELECT pg_reload_conf()" >/dev/null
sleep 0.5
err=$(q $C t "SELECT memori_chat('Hi', user_id => 'carol')" 2>&1 || true)
check_true "unreachable provider: SQLSTATE 08001 message" grep -q "anthropic chat request to http://127.0.0.1:9/v1/messages failed" <<<"$err"
check "nothing stored for the failed turn" "2" "$(q $C t "SELECT count(*) FROM memori_messages WHERE user_id = 'carol'")"
check_true "one log line for the failed call" grep -q "memori: chat failed provider=anthropic model=mock-sql sqlstate=08001" "$(log_of $C)"
check "the key is in no log line" "0" "$(grep -c 'sk-chat-system-secret' "$(log_of $C)" || true)"

# 6. The counters (the cluster preloads memori).
figure() { q $C t "SELECT coalesce(sum(value), 0)::int FROM memori_counters() WHERE metric = '$1' AND labels @> '$2'"; }
check "chat calls counted per API (openai: 4 in the example, 3 as the app; anthropic: 2, 1 failed)" "7 3" "$(figure chat_calls_total '{"provider": "openai"}') $(figure chat_calls_total '{"provider": "anthropic"}')"
check "the unreachable call counted in class 08" "1" "$(figure chat_errors_total '{"provider": "anthropic", "class": "08"}')"
check "extraction decisions counted by action (Berlin; the example's rule, bob's, carol's)" "1 3" "$(figure extract_decisions_total '{"action": "supersede"}') $(figure extract_decisions_total '{"action": "add"}')"

# 7. No row lock is held while a model answers (review G10): a chat with extraction whose model
# takes 4 s per call; meanwhile the user's rule in its context is updated, and another store
# goes into the same conversation, each within a 2 s lock_timeout.
qf $C t -c "ALTER SYSTEM SET memori.llm_provider = 'openai'" -c "ALTER SYSTEM SET memori.llm_url = 'http://127.0.0.1:$MOCK_PORT/v1'" -c "SELECT pg_reload_conf()" >/dev/null
sleep 0.5
rule=$(q $C t "SELECT memori_store('Always answer in French', 'rule', user_id => 'lock_u')")
lconv=$(q $C t "SELECT memori_conversation_create('slow', user_id => 'lock_u')")
q $C t "SELECT memori_chat('[slow] Tell me about dark mode. Always be brief.', '$lconv', NULL, true, 'lock_u')" >/dev/null 2>&1 &
slow=$!
sleep 1.5
check "while the model answers, the rule in the chat's context is updated (no lock waited for)" "t" \
  "$(q $C t "SET lock_timeout = '2s'; SET memori.user_id = 'lock_u'; SELECT memori_update('$rule', content => 'Always answer in German')" 2>&1 | tail -n1)"
check "while the model answers, a store goes into the chat's conversation" "t" \
  "$(q $C t "SET lock_timeout = '2s'; SELECT memori_store('stored during the slow chat', 'long_term', '$lconv', user_id => 'lock_u') IS NOT NULL" 2>&1 | tail -n1)"
wait $slow
check "the slow chat stored its turns and its extracted rule" "2 1" \
  "$(q $C t "SELECT (SELECT count(*) FROM memori_messages WHERE user_id = 'lock_u') || ' ' || (SELECT count(*) FROM memori_memories WHERE user_id = 'lock_u' AND content = 'Always be brief.')")"

finish
