//! The conversion profile (`--profile FILE`): plain source tables that become TimescaleDB
//! hypertables on the target, and continuous aggregates to create there. Read into the
//! [`Plan`] and checked against the source before anything is touched; every mistake names
//! the profile's line.

use serde::{Deserialize, Serialize};
use tokio_postgres::Client;
use toml::Spanned;

use crate::error::Error;
use crate::plan::{Plan, Table};

/// One plain table that becomes a hypertable on the target.
#[derive(Debug, Clone, Serialize)]
pub struct Conversion {
    pub schema: String,
    pub name: String,
    pub time_column: String,
    /// The time column's type as `format_type` prints it.
    pub time_type: String,
    /// An interval (`1 hour`) for time types, a whole number for integer time columns.
    pub chunk_interval: String,
    /// The target's primary key: the source's key plus the time column where it lacked it.
    pub primary_key: Vec<String>,
    /// The source's primary key (sync still applies updates and deletes by it).
    pub source_key: Vec<String>,
    pub compress_segment_by: Vec<String>,
    pub compress_order_by: Option<String>,
    pub compress_after: Option<String>,
    pub drop_after: Option<String>,
}

impl Conversion {
    pub fn qualified(&self) -> String {
        conn::qualified(&self.schema, &self.name)
    }

    /// The PostgreSQL type an interval of this table's chunks is written in.
    pub fn interval_type(&self) -> &'static str {
        if is_integer(&self.time_type) {
            "bigint"
        } else {
            "interval"
        }
    }
}

/// A continuous aggregate to create on the target.
#[derive(Debug, Clone, Serialize)]
pub struct AggregateSpec {
    pub schema: String,
    pub name: String,
    pub query: String,
    pub refresh_start_offset: Option<String>,
    pub refresh_end_offset: Option<String>,
    pub refresh_every: Option<String>,
}

impl AggregateSpec {
    pub fn qualified(&self) -> String {
        conn::qualified(&self.schema, &self.name)
    }
}

/// The profile after checking: what the plan carries.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Profile {
    pub hypertables: Vec<Conversion>,
    pub continuous_aggregates: Vec<AggregateSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    hypertable: Vec<HypertableEntry>,
    #[serde(default)]
    continuous_aggregate: Vec<AggregateEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HypertableEntry {
    table: Spanned<String>,
    time_column: Spanned<String>,
    chunk_interval: Spanned<String>,
    primary_key: Option<Spanned<Vec<String>>>,
    compress_segment_by: Option<Spanned<Vec<String>>>,
    compress_order_by: Option<Spanned<String>>,
    compress_after: Option<Spanned<String>>,
    drop_after: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AggregateEntry {
    name: Spanned<String>,
    query: Spanned<String>,
    refresh_start_offset: Option<Spanned<String>>,
    refresh_end_offset: Option<Spanned<String>>,
    refresh_every: Option<Spanned<String>>,
}

/// Where a profile came from, for messages.
pub struct ProfileText {
    pub name: String,
    pub text: String,
}

struct Reader<'a> {
    src: &'a ProfileText,
}

impl Reader<'_> {
    fn line(&self, offset: usize) -> usize {
        self.src.text[..offset.min(self.src.text.len())]
            .bytes()
            .filter(|b| *b == b'\n')
            .count()
            + 1
    }

    fn err<T>(&self, at: &Spanned<T>, message: String, fix: &str) -> Error {
        Error::Profile {
            file: self.src.name.clone(),
            line: self.line(at.span().start),
            message,
            fix: fix.into(),
        }
    }
}

