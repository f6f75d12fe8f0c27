//! Verify results: one row per verify run (the LSN both sides were compared at, how, and
//! the outcome) and one row per checked chunk (range, checksums, rows, equal or not), so
//! cutover can require a recent clean verify and `status` can show the last one.

use futures_util::future::try_join_all;
use lsn::Lsn;

use crate::{q, Error, GenericClient};

/// A verify run's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Running,
    /// Every chunk equal.
    Equal,
    /// Differences found and left alone.
    Differ,
    /// Differences found, re-copied, and the re-copied ranges verified equal.
    Repaired,
    /// Stopped by an error before it could judge.
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Running => "running",
            Outcome::Equal => "equal",
            Outcome::Differ => "differ",
            Outcome::Repaired => "repaired",
            Outcome::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Result<Outcome, Error> {
        Ok(match s {
            "running" => Outcome::Running,
            "equal" => Outcome::Equal,
            "differ" => Outcome::Differ,
            "repaired" => Outcome::Repaired,
            "failed" => Outcome::Failed,
            other => return Err(Error::Corrupt(other.into())),
        })
    }
}

/// Chunks the run's latest verify found different in its first pass (0 with no verify),
/// counted as they are recorded, so a running verify shows them too.
pub async fn latest_mismatched_chunks(c: &impl GenericClient, run: &str) -> Result<i64, Error> {
    c.query_one(
        "SELECT count(*) FROM bluegreen.verify_chunks
          WHERE pass = 'check' AND NOT equal
            AND verify_id = (SELECT max(id) FROM bluegreen.verify_runs WHERE run = $1)",
        &[&run],
    )
    .await
    .map(|r| r.get(0))
    .map_err(q("count mismatched verify chunks"))
}

pub struct NewVerify<'a> {
    pub run: &'a str,
    pub lsn: Lsn,
    /// `held` (the applier held at `lsn`) or `unheld` (target read as it was).
    pub mode: &'a str,
    pub target_applied_lsn: Option<Lsn>,
}

/// One checked range.
#[derive(Debug, Clone)]
pub struct ChunkResult {
    /// `check` (the verify pass), `recheck` (a repaired range, verified again) or
    /// `carried` (unchanged since `carried_from` checked it; its checksums are that check's).
    pub pass: &'static str,
    pub table_schema: String,
    pub table_name: String,
    pub chunk: i32,
    pub lower: Option<Vec<String>>,
    pub upper: Option<Vec<String>>,
    pub lsn: Lsn,
    pub source_checksum: String,
    pub target_checksum: String,
    pub source_rows: i64,
    pub target_rows: i64,
    pub equal: bool,
    pub seconds: f64,
    /// The verify that checked a carried chunk.
    pub carried_from: Option<i64>,
}

/// Totals written when a verify run ends.
#[derive(Debug, Clone, Default)]
pub struct Totals {
    pub tables: i32,
    pub chunks: i32,
    pub mismatched_chunks: i32,
    pub differences: i64,
    pub source_rows: i64,
    pub target_rows: i64,
    pub repair_lsn: Option<Lsn>,
    pub seconds: f64,
}

/// The latest finished verify run of a run.
#[derive(Debug, Clone)]
pub struct VerifyRun {
    pub id: i64,
    pub lsn: Lsn,
    pub mode: String,
    pub target_applied_lsn: Option<Lsn>,
    pub outcome: Outcome,
    pub chunks: Option<i32>,
    pub mismatched_chunks: Option<i32>,
    pub differences: Option<i64>,
    pub seconds: Option<f64>,
    /// Seconds since it finished.
    pub age_seconds: f64,
}

/// Records the start of a verify run; returns its id.
pub async fn start(c: &impl GenericClient, v: &NewVerify<'_>) -> Result<i64, Error> {
    c.query_one(
        "INSERT INTO bluegreen.verify_runs (run, lsn, mode, target_applied_lsn)
         VALUES ($1, $2::text::pg_lsn, $3, $4::text::pg_lsn) RETURNING id",
        &[&v.run, &v.lsn, &v.mode, &v.target_applied_lsn],
    )
    .await
    .map(|r| r.get(0))
    .map_err(q("record verify start"))
}

