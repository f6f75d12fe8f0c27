//! Continuous aggregates compared at the verify's snapshots: the materialized rows of each
//! of the source's aggregates (in the compared schemas) against those of the target's
//! aggregate of the same name. Their rows are migrated and streamed, not recomputed, so
//! they must be equal, and a difference counts in the verdict.

use catalog::Plan;
use conn::{qualified, ConnSpec};
use serde::Serialize;
use tokio_postgres::Client;

use crate::error::{sql, Error};
use crate::snapshot::{reader, Snapshots};

#[derive(Debug, Clone, Serialize)]
pub struct AggregateCheck {
    pub schema: String,
    pub name: String,
    /// None: missing on that side.
    pub source_rows: Option<i64>,
    pub target_rows: Option<i64>,
    pub equal: bool,
}

/// Row count and an order-independent digest of an aggregate's materialized rows.
async fn digest(
    c: &Client,
    side: &'static str,
    schema: &str,
    name: &str,
) -> Result<Option<(i64, String)>, Error> {
    let what = || format!("read continuous aggregate {schema}.{name}");
    let Some(m) = c
        .query_opt(
            "SELECT h.schema_name::text, h.table_name::text
               FROM _timescaledb_catalog.continuous_agg a
               JOIN _timescaledb_catalog.hypertable h ON h.id = a.mat_hypertable_id
              WHERE a.user_view_schema = $1 AND a.user_view_name = $2",
            &[&schema, &name],
        )
        .await
        .map_err(sql(side, what()))?
    else {
        return Ok(None);
    };
    let r = c
        .query_one(
            &format!(
                "SELECT count(*), coalesce(sum(('x' || left(md5(t::text), 16))::bit(64)::bigint::numeric), 0)::text
                   FROM {} t",
                qualified(m.get(0), m.get(1))
            ),
            &[],
        )
        .await
        .map_err(sql(side, what()))?;
    Ok(Some((r.get(0), r.get(1))))
}

/// Each planned aggregate of `schemas`, at the snapshots.
pub async fn compare(
    source: &ConnSpec,
    target: &ConnSpec,
    snaps: &Snapshots,
    plan: &Plan,
    schemas: &[&String],
) -> Result<Vec<AggregateCheck>, Error> {
    let aggregates: Vec<_> = plan
        .continuous_aggregates
        .iter()
        .filter(|a| schemas.contains(&&a.schema))
        .collect();
    if aggregates.is_empty() {
        return Ok(Vec::new());
    }
    let (s, t) = (
        reader(source, "source", &snaps.source).await?,
        reader(target, "target", &snaps.target).await?,
    );
    let has_timescaledb = t
        .query_one(
            "SELECT to_regclass('_timescaledb_catalog.continuous_agg') IS NOT NULL",
            &[],
        )
        .await
        .map_err(sql("target", "look for TimescaleDB"))?
        .get::<_, bool>(0);
    let mut out = Vec::new();
    for a in aggregates {
        let sd = digest(&s, "source", &a.schema, &a.name).await?;
        let td = if has_timescaledb {
            digest(&t, "target", &a.schema, &a.name).await?
        } else {
            None
        };
        out.push(AggregateCheck {
            schema: a.schema.clone(),
            name: a.name.clone(),
            equal: sd.is_some() && sd == td,
            source_rows: sd.map(|(n, _)| n),
            target_rows: td.map(|(n, _)| n),
        });
    }
    Ok(out)
}
