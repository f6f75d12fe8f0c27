//! One row per run: its source-side artifacts (slot, publication), the instant its copy
//! stands at, and how far it got.

use tokio_postgres::Client;

use crate::{q, Error, GenericClient};

/// How far a run's copy got. Later phases belong to later stages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// The row exists; publication and slot may or may not exist yet.
    Creating,
    /// Schema pre-data applied, chunks planned; data being copied.
    Data,
    /// Data and sequences copied; indexes, constraints, triggers being built.
    PostData,
    /// Everything copied; streaming may start at the chunks' snapshot LSNs.
    Copied,
    /// Traffic moved to green; the reverse stream carries green's writes to blue.
    /// (A rollback moves the run back to `Copied`: blue is the primary again.)
    CutOver,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Creating => "creating",
            Phase::Data => "data",
            Phase::PostData => "post-data",
            Phase::Copied => "copied",
            Phase::CutOver => "cut-over",
        }
    }

    fn parse(s: &str) -> Result<Phase, Error> {
        Ok(match s {
            "creating" => Phase::Creating,
            "data" => Phase::Data,
            "post-data" => Phase::PostData,
            "copied" => Phase::Copied,
            "cut-over" => Phase::CutOver,
            other => return Err(Error::Corrupt(other.into())),
        })
    }
}

#[derive(Debug, Clone)]
pub struct Run {
    pub run: String,
    pub phase: Phase,
    pub source: String,
    pub slot_name: String,
    pub publication: String,
    /// The slot's consistent point, as `X/Y`.
    pub consistent_lsn: Option<lsn::Lsn>,
    pub schemas: Vec<String>,
    /// pg_dump's post-data script, kept so a resumed run needs no snapshot for it.
    pub post_data: Option<String>,
}

pub struct NewRun<'a> {
    pub run: &'a str,
    pub source: &'a str,
    pub slot_name: &'a str,
    pub publication: &'a str,
    pub schemas: &'a [String],
}

impl Run {
    pub async fn get(c: &impl GenericClient, run: &str) -> Result<Option<Run>, Error> {
        let row = c
            .query_opt(
                "SELECT run, phase, source, slot_name, publication, consistent_lsn::text,
                        schemas, post_data
                   FROM bluegreen.runs WHERE run = $1",
                &[&run],
            )
            .await
            .map_err(q("read run"))?;
        row.map(|r| {
            Ok(Run {
                run: r.get(0),
                phase: Phase::parse(r.get(1))?,
                source: r.get(2),
                slot_name: r.get(3),
                publication: r.get(4),
                consistent_lsn: r.get(5),
                schemas: r.get(6),
                post_data: r.get(7),
            })
        })
        .transpose()
    }

    pub async fn insert(c: &impl GenericClient, n: &NewRun<'_>) -> Result<(), Error> {
        c.execute(
            "INSERT INTO bluegreen.runs (run, phase, source, slot_name, publication, schemas)
             VALUES ($1, 'creating', $2, $3, $4, $5)",
            &[&n.run, &n.source, &n.slot_name, &n.publication, &n.schemas],
        )
        .await
        .map(|_| ())
        .map_err(q("insert run"))
    }

    pub async fn set_phase(c: &impl GenericClient, run: &str, phase: Phase) -> Result<(), Error> {
        c.execute(
            "UPDATE bluegreen.runs SET phase = $2, updated_at = now() WHERE run = $1",
            &[&run, &phase.as_str()],
        )
        .await
        .map(|_| ())
        .map_err(q("set phase"))
    }

    /// Records the instant the copy stands at and the post-data script taken at it.
    pub async fn set_snapshot(
        c: &impl GenericClient,
        run: &str,
        consistent_lsn: lsn::Lsn,
        post_data: &str,
    ) -> Result<(), Error> {
        c.execute(
            "UPDATE bluegreen.runs SET consistent_lsn = $2::text::pg_lsn, post_data = $3,
                    updated_at = now() WHERE run = $1",
            &[&run, &consistent_lsn, &post_data],
        )
        .await
        .map(|_| ())
        .map_err(q("record snapshot"))
    }

    /// Removes the run and everything recorded for it but its audit log, which bluegreen
    /// only ever appends to (a trigger refuses UPDATE, DELETE and TRUNCATE on it; see the
    /// migration): the entries stay, and a later run of the same name reads only its own
    /// (those at or after its `created_at`, [`crate::last_audit`]). Returns whether it existed.
    pub async fn delete(c: &impl GenericClient, run: &str) -> Result<bool, Error> {
        // Not tied to the run row by a key (see the migration); abort has dealt with them.
        // A state schema older than these tables has none.
        let tables: &[&str] = if crate::flips::recorded(c).await? {
            &["bluegreen.fences", "bluegreen.flips"]
        } else {
            &[]
        };
        for table in tables {
            c.execute(&format!("DELETE FROM {table} WHERE run = $1"), &[&run])
                .await
                .map_err(q("delete fence and flip records"))?;
        }
        c.execute("DELETE FROM bluegreen.runs WHERE run = $1", &[&run])
            .await
            .map(|n| n > 0)
            .map_err(q("delete run"))
    }

    pub async fn count(c: &Client) -> Result<i64, Error> {
        c.query_one("SELECT count(*) FROM bluegreen.runs", &[])
            .await
            .map(|r| r.get(0))
            .map_err(q("count runs"))
    }
}
