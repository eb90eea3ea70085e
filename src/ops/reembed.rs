//! Moving every memory to the currently configured embedding model, online: `CALL
//! memori_reembed()` (finalize.sql) runs `memori_reembed_batch()` and commits after each batch,
//! so a cancel or a crash loses at most the batch in flight and the next CALL goes on from
//! there. Searches embed the question with the configured model and rank only memories of that
//! model, so they never mix models: while the move runs they find the memories moved so far.
//! Each memory's old embedding is replaced in place, so none is left when the move ends.

use crate::base::errors::{MemoriError, OrRaise, Result};
use crate::base::spi::{prevent_if_read_only, read_one, spi};
use crate::providers::embedding::{embed_texts, Target};
use crate::tenancy::as_owner_of;
use pgrx::prelude::*;

/// Moves up to `batch_size` memories not yet embedded by the current model; skips rows other
/// transactions hold (a concurrent update or a second mover). Returns how many it moved and how
/// many remain.
fn batch(batch_size: i32) -> Result<(i64, i64)> {
    let current = Target::current();
    let label = current.label();
    // Another model, or the same model at another width (embedding_dimensions changed; 0: the
    // width is known only from the model's answer).
    let stale = "(embedding_model IS DISTINCT FROM $1::pg_catalog.text
                  OR ($3::pg_catalog.int4 OPERATOR(pg_catalog.<>) 0 AND embedding_dims IS DISTINCT FROM $3::pg_catalog.int4))";
    let distributed = crate::base::catalog::distributed()?;
    let rows: Vec<(i64, String, String)> = as_owner_of(c"memori_memories", || {
        if !distributed {
            return candidates(stale, None, &label, batch_size, current.dims);
        }
        // On Citus, rows are locked one user at a time (a query filtered by user_id goes to
        // that user's worker, which can take FOR UPDATE SKIP LOCKED; one over every shard cannot).
        let users: Vec<String> = Spi::connect(|client| {
            client
                .select(
                    &format!("SELECT DISTINCT user_id::pg_catalog.text FROM memori_memories WHERE {stale} LIMIT $2"),
                    None,
                    &[label.clone().into(), (batch_size as i64).into(), (current.dims as i32).into()],
                )?
                .map(|r| r.get::<String>(1).map(Option::unwrap_or_default))
                .collect::<std::result::Result<_, pgrx::spi::Error>>()
        })
        .map_err(spi)?;
        let mut rows = Vec::new();
        for user in users {
            let left = batch_size - rows.len() as i32;
            if left <= 0 {
                break;
            }
            rows.extend(candidates(stale, Some(&user), &label, left, current.dims)?);
        }
        Ok(rows)
    })?;
    if !rows.is_empty() {
        let texts: Vec<&str> = rows.iter().map(|r| r.1.as_str()).collect();
        // Many users' texts: no cache (it is per user).
        let (target, vectors) = embed_texts(None, &texts)?;
        let literals: Vec<String> = vectors
            .vectors
            .iter()
            .map(|v| {
                format!(
                    "[{}]",
                    v.iter().map(f32::to_string).collect::<Vec<_>>().join(",")
                )
            })
            .collect();
        as_owner_of(c"memori_memories", || {
            // One statement, or on Citus one per user (each a router query to its worker).
            let mut groups: Vec<(Option<&str>, Vec<usize>)> = Vec::new();
            for (i, r) in rows.iter().enumerate() {
                let key = distributed.then_some(r.2.as_str());
                match groups.iter_mut().find(|g| g.0 == key) {
                    Some(g) => g.1.push(i),
                    None => groups.push((key, vec![i])),
                }
            }
            for (user, members) in groups {
                let ids: Vec<i64> = members.iter().map(|&i| rows[i].0).collect();
                let users: Vec<String> = members.iter().map(|&i| rows[i].2.clone()).collect();
                let vectors: Vec<String> = members.iter().map(|&i| literals[i].clone()).collect();
                let mut args = vec![
                    ids.into(),
                    vectors.into(),
                    target.label().into(),
                    users.into(),
                ];
                let by_user = match user {
                    Some(u) => {
                        args.push(u.into());
                        " AND m.user_id OPERATOR(pg_catalog.=) $5::pg_catalog.text"
                    }
                    None => "",
                };
                Spi::run_with_args(
                    &format!(
                        "UPDATE memori_memories m SET embedding = x.v::vector, embedding_model = $3::pg_catalog.text
                           FROM ROWS FROM (pg_catalog.unnest($1::bigint[]), pg_catalog.unnest($2::pg_catalog.text[]),
                                           pg_catalog.unnest($4::pg_catalog.text[])) AS x(id, v, u)
                          WHERE m.user_id OPERATOR(pg_catalog.=) x.u AND m.id = x.id{by_user}"
                    ),
                    &args,
                )
                .map_err(spi)?;
            }
            Spi::run_with_args(
                "INSERT INTO memori_reembed_state AS s (target_model, reembedded) VALUES ($1::pg_catalog.text, $2::bigint)
                 ON CONFLICT (target_model) DO UPDATE
                    SET reembedded = s.reembedded + excluded.reembedded, updated_at = now()",
                &[target.label().into(), (rows.len() as i64).into()],
            )
            .map_err(spi)
        })?;
    }
    let remaining = read_one::<i64>(
        "SELECT count(*) FROM memori_memories WHERE embedding_model IS DISTINCT FROM $1::pg_catalog.text",
        &[label.into()],
    )?
    .unwrap_or(0);
    Ok((rows.len() as i64, remaining))
}

