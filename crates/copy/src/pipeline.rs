//! One pool of workers for everything after the schema: data chunks, each table's keys and
//! indexes as soon as its data is in (while other tables still copy), ANALYZE, then foreign
//! keys, triggers and the rest, then materialized views. `schedule` decides the order; here
//! the tasks run, each on the worker's own sessions.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use catalog::{Plan, Table};
use conn::{qualified, ConnSpec};
use state::{Chunk, PostDataItem};
use tokio::sync::Notify;
use tokio_postgres::Client;

use crate::data::{self, DataConns, Snapshot};
use crate::error::{sql, Error};
use crate::postdata::{self, Outcome};
use crate::progress::Counters;
use crate::schedule::{self, ChunkEnd, Key, Mode, Next, Sched, Step, TableState, Task};

pub struct Inputs<'a> {
    pub plan: &'a Plan,
    pub source: &'a ConnSpec,
    pub target: &'a ConnSpec,
    pub run: &'a str,
    pub jobs: usize,
    /// pg_dump's session settings for post-data statements.
    pub preamble: String,
    /// While the data phase lasts: the snapshot chunks are read at, and the replication
    /// connection that exported it (closed once every chunk is in).
    pub snapshot: Option<Snapshot>,
    pub exporter: Option<wire::ExportedSnapshot>,
    pub counters: Arc<Counters>,
    pub role: Role,
    /// This process, as chunk and item rows record who did them.
    pub by: String,
}

/// Which side of a copy this process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The `copy` that planned the run: it ends the data phase (sequences) and finishes the
    /// run.
    Leader,
    /// A `copy --join` worker: chunks and post-data items (ANALYZE among them) only.
    Worker,
}

/// What the pipeline saw, for the audit log.
#[derive(Debug, Default)]
pub struct Report {
    /// When the last chunk was in (None: the data phase was over before this process).
    pub data_seconds: Option<f64>,
    /// Post-data items built while data was still being copied.
    pub items_during_data: usize,
    pub analyze_seconds: f64,
}

struct Shared<'a> {
    inputs: Inputs<'a>,
    tables: HashMap<Key, Table>,
    /// Keys built in two steps: (index statement, attach statement) by item number.
    split_keys: HashMap<i32, (String, String)>,
    /// Each table's pending ANALYZE item (none in a run planned before they were items: the
    /// leader analyzes every table then, as it did).
    analyze_items: HashMap<Key, i32>,
    sched: Mutex<Sched>,
    notify: Notify,
    exporter: tokio::sync::Mutex<Option<wire::ExportedSnapshot>>,
    report: Mutex<Report>,
    /// Items whose table lock another session holds: since when (or the last warning), and
    /// the last time it was refused.
    lock_waits: Mutex<HashMap<String, (Instant, Instant)>>,
    started: Instant,
}

