//! The reverse stream cutover arms on green before green takes a write, so a rollback loses
//! nothing; and its removal (rollback's end, a failed cutover's undo, abort).

use conn::{quote_ident, ConnSpec};
use state::teardown;
use state::{ApplyStatus, Phase, Run};

use crate::ctx::Ctx;
use crate::error::sql;
use crate::{connect, reverse_run, Error};

/// TimescaleDB's catalog of chunk ranges (the name sync's `timescale::SLICE_TABLE` reads).
const SLICE_TABLE: (&str, &str) = ("_timescaledb_catalog", "dimension_slice");

/// Creates green's publication and slot for the reverse stream, and its run row, before green
/// takes a write: every write green takes after the flip is in the slot. Changes the forward
/// applier made on green carry its replication origin and are skipped by the reverse applier.
pub(crate) async fn arm(cx: &Ctx<'_>) -> Result<(), Error> {
    let name = state::names::slot(&reverse_run(&cx.opts.run));
    let mut list: Vec<String> = cx.schemas.iter().map(|s| quote_ident(s)).collect();
    let mut slices = String::new();
    // Green's hypertables change under their chunks' names, in TimescaleDB's schema.
    if state::policies::has_hypertables(&cx.state, &cx.schemas).await? {
        list.push(quote_ident("_timescaledb_internal"));
        // Chunks green drops (its retention policies run from cutover on) show only as
        // deletes of their dimension slices, as in the forward stream; the reverse applier
        // deletes their ranges on blue with TimescaleDB's functions, so only when blue
        // has the extension (without it, blue keeps those rows).
        // Whole old rows carry each slice's range, so a chunk green drops while the
        // reverse applier is not running (it starts after cutover) still applies.
        let table = conn::qualified(SLICE_TABLE.0, SLICE_TABLE.1);
        if state::policies::has_timescaledb(&cx.old).await? {
            match cx
                .state
                .batch_execute(&format!("ALTER TABLE {table} REPLICA IDENTITY FULL"))
                .await
            {
                Ok(()) => slices = format!(", TABLE {table}"),
                Err(e) => tracing::warn!(
                    error = %e,
                    "green's dropped chunks will not reach blue: cannot set REPLICA IDENTITY FULL on {table} (run it on green as its owner before cutover)"
                ),
            }
        }
    }
    cx.state
        .batch_execute(&format!(
            "DROP PUBLICATION IF EXISTS {0}; CREATE PUBLICATION {0} FOR TABLES IN SCHEMA {1}{slices}",
            quote_ident(&name),
            list.join(", ")
        ))
        .await
        .map_err(sql("green", "create the reverse publication"))?;
    // A slot left by an earlier cutover that was undone without its removal.
    teardown::drop_slot(&cx.state, &name).await?;
    // A checkpoint logs the running transactions, which a new slot otherwise waits for
    // (up to 15 s); without the right to run it, the slot just takes longer.
    if let Err(e) = cx.state.batch_execute("CHECKPOINT").await {
        tracing::debug!(error = %e, "CHECKPOINT before creating the reverse slot");
    }
    let mut repl = wire::ReplicationConnection::connect(cx.new_spec).await?;
    let slot = repl
        .create_slot(&name, false, wire::SnapshotAction::NoExport)
        .await?;
    repl.close().await;
    let rev = reverse_run(&cx.opts.run);
    Run::delete(&cx.state, &rev).await?;
    Run::insert(
        &cx.state,
        &state::NewRun {
            run: &rev,
            source: &cx.new_spec.redacted(),
            slot_name: &name,
            publication: &name,
            schemas: &cx.schemas,
        },
    )
    .await?;
    Run::set_snapshot(&cx.state, &rev, slot.consistent_point, "").await?;
    Run::set_phase(&cx.state, &rev, Phase::Copied).await?;
    Ok(())
}

pub(crate) async fn disarm(cx: &Ctx<'_>) -> Result<(), Error> {
    drop_on_green(&cx.state, &cx.opts.run).await
}

/// Removes what cutover created for the reverse stream: on green its slot (ending the
/// stream), publication and run row; on blue the reverse applier's session and replication
/// origin (with any prepared parts it left). For `bluegreen abort`; safe to run when none of
/// it exists; fails naming what stays in use rather than leave it behind silently.
pub async fn remove_reverse(
    run: &str,
    blue: Option<&ConnSpec>,
    green: Option<&ConnSpec>,
) -> Result<(), Error> {
    let rev = reverse_run(run);
    let mut apply_pid = None;
    if let Some(green) = green {
        let state = connect(green, "green").await?;
        if state::exists(&state).await? {
            if let Some(a) = ApplyStatus::get(&state, &rev).await? {
                state::request_stop(&state, &rev).await?;
                apply_pid = a.pid;
            }
            drop_on_green(&state, run).await?;
        }
    }
    if let Some(blue) = blue {
        let c = connect(blue, "blue").await?;
        c.batch_execute("SET default_transaction_read_only = off")
            .await
            .map_err(sql("blue", "session settings"))?;
        if let Some(pid) = apply_pid {
            c.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid = $1",
                &[&pid],
            )
            .await
            .map_err(sql("blue", "end the reverse applier"))?;
        }
        teardown::drop_origin(&c, &state::names::origin(&rev)).await?;
    }
    Ok(())
}

async fn drop_on_green(state: &tokio_postgres::Client, run: &str) -> Result<(), Error> {
    let name = state::names::slot(&reverse_run(run));
    teardown::drop_slot(state, &name).await?;
    teardown::drop_publication(state, &name).await?;
    Run::delete(state, &reverse_run(run)).await?;
    Ok(())
}