/// Up to `limit` rows of the stale ones (of `user` only, if given), locked, skipping rows other
/// transactions hold: (id, content, user_id).
fn candidates(
    stale: &str,
    user: Option<&str>,
    label: &str,
    limit: i32,
    dims: usize,
) -> Result<Vec<(i64, String, String)>> {
    let by_user = if user.is_some() {
        " AND user_id OPERATOR(pg_catalog.=) $4::pg_catalog.text"
    } else {
        ""
    };
    Spi::connect_mut(|client| {
        let mut args = vec![label.into(), (limit as i64).into(), (dims as i32).into()];
        if let Some(u) = user {
            args.push(u.into());
        }
        client
            .update(
                &format!(
                    "SELECT id, content, user_id::pg_catalog.text FROM memori_memories
                      WHERE {stale}{by_user}
                      ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED"
                ),
                None,
                &args,
            )?
            .map(|r| {
                Ok((
                    r.get::<i64>(1)?.unwrap_or_default(),
                    r.get::<String>(2)?.unwrap_or_default(),
                    r.get::<String>(3)?.unwrap_or_default(),
                ))
            })
            .collect::<std::result::Result<Vec<_>, pgrx::spi::Error>>()
    })
    .map_err(spi)
}

/// One batch of memori_reembed(): re-embeds up to batch_size memories with the current model.
#[pg_extern(volatile, parallel_unsafe)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn memori_reembed_batch(
    batch_size: default!(Option<i32>, "500"),
) -> TableIterator<'static, (name!(reembedded, i64), name!(remaining, i64))> {
    prevent_if_read_only(c"memori_reembed_batch()");
    let n = batch_size.unwrap_or(500);
    if !(1..=10_000).contains(&n) {
        MemoriError::invalid(format!("batch_size must be between 1 and 10000, not {n}")).raise();
    }
    TableIterator::once(batch(n).or_raise())
}

/// How far memori_reembed() has come for the current model.
#[pg_extern(stable, parallel_safe)]
#[search_path(pg_catalog, @extschema@, pg_temp)]
fn memori_reembed_progress() -> TableIterator<
    'static,
    (
        name!(target_model, String),
        name!(total, i64),
        name!(done, i64),
        name!(remaining, i64),
        name!(started_at, Option<pgrx::datum::TimestampWithTimeZone>),
        name!(last_batch_at, Option<pgrx::datum::TimestampWithTimeZone>),
        name!(rows_per_second, Option<f64>),
    ),
> {
    let current = Target::current();
    let label = current.label();
    let row = Spi::connect(|client| {
        let r = client.select(
            "SELECT (SELECT count(*) FROM memori_memories),
                    (SELECT count(*) FROM memori_memories WHERE embedding_model = $1::pg_catalog.text
                        AND ($2::pg_catalog.int4 OPERATOR(pg_catalog.=) 0 OR embedding_dims = $2::pg_catalog.int4)),
                    s.started_at, s.updated_at,
                    s.reembedded::pg_catalog.float8 / nullif(pg_catalog.date_part('epoch'::pg_catalog.text, s.updated_at - s.started_at), 0::pg_catalog.float8)
               FROM (SELECT 1) one
               LEFT JOIN memori_reembed_state s ON s.target_model = $1::pg_catalog.text",
            Some(1),
            &[label.clone().into(), (current.dims as i32).into()],
        )?;
        let r = r.first();
        Ok::<_, pgrx::spi::Error>((
            r.get::<i64>(1)?.unwrap_or(0),
            r.get::<i64>(2)?.unwrap_or(0),
            r.get::<pgrx::datum::TimestampWithTimeZone>(3)?,
            r.get::<pgrx::datum::TimestampWithTimeZone>(4)?,
            r.get::<f64>(5)?,
        ))
    })
    .map_err(spi)
    .or_raise();
    let (total, done, started, last, rate) = row;
    TableIterator::once((label, total, done, total - done, started, last, rate))
}