/// Runs every chunk, item and ANALYZE still to do. The caller has moved the run into its
/// data phase (or found it past it); `finish_data` is called once every chunk is in, and
/// says whether the data phase is over: the leader ends it, a `--join` worker looks whether
/// its leader has (and is asked again a moment later when not).
pub async fn run<F, Fut>(
    mut inputs: Inputs<'_>,
    tgt: &Client,
    src: &Client,
    finish_data: F,
) -> Result<Report, Error>
where
    F: Fn(f64) -> Fut,
    Fut: std::future::Future<Output = Result<bool, Error>>,
{
    let run = inputs.run;
    let plan = inputs.plan;
    let summary = Chunk::summary(tgt, run).await?;
    let data_pending = summary.iter().any(|t| t.done < t.chunks) || inputs.snapshot.is_some();
    let hypertable_chunks = crate::hypertables::expected_chunks(src, plan).await?;
    let mut chunks = Vec::new();
    for t in &summary {
        let key = (t.table_schema.clone(), t.table_name.clone());
        let made = hypertable_chunks
            .get(&key)
            .map_or(0, |n| cost::hypertable_chunks(*n));
        let per = cost::chunk(t.est_bytes / t.chunks.max(1)) + made / t.chunks.max(1);
        for _ in t.done..t.chunks {
            chunks.push((key.clone(), per));
        }
    }
    let (index_bytes, expression_tables) = index_facts(src, &plan.schemas).await?;
    let (pending_analyze, pending): (Vec<_>, Vec<_>) = PostDataItem::pending(tgt, run)
        .await?
        .into_iter()
        .partition(|it| it.kind == state::ANALYZE_KIND);
    let analyze_by_name: HashMap<String, i32> = pending_analyze
        .into_iter()
        .map(|it| (it.name, it.item))
        .collect();
    let legacy_analyze = inputs.role == Role::Leader
        && PostDataItem::count_of_kind(tgt, run, state::ANALYZE_KIND).await? == 0;
    let mut analyze_items = HashMap::new();
    let mut tables = HashMap::new();
    let mut states = HashMap::new();
    for t in &plan.tables {
        let key = (t.schema.clone(), t.name.clone());
        if let Some(item) = analyze_by_name.get(&qualified(&t.schema, &t.name)) {
            analyze_items.insert(key.clone(), *item);
        }
        states.insert(
            key.clone(),
            TableState {
                // Once per table, by whichever process claims its item.
                analyze_pending: legacy_analyze || analyze_items.contains_key(&key),
                needs_all_data: t.kind != "table",
                expression_index: expression_tables.contains(&key),
                analyze_cost: cost::analyze(t.bytes),
                ..TableState::default()
            },
        );
        tables.insert(key, t.clone());
    }
    let mut split_keys = HashMap::new();
    let items = pending
        .into_iter()
        .map(|it| {
            let item = item_for(&it, &tables, &index_bytes, &hypertable_chunks);
            match split_key_of(&it, &item, &tables) {
                Some(steps) => {
                    split_keys.insert(it.item, steps);
                    item.split()
                }
                None => item,
            }
        })
        .collect();
    let sched = Sched::new(states, chunks, items, !data_pending);
    let exporter = inputs.exporter.take();
    let shared = Shared {
        inputs,
        tables,
        split_keys,
        analyze_items,
        sched: Mutex::new(sched),
        notify: Notify::new(),
        exporter: tokio::sync::Mutex::new(exporter),
        report: Mutex::new(Report::default()),
        lock_waits: Mutex::new(HashMap::new()),
        started: Instant::now(),
    };
    let workers = (0..shared.inputs.jobs.max(1)).map(|id| worker(id, &shared, &finish_data));
    // The first error ends every worker (their sessions close, the server rolls back).
    let all = futures_util::future::try_join_all(workers);
    let result = tokio::select! {
        r = all => r,
        never = refresh_progress(tgt, run, &shared.inputs.counters) => match never {},
    };
    if let Some(exp) = shared.exporter.lock().await.take() {
        exp.into_connection().close().await;
    }
    result?;
    Ok(shared.report.into_inner().unwrap_or_default())
}

/// How long an item may go without its table lock before the log says so (and again each
/// time as long again): a session on the target holding a lock for good would otherwise
/// stall the copy with nothing said.
const LOCK_WARN_AFTER: std::time::Duration = std::time::Duration::from_secs(10);

impl Shared<'_> {
    /// An item did not get its table lock (see `postdata::LOCK_WAIT`); true when it has
    /// been refused for [`LOCK_WARN_AFTER`] again, and the log should say so.
    fn lock_wait(&self, what: &str) -> bool {
        let now = Instant::now();
        let mut waits = self.lock_waits.lock().expect("lock waits");
        let (since, last) = waits.entry(what.to_string()).or_insert((now, now));
        // Refused a while ago, then built or left: a new wait starts now.
        if now.duration_since(*last) > LOCK_WARN_AFTER / 2 {
            *since = now;
        }
        *last = now;
        let due = now.duration_since(*since) >= LOCK_WARN_AFTER;
        if due {
            *since = now;
        }
        due
    }
}

/// Says who may hold the lock item `what` has been refused for [`LOCK_WARN_AFTER`]: the
/// target's sessions that are not bluegreen's and have had a transaction open that long. None:
/// most likely the run's own (a `copy --join` process building an index on that table,
/// normal on large tables), said only at info level.
async fn say_lock_wait(tgt: &Client, what: &str) {
    let every = (schedule::RETRY + crate::postdata::LOCK_WAIT).as_millis();
    let secs = LOCK_WARN_AFTER.as_secs();
    match crate::postdata::long_transactions(tgt, LOCK_WARN_AFTER).await {
        Ok(others) if others.is_empty() => tracing::info!(
            item = %what,
            "a table lock it needs has been refused for over {secs} s, and no session but bluegreen's has had a transaction open that long: most likely another copy --join process building an index on that table; asking again every {every} ms"
        ),
        Ok(others) => tracing::warn!(
            item = %what,
            "a table lock it needs has been refused for over {secs} s; sessions on the target that are not bluegreen's, with a transaction open that long: {} (end them or let them finish; pg_locks on the target shows which holds the table); asking again every {every} ms",
            others.join("; ")
        ),
        Err(e) => tracing::warn!(
            item = %what,
            error = %e,
            "a table lock it needs has been refused for over {secs} s (pg_locks and pg_blocking_pids() on the target show which session holds it); asking again every {every} ms"
        ),
    }
}

