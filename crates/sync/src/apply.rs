//! The target side of apply: one session with the run's replication origin set up, in which
//! groups of source transactions commit together with the origin advanced to the last one's
//! end LSN (`pg_replication_origin_xact_setup`): applied changes and applied position are
//! one atomic fact, so a crash never loses or repeats a transaction.
//!
//! Runs of inserts into one table become one `COPY … FROM STDIN`, in binary where every
//! column's text can be read into its binary form (see `binary`). Updates and
//! deletes of a table where row order cannot matter are merged into their net effect per key
//! and applied many rows per statement (see `net`), in a task of their own while the next
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
use crate::net::{self, NetChanges, NetOp, Taken};
use crate::relmap::TargetRel;

/// Insert rows are sent as one COPY once this much text is buffered. (A COPY kept open
/// across pieces was tried: no faster, and the walsender and client then spend more CPU on
/// smaller reads and writes.)
const COPY_BATCH_BYTES: usize = 1 << 20;
/// Updates and deletes in flight at once on the pipelined connection.
const PIPELINE: usize = 256;
/// Rows of net updates and deletes that go out together.
const NET_ROWS: usize = 10_000;
/// Sessions that apply net changes at most (the main one included).
pub const MAX_SESSIONS: usize = 8;

/// A group committed on the target: the source position it applied and its rows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Applied {
    pub lsn: Lsn,
    pub rows: u64,
}

/// What a task on the connection finished: rows its updates and deletes missed, and the
/// group it committed, if it ended one.
#[derive(Debug, Default)]
struct Done {
    missing: u64,
    applied: Option<Applied>,
}

impl Applied {
    /// Two groups' commits as one report.
    fn merge(a: Option<Applied>, b: Option<Applied>) -> Option<Applied> {
        match (a, b) {
            (Some(a), Some(b)) => Some(Applied {
                lsn: a.lsn.max(b.lsn),
                rows: a.rows + b.rows,
            }),
            (a, b) => a.or(b),
        }
    }
}

/// One net statement for the task: statement, its array parameters, rows, table.
type NetStatement = (Statement, Vec<TextArray>, usize, String);

/// What a task on the connection sends before the group's commit, if any.
enum Work {
    /// A batch of inserts: the COPY statement, its data, what to call it in an error.
    Copy(String, Bytes, String),
    /// Net statements for the main session, and for each further session its client,
    /// whether its transaction must begin, and its statements (all run at once).
    Net(
        Vec<NetStatement>,
        Vec<(Arc<Client>, bool, Vec<NetStatement>)>,
    ),
}

/// A further apply session: net changes whose key hashes to it, in a transaction of its own
/// that the group's commit prepares and commits after the main session's.
struct Second {
    client: Arc<Client>,
    statements: HashMap<String, Statement>,
    /// Its transaction has begun (or will, in the task that has its first work).
    in_tx: bool,
    /// Hashes of the keys it changed in its open transaction, per table (by name: a table's
    /// description may be sent again within a group): the main session must not touch them
    /// before the group commits, or it would wait for their row locks while the group waits
    /// for it.
    keys: HashMap<String, HashSet<u64>>,
}

/// Keys the further sessions may take per group; past that, new keys stay on the main
/// session, so a source transaction of any size keeps the sets bounded.
const SECOND_KEYS: usize = 200_000;

fn key_hash(key: &[Bytes]) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for part in key {
        h.update(&(part.len() as u64).to_le_bytes());
        h.update(part);
    }
    h.digest()
}

/// How many prepared transactions the target can hold: each further session prepares one
/// per group (the setting needs a server restart, so it is read once per session).
pub async fn prepared_transactions_allowed(client: &Client) -> Result<usize, Error> {
    let n: i32 = client
        .query_one(
            "SELECT current_setting('max_prepared_transactions')::int",
            &[],
        )
        .await
        .map_err(sql("target", "read max_prepared_transactions"))?
        .get(0);
    Ok(usize::try_from(n).unwrap_or(0))
}

/// Source transactions applied but not yet committed on the target.
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
}

struct CopyBatch {
    rel: Arc<TargetRel>,
    buf: BytesMut,
    /// Binary COPY fields (see `binary`), else COPY text.
    binary: bool,
    /// Where each row starts in `buf`, with a hash of its value of the table's
    /// `insert_order` column (a hash, not the value: holding the value would keep the
    /// stream's read buffers alive until the batch goes out).
    rows: Vec<(Option<u64>, usize)>,
}

/// What a batch's rows are grouped by: a hash of the `insert_order` column's value (None
/// for NULL, which sorts first).
fn order_key(value: Option<&Value>) -> Option<u64> {
    match value {
        Some(Value::Text(b)) => Some(xxhash_rust::xxh3::xxh3_64(b)),
        _ => None,
    }
}

