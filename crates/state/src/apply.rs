//! The sync applier's row: what it has applied, how far behind it is, and the requests other
//! processes make of it through the database (hold at an LSN for verify, stop for cutover).
//!
//! Hold protocol: a requester sets `hold_lsn = X`. The applier applies every source
//! transaction that committed before X, applies none at or after X, sets `held_lsn = X`
//! and waits; the target then shows exactly the source's state at X. `release` clears both
//! and the applier goes on. The applier knows the stream has passed X when it sees a
//! transaction that commits at or after X, or a logical message at or after X: a requester
//! on an idle source should emit one after taking its snapshot ([`emit_hold_message`]).
//! A requester may also ask for a hold at its next message, wherever that lands
//! ([`AT_NEXT_MESSAGE`]).

use std::time::Duration;

use lsn::Lsn;

use crate::{q, Error, GenericClient};

/// A snapshot of the applier's row.
#[derive(Debug, Clone, Default)]
pub struct ApplyStatus {
    pub origin: String,
    pub pid: Option<i32>,
    /// Seconds since the applier last wrote its heartbeat (None: never).
    pub heartbeat_age: Option<f64>,
    pub applied_lsn: Option<Lsn>,
    pub received_lsn: Option<Lsn>,
    pub source_lsn: Option<Lsn>,
    pub lag_bytes: Option<i64>,
    pub lag_seconds: Option<f64>,
    pub rows_per_second: Option<f64>,
    pub retained_bytes: Option<i64>,
    pub last_error: Option<String>,
    pub hold_lsn: Option<Lsn>,
    pub held_lsn: Option<Lsn>,
    pub stop_requested: bool,
    /// Prepared parts of groups on the target (see `rollback_prepared`): a moment's worth
    /// while sync runs; left behind by a sync that stopped between prepare and commit.
    pub prepared_parts: i64,
    /// UPDATEs and DELETEs that found no row on the target, ever (green diverged).
    pub diverged_rows: i64,
    /// When the latest of them was recorded, and the source LSN applied by then.
    pub diverged_at: Option<String>,
    pub diverged_lsn: Option<Lsn>,
    /// A verify that started after the latest divergence found the run equal.
    pub divergence_verified: bool,
    /// See [`Heartbeat::behind_bytes`] (0 on a state schema from before version 11).
    pub behind_bytes: i64,
    pub behind_seconds: f64,
}

impl ApplyStatus {
    /// A heartbeat this recent means a sync process is attached.
    pub const ALIVE: Duration = Duration::from_secs(5);

    /// Green diverged and no clean verify has looked at it since.
    pub fn diverged(&self) -> bool {
        self.diverged_rows > 0 && !self.divergence_verified
    }

    pub fn running(&self) -> bool {
        self.heartbeat_age
            .is_some_and(|a| a < Self::ALIVE.as_secs_f64())
    }

