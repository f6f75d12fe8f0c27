//! One streaming session: from the origin's progress, decode, apply in source commit order,
//! commit in groups, confirm to the source only what the target has committed. Any failure
//! ends the session; the caller reconnects and the next session resumes from the origin.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use conn::ConnSpec;
use tokio::sync::watch;
use wire::pgoutput::LogicalMessage;
use wire::{Lsn, PgOutputOptions, ReplicationConnection, StreamConfig};

use crate::apply::{Applier, Group};
use crate::error::{sql, Error};
use crate::progress::Progress;
use crate::relmap::RelMap;
use crate::timescale::{Change, Markers};

/// When a group of source transactions commits on the target.
#[derive(Debug, Clone)]
pub struct GroupLimits {
    pub rows: u64,
    pub bytes: u64,
    pub age: Duration,
}

impl GroupLimits {
    /// The group has reached `n` times one of its limits.
    pub fn reached(&self, g: &Group, n: u32) -> bool {
        g.rows >= u64::from(n) * self.rows
            || g.bytes >= u64::from(n) * self.bytes
            || g.started.is_some_and(|s| s.elapsed() >= self.age * n)
    }
}

impl Default for GroupLimits {
    fn default() -> Self {
        GroupLimits {
            rows: 50_000,
            bytes: 32 << 20,
            age: Duration::from_millis(500),
        }
    }
}

/// Share of the stream's read-ahead that, filled, means the target holds apply back.
const BACKLOGGED: f64 = 0.9;

pub struct Context {
    pub run: String,
    pub slot: String,
    pub publication: String,
    pub origin: String,
    pub start: Lsn,
    pub source: ConnSpec,
    pub target: ConnSpec,
    /// Where the run's `bluegreen` schema lives (the target, or for reverse sync the green
    /// server it streams from).
    pub state: ConnSpec,
    pub limits: GroupLimits,
    pub skip_origin: Option<String>,
    pub progress: Arc<Progress>,
    pub snapshot_lsns: std::collections::HashMap<(String, String), Lsn>,
    /// The run's schemas (chunks of hypertables elsewhere are not applied).
    pub schemas: Vec<String>,
    /// Sessions that apply net changes (1: the main one only).
    pub sessions: usize,
    /// Groups that start with a transaction committed at or before this LSN use the main
    /// session only: one was replayed after a conflict between sessions (`Error::Replay`).
    pub serial_until: AtomicU64,
    /// How long a silent server counts as alive (see [`crate::link`]).
    pub link_timeout: Duration,
    /// See [`crate::SyncOptions::hold_expiry`].
    pub hold_expiry: Duration,
    /// This run's target backends and walsender of the session that ran last: a session cut
    /// off by a dead link leaves them behind (holding the origin, row locks, the slot), and
    /// the next one ends them.
    pub backends: std::sync::Mutex<Vec<i32>>,
    pub walsender: std::sync::Mutex<Option<i32>>,
}

pub enum Exit {
    /// Stopped on request (signal or `stop_requested`), everything received applied.
    Stopped,
}

/// The source transaction being applied.
struct Txn {
    commit_lsn: Lsn,
    /// Not to be applied: an earlier session applied it (it committed before the origin's
    /// progress), or it carries the origin this sync skips.
    done_before: bool,
    /// Between TimescaleDB's compression markers: rows moving between chunks.
    markers: Markers,
}

/// One session, ended early when either server stops answering (see [`crate::link`]).
pub async fn run(ctx: &Context, stop: &mut watch::Receiver<bool>) -> Result<Exit, Error> {
    let limit = ctx.link_timeout;
    tokio::select! {
        r = stream_and_apply(ctx, stop) => r,
        e = crate::link::watch(ctx.source.clone(), "source", limit) => Err(e),
        e = crate::link::watch(ctx.target.clone(), "target", limit) => Err(e),
        e = crate::link::watch(ctx.state.clone(), "state", limit), if ctx.state.redacted() != ctx.source.redacted() && ctx.state.redacted() != ctx.target.redacted() => Err(e),
    }
}

