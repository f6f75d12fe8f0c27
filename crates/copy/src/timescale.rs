//! Hypertables the source already has: created on the target by TimescaleDB itself with the
//! same dimensions before any row arrives (never by restoring `_timescaledb_catalog` rows or
//! chunk tables), their continuous aggregates' dumped views left out of pre-data, and after
//! the data their compression settings, the chunks compressed on the source compressed on
//! the target, and their policies recreated from the source's job configs, paused.

use catalog::{Dimension, Hypertable, Job, Plan};
use conn::{qualified, quote_literal};
use tokio_postgres::{Client, GenericClient};

use crate::error::{sql, Error};

/// Policies recreated from the source's jobs, by job kind.
const POLICIES: &[(&str, &str)] = &[
    ("compression", "policy_compression"),
    ("retention", "policy_retention"),
    ("reorder", "policy_reorder"),
];

/// Makes each planned hypertable one on the target, as on the source: its time dimension
/// by range with the source's interval, then every further dimension (hash partitions, or
/// another range), the source's partitioning functions and integer-now function. Runs in
/// the pre-data transaction, while the tables are empty; default indexes off (the source's
/// own come with post-data). A table that already is a hypertable is left as it is.
pub async fn create(tx: &impl GenericClient, plan: &Plan) -> Result<(), Error> {
    for h in &plan.hypertables {
        let what = |w: &str| format!("{w} {}.{}", h.schema, h.name);
        let already: bool = tx
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM timescaledb_information.hypertables
                                 WHERE hypertable_schema = $1 AND hypertable_name = $2)",
                &[&h.schema, &h.name],
            )
            .await
            .map_err(sql("target", "look up hypertables"))?
            .get(0);
        if already {
            continue;
        }
        let table = qualified(&h.schema, &h.name);
        let Some(first) = h.dimensions.iter().position(|d| d.kind == "Time") else {
            return Err(Error::Refused {
                what: format!("hypertable {}.{} has no time dimension", h.schema, h.name),
                fix:
                    "migrate this hypertable with another tool, or leave its schema out (--schema)"
                        .into(),
            });
        };
        let d = &h.dimensions[first];
        tx.query_one(
            &format!(
                "SELECT create_hypertable($1::text::regclass, {}, create_default_indexes => false)",
                dimension_sql(d, 2)
            ),
            &dimension_params(&table, d),
        )
        .await
        .map_err(sql("target", what("make a hypertable of")))?;
        for (i, d) in h.dimensions.iter().enumerate() {
            if i == first {
                continue;
            }
            tx.query_one(
                &format!(
                    "SELECT add_dimension($1::text::regclass, {})",
                    dimension_sql(d, 2)
                ),
                &dimension_params(&table, d),
            )
            .await
            .map_err(sql(
                "target",
                what(&format!("add dimension {} to", d.column)),
            ))?;
        }
        if let Some(f) = &d.integer_now_func {
            tx.query_one(
                "SELECT set_integer_now_func($1::text::regclass, $2::text::regproc)",
                &[&table, f],
            )
            .await
            .map_err(sql("target", what("set the integer-now function of")))?;
        }
    }
    Ok(())
}

/// `by_range(…)` or `by_hash(…)` for a dimension, its parameters numbered from `n`.
fn dimension_sql(d: &Dimension, n: usize) -> String {
    let func = |k: usize| {
        if d.partitioning_func.is_some() {
            format!(", partition_func => ${k}::text::regproc")
        } else {
            String::new()
        }
    };
    if d.kind == "Time" {
        let ty = if is_integer(&d.column_type) {
            "bigint"
        } else {
            "interval"
        };
        format!(
            "by_range(${n}::text::name, ${}::text::{ty}{})",
            n + 1,
            func(n + 2)
        )
    } else {
        format!("by_hash(${n}::text::name, ${}::int{})", n + 1, func(n + 2))
    }
}

type Param<'a> = &'a (dyn tokio_postgres::types::ToSql + Sync);

fn dimension_params<'a>(table: &'a String, d: &'a Dimension) -> Vec<Param<'a>> {
    let mut p: Vec<Param<'a>> = vec![table, &d.column];
    if d.kind == "Time" {
        p.push(&d.interval);
    } else {
        p.push(&d.partitions);
    }
    if let Some(f) = &d.partitioning_func {
        p.push(f);
    }
    p
}

fn is_integer(type_name: &str) -> bool {
    matches!(type_name, "smallint" | "integer" | "bigint")
}

