//! Post-data items (keys, indexes, foreign keys, triggers, materialized view data): each is
//! built and marked done in one target transaction. The pipeline decides which and when.

use std::time::{Duration, Instant};

use conn::ConnSpec;
use state::PostDataItem;
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use crate::error::{sql, Error};
use crate::progress::Counters;

/// A target session for post-data work, with pg_dump's session settings.
pub async fn open(target: &ConnSpec, preamble: &str) -> Result<Client, Error> {
    let tgt = conn::connect(target).await.map_err(|e| Error::Conn {
        side: "target",
        source: e,
    })?;
    tgt.batch_execute(preamble)
        .await
        .map_err(sql("target", "post-data session settings"))?;
    Ok(tgt)
}

/// How long an item waits on the server for a lock before it sits out (`Outcome::Locked`) and
/// its job takes other work. One process's scheduler never starts two items whose locks
/// conflict, but it cannot see a `copy --join` worker's: a key's ACCESS EXCLUSIVE attach
/// waiting behind another process's index build held its job idle for seconds.
pub(crate) const LOCK_WAIT: Duration = Duration::from_millis(50);

/// The target's sessions that are not bluegreen's and have had a transaction open for at
/// least `over` (each as "pid N (application, state, S s)"): who may hold a lock an item
/// keeps being refused. Bounded: a diagnosis must not hold the copy.
pub(crate) async fn long_transactions(tgt: &Client, over: Duration) -> Result<Vec<String>, String> {
    let secs = over.as_secs_f64();
    let rows = tokio::time::timeout(
        Duration::from_secs(5),
        tgt.query(
            "SELECT pid, coalesce(nullif(application_name, ''), 'no application name'),
                    coalesce(state, '-'), extract(epoch FROM now() - xact_start)::int
               FROM pg_stat_activity
              WHERE datname = current_database() AND pid <> pg_backend_pid()
                AND xact_start < now() - make_interval(secs => $1)
                AND application_name NOT LIKE 'bluegreen%'
              ORDER BY xact_start",
            &[&secs],
        ),
    )
    .await
    .map_err(|_| "the target did not list its sessions within 5 s".to_string())?
    .map_err(|e| conn::pg_message(&e))?;
    Ok(rows
        .iter()
        .map(|r| {
            format!(
                "pid {} ({}, {}, {} s)",
                r.get::<_, i32>(0),
                r.get::<_, String>(1),
                r.get::<_, String>(2),
                r.get::<_, i32>(3)
            )
        })
        .collect())
}

/// What became of one item.
pub enum Outcome {
    Done,
    /// Built already (by an earlier or another process).
    AlreadyDone,
    /// Another process holds it, or a deadlock rolled it back: try again later.
    Retry,
    /// A table lock it needs was not granted within `LOCK_WAIT` (`what`: its kind and
    /// name): try again later, like `Retry`.
    Locked {
        what: String,
    },
}

/// Claims item number `item` and runs its SQL (or `sql` instead), in one transaction; with
/// `finish` the item is marked done (built by `by`) in that transaction too.
pub async fn build_item(
    tgt: &mut Client,
    run: &str,
    item: i32,
    sql_instead: Option<&str>,
    finish: bool,
    counters: &Counters,
    by: &str,
) -> Result<Outcome, Error> {
    let tx = tgt.transaction().await.map_err(sql("target", "begin"))?;
    let Some(item) = PostDataItem::claim_one(&tx, run, item).await? else {
        let done = PostDataItem::is_done(&tx, run, item).await?;
        return Ok(if done {
            Outcome::AlreadyDone
        } else {
            Outcome::Retry
        });
    };
    let started = Instant::now();
    let statements = format!(
        "SET LOCAL lock_timeout = '{}ms';\n{}",
        LOCK_WAIT.as_millis(),
        sql_instead.unwrap_or(&item.sql)
    );
    match tx.batch_execute(&statements).await {
        Ok(()) => {
            if finish {
                item.finish(&tx, run, started.elapsed().as_secs_f64(), by)
                    .await?;
            }
            tx.commit()
                .await
                .map_err(sql("target", format!("commit {} {}", item.kind, item.name)))?;
            if finish {
                Counters::add(&counters.items_done, 1);
            }
            tracing::debug!(kind = %item.kind, name = %item.name, finish, seconds = started.elapsed().as_secs_f64(), "built");
            Ok(Outcome::Done)
        }
        // Two foreign keys between the same tables can deadlock; the loser retries.
        Err(e) if e.code() == Some(&SqlState::T_R_DEADLOCK_DETECTED) => Ok(Outcome::Retry),
        // A lock held elsewhere is waited for by sitting out, not on the server (LOCK_WAIT).
        Err(e) if e.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => Ok(Outcome::Locked {
            what: format!("{} {}", item.kind, item.name),
        }),
        Err(e) => Err(sql("target", format!("build {} {}", item.kind, item.name))(
            e,
        )),
    }
}

