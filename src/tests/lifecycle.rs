//! memori_maintain: expiry, archiving, promotion, the cache purge.

use pgrx::prelude::*;

#[pg_schema]
mod tests {
    use crate::tests::support::{one, run};
    use pgrx::datum::Uuid;
    use pgrx::prelude::*;

    fn count(sql_where: &str) -> i64 {
        one::<i64>(&format!(
            "SELECT count(*) FROM memori_memories WHERE {sql_where}"
        ))
    }

    fn maintain() -> (i64, i64, i64, i64) {
        Spi::connect(|c| {
            let r = c
                .select("SELECT * FROM memori_maintain()", None, &[])
                .unwrap()
                .first();
            (
                r.get::<i64>(1).unwrap().unwrap(),
                r.get::<i64>(2).unwrap().unwrap(),
                r.get::<i64>(3).unwrap().unwrap(),
                r.get::<i64>(4).unwrap().unwrap(),
            )
        })
    }

    fn context(args: &str) -> String {
        one::<String>(&format!("SELECT memori_context({args})"))
    }

    #[pg_test]
    fn expired_memories_vanish_at_once_and_maintenance_deletes_them() {
        run("SELECT memori_store('User is debugging the orders report today')");
        run("SELECT memori_store('User is debugging the invoices report today')");
        run("UPDATE memori_memories SET expires_at = now() - interval '1 minute' WHERE content LIKE '%orders%'");
        assert_eq!(one::<i64>("SELECT count(*) FROM memori_search('debugging a report', include_archived => true)"), 1);
        assert!(!context("'debugging a report'").contains("orders"));
        assert_eq!(maintain().0, 1);
        assert_eq!(count("true"), 1);
        // With memori.keep_expired they are archived instead, and still never returned.
        run("SET LOCAL memori.keep_expired = on");
        run("UPDATE memori_memories SET expires_at = now() - interval '1 minute'");
        assert_eq!(maintain().0, 1);
        assert_eq!(count("is_archived"), 1);
        assert_eq!(one::<i64>("SELECT count(*) FROM memori_search('debugging a report', include_archived => true)"), 0);
    }

    #[pg_test]
    fn unused_memories_are_archived_but_rules_never() {
        for (content, t) in [
            ("old fact about sales", "long_term"),
            ("old rule: use ISO dates", "rule"),
            ("fresh fact about sales", "long_term"),
            ("old but recently used fact", "entity"),
        ] {
            run(&format!("SELECT memori_store('{content}', '{t}')"));
        }
        run("UPDATE memori_memories SET updated_at = now() - interval '40 days' WHERE content LIKE 'old%'");
        run("UPDATE memori_memories SET last_accessed_at = now() - interval '1 day' WHERE content LIKE '%recently used%'");
        let (_, archived, _, _) = maintain();
        assert_eq!(archived, 1);
        assert_eq!(
            one::<String>("SELECT string_agg(content, ',') FROM memori_memories WHERE is_archived"),
            "old fact about sales"
        );
        assert_eq!(
            one::<i64>("SELECT count(*) FROM memori_search('sales fact')"),
            3
        );
        assert_eq!(
            one::<i64>(
                "SELECT count(*) FROM memori_search('sales fact', include_archived => true)"
            ),
            4
        );
        run("SET LOCAL memori.archive_threshold_days = 50");
        run("UPDATE memori_memories SET is_archived = false");
        assert_eq!(maintain().1, 0);
    }

    #[pg_test]
    fn often_used_short_term_memories_become_long_term() {
        let id = one::<Uuid>("SELECT memori_store('User works on the Q3 revenue dashboard')");
        for _ in 0..2 {
            run("SELECT * FROM memori_search('revenue dashboard')");
        }
        assert_eq!(
            count("memory_type = 'short_term' AND expires_at IS NOT NULL"),
            1
        );
        run("SELECT * FROM memori_search('revenue dashboard')");
        assert_eq!(
            count("memory_type = 'long_term' AND expires_at IS NULL AND access_count = 3"),
            1
        );
        // maintenance promotes what reached the count another way.
        run("SET LOCAL memori.promote_after_accesses = 5");
        run("SELECT memori_store('User exports CSV files weekly')");
        run("UPDATE memori_memories SET access_count = 5 WHERE content LIKE '%CSV%'");
        assert_eq!(maintain().2, 1);
        assert_eq!(count("memory_type = 'long_term'"), 2);
        let _ = id;
    }

    #[pg_test]
    fn maintenance_purges_the_embedding_cache() {
        run("SELECT memori_embed('to be purged'), memori_embed('to be kept')");
        run(
            "UPDATE memori_embedding_cache SET created_at = now() - interval '2 hours'
              WHERE text_sha256 = sha256('to be purged'::bytea)",
        );
        assert_eq!(maintain().3, 1);
        assert_eq!(one::<i64>("SELECT count(*) FROM memori_embedding_cache"), 1);
    }
}