    pub async fn get(c: &impl GenericClient, run: &str) -> Result<Option<ApplyStatus>, Error> {
        let row = c
            .query_opt(
                "SELECT origin, pid, extract(epoch FROM clock_timestamp() - heartbeat)::float8,
                        applied_lsn::text, received_lsn::text, source_lsn::text, lag_bytes,
                        lag_seconds, rows_per_second, retained_bytes, last_error,
                        hold_lsn::text, held_lsn::text, stop_requested,
                        (SELECT count(*) FROM pg_prepared_xacts
                          WHERE database = current_database() AND starts_with(gid, origin || '@')),
                        coalesce(d.rows, 0), to_char(d.at, 'YYYY-MM-DD HH24:MI:SS TZ'), d.lsn,
                        coalesce((SELECT v.result = 'equal' AND v.started_at > d.at
                                    FROM bluegreen.verify_runs v
                                   WHERE v.run = a.run AND v.result IN ('equal', 'differ', 'repaired')
                                   ORDER BY v.id DESC LIMIT 1), false),
                        coalesce((to_jsonb(a) ->> 'behind_bytes')::bigint, 0),
                        coalesce((to_jsonb(a) ->> 'behind_seconds')::float8, 0)
                   FROM bluegreen.apply a,
                        -- Through jsonb: a state schema from before version 5 (11 for
                        -- behind_*) lacks the columns until sync migrates it, and status
                        -- and abort still read it.
                        LATERAL (SELECT (to_jsonb(a) ->> 'diverged_rows')::bigint AS rows,
                                        (to_jsonb(a) ->> 'diverged_at')::timestamptz AS at,
                                        to_jsonb(a) ->> 'diverged_lsn' AS lsn) d
                  WHERE a.run = $1",
                &[&run],
            )
            .await
            .map_err(q("read apply status"))?;
        Ok(row.map(|r| ApplyStatus {
            origin: r.get(0),
            pid: r.get(1),
            heartbeat_age: r.get(2),
            applied_lsn: r.get(3),
            received_lsn: r.get(4),
            source_lsn: r.get(5),
            lag_bytes: r.get(6),
            lag_seconds: r.get(7),
            rows_per_second: r.get(8),
            retained_bytes: r.get(9),
            last_error: r.get(10),
            hold_lsn: r.get(11),
            held_lsn: r.get(12),
            stop_requested: r.get(13),
            prepared_parts: r.get(14),
            diverged_rows: r.get(15),
            diverged_at: r.get(16),
            diverged_lsn: r.get(17),
            divergence_verified: r.get(18),
            behind_bytes: r.get(19),
            behind_seconds: r.get(20),
        }))
    }
}

/// Emits the hold message on the source and makes sure it is flushed to WAL (a walsender only
/// sends flushed WAL, and a message outside a transaction is not flushed by itself): a
/// committed transaction with synchronous_commit on flushes everything before its commit.
pub async fn emit_hold_message(source: &tokio_postgres::Client) -> Result<(), Error> {
    emit(source, "hold").await.map(|_| ())
}

/// The content of the hold message that a hold at [`AT_NEXT_MESSAGE`] waits for: other hold
/// messages (a pre-drain round's, still on its way) must not take it.
pub const DRAIN_MESSAGE: &[u8] = b"drain";

/// Emits a drain message (see [`emit_hold_message`]); returns its position (None only from a
/// server that does not answer as PostgreSQL does).
pub async fn emit_drain_message(source: &tokio_postgres::Client) -> Result<Option<Lsn>, Error> {
    emit(source, "drain").await
}

async fn emit(source: &tokio_postgres::Client, content: &str) -> Result<Option<Lsn>, Error> {
    let replies = source
        .simple_query(&format!(
            "BEGIN; SET LOCAL synchronous_commit = on;
                 SELECT pg_logical_emit_message(false, {}, {});
                 SELECT txid_current(); COMMIT;",
            conn::quote_literal(crate::names::HOLD_MESSAGE),
            conn::quote_literal(content)
        ))
        .await
        .map_err(q("mark the source position"))?;
    Ok(replies.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0)?.parse().ok(),
        _ => None,
    }))
}

/// A hold at the next drain message, whatever its position: a requester that must end other
/// sessions on the source before its position counts (cutover) takes the hold first and
/// sends the message ([`emit_drain_message`]) in the same round trip as the rest, and the
/// applier moves the hold to the message's position when it sees it ([`hold_at_message`]).
pub const AT_NEXT_MESSAGE: Lsn = Lsn(u64::MAX);

/// The applier, at a drain message at `lsn`: a hold standing at [`AT_NEXT_MESSAGE`] moves
/// there. False: no such hold stands (none, or one at a known position).
pub async fn hold_at_message(c: &impl GenericClient, run: &str, lsn: Lsn) -> Result<bool, Error> {
    c.execute(
        "UPDATE bluegreen.apply SET hold_lsn = $2 WHERE run = $1 AND hold_lsn = $3",
        &[&run, &lsn, &AT_NEXT_MESSAGE],
    )
    .await
    .map(|n| n == 1)
    .map_err(q("hold at the message"))
}

