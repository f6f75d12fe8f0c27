//! Once a second: what the state schema and the target's statistics say about the run,
//! into the metrics; for sync, whether it is ready (attached, no error, within --max-lag).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio_postgres::Client;

use super::{advance, Exporter, Metrics, OpLabel, Stage, StateLabel, TableLabel, OPS};

const EVERY: Duration = Duration::from_secs(1);

pub async fn run(e: Exporter, m: Arc<Metrics>) {
    let mut state: Option<Client> = None;
    let mut applied: Option<Client> = None;
    // Applied rows count from the target's table statistics as this process first saw them.
    let mut base: Option<[i64; 3]> = None;
    loop {
        if state.is_none() {
            state = within(e.link_timeout, conn::connect(&e.target))
                .await
                .and_then(Result::ok);
        }
        let ready = match &state {
            Some(c) => match within(e.link_timeout, poll_state(c, &e, &m)).await {
                Some(Ok(ready)) => ready,
                _ => {
                    state = None;
                    m.sync_attached.set(0);
                    false
                }
            },
            None => false,
        };
        if e.stage == Stage::Sync {
            m.set_ready(ready);
            if applied.is_none() {
                applied = within(e.link_timeout, conn::connect(&e.applied_to))
                    .await
                    .and_then(Result::ok);
            }
            if let Some(c) = &applied {
                match within(e.link_timeout, tuple_counts(c)).await {
                    Some(Ok(now)) => {
                        let b = *base.get_or_insert(now);
                        for (i, op) in OPS.into_iter().enumerate() {
                            let c: Counter = m.apply_rows.get_or_create(&OpLabel { op }).clone();
                            advance(&c, now[i].saturating_sub(b[i]).max(0) as u64);
                        }
                    }
                    _ => applied = None,
                }
            }
        }
        tokio::time::sleep(EVERY).await;
    }
}

async fn within<T>(limit: Duration, f: impl Future<Output = T>) -> Option<T> {
    tokio::time::timeout(limit, f).await.ok()
}

/// Reads the run's rows of the state schema into the metrics; for sync, says whether it is
/// ready.
async fn poll_state(c: &Client, e: &Exporter, m: &Metrics) -> Result<bool, state::Error> {
    let run = e.run.as_str();
    let (mut pending, mut done) = (0i64, 0i64);
    for t in state::Chunk::summary(c, run).await? {
        let table = TableLabel {
            table: format!("{}.{}", t.table_schema, t.table_name),
        };
        advance(&m.copy_rows.get_or_create(&table), t.rows.max(0) as u64);
        advance(&m.copy_bytes.get_or_create(&table), t.bytes.max(0) as u64);
        pending += t.chunks - t.done;
        done += t.done;
    }
    m.copy_chunks
        .get_or_create(&StateLabel { state: "pending" })
        .set(pending);
    m.copy_chunks
        .get_or_create(&StateLabel { state: "done" })
        .set(done);
    m.verify_mismatched_chunks
        .set(state::verify::latest_mismatched_chunks(c, run).await?);
    let Some(a) = state::ApplyStatus::get(c, run).await? else {
        m.sync_attached.set(0);
        return Ok(false);
    };
    m.lag_seconds.set(a.lag_seconds.unwrap_or(0.0));
    m.lag_bytes.set(a.lag_bytes.unwrap_or(0));
    m.retained_wal_bytes.set(a.retained_bytes.unwrap_or(0));
    let attached = a.running() && a.last_error.is_none();
    m.sync_attached.set(i64::from(attached));
    Ok(
        attached
            && !a.stop_requested
            && a.lag_seconds.is_some_and(|l| l <= e.max_lag.as_secs_f64()),
    )
}

/// Rows inserted, updated and deleted in the application's tables, as the server's
/// statistics count them (sync is the only writer to the target until cutover).
async fn tuple_counts(c: &Client) -> Result<[i64; 3], tokio_postgres::Error> {
    let r = c
        .query_one(
            "SELECT coalesce(sum(n_tup_ins), 0)::bigint, coalesce(sum(n_tup_upd), 0)::bigint,
                    coalesce(sum(n_tup_del), 0)::bigint
               FROM pg_stat_user_tables WHERE schemaname <> $1",
            &[&state::SCHEMA],
        )
        .await?;
    Ok([r.get(0), r.get(1), r.get(2)])
}
