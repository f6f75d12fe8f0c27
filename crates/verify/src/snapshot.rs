//! One instant on both sides.
//!
//! The source snapshot comes from a temporary logical slot that exports it: everything
//! committed before the slot's consistent point X is in it, nothing after. With `sync`
//! running, the applier is first paused, then asked to hold at X (it applies everything that
//! committed before X and nothing after), and only then is the target's snapshot taken: both
//! snapshots show the source's state at X. Without a running sync the target is read as it
//! is, and the report names the LSN its replication origin has applied.
//!
//! Each snapshot is held open by one connection (the replication connection on the source,
//! a REPEATABLE READ transaction that exported its snapshot on the target); workers import
//! them with `SET TRANSACTION SNAPSHOT`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use conn::{quote_literal, ConnSpec};
use serde::Serialize;
use state::ApplyStatus;
use tokio_postgres::Client;
use wire::Lsn;

use crate::error::{conn_err, sql, Error};

/// Session settings on every connection that reads or writes rows, on both sides: text
/// output (text COPY, key bounds, report values) must not depend on either server's defaults.
pub const SESSION_SETTINGS: &str = "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; \
     SET IntervalStyle = 'postgres'; SET extra_float_digits = 3; SET bytea_output = 'hex'; \
     SET lc_monetary = 'C'; SET statement_timeout = 0; SET lock_timeout = 0; \
     SET idle_in_transaction_session_timeout = 0";

/// Set while this process has a hold request standing (so an interrupted verify releases
/// its own hold and never another process's, e.g. a cutover's).
static HOLDING: AtomicBool = AtomicBool::new(false);

/// Whether this process has a hold request standing on the applier.
pub fn holding() -> bool {
    HOLDING.load(Ordering::SeqCst)
}

/// Overshoot retries: each takes a fresh snapshot.
const HOLD_ATTEMPTS: usize = 3;

/// How the target's snapshot relates to the source's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum Consistency {
    /// The sync applier held at the source snapshot's LSN while the target snapshot was
    /// taken: both show the source's state at that LSN.
    Held,
    /// No sync was running: the target was read as it was. `applied` is what its
    /// replication origin had applied (None: no origin, or not readable).
    Unheld { applied: Option<Lsn> },
}

impl Consistency {
    pub fn as_str(&self) -> &'static str {
        match self {
            Consistency::Held => "held",
            Consistency::Unheld { .. } => "unheld",
        }
    }

    pub fn applied(&self) -> Option<Lsn> {
        match self {
            Consistency::Held => None,
            Consistency::Unheld { applied } => *applied,
        }
    }
}

/// Whether to hold the run's applier.
#[derive(Debug, Clone)]
pub enum Mode {
    /// A sync process is attached: hold it at the snapshot's LSN.
    Online,
    /// No sync running; the replication origin to report on.
    Offline { origin: String },
}

pub struct Snapshots {
    pub lsn: Lsn,
    pub source: String,
    pub target: String,
    pub consistency: Consistency,
    /// The applier is still held at `lsn` and must be released.
    pub holding: bool,
    exporter: Option<wire::ExportedSnapshot>,
    target_holder: Client,
}

/// Everything a snapshot-taker needs.
pub struct Sides<'a> {
    pub source: &'a ConnSpec,
    pub target: &'a ConnSpec,
    /// A plain source connection (for the logical message that moves an idle stream on).
    pub source_client: &'a Client,
    /// A plain target connection (state schema, hold requests).
    pub state: &'a Client,
    pub run: &'a str,
}

impl Snapshots {
    /// Takes both snapshots. With `keep_hold`, an online applier stays held at the LSN
    /// until [`Snapshots::release`] (for repairs).
    pub async fn take(
        sides: &Sides<'_>,
        mode: &Mode,
        hold_timeout: Duration,
        keep_hold: bool,
    ) -> Result<Snapshots, Error> {
        match mode {
            Mode::Offline { origin } => {
                // Connected side by side; the target's snapshot is still taken after the
                // source's.
                let (exporter, target_holder) =
                    tokio::try_join!(export_source(sides), target_holder(sides.target))?;
                let target = export_target(&target_holder).await?;
                let applied = origin_progress(sides.state, origin).await;
                Ok(Snapshots {
                    lsn: exporter.consistent_point(),
                    source: exporter.snapshot_name().to_string(),
                    target,
                    consistency: Consistency::Unheld { applied },
                    holding: false,
                    exporter: Some(exporter),
                    target_holder,
                })
            }
            Mode::Online => {
                let mut last = String::new();
                for attempt in 1..=HOLD_ATTEMPTS {
                    match take_held(sides, hold_timeout, keep_hold).await {
                        Ok(Ok(s)) => return Ok(s),
                        Ok(Err(overshoot)) => {
                            tracing::warn!(attempt, %overshoot, "the applier ran past the snapshot before it saw the hold; taking a new snapshot");
                            last = overshoot;
                        }
                        Err(e) => {
                            release_quietly(sides).await;
                            return Err(e);
                        }
                    }
                }
                Err(Error::Hold {
                    run: sides.run.to_string(),
                    lsn: "(each snapshot)".into(),
                    seconds: hold_timeout.as_secs(),
                    detail: format!("it ran past the snapshot {HOLD_ATTEMPTS} times: {last}"),
                })
            }
        }
    }

