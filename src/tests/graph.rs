//! memori_relate and memori_entity.

use pgrx::prelude::*;

#[pg_schema]
mod tests {
    use crate::tests::support::{one, run, sql_error};
    use pgrx::datum::Uuid;
    use pgrx::prelude::*;

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
