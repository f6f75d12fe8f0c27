//! `bluegreen verify`: checksums at one LSN on both sides, differences down to columns,
//! optional repair.

use std::time::Duration;

use catalog::PlanOptions;
use verify::VerifyOptions;

use crate::args::VerifyArgs;
use crate::config::Settings;
use crate::trouble::Trouble;
use crate::Outcome;

pub async fn run(args: VerifyArgs, settings: &Settings) -> Result<Outcome, Trouble> {
    if args.chunk_mb < 1 {
        return Err(Trouble::new(
            "--chunk-mb must be at least 1",
            "give a size in MB, e.g. --chunk-mb 8",
        ));
    }
    if args.max_rows < 1 {
        return Err(Trouble::new(
            "--max-rows must be at least 1",
            "give how many differing rows to list per table, e.g. --max-rows 1000",
        ));
    }
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
        &PlanOptions {
            schemas: schemas.clone(),
            profile: None,
        },
    )
    .await
    .map_err(|e| Trouble::catalog("plan", e))?;
    let opts = VerifyOptions {
        run: args.run.clone(),
        schemas,
        chunk_bytes: args.chunk_mb * 1024 * 1024,
        jobs: args
            .jobs
            .unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(2)
            })
            .max(1),
        repair: args.repair,
        full: args.full,
        hold_timeout: Duration::from_secs(args.hold_timeout),
        max_rows_per_table: args.max_rows,
    };
    let report = tokio::select! {
        r = verify::verify(&plan, &source_spec, &target_spec, &opts) => r,
        _ = tokio::signal::ctrl_c() => {
            // Only a hold this process asked for is released (never a cutover's).
            if verify::snapshot::holding() {
                if let Err(e) = state::release(&target, &args.run).await {
                    tracing::warn!(error = %e, "could not release the applier's hold");
                }
            }
            return Err(Trouble::new("interrupted", "run verify again; nothing was changed unless --repair had begun, and a repair commits all or nothing"));
        }
    };
    let report = match report {
        Ok(r) => r,
        // A finding about the run, not trouble: exit 1 with what finishes it.
        Err(e @ verify::Error::Incomplete { .. }) => {
            if args.json {
                let doc = serde_json::json!({ "run": args.run, "equal": false,
                    "copy_incomplete": true, "message": e.to_string(), "fix": e.hint() });
                println!("{doc:#}");
            } else {
                println!("NOT VERIFIED: {e}\n  fix: {}", e.hint());
            }
            return Ok(Outcome::Findings);
        }
        Err(e) => {
            let hint = e.hint();
            return Err(Trouble::new(e.to_string(), hint));
        }
    };
    if args.json {
        let json = serde_json::to_string_pretty(&report)
            .map_err(|e| Trouble::new(format!("cannot render the report as JSON: {e}"), ""))?;
        println!("{json}");
    } else {
        print!("{}", report.human());
    }
    Ok(if report.equal {
        Outcome::Clean
    } else {
        Outcome::Findings
    })
}