/// Pre-data without the views pg_dump writes for continuous aggregates (a plain view over
/// `_timescaledb_internal._materialized_hypertable_N`, which the target does not have),
/// nor their comments and grants.
pub fn without_aggregate_views(pre: &str, plan: &Plan) -> String {
    if plan.continuous_aggregates.is_empty() {
        return pre.to_string();
    }
    let mut out = String::with_capacity(pre.len());
    let mut skipping = false;
    for line in pre.lines() {
        if let Some(rest) = line.strip_prefix("-- Name: ") {
            skipping = plan
                .continuous_aggregates
                .iter()
                .any(|a| toc_names_view(rest, &a.schema, &a.name));
        }
        if !skipping {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Whether a pg_dump TOC header (`name; Type: kind; Schema: schema; Owner: …`) is the view
/// `schema.name` itself, or its comment or grants.
fn toc_names_view(header: &str, schema: &str, name: &str) -> bool {
    let mut parts = header.split("; ");
    let entry = parts.next().unwrap_or("");
    let kind = parts.next().and_then(|p| p.strip_prefix("Type: "));
    let in_schema = parts.next().and_then(|p| p.strip_prefix("Schema: "));
    if in_schema != Some(&crate::hypertables::dump_ident(schema)) && in_schema != Some(schema) {
        return false;
    }
    let names = [name.to_string(), crate::hypertables::dump_ident(name)];
    match kind {
        Some("VIEW") => names.iter().any(|n| entry == n),
        Some("COMMENT") | Some("ACL") => names
            .iter()
            .any(|n| entry == format!("VIEW {n}") || entry == format!("TABLE {n}")),
        _ => false,
    }
}

/// After data and post-data: compression settings as on the source, the chunks compressed
/// on the source compressed here, and the policies recreated and paused in one transaction
/// (as the profile's are: the scheduler never sees one scheduled). Idempotent (a resumed copy
/// runs it again).
pub async fn finish(tgt: &mut Client, src: &Client, plan: &Plan) -> Result<(), Error> {
    if plan.hypertables.is_empty() {
        return Ok(());
    }
    for h in plan.hypertables.iter().filter(|h| h.compression) {
        set_compression(tgt, h).await?;
        compress_like_source(tgt, src, h).await?;
    }
    let tx = tgt
        .transaction()
        .await
        .map_err(sql("target", "begin recreating the policies"))?;
    for h in &plan.hypertables {
        for j in &h.jobs {
            add_policy(&tx, h, j).await?;
        }
    }
    crate::aggregates::add_policies(&tx, src, plan).await?;
    state::policies::set_paused(&tx, &plan.schemas, true).await?;
    tx.commit()
        .await
        .map_err(sql("target", "commit the recreated policies"))
}

async fn set_compression(tgt: &Client, h: &Hypertable) -> Result<(), Error> {
    let settings = h.compression_settings.as_ref();
    let mut opts = vec!["timescaledb.compress".to_string()];
    // Only what the source set: left unset, TimescaleDB picks per chunk on both sides alike.
    if let Some(seg) = settings.and_then(|s| s.segment_by.as_deref()) {
        opts.push(format!(
            "timescaledb.compress_segmentby = {}",
            quote_literal(seg)
        ));
    }
    if let Some(o) = settings.and_then(|s| s.order_by.as_deref()) {
        opts.push(format!(
            "timescaledb.compress_orderby = {}",
            quote_literal(o)
        ));
    }
    tgt.batch_execute(&format!(
        "ALTER TABLE {} SET ({})",
        qualified(&h.schema, &h.name),
        opts.join(", ")
    ))
    .await
    .map_err(sql(
        "target",
        format!("set compression on {}.{}", h.schema, h.name),
    ))
}

/// One chunk's ranges, per dimension column: [start, end) in TimescaleDB's internal time.
#[derive(Debug, Clone, PartialEq)]
struct Cube {
    name: String,
    compressed: bool,
    ranges: Vec<(String, i64, i64)>,
}

async fn cubes(c: &Client, side: &'static str, h: &Hypertable) -> Result<Vec<Cube>, Error> {
    let rows = c
        .query(
            "SELECT format('%I.%I', c.schema_name, c.table_name), c.compressed_chunk_id IS NOT NULL,
                    array_agg(d.column_name::text ORDER BY d.id),
                    array_agg(s.range_start ORDER BY d.id), array_agg(s.range_end ORDER BY d.id)
               FROM _timescaledb_catalog.hypertable h
               JOIN _timescaledb_catalog.chunk c ON c.hypertable_id = h.id
               JOIN _timescaledb_catalog.chunk_constraint cc ON cc.chunk_id = c.id
               JOIN _timescaledb_catalog.dimension_slice s ON s.id = cc.dimension_slice_id
               JOIN _timescaledb_catalog.dimension d ON d.id = s.dimension_id
              WHERE h.schema_name = $1 AND h.table_name = $2
                AND NOT coalesce((to_jsonb(c) ->> 'dropped')::boolean, false)
              GROUP BY c.id ORDER BY c.id",
            &[&h.schema, &h.name],
        )
        .await
        .map_err(sql(side, format!("chunks of {}.{}", h.schema, h.name)))?;
    Ok(rows
        .iter()
        .map(|r| {
            let cols: Vec<String> = r.get(2);
            let starts: Vec<i64> = r.get(3);
            let ends: Vec<i64> = r.get(4);
            Cube {
                name: r.get(0),
                compressed: r.get(1),
                ranges: cols
                    .into_iter()
                    .zip(starts)
                    .zip(ends)
                    .map(|((c, s), e)| (c, s, e))
                    .collect(),
            }
        })
        .collect())
}

/// Target chunks to compress: those that meet a chunk compressed on the source in every
/// dimension and no uncompressed one (with the same dimensions, the chunk of the same
/// ranges), not compressed yet.
fn to_compress<'a>(source: &[Cube], target: &'a [Cube]) -> Vec<&'a str> {
    let meet = |a: &Cube, b: &Cube| {
        a.ranges.iter().all(|(col, s, e)| {
            b.ranges
                .iter()
                .filter(|(c, _, _)| c == col)
                .all(|(_, bs, be)| s < be && bs < e)
        })
    };
    target
        .iter()
        .filter(|t| !t.compressed)
        .filter(|t| {
            let mut met = source.iter().filter(|s| meet(s, t));
            let (mut compressed, mut plain) = (false, false);
            for s in met.by_ref() {
                if s.compressed {
                    compressed = true;
                } else {
                    plain = true;
                }
            }
            compressed && !plain
        })
        .map(|t| t.name.as_str())
        .collect()
}

async fn compress_like_source(tgt: &Client, src: &Client, h: &Hypertable) -> Result<(), Error> {
    let source = cubes(src, "source", h).await?;
    let target = cubes(tgt, "target", h).await?;
    for chunk in to_compress(&source, &target) {
        tgt.query_one(
            "SELECT compress_chunk($1::text::regclass, if_not_compressed => true)",
            &[&chunk],
        )
        .await
        .map_err(sql("target", format!("compress chunk {chunk}")))?;
    }
    Ok(())
}

/// Recreates one of the source's policies on the target with the source's config and
/// schedule (the caller pauses it before committing).
async fn add_policy(tgt: &impl GenericClient, h: &Hypertable, j: &Job) -> Result<(), Error> {
    let Some(&(_, proc)) = POLICIES.iter().find(|(k, _)| *k == j.kind) else {
        return Ok(());
    };
    let table = qualified(&h.schema, &h.name);
    let what = |w: &str| format!("{w} of {}.{} (source job {})", proc, table, j.id);
    let config = j.config.clone().unwrap_or(serde_json::Value::Null);
    let existing: Option<i32> = tgt
        .query_opt(
            "SELECT job_id FROM timescaledb_information.jobs
              WHERE hypertable_schema = $1 AND hypertable_name = $2 AND proc_name = $3",
            &[&h.schema, &h.name, &proc],
        )
        .await
        .map_err(sql("target", "look up policies"))?
        .map(|r| r.get(0));
    let id = match existing {
        Some(id) => id.to_string(),
        None => format!("({})", add_call(h, j, &config)?),
    };
    // The source's config with the target's hypertable id.
    let stmt = format!(
        "SELECT alter_job({id}, schedule_interval => $2::text::interval,
                config => ($3::jsonb - 'hypertable_id')
                          || jsonb_build_object('hypertable_id',
                               (SELECT id FROM _timescaledb_catalog.hypertable
                                 WHERE schema_name = $4 AND table_name = $5)))"
    );
    tgt.query_one(
        &stmt,
        &[&table, &j.schedule_interval, &config, &h.schema, &h.name],
    )
    .await
    .map_err(sql("target", what("recreate the policy")))?;
    Ok(())
}

