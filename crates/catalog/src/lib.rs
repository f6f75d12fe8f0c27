//! Reads both catalogs into a [`Plan`], the one description of a migration that every later
//! stage consumes; nothing later re-discovers the catalog on its own.

mod error;
mod findings;
pub mod matviews;
mod plan;
mod profile;
mod read;

pub use error::Error;
pub use findings::{CHUNK_SCHEMA, SENDERS_NEEDED, SLOTS_NEEDED};
pub use plan::*;
pub use profile::{AggregateSpec, Conversion, Profile, ProfileText};

use tokio_postgres::Client;

/// What the operator restricted the plan to.
#[derive(Default)]
pub struct PlanOptions {
    /// Schemas to migrate; empty means every application schema of the source.
    pub schemas: Vec<String>,
    /// `--profile`: plain tables that become hypertables on the target.
    pub profile: Option<ProfileText>,
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
    // Tables of the planned schemas on the target: the planned ones block a copy (it would
    // collide with them); the others are only the target's and copy leaves them alone.
    let (existing, target_only): (Vec<String>, Vec<String>) =
        read::existing_tables(target, &schemas)
            .await?
            .into_iter()
            .partition(|name| tables.iter().any(|t| t.display_name() == *name));
    for t in &mut tables {
        t.on_target = existing.contains(&t.display_name());
    }
    let timescale = match src.timescaledb {
        Some(_) => Some(read::timescale(source).await?),
        None => None,
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
        prepared_transactions: read::prepared_transactions(source).await?,
        source: src,
        target: tgt,
        compression_markers: timescale.as_ref().map(|t| t.markers),
        slice_ranges: timescale.as_ref().map(|t| t.slice_ranges),
        schemas,
        tables,
        hypertables: Vec::new(),
        continuous_aggregates: Vec::new(),
        timescaledb_jobs: Vec::new(),
        unkeyed_hypertables: Vec::new(),
        profile: Profile::default(),
        findings: Vec::new(),
    };
    if let Some(t) = timescale {
        // Only what the planned schemas hold is the run's.
        let planned = |schema: &str| plan.schemas.iter().any(|s| s == schema);
        plan.hypertables = t
            .hypertables
            .into_iter()
            .filter(|h| planned(&h.schema))
            .collect();
        plan.continuous_aggregates = t
            .continuous_aggregates
            .into_iter()
            .filter(|a| planned(&a.schema))
            .collect();
        plan.timescaledb_jobs = t.other_jobs;
        // Planned tables' own identity is judged with every planned table.
        plan.unkeyed_hypertables = t
            .without_identity
            .into_iter()
            .filter(|h| !planned(&h.schema))
            .collect();
        for h in &plan.hypertables {
            let time = h.dimensions.iter().find(|d| d.kind == "Time");
            if let (Some(d), Some(table)) = (
                time,
                plan.tables
                    .iter_mut()
                    .find(|t| t.schema == h.schema && t.name == h.name),
            ) {
                table.time_column = Some(d.column.clone());
            }
        }
    }
    if let Some(text) = &opts.profile {
        plan.profile = profile::resolve(text, &plan, source).await?;
    }
    plan.findings = findings::judge(
        &plan,
        &existing,
        target_can_apply,
        same_cluster,
        &locale_indexes,
    );
    plan.findings.extend(findings::target_only(&target_only));
    Ok(plan)
}
