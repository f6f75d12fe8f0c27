//! Statements to a server that may be far away (blue on the plant floor, across a WAN) while
//! clients are paused, where every round trip is paid by every client.
//!
//! A `query` given text prepares it first, a round trip of its own; these go unprepared,
//! their types given, so each takes one round trip, and statements sent together (polled in
//! order, as `futures_util::future::try_join` does) share one: the client pipelines them and the
//! server answers in order, each in its own implicit transaction.

use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Row};

use crate::error::sql;
use crate::Error;

/// The rows of one unprepared statement.
pub(crate) async fn rows(
    c: &Client,
    side: &'static str,
    what: &'static str,
    statement: &str,
    params: &[(&(dyn ToSql + Sync), Type)],
) -> Result<Vec<Row>, Error> {
    c.query_typed(statement, params)
        .await
        .map_err(sql(side, what))
}

/// The one row of one unprepared statement.
pub(crate) async fn row(
    c: &Client,
    side: &'static str,
    what: &'static str,
    statement: &str,
    params: &[(&(dyn ToSql + Sync), Type)],
) -> Result<Row, Error> {
    rows(c, side, what, statement, params)
        .await?
        .into_iter()
        .next()
        .ok_or_else(|| Error::Unexpected(format!("{side}: {what}: the server returned no row")))
}
