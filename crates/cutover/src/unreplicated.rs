//! What logical replication does not carry, brought to the new primary by the flip:
//! sequence values and materialized views' rows.

use std::time::Instant;

use conn::qualified;
use tokio_postgres::types::Type;
use tokio_postgres::Client;

use crate::ctx::Ctx;
use crate::error::sql;
use crate::{far, Error};

/// How long a refresh may wait for its view's lock before the cutover gives up (nothing is
/// paused yet).
const REFRESH_LOCK_TIMEOUT: &str = "10s";

/// Refreshes every populated materialized view of the run's schemas on the new primary, each
/// after those it reads, CONCURRENTLY where a unique index allows (readers go on), and
/// records it in the audit log (`matviews-refreshed`), which status and plan show.
pub(crate) async fn refresh_matviews(cx: &mut Ctx<'_>) -> Result<(), Error> {
    let views = catalog::matviews::in_refresh_order(&cx.new, &cx.schemas).await?;
    let mut done = Vec::new();
    for v in views.iter().filter(|v| v.populated) {
        let started = Instant::now();
        let how = if v.concurrently { "CONCURRENTLY " } else { "" };
        let what = || format!("refresh {}", v.qualified());
        // Dropped uncommitted on an error: the session stays usable for the undo.
        let tx = cx
            .new
            .transaction()
            .await
            .map_err(sql("new primary", what()))?;
        tx.batch_execute(&format!(
            "SET LOCAL lock_timeout = '{REFRESH_LOCK_TIMEOUT}'; REFRESH MATERIALIZED VIEW {how}{}",
            v.qualified()
        ))
        .await
        .map_err(sql("new primary", what()))?;
        tx.commit().await.map_err(sql("new primary", what()))?;
        done.push(serde_json::json!({
            "view": format!("{}.{}", v.schema, v.name),
            "ms": started.elapsed().as_secs_f64() * 1000.0,
            "concurrently": v.concurrently,
        }));
    }
    if !done.is_empty() {
        let (_, new) = cx.dir.sides();
        state::matviews::refreshed(&cx.state, &cx.opts.run, new, cx.dir.as_str(), done).await?;
    }
    Ok(())
}

/// Every sequence of the run's schemas on the new primary set to the old primary's value.
pub(crate) async fn sync_sequences(cx: &Ctx<'_>) -> Result<(), Error> {
    let values = read_sequences(&cx.old, &cx.schemas).await?;
    set_sequences(&cx.new, &values).await
}

/// The run's sequences on a server that handed out a value, each with its last value.
pub(crate) async fn read_sequences(
    server: &Client,
    schemas: &[String],
) -> Result<Vec<(String, i64)>, Error> {
    let schemas = schemas.to_vec();
    let rows = far::rows(
        server,
        "old primary",
        "read sequences",
        "SELECT schemaname::text, sequencename::text, last_value FROM pg_sequences
          WHERE schemaname = ANY($1) AND last_value IS NOT NULL",
        &[(&schemas, Type::TEXT_ARRAY)],
    )
    .await?;
    Ok(rows
        .iter()
        .map(|r| (qualified(r.get(0), r.get(1)), r.get(2)))
        .collect())
}

/// Sets each sequence named (schema-qualified, quoted) to its value, in one statement.
pub(crate) async fn set_sequences(server: &Client, values: &[(String, i64)]) -> Result<(), Error> {
    if values.is_empty() {
        return Ok(());
    }
    let (names, values): (Vec<String>, Vec<i64>) = values.iter().cloned().unzip();
    far::rows(
        server,
        "new primary",
        "set sequences",
        "SELECT setval(s.name::regclass, s.value, true)
           FROM unnest($1::text[], $2::int8[]) AS s(name, value)",
        &[(&names, Type::TEXT_ARRAY), (&values, Type::INT8_ARRAY)],
    )
    .await
    .map(|_| ())
}