async fn stream_and_apply(ctx: &Context, stop: &mut watch::Receiver<bool>) -> Result<Exit, Error> {
    let target_client = conn::connect(&ctx.target)
        .await
        .map_err(|source| Error::Conn {
            side: "target",
            source,
        })?;
    let source_client = conn::connect(&ctx.source)
        .await
        .map_err(|source| Error::Conn {
            side: "source",
            source,
        })?;
    let state_client = conn::connect(&ctx.state)
        .await
        .map_err(|source| Error::Conn {
            side: "state",
            source,
        })?;
    end_leftovers(ctx, &target_client, &source_client).await?;
    let (settings, iso_dates) = output_settings(&source_client).await?;
    let pid = backend_pid(&target_client).await?;
    remember_backend(ctx, pid);
    let run_exists = state_client
        .query_opt("SELECT 1 FROM bluegreen.runs WHERE run = $1", &[&ctx.run])
        .await
        .map_err(sql("state", "look up the run"))?
        .is_some();
    if !run_exists {
        return Err(Error::RunRemoved(ctx.run.clone()));
    }
    require_slot_and_publication(&source_client, ctx).await?;
    let progress_lsn = origin_progress(&target_client, &ctx.origin).await?;
    let start = progress_lsn.unwrap_or(ctx.start).max(ctx.start);
    // The stream first: if abort removed the slot, this fails before the origin is recreated.
    let repl = ReplicationConnection::connect(&ctx.source).await?;
    if let Ok(mut w) = ctx.walsender.lock() {
        *w = Some(repl.backend_pid());
    }
    let config = StreamConfig {
        silence_timeout: Some(ctx.link_timeout),
        ..StreamConfig::default()
    };
    let mut stream = repl
        .start_replication(
            &ctx.slot,
            start,
            &PgOutputOptions::new([ctx.publication.clone()]),
            config,
        )
        .await?;
    let mut seconds = Vec::new();
    if ctx.sessions > 1 {
        let allowed = crate::apply::prepared_transactions_allowed(&target_client).await?;
        if allowed == 0 {
            tracing::info!(
                "max_prepared_transactions is 0 on the target: updates and deletes apply over one session"
            );
        }
        for _ in 0..(ctx.sessions - 1).min(allowed) {
            let c = conn::connect(&ctx.target)
                .await
                .map_err(|source| Error::Conn {
                    side: "target",
                    source,
                })?;
            remember_backend(ctx, backend_pid(&c).await?);
            seconds.push(c);
        }
    }
    let mut applier = Applier::open(target_client, seconds, &ctx.origin, &settings).await?;
    applier.set_journal(ctx.state.redacted() == ctx.target.redacted());
    // The origin is this session's now: a group that an ended session was still committing
    // when the progress was read has finished. Read again, start again if it moved.
    let now = origin_progress(applier.client(), &ctx.origin).await?;
    if now.unwrap_or(Lsn::ZERO) != progress_lsn.unwrap_or(Lsn::ZERO) {
        return Err(Error::OriginMoved);
    }
    if let Ok(mut p) = ctx.progress.apply_pid.lock() {
        *p = Some(pid);
    }
    ctx.progress.set_applied(start);
    // Where the source is now: the catch-up's first groups start behind it (best effort:
    // without it the status task's first read tells within 200 ms).
    let now = source_client.query_one("SELECT pg_current_wal_lsn()::text", &[]);
    if let Some(Ok(row)) = crate::link::within(ctx.link_timeout, now).await {
        if let Ok(l) = row.get::<_, String>(0).parse::<Lsn>() {
            ctx.progress.saw_source(l);
        }
    }
    ctx.progress.restart_capacity_clock();
    tracing::info!(slot = %ctx.slot, from = %start, sessions = applier.sessions(), "streaming");
    ctx.progress.set_error(None);

    let mut st = Stream {
        rels: RelMap::new(ctx.snapshot_lsns.clone(), iso_dates, ctx.schemas.clone()),
        txn: None,
        stopping: *stop.borrow(),
    };
    st.rels.load_timescale(&source_client).await?;
    loop {
        if st.stopping && st.txn.is_none() {
            commit(&mut applier, &stream, ctx, true).await?;
            let _ = stream.shutdown().await;
            return Ok(Exit::Stopped);
        }
        let event = tokio::select! {
            biased;
            // Once stopping, stop watching: a dropped sender makes changed() ready forever,
            // and the transaction at hand must still be read to its end.
            changed = stop.changed(), if !st.stopping => {
                if changed.is_err() || *stop.borrow() {
                    st.stopping = true;
                }
                continue;
            }
            ev = tokio::time::timeout(Duration::from_millis(5), stream.recv()) => ev,
        };
        let event = match event {
            Ok(ev) => ev?,
            Err(_idle) => {
                // Nothing waiting: commit what is complete, so lag stays low when writes are
                // sparse, then answer requests.
                if st.txn.is_none() {
                    commit(&mut applier, &stream, ctx, true).await?;
                    if ctx.progress.stop_requested.load(Ordering::SeqCst) {
                        st.stopping = true;
                    }
                }
                continue;
            }
        };
        ctx.progress
            .received
            .fetch_max(event.wal_end.0, Ordering::SeqCst);
        match &event.message {
            LogicalMessage::Begin(b) => {
                hold_if_due(&mut applier, &stream, ctx, &state_client, b.final_lsn).await?;
                applier.source_txn(
                    b.final_lsn,
                    b.final_lsn.0 > ctx.serial_until.load(Ordering::SeqCst),
                );
                st.txn = Some(Txn {
                    commit_lsn: b.final_lsn,
                    done_before: progress_lsn.is_some_and(|p| b.final_lsn < p),
                    markers: Markers::default(),
                });
            }
            LogicalMessage::Relation(r) => {
                if let Some(known) = st.rels.get(r.id) {
                    applier.relation_changed(known)?;
                }
                // Changes queued under the old description go out under it.
                applier.flush().await?;
                st.rels.learn(r, applier.client(), &source_client).await?;
            }
            LogicalMessage::Insert(i) => {
                if st.rels.is_slices(i.relation_id) {
                    st.rels
                        .slice_inserted(i.relation_id, &i.new, &source_client)
                        .await?;
                }
                if let Some(rel) = applies(&st.rels, &st.txn, i.relation_id, Change::Insert)? {
                    applier.set_stream_backlogged(stream.backlog() >= BACKLOGGED);
                    applier.insert(&rel, &i.new).await?;
                }
            }
            LogicalMessage::Update(u) => {
                if let Some(rel) = applies(&st.rels, &st.txn, u.relation_id, Change::Update)? {
                    applier.update(&rel, u.old.as_ref(), &u.new).await?;
                }
            }
            LogicalMessage::Delete(d) => {
                if st.rels.is_slices(d.relation_id) {
                    let dropped = st.rels.slice_deleted(d.relation_id, d.old.tuple())?;
                    if let (Some(rows), Some(t)) = (dropped, &st.txn) {
                        if !t.done_before && t.commit_lsn >= rows.applies_from {
                            applier.delete_range(&rows).await?;
                        }
                    }
                }
                if let Some(rel) = applies(&st.rels, &st.txn, d.relation_id, Change::Delete)? {
                    applier.delete(&rel, &d.old).await?;
                }
            }
            LogicalMessage::Truncate(t) => {
                let mut list: Vec<Arc<crate::relmap::TargetRel>> = Vec::new();
                let mut chunks = Vec::new();
                for id in &t.relation_ids {
                    if let Some(rel) = applies(&st.rels, &st.txn, *id, Change::Truncate)? {
                        if st.rels.is_chunk(*id) {
                            chunks.push(rel);
                        } else {
                            list.push(rel);
                        }
                    }
                }
                // A hypertable's chunks are listed with it: it is truncated once, whole.
                if let Some(alone) = chunks
                    .iter()
                    .find(|c| !list.iter().any(|r| r.qualified == c.qualified))
                {
                    return Err(Error::Unsupported {
                        what: format!(
                            "a TRUNCATE of a chunk of {} alone (not of the hypertable)",
                            alone.display
                        ),
                        fix: format!(
                            "delete the same rows from {} on the target by hand, then start sync again with the slot past this transaction, or abort the run and copy again",
                            alone.display
                        ),
                    });
                }
                applier
                    .truncate(&list, t.cascade, t.restart_identity)
                    .await?;
            }
            LogicalMessage::Commit(c) => {
                let done_before = st.txn.take().is_some_and(|t| t.done_before);
                if !done_before {
                    applier.end_source_txn(c.end_lsn, c.commit_time);
                }
                // While the target still applies net changes, decoding goes on
                // and the group commits at the first transaction end after they are done,
                // or at twice its limits, whichever comes first.
                let over = |n| ctx.limits.reached(&applier.group, n);
                if st.stopping || (over(1) && !applier.busy()) || over(2) {
                    commit(&mut applier, &stream, ctx, st.stopping).await?;
                }
            }
            LogicalMessage::Message(m) if !m.transactional && st.txn.is_none() => {
                // Everything before a message outside any transaction has been delivered:
                // once the group commits, the position may move up to it. (Heartbeats come
                // five times a second; one that finds the target busy waits for the group's
                // next commit rather than forcing one.)
                applier.mark(m.lsn);
                let requested = m.prefix == state::names::HOLD_MESSAGE;
                if requested
                    || st.stopping
                    || !applier.busy()
                    || ctx.limits.reached(&applier.group, 2)
                {
                    commit(&mut applier, &stream, ctx, requested || st.stopping).await?;
                }
                // A requester's own message: read its request now rather than at the status
                // task's next poll, so a cutover's hold takes milliseconds. A hold asked for
                // at the next drain message is due right here.
                if requested {
                    let mut h = current_hold(&state_client, &ctx.run).await?;
                    if h == Some(state::apply::AT_NEXT_MESSAGE)
                        && m.content.as_ref() == state::apply::DRAIN_MESSAGE
                    {
                        // Unless its requester moved it meanwhile: then read it again.
                        h = if state::hold_at_message(&state_client, &ctx.run, m.lsn).await? {
                            Some(m.lsn)
                        } else {
                            current_hold(&state_client, &ctx.run).await?
                        };
                    }
                    ctx.progress.set_hold(h);
                }
                hold_if_due(&mut applier, &stream, ctx, &state_client, m.lsn).await?;
            }
            LogicalMessage::Origin(o) => {
                if ctx.skip_origin.as_deref() == Some(o.name.as_str()) {
                    if let Some(t) = st.txn.as_mut() {
                        t.done_before = true;
                    }
                }
            }
            LogicalMessage::Message(m) if m.transactional => {
                if let Some(t) = st.txn.as_mut() {
                    t.markers.message(true, &m.prefix);
                }
            }
            LogicalMessage::Message(_) | LogicalMessage::Type(_) => {}
        }
        report(&mut applier, &stream, ctx).await?;
    }
}

