//! The target side of apply: one session with the run's replication origin set up, in which
//! groups of source transactions commit together with the origin advanced to the last one's
//! end LSN (`pg_replication_origin_xact_setup`): applied changes and applied position are
//! one atomic fact, so a crash never loses or repeats a transaction.
//!
//! Runs of inserts into one table become one `COPY … FROM STDIN`, in binary where every
//! column's text can be read into its binary form (see `binary`). Updates and
//! deletes of a table where row order cannot matter are merged into their net effect per key
//! and applied many rows per statement (see `net_changes`), in a task of their own while the next
//! changes are decoded; the others are prepared statements sent pipelined. Batches go out as
//! they fill, so a transaction of any size streams through in bounded memory.
//!
//! A group's last net changes and its COMMIT also run in that task: the next group is
//! decoded meanwhile (its BEGIN waits until it has something to send), so the target is not
//! left idle at every commit. The group's position counts as applied only once that task
//! has succeeded (`take_applied`).
//!
//! Where the target allows prepared transactions, net changes are split by a hash of their
//! key over further sessions (`Second`), so updates and deletes use more than one target
//! core. Each of those sessions' part of a group is prepared (two-phase) under a name that
//! holds the origin and the group's end LSN, the main session commits with the origin
//! advanced, then commits the prepared parts. A crash in between leaves prepared parts that
//! the next session commits if the origin reached their LSN and rolls back otherwise
//! (`resolve_prepared`): still all of a group or none of it.

mod changes;
mod copy_batch;
mod inflight;
mod net_work;
mod rows;
mod second;
mod touched;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::SinkExt;
use tokio::task::JoinHandle;
use tokio_postgres::types::{to_sql_checked, IsNull, Kind, ToSql, Type};
use tokio_postgres::{Client, Statement};
use wire::pgoutput::{OldTuple, Tuple, Value};
use wire::Lsn;

use crate::binary;
use crate::error::{sql, Error};
use crate::net_changes::{self as net, NetChanges, NetOp, Taken};
use crate::relmap::TargetRel;

pub use inflight::Applied;
pub use second::prepared_transactions_allowed;

use copy_batch::*;
use inflight::*;
use net_work::*;
use rows::*;
use second::*;
pub use touched::Touched;

/// Sessions that apply net changes at most (the main one included).
pub const MAX_SESSIONS: usize = 8;

/// Source transactions applied but not yet committed on the target: everything that lives
/// as long as one group, reset in one place (its commit takes it).
#[derive(Debug, Default)]
pub struct Group {
    pub txns: u64,
    pub rows: u64,
    pub bytes: u64,
    pub started: Option<Instant>,
    /// End LSN and commit time (µs since 2000) of the last source transaction in the group.
    pub last: Option<(Lsn, i64)>,
    /// A later source position (a message past the last transaction) that is applied once
    /// the group commits.
    pub mark: Option<Lsn>,
    /// The group may use the further sessions (decided at its first change).
    parallel: Option<bool>,
    /// Tables the main session wrote in this group other than by net changes: their later
    /// net changes stay on it (the further sessions cannot see its uncommitted rows).
    main_wrote: HashSet<String>,
    /// Keys the further sessions took in this group.
    second_keys: usize,
    /// Keys written per table, recorded with the group's commit (for incremental verify).
    pub touched: Touched,
}

pub struct Applier {
    client: Arc<Client>,
    origin: String,
    statements: HashMap<String, Statement>,
    seconds: Vec<Second>,
    /// Whether source transactions from now on may use them (see `source_txn`), and the
    /// commit LSN of the one at hand.
    parallel_allowed: bool,
    txn_lsn: Lsn,
    in_tx: bool,
    copy: Option<CopyBatch>,
    execs: Vec<(Statement, Vec<Option<String>>)>,
    net: NetChanges,
    /// Tables whose inserts go as text after a value did not read as binary.
    text_copy: HashSet<String>,
    /// Inserts or net changes (and maybe a commit) sent last, still running; whatever uses
    /// the connection next waits for them first, so every row's changes stay in order.
    inflight: Option<JoinHandle<Result<Done, Error>>>,
    /// The work in flight includes inserts or net changes, not only a commit.
    inflight_work: bool,
    /// See `set_stream_backlogged`.
    stream_backlogged: bool,
    /// Groups committed, not yet taken by `take_applied`.
    applied: Option<Applied>,
    pub group: Group,
    /// UPDATE/DELETE that found no row on the target (the target diverged).
    pub missing_rows: u64,
    /// Record each group's keys (`Touched`) in the target's state schema: only where the
    /// target holds it (not reverse sync into blue, whose state lives on green).
    journal: bool,
}

