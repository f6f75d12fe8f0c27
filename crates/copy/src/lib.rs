//! The copy stage: the target gets schema, data and sequences exactly as the source had them
//! at one instant — the instant from which the run's slot streams — then its indexes and
//! constraints. Every step is recorded in the target's `bluegreen` schema, so a killed copy
//! resumes where it stopped.

mod aggregates;
mod chunking;
mod columns;
mod data;
mod dropdata;
mod error;
mod hypertables;
pub mod names;
mod pipeline;
mod postdata;
mod progress;
mod roles;
mod schedule;
mod schema;
mod source;
mod timescale;

use std::sync::Arc;
use std::time::Instant;

use catalog::Plan;
use conn::{qualified, quote_ident, ConnSpec};
use state::{Chunk, NewRun, Phase, PostDataItem, Run, TableSummary};
use tokio_postgres::Client;

pub use dropdata::Dropped;
pub use error::Error;
pub use progress::Counters;
pub use source::name_in_use;

use crate::data::Snapshot;
use crate::error::sql;
use crate::schema::{DumpScope, Section};

/// Where the target's schema comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TargetSchema {
    /// pg_dump's pre-data and post-data at the run's snapshot (the target starts empty).
    #[default]
    Dump,
    /// The operator created it (e.g. with hypertables): every planned table must exist on
    /// the target and be empty; only data, sequences and materialized views are copied.
    Existing,
}

#[derive(Debug, Clone)]
pub struct CopyOptions {
    pub run: String,
    pub jobs: usize,
    pub chunk_bytes: i64,
    pub target_schema: TargetSchema,
    pub no_owner: bool,
    pub no_privileges: bool,
}

/// How a copy began.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    Fresh,
    /// An earlier copy of the run stopped part way; this one finished it.
    Resumed,
    /// The run was copied already: nothing was done.
    AlreadyCopied,
}

/// What a finished copy reports.
#[derive(Debug, Clone)]
pub struct Summary {
    pub run: String,
    pub start: Start,
    pub consistent_lsn: wire::Lsn,
    pub tables: Vec<TableSummary>,
    pub sequences: usize,
    pub post_data_items: i64,
    pub seconds: f64,
}

fn conn_err(side: &'static str) -> impl FnOnce(conn::Error) -> Error {
    move |source| Error::Conn { side, source }
}