impl CopyBatch {
    /// Rows that share a value of the table's `insert_order` column go out next to each
    /// other (in arrival order among themselves), so the target inserts them into the same
    /// index pages one after another rather than all over the index. (By hand: 500,000
    /// metric_hist rows arriving interleaved across 280 metrics, COPY into a 3M-row table
    /// took 3.2-3.7 s as they came, 2.3-2.4 s grouped in 10,000-row batches.)
    fn group_rows(&mut self) {
        if self.rows.windows(2).all(|w| w[0].0 <= w[1].0) {
            return;
        }
        let end = self.buf.len();
        let mut spans: Vec<(Option<u64>, std::ops::Range<usize>)> = self
            .rows
            .iter()
            .enumerate()
            .map(|(i, (key, start))| (*key, *start..self.rows.get(i + 1).map_or(end, |r| r.1)))
            .collect();
        spans.sort_by_key(|s| s.0);
        let mut buf = BytesMut::with_capacity(self.buf.capacity());
        buf.extend_from_slice(&self.buf[..self.rows[0].1]);
        for (_, span) in spans {
            buf.extend_from_slice(&self.buf[span]);
        }
        self.buf = buf;
    }
}

pub struct Applier {
    client: Arc<Client>,
    origin: String,
    statements: HashMap<String, Statement>,
    seconds: Vec<Second>,
    /// The group at hand may use the further sessions (decided at its first change).
    parallel: Option<bool>,
    /// Whether source transactions from now on may use them (see `source_txn`), and the
    /// commit LSN of the one at hand.
    parallel_allowed: bool,
    txn_lsn: Lsn,
    /// Tables the main session wrote in this group other than by net changes: their later
    /// net changes stay on it (the further sessions cannot see its uncommitted rows).
    main_wrote: HashSet<String>,
    /// Keys the further sessions took in this group.
    second_keys: usize,
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
            parallel: None,
            parallel_allowed: true,
            txn_lsn: Lsn(0),
            main_wrote: HashSet::new(),
            second_keys: 0,
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
        })
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
        self.parallel.get_or_insert(parallel);
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

    /// The further session that changed this key of the table in the group, if any.
    fn holder(&self, table: &str, hash: u64) -> Option<usize> {
        self.seconds
            .iter()
            .position(|s| s.keys.get(table).is_some_and(|k| k.contains(&hash)))
    }

    /// Whether a further session changed rows of the table in this group.
    fn held(&self, table: &str) -> bool {
        self.seconds.iter().any(|s| s.keys.contains_key(table))
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
        if self.parallel != Some(true) || !rel.batchable {
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
        if !self.main_wrote.contains(table) {
            self.main_wrote.insert(table.to_string());
        }
        Ok(())
    }

    pub async fn insert(&mut self, rel: &Arc<TargetRel>, new: &Tuple) -> Result<(), Error> {
        self.touch();
        if !self.execs.is_empty() {
            self.flush_execs().await?;
        }
        // A key the group deleted may come back: the delete goes first.
        if self.net.has_table(rel) && net::key_of(rel, new).is_some_and(|k| self.net.holds(rel, &k))
        {
            self.flush().await?;
        }
        self.main_writes(rel, || vec![net::key_of(rel, new)])?;
        let (before, after) = loop {
            let convs = rel
                .copy_binary
                .as_ref()
                .filter(|_| !self.text_copy.contains(&rel.qualified));
            let binary = convs.is_some();
            if self
                .copy
                .as_ref()
                .is_some_and(|c| !Arc::ptr_eq(&c.rel, rel) || c.binary != binary)
            {
                self.flush_copy().await?;
            }
            let batch = self.copy.get_or_insert_with(|| {
                let mut buf = BytesMut::with_capacity(COPY_BATCH_BYTES + 4096);
                if binary {
                    binary::header(&mut buf);
                }
                CopyBatch {
                    rel: rel.clone(),
                    buf,
                    binary,
                    rows: Vec::new(),
                }
            });
            let before = batch.buf.len();
            match convs {
                Some(convs) => {
                    if encode_binary_row(&mut batch.buf, new, convs) {
                        break (before, batch.buf.len());
                    }
                    // Not in the form PostgreSQL prints: this table's inserts go as text.
                    batch.buf.truncate(before);
                    tracing::info!(
                        table = %rel.display,
                        "a value is not in the form binary COPY reads: this table's inserts go as text"
                    );
                    self.text_copy.insert(rel.qualified.clone());
                }
                None => {
                    encode_copy_row(&mut batch.buf, new, &rel.display)?;
                    break (before, batch.buf.len());
                }
            }
        };
        if let (Some(batch), Some(col)) = (self.copy.as_mut(), rel.insert_order) {
            batch.rows.push((order_key(new.get(col)), before));
        }
        self.group.rows += 1;
        self.group.bytes += (after - before) as u64;
        if after >= COPY_BATCH_BYTES {
            self.flush_copy().await?;
        }
        Ok(())
    }

    pub async fn update(
        &mut self,
        rel: &Arc<TargetRel>,
        old: Option<&OldTuple>,
        new: &Tuple,
    ) -> Result<(), Error> {
        self.touch();
        if rel.batchable {
            let key = net::key_of(rel, new);
            let old_key = match old {
                Some(o) => net::key_of(rel, o.tuple()),
                None => key.clone(),
            };
            if let Some(k) = key.as_ref().filter(|k| old_key.as_ref() == Some(*k)) {
                let bytes = tuple_bytes(new);
                if self.net_take(|n| n.update(rel, k.clone(), new)).await? {
                    self.group.bytes += bytes;
                    return Ok(());
                }
            }
            // A changed key, or nothing to merge with: in order, row by row.
            self.flush().await?;
            self.main_writes(rel, || vec![key, old_key])?;
        }
        self.flush_copy().await?;
        // SET every column the source sent; an unchanged TOAST value keeps the target's. Not
        // the key when it stays (TimescaleDB refuses to set a unique index's columns in a
        // compressed chunk), nor, under REPLICA IDENTITY FULL, a column that keeps its value.
        // An ALWAYS identity column is left out unless the UPDATE changed it (the old key says
        // so); then it is overridden, the column made BY DEFAULT for the statement.
        let identity = old.map(OldTuple::tuple).unwrap_or(new);
        let mut params: Vec<Option<String>> = Vec::new();
        let mut sets = Vec::new();
        let mut overridden = Vec::new();
        for (i, v) in new.iter().enumerate() {
            if rel.always_identity.get(i) == Some(&true) {
                if identity
                    .get(i)
                    .is_none_or(|was| was == v || *was == Value::Null)
                {
                    continue;
                }
                overridden.push(rel.columns[i].clone());
            } else {
                let stays = match old {
                    None => rel.key.contains(&i),
                    Some(o) => rel.full_identity && o.tuple().get(i) == Some(v),
                };
                if stays {
                    continue;
                }
            }
            if let Some(p) = param(v, &rel.display)? {
                params.push(p);
                sets.push(format!(
                    "{} = ${}::{}",
                    rel.columns[i],
                    params.len(),
                    rel.types[i]
                ));
            }
        }
        if sets.is_empty() {
            return Ok(());
        }
        let filter = self.identity_filter(rel, identity, &mut params)?;
        let sql_text = if rel.full_identity {
            format!(
                "UPDATE {t} SET {s} WHERE ctid = (SELECT ctid FROM {t} WHERE {filter} LIMIT 1)",
                t = rel.qualified,
                s = sets.join(", ")
            )
        } else {
            format!(
                "UPDATE {} SET {} WHERE {filter}",
                rel.qualified,
                sets.join(", ")
            )
        };
        if overridden.is_empty() {
            return self.queue(sql_text, params).await;
        }
        self.with_identity_by_default(rel, &overridden, sql_text, params)
            .await
    }

    /// Runs one UPDATE that changes ALWAYS identity columns, with those columns made
    /// `GENERATED BY DEFAULT` around it inside the group's transaction (an UPDATE may only set
    /// an ALWAYS identity column to DEFAULT; its sequence is left as it is).
    async fn with_identity_by_default(
        &mut self,
        rel: &TargetRel,
        columns: &[String],
        update: String,
        params: Vec<Option<String>>,
    ) -> Result<(), Error> {
        let alter = |how: &str| {
            let each: Vec<String> = columns
                .iter()
                .map(|c| format!("ALTER COLUMN {c} SET GENERATED {how}"))
                .collect();
            format!("ALTER TABLE {} {}", rel.qualified, each.join(", "))
        };
        self.flush_execs().await?;
        self.begin().await?;
        self.client
            .batch_execute(&alter("BY DEFAULT"))
            .await
            .map_err(sql(
                "target",
                format!("let {} take identity values", rel.display),
            ))?;
        self.queue(update, params).await?;
        self.flush_execs().await?;
        self.client
            .batch_execute(&alter("ALWAYS"))
            .await
            .map_err(sql("target", format!("restore {}'s identity", rel.display)))
    }

    pub async fn delete(&mut self, rel: &Arc<TargetRel>, old: &OldTuple) -> Result<(), Error> {
        self.touch();
        if rel.batchable {
            let key = net::key_of(rel, old.tuple());
            if let Some(k) = &key {
                if self.net_take(|n| n.delete(rel, k.clone())).await? {
                    return Ok(());
                }
            }
            self.flush().await?;
            self.main_writes(rel, || vec![key])?;
        }
        self.flush_copy().await?;
        let mut params = Vec::new();
        let filter = self.identity_filter(rel, old.tuple(), &mut params)?;
        let sql_text = if rel.full_identity {
            format!(
                "DELETE FROM {t} WHERE ctid = (SELECT ctid FROM {t} WHERE {filter} LIMIT 1)",
                t = rel.qualified
            )
        } else {
            format!("DELETE FROM {} WHERE {filter}", rel.qualified)
        };
        self.queue(sql_text, params).await
    }

    pub async fn truncate(
        &mut self,
        rels: &[Arc<TargetRel>],
        cascade: bool,
        restart_identity: bool,
    ) -> Result<(), Error> {
        if rels.is_empty() {
            return Ok(());
        }
        self.touch();
        self.flush().await?;
        for rel in rels {
            self.main_writes(rel, || vec![None])?;
        }
        self.begin().await?;
        let names: Vec<&str> = rels.iter().map(|r| r.qualified.as_str()).collect();
        let text = format!(
            "TRUNCATE {}{}{}",
            names.join(", "),
            if restart_identity {
                " RESTART IDENTITY"
            } else {
                ""
            },
            if cascade { " CASCADE" } else { "" }
        );
        self.client
            .batch_execute(&text)
            .await
            .map_err(sql("target", format!("apply {text}")))
    }

    /// `key = $n` on the replica identity: typed equality on a key (index scans); for
    /// REPLICA IDENTITY FULL, every column's printed form, which also matches types without
    /// an equality operator (json) and tells -0 from 0.
    fn identity_filter(
        &self,
        rel: &TargetRel,
        tuple: &Tuple,
        params: &mut Vec<Option<String>>,
    ) -> Result<String, Error> {
        let mut parts = Vec::new();
        for &i in &rel.key {
            let v = tuple.get(i).ok_or_else(|| {
                Error::Protocol(format!(
                    "{}: a change carries fewer columns than the table has",
                    rel.display
                ))
            })?;
            let Some(p) = param(v, &rel.display)? else {
                continue;
            };
            let col = &rel.columns[i];
            match (p, rel.full_identity) {
                (None, _) => parts.push(format!("{col} IS NULL")),
                (Some(p), false) => {
                    params.push(Some(p));
                    parts.push(format!("{col} = ${}::{}", params.len(), rel.types[i]));
                }
                (Some(p), true) => {
                    params.push(Some(p));
                    // format('%s') prints through the type's output function, as pgoutput
                    // did; a ::text cast would not (inet's adds the netmask).
                    parts.push(format!("format('%s', {col}) = ${}", params.len()));
                }
            }
        }
        if parts.is_empty() {
            return Err(Error::Protocol(format!(
                "{}: an UPDATE or DELETE arrived without its replica identity",
                rel.display
            )));
        }
        Ok(parts.join(" AND "))
    }

    /// Hands a change to the net changes; false when it must go row by row instead.
    async fn net_take(
        &mut self,
        take: impl FnOnce(&mut NetChanges) -> Taken,
    ) -> Result<bool, Error> {
        // Row-by-row statements queued before stay before.
        if !self.execs.is_empty() {
            self.flush_execs().await?;
        }
        if take(&mut self.net) == Taken::No {
            return Ok(false);
        }
        self.group.rows += 1;
        if self.net.len() >= NET_ROWS {
            // Inserts before go first; the net changes run while decoding goes on.
            self.flush_copy().await?;
            self.flush_net().await?;
        }
        Ok(true)
    }

    async fn statement(&mut self, sql_text: &str, types: &[Type]) -> Result<Statement, Error> {
        if let Some(s) = self.statements.get(sql_text) {
            return Ok(s.clone());
        }
        self.settle().await?;
        let s = self
            .client
            .prepare_typed(sql_text, types)
            .await
            .map_err(sql("target", format!("prepare {sql_text}")))?;
        self.statements.insert(sql_text.to_string(), s.clone());
        Ok(s)
    }

    async fn queue(&mut self, sql_text: String, params: Vec<Option<String>>) -> Result<(), Error> {
        let stmt = self
            .statement(&sql_text, &vec![Type::TEXT; params.len()])
            .await?;
        self.execs.push((stmt, params));
        self.group.rows += 1;
        if self.execs.len() >= PIPELINE {
            self.flush_execs().await?;
        }
        Ok(())
    }

    async fn flush_execs(&mut self) -> Result<(), Error> {
        if self.execs.is_empty() {
            return Ok(());
        }
        self.begin().await?;
        let execs = std::mem::take(&mut self.execs);
        let client = &self.client;
        // Issued together, the statements are pipelined on the connection and run in order.
        let results = futures_util::future::join_all(execs.iter().map(|(s, p)| {
            let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = p
                .iter()
                .map(|v| v as &(dyn tokio_postgres::types::ToSql + Sync))
                .collect();
            async move { client.execute(s, &params).await }
        }))
        .await;
        for r in results {
            if r.map_err(sql("target", "apply an update or delete"))? == 0 {
                self.missing_rows += 1;
                tracing::warn!("an UPDATE or DELETE found no row on the target: the target differs from the source");
            }
        }
        Ok(())
    }

    /// Sends the batch as one COPY. While the stream is backlogged (the target is what
    /// holds apply back) the COPY runs in a task of its own and the next rows are decoded
    /// meanwhile (the batch after it waits for it); otherwise it is waited for, and the
    /// stream gathers in the socket meanwhile: a reader that never waits for the target makes
    /// the walsender and this process spend up to twice the CPU on a read per message.
    /// (bench/sync.sh --mixes a,b --rows 300000, against always waiting: 100-row
    /// transactions 92k vs 78k rows/s, 1-row transactions 65k vs 60k; always in flight had
    /// cost 1-row transactions 35k vs 55k.)
    async fn flush_copy(&mut self) -> Result<(), Error> {
        let Some(mut batch) = self.copy.take() else {
            return Ok(());
        };
        self.begin().await?;
        batch.group_rows();
        if batch.binary {
            binary::trailer(&mut batch.buf);
        }
        let stmt = format!(
            "COPY {} ({}) FROM STDIN{}",
            batch.rel.qualified,
            batch.rel.columns.join(", "),
            if batch.binary { " (FORMAT binary)" } else { "" }
        );
        let what = format!("apply inserts into {}", batch.rel.display);
        self.run(Work::Copy(stmt, batch.buf.freeze(), what), None);
        if !self.stream_backlogged {
            self.settle().await?;
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

    /// Starts the pending net changes in a task of their own.
    async fn flush_net(&mut self) -> Result<(), Error> {
        let work = self.net_work().await?;
        if work.is_empty() {
            return Ok(());
        }
        self.begin().await?;
        self.run(work, None);
        Ok(())
    }

    /// One DELETE per table, and one UPDATE per table and set of columns sent, for the
    /// pending net changes (emptied), for each session they go to: a key a further session
    /// changed in the group stays with it; a new key goes by its hash, unless the main
    /// session wrote the table in the group or the further sessions hold enough keys.
    async fn net_work(&mut self) -> Result<Work, Error> {
        let n = if self.parallel == Some(true) {
            self.sessions()
        } else {
            1
        };
        let mut parts: Vec<Vec<NetStatement>> = (0..n).map(|_| Vec::new()).collect();
        for table in self.net.take() {
            let rel = table.rel;
            let id = rel.qualified.as_str();
            let mut ops: Vec<Vec<(Vec<Bytes>, NetOp)>> = (0..n).map(|_| Vec::new()).collect();
            for (key, op) in table.ops {
                let mut session = 0;
                if n > 1 {
                    let h = key_hash(&key);
                    session = match self.holder(id, h) {
                        Some(j) => j + 1,
                        None if self.main_wrote.contains(id) || self.second_keys >= SECOND_KEYS => {
                            0
                        }
                        None => (h % n as u64) as usize,
                    };
                    if session > 0 {
                        let keys = &mut self.seconds[session - 1].keys;
                        let new = match keys.get_mut(id) {
                            Some(set) => set.insert(h),
                            None => keys.insert(id.to_string(), HashSet::from([h])).is_none(),
                        };
                        self.second_keys += usize::from(new);
                    }
                }
                ops[session].push((key, op));
            }
            for (session, ops) in ops.into_iter().enumerate() {
                if !ops.is_empty() {
                    let statements = self.table_statements(&rel, ops, session).await?;
                    parts[session].extend(statements);
                }
            }
        }
        let main = parts.remove(0);
        let mut seconds = Vec::new();
        for (second, statements) in self.seconds.iter_mut().zip(parts) {
            if !statements.is_empty() {
                seconds.push((second.client.clone(), !second.in_tx, statements));
                second.in_tx = true;
            }
        }
        Ok(Work::Net(main, seconds))
    }

    /// The net statements of one table's changes, prepared on `session` (0: the main one).
    async fn table_statements(
        &mut self,
        rel: &Arc<TargetRel>,
        ops: Vec<(Vec<Bytes>, NetOp)>,
        session: usize,
    ) -> Result<Vec<NetStatement>, Error> {
        let mut work = Vec::new();
        let mut deletes: Vec<Vec<Bytes>> = Vec::new();
        let mut updates: HashMap<Vec<usize>, Vec<Tuple>> = HashMap::new();
        for (key, op) in ops {
            match op {
                NetOp::Delete => deletes.push(key),
                NetOp::Update(row) => {
                    let cols: Vec<usize> = (0..row.len())
                        .filter(|&i| row[i] != Value::UnchangedToast)
                        .collect();
                    updates.entry(cols).or_default().push(row);
                }
            }
        }
        if !deletes.is_empty() {
            let columns: Vec<TextArray> = (0..rel.key.len())
                .map(|k| TextArray(deletes.iter().map(|key| Some(key[k].clone())).collect()))
                .collect();
            let stmt = self
                .net_statement(&net::delete_sql(rel), columns.len(), session)
                .await?;
            work.push((stmt, columns, deletes.len(), rel.display.clone()));
        }
        for (cols, rows) in updates {
            let columns: Vec<TextArray> = cols
                .iter()
                .map(|&c| {
                    rows.iter()
                        .map(|row| match &row[c] {
                            Value::Text(b) => Ok(Some(b.clone())),
                            Value::Null => Ok(None),
                            _ => Err(Error::Protocol(format!(
                                "{}: a value arrived in binary form, which this applier does not request",
                                rel.display
                            ))),
                        })
                        .collect::<Result<_, _>>()
                        .map(TextArray)
                })
                .collect::<Result<_, _>>()?;
            let stmt = self
                .net_statement(&net::update_sql(rel, &cols), columns.len(), session)
                .await?;
            work.push((stmt, columns, rows.len(), rel.display.clone()));
        }
        Ok(work)
    }

    /// Runs a COPY or net statements, then the group's commit if given, in a task that
    /// first waits for the one before it (so the connection sees everything in order).
    fn run(&mut self, work: Work, commit: Option<Commit>) {
        let client = self.client.clone();
        let before = self.inflight.take();
        let has_work = !work.is_empty();
        self.inflight_work = has_work || (before.is_some() && self.inflight_work);
        self.inflight = Some(tokio::spawn(async move {
            let mut done = match before {
                Some(task) => join(task).await?,
                None => Done::default(),
            };
            match work {
                Work::Copy(stmt, data, what) => {
                    let sink = client
                        .copy_in::<_, Bytes>(&stmt)
                        .await
                        .map_err(sql("target", what.clone()))?;
                    futures_util::pin_mut!(sink);
                    sink.send(data).await.map_err(sql("target", what.clone()))?;
                    sink.as_mut().finish().await.map_err(sql("target", what))?;
                }
                Work::Net(main, seconds) => {
                    let others = futures_util::future::try_join_all(seconds.into_iter().map(
                        |(c, begin, statements)| async move {
                            if begin {
                                c.batch_execute("BEGIN")
                                    .await
                                    .map_err(sql("target", "begin"))?;
                            }
                            apply_net(&c, statements).await
                        },
                    ));
                    let (m, others) = tokio::try_join!(apply_net(&client, main), others)?;
                    done.missing += m + others.iter().sum::<u64>();
                }
            }
            if let Some(c) = commit {
                for (second, gid) in &c.prepare {
                    second
                        .batch_execute(&format!("PREPARE TRANSACTION {}", conn::quote_literal(gid)))
                        .await
                        .map_err(sql(
                            "target",
                            "prepare a further session's part of the group",
                        ))?;
                }
                if c.in_tx {
                    if let Some((lsn, time)) = c.last {
                        client
                            .execute(
                                "SELECT pg_replication_origin_xact_setup($1::text::pg_lsn,
                                        timestamptz '2000-01-01 00:00:00+00' + make_interval(secs => $2::text::float8 / 1e6))",
                                &[&lsn.to_string(), &time.to_string()],
                            )
                            .await
                            .map_err(sql("target", "record the applied position"))?;
                    }
                    client
                        .batch_execute("COMMIT")
                        .await
                        .map_err(sql("target", "commit applied changes"))?;
                }
                // On the main session, whose origin marks them as applied changes too.
                for (_, gid) in &c.prepare {
                    client
                        .batch_execute(&format!("COMMIT PREPARED {}", conn::quote_literal(gid)))
                        .await
                        .map_err(sql(
                            "target",
                            "commit a further session's part of the group",
                        ))?;
                }
                done.applied = Applied::merge(done.applied, c.applied);
            }
            Ok(done)
        }));
    }

    async fn net_statement(
        &mut self,
        sql_text: &str,
        params: usize,
        session: usize,
    ) -> Result<Statement, Error> {
        let types = vec![Type::TEXT_ARRAY; params];
        let Some(second) = session.checked_sub(1).map(|i| &mut self.seconds[i]) else {
            return self.statement(sql_text, &types).await;
        };
        if let Some(s) = second.statements.get(sql_text) {
            return Ok(s.clone());
        }
        // Prepared on a session that may be running a task: the connection queues it.
        let s = second
            .client
            .prepare_typed(sql_text, &types)
            .await
            .map_err(sql("target", format!("prepare {sql_text}")))?;
        second.statements.insert(sql_text.to_string(), s.clone());
        Ok(s)
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
        self.parallel = None;
        self.main_wrote.clear();
        self.second_keys = 0;
        if self.in_tx || applied.is_some() {
            self.run(
                work,
                Some(Commit {
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

/// A group's end, as the task runs it.
struct Commit {
    /// A target transaction is open: advance the origin and COMMIT it.
    in_tx: bool,
    last: Option<(Lsn, i64)>,
    applied: Option<Applied>,
    /// Further sessions with a part of the group, and the name to prepare it under.
    prepare: Vec<(Arc<Client>, String)>,
}

impl Work {
    fn is_empty(&self) -> bool {
        match self {
            Work::Copy(..) => false,
            Work::Net(main, seconds) => main.is_empty() && seconds.is_empty(),
        }
    }
}

/// Runs net statements on one session; returns the rows they found missing.
async fn apply_net(client: &Client, statements: Vec<NetStatement>) -> Result<u64, Error> {
    let mut missing = 0;
    for (stmt, columns, rows, table) in statements {
        let params: Vec<&(dyn ToSql + Sync)> =
            columns.iter().map(|c| c as &(dyn ToSql + Sync)).collect();
        let changed = client.execute(&stmt, &params).await.map_err(sql(
            "target",
            format!("apply updates or deletes to {table}"),
        ))?;
        let m = (rows as u64).saturating_sub(changed);
        if m > 0 {
            tracing::warn!(
                table,
                missing = m,
                "UPDATEs or DELETEs found no row on the target: the target differs from the source"
            );
            missing += m;
        }
    }
    Ok(missing)
}

/// Finishes the prepared parts of groups that an earlier session of this origin left
/// behind (it stopped between PREPARE and COMMIT PREPARED): committed where the origin
/// reached the group's LSN (its main part committed), rolled back otherwise.
async fn resolve_prepared(client: &Client, origin: &str) -> Result<(), Error> {
    let parts = state::prepared_parts(client, origin).await?;
    if parts.is_empty() {
        return Ok(());
    }
    let progress = crate::session::origin_progress(client, origin).await?;
    for gid in parts {
        let Some(lsn) = state::names::prepared_part_lsn(origin, &gid) else {
            continue;
        };
        let commit = progress.is_some_and(|p| p >= lsn);
        let verb = if commit { "COMMIT" } else { "ROLLBACK" };
        tracing::info!(
            gid,
            committed = commit,
            "finishing a prepared part of a group"
        );
        client
            .batch_execute(&format!("{verb} PREPARED {}", conn::quote_literal(&gid)))
            .await
            .map_err(sql("target", format!("finish prepared transaction {gid}")))?;
    }
    Ok(())
}

async fn join(task: JoinHandle<Result<Done, Error>>) -> Result<Done, Error> {
    task.await
        .map_err(|e| Error::Internal(format!("the apply task failed: {e}")))?
}

/// A column value as a text parameter: Some(None) for NULL, None for an unchanged TOAST
/// value (leave the target's).
fn param(v: &Value, table: &str) -> Result<Option<Option<String>>, Error> {
    match v {
        Value::Null => Ok(Some(None)),
        Value::UnchangedToast => Ok(None),
        Value::Text(b) => String::from_utf8(b.to_vec())
            .map(|s| Some(Some(s)))
            .map_err(|_| Error::Protocol(format!("{table}: a value is not valid UTF-8"))),
        Value::Binary(_) => Err(Error::Protocol(format!(
            "{table}: a value arrived in binary form, which this applier does not request"
        ))),
    }
}

/// A text[] parameter built from the values as pgoutput sent them, without copying them
/// (the server checks their encoding, as it does for any text it receives).
#[derive(Debug)]
struct TextArray(Vec<Option<Bytes>>);

impl ToSql for TextArray {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        let Kind::Array(member) = ty.kind() else {
            return Err(format!("{ty} is not an array type").into());
        };
        let dimension = postgres_protocol::types::ArrayDimension {
            len: i32::try_from(self.0.len())?,
            lower_bound: 1,
        };
        postgres_protocol::types::array_to_sql(
            Some(dimension),
            member.oid(),
            self.0.iter(),
            |v, buf| match v {
                Some(b) => {
                    buf.put_slice(b);
                    Ok(postgres_protocol::IsNull::No)
                }
                None => Ok(postgres_protocol::IsNull::Yes),
            },
            out,
        )?;
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::TEXT_ARRAY
    }

    to_sql_checked!();
}

/// Roughly what a row holds, for the group's size limit.
fn tuple_bytes(t: &Tuple) -> u64 {
    t.iter()
        .map(|v| match v {
            Value::Text(b) | Value::Binary(b) => b.len() as u64,
            _ => 0,
        })
        .sum()
}

/// One row of binary COPY fields; false when a value cannot go that way.
fn encode_binary_row(buf: &mut BytesMut, tuple: &Tuple, convs: &[binary::Conv]) -> bool {
    if tuple.len() != convs.len() {
        return false;
    }
    buf.put_i16(convs.len() as i16);
    tuple.iter().zip(convs).all(|(v, c)| match v {
        Value::Null => {
            buf.put_i32(-1);
            true
        }
        Value::Text(b) => c.encode(b, buf),
        Value::UnchangedToast | Value::Binary(_) => false,
    })
}

/// One row in COPY text format.
fn encode_copy_row(buf: &mut BytesMut, tuple: &Tuple, table: &str) -> Result<(), Error> {
    for (i, v) in tuple.iter().enumerate() {
        if i > 0 {
            buf.put_u8(b'\t');
        }
        match v {
            Value::Null => buf.put_slice(b"\\N"),
            Value::Text(b) => {
                for &c in b.iter() {
                    match c {
                        b'\\' => buf.put_slice(b"\\\\"),
                        b'\n' => buf.put_slice(b"\\n"),
                        b'\r' => buf.put_slice(b"\\r"),
                        b'\t' => buf.put_slice(b"\\t"),
                        c => buf.put_u8(c),
                    }
                }
            }
            Value::UnchangedToast | Value::Binary(_) => {
                return Err(Error::Protocol(format!(
                    "{table}: an INSERT carried an unchanged-TOAST or binary value"
                )))
            }
        }
    }
    buf.put_u8(b'\n');
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_batches_group_rows_by_the_order_column_keeping_arrival_order_within() {
        let rel = Arc::new(TargetRel {
            qualified: "\"s\".\"t\"".into(),
            display: "s.t".into(),
            columns: vec!["\"m\"".into(), "\"v\"".into()],
            types: vec!["text".into(), "text".into()],
            always_identity: vec![false, false],
            key: vec![],
            full_identity: true,
            applies_from: Lsn(0),
            copy_binary: None,
            batchable: false,
            insert_order: Some(0),
        });
        let mut batch = CopyBatch {
            rel,
            buf: BytesMut::from(&b"HEAD"[..]),
            binary: false,
            rows: Vec::new(),
        };
        for (m, v) in [("b", "1"), ("a", "2"), (r"\N", "3"), ("b", "4"), ("a", "5")] {
            let row = vec![
                if m == r"\N" {
                    Value::Null
                } else {
                    Value::Text(Bytes::from(m))
                },
                Value::Text(Bytes::from(v)),
            ];
            batch.rows.push((order_key(row.first()), batch.buf.len()));
            encode_copy_row(&mut batch.buf, &row, "s.t").unwrap();
        }
        batch.group_rows();
        // NULLs first, then each value's rows in arrival order (values in hash order).
        let key = |v: &'static str| order_key(Some(&Value::Text(Bytes::from(v))));
        let (a, b) = (key("a"), key("b"));
        let expected: &[u8] = if a < b {
            b"HEAD\\N\t3\na\t2\na\t5\nb\t1\nb\t4\n"
        } else {
            b"HEAD\\N\t3\nb\t1\nb\t4\na\t2\na\t5\n"
        };
        assert_eq!(&batch.buf[..], expected);
    }

    #[test]
    fn copy_text_escapes() {
        let mut buf = BytesMut::new();
        let row = vec![
            Value::Text(Bytes::from_static(b"a\tb\\c\nd\re")),
            Value::Null,
            Value::Text(Bytes::from_static(b"\\N")),
        ];
        encode_copy_row(&mut buf, &row, "t").unwrap();
        assert_eq!(&buf[..], b"a\\tb\\\\c\\nd\\re\t\\N\t\\\\N\n");
    }
}