/// Drops a hold still waiting for its next drain message (see [`AT_NEXT_MESSAGE`]): its
/// requester (a cutover and its watchdog) is gone before sending it. False: it moved or went.
pub async fn drop_unmet_hold(c: &impl GenericClient, run: &str) -> Result<bool, Error> {
    c.execute(
        "UPDATE bluegreen.apply SET hold_lsn = NULL, held_lsn = NULL
          WHERE run = $1 AND hold_lsn = $2 AND held_lsn IS NULL",
        &[&run, &AT_NEXT_MESSAGE],
    )
    .await
    .map(|n| n == 1)
    .map_err(q("drop an abandoned hold"))
}

/// Asks the applier to hold at `lsn` unless another process holds it already; false then.
/// A hold is one process's at a time: verify and cutover each take it this way, so neither
/// moves or releases the other's.
pub async fn take_hold(c: &impl GenericClient, run: &str, lsn: Lsn) -> Result<bool, Error> {
    c.execute(
        "UPDATE bluegreen.apply SET hold_lsn = $2, held_lsn = NULL
          WHERE run = $1 AND hold_lsn IS NULL",
        &[&run, &lsn],
    )
    .await
    .map(|n| n == 1)
    .map_err(q("request hold"))
}

/// Moves the hold this process has taken to `lsn` (see the module comment).
pub async fn request_hold(c: &impl GenericClient, run: &str, lsn: Lsn) -> Result<(), Error> {
    c.execute(
        "UPDATE bluegreen.apply SET hold_lsn = $2, held_lsn = NULL WHERE run = $1",
        &[&run, &lsn],
    )
    .await
    .map(|_| ())
    .map_err(q("request hold"))
}

/// Lets the applier go on after a hold.
pub async fn release(c: &impl GenericClient, run: &str) -> Result<(), Error> {
    c.execute(
        "UPDATE bluegreen.apply SET hold_lsn = NULL, held_lsn = NULL WHERE run = $1",
        &[&run],
    )
    .await
    .map(|_| ())
    .map_err(q("release hold"))
}

/// Asks a running sync to finish its current group and exit.
pub async fn request_stop(c: &impl GenericClient, run: &str) -> Result<(), Error> {
    c.execute(
        "UPDATE bluegreen.apply SET stop_requested = true WHERE run = $1",
        &[&run],
    )
    .await
    .map(|_| ())
    .map_err(q("request stop"))
}

