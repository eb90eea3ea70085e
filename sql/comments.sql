-- Comments on the functions written in Rust (runs after pgrx has created them).
COMMENT ON FUNCTION memori_conversation_create(text, text, jsonb, bigint) IS
    'memori: creates a conversation for user_id (default: memori.user_id, else current_user) and returns its conversation_id.';
COMMENT ON FUNCTION memori_embed(text) IS
    'memori: the embedding of a text under the current settings (memori.embedding_provider); NULL gives NULL, empty text is an error.';
COMMENT ON FUNCTION memori_embed_batch(text[]) IS
    'memori: the embeddings of several texts, in input order, in batches of memori.embedding_batch_size; a NULL element gives a NULL vector.';
COMMENT ON FUNCTION memori_embedding_stats() IS
    'memori: this backend''s embedding counters: texts embedded, cache hits, HTTP requests sent, local model forward passes.';
