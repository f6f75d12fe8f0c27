//! Shared between the apply loop and the status task: what has been applied, what operators
//! asked for (hold, stop), and the last error. The status task mirrors it into the target's
//! `bluegreen.apply` row about once a second and measures lag against the source.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use conn::ConnSpec;
use wire::Lsn;

#[derive(Debug, Default)]
pub struct Progress {
    /// Source LSN up to which everything is applied and committed on the target.
    pub applied: AtomicU64,
    /// Highest source LSN applied that the target's physical standbys have too (see
    /// `standbys`): confirmable to the source's slot.
    standby_safe: AtomicU64,
    /// Highest source LSN received.
    pub received: AtomicU64,
    pub rows: AtomicU64,
    /// Set by the status task from `bluegreen.apply`.
    hold: Mutex<Option<Lsn>>,
    pub stop_requested: AtomicBool,
    pub last_error: Mutex<Option<String>>,
    /// Target backend pid of the apply session (abort ends it).
    pub apply_pid: Mutex<Option<i32>>,
    /// The source's newest position the status task has seen.
    source_seen: AtomicU64,
    /// What sync applied while it was behind (see [`Capacity`]).
    capacity: Mutex<Capacity>,
}

/// Sync's apply capacity, measured group by group: a group that started with source WAL
/// waiting ran at full speed (a group commits within milliseconds of the stream running
/// dry), so its bytes over the time since the previous group's commit are what sync can
/// apply. Groups that started caught up, and the time spent held, are left out, so the
/// figure is the same whether the source writes much or little (the window estimate needs
/// it: a rehearsal's sync is rarely behind for long).
#[derive(Debug, Default, Clone, Copy)]
pub struct Capacity {
    /// The previous commit: when, at which position, and whether WAL was waiting then.
    last: Option<(Instant, Lsn, bool)>,
    pub bytes: u64,
    pub seconds: f64,
}

/// WAL waiting beyond this when a group starts means the group ran behind.
const BEHIND_BYTES: u64 = 128 << 10;

impl Progress {
    pub fn applied(&self) -> Lsn {
        Lsn(self.applied.load(Ordering::SeqCst))
    }

    pub fn set_applied(&self, lsn: Lsn) {
        let before = self.applied.fetch_max(lsn.0, Ordering::SeqCst);
        if lsn.0 > before {
            self.note_capacity(lsn, true);
        }
    }

    /// A group committed up to `lsn` (counted), or the clock starts again at `lsn` after a
    /// wait that was not applying (a hold, a new session): not counted.
    fn note_capacity(&self, lsn: Lsn, count: bool) {
        let now = Instant::now();
        let behind = self.source_seen.load(Ordering::SeqCst) > lsn.0 + BEHIND_BYTES;
        if let Ok(mut c) = self.capacity.lock() {
            if let (true, Some((at, from, true))) = (count, c.last) {
                c.bytes += lsn.0.saturating_sub(from.0);
                c.seconds += now.duration_since(at).as_secs_f64();
            }
            c.last = Some((now, lsn, behind));
        }
    }

    /// The applier waited for something other than WAL (held, reconnecting): the time
    /// since the last commit is not apply time.
    pub fn restart_capacity_clock(&self) {
        self.note_capacity(self.applied(), false);
    }

    pub fn capacity(&self) -> Capacity {
        self.capacity.lock().map(|c| *c).unwrap_or_default()
    }

    /// The source's position as someone has just read it (the status task every 200 ms;
    /// a session at its start, so its first groups know whether they start behind).
    pub fn saw_source(&self, lsn: Lsn) {
        self.source_seen.fetch_max(lsn.0, Ordering::SeqCst);
    }

    pub fn set_standby_safe(&self, lsn: Lsn) {
        self.standby_safe.fetch_max(lsn.0, Ordering::SeqCst);
    }

    /// What the source's slot may hear: applied, and on every standby of the target.
    pub fn confirmable(&self) -> Lsn {
        Lsn(self
            .applied
            .load(Ordering::SeqCst)
            .min(self.standby_safe.load(Ordering::SeqCst)))
    }

    pub fn hold(&self) -> Option<Lsn> {
        self.hold.lock().ok().and_then(|h| *h)
    }

    pub fn set_hold(&self, lsn: Option<Lsn>) {
        if let Ok(mut h) = self.hold.lock() {
            *h = lsn;
        }
    }

    pub fn set_error(&self, e: Option<String>) {
        if let Ok(mut slot) = self.last_error.lock() {
            *slot = e;
        }
    }
}

/// Unapplied source positions remembered for the lag (at 5 a second, 10 minutes' worth
/// before they are thinned).
const MAX_SAMPLES: usize = 3000;

