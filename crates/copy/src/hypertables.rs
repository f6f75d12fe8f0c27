//! Plain source tables that become TimescaleDB hypertables on the target (`--profile`):
//! made hypertables right after pre-data (empty, so TimescaleDB routes every copied row to
//! its chunk), their post-data adjusted to what hypertables accept, and after the data their
//! compression settings, policies (paused until cutover) and continuous aggregates.

use std::collections::HashMap;

use catalog::{Conversion, Plan};
use conn::{quote_ident, quote_literal};
use state::NewItem;
use tokio_postgres::{Client, GenericClient};

use crate::error::{sql, Error};
use crate::schedule::tables_named;

/// Makes each converted table a hypertable (in the pre-data transaction, while it is empty).
/// A table that already is one (an operator made it) is left as it is.
fn converting(plan: &Plan) -> bool {
    !plan.profile.hypertables.is_empty() || !plan.profile.continuous_aggregates.is_empty()
}

pub async fn create(tx: &impl GenericClient, plan: &Plan) -> Result<(), Error> {
    if !converting(plan) {
        return Ok(());
    }
    tx.batch_execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        .await
        .map_err(sql("target", "create the timescaledb extension"))?;
    for c in &plan.profile.hypertables {
        let already: bool = tx
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM timescaledb_information.hypertables
                                 WHERE hypertable_schema = $1 AND hypertable_name = $2)",
                &[&c.schema, &c.name],
            )
            .await
            .map_err(sql("target", "look up hypertables"))?
            .get(0);
        if already {
            continue;
        }
        // Default indexes off: the source's own indexes come with post-data.
        let q = format!(
            "SELECT create_hypertable($1::text::regclass, by_range($2::text::name, $3::text::{}),
                                      create_default_indexes => false)",
            c.interval_type()
        );
        tx.query_one(&q, &[&c.qualified(), &c.time_column, &c.chunk_interval])
            .await
            .map_err(sql(
                "target",
                format!("make {}.{} a hypertable", c.schema, c.name),
            ))?;
    }
    Ok(())
}

/// Post-data for tables that are hypertables on the target (converted by the profile, or
/// hypertables on the source) as hypertables take it: no `ALTER TABLE ONLY` (TimescaleDB
/// refuses ONLY, and so keys are built whole rather than split), and for converted tables
/// the primary key the profile names.
pub fn adjust_post_data(items: &mut [NewItem], plan: &Plan) {
    for item in items {
        let named = tables_named(&item.sql);
        let Some((schema, name)) = named.iter().find(|(schema, name)| {
            plan.conversion(schema, name).is_some() || plan.hypertable(schema, name).is_some()
        }) else {
            continue;
        };
        let table = format!("ALTER TABLE ONLY {}", conn::qualified(schema, name));
        let dumped = format!(
            "ALTER TABLE ONLY {}.{}",
            dump_ident(schema),
            dump_ident(name)
        );
        for only in [table, dumped] {
            if item.sql.contains(&only) {
                item.sql = item.sql.replace(&only, &only.replace(" ONLY ", " "));
            }
        }
        if let Some(c) = plan.conversion(schema, name) {
            if item.kind == "CONSTRAINT" && named.len() == 1 {
                item.sql = with_primary_key(&item.sql, c);
            }
        }
    }
}

/// A converted table at most this big gets its primary key on the empty hypertable, before
/// the data: TimescaleDB adds a primary key to a hypertable's existing chunks at a cost that
/// grows with the square of their number (2,084 one-day chunks of production_kpis: 18 s
/// after the data, about 1 s more of COPY before it), while maintaining a small table's key
/// row by row costs little. A bigger table's key is built after its data, one sorted build
/// per chunk. (A source hypertable's own size is not in the plan, so its keys stay after.)
const EARLY_KEY_BYTES: i64 = 64 << 20;

/// A table the profile converts and that is small enough for [`EARLY_KEY_BYTES`].
fn small_conversion(plan: &Plan, schema: &str, name: &str) -> bool {
    plan.conversion(schema, name).is_some()
        && plan
            .table(schema, name)
            .is_some_and(|t| t.bytes <= EARLY_KEY_BYTES)
}

