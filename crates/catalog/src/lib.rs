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
    // The reads go out together (pipelined on each session, both servers at work at once)
    // rather than one round trip after another: over a WAN that is most of a plan's time.
    let (all, src, tgt, source_id, target_id, large_objects, prepared_transactions, extensions) = tokio::try_join!(
        read::schemas(source),
        read::server(source, source_name),
        read::server(target, target_name),
        async { Ok(read::identity(source).await) },
        async { Ok(read::identity(target).await) },
        read::large_objects(source),
        read::prepared_transactions(source),
        read::extensions(source, target),
    )?;
    let schemas = if opts.schemas.is_empty() {
        all
    } else {
        if let Some(missing) = opts.schemas.iter().find(|s| !all.contains(s)) {
            return Err(Error::NoSuchSchema(missing.clone()));
        }
        opts.schemas.clone()
    };
    let same_locale = (&src.collate, &src.ctype) == (&tgt.collate, &tgt.ctype);
    let (
        mut tables,
        on_target,
        timescale,
        target_can_apply,
        locale_indexes,
        sequences,
        materialized_views,
        foreign_tables,
    ) = tokio::try_join!(
        read::tables(source, &schemas),
        read::existing_tables(target, &schemas),
        async {
            match src.timescaledb {
                Some(_) => read::timescale(source).await.map(Some),
                None => Ok(None),
            }
        },
        async {
            if tgt.superuser {
                Ok(true)
            } else {
                read::can_apply(target).await
            }
        },
        async {
            if same_locale {
                Ok(Vec::new())
            } else {
                read::locale_dependent_indexes(source, &schemas).await
            }
        },
        read::sequences(source, &schemas),
        read::relations_of_kind(source, &schemas, "m"),
        read::relations_of_kind(source, &schemas, "f"),
    )?;
    // Tables of the planned schemas on the target: the planned ones block a copy (it would
    // collide with them); the others are only the target's and copy leaves them alone.
    let (existing, target_only): (Vec<String>, Vec<String>) = on_target
        .into_iter()
        .partition(|name| tables.iter().any(|t| t.display_name() == *name));
    for t in &mut tables {
        t.on_target = existing.contains(&t.display_name());
    }
    let same_cluster = match (source_id, target_id) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    };
    let mut plan = Plan {
        format: PLAN_FORMAT,
        sequences,
        materialized_views,
        foreign_tables,
        extensions,
        large_objects,
        prepared_transactions,
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