/// Reads and checks a profile against the plan (tables and columns) and the source
/// (intervals, unique indexes, foreign keys). Nothing is written anywhere.
pub async fn resolve(src: &ProfileText, plan: &Plan, source: &Client) -> Result<Profile, Error> {
    let r = Reader { src };
    let file: File = toml::from_str(&src.text).map_err(|e| {
        let line = e.span().map(|s| r.line(s.start)).unwrap_or(1);
        Error::Profile {
            file: src.name.clone(),
            line,
            message: e.message().to_string(),
            fix: "the profile takes [[hypertable]] tables (table, time_column, chunk_interval, primary_key, compress_segment_by, compress_order_by, compress_after, drop_after) and [[continuous_aggregate]] tables (name, query, refresh_start_offset, refresh_end_offset, refresh_every)".into(),
        }
    })?;
    let mut out = Profile::default();
    for h in &file.hypertable {
        out.hypertables.push(conversion(&r, h, plan, source).await?);
    }
    for a in &file.continuous_aggregate {
        out.continuous_aggregates
            .push(aggregate(&r, a, plan, source).await?);
    }
    Ok(out)
}

/// `schema.name` split at the first dot; names with dots are quoted like SQL.
fn split_name(s: &str) -> Option<(String, String)> {
    let s = s.trim();
    if let Some(rest) = s.strip_prefix('"') {
        let end = rest.find("\".")?;
        return Some((rest[..end].into(), unquote(&rest[end + 2..])));
    }
    let (schema, name) = s.split_once('.')?;
    Some((schema.into(), unquote(name)))
}

fn unquote(s: &str) -> String {
    s.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .map(|s| s.replace("\"\"", "\""))
        .unwrap_or_else(|| s.to_string())
}

fn is_integer(type_name: &str) -> bool {
    matches!(type_name, "smallint" | "integer" | "bigint")
}

const TIME_TYPES: &[&str] = &[
    "timestamp with time zone",
    "timestamp without time zone",
    "date",
    "smallint",
    "integer",
    "bigint",
];

async fn conversion(
    r: &Reader<'_>,
    h: &HypertableEntry,
    plan: &Plan,
    source: &Client,
) -> Result<Conversion, Error> {
    let table = planned_table(r, &h.table, plan)?;
    let column = |c: &str| table.columns.iter().find(|x| x.name == c);
    let time = column(h.time_column.get_ref()).ok_or_else(|| {
        r.err(
            &h.time_column,
            format!(
                "{} has no column {}",
                table.display_name(),
                h.time_column.get_ref()
            ),
            "name the table's time column",
        )
    })?;
    if !TIME_TYPES.contains(&time.type_name.as_str()) {
        return Err(r.err(
            &h.time_column,
            format!(
                "column {} is {}, which cannot partition a hypertable",
                time.name, time.type_name
            ),
            "use a timestamptz, timestamp, date or integer column",
        ));
    }
    if !time.not_null {
        return Err(r.err(
            &h.time_column,
            format!(
                "column {} allows NULL; a hypertable's time column may not",
                time.name
            ),
            &format!(
                "ALTER TABLE {} ALTER COLUMN {} SET NOT NULL; on the source",
                table.qualified(),
                conn::quote_ident(&time.name)
            ),
        ));
    }
    let integer = is_integer(&time.type_name);
    let chunk_interval = if integer {
        h.chunk_interval
            .get_ref()
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|n| *n > 0)
            .map(|n| n.to_string())
            .ok_or_else(|| {
                r.err(
                    &h.chunk_interval,
                    format!(
                        "chunk_interval {:?} is not a positive whole number (the time column is {})",
                        h.chunk_interval.get_ref(),
                        time.type_name
                    ),
                    "give the number of time units per chunk",
                )
            })?
    } else {
        interval(r, &h.chunk_interval, source).await?
    };
    let source_key = table.primary_key.clone().unwrap_or_default();
    let primary_key = match &h.primary_key {
        Some(pk) => {
            for c in pk.get_ref() {
                if column(c).is_none() {
                    return Err(r.err(
                        pk,
                        format!("{} has no column {c}", table.display_name()),
                        "list existing columns",
                    ));
                }
            }
            let missing: Vec<&String> = source_key
                .iter()
                .chain(std::iter::once(&time.name))
                .filter(|c| !pk.get_ref().contains(c))
                .collect();
            if !missing.is_empty() {
                return Err(r.err(
                    pk,
                    format!(
                        "primary_key {:?} lacks {:?}: it must hold the source's key and the time column",
                        pk.get_ref(),
                        missing
                    ),
                    &format!(
                        "primary_key = {:?}",
                        source_key
                            .iter()
                            .chain(std::iter::once(&time.name))
                            .collect::<Vec<_>>()
                    ),
                ));
            }
            pk.get_ref().clone()
        }
        None if source_key.is_empty() || source_key.contains(&time.name) => source_key.clone(),
        None => {
            return Err(r.err(
                &h.table,
                format!(
                    "{}'s primary key ({}) lacks the time column {}; TimescaleDB needs it in every unique index",
                    table.display_name(),
                    source_key.join(", "),
                    time.name
                ),
                &format!(
                    "add primary_key = {:?} to this [[hypertable]]",
                    source_key
                        .iter()
                        .chain(std::iter::once(&time.name))
                        .collect::<Vec<_>>()
                ),
            ))
        }
    };
    unique_indexes_hold(r, h, table, &time.name, source).await?;
    let mut segment_by = Vec::new();
    if let Some(s) = &h.compress_segment_by {
        for c in s.get_ref() {
            if column(c).is_none() {
                return Err(r.err(
                    s,
                    format!("{} has no column {c}", table.display_name()),
                    "list existing columns",
                ));
            }
        }
        segment_by = s.get_ref().clone();
    }
    if let Some(o) = &h.compress_order_by {
        let first = o.get_ref().split_whitespace().next().unwrap_or_default();
        if column(first.trim_matches('"')).is_none() {
            return Err(r.err(
                o,
                format!(
                    "compress_order_by names no column of {}",
                    table.display_name()
                ),
                "e.g. compress_order_by = \"ts DESC\"",
            ));
        }
    }
    Ok(Conversion {
        schema: table.schema.clone(),
        name: table.name.clone(),
        time_column: time.name.clone(),
        time_type: time.type_name.clone(),
        chunk_interval,
        primary_key,
        source_key,
        compress_segment_by: segment_by,
        compress_order_by: h.compress_order_by.as_ref().map(|o| o.get_ref().clone()),
        compress_after: optional_interval(r, &h.compress_after, source).await?,
        drop_after: optional_interval(r, &h.drop_after, source).await?,
    })
}