/// How many chunks each small converted table (see [`EARLY_KEY_BYTES`]) will have on the
/// target, from its time column's range on the source: making a chunk costs milliseconds
/// of catalog work whatever it holds, so a small table spread over thousands of chunks
/// copies, and takes its keys, for far longer than its size says (the scheduler starts it
/// first). Bigger tables are left out: their range may take a scan to read, and their
/// bytes outweigh their chunks.
pub async fn expected_chunks(
    src: &Client,
    plan: &Plan,
) -> Result<HashMap<(String, String), i64>, Error> {
    let mut out = HashMap::new();
    for c in &plan.profile.hypertables {
        if !small_conversion(plan, &c.schema, &c.name) {
            continue;
        }
        let col = quote_ident(&c.time_column);
        let span = if c.interval_type() == "bigint" {
            format!("(max({col}) - min({col}))::float8 / $1::text::bigint")
        } else {
            format!(
                "extract(epoch FROM max({col})::timestamptz - min({col})::timestamptz)
                   / extract(epoch FROM $1::text::interval)"
            )
        };
        let q = format!(
            "SELECT coalesce(ceil({span})::bigint + 1, 0) FROM {}",
            c.qualified()
        );
        let n: i64 = src
            .query_one(&q, &[&c.chunk_interval])
            .await
            .map_err(sql(
                "source",
                format!("read the time range of {}", c.qualified()),
            ))?
            .get(0);
        out.insert((c.schema.clone(), c.name.clone()), n.max(0));
    }
    Ok(out)
}

/// The post-data items (by position) to build right after the hypertables are made.
pub fn early_keys(items: &[NewItem], plan: &Plan) -> Vec<usize> {
    items
        .iter()
        .enumerate()
        .filter(|(_, it)| it.kind == "CONSTRAINT" && it.sql.contains(" PRIMARY KEY ("))
        .filter(|(_, it)| match tables_named(&it.sql).as_slice() {
            [(schema, name)] => small_conversion(plan, schema, name),
            _ => false,
        })
        .map(|(i, _)| i)
        .collect()
}

/// Builds the [`early_keys`] in the pre-data transaction, after the items are recorded, and
/// marks them built there: one transaction, so a crash leaves both or neither. Returns
/// their names.
pub async fn build_early_keys(
    tx: &impl GenericClient,
    run: &str,
    items: &[NewItem],
    plan: &Plan,
    by: &str,
) -> Result<Vec<String>, Error> {
    let mut built = Vec::new();
    for i in early_keys(items, plan) {
        let started = std::time::Instant::now();
        tx.batch_execute(&items[i].sql).await.map_err(sql(
            "target",
            format!("build {} {} before the data", items[i].kind, items[i].name),
        ))?;
        if let Some(item) = state::PostDataItem::claim_one(tx, run, i as i32).await? {
            item.finish(tx, run, started.elapsed().as_secs_f64(), by)
                .await?;
        }
        built.push(items[i].name.clone());
    }
    Ok(built)
}

/// An identifier as pg_dump writes it (bare when it can be).
pub(crate) fn dump_ident(s: &str) -> String {
    let bare = !s.is_empty()
        && s.chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '$');
    if bare {
        s.to_string()
    } else {
        quote_ident(s)
    }
}

/// `… PRIMARY KEY (id)…` with the profile's key columns instead.
fn with_primary_key(sql: &str, c: &Conversion) -> String {
    let Some(at) = sql.find(" PRIMARY KEY (") else {
        return sql.to_string();
    };
    let open = at + " PRIMARY KEY (".len();
    let Some(close) = sql[open..].find(')') else {
        return sql.to_string();
    };
    let cols: Vec<String> = c.primary_key.iter().map(|k| quote_ident(k)).collect();
    format!(
        "{}{}{}",
        &sql[..open],
        cols.join(", "),
        &sql[open + close..]
    )
}

