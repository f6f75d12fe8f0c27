//! The source's continuous aggregates: created on the target by TimescaleDB from their
//! definitions, then filled with the source's materialized rows as they are at the run's
//! snapshot (never recomputed: the source may have dropped their raw rows), with the
//! source's watermark and invalidation threshold, so green's aggregate holds and serves
//! what blue's does. Sync then applies blue's refreshes to these rows (`sync::relmap`).

use catalog::{ContinuousAggregate, Plan};
use conn::{qualified, quote_literal};
use futures_util::{SinkExt, StreamExt};
use tokio_postgres::Client;

use crate::error::{sql, Error};

/// `schema.name` as the plan prints a materialization hypertable.
fn split(s: &str) -> (&str, &str) {
    s.split_once('.').unwrap_or(("", s))
}

/// The target's materialization of an aggregate: (qualified name, its hypertable id, the
/// raw hypertable's id).
async fn target_materialization(
    tgt: &Client,
    a: &ContinuousAggregate,
) -> Result<(String, i32, i32), Error> {
    let r = tgt
        .query_one(
            "SELECT h.schema_name::text, h.table_name::text, c.mat_hypertable_id, c.raw_hypertable_id
               FROM _timescaledb_catalog.continuous_agg c
               JOIN _timescaledb_catalog.hypertable h ON h.id = c.mat_hypertable_id
              WHERE c.user_view_schema = $1 AND c.user_view_name = $2",
            &[&a.schema, &a.name],
        )
        .await
        .map_err(sql(
            "target",
            format!("look up the materialization of {}.{}", a.schema, a.name),
        ))?;
    Ok((qualified(r.get(0), r.get(1)), r.get(2), r.get(3)))
}

/// Creates each aggregate (idempotent: a resumed copy empties and fills it again) and
/// copies its materialized rows; `src` is a transaction on the run's snapshot.
pub async fn create_and_fill(src: &Client, tgt: &Client, plan: &Plan) -> Result<(), Error> {
    for a in &plan.continuous_aggregates {
        let view = qualified(&a.schema, &a.name);
        let what = |w: &str| format!("{w} {}.{}", a.schema, a.name);
        tgt.batch_execute(&format!(
            "CREATE MATERIALIZED VIEW IF NOT EXISTS {view}
               WITH (timescaledb.continuous, timescaledb.materialized_only = {})
               AS {} WITH NO DATA",
            a.materialized_only,
            a.definition.trim_end_matches(';')
        ))
        .await
        .map_err(sql("target", what("create the continuous aggregate")))?;
        let (mat, mat_id, raw_id) = target_materialization(tgt, a).await?;
        // Its refresh deletes from the materialization's chunks, which the reverse stream's
        // publication carries after cutover: without a replica identity the refresh fails.
        tgt.batch_execute(&format!(
            "ALTER TABLE {mat} REPLICA IDENTITY FULL; DELETE FROM {mat}"
        ))
        .await
        .map_err(sql("target", what("prepare the materialization of")))?;
        let (ms, mn) = split(&a.materialization);
        let source_mat = qualified(ms, mn);
        let copy = what("copy the materialized rows of");
        let out = src
            .copy_out(&format!("COPY (SELECT * FROM {source_mat}) TO STDOUT"))
            .await
            .map_err(sql("source", copy.clone()))?;
        let sink = tgt
            .copy_in(&format!("COPY {mat} FROM STDIN"))
            .await
            .map_err(sql("target", copy.clone()))?;
        futures_util::pin_mut!(out);
        futures_util::pin_mut!(sink);
        while let Some(data) = out.next().await {
            let data = data.map_err(sql("source", copy.clone()))?;
            sink.feed(data).await.map_err(sql("target", copy.clone()))?;
        }
        sink.as_mut()
            .finish()
            .await
            .map_err(sql("target", copy.clone()))?;
        // Blue's watermark (what is materialized) and invalidation threshold (below which
        // raw changes are logged for the next refresh), at the snapshot. TimescaleDB has no
        // call that sets them: they are written into green's catalog rows for this aggregate.
        let marks = src
            .query_one(
                "SELECT (SELECT w.watermark FROM _timescaledb_catalog.continuous_aggs_watermark w
                          WHERE w.mat_hypertable_id = c.mat_hypertable_id),
                        (SELECT t.watermark FROM _timescaledb_catalog.continuous_aggs_invalidation_threshold t
                          WHERE t.hypertable_id = c.raw_hypertable_id)
                   FROM _timescaledb_catalog.continuous_agg c
                  WHERE c.user_view_schema = $1 AND c.user_view_name = $2",
                &[&a.schema, &a.name],
            )
            .await
            .map_err(sql("source", what("read the watermark of")))?;
        let (watermark, threshold): (Option<i64>, Option<i64>) = (marks.get(0), marks.get(1));
        if let Some(w) = watermark {
            tgt.execute(
                "UPDATE _timescaledb_catalog.continuous_aggs_watermark SET watermark = $1
                  WHERE mat_hypertable_id = $2",
                &[&w, &mat_id],
            )
            .await
            .map_err(sql("target", what("set the watermark of")))?;
        }
        if let Some(t) = threshold {
            tgt.execute(
                "INSERT INTO _timescaledb_catalog.continuous_aggs_invalidation_threshold
                        (hypertable_id, watermark) VALUES ($1, $2)
                 ON CONFLICT (hypertable_id) DO UPDATE SET watermark = excluded.watermark",
                &[&raw_id, &t],
            )
            .await
            .map_err(sql("target", what("set the invalidation threshold of")))?;
        }
    }
    Ok(())
}

