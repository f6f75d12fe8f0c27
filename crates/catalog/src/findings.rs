//! What blocks a migration, each with the statement or step that fixes it.

use conn::quote_ident;

use crate::plan::{Finding, Plan, RelName, Severity, Table};

/// Where TimescaleDB keeps chunks: copy reads them through their hypertable, and the run's
/// publication carries this schema so sync sees every chunk's changes.
pub const CHUNK_SCHEMA: &str = "_timescaledb_internal";

/// Replication slots a run needs at once: its own slot plus verify's temporary one.
pub const SLOTS_NEEDED: i32 = 2;
/// WAL senders a run needs at once: the sync stream plus verify's snapshot exporter.
pub const SENDERS_NEEDED: i32 = 2;

fn blocker(code: &str, subject: &str, message: String, fix: String) -> Finding {
    Finding {
        severity: Severity::Blocker,
        code: code.into(),
        subject: subject.into(),
        message,
        fix,
    }
}

/// The first five names, and "…" for the rest.
fn list_some(names: &[String]) -> String {
    let shown: Vec<&str> = names.iter().take(5).map(String::as_str).collect();
    format!(
        "{}{}",
        shown.join(", "),
        if names.len() > 5 { ", …" } else { "" }
    )
}

fn warning(code: &str, subject: &str, message: String, fix: String) -> Finding {
    Finding {
        severity: Severity::Warning,
        ..blocker(code, subject, message, fix)
    }
}

