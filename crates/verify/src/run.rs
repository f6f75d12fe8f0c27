//! One verify run: snapshots on both sides, every chunk checksummed by parallel workers,
//! mismatches located, results recorded, optional repair and re-check.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use catalog::Plan;
use conn::ConnSpec;
use futures_util::future::try_join_all;
use state::changes::Journal;
use state::verify::{ChunkResult, NewVerify, Outcome, TableResult, Totals};
use state::{ApplyStatus, Phase, Run};
use tokio_postgres::Client;
use wire::Lsn;

use crate::bisect::{locate, Located, Pair, Unlocated};
use crate::error::{conn_err, sql, Error};
use crate::hash::Digest;
use crate::incremental::{Prior, TablePlan};
use crate::range::KeyRange;
use crate::report::{
    ChunkMismatch, MatViewCheck, RepairReport, RepairedRange, Report, TableReport, REPORT_FORMAT,
};
use crate::snapshot::{
    origin_progress, reader, Consistency, Mode, Sides, Snapshots, SESSION_SETTINGS,
};
use crate::table::VerifyTable;

#[derive(Debug, Clone)]
pub struct VerifyOptions {
    pub run: String,
    /// Schemas to compare; empty: the run's own.
    pub schemas: Vec<String>,
    pub chunk_bytes: i64,
    pub jobs: usize,
    pub repair: bool,
    /// How long to wait for a running applier to hold at the snapshot's LSN.
    pub hold_timeout: Duration,
    /// Differing rows listed per table; the rest of a table's differing ranges are reported
    /// (and repaired) as ranges.
    pub max_rows_per_table: i64,
    /// Check every chunk even where an earlier clean verify lets this one carry some forward.
    pub full: bool,
}

/// One chunk to check.
#[derive(Debug, Clone)]
struct Task {
    table: usize,
    chunk: usize,
    range: KeyRange,
    /// Incrementally: the keys sync wrote in it and its digests when last found equal, to
    /// check those keys' rows alone (see `incremental::by_keys`).
    by_keys: Option<(Vec<Vec<String>>, Digest)>,
}

/// A chunk not checked again: unchanged since the verify that checked it.
#[derive(Debug)]
struct Carried {
    table: usize,
    result: ChunkResult,
}

#[derive(Debug)]
struct ChunkOutcome {
    task: Task,
    source: Digest,
    target: Digest,
    seconds: f64,
    located: Option<Located>,
    /// Checked by the rows of this many written keys, not hashed whole.
    by_keys: Option<usize>,
}

