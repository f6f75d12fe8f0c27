//! Human-readable reports.

use std::fmt::Write;

use catalog::{Finding, Plan, Server, Severity};

pub fn bytes(n: i64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

pub fn count(n: i64) -> String {
    match n {
        n if n >= 10_000_000 => format!("{:.0}M", n as f64 / 1e6),
        n if n >= 1_000_000 => format!("{:.1}M", n as f64 / 1e6),
        n if n >= 10_000 => format!("{:.0}k", n as f64 / 1e3),
        n => n.to_string(),
    }
}

fn server_line(side: &str, s: &Server) -> String {
    let mut role = s.role.clone();
    if s.superuser {
        role.push_str(" (superuser)");
    } else if s.replication {
        role.push_str(" (replication)");
    }
    format!(
        "{side}: {}\n  PostgreSQL {}, database {} ({}), role {role}\n  wal_level {}, replication slots {}/{} used, WAL senders {}/{} used{}\n",
        s.connection,
        s.version,
        s.database,
        bytes(s.database_bytes),
        s.wal_level,
        s.used_replication_slots,
        s.max_replication_slots,
        s.used_wal_senders,
        s.max_wal_senders,
        s.timescaledb
            .as_ref()
            .map(|v| format!(", TimescaleDB {v}"))
            .unwrap_or_default()
    )
}

pub fn plan(p: &Plan) -> String {
    let mut o = String::new();
    o.push_str(&server_line("source", &p.source));
    o.push_str(&server_line("target", &p.target));
    let _ = writeln!(o, "\nschemas: {}", p.schemas.join(", "));

    let total: i64 = p.tables.iter().map(|t| t.bytes).sum();
    let rows: i64 = p.tables.iter().filter_map(|t| t.estimated_rows).sum();
    let _ = writeln!(
        o,
        "\ntables: {} ({}, ~{} rows)",
        p.tables.len(),
        bytes(total),
        count(rows)
    );
    let _ = writeln!(o, "  {:>10}  {:>7}  {:<40}  TABLE", "SIZE", "ROWS", "KEY");
    for t in &p.tables {
        let key = match (&t.primary_key, t.replica_identity.as_str()) {
            (Some(pk), "default") => format!("primary key ({})", pk.join(", ")),
            (_, "full") => "replica identity full".to_string(),
            (_, "index") => format!(
                "replica identity index ({})",
                t.replica_identity_columns.join(", ")
            ),
            (_, ri) => format!("NONE (replica identity {ri})"),
        };
        let mut notes = Vec::new();
        if t.kind == "partitioned" {
            notes.push("partitioned".to_string());
        }
        if let Some(parent) = &t.partition_of {
            notes.push(format!("partition of {parent}"));
        }
        if t.unlogged {
            notes.push("unlogged".into());
        }
        if t.columns.iter().any(|c| c.needs_text) {
            notes.push("text COPY (values hold OIDs)".into());
        }
        let _ = writeln!(
            o,
            "  {:>10}  {:>7}  {:<40}  {}{}",
            bytes(t.bytes),
            t.estimated_rows.map(count).unwrap_or_else(|| "?".into()),
            key,
            t.display_name(),
            if notes.is_empty() {
                String::new()
            } else {
                format!("  [{}]", notes.join("; "))
            }
        );
    }
    let _ = writeln!(o, "\nsequences: {}", p.sequences.len());
    for s in &p.sequences {
        let _ = writeln!(
            o,
            "  {}.{} = {}{}",
            s.schema,
            s.name,
            match (s.sequence_last_value, s.is_called) {
                (Some(v), Some(true)) => v.to_string(),
                (Some(v), _) => format!("{v} (not called yet: nextval returns {v})"),
                _ => "unknown (no SELECT right on it)".into(),
            },
            s.owned_by
                .as_ref()
                .map(|c| format!("  (owned by {c})"))
                .unwrap_or_default()
        );
    }
    if !p.materialized_views.is_empty() {
        let _ = writeln!(
            o,
            "\nmaterialized views (refreshed on the target, not copied): {}",
            p.materialized_views.join(", ")
        );
    }
    let _ = writeln!(o, "\nextensions:");
    if p.extensions.is_empty() {
        let _ = writeln!(o, "  none besides plpgsql");
    }
    for e in &p.extensions {
        let _ = writeln!(
            o,
            "  {} {}  (target: {})",
            e.name,
            e.version,
            match (&e.installed_on_target, e.available_on_target) {
                (Some(v), _) => format!("installed {v}"),
                (None, true) => "available".into(),
                (None, false) => "MISSING".into(),
            }
        );
    }
    if p.source.timescaledb.is_some() {
        let _ = writeln!(o, "\nhypertables: {}", p.hypertables.len());
        for h in &p.hypertables {
            let dims: Vec<String> = h
                .dimensions
                .iter()
                .map(|d| {
                    format!(
                        "{} {}{}",
                        d.kind.to_lowercase(),
                        d.column,
                        d.interval
                            .as_ref()
                            .map(|i| format!(" every {i}"))
                            .or(d.partitions.map(|n| format!(" in {n} partitions")))
                            .unwrap_or_default()
                    )
                })
                .collect();
            let _ = writeln!(
                o,
                "  {}.{}: {} ({} chunks{})",
                h.schema,
                h.name,
                dims.join(", "),
                h.chunks,
                if h.compression {
                    format!(", {} compressed", h.compressed_chunks)
                } else {
                    String::new()
                }
            );
            if let Some(c) = &h.compression_settings {
                let _ = writeln!(
                    o,
                    "    compression: segment by {}, order by {}",
                    c.segment_by.as_deref().unwrap_or("-"),
                    c.order_by.as_deref().unwrap_or("-")
                );
            }
            for j in &h.jobs {
                let _ = writeln!(o, "    {}", job(j));
            }
        }
        for a in &p.continuous_aggregates {
            let _ = writeln!(
                o,
                "  continuous aggregate {}.{} over {} (rows in {}, materialized up to {}{})",
                a.schema,
                a.name,
                a.hypertable,
                a.materialization,
                a.watermark.as_deref().unwrap_or("nothing yet"),
                if a.materialized_only {
                    ", materialized only"
                } else {
                    ", real time"
                }
            );
        }
        for j in &p.timescaledb_jobs {
            let _ = writeln!(o, "  {}", job(j));
        }
    }
    if !p.profile.hypertables.is_empty() || !p.profile.continuous_aggregates.is_empty() {
        let _ = writeln!(
            o,
            "\nprofile: {} table(s) become hypertables on the target (policies paused until cutover)",
            p.profile.hypertables.len()
        );
        for c in &p.profile.hypertables {
            let _ = writeln!(
                o,
                "  {}.{}: by {} every {}, key ({}){}{}{}",
                c.schema,
                c.name,
                c.time_column,
                c.chunk_interval,
                c.primary_key.join(", "),
                if c.compress_segment_by.is_empty() {
                    String::new()
                } else {
                    format!(", compressed by {}", c.compress_segment_by.join(", "))
                },
                c.compress_after
                    .as_ref()
                    .map(|a| format!(" after {a}"))
                    .unwrap_or_default(),
                c.drop_after
                    .as_ref()
                    .map(|d| format!(", dropped after {d}"))
                    .unwrap_or_default()
            );
        }
        for a in &p.profile.continuous_aggregates {
            let _ = writeln!(
                o,
                "  continuous aggregate {}.{}{}",
                a.schema,
                a.name,
                a.refresh_every
                    .as_ref()
                    .map(|e| format!(", refreshed every {e}"))
                    .unwrap_or_default()
            );
        }
    }
    if p.large_objects > 0 {
        let _ = writeln!(o, "\nlarge objects: {}", p.large_objects);
    }
    o.push_str(&findings(&p.findings));
    let blockers = p.blockers().count();
    let _ = writeln!(
        o,
        "\n{}",
        if blockers == 0 {
            "result: nothing blocks this migration".to_string()
        } else {
            format!("result: {blockers} blocker(s); fix them and run plan again")
        }
    );
    o
}

/// Blockers, then warnings, each with its fix.
fn job(j: &catalog::Job) -> String {
    format!(
        "job {} {} policy{} every {}{}{}",
        j.id,
        j.kind,
        j.on.as_ref()
            .map(|on| format!(" on {on}"))
            .unwrap_or_default(),
        j.schedule_interval,
        j.config
            .as_ref()
            .map(|c| format!(" {c}"))
            .unwrap_or_default(),
        if j.scheduled { "" } else { " (paused)" }
    )
}

pub fn findings(list: &[Finding]) -> String {
    let mut o = String::new();
    for (sev, title) in [
        (Severity::Blocker, "blockers"),
        (Severity::Warning, "warnings"),
    ] {
        let of_kind: Vec<_> = list.iter().filter(|f| f.severity == sev).collect();
        if of_kind.is_empty() {
            continue;
        }
        let _ = writeln!(o, "\n{title}: {}", of_kind.len());
        for f in of_kind {
            let _ = writeln!(o, "  [{}] {}: {}", f.code, f.subject, f.message);
            let _ = writeln!(o, "      fix: {}", f.fix);
        }
    }
    o
}

/// What a `copy --join` worker did.
pub fn join_summary(s: &copy::JoinSummary) -> String {
    match s.joined {
        copy::Joined::AlreadyCopied => format!(
            "run {}: already copied; nothing to do (bluegreen status shows it)\n",
            s.run
        ),
        joined => format!(
            "run {}: worker {} joined in the {} phase and copied {} chunk(s) ({} rows) and built {} item(s) in {:.1} s; the leading copy finishes the run\n",
            s.run,
            s.by,
            if joined == copy::Joined::Data { "data" } else { "post-data" },
            s.chunks,
            s.rows,
            s.items,
            s.seconds
        ),
    }
}

pub fn copy_summary(s: &copy::Summary) -> String {
    let mut o = String::new();
    if s.start == copy::Start::AlreadyCopied {
        let _ = writeln!(
            o,
            "run {}: already copied at LSN {}; nothing to do (bluegreen status shows it)",
            s.run, s.consistent_lsn
        );
        return o;
    }
    let _ = writeln!(
        o,
        "run {}: copied at LSN {}{}",
        s.run,
        s.consistent_lsn,
        if s.start == copy::Start::Resumed {
            " (resumed)"
        } else {
            ""
        }
    );
    let _ = writeln!(
        o,
        "  {:>9}  {:>10}  {:>8}  TABLE",
        "ROWS", "BYTES", "SECONDS"
    );
    let (mut rows, mut total) = (0, 0);
    // Largest last, next to the total, where a shortened output (tail) still shows them.
    for t in s.tables.iter().rev() {
        rows += t.rows;
        total += t.bytes;
        let _ = writeln!(
            o,
            "  {:>9}  {:>10}  {:>8.2}  {}.{}",
            t.rows,
            bytes(t.bytes),
            t.seconds,
            t.table_schema,
            t.table_name
        );
    }
    let _ = writeln!(
        o,
        "total: {} tables, {rows} rows, {} of COPY data, {} sequences, {} post-data items (indexes, constraints, triggers, …), {:.1} s",
        s.tables.len(),
        bytes(total),
        s.sequences,
        s.post_data_items,
        s.seconds
    );
    o
}