/// What the session loop keeps between messages.
struct Stream {
    /// The source's relations as described in this session, mapped to the target's.
    rels: RelMap,
    /// The source transaction at hand.
    txn: Option<Txn>,
    /// A stop was asked for: the transaction at hand is read to its end, then the group
    /// commits and the session ends.
    stopping: bool,
}

async fn backend_pid(client: &tokio_postgres::Client) -> Result<i32, Error> {
    Ok(client
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .map_err(sql("target", "backend pid"))?
        .get(0))
}

fn remember_backend(ctx: &Context, pid: i32) {
    if let Ok(mut b) = ctx.backends.lock() {
        b.push(pid);
    }
}

/// Ends what the last session left behind. After a reset its backends are gone already;
/// after a dead link they may live on (the server cannot tell), holding the origin, row
/// locks and the slot until their own timeouts, which for an idle backend can be hours.
async fn end_leftovers(
    ctx: &Context,
    target: &tokio_postgres::Client,
    source: &tokio_postgres::Client,
) -> Result<(), Error> {
    let pids = ctx
        .backends
        .lock()
        .map(|mut b| std::mem::take(&mut *b))
        .unwrap_or_default();
    if !pids.is_empty() {
        let ended = target
            .execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                  WHERE pid = ANY($1) AND pid <> pg_backend_pid()
                    AND datname = current_database()",
                &[&pids],
            )
            .await
            .map_err(sql("target", "end the last session's backends"))?;
        if ended > 0 {
            tracing::info!(backends = ended, "ended the last session's target backends");
        }
    }
    let walsender = ctx.walsender.lock().ok().and_then(|w| *w);
    if let Some(pid) = walsender {
        // Once dying, a walsender blocked on a dead socket still tries to send its farewell
        // there; a repeated request lets it go without (PostgreSQL gives up sending when
        // asked to die while blocked).
        let started = Instant::now();
        loop {
            let held = source
                .query_opt(
                    "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots
                      WHERE slot_name = $1 AND active_pid = $2",
                    &[&ctx.slot, &pid],
                )
                .await
                .map_err(sql("source", "end the last session's walsender"))?
                .is_some();
            if !held {
                if let Ok(mut w) = ctx.walsender.lock() {
                    *w = None;
                }
                break;
            }
            if started.elapsed() > Duration::from_secs(5) {
                // Kept: the next session asks again.
                tracing::warn!(pid, "the last session's walsender has not ended yet; the slot stays busy until it does");
                break;
            }
            tracing::info!(pid, "ending the last session's walsender");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}

/// The relation a change lands in, if this change is to be applied: not when the transaction
/// was applied before, nor when the table's copy already holds it (the table was copied at a
/// later snapshot than the stream's start), nor for TimescaleDB's own relations and rows
/// that compression moves between chunks.
fn applies(
    rels: &RelMap,
    txn: &Option<Txn>,
    relation_id: u32,
    change: Change,
) -> Result<Option<Arc<crate::relmap::TargetRel>>, Error> {
    let Some(t) = txn else {
        return Err(Error::Protocol(
            "a change arrived outside a transaction".into(),
        ));
    };
    if rels.ignored(relation_id) || t.markers.skips(rels.is_chunk(relation_id), change) {
        return Ok(None);
    }
    let rel = rels.get(relation_id).ok_or_else(|| {
        Error::Protocol(format!(
            "a change for relation {relation_id} arrived before its description"
        ))
    })?;
    Ok((!t.done_before && t.commit_lsn >= rel.applies_from).then(|| rel.clone()))
}

/// The run's slot and publication must be on the server streamed from: START_REPLICATION
/// would otherwise fail with an error that reads like a passing fault (42704).
async fn require_slot_and_publication(
    source: &tokio_postgres::Client,
    ctx: &Context,
) -> Result<(), Error> {
    let row = source
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1),
                    EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $2)",
            &[&ctx.slot, &ctx.publication],
        )
        .await
        .map_err(sql("source", "look up the run's slot and publication"))?;
    if !row.get::<_, bool>(0) {
        return Err(Error::SlotMissing {
            side: "source",
            slot: ctx.slot.clone(),
        });
    }
    if !row.get::<_, bool>(1) {
        return Err(Error::PublicationMissing {
            side: "source",
            publication: ctx.publication.clone(),
        });
    }
    Ok(())
}

