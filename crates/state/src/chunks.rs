//! Copy chunks: a block range of one table, copied and marked done in one target
//! transaction, so each chunk lands exactly once. Block ranges (TID range scans) read each
//! block once however many chunks a table has; key ranges would each scan the whole table
//! whenever the planner prefers a sequential scan.

use crate::{q, Error, GenericClient};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkKind {
    /// `ctid >= '(lower,0)' AND ctid < '(upper,0)'`, a TID range scan (NULL bound: open).
    Ctid,
    /// The whole table.
    Whole,
    /// One time slice of a TimescaleDB hypertable, read through the hypertable:
    /// `lower <= time < upper` in TimescaleDB's internal time (microseconds since 1970 for
    /// time types, the value itself for integers); NULL bound: open.
    Time,
}

impl ChunkKind {
    fn as_str(self) -> &'static str {
        match self {
            ChunkKind::Ctid => "ctid",
            ChunkKind::Whole => "whole",
            ChunkKind::Time => "time",
        }
    }

    fn parse(s: &str) -> Result<ChunkKind, Error> {
        Ok(match s {
            "ctid" => ChunkKind::Ctid,
            "whole" => ChunkKind::Whole,
            "time" => ChunkKind::Time,
            other => return Err(Error::Corrupt(other.into())),
        })
    }
}

#[derive(Debug, Clone)]
pub struct NewChunk {
    pub table_schema: String,
    pub table_name: String,
    pub chunk: i32,
    pub kind: ChunkKind,
    pub lower: Option<i64>,
    pub upper: Option<i64>,
    pub est_bytes: i64,
    pub text_format: bool,
}

#[derive(Debug, Clone)]
pub struct Chunk {
    pub table_schema: String,
    pub table_name: String,
    pub chunk: i32,
    pub kind: ChunkKind,
    pub lower: Option<i64>,
    pub upper: Option<i64>,
    pub est_bytes: i64,
    pub text_format: bool,
}

/// Per-table totals of the chunks copied so far.
#[derive(Debug, Clone)]
pub struct TableSummary {
    pub table_schema: String,
    pub table_name: String,
    pub chunks: i64,
    pub done: i64,
    pub rows: i64,
    pub bytes: i64,
    pub seconds: f64,
    pub est_bytes: i64,
}

impl Chunk {
    pub async fn insert_all(
        c: &impl GenericClient,
        run: &str,
        chunks: &[NewChunk],
    ) -> Result<(), Error> {
        let stmt = c
            .prepare(
                "INSERT INTO bluegreen.chunks (run, table_schema, table_name, chunk, kind,
                        lower_bound, upper_bound, est_bytes, text_format)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .await
            .map_err(q("prepare chunk insert"))?;
        for ch in chunks {
            c.execute(
                &stmt,
                &[
                    &run,
                    &ch.table_schema,
                    &ch.table_name,
                    &ch.chunk,
                    &ch.kind.as_str(),
                    &ch.lower,
                    &ch.upper,
                    &ch.est_bytes,
                    &ch.text_format,
                ],
            )
            .await
            .map_err(q("insert chunk"))?;
        }
        Ok(())
    }

    /// Claims the largest pending chunk for the calling transaction; other workers skip it
    /// while the transaction lasts, and it stays pending if the transaction rolls back.
    pub async fn claim(c: &impl GenericClient, run: &str) -> Result<Option<Chunk>, Error> {
        let row = c
            .query_opt(
                "SELECT table_schema, table_name, chunk, kind, lower_bound,
                        upper_bound, est_bytes, text_format
                   FROM bluegreen.chunks
                  WHERE run = $1 AND state = 'pending'
                  ORDER BY est_bytes DESC, table_schema, table_name, chunk
                  LIMIT 1 FOR UPDATE SKIP LOCKED",
                &[&run],
            )
            .await
            .map_err(q("claim chunk"))?;
        row.map(|r| {
            Ok(Chunk {
                table_schema: r.get(0),
                table_name: r.get(1),
                chunk: r.get(2),
                kind: ChunkKind::parse(r.get(3))?,
                lower: r.get(4),
                upper: r.get(5),
                est_bytes: r.get(6),
                text_format: r.get(7),
            })
        })
        .transpose()
    }

    /// Claims the first pending chunk of one table, like [`Chunk::claim`].
    pub async fn claim_in_table(
        c: &impl GenericClient,
        run: &str,
        schema: &str,
        table: &str,
    ) -> Result<Option<Chunk>, Error> {
        let row = c
            .query_opt(
                "SELECT table_schema, table_name, chunk, kind, lower_bound,
                        upper_bound, est_bytes, text_format
                   FROM bluegreen.chunks
                  WHERE run = $1 AND table_schema = $2 AND table_name = $3 AND state = 'pending'
                  ORDER BY chunk
                  LIMIT 1 FOR UPDATE SKIP LOCKED",
                &[&run, &schema, &table],
            )
            .await
            .map_err(q("claim chunk"))?;
        row.map(|r| {
            Ok(Chunk {
                table_schema: r.get(0),
                table_name: r.get(1),
                chunk: r.get(2),
                kind: ChunkKind::parse(r.get(3))?,
                lower: r.get(4),
                upper: r.get(5),
                est_bytes: r.get(6),
                text_format: r.get(7),
            })
        })
        .transpose()
    }