/// Recreates each aggregate's refresh policy from the source's (the caller pauses it
/// before committing). 2.28 lists the policy under the aggregate's view; older releases
/// under its materialization.
pub async fn add_policies(
    tx: &impl tokio_postgres::GenericClient,
    src: &Client,
    plan: &Plan,
) -> Result<(), Error> {
    for a in &plan.continuous_aggregates {
        let (ms, mn) = split(&a.materialization);
        let what = |w: &str| format!("{w} {}.{}", a.schema, a.name);
        let Some(job) = src
            .query_opt(
                "SELECT job_id, schedule_interval::text, config FROM timescaledb_information.jobs
                  WHERE proc_name = 'policy_refresh_continuous_aggregate'
                    AND ((hypertable_schema = $1 AND hypertable_name = $2)
                         OR (hypertable_schema = $3 AND hypertable_name = $4))",
                &[&a.schema, &a.name, &ms, &mn],
            )
            .await
            .map_err(sql("source", what("look up the refresh policy of")))?
        else {
            continue;
        };
        let (id, every, config): (i32, String, serde_json::Value) =
            (job.get(0), job.get(1), job.get(2));
        let offset = |key: &str| -> Result<String, Error> {
            match config.get(key) {
                None | Some(serde_json::Value::Null) => Ok("NULL".into()),
                Some(serde_json::Value::String(s)) => Ok(format!("{}::interval", quote_literal(s))),
                Some(other) => Err(Error::Refused {
                    what: format!(
                        "the refresh policy (job {id}) of {}.{} has an offset bluegreen does not recreate: {other}",
                        a.schema, a.name
                    ),
                    fix: format!("pause it for the migration (SELECT alter_job({id}, scheduled => false);) and add it on the target after cutover"),
                }),
            }
        };
        let view = qualified(&a.schema, &a.name);
        tx.query_one(
            &format!(
                "SELECT add_continuous_aggregate_policy($1::text::regclass, start_offset => {},
                        end_offset => {}, schedule_interval => $2::text::interval,
                        if_not_exists => true)",
                offset("start_offset")?,
                offset("end_offset")?
            ),
            &[&view, &every],
        )
        .await
        .map_err(sql("target", what("add the refresh policy of")))?;
    }
    Ok(())
}
