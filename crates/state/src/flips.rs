//! A cutover or rollback under way, recorded on green before it touches anything, so that a
//! flip whose process died is finished or undone by whoever comes next (its watchdog within
//! seconds, or the next `cutover`, `rollback` or `abort`).
//!
//! The flipping process holds a session-level advisory lock on green for the whole flip: the
//! lock is free exactly when that process (or its session) is gone, however it died, and a
//! process recovering the flip holds it in turn, so two never recover one flip at once.

use crate::{q, Error, GenericClient};

/// Key of the advisory lock of a run's flip (with `hashtext(run)` as the second half).
const LOCK: &str = "hashtext('bluegreen.flip')";

/// What a recovery needs to know of a flip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flip {
    /// Green back to blue (else blue to green).
    pub rollback: bool,
    /// Each pooler's databases file (path, text) as it was before the flip.
    pub files: Vec<(String, String)>,
    /// The files point at the new primary and the final RESUME is on its way: finish the
    /// flip rather than undo it (clients may already write on the new primary).
    pub committed: bool,
}

/// What [`Flip::find`] found.
pub enum Found {
    None,
    /// A flip is under way and its process is alive.
    Live {
        rollback: bool,
    },
    /// A flip whose process is gone; this session now holds its lock until [`Flip::end`].
    Dead(Flip),
}

impl Flip {
    /// Records the flip and takes its lock on `c`'s session. False: another process holds it.
    pub async fn begin(&self, c: &impl GenericClient, run: &str) -> Result<bool, Error> {
        if !take_lock(c, run).await? {
            return Ok(false);
        }
        let (paths, texts): (Vec<String>, Vec<String>) = self.files.iter().cloned().unzip();
        c.execute(
            "INSERT INTO bluegreen.flips (run, rollback, file_paths, file_texts, committed)
             VALUES ($1, $2, $3, $4, false)
             ON CONFLICT (run) DO UPDATE SET rollback = EXCLUDED.rollback,
                 file_paths = EXCLUDED.file_paths, file_texts = EXCLUDED.file_texts,
                 committed = false, started_at = clock_timestamp()",
            &[&run, &self.rollback, &paths, &texts],
        )
        .await
        .map_err(q("record the flip"))?;
        Ok(true)
    }

    /// The commit point: from here on the flip is finished, not undone.
    pub async fn commit(c: &impl GenericClient, run: &str) -> Result<(), Error> {
        c.execute(
            "UPDATE bluegreen.flips SET committed = true WHERE run = $1",
            &[&run],
        )
        .await
        .map(|_| ())
        .map_err(q("mark the flip committed"))
    }

    /// Back before the commit point: for a flip whose commit mark got no answer (it may or
    /// may not have been written) and that is undone, so that a recovery undoes it too.
    pub async fn uncommit(c: &impl GenericClient, run: &str) -> Result<(), Error> {
        c.execute(
            "UPDATE bluegreen.flips SET committed = false WHERE run = $1",
            &[&run],
        )
        .await
        .map(|_| ())
        .map_err(q("mark the flip not committed"))
    }

    /// The flip is over (done, undone or recovered): record removed, lock released.
    pub async fn end(c: &impl GenericClient, run: &str) -> Result<(), Error> {
        c.execute("DELETE FROM bluegreen.flips WHERE run = $1", &[&run])
            .await
            .map_err(q("remove the flip record"))?;
        Self::release(c, run).await
    }

    /// Lets go of the flip's lock but keeps its record: the flip counts as dead from here on
    /// and its watchdog (or the next command) puts it right.
    pub async fn release(c: &impl GenericClient, run: &str) -> Result<(), Error> {
        c.execute(
            &format!("SELECT pg_advisory_unlock({LOCK}, hashtext($1))"),
            &[&run],
        )
        .await
        .map(|_| ())
        .map_err(q("release the flip lock"))
    }

    /// The run's flip, if one is recorded, and whether its process is alive. A dead one's
    /// lock is taken here: the caller recovers it, then calls [`Flip::end`].
    pub async fn find(c: &impl GenericClient, run: &str) -> Result<Found, Error> {
        let Some(row) = c
            .query_opt(
                "SELECT rollback, file_paths, file_texts, committed FROM bluegreen.flips WHERE run = $1",
                &[&run],
            )
            .await
            .map_err(q("read the flip record"))?
        else {
            return Ok(Found::None);
        };
        let rollback: bool = row.get(0);
        if !take_lock(c, run).await? {
            return Ok(Found::Live { rollback });
        }
        let paths: Vec<String> = row.get(1);
        let texts: Vec<String> = row.get(2);
        Ok(Found::Dead(Flip {
            rollback,
            files: paths.into_iter().zip(texts).collect(),
            committed: row.get(3),
        }))
    }
}

/// Whether the state schema has the flip and fence records (version 6 on): an older one,
/// left by an older bluegreen, has no flip to recover.
pub async fn recorded(c: &impl GenericClient) -> Result<bool, Error> {
    c.query_one("SELECT to_regclass('bluegreen.flips') IS NOT NULL", &[])
        .await
        .map(|r| r.get(0))
        .map_err(q("look up the flip records"))
}

/// Takes the run's flip lock on `c`'s session (also again, for a flip whose session on
/// green went silent, after ending that session's backend). False: another session holds it.
pub async fn take_lock(c: &impl GenericClient, run: &str) -> Result<bool, Error> {
    c.query_one(
        &format!("SELECT pg_try_advisory_lock({LOCK}, hashtext($1))"),
        &[&run],
    )
    .await
    .map(|r| r.get(0))
    .map_err(q("take the flip lock"))
}