/// Commits the group (waiting for it, or leaving it in flight) and reports what is applied.
async fn commit(
    applier: &mut Applier,
    stream: &wire::ReplicationStream,
    ctx: &Context,
    wait: bool,
) -> Result<(), Error> {
    applier.commit(wait).await?;
    report(applier, stream, ctx).await
}

/// Only what the target has committed (and its standbys have) is confirmed: then the source
/// may let go of that WAL.
async fn report(
    applier: &mut Applier,
    stream: &wire::ReplicationStream,
    ctx: &Context,
) -> Result<(), Error> {
    if let Some(a) = applier.take_applied().await? {
        ctx.progress.set_applied(a.lsn);
        ctx.progress.rows.fetch_add(a.rows, Ordering::Relaxed);
    }
    // Only what the target's standbys have too (see `standbys`).
    stream.confirm(ctx.progress.confirmable());
    let missing = std::mem::take(&mut applier.missing_rows);
    if missing > 0 {
        record_divergence(ctx, missing).await.unwrap_or_else(|e| {
            // Kept for the next report: the state row must learn of it.
            tracing::warn!(error = %e, "could not record the divergence in the state schema; retrying");
            applier.missing_rows += missing;
        });
    }
    Ok(())
}

/// Green diverged (rows the source changed were not there): recorded in the state schema,
/// where status shows it and cutover refuses until a later verify is clean. Rare, so a
/// connection of its own.
async fn record_divergence(ctx: &Context, rows: u64) -> Result<(), Error> {
    let c = conn::connect(&ctx.state)
        .await
        .map_err(|source| Error::Conn {
            side: "state",
            source,
        })?;
    let lsn = ctx.progress.applied();
    state::record_divergence(&c, &ctx.run, rows as i64, lsn).await?;
    tracing::error!(rows, lsn = %lsn, "UPDATEs or DELETEs found no row on the target: green has diverged from the source; run bluegreen verify --repair (cutover refuses until a later verify is clean)");
    Ok(())
}