/// Keeps the progress counters at what every process of the run has done (`copy --join`
/// workers commit chunks and items this process does not count itself).
async fn refresh_progress(
    tgt: &Client,
    run: &str,
    counters: &Counters,
) -> std::convert::Infallible {
    use std::sync::atomic::Ordering::Relaxed;
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        // A failed read only leaves the counters a second older; the work reports errors.
        if let Ok(Ok((chunks, bytes))) =
            tokio::time::timeout(schedule::REFRESH_BOUND, Chunk::done(tgt, run)).await
        {
            counters.chunks_done.store(chunks.max(0) as u64, Relaxed);
            counters.est_bytes_done.store(bytes.max(0) as u64, Relaxed);
        }
        if let Ok(Ok(items)) =
            tokio::time::timeout(schedule::REFRESH_BOUND, PostDataItem::done(tgt, run)).await
        {
            counters.items_done.store(items.max(0) as u64, Relaxed);
        }
    }
}

/// The two steps of a plain table's primary key or unique constraint (see
/// `postdata::split_key`); None for anything else, which is built as written.
fn split_key_of(
    it: &PostDataItem,
    item: &schedule::Item,
    tables: &HashMap<Key, Table>,
) -> Option<(String, String)> {
    if it.kind != "CONSTRAINT" || !item.known || item.tables.len() != 1 {
        return None;
    }
    let t = tables.get(&item.tables[0])?;
    if t.kind != "table" || t.partition_of.is_some() {
        return None;
    }
    postdata::split_key(&it.sql)
}

/// Source index sizes by (schema, index name), as the estimated cost of building each on
/// the target, and the tables with an index on an expression.
async fn index_facts(
    src: &Client,
    schemas: &[String],
) -> Result<(HashMap<Key, i64>, std::collections::HashSet<Key>), Error> {
    let rows = src
        .query(
            "SELECT n.nspname::text, ic.relname::text, pg_relation_size(ic.oid),
                    tc.relname::text, i.indexprs IS NOT NULL
               FROM pg_index i
               JOIN pg_class ic ON ic.oid = i.indexrelid
               JOIN pg_class tc ON tc.oid = i.indrelid
               JOIN pg_namespace n ON n.oid = tc.relnamespace
              WHERE n.nspname = ANY($1)",
            &[&schemas],
        )
        .await
        .map_err(sql("source", "index sizes"))?;
    let mut sizes = HashMap::new();
    let mut expression = std::collections::HashSet::new();
    for r in rows {
        let schema: String = r.get(0);
        sizes.insert((schema.clone(), r.get(1)), r.get(2));
        if r.get::<_, bool>(4) {
            expression.insert((schema, r.get(3)));
        }
    }
    Ok((sizes, expression))
}

/// A pending item with what the scheduler needs: the plan tables it locks, in which mode,
/// and its estimated cost (the source's index size for keys and indexes).
fn item_for(
    it: &PostDataItem,
    tables: &HashMap<Key, Table>,
    index_bytes: &HashMap<Key, i64>,
    hypertable_chunks: &HashMap<Key, i64>,
) -> schedule::Item {
    let named = schedule::tables_named(&it.sql);
    let known = !named.is_empty() && named.iter().all(|k| tables.contains_key(k));
    let locked: Vec<Key> = named
        .into_iter()
        .filter(|k| tables.contains_key(k))
        .collect();
    let mode = if it.kind == "INDEX" {
        Mode::Shared
    } else {
        Mode::Exclusive
    };
    let table_bytes = locked
        .first()
        .and_then(|k| tables.get(k))
        .map_or(0, |t| t.bytes);
    let cost = match it.kind.as_str() {
        "INDEX" | "CONSTRAINT" => {
            // Item names: "index" for indexes, "table constraint" for constraints.
            let index = locked.first().and_then(|(schema, table)| {
                let name = it
                    .name
                    .strip_prefix(&format!("{table} "))
                    .unwrap_or(&it.name);
                index_bytes.get(&(schema.clone(), name.to_string()))
            });
            cost::index(index.copied().unwrap_or(table_bytes / 4))
        }
        "FK CONSTRAINT" => cost::foreign_key(table_bytes),
        _ => cost::OTHER,
    } + locked
        .first()
        .and_then(|k| hypertable_chunks.get(k))
        .map_or(0, |n| cost::hypertable_chunks(*n));
    schedule::Item::new(it.item, it.stage, mode, locked, known, cost)
}

