//! Expiry, archival, promotion, the cache purge, memori_context, memori_relate, memori_entity.

use pgrx::prelude::*;

#[pg_schema]
mod tests {
    use crate::tests::support::{one, run, sql_error};
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

    fn seed() {
        run("SELECT memori_store('User prefers using table aliases in SQL queries', 'rule', importance => 0.8)");
        run("SELECT memori_store('Always answer in British English', 'rule', importance => 0.9)");
        run("SELECT memori_store('The customers table has columns: id, name, email, created_at', 'entity', importance => 0.7, entities => '{customers}')");
        run("SELECT memori_relate('orders.customer_id', 'references', 'customers.id')");
        run("SELECT memori_store('User is building a customer churn report in SQL', 'long_term')");
        run("SELECT memori_store('User had pancakes for breakfast', 'long_term')");
    }

    #[pg_test]
    fn context_has_rules_then_entities_then_memories() {
        seed();
        let block = context("'Write SQL listing customers and their orders'");
        let lines: Vec<&str> = block.lines().collect();
        assert_eq!(lines[0], "## Rules");
        assert!(
            lines[1].starts_with("- [rule ")
                && lines[1].ends_with("] Always answer in British English"),
            "{block}"
        );
        assert!(
            lines[2].ends_with("] User prefers using table aliases in SQL queries"),
            "{block}"
        );
        assert_eq!(lines[3], "## Entities and relationships");
        assert!(
            block.contains("] orders.customer_id references customers.id"),
            "{block}"
        );
        assert!(block.contains("[entity "), "{block}");
        assert!(
            block.contains("## Relevant memories\n- [long_term "),
            "{block}"
        );
        assert!(block.contains("churn report"), "{block}");
        assert!(
            !block.contains("pancakes"),
            "below memori.min_similarity: {block}"
        );
        // Short ids are the start of memory_id.
        let id = one::<String>(
            "SELECT left(memory_id::text, 8) FROM memori_memories WHERE content LIKE 'Always%'",
        );
        assert!(lines[1].contains(&format!("[rule {id}]")), "{block}");
        // Rules come whatever the query.
        let other = context("'pancakes'");
        assert!(other.starts_with("## Rules\n"), "{other}");
        assert!(other.contains("pancakes"));
    }

    #[pg_test]
    fn context_respects_k_and_the_token_budget() {
        seed();
        let block = context("'customers orders SQL', k => 1");
        assert_eq!(
            block
                .lines()
                .filter(|l| l.starts_with("- [") && !l.starts_with("- [rule"))
                .count(),
            1,
            "{block}"
        );
        for budget in [5, 20, 40, 60, 2000] {
            let b = context(&format!("'customers orders SQL', token_budget => {budget}"));
            assert!(b.chars().count().div_ceil(4) <= budget, "{budget}: {b}");
            for line in b.lines() {
                assert!(
                    line.starts_with("## ") || line.starts_with("- ["),
                    "whole items only: {line}"
                );
            }
        }
        // The least relevant go first, the rules last.
        let small = context("'customers orders SQL', token_budget => 40");
        assert!(small.contains("British English"), "{small}");
        assert!(!small.contains("churn"), "{small}");
        let e = sql_error("SELECT memori_context('x', token_budget => 0)");
        assert_eq!(e.message, "memori: token_budget must be at least 1, not 0");
    }

    #[pg_test]
    fn context_of_nothing_is_an_empty_string() {
        assert_eq!(context("'anything'"), "");
        assert!(one::<bool>("SELECT memori_context('anything') IS NOT NULL"));
        run("SELECT memori_store('Use ISO dates', 'rule')");
        assert_eq!(context("NULL").lines().count(), 2);
    }

    #[pg_test]
    fn relate_and_entity() {
        let id = one::<Uuid>("SELECT memori_relate('orders.customer_id', 'references', 'customers.id', importance => 0.9)");
        assert_eq!(
            one::<String>(&format!(
                "SELECT content || '|' || memory_type || '|' || related_entities::text || '|' || (metadata->>'predicate')
                   FROM memori_memories WHERE memory_id = '{id}'"
            )),
            "orders.customer_id references customers.id|relationship|{orders.customer_id,customers.id}|references"
        );
        run("SELECT memori_store('customers.id is the primary key of customers', 'entity', entities => '{customers.id}')");
        run("SELECT memori_store('unrelated', 'entity', entities => '{products.id}')");
        run("SELECT memori_relate('x', 'y', 'customers.id', user_id => 'someone_else')");
        assert_eq!(
            one::<i64>("SELECT count(*) FROM memori_entity('customers.id')"),
            2
        );
        assert_eq!(
            one::<String>(
                "SELECT string_agg(memory_type, ',' ) FROM memori_entity('customers.id')"
            ),
            "entity,relationship"
        );
        assert_eq!(
            one::<i64>("SELECT count(*) FROM memori_entity('orders.customer_id')"),
            1
        );
        let e = sql_error("SELECT memori_relate('a', '', 'b')");
        assert_eq!(e.message, "memori: predicate must not be NULL or empty");
    }
}