fn planned_table<'p>(
    r: &Reader<'_>,
    name: &Spanned<String>,
    plan: &'p Plan,
) -> Result<&'p Table, Error> {
    let (schema, table) = split_name(name.get_ref()).ok_or_else(|| {
        r.err(
            name,
            format!("{:?} is not schema.table", name.get_ref()),
            "write the table as schema.table",
        )
    })?;
    let t = plan.table(&schema, &table).ok_or_else(|| {
        r.err(
            name,
            format!(
                "table {schema}.{table} is not among the planned tables (schemas {})",
                plan.schemas.join(", ")
            ),
            "name a table of the source's planned schemas",
        )
    })?;
    if t.kind != "table" || t.partition_of.is_some() || t.children_planned > 0 {
        return Err(r.err(
            name,
            format!(
                "{} is partitioned, a partition or has inheriting tables; only plain tables become hypertables",
                t.display_name()
            ),
            "convert plain tables only",
        ));
    }
    Ok(t)
}

/// Checks `value` as PostgreSQL reads an interval, on the source (reading only), and
/// returns it as the server prints it.
async fn interval(
    r: &Reader<'_>,
    value: &Spanned<String>,
    source: &Client,
) -> Result<String, Error> {
    match source
        .query_one("SELECT $1::text::interval::text", &[value.get_ref()])
        .await
    {
        Ok(row) => Ok(row.get(0)),
        Err(e) => Err(r.err(
            value,
            format!(
                "{:?} is not an interval: {}",
                value.get_ref(),
                conn::pg_message(&e)
            ),
            "write intervals as PostgreSQL reads them, e.g. \"1 hour\", \"7 days\"",
        )),
    }
}

