//! `bluegreen status`: what the run's rows on the target say.

use serde_json::json;
use state::{ApplyStatus, Chunk, Phase, Run};

use crate::args::StatusArgs;
use crate::config::Settings;
use crate::render::bytes;
use crate::trouble::Trouble;
use crate::Outcome;

pub async fn run(args: StatusArgs, settings: &Settings) -> Result<Outcome, Trouble> {
    let target = settings.spec("target")?;
    let client = conn::connect(&target)
        .await
        .map_err(|e| Trouble::conn("target", e))?;
    let missing = || {
        Trouble::new(
            format!("no run {} on the target", args.run),
            "start one with bluegreen copy (or check --run and --target)",
        )
    };
    if !state::exists(&client)
        .await
        .map_err(|e| Trouble::state("target", e))?
    {
        return Err(missing());
    }
    let run = Run::get(&client, &args.run)
        .await
        .map_err(|e| Trouble::state("target", e))?
        .ok_or_else(missing)?;
    let tables = Chunk::summary(&client, &args.run)
        .await
        .map_err(|e| Trouble::state("target", e))?;
    let apply = ApplyStatus::get(&client, &args.run)
        .await
        .map_err(|e| Trouble::state("target", e))?;
    let reverse = ApplyStatus::get(&client, &state::names::reverse_run(&args.run))
        .await
        .map_err(|e| Trouble::state("target", e))?;
    // After cutover green's changes flow back to blue: that stream is the one to watch.
    let cut_over = run.phase == Phase::CutOver;
    let watched = if cut_over { &reverse } else { &apply };
    let which = if cut_over { "reverse sync" } else { "sync" };
    // Forward sync running on a copied run: the phase an operator would call it.
    let phase = if run.phase == Phase::Copied && apply.as_ref().is_some_and(|a| a.running()) {
        "syncing"
    } else {
        run.phase.as_str()
    };
    let flip = state::last_audit(
        &client,
        &args.run,
        &["cutover", "rollback", "cutover-aborted"],
    )
    .await
    .map_err(|e| Trouble::state("target", e))?;
    let verify = state::verify::latest(&client, &args.run)
        .await
        .map_err(|e| Trouble::state("target", e))?;
    let policies = state::policies::counts(&client, &run.schemas)
        .await
        .map_err(|e| Trouble::state("target", e))?;
    let refreshed = state::matviews::last(&client, &args.run)
        .await
        .map_err(|e| Trouble::state("target", e))?;
    let (chunks, done): (i64, i64) = tables
        .iter()
        .fold((0, 0), |(c, d), t| (c + t.chunks, d + t.done));
    let slot_on_source = slot_on_source(settings, &run.slot_name).await;
    let mut problems = problems(which, watched.as_ref(), args.max_lag);
    if slot_on_source == Some(false) {
        problems.insert(0, slot_gone(&run.slot_name));
    }
    let outcome = if problems.is_empty() {
        Outcome::Clean
    } else {
        Outcome::Findings
    };
    if args.json {
        let doc = json!({
            "format": STATUS_FORMAT,
            "run": run.run,
            "phase": phase,
            "slot": run.slot_name,
            "slot_on_source": slot_on_source,
            "publication": run.publication,
            "consistent_lsn": run.consistent_lsn,
            "schemas": run.schemas,
            "copy": { "chunks": chunks, "chunks_done": done },
            "sync": apply.as_ref().map(sync_json),
            "reverse_sync": reverse.as_ref().map(sync_json),
            "last_verify": verify.as_ref().map(|v| json!({
                "result": v.outcome.as_str(),
                "lsn": v.lsn,
                "mode": v.mode,
                "chunks": v.chunks,
                "mismatched_chunks": v.mismatched_chunks,
                "differences": v.differences,
                "seconds": v.seconds,
                "age_seconds": v.age_seconds,
            })),
            "last_flip": flip.as_ref().map(|(step, at, secs, detail)| json!({
                "step": step, "at": at, "paused_seconds": secs, "detail": detail,
            })),
            "timescaledb_policies": policies.map(|(started, paused)| json!({
                "started": started, "paused": paused,
            })),
            "matviews_refreshed": refreshed.as_ref().map(|r| json!({
                "at": r.at, "side": r.side, "by": r.by, "views": r.views,
            })),
            "healthy": problems.is_empty(),
            "problems": problems,
        });
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        return Ok(outcome);
    }
    println!(
        "run {}: phase {}, slot {}, publication {}, copied at {}",
        run.run,
        phase,
        run.slot_name,
        run.publication,
        show_lsn(run.consistent_lsn)
    );
    if slot_on_source == Some(false) {
        println!(
            "{}: sync cannot go on; start over with bluegreen abort --target, then copy",
            slot_gone(&run.slot_name)
        );
    }
    println!("copy: {done}/{chunks} chunks of {} tables", tables.len());
    print_sync("sync", apply.as_ref());
    if cut_over || reverse.is_some() {
        print_sync("reverse sync", reverse.as_ref());
    }
    match &verify {
        None => println!("verify: none yet"),
        Some(v) => println!(
            "verify: {} at {} ({}), {} chunks, {} mismatched, {} differences, took {:.1} s, {:.0} s ago",
            v.outcome.as_str(),
            v.lsn,
            v.mode,
            v.chunks.unwrap_or(0),
            v.mismatched_chunks.unwrap_or(0),
            v.differences.unwrap_or(0),
            v.seconds.unwrap_or(0.0),
            v.age_seconds
        ),
    }
    if let Some((step, at, secs, detail)) = flip {
        match secs {
            Some(s) => println!("last {step}: {at}, clients paused {:.0} ms", s * 1000.0),
            None => println!(
                "last {step}: {at}{}",
                detail
                    .as_ref()
                    .and_then(|d| d
                        .get("error")
                        .and_then(|e| e.as_str())
                        .map(|e| format!(" ({e})")))
                    .unwrap_or_default()
            ),
        }
    }
    if let Some((started, paused)) = policies.filter(|(s, p)| s + p > 0) {
        println!(
            "TimescaleDB policies on green: {paused} paused, {started} started{}",
            if paused > 0 {
                " (green keeps every row blue has until cutover starts them)"
            } else {
                ""
            }
        );
    }
    if let Some(r) = &refreshed {
        println!(
            "materialized views: {} refreshed on {} by {} at {} (their rows are not replicated: each flip refreshes the new primary's before the pause)",
            r.views, r.side, r.by, r.at
        );
    }
    if problems.is_empty() {
        println!(
            "healthy: {which} running, no error, lag under {}",
            show_secs(args.max_lag)
        );
    } else {
        println!("not healthy: {}", problems.join("; "));
    }
    Ok(outcome)
}

