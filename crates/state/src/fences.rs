//! What a cutover's fence took away on a server (CONNECT grants), kept on green so whoever
//! lifts the fence (rollback, a failed cutover's undo, abort, the watchdog) gives back
//! exactly that. Written before the fence goes up and deleted after it comes down: a record
//! without a fence only re-grants what is still granted.

use crate::{q, Error, GenericClient};

/// Which server a fence is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Blue,
    Green,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Blue => "blue",
            Side::Green => "green",
        }
    }
}

/// One CONNECT grant the fence revoked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// None: PUBLIC.
    pub role: Option<String>,
    pub grant_option: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FenceRecord {
    /// The fenced database (on that side's server).
    pub database: String,
    pub revoked: Vec<Grant>,
    /// bluegreen's own role was granted CONNECT for the fence (it had it only through
    /// PUBLIC): revoked again when the fence is lifted.
    pub self_granted: bool,
}

impl FenceRecord {
    pub async fn get(
        c: &impl GenericClient,
        run: &str,
        side: Side,
    ) -> Result<Option<FenceRecord>, Error> {
        let row = c
            .query_opt(
                "SELECT database, revoked_from, grant_option, self_granted
                   FROM bluegreen.fences WHERE run = $1 AND side = $2",
                &[&run, &side.as_str()],
            )
            .await
            .map_err(q("read fence"))?;
        Ok(row.map(|r| {
            let roles: Vec<Option<String>> = r.get(1);
            let options: Vec<bool> = r.get(2);
            FenceRecord {
                database: r.get(0),
                revoked: roles
                    .into_iter()
                    .zip(options.into_iter().chain(std::iter::repeat(false)))
                    .map(|(role, grant_option)| Grant { role, grant_option })
                    .collect(),
                self_granted: r.get(3),
            }
        }))
    }

    /// Creates or replaces the record.
    pub async fn put(&self, c: &impl GenericClient, run: &str, side: Side) -> Result<(), Error> {
        let roles: Vec<Option<String>> = self.revoked.iter().map(|g| g.role.clone()).collect();
        let options: Vec<bool> = self.revoked.iter().map(|g| g.grant_option).collect();
        c.execute(
            "INSERT INTO bluegreen.fences (run, side, database, revoked_from, grant_option, self_granted)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (run, side) DO UPDATE SET database = EXCLUDED.database,
                 revoked_from = EXCLUDED.revoked_from, grant_option = EXCLUDED.grant_option,
                 self_granted = EXCLUDED.self_granted",
            &[
                &run,
                &side.as_str(),
                &self.database,
                &roles,
                &options,
                &self.self_granted,
            ],
        )
        .await
        .map(|_| ())
        .map_err(q("record fence"))
    }

    pub async fn delete(c: &impl GenericClient, run: &str, side: Side) -> Result<(), Error> {
        c.execute(
            "DELETE FROM bluegreen.fences WHERE run = $1 AND side = $2",
            &[&run, &side.as_str()],
        )
        .await
        .map(|_| ())
        .map_err(q("remove fence record"))
    }
}
