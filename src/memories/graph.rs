//! Entities and relationships: `memori_relate()` stores "subject predicate object" as a
//! relationship memory; `memori_entity()` finds the entity and relationship memories that name
//! an entity (GIN index on related_entities).

use crate::base::catalog;
use crate::base::errors::{MemoriError, OrRaise};
use crate::memories::store::{common, store_texts};
use crate::tenancy;
use pgrx::datum::{TimestampWithTimeZone, Uuid};
use pgrx::prelude::*;

fn part(v: Option<&str>, name: &str) -> String {
    match v.map(str::trim) {
        Some(s) if !s.is_empty() => s.to_string(),
        _ => MemoriError::invalid(format!("{name} must not be NULL or empty")).raise(),
    }
}

/// A text[] read from a row, without NULL elements (never a panic on them).
pub fn without_nulls(v: Option<Vec<Option<String>>>) -> Vec<String> {
    v.unwrap_or_default().into_iter().flatten().collect()
}

/// Stores "subject predicate object" (e.g. "orders.customer_id references customers.id") as a
/// relationship memory, with subject and object in related_entities; returns its memory_id.
#[pg_extern(name = "memori_relate", volatile, parallel_unsafe)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
pub(crate) fn relate_entities(
    subject: Option<&str>,
    predicate: Option<&str>,
    object: Option<&str>,
    conversation_id: default!(Option<Uuid>, "NULL"),
    importance: default!(Option<f64>, "0.5"),
    user_id: default!(Option<&str>, "NULL"),
) -> Uuid {
    crate::base::spi::prevent_if_read_only(c"memori_relate()");
    let (s, p, o) = (
        part(subject, "subject"),
        part(predicate, "predicate"),
        part(object, "object"),
    );
    let content = format!("{s} {p} {o}");
    let entities = if s == o {
        vec![s.clone()]
    } else {
        vec![s.clone(), o.clone()]
    };
    let metadata = crate::memories::conversations::JsonbArg::new(
        serde_json::json!({"subject": s, "predicate": p, "object": o}),
    );
    let c = common(
        Some(crate::base::memory::MemoryType::Relationship.as_str()),
        importance,
        None,
        Some(metadata),
        user_id,
    )
    .or_raise();
    store_texts(&c, &[&content], conversation_id, &entities, None)
        .or_raise()
        .remove(0)
}

/// The entity and relationship memories of the current memori user that name `name` in
/// related_entities (exact match), most important first.
// Parallel restricted: it resolves the acting user, which a parallel worker cannot (its
// memori.user_id was never named in its own transaction).
#[pg_extern(stable, parallel_restricted)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn memori_entity(
    name: Option<&str>,
    user_id: default!(Option<&str>, "NULL"),
) -> TableIterator<
    'static,
    (
        name!(memory_id, Uuid),
        name!(memory_type, String),
        name!(content, String),
        name!(importance, f32),
        name!(related_entities, Vec<String>),
        name!(created_at, TimestampWithTimeZone),
    ),
> {
    let name = part(name, "name");
    let user = tenancy::resolve(user_id).or_raise();
    let live = crate::base::memory::live(
        "",
        crate::base::memory::At::Now,
        catalog::has_validity().or_raise(),
        crate::base::memory::Archived::Included,
    );
    let rows = tenancy::reading(|| {
        Spi::connect(|c| {
        c.select(
            &format!("SELECT memory_id, memory_type::pg_catalog.text, content, importance_score, related_entities, created_at
               FROM memori_memories
              WHERE user_id OPERATOR(pg_catalog.=) $1::pg_catalog.text AND related_entities OPERATOR(pg_catalog.@>) ARRAY[$2::pg_catalog.text]
                AND memory_type::pg_catalog.text = ANY (ARRAY['entity', 'relationship']::pg_catalog.text[])
                AND {live}
              ORDER BY memory_type, importance_score DESC, created_at"),
            None,
            &[user.into(), name.into()],
        )?
        .map(|r| {
            Ok((
                r.get::<Uuid>(1)?.expect("NOT NULL"),
                r.get::<String>(2)?.unwrap_or_default(),
                r.get::<String>(3)?.unwrap_or_default(),
                r.get::<f32>(4)?.unwrap_or_default(),
                without_nulls(r.get::<Vec<Option<String>>>(5)?),
                r.get::<TimestampWithTimeZone>(6)?.expect("NOT NULL"),
            ))
        })
        .collect::<std::result::Result<Vec<_>, pgrx::spi::Error>>()
        })
        .map_err(crate::base::spi::spi)
    })
    .or_raise();
    TableIterator::new(rows)
}