/// Whether the run's slot is on the source, when a source is given (None: not given or not
/// reachable; status reads the target and works without it).
async fn slot_on_source(settings: &Settings, slot: &str) -> Option<bool> {
    let spec = settings.source.as_ref().and(settings.spec("source").ok())?;
    let check = async {
        let client = conn::connect(&spec).await.map_err(|e| e.to_string())?;
        let row = client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = $1)",
                &[&slot],
            )
            .await
            .map_err(|e| conn::pg_message(&e))?;
        Ok::<bool, String>(row.get(0))
    };
    // A probe must answer: a source that does not within the bound is left unchecked.
    match tokio::time::timeout(SOURCE_CHECK_BOUND, check).await {
        Ok(Ok(present)) => Some(present),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "source not reachable: the slot is not checked");
            None
        }
        Err(_) => {
            tracing::warn!("source gave no answer within 10 s: the slot is not checked");
            None
        }
    }
}

const SOURCE_CHECK_BOUND: std::time::Duration = std::time::Duration::from_secs(10);

fn slot_gone(slot: &str) -> String {
    format!("replication slot {slot} is gone from the source")
}

/// Version of `status --json`'s shape; fields are only ever added.
const STATUS_FORMAT: u32 = 1;

/// Why the run is not healthy as a probe sees it (exit 1): sync not running, an error, or
/// lag past `max_lag` seconds.
fn problems(which: &str, apply: Option<&ApplyStatus>, max_lag: f64) -> Vec<String> {
    let Some(a) = apply else {
        return vec![format!("{which} has never run")];
    };
    let mut out = Vec::new();
    if !a.running() {
        out.push(format!("{which} is not running"));
    }
    if let Some(e) = &a.last_error {
        out.push(format!("{which} reports an error: {e}"));
    }
    if a.diverged() {
        out.push(format!(
            "green diverged ({} update(s)/delete(s) found no row) and no clean verify has looked since",
            a.diverged_rows
        ));
    }
    match a.lag_seconds {
        Some(lag) if lag > max_lag => out.push(format!(
            "lag {lag:.1} s is more than --max-lag {}",
            show_secs(max_lag)
        )),
        _ => {}
    }
    out
}

