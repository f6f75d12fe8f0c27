//! What must hold before a flip touches anything.

use state::ApplyStatus;

use crate::ctx::Ctx;
use crate::dbfile;
use crate::drain::held_by_another;
use crate::error::sql;
use crate::pooler::Admin;
use crate::{Direction, Error};

pub(crate) async fn check(cx: &mut Ctx<'_>) -> Result<(), Error> {
    let apply = ApplyStatus::get(&cx.state, &cx.apply_run).await?;
    let which = match cx.dir {
        Direction::Cutover => "bluegreen sync",
        Direction::Rollback => "bluegreen sync --reverse",
    };
    let Some(apply) = apply.filter(|a| a.running()) else {
        return Err(Error::Guardrail(format!(
            "{which} is not running for run {}",
            cx.opts.run
        )));
    };
    if let Some(e) = &apply.last_error {
        return Err(Error::Guardrail(format!("{which} reports an error: {e}")));
    }
    // Whatever --no-verify-check says: green is known to differ until a verify says otherwise.
    if matches!(cx.dir, Direction::Cutover) && apply.diverged() {
        return Err(Error::Guardrail(format!(
            "green diverged: {} UPDATE(s)/DELETE(s) found no row on green (latest at {}, source LSN {}): run bluegreen verify --repair; cutover needs a clean verify started after that",
            apply.diverged_rows,
            apply.diverged_at.as_deref().unwrap_or("-"),
            apply
                .diverged_lsn
                .map_or_else(|| "-".to_string(), |l| l.to_string()),
        )));
    }
    if apply.hold_lsn.is_some() {
        return Err(held_by_another(cx));
    }
    let lag = apply.lag_seconds.unwrap_or(f64::INFINITY);
    if lag > cx.opts.max_lag.as_secs_f64() {
        return Err(Error::Guardrail(format!(
            "{which} lags {lag:.1} s, more than --max-lag {:?}",
            cx.opts.max_lag
        )));
    }
    if let (Direction::Cutover, Some(max)) = (cx.dir, cx.opts.verify_max_age) {
        match state::verify::last_clean(&cx.state, &cx.opts.run).await? {
            Some((_, age)) if age <= max.as_secs_f64() => {}
            Some((lsn, age)) => {
                return Err(Error::Guardrail(format!(
                    "the last clean verify (at {lsn}) is {age:.0} s old, more than --verify-max-age {max:?}: run bluegreen verify"
                )))
            }
            None => {
                return Err(Error::Guardrail(
                    "no clean verify yet: run bluegreen verify (or pass --no-verify-check)".into(),
                ))
            }
        }
    }
    let long = cx
        .old
        .query(
            "SELECT pid, usename::text, application_name,
                    extract(epoch FROM clock_timestamp() - xact_start)::float8
               FROM pg_stat_activity
              WHERE datname = current_database() AND backend_type = 'client backend'
                AND pid <> pg_backend_pid() AND xact_start IS NOT NULL
                AND clock_timestamp() - xact_start > make_interval(secs => $1)
              ORDER BY xact_start LIMIT 3",
            &[&cx.opts.max_xact_age.as_secs_f64()],
        )
        .await
        .map_err(sql("old primary", "look for long transactions"))?;
    if let Some(r) = long.first() {
        return Err(Error::Guardrail(format!(
            "a transaction on the old primary has been open {:.0} s (pid {}, user {}, application {:?}), more than --max-xact-age {:?}: it would hold PAUSE",
            r.get::<_, f64>(3),
            r.get::<_, i32>(0),
            r.get::<_, String>(1),
            r.get::<_, String>(2),
            cx.opts.max_xact_age
        )));
    }
    for spec in &cx.opts.poolers {
        let admin = Admin::connect(spec, cx.opts.pause_timeout)
            .await
            .map_err(|e| Error::Guardrail(e.to_string()))?;
        if admin.target_of_db(cx.opts.pause_timeout).await?.is_none() {
            return Err(Error::Guardrail(format!(
                "pooler {} has no database {}",
                admin.name(),
                spec.db
            )));
        }
        let text = std::fs::read_to_string(&spec.file).map_err(|e| {
            Error::Guardrail(format!("databases file {}: {e}", spec.file.display()))
        })?;
        if dbfile::current(&text, &spec.db).is_none() {
            return Err(Error::Guardrail(format!(
                "databases file {} has no line for {}",
                spec.file.display(),
                spec.db
            )));
        }
        cx.admins.push(admin);
    }
    Ok(())
}