/// Verifies the planned tables of `opts.run`; see the crate docs.
pub async fn verify(
    plan: &Plan,
    source: &ConnSpec,
    target: &ConnSpec,
    opts: &VerifyOptions,
) -> Result<Report, Error> {
    let started = Instant::now();
    let run = opts.run.as_str();
    let (state_client, source_client) = tokio::join!(conn::connect(target), conn::connect(source));
    let mut state_client = state_client.map_err(conn_err("target"))?;
    if !state::exists(&state_client).await? {
        return Err(no_run(run));
    }
    let run_row = Run::get(&state_client, run)
        .await?
        .ok_or_else(|| no_run(run))?;
    if !matches!(run_row.phase, Phase::Copied | Phase::CutOver) {
        return Err(Error::Incomplete {
            run: run.to_string(),
            phase: run_row.phase.as_str(),
        });
    }
    state::migrate(&mut state_client).await?;
    let locked: bool = state_client
        .query_one(
            "SELECT pg_try_advisory_lock(hashtext('bluegreen.verify'), hashtext($1))",
            &[&run],
        )
        .await
        .map_err(sql("target", "take the verify lock"))?
        .get(0);
    if !locked {
        return Err(Error::Refused {
            what: format!("another verify of run {run} is running"),
            fix: "wait for it to finish (one verify per run at a time)".into(),
        });
    }
    let status = ApplyStatus::get(&state_client, run).await?;
    let mode = match &status {
        Some(s) if s.running() => Mode::Online,
        other => Mode::Offline {
            origin: other
                .as_ref()
                .map(|s| s.origin.clone())
                .unwrap_or_else(|| state::names::origin(run)),
        },
    };
    if let (true, Mode::Offline { origin }) = (opts.repair, &mode) {
        if let Some(applied) = origin_progress(&state_client, origin).await {
            return Err(Error::Refused {
                what: format!(
                    "run {run}'s sync has applied changes (up to {applied}) but is not running: a repair now would be undone or doubled when it resumes"
                ),
                fix: "start `bluegreen sync` for the run, then verify --repair again (the applier is held while ranges are re-copied)".into(),
            });
        }
    }
    let source_client = source_client.map_err(conn_err("source"))?;
    let schemas: HashSet<&String> = if opts.schemas.is_empty() {
        run_row.schemas.iter().collect()
    } else {
        opts.schemas.iter().collect()
    };
    let mut tables: Vec<VerifyTable> = crate::table::from_plan(plan, &source_client)
        .await?
        .into_iter()
        .filter(|t| schemas.contains(&t.schema))
        .collect();
    crate::table::align_with_target(&mut tables, &source_client, &state_client).await?;
    let origin = status
        .as_ref()
        .map(|s| s.origin.clone())
        .unwrap_or_else(|| state::names::origin(run));
    let prior = prepare_incremental(&state_client, &run_row, &mode, &tables, opts).await?;
    let sides = Sides {
        source,
        target,
        source_client: &source_client,
        state: &state_client,
        run,
    };
    let snaps = Snapshots::take(&sides, &mode, opts.hold_timeout, false).await?;
    let lsn = snaps.lsn;
    let consistency = snaps.consistency.clone();
    // Carried verdicts hold at this LSN only if both sides show the source's state at it.
    let prior = prior.filter(|_| consistency == Consistency::Held);
    let id = state::verify::start(
        &state_client,
        &NewVerify {
            run,
            lsn,
            mode: consistency.as_str(),
            target_applied_lsn: consistency.applied(),
        },
    )
    .await?;
    tracing::info!(run, lsn = %lsn, mode = consistency.as_str(), tables = tables.len(), "verifying");

    let schema_list: Vec<&String> = schemas.iter().copied().collect();
    let aggregates = crate::aggregates::compare(source, target, &snaps, plan, &schema_list).await;
    let mv_schemas: Vec<String> = schemas.iter().map(|s| s.to_string()).collect();
    let (result, aggregates, matviews) = match aggregates {
        Ok(a) => {
            // The views are read as they are now (each side refreshes its own), not at the
            // snapshots: compared while the chunks are checked rather than after.
            let (checked, matviews) = tokio::join!(
                check_and_repair(&sides, &mode, snaps, &tables, opts, prior.as_ref(), &origin),
                compare_matviews(&source_client, &state_client, &mv_schemas)
            );
            (checked, a, matviews)
        }
        Err(e) => {
            snaps.close().await;
            (Err(e), Vec::new(), Ok(Vec::new()))
        }
    };
    let Checked {
        outcomes,
        carried,
        journal,
        repair,
        rechecks,
    } = match result {
        Ok(r) => r,
        Err(e) => {
            let _ = state::verify::finish(
                &state_client,
                id,
                Outcome::Failed,
                &Totals {
                    seconds: started.elapsed().as_secs_f64(),
                    ..Totals::default()
                },
                serde_json::json!({ "error": e.to_string() }),
            )
            .await;
            return Err(e);
        }
    };
    let mut report = build_report(
        run,
        id,
        source,
        target,
        lsn,
        consistency,
        &tables,
        &outcomes,
        &carried,
        prior.as_ref().map(|p| p.id),
        repair,
        started.elapsed().as_secs_f64(),
    );
    report.equal &= aggregates.iter().all(|a| a.equal);
    report.continuous_aggregates = aggregates;
    report.materialized_views = matviews?;
    let mut results: Vec<ChunkResult> = outcomes
        .iter()
        .map(|o| {
            chunk_result(
                "check",
                &tables[o.task.table],
                o.task.chunk,
                &o.task.range,
                lsn,
                o.source,
                o.target,
                o.seconds,
            )
        })
        .collect();
    results.extend(rechecks);
    results.extend(carried.iter().map(|c| c.result.clone()));
    let table_results: Vec<TableResult> = tables
        .iter()
        .zip(&report.tables)
        .map(|(t, r)| TableResult {
            schema: t.schema.clone(),
            name: t.name.clone(),
            shape: crate::incremental::shape(t),
            chunks: r.chunks as i32,
            checked: r.checked as i32,
            carried: r.carried as i32,
            carried_from: r.carried_from.iter().min().copied(),
        })
        .collect();
    let totals = Totals {
        tables: tables.len() as i32,
        chunks: (outcomes.len() + carried.len()) as i32,
        mismatched_chunks: outcomes
            .iter()
            .filter(|o| !o.source.matches(&o.target))
            .count() as i32,
        differences: report
            .tables
            .iter()
            .map(|t| t.differences.len() as i64)
            .sum(),
        source_rows: report.tables.iter().map(|t| t.source_rows as i64).sum(),
        target_rows: report.tables.iter().map(|t| t.target_rows as i64).sum(),
        repair_lsn: report.repair.as_ref().map(|r| r.lsn),
        seconds: report.seconds,
    };
    let outcome = match (&report.repair, report.equal) {
        (_, true) => Outcome::Equal,
        (Some(r), false) if r.equal => Outcome::Repaired,
        _ => Outcome::Differ,
    };
    let tx = state_client
        .transaction()
        .await
        .map_err(sql("target", "begin recording results"))?;
    state::verify::record_chunks(&tx, id, &results).await?;
    state::verify::record_tables(&tx, id, &table_results).await?;
    if outcome == Outcome::Equal {
        // What the snapshot showed is covered; what came after stays for the next verify.
        state::changes::prune(&tx, &journal).await?;
    }
    state::verify::finish(
        &tx,
        id,
        outcome,
        &totals,
        serde_json::json!({ "note": report.note, "differing_tables": report.differing_tables().map(TableReport::display).collect::<Vec<_>>() }),
    )
    .await?;
    state::audit(
        &tx,
        run,
        "verify",
        Some(report.seconds),
        serde_json::json!({ "verify_id": id, "lsn": lsn, "result": outcome.as_str() }),
    )
    .await?;
    tx.commit()
        .await
        .map_err(sql("target", "commit the verify results"))?;
    Ok(report)
}

