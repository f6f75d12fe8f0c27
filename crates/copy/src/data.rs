//! Data chunks: a worker holds one source transaction on the run's snapshot and pipes chunks
//! `COPY (SELECT …) TO STDOUT` → `COPY … FROM STDIN` without decoding rows. A chunk's rows
//! and its `done` mark commit in one target transaction.

use std::collections::HashMap;
use std::time::Instant;

use bytes::BytesMut;
use catalog::Table;
use conn::{quote_ident, quote_literal, ConnSpec};
use futures_util::{SinkExt, StreamExt};
use state::{Chunk, ChunkKind};
use tokio_postgres::Client;

use crate::error::{sql, Error};
use crate::progress::Counters;
use crate::schedule::ChunkEnd;

/// Coalesce rows into CopyData messages of about this size: one message per row costs more
/// than the rows themselves for narrow tables.
const COPY_BUFFER: usize = 256 * 1024;

/// The snapshot the data phase reads at.
#[derive(Clone)]
pub struct Snapshot {
    pub name: String,
    pub lsn: wire::Lsn,
}

/// One worker's two ends of the data pipe: a source transaction on the run's snapshot and a
/// target session for the COPYs.
pub struct DataConns {
    src: Client,
    tgt: Client,
}

impl DataConns {
    pub async fn open(
        source: &ConnSpec,
        target: &ConnSpec,
        snapshot: &Snapshot,
    ) -> Result<DataConns, Error> {
        let src = conn::connect(source).await.map_err(|e| Error::Conn {
            side: "source",
            source: e,
        })?;
        src.batch_execute(&format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT {}",
            quote_literal(&snapshot.name)
        ))
        .await
        .map_err(sql("source", "import the run's snapshot"))?;
        let tgt = conn::connect(target).await.map_err(|e| Error::Conn {
            side: "target",
            source: e,
        })?;
        // Rows arrive as the source has them, as sync applies them: with
        // `--target-schema existing` the operator's triggers and foreign keys exist during
        // the data (a trigger counting child rows would count them twice, a foreign key see
        // children before their parents). With pg_dump's schema they come after the data.
        tgt.batch_execute("SET synchronous_commit = off; SET session_replication_role = replica")
            .await
            .map_err(sql("target", "session settings"))?;
        Ok(DataConns { src, tgt })
    }
}

/// Claims a pending chunk of `table` and copies it; its rows and its `done` mark (with `by`,
/// the process) commit together. The claim is the chunk row's lock, held by this
/// transaction: a process that dies mid-chunk loses only that chunk, which the server rolls
/// back and another process claims again.
pub async fn copy_chunk_of(
    conns: &mut DataConns,
    table: &(String, String),
    tables: &HashMap<(String, String), Table>,
    run: &str,
    snapshot: &Snapshot,
    counters: &Counters,
    by: &str,
) -> Result<ChunkEnd, Error> {
    let DataConns { src, tgt } = conns;
    let tx = tgt.transaction().await.map_err(sql("target", "begin"))?;
    // Rows read at a snapshot that is no longer the run's (a new leader took over after the
    // one this process served died) must not land. The leader withdraws it, too, once every
    // chunk is in: then there is simply nothing left here.
    if !state::leader::snapshot_current(&tx, run, &snapshot.name).await? {
        if Chunk::pending_in_table(&tx, run, &table.0, &table.1).await? == 0 {
            return Ok(ChunkEnd::NoneLeft);
        }
        return Err(Error::LeaderGone { run: run.into() });
    }
    let Some(chunk) = Chunk::claim_in_table(&tx, run, &table.0, &table.1).await? else {
        return Ok(
            if Chunk::pending_in_table(&tx, run, &table.0, &table.1).await? == 0 {
                ChunkEnd::NoneLeft
            } else {
                ChunkEnd::Busy
            },
        );
    };
    let key = (chunk.table_schema.clone(), chunk.table_name.clone());
    let Some(table) = tables.get(&key) else {
        return Err(Error::Refused {
            what: format!("chunk for {}.{} has no table in the plan", key.0, key.1),
            fix: "the source schema changed since the run started: abort the run and start again"
                .into(),
        });
    };
    let started = Instant::now();
    let (out_sql, in_sql) = copy_statements(table, &chunk);
    let what = format!("copy {} chunk {}", table.display_name(), chunk.chunk);
    let stream = src
        .copy_out(&out_sql)
        .await
        .map_err(sql("source", what.clone()))?;
    let sink = tx
        .copy_in(&in_sql)
        .await
        .map_err(sql("target", what.clone()))?;
    futures_util::pin_mut!(stream);
    futures_util::pin_mut!(sink);
    let mut buf = BytesMut::with_capacity(COPY_BUFFER);
    let mut bytes = 0u64;
    while let Some(data) = stream.next().await {
        let data = data.map_err(sql("source", what.clone()))?;
        bytes += data.len() as u64;
        buf.extend_from_slice(&data);
        if buf.len() >= COPY_BUFFER {
            Counters::add(&counters.bytes, buf.len() as u64);
            sink.feed(buf.split().freeze())
                .await
                .map_err(sql("target", what.clone()))?;
        }
    }
    if !buf.is_empty() {
        Counters::add(&counters.bytes, buf.len() as u64);
        sink.feed(buf.split().freeze())
            .await
            .map_err(sql("target", what.clone()))?;
    }
    let rows = sink
        .as_mut()
        .finish()
        .await
        .map_err(sql("target", what.clone()))?;
    let seconds = started.elapsed().as_secs_f64();
    chunk
        .finish(
            &tx,
            run,
            rows as i64,
            bytes as i64,
            seconds,
            snapshot.lsn,
            by,
        )
        .await?;
    tx.commit()
        .await
        .map_err(sql("target", format!("commit {what}")))?;
    Counters::add(&counters.rows, rows);
    Counters::add(&counters.chunks_done, 1);
    Counters::add(&counters.est_bytes_done, chunk.est_bytes.max(0) as u64);
    tracing::debug!(table = %table.display_name(), chunk = chunk.chunk, rows, bytes, seconds, "chunk copied");
    Ok(ChunkEnd::Copied)
}