pub async fn record_chunks(
    c: &impl GenericClient,
    id: i64,
    chunks: &[ChunkResult],
) -> Result<(), Error> {
    let stmt = c
        .prepare(
            "INSERT INTO bluegreen.verify_chunks (verify_id, pass, table_schema, table_name, chunk,
                    lower_bound, upper_bound, lsn, source_checksum, target_checksum,
                    source_rows, target_rows, equal, seconds, carried_from)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8::text::pg_lsn, $9, $10, $11, $12, $13, $14,
                     $15)",
        )
        .await
        .map_err(q("prepare verify chunk insert"))?;
    // Pipelined (one client, many statements in flight): a round trip per batch, not per
    // chunk; a verify of thousands of chunks records them in a few.
    for batch in chunks.chunks(PIPELINE) {
        try_join_all(batch.iter().map(|ch| insert_chunk(c, &stmt, id, ch))).await?;
    }
    Ok(())
}

/// Statements in flight at once when recording results.
const PIPELINE: usize = 256;

async fn insert_chunk(
    c: &impl GenericClient,
    stmt: &tokio_postgres::Statement,
    id: i64,
    ch: &ChunkResult,
) -> Result<(), Error> {
    c.execute(
        stmt,
        &[
            &id,
            &ch.pass,
            &ch.table_schema,
            &ch.table_name,
            &ch.chunk,
            &ch.lower,
            &ch.upper,
            &ch.lsn,
            &ch.source_checksum,
            &ch.target_checksum,
            &ch.source_rows,
            &ch.target_rows,
            &ch.equal,
            &ch.seconds,
            &ch.carried_from,
        ],
    )
    .await
    .map(|_| ())
    .map_err(q("record verify chunk"))
}

/// Records how a verify run ended.
pub async fn finish(
    c: &impl GenericClient,
    id: i64,
    outcome: Outcome,
    totals: &Totals,
    detail: serde_json::Value,
) -> Result<(), Error> {
    c.execute(
        "UPDATE bluegreen.verify_runs
            SET result = $2, finished_at = clock_timestamp(), tables = $3, chunks = $4,
                mismatched_chunks = $5, differences = $6, source_rows = $7, target_rows = $8,
                repair_lsn = $9::text::pg_lsn, seconds = $10, detail = $11
          WHERE id = $1",
        &[
            &id,
            &outcome.as_str(),
            &totals.tables,
            &totals.chunks,
            &totals.mismatched_chunks,
            &totals.differences,
            &totals.source_rows,
            &totals.target_rows,
            &totals.repair_lsn,
            &totals.seconds,
            &detail,
        ],
    )
    .await
    .map(|_| ())
    .map_err(q("record verify end"))
}

/// The run's most recent verify that reached a verdict (equal, differ or repaired).
pub async fn latest(c: &impl GenericClient, run: &str) -> Result<Option<VerifyRun>, Error> {
    let row = c
        .query_opt(
            "SELECT id, lsn::text, mode, target_applied_lsn::text, result, chunks,
                    mismatched_chunks, differences, seconds,
                    extract(epoch FROM clock_timestamp() - finished_at)::float8
               FROM bluegreen.verify_runs
              WHERE run = $1 AND result IN ('equal', 'differ', 'repaired')
              ORDER BY id DESC LIMIT 1",
            &[&run],
        )
        .await
        .map_err(q("read the last verify"))?;
    row.map(|r| {
        Ok(VerifyRun {
            id: r.get(0),
            lsn: r.get(1),
            mode: r.get(2),
            target_applied_lsn: r.get(3),
            outcome: Outcome::parse(r.get(4))?,
            chunks: r.get(5),
            mismatched_chunks: r.get(6),
            differences: r.get(7),
            seconds: r.get(8),
            age_seconds: r.get(9),
        })
    })
    .transpose()
}

/// For cutover: the LSN and age in seconds of the run's latest verdict, if that verdict was
/// "equal". A clean verify followed by one that found differences does not count.
pub async fn last_clean(c: &impl GenericClient, run: &str) -> Result<Option<(Lsn, f64)>, Error> {
    Ok(latest(c, run)
        .await?
        .filter(|v| v.outcome == Outcome::Equal)
        .map(|v| (v.lsn, v.age_seconds)))
}