fn no_run(run: &str) -> Error {
    Error::Refused {
        what: format!("the target has no run named {run}"),
        fix: "verify compares a run's copy: run `bluegreen copy` first, or give its --run name"
            .into(),
    }
}

/// What the check (and repair) passes found.
struct Checked {
    outcomes: Vec<ChunkOutcome>,
    carried: Vec<Carried>,
    /// The change journals as the target snapshot showed them.
    journal: Journal,
    repair: Option<RepairReport>,
    rechecks: Vec<ChunkResult>,
}

/// Puts the watch trigger on green's tables (before the snapshot, so every later write by
/// another session is noticed; only before cutover: green must not take traffic with it),
/// and finds the base verify this one may carry chunks forward from.
async fn prepare_incremental(
    state_client: &Client,
    run_row: &Run,
    mode: &Mode,
    tables: &[VerifyTable],
    opts: &VerifyOptions,
) -> Result<Option<Prior>, Error> {
    let names: Vec<(String, String)> = tables
        .iter()
        .map(|t| (t.schema.clone(), t.name.clone()))
        .collect();
    let watched = state::changes::watched(state_client, &names).await?;
    if run_row.phase == Phase::Copied {
        // Only where missing: the trigger's lock would wait for the applier's open group.
        for t in tables
            .iter()
            .filter(|t| !watched.contains(&(t.schema.clone(), t.name.clone())))
        {
            let wait = Duration::from_secs(5);
            if let Err(e) = state::changes::watch(state_client, &t.schema, &t.name, wait).await {
                tracing::warn!(table = %t.display(), error = %e, "could not put the watch trigger on the table: the next verify checks it in full");
            }
        }
    }
    if opts.full || !matches!(mode, Mode::Online) {
        return Ok(None);
    }
    let Some(base) = state::verify::base(state_client, &run_row.run).await? else {
        return Ok(None);
    };
    let prior = Prior::new(base, tables, &watched);
    tracing::info!(
        base = prior.id,
        carry_candidates = prior.tables.iter().filter(|t| t.is_some()).count(),
        "incremental verify"
    );
    Ok(Some(prior))
}

