//! The schema the extension creates: tables, columns, constraints, indexes (and no triggers).

use pgrx::prelude::*;

#[pg_schema]
mod tests {
    use crate::tests::support::one;
    use crate::tests::support::run;
    use pgrx::prelude::*;

    fn columns(table: &str) -> Vec<(String, String, bool, Option<String>)> {
        Spi::connect(|c| {
            c.select(
                "SELECT column_name::text, data_type::text, is_nullable = 'YES', column_default::text
                   FROM information_schema.columns
                  WHERE table_name = $1 ORDER BY ordinal_position",
                None,
                &[table.into()],
            )
            .unwrap()
            .map(|r| {
                (
                    r.get::<String>(1).unwrap().unwrap(),
                    r.get::<String>(2).unwrap().unwrap(),
                    r.get::<bool>(3).unwrap().unwrap(),
                    r.get::<String>(4).unwrap(),
                )
            })
            .collect()
        })
    }

    fn insert_memory(memory_type: &str, importance: f64) -> Result<(), pgrx::spi::SpiError> {
        Spi::run_with_args(
            "INSERT INTO memori_memories (user_id, content, memory_type, importance_score)
             VALUES ('u', 'x', $1, $2)",
            &[memory_type.into(), importance.into()],
        )
    }

    #[pg_test]
    fn conversations_table_has_the_seed_columns() {
        let cols = columns("memori_conversations");
        let names: Vec<&str> = cols.iter().map(|c| c.0.as_str()).collect();
        assert_eq!(
            names,
            [
                "id",
                "conversation_id",
                "user_id",
                "data_source_id",
                "title",
                "metadata",
                "is_active",
                "created_at",
                "updated_at",
                "last_activity_at"
            ]
        );
        let ty = |n: &str| cols.iter().find(|c| c.0 == n).unwrap().1.clone();
        assert_eq!(ty("conversation_id"), "uuid");
        assert_eq!(ty("data_source_id"), "bigint");
        assert_eq!(ty("metadata"), "jsonb");
        assert_eq!(ty("is_active"), "boolean");
        assert_eq!(ty("last_activity_at"), "timestamp with time zone");
        let conv = cols.iter().find(|c| c.0 == "conversation_id").unwrap();
        assert_eq!(conv.3.as_deref(), Some("gen_random_uuid()"));
        // unique conversation_id
        assert!(one::<bool>(
            "SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = 'memori_conversations'::regclass
                AND contype = 'u' AND conname = 'memori_conversations_conversation_id_key')"
        ));
    }

    #[pg_test]
    fn memories_table_has_the_seed_columns() {
        let cols = columns("memori_memories");
        let names: Vec<&str> = cols.iter().map(|c| c.0.as_str()).collect();
        for seed in [
            "id",
            "memory_id",
            "conversation_id",
            "user_id",
            "content",
            "memory_type",
            "embedding",
            "importance_score",
            "access_count",
            "last_accessed_at",
            "context_tags",
            "related_entities",
            "metadata",
            "expires_at",
            "is_archived",
            "created_at",
            "updated_at",
        ] {
            assert!(names.contains(&seed), "memori_memories lacks {seed}");
        }
        let col = |n: &str| cols.iter().find(|c| c.0 == n).unwrap().clone();
        assert!(!col("user_id").2, "user_id is NOT NULL");
        assert!(!col("content").2, "content is NOT NULL");
        assert!(!col("memory_type").2, "memory_type is NOT NULL");
        assert_eq!(col("embedding").1, "USER-DEFINED");
        assert_eq!(col("context_tags").1, "ARRAY");
        assert_eq!(col("related_entities").1, "ARRAY");
        assert_eq!(col("importance_score").3.as_deref(), Some("0.5"));
        assert_eq!(col("access_count").3.as_deref(), Some("0"));
        assert_eq!(col("is_archived").3.as_deref(), Some("false"));
        assert_eq!(
        one::<String>("SELECT array_to_string(reloptions, ',') FROM pg_class WHERE relname = 'memori_memories'"),
        "fillfactor=60,toast_tuple_target=4080"
    );
        // The embedding column takes any width: no typmod.
        assert_eq!(
            one::<String>(
                "SELECT format_type(atttypid, atttypmod) FROM pg_attribute
                  WHERE attrelid = 'memori_memories'::regclass AND attname = 'embedding'"
            ),
            "vector"
        );
    }

    #[pg_test]
    fn memories_foreign_key_cascades_from_conversations() {
        assert_eq!(
            one::<String>(
                "SELECT pg_get_constraintdef(oid) FROM pg_constraint
                  WHERE conrelid = 'memori_memories'::regclass AND contype = 'f'"
            ),
            "FOREIGN KEY (user_id, conversation_id) REFERENCES memori_conversations(user_id, conversation_id) ON DELETE CASCADE"
        );
    }

    #[pg_test]
    fn the_seed_indexes_exist() {
        for (table, index) in [
            ("memori_conversations", "idx_memori_conv_user"),
            ("memori_conversations", "idx_memori_conv_datasource"),
            ("memori_conversations", "idx_memori_conv_active"),
            ("memori_conversations", "idx_memori_conv_metadata"),
            ("memori_memories", "idx_memori_mem_conv"),
            ("memori_memories", "idx_memori_mem_user"),
            ("memori_memories", "idx_memori_mem_type"),
            ("memori_memories", "idx_memori_mem_importance"),
            ("memori_memories", "idx_memori_mem_tags"),
            ("memori_memories", "idx_memori_mem_entities"),
            ("memori_memories", "idx_memori_mem_metadata"),
            ("memori_memories", "idx_memori_mem_embedding_384"),
            ("memori_memories", "idx_memori_mem_embedding_1536"),
        ] {
            let found = Spi::get_one_with_args::<bool>(
                "SELECT EXISTS (SELECT 1 FROM pg_indexes WHERE tablename = $1 AND indexname = $2)",
                &[table.into(), index.into()],
            )
            .unwrap()
            .unwrap();
            assert!(found, "{table} lacks index {index}");
        }
        let def = |name: &str| {
            Spi::get_one_with_args::<String>(
                "SELECT indexdef FROM pg_indexes WHERE indexname = $1",
                &[name.into()],
            )
            .unwrap()
            .unwrap()
        };
        assert!(def("idx_memori_mem_importance").contains("(importance_score DESC)"));
        for gin in [
            "idx_memori_conv_metadata",
            "idx_memori_mem_tags",
            "idx_memori_mem_entities",
        ] {
            assert!(def(gin).contains("USING gin"), "{gin} is GIN");
        }
        for dims in [384, 1536] {
            let d = def(&format!("idx_memori_mem_embedding_{dims}"));
            assert!(d.contains("USING hnsw"), "{d}");
            assert!(d.contains(&format!("(embedding)::vector({dims})")), "{d}");
            assert!(d.contains("vector_cosine_ops"), "{d}");
            assert!(
                d.contains(&format!("WHERE (embedding_dims = {dims})")),
                "{d}"
            );
        }
    }

    #[pg_test(
        error = "new row for relation \"memori_memories\" violates check constraint \"memori_memories_memory_type_check\""
    )]
    fn an_unknown_memory_type_is_refused() {
        insert_memory("episodic", 0.5).unwrap();
    }

    #[pg_test]
    fn every_seed_memory_type_is_accepted() {
        for t in ["short_term", "long_term", "rule", "entity", "relationship"] {
            insert_memory(t, 0.5).unwrap();
        }
        assert_eq!(one::<i64>("SELECT count(*) FROM memori_memories"), 5);
    }

    #[pg_test(
        error = "new row for relation \"memori_memories\" violates check constraint \"memori_memories_importance_score_check\""
    )]
    fn importance_above_one_is_refused() {
        insert_memory("rule", 1.01).unwrap();
    }

    #[pg_test(
        error = "new row for relation \"memori_memories\" violates check constraint \"memori_memories_importance_score_check\""
    )]
    fn importance_below_zero_is_refused() {
        insert_memory("rule", -0.01).unwrap();
    }

    #[pg_test]
    fn importance_bounds_are_accepted() {
        insert_memory("rule", 0.0).unwrap();
        insert_memory("rule", 1.0).unwrap();
    }

    #[pg_test]
    fn deleting_a_conversation_deletes_its_memories() {
        let conv = one::<pgrx::datum::Uuid>("SELECT memori_conversation_create('t', 'alice')");
        let other = one::<pgrx::datum::Uuid>("SELECT memori_conversation_create('t2', 'alice')");
        for c in [conv, other] {
            Spi::run_with_args(
                "INSERT INTO memori_memories (conversation_id, user_id, content, memory_type)
                 VALUES ($1, 'alice', 'a', 'rule'), ($1, 'alice', 'b', 'entity')",
                &[c.into()],
            )
            .unwrap();
        }
        Spi::run_with_args(
            "DELETE FROM memori_conversations WHERE conversation_id = $1",
            &[conv.into()],
        )
        .unwrap();
        assert_eq!(one::<i64>("SELECT count(*) FROM memori_memories"), 2);
        let left = Spi::get_one_with_args::<i64>(
            "SELECT count(*) FROM memori_memories WHERE conversation_id = $1",
            &[other.into()],
        )
        .unwrap()
        .unwrap();
        assert_eq!(left, 2);
    }

    #[pg_test]
    fn updated_at_moves_when_memori_changes_a_row_and_only_then() {
        // No triggers (the tables can be distributed with Citus): memori's statements keep it.
        assert_eq!(
            one::<i64>(
                "SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal
                   AND tgrelid IN ('memori_memories'::regclass, 'memori_conversations'::regclass, 'memori_messages'::regclass)"
            ),
            0
        );
        run("SET LOCAL memori.user_id = 'upd'");
        let id =
            one::<pgrx::datum::Uuid>("SELECT memori_store('upd fact', 'rule', importance => 0.5)");
        let conv = one::<pgrx::datum::Uuid>("SELECT memori_conversation_create('t')");
        let old = "UPDATE memori_memories SET updated_at = now() - interval '1 day' WHERE user_id = 'upd';
                   UPDATE memori_conversations SET updated_at = now() - interval '1 day' WHERE user_id = 'upd'";
        let moved = || {
            one::<bool>(&format!(
                "SELECT updated_at = now() FROM memori_memories WHERE memory_id = '{id}'"
            ))
        };
        run(old);
        run(&format!("SELECT memori_update('{id}', importance => 0.5)"));
        assert!(!moved(), "an update that changes nothing");
        run(&format!("SELECT memori_update('{id}', importance => 0.9)"));
        assert!(moved(), "a new importance");
        run(old);
        run("SELECT count(*) FROM memori_search('upd fact')");
        assert!(!moved(), "a search only counts an access");
        run(&format!(
            "SELECT memori_store('upd in conversation', conversation_id => '{conv}')"
        ));
        assert!(one::<bool>(&format!(
            "SELECT updated_at = now() AND last_activity_at = now() FROM memori_conversations WHERE conversation_id = '{conv}'"
        )));
    }

    #[pg_test]
    fn embedding_width_is_recorded_per_row() {
        Spi::run(
            "INSERT INTO memori_memories (user_id, content, memory_type, embedding, embedding_model)
             VALUES ('u', 'a', 'rule', array_fill(0.1::real, ARRAY[384])::vector, 'local/all-MiniLM-L6-v2'),
                    ('u', 'b', 'rule', array_fill(0.1::real, ARRAY[1536])::vector, 'openai/text-embedding-3-small'),
                    ('u', 'c', 'rule', '[1,2,3]', 'test/three')",
        )
        .unwrap();
        assert_eq!(
            one::<String>("SELECT string_agg(embedding_dims::text, ',' ORDER BY content) FROM memori_memories"),
            "384,1536,3"
        );
    }

    #[pg_test(
        error = "new row for relation \"memori_memories\" violates check constraint \"memori_memories_embedding_model_check\""
    )]
    fn an_embedding_without_its_model_is_refused() {
        Spi::run(
            "INSERT INTO memori_memories (user_id, content, memory_type, embedding) VALUES ('u', 'a', 'rule', '[1,2]')",
        )
        .unwrap();
    }

    #[pg_test(
        error = "new row for relation \"memori_memories\" violates check constraint \"memori_memories_content_check\""
    )]
    fn blank_content_is_refused() {
        Spi::run("INSERT INTO memori_memories (user_id, content, memory_type) VALUES ('u', '  ', 'rule')")
            .unwrap();
    }

    #[pg_test]
    fn create_index_adds_a_width() {
        assert_eq!(
            one::<String>("SELECT memori_create_index(768)"),
            "idx_memori_mem_embedding_768"
        );
        assert_eq!(
            one::<String>("SELECT memori_create_index(768)"),
            "idx_memori_mem_embedding_768"
        );
        assert_eq!(
            one::<String>("SELECT memori_create_index(3072)"),
            "idx_memori_mem_embedding_3072"
        );
        let d = one::<String>(
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'idx_memori_mem_embedding_3072'",
        );
        assert!(
            d.contains("halfvec(3072)") && d.contains("halfvec_cosine_ops"),
            "{d}"
        );
    }

    #[pg_test(error = "memori: cannot index embeddings of 5000 dimensions")]
    fn create_index_refuses_too_wide() {
        Spi::run("SELECT memori_create_index(5000)").unwrap();
    }

    /// The memory types memori knows (memory::MemoryType) are exactly those the schema's CHECK
    /// allows and its column comment lists, in the same order: neither can drift from the other.
    #[pg_test]
    fn memory_types_are_the_checks_and_the_comments() {
        let names: Vec<String> = crate::base::memory::MemoryType::names()
            .iter()
            .map(|n| format!("'{n}'"))
            .collect();
        let check = one::<String>(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'memori_memories_memory_type_check'",
        );
        // As PostgreSQL prints it: ARRAY['short_term'::text, ...].
        let bare = check
            .replace("::text", "")
            .replace("::character varying", "");
        assert!(
            bare.contains(&format!("ARRAY[{}]", names.join(", "))),
            "{check}"
        );
        let listed = one::<String>(
            "SELECT col_description('memori_memories'::regclass, attnum) FROM pg_attribute
              WHERE attrelid = 'memori_memories'::regclass AND attname = 'memory_type'",
        );
        assert_eq!(
            listed,
            format!(
                "One of {}.",
                crate::base::memory::MemoryType::names().join(", ")
            )
        );
    }
}
