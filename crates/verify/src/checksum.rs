//! A key range's digest on one side: its rows streamed by `COPY … TO STDOUT`, split into
//! rows as they arrive, and hashed in batches on rayon's pool while the stream goes on.

use std::collections::VecDeque;

use futures_util::StreamExt;
use tokio::sync::oneshot;
use tokio_postgres::Client;

use crate::copybin::{RowBatch, RowSplitter};
use crate::error::{sql, Error};
use crate::hash::{digest_batch, Digest};
use crate::range::{copy_out_sql, KeyRange};
use crate::table::VerifyTable;

/// Hand rows to the hashers in batches of about this many bytes.
const BATCH_BYTES: usize = 1 << 20;
/// Batches being hashed at once per stream; bounds memory at about this many batches.
const IN_FLIGHT: usize = 4;

pub async fn digest(
    client: &Client,
    side: &'static str,
    t: &VerifyTable,
    range: &KeyRange,
) -> Result<Digest, Error> {
    let what = || format!("checksum {} {}", t.display(), range.describe());
    let stream = client
        .copy_out(&copy_out_sql(t, range))
        .await
        .map_err(sql(side, what()))?;
    futures_util::pin_mut!(stream);
    let mut splitter = RowSplitter::new(t.format);
    let mut pending: VecDeque<oneshot::Receiver<Digest>> = VecDeque::new();
    let mut total = Digest::default();
    let copy_err = |source| Error::Copy {
        side,
        what: what(),
        source,
    };
    while let Some(data) = stream.next().await {
        let data = data.map_err(|e| sql(side, what())(e))?;
        splitter.push(data).map_err(copy_err)?;
        if splitter.pending_bytes() >= BATCH_BYTES {
            if pending.len() >= IN_FLIGHT {
                if let Some(rx) = pending.pop_front() {
                    total = total.merge(recv(rx).await?);
                }
            }
            pending.push_back(spawn_hash(splitter.take()));
        }
    }
    let last = splitter.finish().map_err(copy_err)?;
    if !last.is_empty() {
        pending.push_back(spawn_hash(last));
    }
    while let Some(rx) = pending.pop_front() {
        total = total.merge(recv(rx).await?);
    }
    Ok(total)
}

fn spawn_hash(batch: RowBatch) -> oneshot::Receiver<Digest> {
    let (tx, rx) = oneshot::channel();
    rayon::spawn(move || {
        let _ = tx.send(digest_batch(&batch));
    });
    rx
}

async fn recv(rx: oneshot::Receiver<Digest>) -> Result<Digest, Error> {
    rx.await
        .map_err(|_| Error::Worker("a hashing task ended without a result".into()))
}