/// The pair of COPY statements for one chunk. Generated columns are left out (the target
/// computes them); binary format unless a column's binary form embeds type OIDs.
fn copy_statements(table: &Table, chunk: &Chunk) -> (String, String) {
    let cols: Vec<String> = table
        .copied_columns()
        .map(|c| quote_ident(&c.name))
        .collect();
    let cols = cols.join(", ");
    let format = if chunk.text_format { "text" } else { "binary" };
    let mut filter = Vec::new();
    // A hypertable is read through itself (its rows are in its chunks, compressed ones
    // decompressed on the way); anything else alone.
    let mut only = "ONLY ";
    match chunk.kind {
        ChunkKind::Ctid => {
            if let Some(lo) = chunk.lower {
                filter.push(format!("ctid >= '({lo},0)'::tid"));
            }
            if let Some(hi) = chunk.upper {
                filter.push(format!("ctid < '({hi},0)'::tid"));
            }
        }
        ChunkKind::Time => {
            only = "";
            if let Some(column) = &table.time_column {
                let ty = table
                    .columns
                    .iter()
                    .find(|c| &c.name == column)
                    .map_or("", |c| c.type_name.as_str());
                let col = quote_ident(column);
                if let Some(lo) = chunk.lower {
                    filter.push(format!("{col} >= {}", time_value(ty, lo)));
                }
                if let Some(hi) = chunk.upper {
                    filter.push(format!("{col} < {}", time_value(ty, hi)));
                }
            }
        }
        ChunkKind::Whole => {}
    }
    let filter = if filter.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", filter.join(" AND "))
    };
    let name = table.qualified();
    (
        format!("COPY (SELECT {cols} FROM {only}{name}{filter}) TO STDOUT (FORMAT {format})"),
        format!("COPY {name} ({cols}) FROM STDIN (FORMAT {format})"),
    )
}

/// A value of TimescaleDB's internal time (microseconds since 1970 for time types, the value
/// itself for integers) as SQL of the time column's type.
fn time_value(type_name: &str, v: i64) -> String {
    match type_name {
        "timestamp with time zone" => format!("_timescaledb_functions.to_timestamp({v})"),
        "timestamp without time zone" => {
            format!("_timescaledb_functions.to_timestamp_without_timezone({v})")
        }
        "date" => format!("_timescaledb_functions.to_date({v})"),
        _ => v.to_string(),
    }
}
