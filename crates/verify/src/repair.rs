//! Re-copies mismatched key ranges from a source snapshot: per range, delete it on the
//! target and copy the source's rows for it, all in one target transaction with
//! `session_replication_role = replica` (no triggers, no foreign-key checks or cascades:
//! the rows are the source's, as the applier would write them).

use bytes::BytesMut;
use futures_util::{SinkExt, StreamExt};
use tokio_postgres::Client;

use crate::error::{sql, Error};
use crate::range::{copy_out_stored, KeyRange};
use crate::table::VerifyTable;

const COPY_BUFFER: usize = 256 * 1024;

/// Rows written back, per range.
#[derive(Debug, Clone, Default)]
pub struct Repaired {
    pub deleted: u64,
    pub copied: u64,
}

/// Repairs `work` in one target transaction; `source` reads at the repair's snapshot.
pub async fn repair(
    source: &Client,
    target: &mut Client,
    work: &[(&VerifyTable, Vec<KeyRange>)],
) -> Result<Repaired, Error> {
    let tx = target
        .transaction()
        .await
        .map_err(sql("target", "begin the repair"))?;
    tx.batch_execute("SET LOCAL session_replication_role = replica")
        .await
        .map_err(sql("target", "SET session_replication_role = replica"))?;
    let mut done = Repaired::default();
    for (t, ranges) in work {
        for r in ranges {
            let what = || format!("repair {} {}", t.display(), r.describe());
            done.deleted += tx
                .execute(
                    &format!("DELETE FROM {}{}", t.relation(), r.where_clause(t)),
                    &[],
                )
                .await
                .map_err(sql("target", what()))?;
            let stream = source
                .copy_out(&copy_out_stored(t, r))
                .await
                .map_err(sql("source", what()))?;
            let sink = tx
                .copy_in(&format!(
                    "COPY {} ({}) FROM STDIN (FORMAT {})",
                    t.qualified,
                    t.stored_column_list(),
                    t.format.sql()
                ))
                .await
                .map_err(sql("target", what()))?;
            futures_util::pin_mut!(stream);
            futures_util::pin_mut!(sink);
            let mut buf = BytesMut::with_capacity(COPY_BUFFER);
            while let Some(data) = stream.next().await {
                buf.extend_from_slice(&data.map_err(|e| sql("source", what())(e))?);
                if buf.len() >= COPY_BUFFER {
                    sink.feed(buf.split().freeze())
                        .await
                        .map_err(sql("target", what()))?;
                }
            }
            if !buf.is_empty() {
                sink.feed(buf.split().freeze())
                    .await
                    .map_err(sql("target", what()))?;
            }
            done.copied += sink
                .as_mut()
                .finish()
                .await
                .map_err(sql("target", what()))?;
            tracing::info!(table = %t.display(), range = %r.describe(), "range re-copied");
        }
    }
    tx.commit()
        .await
        .map_err(sql("target", "commit the repair"))?;
    Ok(done)
}
