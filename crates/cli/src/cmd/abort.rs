//! `bluegreen abort`: remove what a run created, on whichever sides are given.

use crate::args::AbortArgs;
use crate::config::Settings;
use crate::trouble::Trouble;
use crate::Outcome;
use copy::DropData;

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
    // Refused drops touch nothing on either side: check before the reverse stream goes.
    if let (Some(t), true) = (target.as_ref(), args.drop_data) {
        if let Some(refusal) = copy::drop_data_refusal(&args.run, t)
            .await
            .map_err(Trouble::copy)?
        {
            print_refusal(&args.run, &refusal);
            return Ok(Outcome::Findings);
        }
    }
    // A flip that died mid-way is put right first (traffic back, poolers resumed), and the
    // run's fences are lifted, but blue's after a completed cutover.
    if let Some(t) = target.as_ref() {
        let poolers = crate::cmd::cutover::poolers(&args.poolers, settings)?;
        let before = cutover::before_abort(
            &args.run,
            source.as_ref(),
            t,
            poolers,
            std::time::Duration::from_secs(5),
        )
        .await
        .map_err(Trouble::cutover)?;
        if let Some(r) = before.recovery {
            println!("{r}");
        }
        for side in &before.lifted {
            println!(
                "{}: fence lifted (read-only reset, CONNECT given back)",
                side.as_str()
            );
        }
        for (side, stmts) in &before.kept {
            println!(
                "{}: stays fenced (read-only, CONNECT revoked); to open it again run there:",
                side.as_str()
            );
            for s in stmts {
                println!("  {s};");
            }
        }
    }
    // What cutover made for the reverse stream goes first: its run row would keep the
    // state schema alive, its slot would keep WAL on green.
    cutover::remove_reverse(&args.run, source.as_ref(), target.as_ref())
        .await
        .map_err(Trouble::cutover)?;
    let removed = copy::abort(&args.run, source.as_ref(), target.as_ref(), args.drop_data)
        .await
        .map_err(Trouble::copy)?;
    if matches!(removed.data, DropData::Blocked(_) | DropData::NotRecorded) {
        print_refusal(&args.run, &removed.data);
        return Ok(Outcome::Findings);
    }
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
    let mut outcome = Outcome::Clean;
    if target.is_some() {
        println!("target: state of run {}: {}", args.run, said(removed.state));
        for s in &removed.schemas_not_created {
            println!("target: schema {s}: kept (it existed before the copy; only objects the run created are dropped)");
        }
        if !removed.kept.is_empty() {
            let kinds: Vec<String> = removed
                .kept
                .iter()
                .map(|(k, n)| format!("{n} {k}"))
                .collect();
            println!(
                "target: objects the run's copy created: kept ({}); their record went with the run's state, so drop them by hand if unwanted",
                kinds.join(", ")
            );
        }
        match &removed.data {
            DropData::NotAsked | DropData::Blocked(_) | DropData::NotRecorded => {}
            DropData::NoRecord => {
                println!(
                    "target: no record of what run {} created (a plain abort removes it, or the run never copied here): nothing dropped; anything it copied stays",
                    args.run
                );
                outcome = Outcome::Findings;
            }
            DropData::Dropped(d) => print_dropped(d),
        }
    }
    Ok(outcome)
}

fn print_refusal(run: &str, refusal: &DropData) {
    match refusal {
        DropData::Blocked(blockers) => {
            println!("target: objects that run {run} did not create depend on what it created:");
            for (dependent, on) in blockers {
                println!("  {dependent} (depends on {on})");
            }
            println!("nothing was removed on either side: drop or change those objects, then run abort --drop-data again (or plain abort to keep the data)");
        }
        _ => println!(
            "target: run {run} was copied by a bluegreen that kept no record of what it created, so --drop-data cannot tell its objects from others: nothing was removed on either side; drop the copied objects by hand, then run abort without --drop-data"
        ),
    }
}

fn print_dropped(d: &copy::Dropped) {
    let mut kinds: Vec<(&str, usize)> = Vec::new();
    for (k, identity) in &d.objects {
        if k == "schema" {
            println!("target: schema {identity}: dropped");
            continue;
        }
        match kinds.iter_mut().find(|(x, _)| x == k) {
            Some((_, n)) => *n += 1,
            None => kinds.push((k, 1)),
        }
    }
    if kinds.is_empty() {
        println!("target: the run's copy created no objects here (with --target-schema existing the tables are the operator's): nothing dropped");
    } else {
        let list: Vec<String> = kinds.iter().map(|(k, n)| format!("{n} {k}")).collect();
        println!(
            "target: dropped what the run's copy created: {}",
            list.join(", ")
        );
    }
    for (schema, contents) in &d.kept_schemas {
        println!("target: schema {schema}: kept, it holds objects the run did not create:");
        for c in contents {
            println!("  {c}");
        }
    }
    for g in &d.gone {
        println!("target: {g}: already gone");
    }
    for u in &d.unknown {
        println!("target: {u}: kept (this bluegreen does not drop that kind of object)");
    }
}
