//! The TimescaleDB policies a run creates on green (compression, retention, reorder,
//! continuous aggregate refresh): paused from the moment they exist until green takes traffic, so green
//! keeps every row blue has and a verify before cutover compares the same rows. Cutover
//! starts them; rollback pauses them again. They are found by the run's schemas: jobs of
//! those procedures on hypertables (or continuous aggregates) in them.

use crate::{q, Error, GenericClient};

/// The job procedures bluegreen creates.
pub const PROCS: &[&str] = &[
    "policy_compression",
    "policy_retention",
    "policy_reorder",
    "policy_refresh_continuous_aggregate",
];

/// The run's policies on green: (started, paused); None where green has no TimescaleDB.
pub async fn counts(
    c: &impl GenericClient,
    schemas: &[String],
) -> Result<Option<(i64, i64)>, Error> {
    if !has_timescaledb(c).await? {
        return Ok(None);
    }
    let row = c
        .query_one(
            &format!(
                "SELECT count(*) FILTER (WHERE j.scheduled), count(*) FILTER (WHERE NOT j.scheduled)
                   {RUN_JOBS}"
            ),
            &[&schemas, &PROCS],
        )
        .await
        .map_err(q("count TimescaleDB policies"))?;
    Ok(Some((row.get(0), row.get(1))))
}

/// Starts (`paused = false`) or pauses the run's policies; returns how many changed.
pub async fn set_paused(
    c: &impl GenericClient,
    schemas: &[String],
    paused: bool,
) -> Result<u64, Error> {
    if !has_timescaledb(c).await? {
        return Ok(0);
    }
    let scheduled = !paused;
    let rows = c
        .query(
            &format!(
                "SELECT alter_job(j.job_id, scheduled => $3) {RUN_JOBS} AND j.scheduled <> $3"
            ),
            &[&schemas, &PROCS, &scheduled],
        )
        .await
        .map_err(q(if paused {
            "pause TimescaleDB policies"
        } else {
            "start TimescaleDB policies"
        }))?;
    Ok(rows.len() as u64)
}

/// The run's jobs ($1: schemas, $2: procedures). A refresh policy is listed under its
/// aggregate's materialization hypertable, so the aggregate's own schema counts too.
const RUN_JOBS: &str = "FROM timescaledb_information.jobs j
      LEFT JOIN timescaledb_information.continuous_aggregates a
        ON a.materialization_hypertable_schema = j.hypertable_schema
       AND a.materialization_hypertable_name = j.hypertable_name
     WHERE j.proc_name = ANY($2)
       AND coalesce(a.view_schema, j.hypertable_schema) = ANY($1)";

/// Whether a hypertable lives in one of the run's schemas: then its changes stream under its
/// chunks' names, and a publication of the run's schemas must carry `_timescaledb_internal`.
pub async fn has_hypertables(c: &impl GenericClient, schemas: &[String]) -> Result<bool, Error> {
    if !has_timescaledb(c).await? {
        return Ok(false);
    }
    c.query_one(
        "SELECT EXISTS (SELECT 1 FROM timescaledb_information.hypertables
                         WHERE hypertable_schema = ANY($1))",
        &[&schemas],
    )
    .await
    .map(|r| r.get(0))
    .map_err(q("look for hypertables"))
}

/// Whether the database has the TimescaleDB extension.
pub async fn has_timescaledb(c: &impl GenericClient) -> Result<bool, Error> {
    c.query_one(
        "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb')",
        &[],
    )
    .await
    .map(|r| r.get(0))
    .map_err(q("look for TimescaleDB"))
}