/// Names of the prepared parts of groups that appliers of `origin` prepared in this
/// database (`<origin>@<group end LSN>#<session>`).
pub async fn prepared_parts(c: &impl GenericClient, origin: &str) -> Result<Vec<String>, Error> {
    let rows = c
        .query(
            "SELECT gid FROM pg_prepared_xacts
              WHERE database = current_database() AND starts_with(gid, $1)",
            &[&crate::names::prepared_part_prefix(origin)],
        )
        .await
        .map_err(q("list prepared transactions"))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Rolls back the prepared parts of groups that an applier of `origin` left behind (it was
/// killed between preparing a group's parts on its further sessions and committing them):
/// once the run is removed nothing would finish them, and each holds row locks and the
/// target's xmin horizon. Returns how many there were.
pub async fn rollback_prepared(c: &impl GenericClient, origin: &str) -> Result<usize, Error> {
    let parts = prepared_parts(c, origin).await?;
    for gid in &parts {
        c.batch_execute(&format!("ROLLBACK PREPARED {}", conn::quote_literal(gid)))
            .await
            .map_err(q("roll back a prepared transaction"))?;
    }
    Ok(parts.len())
}

/// Records that `rows` UPDATEs or DELETEs found no row on the target: green has diverged
/// from the source. The count only grows; a clean verify started later clears the guardrail.
pub async fn record_divergence(
    c: &impl GenericClient,
    run: &str,
    rows: i64,
    lsn: Lsn,
) -> Result<(), Error> {
    c.execute(
        "UPDATE bluegreen.apply
            SET diverged_rows = diverged_rows + $2, diverged_at = clock_timestamp(),
                diverged_lsn = $3
          WHERE run = $1",
        &[&run, &rows, &lsn],
    )
    .await
    .map(|_| ())
    .map_err(q("record a divergence"))
}

/// The applier registers its row when sync starts: requests of an earlier process (a stop,
/// a hold nobody will release) are cleared.
pub async fn register(c: &impl GenericClient, run: &str, origin: &str) -> Result<(), Error> {
    c.execute(
        "INSERT INTO bluegreen.apply (run, origin) VALUES ($1, $2)
         ON CONFLICT (run) DO UPDATE SET stop_requested = false, hold_lsn = NULL, held_lsn = NULL",
        &[&run, &origin],
    )
    .await
    .map(|_| ())
    .map_err(q("register the applier"))
}

/// What other processes ask of the applier: the hold position, and whether to stop.
pub async fn requests(
    c: &impl GenericClient,
    run: &str,
) -> Result<Option<(Option<Lsn>, bool)>, Error> {
    Ok(c.query_opt(
        "SELECT hold_lsn, stop_requested FROM bluegreen.apply WHERE run = $1",
        &[&run],
    )
    .await
    .map_err(q("read the applier's requests"))?
    .map(|r| (r.get(0), r.get(1))))
}

/// The applier's heartbeat, written every second while it runs.
#[derive(Debug, Clone, Default)]
pub struct Heartbeat {
    pub pid: Option<i32>,
    pub applied: Lsn,
    pub received: Lsn,
    pub source: Option<Lsn>,
    pub lag_bytes: Option<i64>,
    pub lag_seconds: f64,
    pub rows_per_second: f64,
    pub retained_bytes: Option<i64>,
    pub last_error: Option<String>,
    /// Source WAL applied by groups that started with WAL waiting, and the seconds they
    /// took: sync's apply capacity (this process's, cumulative).
    pub behind_bytes: i64,
    pub behind_seconds: f64,
}

pub async fn heartbeat(c: &impl GenericClient, run: &str, h: &Heartbeat) -> Result<(), Error> {
    c.execute(
        "UPDATE bluegreen.apply
            SET heartbeat = clock_timestamp(), pid = $2, applied_lsn = $3, received_lsn = $4,
                source_lsn = $5, lag_bytes = $6, lag_seconds = $7, rows_per_second = $8,
                retained_bytes = $9, last_error = $10,
                last_error_at = CASE WHEN $10::text IS NULL THEN NULL
                                     ELSE coalesce(last_error_at, clock_timestamp()) END,
                behind_bytes = $11, behind_seconds = $12
          WHERE run = $1",
        &[
            &run,
            &h.pid,
            &h.applied,
            &h.received,
            &h.source,
            &h.lag_bytes,
            &h.lag_seconds,
            &h.rows_per_second,
            &h.retained_bytes,
            &h.last_error,
            &h.behind_bytes,
            &h.behind_seconds,
        ],
    )
    .await
    .map(|_| ())
    .map_err(q("write the applier's heartbeat"))
}

/// The applier has stopped: no heartbeat, no pid, and the error that ended it (if any) kept.
pub async fn gone(c: &impl GenericClient, run: &str, fatal: Option<&str>) -> Result<(), Error> {
    c.execute(
        "UPDATE bluegreen.apply SET heartbeat = NULL, pid = NULL,
                last_error = coalesce($2, last_error),
                last_error_at = CASE WHEN $2::text IS NULL THEN last_error_at
                                     ELSE clock_timestamp() END
          WHERE run = $1",
        &[&run, &fatal],
    )
    .await
    .map(|_| ())
    .map_err(q("mark the applier stopped"))
}

/// The applier holds at `hold` (every transaction committed before it applied, up to
/// `applied`): the requester sees `held_lsn = hold_lsn`. False when the request moved.
pub async fn mark_held(
    c: &impl GenericClient,
    run: &str,
    hold: Lsn,
    applied: Lsn,
) -> Result<bool, Error> {
    c.execute(
        "UPDATE bluegreen.apply SET held_lsn = hold_lsn, applied_lsn = $3
          WHERE run = $1 AND hold_lsn = $2",
        &[&run, &hold, &applied],
    )
    .await
    .map(|n| n == 1)
    .map_err(q("report the hold"))
}