/// The `add_*_policy(…)` call for a source job (its parameters: $1 the table, $3 the config).
fn add_call(h: &Hypertable, j: &Job, config: &serde_json::Value) -> Result<String, Error> {
    let time_type = h
        .dimensions
        .iter()
        .find(|d| d.kind == "Time")
        .map_or("", |d| d.column_type.as_str());
    let value = |key: &str| -> String {
        // A number is integer time (the time column's type); text is an interval.
        match config.get(key) {
            Some(serde_json::Value::Number(_)) => format!(
                "($3::jsonb ->> '{key}')::{}",
                if is_integer(time_type) {
                    time_type
                } else {
                    "bigint"
                }
            ),
            _ => format!("($3::jsonb ->> '{key}')::interval"),
        }
    };
    let has = |key: &str| config.get(key).is_some_and(|v| !v.is_null());
    let unknown = || {
        Error::Refused {
        what: format!(
            "the source's {} policy (job {}) on {}.{} has a config bluegreen does not know: {config}",
            j.kind, j.id, h.schema, h.name
        ),
        fix: format!("pause it, migrate, and add it on the target by hand (SELECT alter_job({}, scheduled => false); on the source)", j.id),
    }
    };
    Ok(match j.kind.as_str() {
        "compression" if has("compress_after") => format!(
            "SELECT add_compression_policy($1::text::regclass, compress_after => {})",
            value("compress_after")
        ),
        "compression" if has("compress_created_before") => {
            "SELECT add_compression_policy($1::text::regclass,
                    compress_created_before => ($3::jsonb ->> 'compress_created_before')::interval)"
                .into()
        }
        "retention" if has("drop_after") => format!(
            "SELECT add_retention_policy($1::text::regclass, drop_after => {})",
            value("drop_after")
        ),
        "retention" if has("drop_created_before") => {
            "SELECT add_retention_policy($1::text::regclass,
                    drop_created_before => ($3::jsonb ->> 'drop_created_before')::interval)"
                .into()
        }
        "reorder" if has("index_name") => {
            "SELECT add_reorder_policy($1::text::regclass, ($3::jsonb ->> 'index_name')::name)"
                .into()
        }
        _ => return Err(unknown()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cube(name: &str, compressed: bool, ranges: &[(&str, i64, i64)]) -> Cube {
        Cube {
            name: name.into(),
            compressed,
            ranges: ranges
                .iter()
                .map(|(c, s, e)| (c.to_string(), *s, *e))
                .collect(),
        }
    }

    #[test]
    fn chunks_compressed_on_the_source_are_compressed_on_the_target() {
        let source = [
            cube("s1", true, &[("ts", 0, 10), ("dev", 0, 5)]),
            cube("s2", false, &[("ts", 0, 10), ("dev", 5, 10)]),
            cube("s3", true, &[("ts", 10, 20), ("dev", 0, 5)]),
            cube("s4", true, &[("ts", 10, 20), ("dev", 5, 10)]),
            cube("s5", false, &[("ts", 20, 30), ("dev", 0, 5)]),
        ];
        let target = [
            cube("t1", false, &[("ts", 0, 10), ("dev", 0, 5)]),
            cube("t2", false, &[("ts", 0, 10), ("dev", 5, 10)]),
            cube("t3", false, &[("ts", 10, 20), ("dev", 0, 5)]),
            cube("t4", true, &[("ts", 10, 20), ("dev", 5, 10)]),
            cube("t5", false, &[("ts", 20, 30), ("dev", 0, 5)]),
        ];
        assert_eq!(to_compress(&source, &target), ["t1", "t3"]);
        // Intervals changed on the source: a wider target chunk is compressed only when
        // every source chunk in it is.
        let wide = [
            cube("w1", false, &[("ts", 0, 20)]),
            cube("w2", false, &[("ts", 20, 40)]),
        ];
        let narrow = [
            cube("a", true, &[("ts", 0, 10)]),
            cube("b", true, &[("ts", 10, 20)]),
            cube("c", true, &[("ts", 20, 30)]),
            cube("d", false, &[("ts", 30, 40)]),
        ];
        assert_eq!(to_compress(&narrow, &wide), ["w1"]);
    }

    #[test]
    fn aggregate_views_are_recognised_by_their_toc_header() {
        assert!(toc_names_view(
            "rh; Type: VIEW; Schema: app; Owner: postgres",
            "app",
            "rh"
        ));
        assert!(toc_names_view(
            "TABLE rh; Type: ACL; Schema: app; Owner: postgres",
            "app",
            "rh"
        ));
        assert!(toc_names_view(
            "\"Rh x\"; Type: VIEW; Schema: app; Owner: postgres",
            "app",
            "Rh x"
        ));
        assert!(!toc_names_view(
            "rh; Type: VIEW; Schema: other; Owner: postgres",
            "app",
            "rh"
        ));
        assert!(!toc_names_view(
            "rh2; Type: VIEW; Schema: app; Owner: postgres",
            "app",
            "rh"
        ));
        assert!(!toc_names_view(
            "r; Type: TABLE; Schema: app; Owner: postgres",
            "app",
            "r"
        ));
    }
}
