//! Reads both catalogs into a [`Plan`], the one description of a migration that every later
//! stage consumes; nothing later re-discovers the catalog on its own.

mod error;
mod findings;
mod plan;
mod read;

pub use error::Error;
pub use findings::{SENDERS_NEEDED, SLOTS_NEEDED};
pub use plan::*;

use tokio_postgres::Client;

/// What the operator restricted the plan to.
#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    /// Schemas to migrate; empty means every application schema of the source.
    pub schemas: Vec<String>,
}

/// Reads source and target and judges what blocks the migration.
/// `source_name`/`target_name` are the redacted connection descriptions shown in reports.
pub async fn build_plan(
    source: &Client,
    source_name: String,
    target: &Client,
    target_name: String,
    opts: &PlanOptions,
) -> Result<Plan, Error> {
    let all = read::schemas(source).await?;
    let schemas = if opts.schemas.is_empty() {
        all
    } else {
        if let Some(missing) = opts.schemas.iter().find(|s| !all.contains(s)) {
            return Err(Error::NoSuchSchema(missing.clone()));
        }
        opts.schemas.clone()
    };
    let src = read::server(source, source_name).await?;
    let tgt = read::server(target, target_name).await?;
    let mut tables = read::tables(source, &schemas).await?;
    let existing = read::existing_tables(target, &schemas).await?;
    for t in &mut tables {
        t.on_target = existing.contains(&t.display_name());
    }
    let hypertables = if src.timescaledb.is_some() {
        read::hypertables(source).await?
    } else {
        Vec::new()
    };
    let same_cluster = match (read::identity(source).await, read::identity(target).await) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    };
    let target_can_apply = tgt.superuser || read::can_apply(target).await?;
    let locale_indexes = if (&src.collate, &src.ctype) != (&tgt.collate, &tgt.ctype) {
        read::locale_dependent_indexes(source, &schemas).await?
    } else {
        Vec::new()
    };
    let mut plan = Plan {
        format: PLAN_FORMAT,
        sequences: read::sequences(source, &schemas).await?,
        materialized_views: read::relations_of_kind(source, &schemas, "m").await?,
        foreign_tables: read::relations_of_kind(source, &schemas, "f").await?,
        extensions: read::extensions(source, target).await?,
        large_objects: read::large_objects(source).await?,
        source: src,
        target: tgt,
        schemas,
        tables,
        hypertables,
        findings: Vec::new(),
    };
    plan.findings = findings::judge(
        &plan,
        &existing,
        target_can_apply,
        same_cluster,
        &locale_indexes,
    );
    Ok(plan)
}