/// Rough durations in microseconds, to order tasks longest first. Sizes are the source's:
/// a table's total relation size, an index's size. Seen here (2 cores, PostgreSQL 15):
/// binary COPY moves ~100 MB of table per second, an index builds at ~30 MB of index per
/// second, a foreign key validates ~1 GB of table per second, ANALYZE reads a sample of at
/// most 30,000 rows in 0.05–0.3 s.
mod cost {
    pub const OTHER: i64 = 10_000;

    pub fn chunk(est_bytes: i64) -> i64 {
        (est_bytes / 100).max(1)
    }

    pub fn index(index_bytes: i64) -> i64 {
        (index_bytes / 30).max(1)
    }

    pub fn foreign_key(table_bytes: i64) -> i64 {
        (table_bytes / 1000).max(1)
    }

    /// Making a hypertable's chunks, or adding a key to each of them: catalog work per
    /// chunk (making 2,084 chunks with their primary key: 2.2 s alone, 10 s beside index
    /// builds; a foreign key added to them afterwards: 3 s).
    pub fn hypertable_chunks(n: i64) -> i64 {
        n.max(0) * 3_000
    }

    pub fn analyze(table_bytes: i64) -> i64 {
        50_000 + table_bytes.clamp(0, 30 << 20) / 100
    }
}

