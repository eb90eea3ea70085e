//! memori_context: the prompt block (rules, entities, memories), k and the token budget.

use pgrx::prelude::*;

#[pg_schema]
mod tests {
    use crate::tests::support::{one, run, sql_error};
    use pgrx::prelude::*;

    fn context(args: &str) -> String {
        one::<String>(&format!("SELECT memori_context({args})"))
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
}