async fn optional_interval(
    r: &Reader<'_>,
    value: &Option<Spanned<String>>,
    source: &Client,
) -> Result<Option<String>, Error> {
    match value {
        Some(v) => interval(r, v, source).await.map(Some),
        None => Ok(None),
    }
}

/// TimescaleDB refuses unique indexes without the time column on a hypertable; the source's
/// other unique indexes (not the primary key, which the profile replaces) must hold it.
async fn unique_indexes_hold(
    r: &Reader<'_>,
    h: &HypertableEntry,
    table: &Table,
    time: &str,
    source: &Client,
) -> Result<(), Error> {
    let rows = source
        .query(
            "SELECT ic.relname::text
               FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
              WHERE i.indrelid = $1 AND i.indisunique AND NOT i.indisprimary
                AND NOT EXISTS (SELECT 1 FROM pg_attribute a
                                 WHERE a.attrelid = i.indrelid AND a.attname = $2
                                   AND a.attnum = ANY(i.indkey::int2[]))",
            &[&table.oid, &time],
        )
        .await
        .map_err(|source| Error::Query {
            what: "unique indexes",
            source,
        })?;
    let names: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    if names.is_empty() {
        return Ok(());
    }
    Err(r.err(
        &h.table,
        format!(
            "{} has unique indexes without the time column {time} ({}); TimescaleDB refuses them on a hypertable",
            table.display_name(),
            names.join(", ")
        ),
        "add the time column to those indexes on the source, or leave this table a plain table",
    ))
}

async fn aggregate(
    r: &Reader<'_>,
    a: &AggregateEntry,
    plan: &Plan,
    source: &Client,
) -> Result<AggregateSpec, Error> {
    let (schema, name) = split_name(a.name.get_ref()).ok_or_else(|| {
        r.err(
            &a.name,
            format!("{:?} is not schema.name", a.name.get_ref()),
            "write the aggregate's name as schema.name",
        )
    })?;
    if !plan.schemas.contains(&schema) {
        return Err(r.err(
            &a.name,
            format!(
                "schema {schema} is not planned (schemas {})",
                plan.schemas.join(", ")
            ),
            "put the aggregate in a planned schema",
        ));
    }
    // The query must run on the source, whose tables green copies (read-only, no rows);
    // a source without TimescaleDB has no time_bucket, and green checks it at creation.
    if plan.source.timescaledb.is_some() {
        check_query(r, &a.query, source).await?;
    }
    Ok(AggregateSpec {
        schema,
        name,
        query: a.query.get_ref().trim().trim_end_matches(';').to_string(),
        refresh_start_offset: optional_interval(r, &a.refresh_start_offset, source).await?,
        refresh_end_offset: optional_interval(r, &a.refresh_end_offset, source).await?,
        refresh_every: optional_interval(r, &a.refresh_every, source).await?,
    })
}

async fn check_query(
    r: &Reader<'_>,
    query: &Spanned<String>,
    source: &Client,
) -> Result<(), Error> {
    let q = |what| move |source| Error::Query { what, source };
    source
        .batch_execute("BEGIN READ ONLY")
        .await
        .map_err(q("begin a read-only check"))?;
    let checked = source
        .query_one(
            &format!("SELECT count(*) FROM ({}) q WHERE false", query.get_ref()),
            &[],
        )
        .await;
    source
        .batch_execute("ROLLBACK")
        .await
        .map_err(q("end a read-only check"))?;
    checked.map(drop).map_err(|e| {
        r.err(
            query,
            format!(
                "the query does not run on the source: {}",
                conn::pg_message(&e)
            ),
            "fix the query (it is checked on the source, read-only)",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_split_like_sql() {
        assert_eq!(
            split_name("factory_telemetry.metric_hist"),
            Some(("factory_telemetry".into(), "metric_hist".into()))
        );
        assert_eq!(
            split_name("\"a.b\".\"Shift Notes\""),
            Some(("a.b".into(), "Shift Notes".into()))
        );
        assert_eq!(split_name("nodot"), None);
    }
}