impl Applier {
    /// Opens the apply session: origin set up, triggers and foreign keys off for applied
    /// changes (they fired on the source already), writable even where cutover fenced the
    /// database read-only (reverse sync into blue), net changes joined to their table by
    /// key lookups (never a scan of a big table for a batch of rows), and the source's output
    /// settings, so text values read back exactly as the source printed them.
    ///
    /// `seconds` are the further sessions for net changes (see `Second`): the caller opens
    /// them only where the target allows prepared transactions.
    pub async fn open(
        client: Client,
        seconds: Vec<Client>,
        origin: &str,
        output_settings: &str,
    ) -> Result<Applier, Error> {
        let settings = format!(
            "SET session_replication_role = replica; SET statement_timeout = 0; \
             SET lock_timeout = 0; SET idle_in_transaction_session_timeout = 0; \
             SET default_transaction_read_only = off; \
             SET enable_hashjoin = off; SET enable_mergejoin = off; {output_settings}"
        );
        for c in std::iter::once(&client).chain(&seconds) {
            c.batch_execute(&settings)
                .await
                .map_err(sql("target", "apply session settings"))?;
        }
        client
            .execute(
                "SELECT pg_replication_origin_create($1)
                  WHERE NOT EXISTS (SELECT 1 FROM pg_replication_origin WHERE roname = $1)",
                &[&origin],
            )
            .await
            .map_err(sql("target", "create the replication origin"))?;
        // A session that just ended may still hold the origin for a moment.
        let mut tries = 0;
        while let Err(e) = client
            .execute("SELECT pg_replication_origin_session_setup($1)", &[&origin])
            .await
        {
            tries += 1;
            if e.code() != Some(&tokio_postgres::error::SqlState::OBJECT_IN_USE) || tries > 50 {
                return Err(sql("target", "set up the replication origin")(e));
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        // Only now: the origin is this session's alone, so no other applier of the run is
        // still committing what it prepared.
        resolve_prepared(&client, origin).await?;
        Ok(Applier {
            client: Arc::new(client),
            origin: origin.to_string(),
            statements: HashMap::new(),
            seconds: seconds
                .into_iter()
                .map(|c| Second {
                    client: Arc::new(c),
                    statements: HashMap::new(),
                    in_tx: false,
                    keys: HashMap::new(),
                })
                .collect(),
            parallel_allowed: true,
            txn_lsn: Lsn(0),
            in_tx: false,
            copy: None,
            execs: Vec::new(),
            net: NetChanges::default(),
            text_copy: HashSet::new(),
            inflight: None,
            inflight_work: false,
            stream_backlogged: false,
            applied: None,
            group: Group::default(),
            missing_rows: 0,
            journal: true,
        })
    }

    /// Whether groups record their keys for incremental verify (see `journal`).
    pub fn set_journal(&mut self, on: bool) {
        self.journal = on;
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Inserts or net changes are still running on the target (a commit in flight does not
    /// count: the next group's commit can follow it at once).
    pub fn busy(&self) -> bool {
        self.inflight_work && self.inflight.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Waits for the work in flight.
    async fn settle(&mut self) -> Result<(), Error> {
        if let Some(task) = self.inflight.take() {
            let done = join(task).await?;
            self.missing_rows += done.missing;
            self.applied = Applied::merge(self.applied, done.applied);
        }
        Ok(())
    }

    /// The groups committed since the last call (merged into one position), once their
    /// commit has succeeded; work that has finished is collected without waiting.
    pub async fn take_applied(&mut self) -> Result<Option<Applied>, Error> {
        if self.inflight.as_ref().is_some_and(JoinHandle::is_finished) {
            self.settle().await?;
        }
        Ok(self.applied.take())
    }

    /// Opens the target transaction, when something is about to be sent.
    async fn begin(&mut self) -> Result<(), Error> {
        self.settle().await?;
        if !self.in_tx {
            self.client
                .batch_execute("BEGIN")
                .await
                .map_err(sql("target", "begin"))?;
            self.in_tx = true;
        }
        Ok(())
    }
    /// A change joins the group (the group's age counts from its first change, and whether
    /// it uses the further sessions is decided then).
    fn touch(&mut self) {
        self.group.started.get_or_insert_with(Instant::now);
        let parallel = self.parallel_allowed && !self.seconds.is_empty();
        self.group.parallel.get_or_insert(parallel);
    }

    /// A source transaction begins: its commit LSN names it if it must be replayed, and
    /// `parallel` says whether a group that starts with it may use the further sessions.
    pub fn source_txn(&mut self, commit_lsn: Lsn, parallel: bool) {
        self.txn_lsn = commit_lsn;
        self.parallel_allowed = parallel;
    }

    /// Sessions that apply net changes (the main one included).
    pub fn sessions(&self) -> usize {
        1 + self.seconds.len()
    }
    /// The source describes a table again: where a further session changed its rows in this
    /// group, the group is replayed over one session (a new key definition would no longer
    /// find the rows that session holds).
    pub fn relation_changed(&self, rel: &TargetRel) -> Result<(), Error> {
        if self.held(&rel.qualified) {
            return Err(Error::Replay {
                table: rel.display.clone(),
                lsn: self.txn_lsn,
            });
        }
        Ok(())
    }

    /// The main session is about to write `rel` other than by net changes, at `keys` (None:
    /// a key that is not a plain value, or the whole table): fails when a further session
    /// changed one of them in this group (the group is then replayed over one session).
    fn main_writes(
        &mut self,
        rel: &TargetRel,
        keys: impl FnOnce() -> Vec<Option<Vec<Bytes>>>,
    ) -> Result<(), Error> {
        if self.group.parallel != Some(true) || !rel.batchable {
            return Ok(());
        }
        let table = rel.qualified.as_str();
        let held = self.held(table)
            && keys().iter().any(|k| {
                k.as_ref()
                    .is_none_or(|k| self.holder(table, key_hash(k)).is_some())
            });
        if held {
            return Err(Error::Replay {
                table: rel.display.clone(),
                lsn: self.txn_lsn,
            });
        }
        if !self.group.main_wrote.contains(table) {
            self.group.main_wrote.insert(table.to_string());
        }
        Ok(())
    }
    /// Whether the stream's read-ahead is mostly full: then inserts' COPY runs in flight.
    pub fn set_stream_backlogged(&mut self, backlogged: bool) {
        self.stream_backlogged = backlogged;
    }

    /// Sends everything queued and waits for it, in an order that keeps every row's changes
    /// in sequence: inserts (a net update may be of a row inserted in the group), net
    /// changes, then the row-by-row statements (each queued only after the net changes
    /// before it went out).
    pub async fn flush(&mut self) -> Result<(), Error> {
        self.flush_copy().await?;
        self.flush_net().await?;
        self.settle().await?;
        self.flush_execs().await
    }
    /// Everything before `lsn` has been received: it is applied with the group.
    pub fn mark(&mut self, lsn: Lsn) {
        self.group.mark = self.group.mark.max(Some(lsn));
    }

    /// A source transaction of the group ended (its changes are all queued).
    pub fn end_source_txn(&mut self, end_lsn: Lsn, commit_time: i64) {
        self.group.txns += 1;
        self.group.last = Some((end_lsn, commit_time));
    }

    /// Commits the group with the origin advanced to its last transaction's end; the
    /// position applied is that end or the group's mark. Its last net changes and the COMMIT
    /// run in flight unless `wait`: `take_applied` reports the group once they succeeded.
    pub async fn commit(&mut self, wait: bool) -> Result<(), Error> {
        self.flush_copy().await?;
        self.flush_execs().await?;
        let work = self.net_work().await?;
        if !work.is_empty() {
            self.begin().await?;
        }
        let group = std::mem::take(&mut self.group);
        let applied = group
            .last
            .map(|(lsn, _)| lsn)
            .max(group.mark)
            .map(|lsn| Applied {
                lsn,
                rows: group.rows,
            });
        let mut prepare = Vec::new();
        for (i, second) in self.seconds.iter_mut().enumerate() {
            if std::mem::take(&mut second.in_tx) {
                // Changes belong to source transactions, so a group with some has ended one.
                let (lsn, _) = group.last.ok_or_else(|| {
                    Error::Internal("a group with changes ended no source transaction".into())
                })?;
                prepare.push((
                    second.client.clone(),
                    state::names::prepared_part(&self.origin, lsn, i + 1),
                ));
            }
            second.keys.clear();
        }
        if self.in_tx || applied.is_some() {
            self.run(
                work,
                Some(Commit {
                    touched: (self.journal && !group.touched.is_empty())
                        .then(|| (self.origin.clone(), group.touched.to_json())),
                    in_tx: self.in_tx,
                    last: group.last,
                    applied,
                    prepare,
                }),
            );
            self.in_tx = false;
        }
        if wait {
            self.settle().await?;
        }
        Ok(())
    }
}