/// One table of a verify: its shape when checked (a changed shape means it is checked in
/// full next time), and how many chunks were checked and carried forward.
#[derive(Debug, Clone)]
pub struct TableResult {
    pub schema: String,
    pub name: String,
    pub shape: String,
    pub chunks: i32,
    pub checked: i32,
    pub carried: i32,
    /// The oldest verify a carried chunk comes from.
    pub carried_from: Option<i64>,
}

pub async fn record_tables<'a>(
    c: &'a impl GenericClient,
    id: i64,
    tables: &'a [TableResult],
) -> Result<(), Error> {
    let insert = |t: &'a TableResult| async move {
        c.execute(
            "INSERT INTO bluegreen.verify_tables (verify_id, table_schema, table_name, shape,
                    chunks, checked, carried, carried_from)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                &id,
                &t.schema,
                &t.name,
                &t.shape,
                &t.chunks,
                &t.checked,
                &t.carried,
                &t.carried_from,
            ],
        )
        .await
        .map(|_| ())
        .map_err(q("record a verified table"))
    };
    for batch in tables.chunks(PIPELINE) {
        try_join_all(batch.iter().map(insert)).await?;
    }
    Ok(())
}

/// A verify the next one may carry chunks forward from: the run's latest verify of any
/// result (a failed or interrupted one may have repaired rows), if it found the run equal
/// with the applier held.
#[derive(Debug, Clone)]
pub struct Base {
    pub id: i64,
    pub lsn: Lsn,
    /// Per table: its shape then, and its chunks in order (passes `check` and `carried`).
    pub tables: Vec<BaseTable>,
    /// Tables a copy wrote into after that verify started (a resumed copy).
    pub copied_since: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
pub struct BaseTable {
    pub schema: String,
    pub name: String,
    pub shape: String,
    pub chunks: Vec<ChunkResult>,
}

pub async fn base(c: &impl GenericClient, run: &str) -> Result<Option<Base>, Error> {
    let Some(row) = c
        .query_opt(
            "SELECT id, lsn::text, result = 'equal' AND mode = 'held'
               FROM bluegreen.verify_runs WHERE run = $1 ORDER BY id DESC LIMIT 1",
            &[&run],
        )
        .await
        .map_err(q("read the last verify"))?
    else {
        return Ok(None);
    };
    if !row.get::<_, bool>(2) {
        return Ok(None);
    }
    let id: i64 = row.get(0);
    let mut tables: Vec<BaseTable> = c
        .query(
            "SELECT table_schema, table_name, shape FROM bluegreen.verify_tables
              WHERE verify_id = $1",
            &[&id],
        )
        .await
        .map_err(q("read the last verify's tables"))?
        .iter()
        .map(|r| BaseTable {
            schema: r.get(0),
            name: r.get(1),
            shape: r.get(2),
            chunks: Vec::new(),
        })
        .collect();
    for r in c
        .query(
            "SELECT table_schema, table_name, chunk, lower_bound, upper_bound, lsn::text,
                    source_checksum, target_checksum, source_rows, target_rows, equal,
                    coalesce(carried_from, verify_id), pass
               FROM bluegreen.verify_chunks
              WHERE verify_id = $1 AND pass IN ('check', 'carried')
              ORDER BY table_schema, table_name, chunk",
            &[&id],
        )
        .await
        .map_err(q("read the last verify's chunks"))?
    {
        let (schema, name): (String, String) = (r.get(0), r.get(1));
        let Some(t) = tables
            .iter_mut()
            .find(|t| t.schema == schema && t.name == name)
        else {
            continue;
        };
        t.chunks.push(ChunkResult {
            pass: "carried",
            table_schema: schema,
            table_name: name,
            chunk: r.get(2),
            lower: r.get(3),
            upper: r.get(4),
            lsn: r.get(5),
            source_checksum: r.get(6),
            target_checksum: r.get(7),
            source_rows: r.get(8),
            target_rows: r.get(9),
            equal: r.get(10),
            seconds: 0.0,
            carried_from: Some(r.get(11)),
        });
    }
    let copied_since = c
        .query(
            "SELECT DISTINCT k.table_schema, k.table_name
               FROM bluegreen.chunks k, bluegreen.verify_runs v
              WHERE v.id = $1 AND k.run = v.run AND k.done_at >= v.started_at",
            &[&id],
        )
        .await
        .map_err(q("read copies since the last verify"))?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    Ok(Some(Base {
        id,
        lsn: row.get(1),
        tables,
        copied_since,
    }))
}
