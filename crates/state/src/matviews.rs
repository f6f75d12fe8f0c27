//! When bluegreen last refreshed the materialized views on a side (copy, cutover, rollback):
//! PostgreSQL keeps no refresh time of its own, and the views' rows are not replicated, so
//! this is how status and plan can say how fresh green's are.

use crate::{audit, last_audit, Error, GenericClient, Side};

/// The audit step a refresh is recorded under.
const STEP: &str = "matviews-refreshed";

/// Records that `by` (copy, cutover, rollback) refreshed `views` on `side`.
pub async fn refreshed(
    c: &impl GenericClient,
    run: &str,
    side: Side,
    by: &str,
    views: Vec<serde_json::Value>,
) -> Result<(), Error> {
    audit(
        c,
        run,
        STEP,
        None,
        serde_json::json!({ "side": side.as_str(), "by": by, "views": views }),
    )
    .await
}

/// The last refresh recorded for the run.
#[derive(Debug, Clone, PartialEq)]
pub struct LastRefresh {
    /// When, as the server prints it.
    pub at: String,
    pub side: String,
    pub by: String,
    pub views: usize,
}

pub async fn last(c: &impl GenericClient, run: &str) -> Result<Option<LastRefresh>, Error> {
    Ok(last_audit(c, run, &[STEP])
        .await?
        .map(|(_, at, _, detail)| {
            let detail = detail.unwrap_or_default();
            let text = |k: &str| detail[k].as_str().unwrap_or("?").to_string();
            LastRefresh {
                at,
                side: text("side"),
                by: text("by"),
                views: detail["views"].as_array().map_or(0, |v| v.len()),
            }
        }))
}

/// Records the refreshes copy's post-data ran on green (its `MATERIALIZED VIEW DATA`
/// items), if there were any.
pub async fn refreshed_by_copy(c: &impl GenericClient, run: &str) -> Result<(), Error> {
    c.execute(
        "INSERT INTO bluegreen.audit (run, step, detail)
         SELECT $1, $2, jsonb_build_object('side', 'green', 'by', 'copy', 'views',
                    jsonb_agg(jsonb_build_object('view', name, 'ms', seconds * 1000,
                                                 'concurrently', false) ORDER BY item))
           FROM bluegreen.post_data
          WHERE run = $1 AND kind = 'MATERIALIZED VIEW DATA' AND state = 'done'
         HAVING count(*) > 0",
        &[&run, &STEP],
    )
    .await
    .map(|_| ())
    .map_err(crate::q("record copy's refreshes"))
}
