//! `bluegreen report`: renders a run's report again, from the target's state schema or
//! from a report directory.

use crate::args::ReportArgs;
use crate::config::Settings;
use crate::trouble::Trouble;
use crate::Outcome;

pub async fn run(args: ReportArgs, settings: &Settings) -> Result<Outcome, Trouble> {
    // The run name makes the default directory's name: no paths through it.
    copy::names::validate_run(&args.run).map_err(Trouble::copy)?;
    let dir = args
        .report_dir
        .clone()
        .unwrap_or_else(|| report::default_dir(&args.run));
    let report = match settings.target {
        Some(_) => {
            let target = settings.spec("target")?;
            let client = conn::connect(&target)
                .await
                .map_err(|e| Trouble::conn("target", e))?;
            report::load(&client, &args.run)
                .await
                .map_err(Trouble::from_report)?
                .ok_or_else(|| {
                    Trouble::new(
                        format!("no report of run {} on the target", args.run),
                        "bluegreen run and run --dry-run write one; check --run and --target, or render a report directory's report.json without a target (--report-dir DIR)",
                    )
                })?
        }
        None => report::read_dir(&dir).map_err(Trouble::from_report)?,
    };
    let written = report::write_dir(&report, &dir).map_err(Trouble::from_report)?;
    print!("{}", report::summary(&report));
    println!(
        "wrote {} and {}",
        written.json.display(),
        written.html.display()
    );
    Ok(Outcome::Clean)
}