    /// Takes a new target snapshot (after a repair committed); the source's stays.
    pub async fn refresh_target(&mut self) -> Result<(), Error> {
        self.target_holder
            .batch_execute("COMMIT")
            .await
            .map_err(sql("target", "end the snapshot transaction"))?;
        self.target = export_target(&self.target_holder).await?;
        Ok(())
    }

    /// Lets a held applier go on.
    pub async fn release(&mut self, sides: &Sides<'_>) -> Result<(), Error> {
        if self.holding {
            state::release(sides.state, sides.run).await?;
            HOLDING.store(false, Ordering::SeqCst);
            self.holding = false;
            tracing::info!(lsn = %self.lsn, "applier released");
        }
        Ok(())
    }

    /// Ends both snapshots.
    pub async fn close(mut self) {
        if let Some(e) = self.exporter.take() {
            e.into_connection().close().await;
        }
        let _ = self.target_holder.batch_execute("COMMIT").await;
    }
}

/// One held attempt. `Ok(Err(why))`: the applier had already applied past the snapshot.
async fn take_held(
    sides: &Sides<'_>,
    hold_timeout: Duration,
    keep_hold: bool,
) -> Result<Result<Snapshots, String>, Error> {
    let deadline = Instant::now() + hold_timeout;
    // Pause first, at the next transaction boundary: a hold requested only after the slot
    // exists could reach the applier after it has applied a transaction from beyond X.
    let status = ApplyStatus::get(sides.state, sides.run)
        .await?
        .ok_or_else(|| not_syncing(sides.run))?;
    let pause = status.applied_lsn.unwrap_or(Lsn(1));
    if !state::take_hold(sides.state, sides.run, pause).await? {
        let other = ApplyStatus::get(sides.state, sides.run)
            .await?
            .and_then(|a| a.hold_lsn)
            .map_or_else(|| "?".to_string(), |l| l.to_string());
        return Err(Error::Refused {
            what: format!(
                "the applier of run {} is already held at {other} by another process (a cutover?)",
                sides.run
            ),
            fix: "verify again when that hold is released (bluegreen status shows it)".into(),
        });
    }
    HOLDING.store(true, Ordering::SeqCst);
    nudge(sides).await;
    wait_held(sides, pause, deadline, hold_timeout).await?;

    // The target session that takes the snapshot connects meanwhile; its snapshot waits for
    // the hold.
    let (exporter, target_holder) =
        tokio::try_join!(export_source(sides), target_holder(sides.target))?;
    let x = exporter.consistent_point();
    state::request_hold(sides.state, sides.run, x).await?;
    // On an idle source nothing is written after X: the message tells the applier that
    // nothing before X is still to come (and makes it read the request at once).
    nudge(sides).await;
    wait_held(sides, x, deadline, hold_timeout).await?;

    let origin = ApplyStatus::get(sides.state, sides.run)
        .await?
        .map(|s| s.origin)
        .unwrap_or_else(|| state::names::origin(sides.run));
    if let Some(applied) = origin_progress(sides.state, &origin).await {
        if applied > x {
            release_quietly(sides).await;
            exporter.into_connection().close().await;
            return Ok(Err(format!(
                "held at {x} but origin {origin} had applied up to {applied}"
            )));
        }
    }
    let target = export_target(&target_holder).await?;
    let mut snaps = Snapshots {
        lsn: x,
        source: exporter.snapshot_name().to_string(),
        target,
        consistency: Consistency::Held,
        holding: true,
        exporter: Some(exporter),
        target_holder,
    };
    if !keep_hold {
        snaps.release(sides).await?;
    }
    Ok(Ok(snaps))
}