/// Everything the plan shows that must be fixed or known before a migration starts.
/// `existing_on_target`: planned tables already present on the target;
/// `target_can_apply`: privileges that stand in for superuser when applying changes;
/// `same_cluster`: source and target are one database;
/// `locale_indexes`: the source's indexes whose contents depend on its locale (read only when
/// the locales differ).
pub fn judge(
    plan: &Plan,
    existing_on_target: &[String],
    target_can_apply: bool,
    same_cluster: bool,
    locale_indexes: &[String],
) -> Vec<Finding> {
    let mut f = Vec::new();
    let (s, t) = (&plan.source, &plan.target);

    if same_cluster {
        f.push(blocker(
            "same-database",
            "target",
            "source and target are the same database".into(),
            "point --target at the new server".into(),
        ));
    }
    if s.wal_level != "logical" {
        f.push(blocker(
            "wal-level",
            "source",
            format!(
                "wal_level is {}; logical decoding needs logical",
                s.wal_level
            ),
            "ALTER SYSTEM SET wal_level = logical; then restart the source server".into(),
        ));
    }
    let free_slots = s.max_replication_slots - s.used_replication_slots;
    if free_slots < SLOTS_NEEDED {
        f.push(blocker(
            "replication-slots",
            "source",
            format!(
                "{free_slots} free replication slot(s) of {}; a run needs {SLOTS_NEEDED}",
                s.max_replication_slots
            ),
            format!(
                "ALTER SYSTEM SET max_replication_slots = {}; then restart the source server (or drop unused slots)",
                s.used_replication_slots + SLOTS_NEEDED
            ),
        ));
    }
    let free_senders = s.max_wal_senders - s.used_wal_senders;
    if free_senders < SENDERS_NEEDED {
        f.push(blocker(
            "wal-senders",
            "source",
            format!(
                "{free_senders} free WAL sender(s) of {}; a run needs {SENDERS_NEEDED}",
                s.max_wal_senders
            ),
            format!(
                "ALTER SYSTEM SET max_wal_senders = {}; then restart the source server",
                s.used_wal_senders + SENDERS_NEEDED
            ),
        ));
    }
    if !s.superuser && !s.replication {
        f.push(blocker(
            "source-replication-role",
            "source",
            format!("role {} may not open a replication connection", s.role),
            format!("ALTER ROLE {} REPLICATION;", quote_ident(&s.role)),
        ));
    }
    if !s.superuser {
        // Only superusers may publish whole schemas; a role owning every planned table can
        // publish the list of them, which new tables (and new TimescaleDB chunks) miss.
        let not_owned: Vec<String> = plan
            .tables
            .iter()
            .filter(|t| !t.owned)
            .map(|t| format!("{}.{}", t.schema, t.name))
            .collect();
        if !s.can_create {
            f.push(blocker(
                "source-create-rights",
                "source",
                format!(
                    "role {} may not create the run's publication in database {} (it is not superuser)",
                    s.role, s.database
                ),
                format!(
                    "GRANT CREATE ON DATABASE {} TO {};",
                    quote_ident(&s.database),
                    quote_ident(&s.role)
                ),
            ));
        }
        if !plan.hypertables.is_empty() || !not_owned.is_empty() {
            let why = if plan.hypertables.is_empty() {
                format!(
                    "it does not own {} of the planned tables ({}), and a publication may list only tables its role owns",
                    not_owned.len(),
                    list_some(&not_owned)
                )
            } else {
                "the run migrates hypertables, whose new chunks only a publication of whole schemas includes".to_string()
            };
            f.push(blocker(
                "source-publication-rights",
                "source",
                format!(
                    "role {} is not superuser (PostgreSQL {} allows only superusers to publish whole schemas) and {why}",
                    s.role, s.version
                ),
                format!(
                    "connect as a superuser, or ALTER ROLE {} SUPERUSER; for the migration{}",
                    quote_ident(&s.role),
                    if plan.hypertables.is_empty() {
                        format!(", or give it the tables (ALTER TABLE … OWNER TO {})", quote_ident(&s.role))
                    } else {
                        String::new()
                    }
                ),
            ));
        } else {
            f.push(warning(
                "publication-lists-tables",
                "source",
                format!(
                    "role {} is not superuser: the run's publication lists the {} planned tables instead of their schemas, so a table created on the source after copy is not replicated (and verify does not compare it)",
                    s.role,
                    plan.tables.len()
                ),
                "create no tables in the planned schemas during the migration, or connect as a superuser".into(),
            ));
        }
    }
    let mut unreadable: Vec<&str> = plan
        .tables
        .iter()
        .filter(|t| !t.selectable)
        .map(|t| t.schema.as_str())
        .collect();
    unreadable.dedup();
    for schema in unreadable {
        f.push(blocker(
            "source-select",
            schema,
            format!("role {} cannot read every table in schema {schema}", s.role),
            format!(
                "GRANT SELECT ON ALL TABLES IN SCHEMA {} TO {};",
                quote_ident(schema),
                quote_ident(&s.role)
            ),
        ));
    }
    if t.version_num / 10000 < s.version_num / 10000 {
        f.push(blocker(
            "target-version",
            "target",
            format!(
                "target runs PostgreSQL {}, older than the source's {}",
                t.version, s.version
            ),
            "migrate to a server of the same or a newer major version".into(),
        ));
    }
    if !t.superuser && !t.can_create {
        f.push(blocker(
            "target-create-rights",
            "target",
            format!(
                "role {} may not create schemas in database {}",
                t.role, t.database
            ),
            format!(
                "GRANT CREATE ON DATABASE {} TO {};",
                quote_ident(&t.database),
                quote_ident(&t.role)
            ),
        ));
    }
    if !t.superuser && !target_can_apply {
        let role = quote_ident(&t.role);
        f.push(blocker(
            "target-apply-rights",
            "target",
            format!(
                "role {} may not apply changes exactly once (session_replication_role, replication origins)",
                t.role
            ),
            format!(
                "GRANT SET ON PARAMETER session_replication_role TO {role}; GRANT EXECUTE ON FUNCTION pg_replication_origin_create(text), pg_replication_origin_session_setup(text), pg_replication_origin_xact_setup(pg_lsn, timestamptz), pg_replication_origin_progress(text, boolean), pg_replication_origin_drop(text) TO {role};"
            ),
        ));
    }
    if !existing_on_target.is_empty() {
        f.push(blocker(
            "target-not-empty",
            "target",
            format!(
                "the target already has {} of the planned tables ({})",
                existing_on_target.len(),
                list_some(existing_on_target)
            ),
            "migrate into an empty database: create a fresh one, or drop those schemas on the target".into(),
        ));
    }

    for table in &plan.tables {
        if !table.children_outside.is_empty() {
            f.extend(rows_outside_plan(plan, table));
        }
        if table.kind == "partitioned" {
            continue;
        }
        let name = table.display_name();
        let no_identity = match table.replica_identity.as_str() {
            "nothing" => true,
            "default" => table.primary_key.is_none(),
            _ => false,
        };
        if no_identity {
            f.push(blocker(
                "no-replica-identity",
                &name,
                format!(
                    "no primary key and replica identity {}: UPDATE and DELETE on this table fail on the source once it is published",
                    table.replica_identity
                ),
                format!("ALTER TABLE {} REPLICA IDENTITY FULL;", table.qualified()),
            ));
        }
        if table.unlogged {
            f.push(blocker(
                "unlogged-table",
                &name,
                "unlogged tables are not written to WAL, so their changes cannot be streamed"
                    .into(),
                format!("ALTER TABLE {} SET LOGGED;", table.qualified()),
            ));
        }
    }
    if let Some(first) = plan.prepared_transactions.first() {
        f.push(blocker(
            "prepared-transactions",
            "source",
            format!(
                "{} prepared transaction(s) on the source ({first}{}): the run's slot cannot be created until they end, so copy would wait",
                plan.prepared_transactions.len(),
                if plan.prepared_transactions.len() > 1 { ", …" } else { "" }
            ),
            "finish them: COMMIT PREPARED 'gid'; or ROLLBACK PREPARED 'gid'; (SELECT gid FROM pg_prepared_xacts lists them)".into(),
        ));
    }
    if plan.large_objects > 0 {
        f.push(blocker(
            "large-objects",
            "source",
            format!(
                "{} large object(s): logical replication does not carry them",
                plan.large_objects
            ),
            "move them into bytea columns before migrating".into(),
        ));
    }
    if (&s.collate, &s.ctype) != (&t.collate, &t.ctype) {
        f.push(locale_warning(plan, locale_indexes));
    }
    for ft in &plan.foreign_tables {
        f.push(warning(
            "foreign-table",
            ft,
            "foreign table: its definition is migrated, its data stays on the remote server".into(),
            "make sure the foreign server is reachable from the target and recreate its user mappings there".into(),
        ));
    }
    f.extend(timescaledb(plan));
    for e in plan.extensions.iter().filter(|e| !e.available_on_target) {
        f.push(blocker(
            "extension-missing",
            &e.name,
            format!(
                "extension {} {} is installed on the source but not available on the target",
                e.name, e.version
            ),
            format!(
                "install the package that provides {} {} on the target server",
                e.name, e.version
            ),
        ));
    }
    f
}

