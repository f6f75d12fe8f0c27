//! Blue's slot hears a position only once the target's physical standbys have it too.
//!
//! Confirming a position to the source's slot is final: logical decoding never sends again
//! what committed before the slot's confirmed position. Were the target a primary whose
//! standby lags, and the standby promoted, the new primary's replication origin would be
//! behind what the slot was told, and sync would resume past transactions the new primary
//! never got: silent loss. So every 200 ms this task pairs what is applied with the
//! target's WAL position read after it, and lets confirmations move up to a pair once every
//! standby has flushed its target position: those connected (`pg_stat_replication`, logical
//! walsenders apart) and those with a physical slot that is not connected (the slot keeps
//! the position it last flushed). Without standbys, what is applied is confirmable at once.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use conn::ConnSpec;
use wire::Lsn;

use crate::progress::Progress;

/// The target's WAL position, how many standbys it has, how many of them hide their position
/// (a role that is neither superuser nor in pg_read_all_stats), and the least position
/// they have flushed.
const STANDBYS: &str = "
WITH physical AS (
    SELECT r.flush_lsn FROM pg_stat_replication r
     WHERE r.state IN ('streaming', 'catchup')
       AND NOT EXISTS (SELECT 1 FROM pg_replication_slots s
                        WHERE s.active_pid = r.pid AND s.slot_type = 'logical')
    UNION ALL
    SELECT restart_lsn FROM pg_replication_slots
     WHERE slot_type = 'physical' AND NOT active AND restart_lsn IS NOT NULL
)
SELECT pg_current_wal_insert_lsn()::text,
       (SELECT count(*) FROM physical),
       (SELECT count(*) FROM physical WHERE flush_lsn IS NULL),
       (SELECT min(flush_lsn)::text FROM physical)";

/// Pairs kept at most (at 5 a second, 20 minutes of a standby not moving); beyond that
/// every other one goes, so the oldest, which decides, stays.
const MAX_PENDING: usize = 6000;

pub async fn guard_task(target: ConnSpec, progress: Arc<Progress>, limit: Duration) {
    let mut tgt: Option<tokio_postgres::Client> = None;
    // (target WAL position, source LSN applied before it was read)
    let mut pending: VecDeque<(Lsn, Lsn)> = VecDeque::new();
    let mut said = None::<Instant>;
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if tgt.is_none() {
            tgt = crate::link::within(limit, conn::connect(&target))
                .await
                .and_then(Result::ok);
        }
        let Some(t) = &tgt else { continue };
        // Applied first: every group up to it has committed before the position is read.
        let applied = progress.applied();
        let row = match crate::link::within(limit, t.query_one(STANDBYS, &[])).await {
            Some(Ok(row)) => row,
            _ => {
                tgt = None;
                continue;
            }
        };
        let position = row.get::<_, String>(0).parse::<Lsn>().ok();
        let standbys: i64 = row.get(1);
        let hidden: i64 = row.get(2);
        let flushed = row
            .get::<_, Option<String>>(3)
            .and_then(|l| l.parse::<Lsn>().ok());
        if standbys == 0 {
            pending.clear();
            progress.set_standby_safe(applied);
            continue;
        }
        let Some(position) = position else { continue };
        pending.push_back((position, applied));
        if pending.len() > MAX_PENDING {
            let mut keep = false;
            pending.retain(|_| {
                keep = !keep;
                keep
            });
        }
        let mut safe = None;
        if hidden == 0 {
            if let Some(flushed) = flushed {
                while pending.front().is_some_and(|(p, _)| *p <= flushed) {
                    safe = pending.pop_front().map(|(_, a)| a);
                }
            }
        }
        if let Some(a) = safe {
            progress.set_standby_safe(a);
        }
        let behind = progress.applied().0 > progress.confirmable().0;
        if behind && said.is_none_or(|at| at.elapsed() > Duration::from_secs(60)) {
            said = Some(Instant::now());
            if hidden > 0 {
                tracing::warn!(standbys, "the target has physical standbys whose positions this role may not see: the source keeps its WAL (nothing is confirmed to its slot) until they are visible; GRANT pg_read_all_stats TO the target role");
            } else {
                tracing::warn!(standbys, flushed = %flushed.unwrap_or_default(), "the target's standbys have not flushed what sync applied: the source's slot is told only what they have (so a promoted standby misses nothing), and the source keeps its WAL meanwhile; a standby gone for good: drop its physical slot on the target");
            }
        }
    }
}