fn show_secs(s: f64) -> String {
    format!("{s} s")
}

/// One applier's row as `status --json` shows it (forward or reverse sync).
fn sync_json(a: &ApplyStatus) -> serde_json::Value {
    json!({
        "running": a.running(),
        "heartbeat_age_seconds": a.heartbeat_age,
        "applied_lsn": a.applied_lsn,
        "received_lsn": a.received_lsn,
        "source_lsn": a.source_lsn,
        "lag_bytes": a.lag_bytes,
        "lag_seconds": a.lag_seconds,
        "rows_per_second": a.rows_per_second,
        "retained_wal_bytes": a.retained_bytes,
        "last_error": a.last_error,
        "hold_lsn": a.hold_lsn,
        "held_lsn": a.held_lsn,
        "prepared_parts": a.prepared_parts,
        "diverged_rows": a.diverged_rows,
        "diverged_at": a.diverged_at,
        "diverged_lsn": a.diverged_lsn,
        "diverged": a.diverged(),
    })
}

/// One applier's row as lines for a person (`which`: "sync" or "reverse sync").
fn print_sync(which: &str, apply: Option<&ApplyStatus>) {
    let Some(a) = apply else {
        println!("{which}: never started");
        return;
    };
    println!(
        "{which}: {}{}",
        if a.running() {
            "running"
        } else {
            "not running"
        },
        a.heartbeat_age
            .map(|s| format!(" (last heartbeat {s:.1} s ago)"))
            .unwrap_or_default()
    );
    println!(
        "  applied {}  received {}  source {}",
        show_lsn(a.applied_lsn),
        show_lsn(a.received_lsn),
        show_lsn(a.source_lsn)
    );
    println!(
        "  lag {} / {:.1} s, {:.0} rows/s, WAL retained on the source {}",
        a.lag_bytes.map(bytes).unwrap_or_else(|| "-".into()),
        a.lag_seconds.unwrap_or(0.0),
        a.rows_per_second.unwrap_or(0.0),
        a.retained_bytes.map(bytes).unwrap_or_else(|| "-".into())
    );
    if let Some(h) = &a.hold_lsn {
        println!(
            "  hold requested at {h}{}",
            if a.held_lsn.is_some() {
                " (holding)"
            } else {
                ""
            }
        );
    }
    if let Some(e) = &a.last_error {
        println!("  last error: {e}");
    }
    if a.diverged() {
        println!(
            "  error: green diverged: {} UPDATE(s)/DELETE(s) found no row on green (latest at {}, source LSN {}); run bluegreen verify --repair: cutover refuses until a verify started after that is clean",
            a.diverged_rows,
            a.diverged_at.as_deref().unwrap_or("-"),
            show_lsn(a.diverged_lsn)
        );
    } else if a.diverged_rows > 0 {
        println!(
            "  {} UPDATE(s)/DELETE(s) found no row on green (latest at {}); a later verify was clean",
            a.diverged_rows,
            a.diverged_at.as_deref().unwrap_or("-")
        );
    }
    if a.prepared_parts > 0 && !a.running() {
        println!(
            "  {} prepared part(s) of a group left by a stopped sync hold row locks on the target: the next sync finishes them, abort rolls them back",
            a.prepared_parts
        );
    }
}

/// An LSN as the server prints it, `-` for none.
fn show_lsn(l: Option<wire::Lsn>) -> String {
    l.map_or_else(|| "-".into(), |l| l.to_string())
}
