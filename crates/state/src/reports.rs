//! Run reports (the `report` crate's JSON), kept on the target so `bluegreen report`
//! renders them again from anywhere that reaches it.

use crate::{q, Error, GenericClient};

/// Stores `report` as the run's report of this `kind` (`run`, `dry-run`), replacing the
/// one written before (a run rewrites its report as it goes).
pub async fn put(
    c: &impl GenericClient,
    run: &str,
    kind: &str,
    report: &serde_json::Value,
) -> Result<(), Error> {
    c.execute(
        "INSERT INTO bluegreen.reports (run, kind, report) VALUES ($1, $2, $3)
         ON CONFLICT (run, kind) DO UPDATE
            SET report = excluded.report, written_at = clock_timestamp()",
        &[&run, &kind, report],
    )
    .await
    .map(|_| ())
    .map_err(q("store report"))
}

/// The run's most recently written report (of any kind). None also where the state
/// schema is missing or older than its reports table.
pub async fn get(c: &impl GenericClient, run: &str) -> Result<Option<serde_json::Value>, Error> {
    let present: bool = c
        .query_one("SELECT to_regclass('bluegreen.reports') IS NOT NULL", &[])
        .await
        .map_err(q("look up the reports table"))?
        .get(0);
    if !present {
        return Ok(None);
    }
    c.query_opt(
        "SELECT report FROM bluegreen.reports WHERE run = $1 ORDER BY written_at DESC LIMIT 1",
        &[&run],
    )
    .await
    .map(|row| row.map(|r| r.get(0)))
    .map_err(q("read report"))
}

/// Runs that have a report, newest first: (run, kind, written at as text).
pub async fn list(c: &impl GenericClient) -> Result<Vec<(String, String, String)>, Error> {
    c.query(
        "SELECT run, kind, to_char(written_at, 'YYYY-MM-DD HH24:MI:SS TZ')
           FROM bluegreen.reports ORDER BY written_at DESC",
        &[],
    )
    .await
    .map(|rows| {
        rows.iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect()
    })
    .map_err(q("list reports"))
}