/// The check pass at `snaps`, then (with `--repair` and differences) the repair at a fresh
/// instant. Releases any hold it took, also on errors.
async fn check_and_repair(
    sides: &Sides<'_>,
    mode: &Mode,
    snaps: Snapshots,
    tables: &[VerifyTable],
    opts: &VerifyOptions,
    prior: Option<&Prior>,
    origin: &str,
) -> Result<Checked, Error> {
    let checked = check_all(sides, &snaps, tables, opts, prior, origin).await;
    snaps.close().await;
    let (outcomes, carried, journal) = checked?;
    let mismatched: Vec<&ChunkOutcome> = outcomes
        .iter()
        .filter(|o| !o.source.matches(&o.target))
        .collect();
    if !opts.repair || mismatched.is_empty() {
        return Ok(Checked {
            outcomes,
            carried,
            journal,
            repair: None,
            rechecks: Vec::new(),
        });
    }
    // What to re-copy: the located ranges, plus ranges not narrowed down.
    let mut work: Vec<(&VerifyTable, Vec<KeyRange>)> = Vec::new();
    for o in &mismatched {
        let t = &tables[o.task.table];
        let mut ranges = Vec::new();
        match &o.located {
            Some(l) => {
                ranges.extend(l.ranges.iter().cloned());
                ranges.extend(l.unlocated.iter().map(|u| u.range.clone()));
            }
            None => ranges.push(o.task.range.clone()),
        }
        if ranges.iter().any(KeyRange::is_all) {
            ranges = vec![KeyRange::all()];
        }
        match work.iter_mut().find(|(wt, _)| std::ptr::eq(*wt, t)) {
            Some((_, v)) => v.extend(ranges),
            None => work.push((t, ranges)),
        }
    }
    let mut snaps = Snapshots::take(sides, mode, opts.hold_timeout, true).await?;
    let result = repair_and_recheck(sides, &mut snaps, &work).await;
    let released = snaps.release(sides).await;
    snaps.close().await;
    let (report, rechecks) = result?;
    released?;
    Ok(Checked {
        outcomes,
        carried,
        journal,
        repair: Some(report),
        rechecks,
    })
}

async fn repair_and_recheck(
    sides: &Sides<'_>,
    snaps: &mut Snapshots,
    work: &[(&VerifyTable, Vec<KeyRange>)],
) -> Result<(RepairReport, Vec<ChunkResult>), Error> {
    let src = reader(sides.source, "source", &snaps.source).await?;
    let mut tgt = conn::connect(sides.target)
        .await
        .map_err(conn_err("target"))?;
    tgt.batch_execute(SESSION_SETTINGS)
        .await
        .map_err(sql("target", "session settings"))?;
    let done = crate::repair::repair(&src, &mut tgt, work).await?;
    snaps.refresh_target().await?;
    let tgt_reader = reader(sides.target, "target", &snaps.target).await?;
    let pair = Pair {
        source: &src,
        target: &tgt_reader,
    };
    let lsn = snaps.lsn;
    let mut ranges = Vec::new();
    let mut rechecks = Vec::new();
    for (t, list) in work {
        for r in list {
            let t0 = Instant::now();
            let (s, d) = pair.digests(t, r).await?;
            rechecks.push(chunk_result(
                "recheck",
                t,
                rechecks.len(),
                r,
                lsn,
                s,
                d,
                t0.elapsed().as_secs_f64(),
            ));
            ranges.push(RepairedRange {
                schema: t.schema.clone(),
                name: t.name.clone(),
                range: r.clone(),
                equal: s.matches(&d),
            });
        }
    }
    Ok((
        RepairReport {
            lsn,
            consistency: snaps.consistency.clone(),
            equal: ranges.iter().all(|r| r.equal),
            ranges,
            rows_deleted: done.deleted,
            rows_copied: done.copied,
        },
        rechecks,
    ))
}