/// Copies (or resumes copying) the planned schemas from source to target.
pub async fn copy(
    plan: &Plan,
    source: &ConnSpec,
    target: &ConnSpec,
    opts: &CopyOptions,
    counters: Arc<Counters>,
) -> Result<Summary, Error> {
    let started = Instant::now();
    names::validate_run(&opts.run)?;
    let run = opts.run.as_str();
    let mut tgt = conn::connect(target).await.map_err(conn_err("target"))?;
    // Held by this session until the process ends: one leader per run, and `--join`
    // workers see that a copy is running.
    if !state::leader::try_lead(&tgt, run).await? {
        let pid = state::leader::holder(&tgt, run).await?.unwrap_or_default();
        return Err(Error::AlreadyRunning {
            run: run.into(),
            pid,
        });
    }
    let src = conn::connect(source).await.map_err(conn_err("source"))?;
    let existing = if state::exists(&tgt).await? {
        // A run started by an older bluegreen gets the columns this one records.
        state::migrate(&mut tgt).await?;
        Run::get(&tgt, run).await?
    } else {
        None
    };
    refuse_bad_input(plan, &src, &tgt, existing.as_ref(), opts).await?;
    if let Some(f) = source::name_in_use(&src, &tgt, run).await? {
        return Err(Error::Blocked(vec![f]));
    }
    let start = match existing.as_ref().map(|r| r.phase) {
        None | Some(Phase::Creating) => Start::Fresh,
        Some(Phase::Copied | Phase::CutOver) => Start::AlreadyCopied,
        Some(_) => Start::Resumed,
    };

    // Fresh start (or a start that died before its snapshot was recorded): publication,
    // slot and schema, all at the slot's snapshot.
    let mut exporter = None;
    let mut snapshot = None;
    if existing.as_ref().is_none_or(|r| r.phase == Phase::Creating) {
        let mut made = Made::default();
        match start_run(
            plan,
            &src,
            &mut tgt,
            source,
            opts,
            existing.is_some(),
            &mut made,
        )
        .await
        {
            Ok((exp, snap)) => {
                exporter = Some(exp);
                snapshot = Some(snap);
            }
            Err(e) => {
                // Nothing half-done stays behind: the state row goes, and the slot and the
                // publication if this start made them (never ones of the same name it found).
                if let Err(undo) = undo_start(run, &src, target, &made).await {
                    tracing::warn!(error = %undo, "could not remove what the failed start created; run bluegreen abort");
                }
                return Err(e);
            }
        }
    }
    let run_row = Run::get(&tgt, run)
        .await?
        .ok_or_else(|| Error::Worker("the run's state row vanished".into()))?;

    if matches!(run_row.phase, Phase::Data | Phase::PostData) {
        let mut data_snapshot = None;
        if run_row.phase == Phase::Data {
            data_snapshot = Some(match snapshot.clone() {
                Some(s) => s,
                None => {
                    // Resuming: the run's own snapshot died with the process that held it.
                    // Tables copied in part start over from a fresh one; its LSN is recorded
                    // per chunk so streaming applies each table's changes from its own instant.
                    let (exp, snap) = fresh_snapshot(source, run).await?;
                    exporter = Some(exp);
                    // Published before any table starts over: this waits for chunks that
                    // workers of an earlier leader are still committing (they lock the row
                    // while they do), and after it they can commit none at the old snapshot.
                    state::leader::publish_snapshot(&tgt, run, Some((&snap.name, snap.lsn)))
                        .await?;
                    for (schema, table) in Chunk::partial_ctid_tables(&tgt, run).await? {
                        let tx = tgt.transaction().await.map_err(sql("target", "begin"))?;
                        tx.batch_execute(&format!("TRUNCATE {}", qualified(&schema, &table)))
                            .await
                            .map_err(sql("target", format!("truncate {schema}.{table}")))?;
                        Chunk::reset_table(&tx, run, &schema, &table).await?;
                        tx.commit().await.map_err(sql("target", "commit"))?;
                        tracing::info!(table = %format!("{schema}.{table}"), "copied in part before the crash: starting it over");
                    }
                    snap
                }
            });
            counters.set_phase("data");
        } else {
            counters.set_phase("indexes and constraints");
        }
        let summary = Chunk::summary(&tgt, run).await?;
        counters.chunks_total.store(
            summary.iter().map(|t| t.chunks as u64).sum(),
            std::sync::atomic::Ordering::Relaxed,
        );
        counters.chunks_done.store(
            summary.iter().map(|t| t.done as u64).sum(),
            std::sync::atomic::Ordering::Relaxed,
        );
        counters.est_bytes_total.store(
            summary.iter().map(|t| t.est_bytes.max(0) as u64).sum(),
            std::sync::atomic::Ordering::Relaxed,
        );
        counters.items_total.store(
            PostDataItem::count(&tgt, run).await? as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        let preamble = run_row
            .post_data
            .as_deref()
            .map(|s| schema::split_post_data(s).preamble)
            .unwrap_or_default();
        // Data, then each table's keys and indexes as soon as its data is in (while other
        // tables still copy), ANALYZE, then foreign keys, triggers and the rest.
        let t0 = Instant::now();
        let finish = |seconds: f64| {
            let snap = data_snapshot.clone();
            async move {
                finish_data(plan, source, target, run, snap, seconds).await?;
                Ok(true)
            }
        };
        let report = pipeline::run(
            pipeline::Inputs {
                plan,
                source,
                target,
                run,
                jobs: opts.jobs,
                preamble,
                snapshot: data_snapshot.clone(),
                exporter: exporter.take(),
                counters: counters.clone(),
                role: pipeline::Role::Leader,
                by: process_name(),
            },
            &tgt,
            &src,
            finish,
        )
        .await?;
        hypertables::finish(&mut tgt, plan).await?;
        timescale::finish(&mut tgt, &src, plan).await?;
        Run::set_phase(&tgt, run, Phase::Copied).await?;
        let data_seconds = report.data_seconds.unwrap_or(0.0);
        state::audit(
            &tgt,
            run,
            "post-data",
            Some(t0.elapsed().as_secs_f64() - data_seconds),
            serde_json::json!({ "items_during_data": report.items_during_data,
                                "analyze_seconds": report.analyze_seconds }),
        )
        .await?;
        state::matviews::refreshed_by_copy(&tgt, run).await?;
    }
    // Every snapshot import is done: let the exporting connection go.
    if let Some(exp) = exporter.take() {
        exp.into_connection().close().await;
    }
    counters.set_phase("done");
    let run_row = Run::get(&tgt, run).await?.unwrap_or(run_row);
    Ok(Summary {
        run: run.to_string(),
        start,
        consistent_lsn: run_row.consistent_lsn.unwrap_or_default(),
        tables: Chunk::summary(&tgt, run).await?,
        sequences: plan.sequences.len(),
        post_data_items: PostDataItem::count(&tgt, run).await?,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// This process as chunk and item rows name it: host (the pod's name in Kubernetes) and pid.
pub fn process_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("{host}:{}", std::process::id())
}

/// How long a `--join` worker waits for the copy it joins to reach its data phase (the
/// leader dumps and applies the schema first).
pub const JOIN_WAIT: std::time::Duration = std::time::Duration::from_secs(600);

/// How a `--join` worker found the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Joined {
    /// In its data phase: chunks, then post-data items.
    Data,
    /// Past its data: post-data items only.
    PostData,
    /// Copied already: nothing to do.
    AlreadyCopied,
}

/// What a `--join` worker did (as the state schema records it).
#[derive(Debug, Clone)]
pub struct JoinSummary {
    pub run: String,
    /// This process, as the chunk and item rows name it.
    pub by: String,
    pub joined: Joined,
    pub chunks: i64,
    pub rows: i64,
    pub items: i64,
    pub seconds: f64,
}

/// `copy --join`: helps the running copy of the run (its leader) with chunks and post-data
/// items, claimed through the state schema like the leader's own workers claim them. Ends
/// when no chunk or item (ANALYZE among them) is left; the leader ends the data phase and
/// finishes the run.
pub async fn join(
    plan: &Plan,
    source: &ConnSpec,
    target: &ConnSpec,
    opts: &CopyOptions,
    counters: Arc<Counters>,
) -> Result<JoinSummary, Error> {
    let started = Instant::now();
    names::validate_run(&opts.run)?;
    let run = opts.run.as_str();
    let by = process_name();
    let tgt = conn::connect(target).await.map_err(conn_err("target"))?;
    let mut summary = JoinSummary {
        run: run.into(),
        by: by.clone(),
        joined: Joined::AlreadyCopied,
        chunks: 0,
        rows: 0,
        items: 0,
        seconds: 0.0,
    };
    let deadline = Instant::now() + JOIN_WAIT;
    let (run_row, snapshot) = loop {
        let leading = state::leader::leader_running(&tgt, run).await?;
        let row = if state::exists(&tgt).await? {
            Run::get(&tgt, run).await?
        } else {
            None
        };
        match row {
            Some(r) if matches!(r.phase, Phase::Copied | Phase::CutOver) => {
                summary.seconds = started.elapsed().as_secs_f64();
                return Ok(summary);
            }
            _ if !leading => return Err(Error::NotRunning { run: run.into() }),
            Some(r) if r.phase == Phase::PostData => break (r, None),
            Some(r) if r.phase == Phase::Data => {
                if let Some((name, lsn)) = state::leader::snapshot(&tgt, run).await? {
                    break (r, Some(Snapshot { name, lsn }));
                }
            }
            // The leader is still planning (pg_dump, schema) or publishing its snapshot.
            _ => {}
        }
        if Instant::now() >= deadline {
            return Err(Error::Refused {
                what: format!(
                    "the copy of run {run} did not reach its data phase within {} s",
                    JOIN_WAIT.as_secs()
                ),
                fix: "start the workers again once bluegreen status shows the run copying data"
                    .into(),
            });
        }
        tokio::time::sleep(LEADER_POLL).await;
    };
    if run_row.schemas != plan.schemas {
        return Err(Error::Refused {
            what: format!(
                "run {run} copies schemas {:?}, not {:?}",
                run_row.schemas, plan.schemas
            ),
            fix: "start the worker with the run's own --schema list".into(),
        });
    }
    summary.joined = if snapshot.is_some() {
        counters.set_phase("data");
        Joined::Data
    } else {
        counters.set_phase("indexes and constraints");
        Joined::PostData
    };
    tracing::info!(run, worker = %by, "joined the copy");
    let chunks = Chunk::summary(&tgt, run).await?;
    counters.chunks_total.store(
        chunks.iter().map(|t| t.chunks as u64).sum(),
        std::sync::atomic::Ordering::Relaxed,
    );
    counters.est_bytes_total.store(
        chunks.iter().map(|t| t.est_bytes.max(0) as u64).sum(),
        std::sync::atomic::Ordering::Relaxed,
    );
    counters.items_total.store(
        PostDataItem::count(&tgt, run).await? as u64,
        std::sync::atomic::Ordering::Relaxed,
    );
    let src = conn::connect(source).await.map_err(conn_err("source"))?;
    let preamble = run_row
        .post_data
        .as_deref()
        .map(|s| schema::split_post_data(s).preamble)
        .unwrap_or_default();
    let tgt_ref = &tgt;
    // The leader ends the data phase (sequences at its snapshot); the worker looks whether it
    // has, and builds the indexes of tables whose data is in meanwhile.
    let finish = move |_seconds: f64| async move { leader_finished_data(tgt_ref, run).await };
    pipeline::run(
        pipeline::Inputs {
            plan,
            source,
            target,
            run,
            jobs: opts.jobs,
            preamble,
            snapshot,
            exporter: None,
            counters: counters.clone(),
            role: pipeline::Role::Worker,
            by: by.clone(),
        },
        &tgt,
        &src,
        finish,
    )
    .await?;
    counters.set_phase("done");
    (summary.chunks, summary.rows) = Chunk::done_by(&tgt, run, &by).await?;
    summary.items = PostDataItem::done_by(&tgt, run, &by).await?;
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// How often a worker looks whether the leader has reached its data phase: every moment
/// lost here is one the worker's jobs sit idle.
const LEADER_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// Whether the run is past its data phase; an error once its leader is gone (a leader that
/// dies releases its lock), which bounds a worker's asking.
async fn leader_finished_data(tgt: &Client, run: &str) -> Result<bool, Error> {
    let phase = Run::get(tgt, run).await?.map(|r| r.phase);
    if phase != Some(Phase::Data) {
        return Ok(true);
    }
    if !state::leader::leader_running(tgt, run).await? {
        return Err(Error::LeaderGone { run: run.into() });
    }
    Ok(false)
}

/// Everything that would make the copy fail or lose data, found before anything is touched.
async fn refuse_bad_input(
    plan: &Plan,
    src: &Client,
    tgt: &Client,
    existing: Option<&Run>,
    opts: &CopyOptions,
) -> Result<(), Error> {
    // Tables this run created itself, and in Existing mode tables the operator created, do
    // not count against an empty target.
    let expected_on_target = existing.is_some() || opts.target_schema == TargetSchema::Existing;
    let blockers: Vec<_> = plan
        .blockers()
        .filter(|f| !(expected_on_target && f.code == "target-not-empty"))
        .cloned()
        .collect();
    if !blockers.is_empty() {
        return Err(Error::Blocked(blockers));
    }
    if let Some(run) = existing {
        if run.schemas != plan.schemas {
            return Err(Error::Refused {
                what: format!(
                    "run {} copies schemas {:?}, not {:?}",
                    run.run, run.schemas, plan.schemas
                ),
                fix: "resume with the run's own --schema list, or abort it and start a new run"
                    .into(),
            });
        }
        // A table whose chunks are not all copied and that the source no longer has (dropped
        // while the copy ran: DDL is not replicated) cannot be finished.
        let gone: Vec<String> = Chunk::summary(tgt, &run.run)
            .await?
            .into_iter()
            .filter(|t| t.done < t.chunks)
            .filter(|t| {
                !plan
                    .tables
                    .iter()
                    .any(|p| p.schema == t.table_schema && p.name == t.table_name)
            })
            .map(|t| conn::display_qualified(&t.table_schema, &t.table_name))
            .collect();
        if !gone.is_empty() {
            return Err(Error::Refused {
                what: format!(
                    "the source no longer has {} (dropped while the copy ran?), so the copy cannot be finished",
                    gone.join(", ")
                ),
                fix: "start over: bluegreen abort --drop-data, then copy again (DDL on the source is not replicated); or create the table on the source again as it was and run the same copy".into(),
            });
        }
        return Ok(());
    }
    if opts.target_schema == TargetSchema::Dump {
        roles::refuse_missing(src, tgt, &plan.schemas, opts.no_owner, opts.no_privileges).await?;
    }
    if opts.target_schema == TargetSchema::Existing {
        let mut mismatched = Vec::new();
        for s in &plan.schemas {
            let found = tgt
                .query_opt("SELECT 1 FROM pg_namespace WHERE nspname = $1", &[s])
                .await
                .map_err(sql("target", "look up schemas"))?;
            if found.is_none() {
                return Err(Error::Refused {
                    what: format!("schema {s} is missing on the target"),
                    fix: "create the target's schema first (run the application's migrations), or copy it from the source with --target-schema dump".into(),
                });
            }
        }
        for t in plan.tables.iter().filter(|t| t.kind == "table") {
            let name = t.qualified();
            let exists: bool = tgt
                .query_one("SELECT to_regclass($1) IS NOT NULL", &[&name])
                .await
                .map_err(sql("target", "look up tables"))?
                .get(0);
            if !exists {
                return Err(Error::Refused {
                    what: format!("table {} is missing on the target", t.display_name()),
                    fix: "create it on the target, or copy the schema from the source with --target-schema dump".into(),
                });
            }
            let has_rows: bool = tgt
                .query_one(&format!("SELECT EXISTS (SELECT 1 FROM {name})"), &[])
                .await
                .map_err(sql("target", "look for rows"))?
                .get(0);
            if has_rows {
                return Err(Error::Refused {
                    what: format!("table {} on the target already has rows", t.display_name()),
                    fix: format!("empty it (TRUNCATE {name};) or migrate into an empty database"),
                });
            }
            let source_columns = columns::columns_of(src, "source", &name).await?;
            let target_columns = columns::columns_of(tgt, "target", &name).await?;
            mismatched.extend(columns::mismatches(t, &source_columns, &target_columns));
        }
        if !mismatched.is_empty() {
            return Err(Error::Refused {
                what: format!(
                    "{} column(s) on the target do not take the source's values as they are (binary COPY does not convert):\n  {}",
                    mismatched.len(),
                    mismatched.join("\n  ")
                ),
                fix: "make the target's columns match the source's (ALTER TABLE … ALTER COLUMN … TYPE …, ADD COLUMN, DROP COLUMN on the target), or drop those tables and let copy create them with --target-schema dump".into(),
            });
        }
    }
    Ok(())
}

/// What a start of the run went on to create on the source (set before each attempt, so a
/// create that failed half-way counts: the name was free when the start began).
#[derive(Debug, Default)]
struct Made {
    publication: bool,
    slot: bool,
}

async fn undo_start(run: &str, src: &Client, target: &ConnSpec, made: &Made) -> Result<(), Error> {
    if made.slot {
        state::teardown::drop_slot(src, &names::slot(run)).await?;
    }
    if made.publication {
        state::teardown::drop_publication(src, &names::publication(run)).await?;
    }
    abort(run, None, Some(target), false).await.map(|_| ())
}

/// Creates the run's publication and slot, dumps the schema at the slot's snapshot, applies
/// pre-data, and records chunks and post-data items: one target transaction, so the run is
/// either fully planned or still `creating` (and a rerun starts it over).
async fn start_run(
    plan: &Plan,
    src: &Client,
    tgt: &mut Client,
    source: &ConnSpec,
    opts: &CopyOptions,
    restarting: bool,
    made: &mut Made,
) -> Result<(wire::ExportedSnapshot, Snapshot), Error> {
    let run = opts.run.as_str();
    let (slot, publication) = (names::slot(run), names::publication(run));
    state::migrate(tgt).await?;
    if restarting {
        // An earlier start died before its snapshot was recorded: remove what it made.
        state::teardown::drop_slot(src, &slot).await?;
        state::teardown::drop_publication(src, &publication).await?;
    } else {
        // Recorded before anything exists on the source, so abort can always find it.
        Run::insert(
            &*tgt,
            &NewRun {
                run,
                source: &source.redacted(),
                slot_name: &slot,
                publication: &publication,
                schemas: &plan.schemas,
            },
        )
        .await?;
    }
    made.publication = true;
    source::create_publication(src, &publication, plan).await?;
    let repl = wire::ReplicationConnection::connect(source).await?;
    made.slot = true;
    let exported = repl.create_slot_exporting(&slot, false).await?;
    let snap = Snapshot {
        name: exported.snapshot_name().to_string(),
        lsn: exported.consistent_point(),
    };
    tracing::info!(slot = %slot, lsn = %snap.lsn, "slot created; copying at its snapshot");

    let scope = DumpScope {
        schemas: plan.schemas.clone(),
        extensions: plan.extensions.iter().map(|e| e.name.clone()).collect(),
        no_owner: opts.no_owner,
        no_privileges: opts.no_privileges,
    };
    let version = plan.source.version_num;
    let (pre, post) = tokio::try_join!(
        schema::dump(source, version, &snap.name, &scope, Section::PreData),
        schema::dump(source, version, &snap.name, &scope, Section::PostData),
    )?;
    let mut post_data = schema::split_post_data(&post);
    if opts.target_schema == TargetSchema::Existing {
        post_data
            .items
            .retain(|i| i.kind == "MATERIALIZED VIEW DATA");
    }
    hypertables::adjust_post_data(&mut post_data.items, plan);
    post_data.items.extend(plan.tables.iter().map(|t| {
        let name = qualified(&t.schema, &t.name);
        state::NewItem {
            stage: 2,
            kind: state::ANALYZE_KIND.into(),
            sql: format!("ANALYZE {name};\n"),
            name,
        }
    }));
    let pre = timescale::without_aggregate_views(&pre, plan);

    let snap_client = conn::connect(source).await.map_err(conn_err("source"))?;
    snap_client
        .batch_execute(&format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT {}",
            conn::quote_literal(&snap.name)
        ))
        .await
        .map_err(sql("source", "import the run's snapshot"))?;
    let chunks = chunking::plan_chunks(&snap_client, plan, opts.chunk_bytes).await?;

    let t0 = Instant::now();
    let tx = tgt.transaction().await.map_err(sql("target", "begin"))?;
    if opts.target_schema == TargetSchema::Dump {
        let before = state::created::before(&tx).await?;
        tx.batch_execute(&pre)
            .await
            .map_err(sql("target", "apply the schema (pre-data)"))?;
        // pg_dump's preamble empties search_path for this session; our own statements are
        // all schema-qualified, but put it back for anything else that runs here.
        tx.batch_execute("RESET search_path")
            .await
            .map_err(sql("target", "reset search_path"))?;
        hypertables::create(&tx, plan).await?;
        timescale::create(&tx, plan).await?;
        // In the same transaction: what exists now and did not before is the run's.
        state::created::record(&tx, run, &before).await?;
    } else {
        hypertables::create(&tx, plan).await?;
        timescale::create(&tx, plan).await?;
    }
    state::created::mark_recorded(&tx, run).await?;
    Run::set_snapshot(&tx, run, snap.lsn, &post).await?;
    state::leader::publish_snapshot(&tx, run, Some((&snap.name, snap.lsn))).await?;
    Chunk::insert_all(&tx, run, &chunks).await?;
    PostDataItem::insert_all(&tx, run, &post_data.items).await?;
    let keys_before_data =
        hypertables::build_early_keys(&tx, run, &post_data.items, plan, &process_name()).await?;
    Run::set_phase(&tx, run, Phase::Data).await?;
    state::audit(
        &tx,
        run,
        "schema",
        Some(t0.elapsed().as_secs_f64()),
        serde_json::json!({ "slot": slot, "publication": publication, "consistent_lsn": snap.lsn,
                            "chunks": chunks.len(), "post_data_items": post_data.items.len(),
                            "keys_before_data": keys_before_data }),
    )
    .await?;
    tx.commit()
        .await
        .map_err(sql("target", "commit the schema"))?;
    Ok((exported, snap))
}

/// A snapshot for resuming: a temporary slot exports it, and its consistent point is the
/// LSN that the chunks copied under it are recorded at.
async fn fresh_snapshot(
    source: &ConnSpec,
    run: &str,
) -> Result<(wire::ExportedSnapshot, Snapshot), Error> {
    let repl = wire::ReplicationConnection::connect(source).await?;
    let exported = repl
        .create_slot_exporting(&names::resume_slot(run), true)
        .await?;
    let snap = Snapshot {
        name: exported.snapshot_name().to_string(),
        lsn: exported.consistent_point(),
    };
    tracing::info!(lsn = %snap.lsn, "resuming from a fresh snapshot");
    Ok((exported, snap))
}

/// Each planned sequence's state under the snapshot: (qualified name, last_value, is_called).
async fn sequence_values(
    source: &ConnSpec,
    plan: &Plan,
    snapshot: &str,
) -> Result<Vec<(String, i64, bool)>, Error> {
    let c = conn::connect(source).await.map_err(conn_err("source"))?;
    c.batch_execute(&format!(
        "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT {}",
        conn::quote_literal(snapshot)
    ))
    .await
    .map_err(sql("source", "import the snapshot for sequences"))?;
    let mut out = Vec::new();
    for s in &plan.sequences {
        let name = qualified(&s.schema, &s.name);
        let row = c
            .query_one(&format!("SELECT last_value, is_called FROM {name}"), &[])
            .await
            .map_err(sql("source", format!("read sequence {name}")))?;
        out.push((name, row.get(0), row.get(1)));
    }
    Ok(out)
}

/// Every chunk is in: the audit row for the data phase, then sequences at the same instant,
/// and the phase moves on in the same transaction.
async fn finish_data(
    plan: &Plan,
    source: &ConnSpec,
    target: &ConnSpec,
    run: &str,
    snap: Option<Snapshot>,
    seconds: f64,
) -> Result<(), Error> {
    let snap =
        snap.ok_or_else(|| Error::Worker("the data phase ended without its snapshot".into()))?;
    let mut tgt = conn::connect(target).await.map_err(conn_err("target"))?;
    let pending = Chunk::pending(&tgt, run).await?;
    if pending > 0 {
        return Err(Error::Worker(format!(
            "{pending} chunk(s) still pending at the end of the data phase (is another copy of this run running?)"
        )));
    }
    state::audit(
        &tgt,
        run,
        "data",
        Some(seconds),
        serde_json::json!({ "snapshot_lsn": snap.lsn }),
    )
    .await?;
    let values = sequence_values(source, plan, &snap.name).await?;
    if !plan.continuous_aggregates.is_empty() {
        let src = conn::connect(source).await.map_err(conn_err("source"))?;
        src.batch_execute(&format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT {}",
            conn::quote_literal(&snap.name)
        ))
        .await
        .map_err(sql(
            "source",
            "import the snapshot for continuous aggregates",
        ))?;
        aggregates::create_and_fill(&src, &tgt, plan).await?;
    }
    let tx = tgt.transaction().await.map_err(sql("target", "begin"))?;
    for (name, value, called) in &values {
        tx.execute(
            "SELECT setval($1::text::regclass, $2, $3)",
            &[name, value, called],
        )
        .await
        .map_err(sql("target", format!("set sequence {name}")))?;
    }
    Run::set_phase(&tx, run, Phase::PostData).await?;
    state::leader::publish_snapshot(&tx, run, None).await?;
    tx.commit().await.map_err(sql("target", "commit sequences"))
}

/// What `abort` removed.
#[derive(Debug, Default)]
pub struct Removed {
    pub slot: bool,
    pub publication: bool,
    pub state: bool,
    /// With `drop_data`: what was dropped and kept on the target.
    pub data: DropData,
    /// Without `drop_data`: objects the run created that stay, as (kind, count).
    pub kept: Vec<(String, usize)>,
    /// Schemas the run copied into that existed before it (never dropped).
    pub schemas_not_created: Vec<String>,
}

/// The target's side of `abort --drop-data`.
#[derive(Debug, Default)]
pub enum DropData {
    /// Not asked for, or no target given.
    #[default]
    NotAsked,
    /// The target holds no record of the run (a plain abort removed it, or it never ran
    /// here): nothing was dropped, and whatever it copied stays.
    NoRecord,
    /// Objects outside the record depend on the run's (dependent, what it depends on):
    /// nothing was removed on either side.
    Blocked(Vec<(String, String)>),
    /// The run exists but its copy kept no record (an older bluegreen copied it): nothing
    /// was removed on either side.
    NotRecorded,
    Dropped(Dropped),
}

/// What stops `abort --drop-data` before anything is removed: objects outside the run's
/// record that depend on what it created ([`DropData::Blocked`]), or a run without a
/// record ([`DropData::NotRecorded`]). None: nothing stops it.
pub async fn drop_data_refusal(run: &str, target: &ConnSpec) -> Result<Option<DropData>, Error> {
    names::validate_run(run)?;
    let tgt = conn::connect(target).await.map_err(conn_err("target"))?;
    if !state::exists(&tgt).await? || Run::get(&tgt, run).await?.is_none() {
        return Ok(None);
    }
    if !state::created::recorded(&tgt, run).await? {
        return Ok(Some(DropData::NotRecorded));
    }
    let blockers = state::created::foreign_dependents(&tgt, run).await?;
    Ok((!blockers.is_empty()).then_some(DropData::Blocked(blockers)))
}

/// Removes what a run created: slot and publication on the source (ending any session that
/// streams from the slot), the run's state on the target, and with `drop_data` the objects
/// its copy created there (see [`dropdata`]). Safe to run again; either side may be given
/// alone.
pub async fn abort(
    run: &str,
    source: Option<&ConnSpec>,
    target: Option<&ConnSpec>,
    drop_data: bool,
) -> Result<Removed, Error> {
    names::validate_run(run)?;
    let mut removed = Removed::default();
    if let (Some(target), true) = (target, drop_data) {
        if let Some(refusal) = drop_data_refusal(run, target).await? {
            removed.data = refusal;
            return Ok(removed);
        }
    }
    // With both sides, a running sync is asked to stop before its walsender is ended below
    // (dropping the slot ends it): it then stops cleanly instead of failing on a lost slot.
    let asked = source.is_some() && target.is_some();
    if let (true, Some(target)) = (asked, target) {
        let tgt = conn::connect(target).await.map_err(conn_err("target"))?;
        if state::exists(&tgt).await? {
            stop_sync(&tgt, run).await?;
        }
    }
    if let Some(source) = source {
        let src = conn::connect(source).await.map_err(conn_err("source"))?;
        // After a cutover blue is fenced read-only for new sessions; abort still cleans it.
        src.batch_execute("SET default_transaction_read_only = off")
            .await
            .map_err(sql("source", "session settings"))?;
        removed.slot = state::teardown::drop_slot(&src, &names::slot(run)).await?;
        state::teardown::drop_slot(&src, &names::resume_slot(run)).await?;
        removed.publication =
            state::teardown::drop_publication(&src, &names::publication(run)).await?;
    }
    if let Some(target) = target {
        let mut tgt = conn::connect(target).await.map_err(conn_err("target"))?;
        if drop_data {
            removed.data = DropData::NoRecord;
        }
        if state::exists(&tgt).await? {
            stop_applier(&tgt, run, !asked).await?;
            if let Some(r) = Run::get(&tgt, run).await? {
                let recorded = state::created::recorded(&tgt, run).await?;
                if drop_data && !recorded {
                    // Appeared since the check (a copy restarted meanwhile): keep it all.
                    removed.data = DropData::NotRecorded;
                    return Ok(removed);
                }
                let created = if recorded {
                    state::created::CreatedObject::list(&tgt, run).await?
                } else {
                    Vec::new()
                };
                removed.schemas_not_created = r
                    .schemas
                    .iter()
                    .filter(|s| {
                        !created
                            .iter()
                            .any(|o| o.is_schema() && o.identity == quote_ident(s))
                    })
                    .cloned()
                    .collect();
                let tx = tgt.transaction().await.map_err(sql("target", "begin"))?;
                if drop_data {
                    match dropdata::drop_created(&tx, run).await? {
                        Ok(d) => removed.data = DropData::Dropped(d),
                        Err(blockers) => {
                            // Something appeared since the check: keep the state too.
                            removed.data = DropData::Blocked(blockers);
                            return Ok(removed);
                        }
                    }
                } else {
                    for o in created.iter().filter(|o| o.present) {
                        match removed.kept.iter_mut().find(|(k, _)| *k == o.kind) {
                            Some((_, n)) => *n += 1,
                            None => removed.kept.push((o.kind.clone(), 1)),
                        }
                    }
                }
                // Verify's watch trigger and the change journals go with the run.
                state::changes::unwatch(&tx, &r.schemas).await?;
                state::changes::forget(&tx, &state::names::origin(run), &r.schemas).await?;
                removed.state = Run::delete(&tx, run).await?;
                tx.commit().await.map_err(sql("target", "commit"))?;
            }
            if Run::count(&tgt).await? == 0 {
                state::drop_schema(&tgt).await?;
            }
        }
    }
    Ok(removed)
}

/// How long abort waits for a running sync to stop by itself before ending its sessions.
const SYNC_STOP_BOUND: std::time::Duration = std::time::Duration::from_secs(10);

/// Asks a running sync of the run to stop and waits until it has ([`SYNC_STOP_BOUND`] at
/// most; past that its sessions are ended anyway).
async fn stop_sync(tgt: &Client, run: &str) -> Result<(), Error> {
    let running = |a: Option<state::ApplyStatus>| a.is_some_and(|a| a.running());
    if !running(state::ApplyStatus::get(tgt, run).await?) {
        return Ok(());
    }
    state::request_stop(tgt, run).await?;
    let started = std::time::Instant::now();
    while started.elapsed() < SYNC_STOP_BOUND {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        if !running(state::ApplyStatus::get(tgt, run).await?) {
            break;
        }
    }
    Ok(())
}

/// Stops a running sync of the run (asks, unless `ask` is false because that was done
/// already, then ends its target session) and drops the run's replication origin.
async fn stop_applier(tgt: &Client, run: &str, ask: bool) -> Result<(), Error> {
    if ask {
        stop_sync(tgt, run).await?;
    }
    if let Some(apply) = state::ApplyStatus::get(tgt, run).await? {
        if let Some(pid) = apply.pid {
            tgt.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid = $1",
                &[&pid],
            )
            .await
            .map_err(sql("target", "end the applier's session"))?;
        }
    }
    state::teardown::drop_origin(tgt, &state::names::origin(run)).await?;
    Ok(())
}
