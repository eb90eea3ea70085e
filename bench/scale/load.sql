-- bench/scale: one slice of the load (bench/scale/run.sh runs one per core), rows written as
-- memori writes them: content, its full-text document, the embedding and its model's label
-- (embedding_dims is generated).
\set ON_ERROR_STOP on
INSERT INTO memori_memories (user_id, content, memory_type, embedding, embedding_model, content_tsv)
SELECT r.user_id, r.content, 'long_term', bench_vector(), :'label', memori_text_document(r.content, 'english')
  FROM (SELECT user_id, bench_content(g) AS content FROM bench_rows
         WHERE g % :slices = :slice ORDER BY g) r;
