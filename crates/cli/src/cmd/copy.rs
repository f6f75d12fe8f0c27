//! `bluegreen copy`: schema, data and sequences from one snapshot, with progress.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use catalog::PlanOptions;
use copy::{CopyOptions, Counters, TargetSchema};

use crate::args::{CopyArgs, TargetSchemaArg};
use crate::config::Settings;
use crate::render;
use crate::trouble::Trouble;
use crate::Outcome;

pub async fn run(args: CopyArgs, settings: &Settings) -> Result<Outcome, Trouble> {
    let profile = super::read_profile(args.profile.as_deref())?;
    let ((source_spec, source), (target_spec, target)) = super::connect_both(settings).await?;
    let schemas = if args.schemas.is_empty() {
        settings.schemas.clone()
    } else {
        args.schemas
    };
    let plan = catalog::build_plan(
        &source,
        source_spec.redacted(),
        &target,
        target_spec.redacted(),
        &PlanOptions { schemas, profile },
    )
    .await
    .map_err(|e| Trouble::catalog("plan", e))?;
    if args.chunk_mb < 1 {
        return Err(Trouble::new(
            "--chunk-mb must be at least 1",
            "give a size in MB, e.g. --chunk-mb 64",
        ));
    }
    let opts = CopyOptions {
        run: args.run,
        jobs: args
            .jobs
            .unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(2)
            })
            .max(1),
        chunk_bytes: args.chunk_mb * 1024 * 1024,
        target_schema: match args.target_schema {
            TargetSchemaArg::Dump => TargetSchema::Dump,
            TargetSchemaArg::Existing => TargetSchema::Existing,
        },
        no_owner: args.no_owner,
        no_privileges: args.no_privileges,
    };
    let counters = Arc::new(Counters::default());
    // A bar is no log line: JSON logs get the progress lines instead.
    let bar = (std::io::stderr().is_terminal() && !crate::logging::json()).then(new_bar);
    let ticker = tokio::spawn(show_progress(counters.clone(), bar.clone()));
    if args.join {
        let result = copy::join(&plan, &source_spec, &target_spec, &opts, counters).await;
        ticker.abort();
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        return match result {
            Ok(summary) => {
                print!("{}", render::join_summary(&summary));
                Ok(Outcome::Clean)
            }
            Err(e) => Err(Trouble::copy(e)),
        };
    }
    let result = copy::copy(&plan, &source_spec, &target_spec, &opts, counters).await;
    ticker.abort();
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    match result {
        Ok(summary) => {
            print!("{}", render::copy_summary(&summary));
            Ok(Outcome::Clean)
        }
        Err(copy::Error::Blocked(blockers)) => {
            println!("copy refused: nothing was touched on either server.");
            print!("{}", render::findings(&blockers));
            Ok(Outcome::Findings)
        }
        Err(e) => Err(Trouble::copy(e)),
    }
}

pub(crate) fn new_bar() -> indicatif::ProgressBar {
    let b = indicatif::ProgressBar::new(0);
    b.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {msg:<28} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    b
}

/// Draws the bar on a terminal (heap bytes of finished chunks against all chunks);
/// otherwise logs a progress line every 10 seconds.
pub(crate) async fn show_progress(c: Arc<Counters>, bar: Option<indicatif::ProgressBar>) {
    let mut last_log = std::time::Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (done, total) = (
            Counters::get(&c.est_bytes_done),
            Counters::get(&c.est_bytes_total),
        );
        let rows = Counters::get(&c.rows);
        let chunks = format!(
            "{}/{} chunks",
            Counters::get(&c.chunks_done),
            Counters::get(&c.chunks_total)
        );
        if let Some(b) = &bar {
            b.set_length(total.max(1));
            b.set_position(done.min(total));
            b.set_message(format!("{} {chunks}", c.phase()));
        } else if last_log.elapsed() >= Duration::from_secs(10) {
            last_log = std::time::Instant::now();
            tracing::info!(phase = %c.phase(), rows, bytes = Counters::get(&c.bytes), %chunks,
                items = %format!("{}/{}", Counters::get(&c.items_done), Counters::get(&c.items_total)), "progress");
        }
    }
}