/// Writes the apply row every second; every 200 ms reads hold and stop requests, notes the
/// source's position and emits a logical message there, so lag is measured to 200 ms even
/// when the source is idle (the applier sees the message pass and knows everything before it
/// is applied).
pub async fn status_task(
    run: String,
    slot: String,
    source: ConnSpec,
    target: ConnSpec,
    progress: std::sync::Arc<Progress>,
    limit: Duration,
    hold_expiry: Duration,
) {
    // Every wait is bounded: a query stuck on a dead link would stop status for good.
    let mut src: Option<tokio_postgres::Client> = None;
    let mut tgt: Option<tokio_postgres::Client> = None;
    // (source LSN, when seen): lag in seconds is the age of the oldest one not yet applied.
    let mut samples: VecDeque<(Lsn, Instant)> = VecDeque::new();
    let (mut last_rows, mut last_tick, mut rate) = (0u64, Instant::now(), 0f64);
    let mut tick = 0u64;
    // Since when a hold has stood at the next drain message with none arriving.
    let mut unmet_since: Option<Instant> = None;
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        tick += 1;
        if tgt.is_none() {
            tgt = crate::link::within(limit, conn::connect(&target))
                .await
                .and_then(Result::ok);
        }
        let Some(t) = &tgt else { continue };
        let request = crate::link::within(limit, state::apply::requests(t, &run)).await;
        match request {
            Some(Ok(Some((hold, stop)))) => {
                if let Ok(mut h) = progress.hold.lock() {
                    *h = hold;
                }
                unmet_since = match hold {
                    Some(state::apply::AT_NEXT_MESSAGE) => unmet_since.or(Some(Instant::now())),
                    _ => None,
                };
                if unmet_since.is_some_and(|t| t.elapsed() > hold_expiry) {
                    // A cutover takes this hold inside its pause and sends the message
                    // within --drain-timeout; one standing this long lost its coordinator
                    // and watchdog, and would refuse every verify and cutover meanwhile.
                    if let Some(Ok(true)) =
                        crate::link::within(limit, state::apply::drop_unmet_hold(t, &run)).await
                    {
                        tracing::warn!(expiry = ?hold_expiry, "dropped a cutover's hold whose drain message never came within --hold-expiry (its coordinator and watchdog are gone)");
                        progress.set_hold(None);
                    }
                    unmet_since = None;
                }
                progress.stop_requested.store(stop, Ordering::SeqCst);
            }
            Some(Ok(None)) => {}
            Some(Err(_)) | None => {
                tgt = None;
                continue;
            }
        }
        // Every tick: the source's position, then a message, so lag is known to 200 ms.
        if src.is_none() {
            src = crate::link::within(limit, conn::connect(&source))
                .await
                .and_then(Result::ok);
        }
        let (mut source_lsn, mut retained) = (None, None::<i64>);
        if let Some(s) = &src {
            // The position first, then the message: the message lands after it, so once
            // the applier has passed the message, everything up to the position is applied.
            let position = crate::link::within(
                limit,
                s.query_one(
                    "SELECT pg_current_wal_lsn()::text,
                            (SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint
                               FROM pg_replication_slots WHERE slot_name = $1)",
                    &[&slot],
                ),
            )
            .await;
            let emitted = match position {
                Some(Ok(_)) => {
                    crate::link::within(
                        limit,
                        s.execute(
                            "SELECT pg_logical_emit_message(false, $2, $1)",
                            &[&run, &state::names::HEARTBEAT_MESSAGE],
                        ),
                    )
                    .await
                }
                _ => None,
            };
            match (position, emitted) {
                (Some(Ok(row)), Some(Ok(_))) => {
                    source_lsn = row.get::<_, String>(0).parse::<Lsn>().ok();
                    retained = row.get(1);
                }
                _ => src = None,
            }
        }
        let applied = progress.applied();
        if let Some(l) = source_lsn {
            progress.saw_source(l);
            samples.push_back((l, Instant::now()));
        }
        while samples.front().is_some_and(|(l, _)| *l <= applied) {
            samples.pop_front();
        }
        if samples.len() > MAX_SAMPLES {
            // Far behind: keep every other sample, so the oldest (the lag) stays exact.
            let mut keep = false;
            samples.retain(|_| {
                keep = !keep;
                keep
            });
        }
        if tick % 5 != 0 {
            continue;
        }
        // Once a second: the apply row.
        let lag_seconds = samples
            .front()
            .map(|(_, at)| at.elapsed().as_secs_f64())
            .unwrap_or(0.0);
        let lag_bytes = source_lsn.map(|l| l.0.saturating_sub(applied.0) as i64);
        let rows = progress.rows.load(Ordering::Relaxed);
        let dt = last_tick.elapsed().as_secs_f64().max(1e-3);
        rate = 0.5 * rate + 0.5 * ((rows - last_rows) as f64 / dt);
        (last_rows, last_tick) = (rows, Instant::now());
        let error = progress.last_error.lock().ok().and_then(|e| e.clone());
        let pid = progress.apply_pid.lock().ok().and_then(|p| *p);
        let received = Lsn(progress.received.load(Ordering::SeqCst));
        let capacity = progress.capacity();
        let beat = state::apply::Heartbeat {
            pid,
            applied,
            received,
            source: source_lsn,
            lag_bytes,
            lag_seconds,
            rows_per_second: rate,
            retained_bytes: retained,
            last_error: error,
            behind_bytes: capacity.bytes as i64,
            behind_seconds: capacity.seconds,
        };
        let result = crate::link::within(limit, state::apply::heartbeat(t, &run, &beat)).await;
        if !matches!(result, Some(Ok(_))) {
            tgt = None;
        }
    }
}