/// A logical message on the source with the prefix the applier reads hold requests at
/// (`bluegreen`), flushed to WAL: a walsender sends only flushed WAL, and a message outside a
/// transaction is not flushed by itself, so a committed transaction with synchronous_commit
/// on follows it.
async fn nudge(sides: &Sides<'_>) {
    if let Err(e) = sides
        .source_client
        .batch_execute(
            "BEGIN; SET LOCAL synchronous_commit = on;
             SELECT pg_logical_emit_message(false, 'bluegreen', 'verify hold');
             SELECT txid_current(); COMMIT;",
        )
        .await
    {
        let _ = sides.source_client.batch_execute("ROLLBACK").await;
        tracing::debug!(error = %e, "could not emit a logical message; the applier polls its requests anyway");
    }
}

fn not_syncing(run: &str) -> Error {
    Error::Refused {
        what: format!("run {run} has no sync applier row"),
        fix: "start `bluegreen sync` for the run, or verify without it".into(),
    }
}

async fn wait_held(
    sides: &Sides<'_>,
    lsn: Lsn,
    deadline: Instant,
    timeout: Duration,
) -> Result<(), Error> {
    // The applier reads a request the moment the nudge reaches it and answers in
    // milliseconds: poll fast first, then back off to the old 50 ms.
    let mut pause = Duration::from_millis(1);
    loop {
        let s = ApplyStatus::get(sides.state, sides.run)
            .await?
            .ok_or_else(|| not_syncing(sides.run))?;
        if s.held_lsn == Some(lsn) {
            return Ok(());
        }
        let fail = |detail: String| Error::Hold {
            run: sides.run.to_string(),
            lsn: lsn.to_string(),
            seconds: timeout.as_secs(),
            detail,
        };
        if !s.running() {
            release_quietly(sides).await;
            return Err(fail(format!(
                "the applier stopped{}",
                s.last_error.map(|e| format!(": {e}")).unwrap_or_default()
            )));
        }
        if Instant::now() >= deadline {
            release_quietly(sides).await;
            return Err(fail(format!(
                "applied up to {}, lag {} bytes",
                s.applied_lsn
                    .map_or_else(|| "nothing".to_string(), |l| l.to_string()),
                s.lag_bytes.map(|b| b.to_string()).unwrap_or("?".into())
            )));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

async fn release_quietly(sides: &Sides<'_>) {
    HOLDING.store(false, Ordering::SeqCst);
    if let Err(e) = state::release(sides.state, sides.run).await {
        tracing::warn!(error = %e, run = sides.run, "could not release the applier's hold");
    }
}

/// A temporary slot exporting a snapshot; it vanishes with its connection.
async fn export_source(sides: &Sides<'_>) -> Result<wire::ExportedSnapshot, Error> {
    let repl = wire::ReplicationConnection::connect(sides.source).await?;
    let slot = state::names::verify_slot(sides.run, std::process::id());
    let exported = repl.create_slot_exporting(&slot, true).await?;
    tracing::info!(lsn = %exported.consistent_point(), "source snapshot taken");
    Ok(exported)
}

async fn target_holder(target: &ConnSpec) -> Result<Client, Error> {
    let c = conn::connect(target).await.map_err(conn_err("target"))?;
    c.batch_execute(SESSION_SETTINGS)
        .await
        .map_err(sql("target", "session settings"))?;
    Ok(c)
}

/// Opens a REPEATABLE READ transaction, takes its snapshot and exports it.
async fn export_target(c: &Client) -> Result<String, Error> {
    c.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await
        .map_err(sql("target", "begin the snapshot transaction"))?;
    let name: String = c
        .query_one("SELECT pg_export_snapshot()", &[])
        .await
        .map_err(sql("target", "export the target snapshot"))?
        .get(0);
    Ok(name)
}

/// What the run's replication origin has applied, if it exists and can be read.
pub async fn origin_progress(c: &Client, origin: &str) -> Option<Lsn> {
    match c
        .query_opt(
            "SELECT pg_replication_origin_progress(roname, false)
               FROM pg_replication_origin WHERE roname = $1",
            &[&origin],
        )
        .await
    {
        Ok(row) => row.and_then(|r| r.get(0)),
        Err(e) => {
            tracing::warn!(error = %e, origin, "cannot read the replication origin's progress");
            None
        }
    }
}

/// A connection reading at an exported snapshot, with [`SESSION_SETTINGS`].
pub async fn reader(spec: &ConnSpec, side: &'static str, snapshot: &str) -> Result<Client, Error> {
    let c = conn::connect(spec).await.map_err(conn_err(side))?;
    c.batch_execute(&format!(
        "{SESSION_SETTINGS}; BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT {}",
        quote_literal(snapshot)
    ))
    .await
    .map_err(sql(side, "import the snapshot"))?;
    Ok(c)
}