/// A primary key or unique constraint as pg_dump writes it for a plain table,
/// `ALTER TABLE ONLY t ADD CONSTRAINT c PRIMARY KEY (a, b);`, split in two steps with the
/// same result: `CREATE UNIQUE INDEX IF NOT EXISTS c ON t USING btree (a, b);` (SHARE lock:
/// it builds beside the table's other indexes), then `ADD CONSTRAINT c PRIMARY KEY USING
/// INDEX c` (a moment of ACCESS EXCLUSIVE). None for anything else (options, deferrable,
/// NULLS NOT DISTINCT, a tablespace, …): that is built as written.
pub fn split_key(sql: &str) -> Option<(String, String)> {
    let body: String = sql
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n");
    let rest = body.strip_prefix("ALTER TABLE ONLY ")?;
    let (table, rest) = rest.split_once("\n    ADD CONSTRAINT ")?;
    let (kind, at) = ["PRIMARY KEY", "UNIQUE"]
        .iter()
        .filter_map(|k| rest.find(&format!(" {k} (")).map(|at| (*k, at)))
        .min_by_key(|(_, at)| *at)?;
    let name = &rest[..at];
    let cols = rest[at + kind.len() + 3..].strip_suffix(");")?;
    let mut parts = table.splitn(2, '.');
    let (schema, rel) = (parts.next()?, parts.next()?);
    if !(is_ident(schema) && is_ident(rel) && is_ident(name)) {
        return None;
    }
    if cols.is_empty() || !cols.split(", ").all(is_ident) {
        return None;
    }
    Some((
        format!("CREATE UNIQUE INDEX IF NOT EXISTS {name} ON {table} USING btree ({cols});\n"),
        format!("ALTER TABLE ONLY {table}\n    ADD CONSTRAINT {name} {kind} USING INDEX {name};\n"),
    ))
}

/// One identifier as pg_dump writes it: lower-case bare word, or double-quoted.
fn is_ident(s: &str) -> bool {
    if let Some(inner) = s.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
        !inner.is_empty() && !inner.replace("\"\"", "").contains('"')
    } else {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '$')
            && !s.starts_with(|c: char| c.is_ascii_digit() || c == '$')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_plain_keys_only() {
        let (build, attach) = split_key(
            "--\n\nALTER TABLE ONLY factory_telemetry.metric_hist\n    ADD CONSTRAINT metric_hist_pkey PRIMARY KEY (id);\n\n\n",
        )
        .unwrap();
        assert_eq!(
            build,
            "CREATE UNIQUE INDEX IF NOT EXISTS metric_hist_pkey ON factory_telemetry.metric_hist USING btree (id);\n"
        );
        assert_eq!(
            attach,
            "ALTER TABLE ONLY factory_telemetry.metric_hist\n    ADD CONSTRAINT metric_hist_pkey PRIMARY KEY USING INDEX metric_hist_pkey;\n"
        );
        let (build, attach) = split_key(
            "ALTER TABLE ONLY s.\"Shift Notes\"\n    ADD CONSTRAINT \"Shift Notes_u\" UNIQUE (\"LineId\", shift_date);\n",
        )
        .unwrap();
        assert_eq!(
            build,
            "CREATE UNIQUE INDEX IF NOT EXISTS \"Shift Notes_u\" ON s.\"Shift Notes\" USING btree (\"LineId\", shift_date);\n"
        );
        assert!(attach
            .ends_with("ADD CONSTRAINT \"Shift Notes_u\" UNIQUE USING INDEX \"Shift Notes_u\";\n"));
        for other in [
            "ALTER TABLE ONLY s.t\n    ADD CONSTRAINT t_pkey PRIMARY KEY (id) DEFERRABLE;\n",
            "ALTER TABLE ONLY s.t\n    ADD CONSTRAINT t_pkey PRIMARY KEY (id) WITH (fillfactor='50');\n",
            "ALTER TABLE ONLY s.t\n    ADD CONSTRAINT t_u UNIQUE NULLS NOT DISTINCT (a);\n",
            "ALTER TABLE ONLY s.t\n    ADD CONSTRAINT t_pkey PRIMARY KEY (id) INCLUDE (v);\n",
            "ALTER TABLE ONLY s.t\n    ADD CONSTRAINT t_x EXCLUDE USING gist (r WITH &&);\n",
            "SET default_tablespace = ts;\nALTER TABLE ONLY s.t\n    ADD CONSTRAINT t_pkey PRIMARY KEY (id);\n",
            "ALTER TABLE ONLY s.t\n    ADD CONSTRAINT t_pkey PRIMARY KEY (id);\nCOMMENT ON CONSTRAINT t_pkey ON s.t IS 'x';\n",
            "ALTER TABLE ONLY s.t\n    ADD CONSTRAINT \"t\"x\" PRIMARY KEY (id);\n",
        ] {
            assert!(split_key(other).is_none(), "{other}");
        }
    }
}
