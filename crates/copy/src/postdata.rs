//! Builds post-data items (keys, indexes, foreign keys, triggers, materialized view data) in
//! stages, each stage in parallel; every item commits with its `done` mark.

use std::sync::Arc;
use std::time::{Duration, Instant};

use conn::ConnSpec;
use state::PostDataItem;

use crate::error::{sql, Error};
use crate::progress::Counters;

pub async fn build(
    jobs: usize,
    target: &ConnSpec,
    run: &str,
    preamble: &str,
    counters: &Arc<Counters>,
) -> Result<(), Error> {
    let client = conn::connect(target).await.map_err(|e| Error::Conn {
        side: "target",
        source: e,
    })?;
    for stage in PostDataItem::pending_stages(&client, run).await? {
        // Materialized views may read each other: refresh them one at a time, in dump order.
        let workers = if stage == 3 { 1 } else { jobs.max(1) };
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..workers {
            let (target, run, preamble, counters) = (
                target.clone(),
                run.to_string(),
                preamble.to_string(),
                counters.clone(),
            );
            set.spawn(async move { worker(&target, &run, stage, &preamble, &counters).await });
        }
        while let Some(res) = set.join_next().await {
            res.map_err(|e| Error::Worker(e.to_string()))??;
        }
    }
    Ok(())
}

async fn worker(
    target: &ConnSpec,
    run: &str,
    stage: i32,
    preamble: &str,
    counters: &Counters,
) -> Result<(), Error> {
    let mut tgt = conn::connect(target).await.map_err(|e| Error::Conn {
        side: "target",
        source: e,
    })?;
    tgt.batch_execute(preamble)
        .await
        .map_err(sql("target", "post-data session settings"))?;
    loop {
        let tx = tgt.transaction().await.map_err(sql("target", "begin"))?;
        let Some(item) = PostDataItem::claim(&tx, run, stage).await? else {
            return Ok(());
        };
        let started = Instant::now();
        match tx.batch_execute(&item.sql).await {
            Ok(()) => {
                item.finish(&tx, run, started.elapsed().as_secs_f64())
                    .await?;
                tx.commit()
                    .await
                    .map_err(sql("target", format!("commit {} {}", item.kind, item.name)))?;
                Counters::add(&counters.items_done, 1);
                tracing::debug!(kind = %item.kind, name = %item.name, seconds = started.elapsed().as_secs_f64(), "built");
            }
            // Two foreign keys between the same tables can deadlock; the loser retries.
            Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::T_R_DEADLOCK_DETECTED) => {
                drop(tx);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => {
                return Err(sql("target", format!("build {} {}", item.kind, item.name))(
                    e,
                ));
            }
        }
    }
}