/// A planned table whose rows partly live in tables copy does not read: partitions or
/// inheritance children in other schemas, or TimescaleDB chunks. Copying it would leave
/// those rows behind.
/// None for a hypertable whose chunks bluegreen copies and streams.
fn rows_outside_plan(plan: &Plan, table: &Table) -> Option<Finding> {
    let name = table.display_name();
    let shown: Vec<String> = table
        .children_outside
        .iter()
        .take(3)
        .map(RelName::display)
        .collect();
    let more = if table.children_outside.len() > 3 {
        ", …"
    } else {
        ""
    };
    if let Some(h) = plan.hypertable(&table.schema, &table.name) {
        let elsewhere: Vec<&str> = h
            .chunk_schemas
            .iter()
            .map(String::as_str)
            .filter(|s| *s != CHUNK_SCHEMA)
            .collect();
        if elsewhere.is_empty() {
            // Copied through its parent, its chunks streamed from `_timescaledb_internal`.
            return None;
        }
        return Some(blocker(
            "hypertable",
            &name,
            format!(
                "TimescaleDB hypertable whose chunks live in schema(s) {} rather than {CHUNK_SCHEMA}: bluegreen streams chunks of {CHUNK_SCHEMA} only",
                elsewhere.join(", ")
            ),
            "leave its schema out of this run (--schema), or migrate this hypertable with another tool".into(),
        ));
    }
    let mut schemas: Vec<&str> = table
        .children_outside
        .iter()
        .map(|c| c.schema.as_str())
        .collect();
    schemas.sort_unstable();
    schemas.dedup();
    let flags: Vec<String> = plan
        .schemas
        .iter()
        .map(String::as_str)
        .chain(schemas.iter().copied())
        .map(|s| format!("--schema {}", shell_word(s)))
        .collect();
    Some(blocker(
        "rows-outside-plan",
        &name,
        format!(
            "{} table(s) inheriting from it ({}{more}) lie outside the planned schemas, so their rows would not be copied",
            table.children_outside.len(),
            shown.join(", ")
        ),
        format!("plan their schemas too: {}", flags.join(" ")),
    ))
}