async fn worker<F, Fut>(id: usize, shared: &Shared<'_>, finish_data: &F) -> Result<(), Error>
where
    F: Fn(f64) -> Fut,
    Fut: std::future::Future<Output = Result<bool, Error>>,
{
    let mut data_conns: Option<DataConns> = None;
    let mut post: Option<Client> = None;
    loop {
        let notified = shared.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let next = shared
            .sched
            .lock()
            .expect("scheduler lock")
            .next(Instant::now());
        let task = match next {
            Next::Done => return Ok(()),
            Next::Wait => {
                let _ = tokio::time::timeout(schedule::RETRY, notified).await;
                continue;
            }
            Next::Run(task) => task,
        };
        let result = run_task(id, task, shared, &mut data_conns, &mut post, finish_data).await;
        if let Err(e) = result {
            shared.sched.lock().expect("scheduler lock").fail();
            shared.notify.notify_waiters();
            return Err(e);
        }
        // The source transaction holds back the source's vacuum: let it go with the last chunk.
        if data_conns.is_some() && !shared.sched.lock().expect("scheduler lock").chunks_remain() {
            data_conns = None;
        }
        shared.notify.notify_waiters();
    }
}

async fn run_task<F, Fut>(
    id: usize,
    task: Task,
    shared: &Shared<'_>,
    data_conns: &mut Option<DataConns>,
    post: &mut Option<Client>,
    finish_data: &F,
) -> Result<(), Error>
where
    F: Fn(f64) -> Fut,
    Fut: std::future::Future<Output = Result<bool, Error>>,
{
    let inputs = &shared.inputs;
    match task {
        Task::Chunk(table) => {
            let snapshot = inputs.snapshot.as_ref().ok_or_else(|| {
                Error::Worker("a chunk to copy but no snapshot to read it at".into())
            })?;
            if data_conns.is_none() {
                match DataConns::open(inputs.source, inputs.target, snapshot).await {
                    Ok(c) => *data_conns = Some(c),
                    // A worker imports the leader's snapshot, which lives only as long as the
                    // leader's data phase: past it there is nothing left to copy.
                    Err(e) if inputs.role == Role::Worker => {
                        let (schema, name) = &table;
                        let tgt = conn::connect(inputs.target)
                            .await
                            .map_err(|e| Error::Conn {
                                side: "target",
                                source: e,
                            })?;
                        if Chunk::pending_in_table(&tgt, inputs.run, schema, name).await? > 0 {
                            tracing::warn!(error = %e, "could not import the leader's snapshot");
                            return Err(Error::LeaderGone {
                                run: inputs.run.into(),
                            });
                        }
                        shared.sched.lock().expect("scheduler lock").chunk_ended(
                            &table,
                            ChunkEnd::NoneLeft,
                            Instant::now(),
                        );
                        return Ok(());
                    }
                    Err(e) => return Err(e),
                }
            }
            let conns = data_conns.as_mut().expect("opened above");
            let end = data::copy_chunk_of(
                conns,
                &table,
                &shared.tables,
                inputs.run,
                snapshot,
                &inputs.counters,
                &inputs.by,
            )
            .await?;
            shared
                .sched
                .lock()
                .expect("scheduler lock")
                .chunk_ended(&table, end, Instant::now());
        }
        Task::FinishData => {
            let seconds = shared.started.elapsed().as_secs_f64();
            if !finish_data(seconds).await? {
                shared
                    .sched
                    .lock()
                    .expect("scheduler lock")
                    .finish_data_later(Instant::now());
                return Ok(());
            }
            if let Some(exp) = shared.exporter.lock().await.take() {
                exp.into_connection().close().await;
            }
            shared.report.lock().expect("report lock").data_seconds = Some(seconds);
            inputs.counters.set_phase("indexes and constraints");
            shared
                .sched
                .lock()
                .expect("scheduler lock")
                .finish_data_ended();
        }
        Task::Item(it) => {
            if post.is_none() {
                *post = Some(postdata::open(inputs.target, &inputs.preamble).await?);
            }
            let tgt = post.as_mut().expect("opened above");
            let during_data = !shared.sched.lock().expect("scheduler lock").data_finished();
            let steps = shared.split_keys.get(&it.item);
            let (sql_instead, finish) = match (it.step, steps) {
                (Step::BuildIndex, Some((index, _))) => (Some(index.as_str()), false),
                (Step::Attach, Some((_, attach))) => (Some(attach.as_str()), true),
                _ => (None, true),
            };
            let built = postdata::build_item(
                tgt,
                inputs.run,
                it.item,
                sql_instead,
                finish,
                &inputs.counters,
                &inputs.by,
            )
            .await?;
            if let Outcome::Locked { what } = &built {
                if shared.lock_wait(what) {
                    say_lock_wait(tgt, what).await;
                }
            }
            let mut sched = shared.sched.lock().expect("scheduler lock");
            match built {
                Outcome::Done if !finish => sched.index_built(it),
                Outcome::Done | Outcome::AlreadyDone => {
                    if during_data {
                        shared.report.lock().expect("report lock").items_during_data += 1;
                    }
                    sched.item_ended(&it);
                }
                Outcome::Retry | Outcome::Locked { .. } => sched.item_retry(it, Instant::now()),
            }
        }
        Task::Analyze(key) => {
            if post.is_none() {
                *post = Some(postdata::open(inputs.target, &inputs.preamble).await?);
            }
            let tgt = post.as_mut().expect("opened above");
            let started = Instant::now();
            let name = qualified(&key.0, &key.1);
            let outcome = match shared.analyze_items.get(&key) {
                Some(item) => {
                    postdata::build_item(
                        tgt,
                        inputs.run,
                        *item,
                        None,
                        true,
                        &inputs.counters,
                        &inputs.by,
                    )
                    .await?
                }
                None => {
                    tgt.batch_execute(&format!("ANALYZE {name}"))
                        .await
                        .map_err(sql("target", format!("analyze {name}")))?;
                    Outcome::Done
                }
            };
            let seconds = started.elapsed().as_secs_f64();
            if let Outcome::Locked { what } = &outcome {
                if shared.lock_wait(what) {
                    say_lock_wait(tgt, what).await;
                }
            }
            let mut sched = shared.sched.lock().expect("scheduler lock");
            match outcome {
                Outcome::Done => {
                    tracing::debug!(worker = id, table = %name, seconds, "analyzed");
                    shared.report.lock().expect("report lock").analyze_seconds += seconds;
                    sched.analyze_ended(&key);
                }
                Outcome::AlreadyDone => sched.analyze_ended(&key),
                // Another process is analyzing it: the run is done only once that commits.
                Outcome::Retry | Outcome::Locked { .. } => {
                    sched.analyze_retry(&key, Instant::now())
                }
            }
        }
    }
    Ok(())
}
