//! `bluegreen peek`: print a slot's changes on the source as JSON lines, without consuming
//! them (the slot's confirmed position never moves), or watch new changes through a
//! temporary slot.

use std::time::Duration;

use crate::args::PeekArgs;
use crate::config::Settings;
use crate::trouble::Trouble;
use crate::Outcome;

pub async fn run(args: PeekArgs, settings: &Settings) -> Result<Outcome, Trouble> {
    let source = settings.spec("source")?;
    let default_name = state::names::slot(&args.run);
    let start_lsn = args
        .start_lsn
        .as_deref()
        .map(|s| s.parse::<wire::Lsn>())
        .transpose()
        .map_err(|e| Trouble::new(e.to_string(), "give the LSN as X/Y, e.g. 0/16B3748"))?;
    let opts = wire::PeekOptions {
        slot: if args.temporary {
            wire::PeekSlot::Temporary(state::names::peek_slot())
        } else {
            wire::PeekSlot::Existing(args.slot.clone().unwrap_or_else(|| default_name.clone()))
        },
        publications: if args.publications.is_empty() {
            vec![default_name]
        } else {
            args.publications
        },
        start_lsn,
        limit: args.limit,
        duration: args.seconds.map(Duration::from_secs),
    };
    let summary = wire::peek::run(&source, &opts, &mut std::io::stdout())
        .await
        .map_err(trouble)?;
    let said = format!(
        "peek: {} message(s) from {}slot {}, up to {}; the slot was not moved",
        summary.messages,
        if summary.temporary { "temporary " } else { "" },
        summary.slot,
        summary.last_lsn
    );
    crate::logging::line("INFO", &said, &said, &[]);
    Ok(Outcome::Clean)
}

fn trouble(e: wire::Error) -> Trouble {
    let hint = match e.code() {
        Some(wire::sqlstate::UNDEFINED_OBJECT) => {
            "check --slot and --publication (copy creates bluegreen_<run> for both), or use --temporary"
        }
        Some(wire::sqlstate::OBJECT_IN_USE) => {
            "the slot is being consumed (is sync running?); use --temporary to watch new changes instead"
        }
        Some(wire::sqlstate::INSUFFICIENT_PRIVILEGE) => {
            "the source role needs the REPLICATION attribute: ALTER ROLE … REPLICATION"
        }
        Some(wire::sqlstate::INVALID_PASSWORD) => {
            "check the user and password (PGPASSWORD, ~/.pgpass, or password= in --source)"
        }
        _ => match &e {
            wire::Error::Conn(c) => c.hint(),
            wire::Error::Connect { .. } => "check host and port, and that the source server is running",
            wire::Error::Tls(_) => "check sslmode and sslrootcert",
            _ => "",
        },
    };
    Trouble::new(format!("source: {e}"), hint)
}