    /// Marks the chunk done, copied by process `by`; call in the transaction that wrote its
    /// rows.
    #[allow(clippy::too_many_arguments)]
    pub async fn finish(
        &self,
        c: &impl GenericClient,
        run: &str,
        rows: i64,
        bytes: i64,
        seconds: f64,
        snapshot_lsn: lsn::Lsn,
        by: &str,
    ) -> Result<(), Error> {
        c.execute(
            "UPDATE bluegreen.chunks
                SET state = 'done', rows = $5, bytes = $6, seconds = $7,
                    snapshot_lsn = $8::text::pg_lsn, done_at = clock_timestamp(), copied_by = $9
              WHERE run = $1 AND table_schema = $2 AND table_name = $3 AND chunk = $4",
            &[
                &run,
                &self.table_schema,
                &self.table_name,
                &self.chunk,
                &rows,
                &bytes,
                &seconds,
                &snapshot_lsn,
                &by,
            ],
        )
        .await
        .map(|_| ())
        .map_err(q("finish chunk"))
    }

    /// Tables some of whose chunks are done and some not. After the snapshot is lost (a
    /// crash), such a table starts over from a new snapshot, so each table's rows come from
    /// one instant: its `snapshot_lsn`, from which streaming applies its changes.
    pub async fn partial_ctid_tables(
        c: &impl GenericClient,
        run: &str,
    ) -> Result<Vec<(String, String)>, Error> {
        let rows = c
            .query(
                "SELECT table_schema, table_name FROM bluegreen.chunks
                  WHERE run = $1
                  GROUP BY 1, 2
                 HAVING bool_or(state = 'done') AND bool_or(state = 'pending')
                  ORDER BY 1, 2",
                &[&run],
            )
            .await
            .map_err(q("find partial tables"))?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    pub async fn reset_table(
        c: &impl GenericClient,
        run: &str,
        schema: &str,
        table: &str,
    ) -> Result<(), Error> {
        c.execute(
            "UPDATE bluegreen.chunks SET state = 'pending', rows = NULL, bytes = NULL,
                    seconds = NULL, snapshot_lsn = NULL, done_at = NULL
              WHERE run = $1 AND table_schema = $2 AND table_name = $3",
            &[&run, &schema, &table],
        )
        .await
        .map(|_| ())
        .map_err(q("reset table chunks"))
    }

    /// Each copied table's snapshot LSN: streaming applies a table's changes from the
    /// transactions that commit at or after it (earlier ones are in its copied rows).
    pub async fn table_lsns(
        c: &impl GenericClient,
        run: &str,
    ) -> Result<Vec<(String, String, lsn::Lsn)>, Error> {
        let rows = c
            .query(
                "SELECT table_schema, table_name, max(snapshot_lsn) FROM bluegreen.chunks
                  WHERE run = $1 AND snapshot_lsn IS NOT NULL GROUP BY 1, 2",
                &[&run],
            )
            .await
            .map_err(q("table snapshot LSNs"))?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }

    /// Chunks of one table not yet committed done (claimed by a running transaction or not).
    pub async fn pending_in_table(
        c: &impl GenericClient,
        run: &str,
        schema: &str,
        table: &str,
    ) -> Result<i64, Error> {
        c.query_one(
            "SELECT count(*) FROM bluegreen.chunks
              WHERE run = $1 AND table_schema = $2 AND table_name = $3 AND state = 'pending'",
            &[&run, &schema, &table],
        )
        .await
        .map(|r| r.get(0))
        .map_err(q("count pending chunks"))
    }

    /// Done chunks of the run, whoever copied them: (count, estimated bytes).
    pub async fn done(c: &impl GenericClient, run: &str) -> Result<(i64, i64), Error> {
        c.query_one(
            "SELECT count(*), coalesce(sum(est_bytes), 0)::bigint FROM bluegreen.chunks
              WHERE run = $1 AND state = 'done'",
            &[&run],
        )
        .await
        .map(|r| (r.get(0), r.get(1)))
        .map_err(q("count done chunks"))
    }

    /// What process `by` copied: (chunks, rows).
    pub async fn done_by(c: &impl GenericClient, run: &str, by: &str) -> Result<(i64, i64), Error> {
        c.query_one(
            "SELECT count(*), coalesce(sum(rows), 0)::bigint FROM bluegreen.chunks
              WHERE run = $1 AND state = 'done' AND copied_by = $2",
            &[&run, &by],
        )
        .await
        .map(|r| (r.get(0), r.get(1)))
        .map_err(q("count chunks copied by a process"))
    }

    pub async fn pending(c: &impl GenericClient, run: &str) -> Result<i64, Error> {
        c.query_one(
            "SELECT count(*) FROM bluegreen.chunks WHERE run = $1 AND state = 'pending'",
            &[&run],
        )
        .await
        .map(|r| r.get(0))
        .map_err(q("count pending chunks"))
    }

    pub async fn summary(c: &impl GenericClient, run: &str) -> Result<Vec<TableSummary>, Error> {
        let rows = c
            .query(
                "SELECT table_schema, table_name, count(*), count(*) FILTER (WHERE state = 'done'),
                        coalesce(sum(rows), 0)::bigint, coalesce(sum(bytes), 0)::bigint,
                        coalesce(sum(seconds), 0), sum(est_bytes)::bigint
                   FROM bluegreen.chunks WHERE run = $1
                  GROUP BY 1, 2 ORDER BY 6 DESC, 1, 2",
                &[&run],
            )
            .await
            .map_err(q("chunk summary"))?;
        Ok(rows
            .iter()
            .map(|r| TableSummary {
                table_schema: r.get(0),
                table_name: r.get(1),
                chunks: r.get(2),
                done: r.get(3),
                rows: r.get(4),
                bytes: r.get(5),
                seconds: r.get(6),
                est_bytes: r.get(7),
            })
            .collect())
    }
}