/// Plans every table's chunks (or, incrementally, takes the base's and keeps those that may
/// have changed) and checks them with up to `opts.jobs` workers (no more than there are
/// chunks), each holding one reader per side at the snapshots.
async fn check_all(
    sides: &Sides<'_>,
    snaps: &Snapshots,
    tables: &[VerifyTable],
    opts: &VerifyOptions,
    prior: Option<&Prior>,
    origin: &str,
) -> Result<(Vec<ChunkOutcome>, Vec<Carried>, Journal), Error> {
    // One reader pair plans the work; the others are opened (at once, not one after
    // another) only as far as there are chunks for them.
    let first = reader_pair(sides, snaps).await?;
    let journal = state::changes::read_journal(&first.1, origin).await?;
    let plans = match prior {
        Some(p) => crate::incremental::plan(&first.1, p, &journal, tables).await,
        None => tables.iter().map(|_| TablePlan::Full).collect(),
    };
    // Full tables' chunk bounds, their sampling queries pipelined on the one session.
    let bounds = try_join_all(tables.iter().zip(&plans).map(|(t, plan)| async {
        match plan {
            TablePlan::Full => crate::chunks::plan(&first.0, t, opts.chunk_bytes)
                .await
                .map(Some),
            TablePlan::Chunks { .. } => Ok(None),
        }
    }))
    .await?;
    let mut tasks = VecDeque::new();
    let mut carried = Vec::new();
    for (i, (plan, ranges)) in plans.into_iter().zip(bounds).enumerate() {
        match plan {
            TablePlan::Full => {
                for (c, range) in ranges.unwrap_or_default().into_iter().enumerate() {
                    tasks.push_back(Task {
                        table: i,
                        chunk: c,
                        range,
                        by_keys: None,
                    });
                }
            }
            TablePlan::Chunks { check, base } => {
                for (c, b) in base.into_iter().enumerate() {
                    if let Some(r) = check.iter().find(|r| r.chunk == c) {
                        let (range, digest, _) = crate::incremental::carried(&b);
                        tasks.push_back(Task {
                            table: i,
                            chunk: c,
                            range,
                            by_keys: r.keys.clone().map(|k| (k, digest)),
                        });
                    } else {
                        carried.push(Carried {
                            table: i,
                            result: b,
                        });
                    }
                }
            }
        }
    }
    let mut readers = vec![first];
    let more = opts.jobs.max(1).min(tasks.len().max(1)) - 1;
    readers.extend(try_join_all((0..more).map(|_| reader_pair(sides, snaps))).await?);
    let total = tasks.len();
    tracing::info!(chunks = total, "chunks planned");
    let tables = Arc::new(tables.to_vec());
    let budgets: Arc<Vec<AtomicI64>> = Arc::new(
        tables
            .iter()
            .map(|_| AtomicI64::new(opts.max_rows_per_table))
            .collect(),
    );
    let queue = Arc::new(Mutex::new(tasks));
    let done = Arc::new(AtomicU64::new(0));
    let ticker = {
        let done = done.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(10)).await;
                tracing::info!(chunks = %format!("{}/{total}", done.load(Ordering::Relaxed)), "verify progress");
            }
        })
    };
    let mut set = tokio::task::JoinSet::new();
    for (s, t) in readers {
        let (tables, budgets, queue, done) =
            (tables.clone(), budgets.clone(), queue.clone(), done.clone());
        set.spawn(async move { worker(s, t, &tables, &budgets, &queue, &done).await });
    }
    let mut all = Vec::with_capacity(total);
    let mut first_error = None;
    while let Some(res) = set.join_next().await {
        match res.unwrap_or_else(|e| Err(Error::Worker(e.to_string()))) {
            Ok(mut v) => all.append(&mut v),
            Err(e) => {
                if first_error.is_none() {
                    first_error = Some(e);
                    set.abort_all();
                }
            }
        }
    }
    ticker.abort();
    if let Some(e) = first_error {
        return Err(e);
    }
    all.sort_by_key(|o| (o.task.table, o.task.chunk));
    Ok((all, carried, journal))
}

/// A reader on each side at the snapshots.
async fn reader_pair(sides: &Sides<'_>, snaps: &Snapshots) -> Result<(Client, Client), Error> {
    tokio::try_join!(
        reader(sides.source, "source", &snaps.source),
        reader(sides.target, "target", &snaps.target)
    )
}

async fn worker(
    source: Client,
    target: Client,
    tables: &[VerifyTable],
    budgets: &[AtomicI64],
    queue: &Mutex<VecDeque<Task>>,
    done: &AtomicU64,
) -> Result<Vec<ChunkOutcome>, Error> {
    let pair = Pair {
        source: &source,
        target: &target,
    };
    let mut out = Vec::new();
    loop {
        let next = queue
            .lock()
            .map_err(|_| Error::Worker("task queue poisoned".into()))?
            .pop_front();
        let Some(task) = next else { break };
        let t = &tables[task.table];
        let t0 = Instant::now();
        let mut by_keys = None;
        let (s, d) = match &task.by_keys {
            Some((keys, last)) => match check_keys(&pair, t, &task.range, keys, last).await? {
                Some(digests) => {
                    by_keys = Some(keys.len());
                    digests
                }
                None => pair.digests(t, &task.range).await?,
            },
            None => pair.digests(t, &task.range).await?,
        };
        let located = if s.matches(&d) {
            None
        } else {
            tracing::info!(table = %t.display(), range = %task.range.describe(), "chunk differs; locating");
            Some(locate(&pair, t, task.range.clone(), s, d, &budgets[task.table]).await?)
        };
        done.fetch_add(1, Ordering::Relaxed);
        out.push(ChunkOutcome {
            task,
            source: s,
            target: d,
            seconds: t0.elapsed().as_secs_f64(),
            located,
            by_keys,
        });
    }
    Ok(out)
}