/// A schema name as a shell argument: as it is when that is safe, else single-quoted.
fn shell_word(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// What TimescaleDB needs on both sides before hypertables can move: the extension on the
/// target at a version no older than the source's, and compression's WAL markers on the
/// source (without them, rows moved into and out of compressed chunks cannot be told from
/// real changes in the stream).
fn timescaledb(plan: &Plan) -> Vec<Finding> {
    let mut f = Vec::new();
    let converting =
        !plan.profile.hypertables.is_empty() || !plan.profile.continuous_aggregates.is_empty();
    if converting || !plan.hypertables.is_empty() {
        let available = plan.target.timescaledb.is_some()
            || plan
                .extensions
                .iter()
                .any(|e| e.name == "timescaledb" && e.available_on_target);
        if !available || plan.target.preloads_timescaledb == Some(false) {
            f.push(blocker(
                "timescaledb-target",
                "target",
                format!(
                    "{}, but TimescaleDB is {} on the target",
                    if converting {
                        "the profile makes hypertables"
                    } else {
                        "the source has hypertables"
                    },
                    if available { "not preloaded" } else { "not installed" }
                ),
                "run green on a TimescaleDB image (timescale/timescaledb:latest-pg15) or install it, with shared_preload_libraries = 'timescaledb' (a restart)".into(),
            ));
        }
    }
    let Some(source_version) = plan.source.timescaledb.as_deref() else {
        return f;
    };
    if plan.hypertables.is_empty() && plan.continuous_aggregates.is_empty() {
        return f;
    }
    let ext = plan.extensions.iter().find(|e| e.name == "timescaledb");
    let target_version = ext.and_then(|e| {
        e.installed_on_target
            .clone()
            .or_else(|| e.default_on_target.clone())
    });
    match target_version {
        None => {} // extension-missing says it.
        Some(v) if version_key(&v) < version_key(source_version) => f.push(blocker(
            "timescaledb-version",
            "target",
            format!(
                "the target offers TimescaleDB {v}, older than the source's {source_version}: hypertables, compression and continuous aggregates may not be created the same way"
            ),
            format!(
                "install TimescaleDB {source_version} or newer on the target (for PostgreSQL 15, 2.28.x is the newest; image timescale/timescaledb:latest-pg15), then ALTER EXTENSION timescaledb UPDATE there"
            ),
        )),
        Some(_) => {}
    }
    // Copy recreates aggregates over hypertables, in the plan's order; one over another
    // aggregate (hierarchical) would need its parent first.
    for a in plan
        .continuous_aggregates
        .iter()
        .filter(|a| a.hypertable.starts_with(&format!("{CHUNK_SCHEMA}.")))
    {
        f.push(blocker(
            "continuous-aggregate",
            &format!("{}.{}", a.schema, a.name),
            format!(
                "continuous aggregate over another aggregate's materialization ({}): hierarchical aggregates are not migrated yet",
                a.hypertable
            ),
            format!(
                "leave its schema out of this run (--schema), or drop it on the source for the migration (DROP MATERIALIZED VIEW {};) and create it again on green after cutover",
                conn::qualified(&a.schema, &a.name)
            ),
        ));
    }
    if !plan.hypertables.is_empty() {
        for u in &plan.unkeyed_hypertables {
            let table = conn::qualified(&u.schema, &u.name);
            let (subject, what) = match &u.aggregate {
                Some(a) => (
                    a.clone(),
                    format!("refreshing continuous aggregate {a} (not in this run; it deletes from its materialization {}.{})", u.schema, u.name),
                ),
                None => (
                    format!("{}.{}", u.schema, u.name),
                    format!("UPDATE and DELETE on hypertable {}.{} (not in this run)", u.schema, u.name),
                ),
            };
            f.push(blocker(
                "chunk-replica-identity",
                &subject,
                format!(
                    "the run publishes {CHUNK_SCHEMA}, where its hypertables' chunks live; {what} would then fail on the source: those chunks have no replica identity"
                ),
                format!("ALTER TABLE {table} REPLICA IDENTITY FULL; (TimescaleDB sets it on every chunk)"),
            ));
        }
    }
    for h in &plan.hypertables {
        let subject = format!("{}.{}", h.schema, h.name);
        // Sync drops what blue's retention drops while it runs, from the slices it read when
        // it started; a drop while it is stopped (between copy and sync, a restart) it
        // cannot place unless the slices stream whole, and then it stops.
        if plan.slice_ranges != Some(true) {
            for j in h
                .jobs
                .iter()
                .filter(|j| j.kind == "retention" && j.scheduled)
            {
                f.push(blocker(
                    "retention-policy",
                    &subject,
                    format!(
                        "retention policy (job {}) is scheduled on the source: sync drops the same ranges on the target while it runs, but a drop while sync is stopped (before it starts, during a restart) stops it for good (the run has to be copied again)",
                        j.id
                    ),
                    format!(
                        "let dropped chunks stream with their ranges: ALTER TABLE _timescaledb_catalog.dimension_slice REPLICA IDENTITY FULL; or pause it for the migration: SELECT alter_job({}, scheduled => false);",
                        j.id
                    ),
                ));
            }
        }
        for j in h.jobs.iter().filter(|j| j.kind == "user") {
            f.push(warning(
                "timescaledb-user-job",
                &subject,
                format!(
                    "user job {} ({}) works on this hypertable; copy does not recreate it on the target",
                    j.id, j.proc
                ),
                format!("after cutover, add it on the target with add_job('{}', '{}')", j.proc, j.schedule_interval),
            ));
        }
    }
    let compressed = plan.hypertables.iter().any(|h| h.compression);
    if compressed && plan.compression_markers == Some(false) {
        f.push(blocker(
            "timescaledb-markers",
            "source",
            "timescaledb.enable_compression_wal_markers is off: compressing or decompressing a chunk would stream as deletes and inserts of rows that did not change".into(),
            "ALTER SYSTEM SET timescaledb.enable_compression_wal_markers = on; SELECT pg_reload_conf();".into(),
        ));
    }
    f
}

/// `2.28.3` as numbers, for ordering versions.
fn version_key(v: &str) -> Vec<u64> {
    v.split(|c: char| !c.is_ascii_digit())
        .filter(|p| !p.is_empty())
        .map(|p| p.parse().unwrap_or(0))
        .collect()
}

/// The databases' locales differ: the target computes generated columns (`lower(a)`, …)
/// and orders text differently, so name what depends on it.
fn locale_warning(plan: &Plan, locale_indexes: &[String]) -> Finding {
    let (s, t) = (&plan.source, &plan.target);
    let generated: Vec<String> = plan
        .tables
        .iter()
        .flat_map(|tb| {
            tb.columns
                .iter()
                .filter(|c| c.generated)
                .map(move |c| format!("{}.{}", tb.display_name(), c.name))
        })
        .collect();
    let list = |what: &str, v: &[String]| {
        if v.is_empty() {
            String::new()
        } else {
            let shown: Vec<&str> = v.iter().take(10).map(String::as_str).collect();
            format!(
                "; {what}: {}{}",
                shown.join(", "),
                if v.len() > 10 { ", …" } else { "" }
            )
        }
    };
    warning(
        "locale-differs",
        "target",
        format!(
            "the databases' locales differ (source LC_COLLATE {} LC_CTYPE {}, target LC_COLLATE {} LC_CTYPE {}): the target computes generated columns and sorts text by its own{}{}",
            s.collate,
            s.ctype,
            t.collate,
            t.ctype,
            list("generated columns (verify compares them)", &generated),
            list("indexes", locale_indexes),
        ),
        format!(
            "create the target database with the source's locale: CREATE DATABASE {} LC_COLLATE {} LC_CTYPE {} TEMPLATE template0;",
            quote_ident(&t.database),
            conn::quote_literal(&s.collate),
            conn::quote_literal(&s.ctype)
        ),
    )
}

/// Tables of the planned schemas that only the target has (a warning: copy leaves them
/// alone, verify does not compare them, and `abort --drop-data` keeps them: the run did not
/// create them).
pub fn target_only(names: &[String]) -> Option<Finding> {
    if names.is_empty() {
        return None;
    }
    let shown: Vec<&str> = names.iter().take(5).map(String::as_str).collect();
    Some(warning(
        "target-only-tables",
        "target",
        format!(
            "the target has {} table(s) in the planned schemas that the source lacks ({}{}): copy leaves them alone, verify does not compare them, abort --drop-data keeps them",
            names.len(),
            shown.join(", "),
            if names.len() > 5 { ", …" } else { "" }
        ),
        "drop them on the target if they are leftovers; otherwise nothing to do".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::version_key;

    #[test]
    fn versions_order_numerically() {
        assert!(version_key("2.17.2") < version_key("2.28.3"));
        assert!(version_key("2.9.0") < version_key("2.10.0"));
        assert!(version_key("2.28.3") == version_key("2.28.3"));
        assert!(version_key("2.28.3-dev") >= version_key("2.28.3"));
    }
}