/// Holds while the request stands at or below `lsn` (a requester may move it while held).
async fn hold_if_due(
    applier: &mut Applier,
    stream: &wire::ReplicationStream,
    ctx: &Context,
    client: &tokio_postgres::Client,
    lsn: Lsn,
) -> Result<(), Error> {
    while let Some(h) = ctx.progress.hold().filter(|h| lsn >= *h) {
        hold(applier, stream, ctx, client, h).await?;
    }
    Ok(())
}

/// Stops after everything committed before `h`, tells the requester, and waits for release.
async fn hold(
    applier: &mut Applier,
    stream: &wire::ReplicationStream,
    ctx: &Context,
    client: &tokio_postgres::Client,
    h: Lsn,
) -> Result<(), Error> {
    commit(applier, stream, ctx, true).await?;
    state::apply::mark_held(client, &ctx.run, h, ctx.progress.applied()).await?;
    tracing::info!(lsn = %h, "holding");
    let started = Instant::now();
    let next = loop {
        // Polled here too (not only by the status task) so a release is seen at once.
        let now = current_hold(client, &ctx.run).await?;
        if now != Some(h) {
            break now;
        }
        if started.elapsed() > ctx.hold_expiry {
            tracing::warn!(lsn = %h, expiry = ?ctx.hold_expiry, "hold not released within --hold-expiry; going on");
            state::release(client, &ctx.run).await?;
            break None;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    // Take what replaced the request now rather than at the status task's next poll: a
    // released hold must not be re-entered, and a moved one (verify pauses first, then holds
    // at its snapshot) must stop the very next transaction beyond it.
    ctx.progress.set_hold(next);
    ctx.progress.restart_capacity_clock();
    Ok(())
}

async fn current_hold(client: &tokio_postgres::Client, run: &str) -> Result<Option<Lsn>, Error> {
    Ok(state::apply::requests(client, run)
        .await?
        .and_then(|(hold, _)| hold))
}

/// The source session's output settings: the walsender printed values with them, so the
/// target must read (and, for REPLICA IDENTITY FULL, print) values the same way. Also
/// whether dates print in the ISO style.
async fn output_settings(source: &tokio_postgres::Client) -> Result<(String, bool), Error> {
    let row = source
        .query_one(
            "SELECT current_setting('TimeZone'), current_setting('DateStyle'),
                    current_setting('IntervalStyle'), current_setting('extra_float_digits'),
                    current_setting('bytea_output')",
            &[],
        )
        .await
        .map_err(sql("source", "read output settings"))?;
    let names = [
        "TimeZone",
        "DateStyle",
        "IntervalStyle",
        "extra_float_digits",
        "bytea_output",
    ];
    let sql = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            format!(
                "SET {n} = {};",
                conn::quote_literal(&row.get::<_, String>(i))
            )
        })
        .collect();
    Ok((sql, row.get::<_, String>(1).starts_with("ISO")))
}

/// The end LSN of the last source transaction committed through the origin, if it exists.
pub(crate) async fn origin_progress(
    target: &tokio_postgres::Client,
    origin: &str,
) -> Result<Option<Lsn>, Error> {
    target
        .query_one(
            "SELECT CASE WHEN EXISTS (SELECT 1 FROM pg_replication_origin WHERE roname = $1)
                         THEN pg_replication_origin_progress($1, true) END",
            &[&origin],
        )
        .await
        .map(|r| r.get(0))
        .map_err(sql("target", "read the origin's progress"))
}