/// After the data and post-data: compression settings, continuous aggregates (created and
/// filled once), then every policy (compression, retention, refresh) added and paused in one
/// transaction: TimescaleDB's scheduler starts a new job at once, and a retention policy
/// that ran before it was paused would drop old rows green must keep until cutover.
/// Idempotent, so a resumed copy runs it again safely.
pub async fn finish(tgt: &mut Client, plan: &Plan) -> Result<(), Error> {
    if !converting(plan) {
        return Ok(());
    }
    for c in &plan.profile.hypertables {
        let table = c.qualified();
        let what = |w: &str| format!("{w} on {}.{}", c.schema, c.name);
        if !c.compress_segment_by.is_empty() || c.compress_order_by.is_some() {
            let mut opts = vec!["timescaledb.compress".to_string()];
            if !c.compress_segment_by.is_empty() {
                let cols: Vec<String> = c
                    .compress_segment_by
                    .iter()
                    .map(|s| quote_ident(s))
                    .collect();
                opts.push(format!(
                    "timescaledb.compress_segmentby = {}",
                    quote_literal(&cols.join(", "))
                ));
            }
            if let Some(o) = &c.compress_order_by {
                opts.push(format!(
                    "timescaledb.compress_orderby = {}",
                    quote_literal(o)
                ));
            }
            tgt.batch_execute(&format!("ALTER TABLE {table} SET ({})", opts.join(", ")))
                .await
                .map_err(sql("target", what("set compression")))?;
        }
    }
    for a in &plan.profile.continuous_aggregates {
        let view = a.qualified();
        let what = |w: &str| format!("{w} {}.{}", a.schema, a.name);
        tgt.batch_execute(&format!(
            "CREATE MATERIALIZED VIEW IF NOT EXISTS {view} WITH (timescaledb.continuous) AS {} WITH NO DATA",
            a.query
        ))
        .await
        .map_err(sql("target", what("create the continuous aggregate")))?;
        // Its refresh deletes from the materialization's chunks, which the reverse stream's
        // publication carries after cutover: without a replica identity the refresh fails.
        let m = tgt
            .query_one(
                "SELECT materialization_hypertable_schema::text, materialization_hypertable_name::text
                   FROM timescaledb_information.continuous_aggregates
                  WHERE view_schema = $1 AND view_name = $2",
                &[&a.schema, &a.name],
            )
            .await
            .map_err(sql("target", what("look up the materialization of")))?;
        tgt.batch_execute(&format!(
            "ALTER TABLE {} REPLICA IDENTITY FULL",
            conn::qualified(m.get(0), m.get(1))
        ))
        .await
        .map_err(sql("target", what("set the replica identity of")))?;
        // Outside a transaction block, as TimescaleDB requires.
        tgt.execute(
            "CALL refresh_continuous_aggregate($1::text::regclass, NULL, NULL)",
            &[&view],
        )
        .await
        .map_err(sql("target", what("fill the continuous aggregate")))?;
    }
    let tx = tgt
        .transaction()
        .await
        .map_err(sql("target", "begin adding the policies"))?;
    for c in &plan.profile.hypertables {
        let table = c.qualified();
        let what = |w: &str| format!("{w} on {}.{}", c.schema, c.name);
        if let Some(after) = &c.compress_after {
            tx.query_one(
                "SELECT add_compression_policy($1::text::regclass, compress_after => $2::text::interval,
                                               if_not_exists => true)",
                &[&table, after],
            )
            .await
            .map_err(sql("target", what("add the compression policy")))?;
        }
        if let Some(after) = &c.drop_after {
            tx.query_one(
                "SELECT add_retention_policy($1::text::regclass, drop_after => $2::text::interval,
                                             if_not_exists => true)",
                &[&table, after],
            )
            .await
            .map_err(sql("target", what("add the retention policy")))?;
        }
    }
    for a in &plan.profile.continuous_aggregates {
        let view = a.qualified();
        let what = |w: &str| format!("{w} {}.{}", a.schema, a.name);
        if let Some(every) = &a.refresh_every {
            tx.query_one(
                "SELECT add_continuous_aggregate_policy($1::text::regclass,
                            start_offset => $2::text::interval, end_offset => $3::text::interval,
                            schedule_interval => $4::text::interval, if_not_exists => true)",
                &[&view, &a.refresh_start_offset, &a.refresh_end_offset, every],
            )
            .await
            .map_err(sql("target", what("add the refresh policy of")))?;
        }
    }
    state::policies::set_paused(&tx, &plan.schemas, true).await?;
    tx.commit()
        .await
        .map_err(sql("target", "commit the paused policies"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conversion() -> Conversion {
        Conversion {
            schema: "factory_telemetry".into(),
            name: "metric_hist".into(),
            time_column: "ts".into(),
            time_type: "timestamp with time zone".into(),
            chunk_interval: "01:00:00".into(),
            primary_key: vec!["id".into(), "ts".into()],
            source_key: vec!["id".into()],
            compress_segment_by: vec![],
            compress_order_by: None,
            compress_after: None,
            drop_after: None,
        }
    }

    #[test]
    fn primary_key_takes_the_profiles_columns() {
        let sql = "ALTER TABLE ONLY factory_telemetry.metric_hist\n    ADD CONSTRAINT metric_hist_pkey PRIMARY KEY (id);\n";
        assert_eq!(
            with_primary_key(&sql.replace(" ONLY ", " "), &conversion()),
            "ALTER TABLE factory_telemetry.metric_hist\n    ADD CONSTRAINT metric_hist_pkey PRIMARY KEY (\"id\", \"ts\");\n"
        );
    }

    #[test]
    fn dump_idents_are_bare_when_they_can_be() {
        assert_eq!(dump_ident("metric_hist"), "metric_hist");
        assert_eq!(dump_ident("Shift Notes"), "\"Shift Notes\"");
    }
}
