//! `bluegreen abort`: remove what a run created, on whichever sides are given.

use crate::args::AbortArgs;
use crate::config::Settings;
use crate::trouble::Trouble;
use crate::Outcome;

pub async fn run(args: AbortArgs, settings: &Settings) -> Result<Outcome, Trouble> {
    let source = settings
        .source
        .is_some()
        .then(|| settings.spec("source"))
        .transpose()?;
    let target = settings
        .target
        .is_some()
        .then(|| settings.spec("target"))
        .transpose()?;
    if source.is_none() && target.is_none() {
        return Err(Trouble::new(
            "abort needs --source, --target or both",
            "give the source to drop the run's slot and publication, the target to remove its state",
        ));
    }
    // What cutover made for the reverse stream goes first: its run row would keep the
    // state schema alive, its slot would keep WAL on green.
    cutover::remove_reverse(&args.run, source.as_ref(), target.as_ref())
        .await
        .map_err(Trouble::cutover)?;
    let removed = copy::abort(&args.run, source.as_ref(), target.as_ref(), args.drop_data)
        .await
        .map_err(Trouble::copy)?;
    let said = |b: bool| if b { "removed" } else { "none found" };
    if source.is_some() {
        println!(
            "source: replication slot bluegreen_{}: {}",
            args.run,
            said(removed.slot)
        );
        println!(
            "source: publication bluegreen_{}: {}",
            args.run,
            said(removed.publication)
        );
    } else {
        println!(
            "source: not given; its slot and publication (bluegreen_{}) are left alone",
            args.run
        );
    }
    if target.is_some() {
        println!("target: state of run {}: {}", args.run, said(removed.state));
        for s in &removed.schemas_dropped {
            println!("target: schema {s}: dropped");
        }
    }
    Ok(Outcome::Clean)
}