/// A chunk found equal at its last check, that only the applier wrote since, at `keys`:
/// every other row is as it was then, on both sides, so the chunk is equal now if the
/// rows at those keys are (compared as multisets of row hashes). Its digests then keep the
/// sums of its last whole hash, with its rows counted now. None: the rows at the keys
/// differ, or the counts do: hash the chunk whole (and locate what differs).
async fn check_keys(
    pair: &Pair<'_>,
    t: &VerifyTable,
    range: &KeyRange,
    keys: &[Vec<String>],
    last: &Digest,
) -> Result<Option<(Digest, Digest)>, Error> {
    use crate::rows::{count_rows, row_hashes_of_keys};
    let ((mut hs, bs), (mut ht, bt), ns, nt) = tokio::try_join!(
        row_hashes_of_keys(pair.source, "source", t, keys),
        row_hashes_of_keys(pair.target, "target", t, keys),
        count_rows(pair.source, "source", t, range),
        count_rows(pair.target, "target", t, range),
    )?;
    hs.sort_unstable();
    ht.sort_unstable();
    if hs != ht || ns != nt {
        tracing::info!(table = %t.display(), range = %range.describe(), "rows written since the last check differ: hashing the chunk whole");
        return Ok(None);
    }
    let digest = |rows, bytes| Digest {
        sum: last.sum,
        rows,
        bytes,
    };
    Ok(Some((digest(ns, bs), digest(nt, bt))))
}

#[allow(clippy::too_many_arguments)]
fn chunk_result(
    pass: &'static str,
    t: &VerifyTable,
    chunk: usize,
    range: &KeyRange,
    lsn: Lsn,
    s: Digest,
    d: Digest,
    seconds: f64,
) -> ChunkResult {
    ChunkResult {
        pass,
        table_schema: t.schema.clone(),
        table_name: t.name.clone(),
        chunk: chunk as i32,
        lower: range.lower.clone(),
        upper: range.upper.clone(),
        lsn,
        source_checksum: s.hex(),
        target_checksum: d.hex(),
        source_rows: s.rows as i64,
        target_rows: d.rows as i64,
        equal: s.matches(&d),
        seconds,
        carried_from: None,
    }
}

