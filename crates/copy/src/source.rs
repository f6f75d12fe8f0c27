//! The run's artifacts on the source: its publication and its logical slot.

use conn::quote_ident;
use tokio_postgres::Client;

use crate::error::{sql, Error};

/// TimescaleDB's catalog of chunk time ranges (the name sync's `timescale::SLICE_TABLE` reads).
const SLICE_TABLE: (&str, &str) = ("_timescaledb_catalog", "dimension_slice");

/// Publishes the planned schemas whole, so tables created later are included. With
/// hypertables, TimescaleDB's chunk schema too: a hypertable's changes arrive under its
/// chunks' names, and a new chunk is published the moment it is created; and TimescaleDB's
/// dimension slices, whose DELETE is the stream's only sign that chunks were dropped (sync
/// stops there; its rows are never applied). A source role that is not superuser may not
/// publish schemas: it lists the planned tables, which it owns (plan blocks otherwise, and
/// warns that tables created later are left out).
pub async fn create_publication(c: &Client, name: &str, plan: &catalog::Plan) -> Result<(), Error> {
    let what = if plan.source.superuser {
        let mut list: Vec<String> = plan.schemas.iter().map(|s| quote_ident(s)).collect();
        let chunks = !plan.hypertables.is_empty();
        if chunks && !plan.schemas.iter().any(|s| s == catalog::CHUNK_SCHEMA) {
            list.push(quote_ident(catalog::CHUNK_SCHEMA));
        }
        let slices = if chunks {
            format!(", TABLE {}", conn::qualified(SLICE_TABLE.0, SLICE_TABLE.1))
        } else {
            String::new()
        };
        format!("FOR TABLES IN SCHEMA {}{slices}", list.join(", "))
    } else {
        let list: Vec<String> = plan
            .tables
            .iter()
            .map(|t| conn::qualified(&t.schema, &t.name))
            .collect();
        if list.is_empty() {
            String::new()
        } else {
            format!("FOR TABLE {}", list.join(", "))
        }
    };
    c.batch_execute(&format!("CREATE PUBLICATION {} {what}", quote_ident(name)))
        .await
        .map_err(sql("source", format!("create publication {name}")))
}

async fn artifacts_present(c: &Client, run: &str) -> Result<Vec<String>, Error> {
    let (slot, publication) = (crate::names::slot(run), crate::names::publication(run));
    let row = c
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1),
                    EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $2)",
            &[&slot, &publication],
        )
        .await
        .map_err(sql("source", "look up the run's slot and publication"))?;
    let mut found = Vec::new();
    if row.get(0) {
        found.push(format!("replication slot {slot}"));
    }
    if row.get(1) {
        found.push(format!("publication {publication}"));
    }
    Ok(found)
}

/// A blocker when the source already has the run's slot or publication while the target's
/// state does not know the run: another migration from this source (to another target) may
/// be streaming from them, so they are never dropped to make room.
pub async fn name_in_use(
    src: &Client,
    tgt: &Client,
    run: &str,
) -> Result<Option<catalog::Finding>, Error> {
    let known = state::exists(tgt).await? && state::Run::get(tgt, run).await?.is_some();
    if known {
        return Ok(None);
    }
    let found = artifacts_present(src, run).await?;
    if found.is_empty() {
        return Ok(None);
    }
    Ok(Some(catalog::Finding {
        severity: catalog::Severity::Blocker,
        code: "run-name-in-use".into(),
        subject: "source".into(),
        message: format!(
            "the source already has {} while the target's state has no run {run}: another migration from this source may be using them",
            found.join(" and ")
        ),
        fix: format!(
            "start this migration under another name (--run NAME on copy and every later command); if they are a leftover of your own run {run}, remove them with bluegreen abort --source … --run {run}"
        ),
    }))
}