/// What the comparison means at this instant.
fn note(lsn: Lsn, c: &Consistency) -> String {
    match c {
        Consistency::Held => format!(
            "sync was running and held at {lsn} while the target snapshot was taken: both sides show the source's state at that LSN, so any difference is real"
        ),
        Consistency::Unheld { applied: None } => format!(
            "sync was not running and the target has applied no changes (no replication origin): it shows the copy's instant, so source changes committed between the copy and {lsn} show as differences"
        ),
        Consistency::Unheld { applied: Some(a) } => {
            if *a < lsn {
                format!(
                    "sync was not running; the target has applied up to {a}, behind the source snapshot at {lsn}: differences may be replication lag (start sync and verify again to compare at one LSN)"
                )
            } else {
                format!(
                    "sync was not running; the target has applied up to {a}, not behind the source snapshot at {lsn}: differences may be changes committed after {lsn}"
                )
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn build_report(
    run: &str,
    id: i64,
    source: &ConnSpec,
    target: &ConnSpec,
    lsn: Lsn,
    consistency: Consistency,
    tables: &[VerifyTable],
    outcomes: &[ChunkOutcome],
    carried: &[Carried],
    base: Option<i64>,
    repair: Option<RepairReport>,
    seconds: f64,
) -> Report {
    let mut reports: Vec<TableReport> = tables
        .iter()
        .map(|t| TableReport {
            schema: t.schema.clone(),
            name: t.name.clone(),
            key: t
                .key
                .as_ref()
                .map(|k| k.iter().map(|c| c.name.clone()).collect()),
            chunks: 0,
            checked: 0,
            checked_by_keys: 0,
            carried: 0,
            carried_from: Vec::new(),
            source_rows: 0,
            target_rows: 0,
            bytes: 0,
            mismatched_chunks: Vec::new(),
            differences: Vec::new(),
            unlocated: Vec::new(),
        })
        .collect();
    for c in carried {
        let r = &mut reports[c.table];
        r.chunks += 1;
        r.carried += 1;
        r.source_rows += c.result.source_rows as u64;
        r.target_rows += c.result.target_rows as u64;
        if let Some(from) = c.result.carried_from {
            if !r.carried_from.contains(&from) {
                r.carried_from.push(from);
            }
        }
    }
    let mut bytes = 0;
    for o in outcomes {
        let r = &mut reports[o.task.table];
        r.chunks += 1;
        r.checked += 1;
        r.checked_by_keys += usize::from(o.by_keys.is_some());
        r.source_rows += o.source.rows;
        r.target_rows += o.target.rows;
        bytes += o.source.bytes + o.target.bytes;
        r.bytes += o.source.bytes + o.target.bytes;
        if o.source.matches(&o.target) {
            continue;
        }
        r.mismatched_chunks.push(ChunkMismatch {
            chunk: o.task.chunk,
            range: o.task.range.clone(),
            source: o.source,
            target: o.target,
        });
        match &o.located {
            Some(l) => {
                r.differences.extend(l.diffs.iter().cloned());
                r.unlocated.extend(l.unlocated.iter().cloned());
            }
            None => r.unlocated.push(Unlocated {
                range: o.task.range.clone(),
                source: o.source,
                target: o.target,
                reason: "not located".into(),
            }),
        }
    }
    let equal = reports.iter().all(TableReport::equal);
    Report {
        format: REPORT_FORMAT,
        run: run.to_string(),
        verify_id: id,
        source: source.redacted(),
        target: target.redacted(),
        lsn,
        incremental_from: base,
        note: note(lsn, &consistency),
        consistency,
        equal,
        seconds,
        bytes,
        tables: reports,
        repair,
        materialized_views: Vec::new(),
        continuous_aggregates: Vec::new(),
    }
}

/// Each materialized view of the source's `schemas` against the target's of the same name:
/// row count and an order-independent digest of the rows on each side. Both sides' queries
/// go out at once (pipelined on each side's session), not one view and side after another.
async fn compare_matviews(
    source: &Client,
    target: &Client,
    schemas: &[String],
) -> Result<Vec<MatViewCheck>, Error> {
    use catalog::matviews::{digest, in_refresh_order, MatView};
    let (on_source, on_target) = tokio::try_join!(
        in_refresh_order(source, schemas),
        in_refresh_order(target, schemas)
    )?;
    // Informational: a view the source role may not read is left out, not an error.
    let mut readable = Vec::new();
    for v in on_source {
        let ok: bool = source
            .query_one(
                "SELECT has_table_privilege(to_regclass($1), 'SELECT')",
                &[&v.qualified()],
            )
            .await
            .map_err(sql("source", "check access to a materialized view"))?
            .get(0);
        if ok {
            readable.push(v);
        } else {
            tracing::warn!(view = %v.qualified(), "materialized view not compared: the source role may not read it");
        }
    }
    let on_source = readable;
    async fn side(c: &Client, v: Option<&MatView>) -> Result<Option<(i64, String)>, Error> {
        match v.filter(|v| v.populated) {
            Some(v) => Ok(Some(digest(c, v).await?)),
            None => Ok(None),
        }
    }
    let digests = try_join_all(on_source.iter().map(|v| {
        let t = on_target
            .iter()
            .find(|t| t.schema == v.schema && t.name == v.name);
        async move { tokio::try_join!(side(source, Some(v)), side(target, t)) }
    }))
    .await?;
    Ok(on_source
        .into_iter()
        .zip(digests)
        .map(|(v, (s, t))| MatViewCheck {
            equal: s == t,
            source_rows: s.as_ref().map(|(n, _)| *n),
            target_rows: t.as_ref().map(|(n, _)| *n),
            schema: v.schema,
            name: v.name,
        })
        .collect())
}
