//! What may have changed on green since a verify, for the next one to check only that:
//!
//! - `sync_touched`: per applied group, the keys it wrote in each table (or "whole" where
//!   keys cannot say: a TRUNCATE, too many keys, a key that is not a plain value). Written
//!   in the group's own transaction, so a crash cannot lose it.
//! - `green_writes`: a row per statement that wrote a watched table in a session that is not
//!   the applier's (the watch trigger, [`names::WATCH_TRIGGER`], is an ordinary trigger, so
//!   it does not fire under `session_replication_role = replica`, which only the applier,
//!   copy and repair use).
//!
//! A verify reads both as its target snapshot shows them; once it finds the run equal, the
//! rows it saw are covered and deleted ([`prune`]). Rows committed after its snapshot stay
//! for the next verify.

use crate::{names, q, Error, GenericClient};
use conn::{qualified, quote_ident};
use lsn::Lsn;

/// The column a table without a usable key is cut into verify chunks by, and whose values
/// sync records for it instead of keys: a NOT NULL column leading a valid, whole-table
/// B-tree index (unique indexes first, then the narrowest, then the first column). Sync asks
/// the target and verify the source; where the two answers differ, verify sees another
/// column in the record and checks the table in full (the plan carries the source's answer:
/// `catalog::Table::chunk_column`). `{rel}` is the table's regclass.
pub const CHUNK_COLUMN_SQL: &str = "(SELECT a.attname::text
   FROM pg_index i
   JOIN pg_class ic ON ic.oid = i.indexrelid
   JOIN pg_am am ON am.oid = ic.relam AND am.amname = 'btree'
   JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
  WHERE i.indrelid = {rel} AND i.indisvalid AND i.indpred IS NULL
    AND a.attnotnull AND NOT a.attisdropped
  ORDER BY i.indisunique DESC, i.indnatts, a.attnum
  LIMIT 1)";

/// [`CHUNK_COLUMN_SQL`] for the relation expression `rel`.
pub fn chunk_column_sql(rel: &str) -> String {
    CHUNK_COLUMN_SQL.replace("{rel}", rel)
}

/// One group's touched keys, as sync records them.
pub async fn record_touched(
    c: &impl GenericClient,
    origin: &str,
    lsn: Lsn,
    tables: &serde_json::Value,
) -> Result<(), Error> {
    c.execute(
        "INSERT INTO bluegreen.sync_touched (origin, lsn, tables) VALUES ($1, $2::text::pg_lsn, $3)",
        &[&origin, &lsn, tables],
    )
    .await
    .map(|_| ())
    .map_err(q("record the keys a group touched"))
}

/// A table's entry in a group's record.
#[derive(Debug, Clone, PartialEq)]
pub struct TouchedTable {
    pub schema: String,
    pub name: String,
    /// The columns the keys are in: the replica identity's (not necessarily verify's key),
    /// or, for a table without a usable one, its [`CHUNK_COLUMN_SQL`] column.
    pub columns: Vec<String>,
    /// Text forms of the keys written, in `columns` order.
    pub keys: Vec<Vec<String>>,
    /// Every row may have been written.
    pub whole: bool,
}

impl TouchedTable {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "schema": self.schema, "name": self.name, "columns": self.columns,
            "keys": self.keys, "whole": self.whole,
        })
    }

    pub fn from_json(v: &serde_json::Value) -> Result<TouchedTable, Error> {
        let bad = || Error::Corrupt(format!("sync_touched entry {v}"));
        let text = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
        let strings = |x: &serde_json::Value| -> Option<Vec<String>> {
            x.as_array()?
                .iter()
                .map(|s| s.as_str().map(str::to_string))
                .collect()
        };
        Ok(TouchedTable {
            schema: text("schema").ok_or_else(bad)?,
            name: text("name").ok_or_else(bad)?,
            columns: v.get("columns").and_then(strings).ok_or_else(bad)?,
            keys: v
                .get("keys")
                .and_then(|k| k.as_array())
                .ok_or_else(bad)?
                .iter()
                .map(|k| strings(k).ok_or_else(bad))
                .collect::<Result<_, _>>()?,
            whole: v.get("whole").and_then(|w| w.as_bool()).ok_or_else(bad)?,
        })
    }
}

/// What the target snapshot of a verify shows of both journals.
#[derive(Debug, Default)]
pub struct Journal {
    pub touched_ids: Vec<i64>,
    pub touched: Vec<TouchedTable>,
    pub write_ids: Vec<i64>,
    /// (schema, name) of tables written behind the applier's back.
    pub written: Vec<(String, String)>,
}

/// Reads the journals as `c` (a connection at the verify's target snapshot) sees them.
pub async fn read_journal(c: &impl GenericClient, origin: &str) -> Result<Journal, Error> {
    let mut j = Journal::default();
    for r in c
        .query(
            "SELECT id, tables FROM bluegreen.sync_touched WHERE origin = $1 ORDER BY id",
            &[&origin],
        )
        .await
        .map_err(q("read the keys sync touched"))?
    {
        j.touched_ids.push(r.get(0));
        let tables: serde_json::Value = r.get(1);
        for t in tables.as_array().into_iter().flatten() {
            j.touched.push(TouchedTable::from_json(t)?);
        }
    }
    for r in c
        .query(
            "SELECT id, table_schema, table_name FROM bluegreen.green_writes ORDER BY id",
            &[],
        )
        .await
        .map_err(q("read the writes on green"))?
    {
        j.write_ids.push(r.get(0));
        let t = (r.get(1), r.get(2));
        if !j.written.contains(&t) {
            j.written.push(t);
        }
    }
    Ok(j)
}

/// Deletes the journal rows a clean verify covered.
pub async fn prune(c: &impl GenericClient, j: &Journal) -> Result<(), Error> {
    c.execute(
        "DELETE FROM bluegreen.sync_touched WHERE id = ANY($1)",
        &[&j.touched_ids],
    )
    .await
    .map_err(q("prune the keys sync touched"))?;
    c.execute(
        "DELETE FROM bluegreen.green_writes WHERE id = ANY($1)",
        &[&j.write_ids],
    )
    .await
    .map_err(q("prune the writes on green"))?;
    Ok(())
}

/// Of `tables` (schema, name), those whose watch trigger exists and is enabled.
pub async fn watched(
    c: &impl GenericClient,
    tables: &[(String, String)],
) -> Result<Vec<(String, String)>, Error> {
    let schemas: Vec<&str> = tables.iter().map(|t| t.0.as_str()).collect();
    let names: Vec<&str> = tables.iter().map(|t| t.1.as_str()).collect();
    let rows = c
        .query(
            "SELECT n.nspname::text, c.relname::text
               FROM unnest($1::text[], $2::text[]) u(s, t)
               JOIN pg_namespace n ON n.nspname = u.s
               JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = u.t
               JOIN pg_trigger g ON g.tgrelid = c.oid AND g.tgname = $3 AND g.tgenabled = 'O'",
            &[&schemas, &names, &names::WATCH_TRIGGER],
        )
        .await
        .map_err(q("read the watch triggers"))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Puts the watch trigger on a table. Its lock waits for the applier's open group at most
/// `lock_timeout` (then the table stays unwatched and its next verify is a full one).
pub async fn watch(
    c: &tokio_postgres::Client,
    schema: &str,
    name: &str,
    lock_timeout: std::time::Duration,
) -> Result<(), Error> {
    let done = c
        .batch_execute(&format!(
            "BEGIN; SET LOCAL lock_timeout = {}; CREATE OR REPLACE TRIGGER {} AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON {}
                 FOR EACH STATEMENT EXECUTE FUNCTION bluegreen.note_green_write(); COMMIT",
            lock_timeout.as_millis().max(1),
            quote_ident(names::WATCH_TRIGGER),
            qualified(schema, name)
        ))
        .await;
    if done.is_err() {
        let _ = c.batch_execute("ROLLBACK").await;
    }
    done.map_err(q("put the watch trigger on a table"))
}

/// Removes the watch trigger from every table of `schemas` (every schema when empty), before
/// green takes traffic (cutover) or when the run goes (abort). Returns how many it removed.
pub async fn unwatch(c: &impl GenericClient, schemas: &[String]) -> Result<usize, Error> {
    let rows = c
        .query(
            "SELECT n.nspname::text, c.relname::text
               FROM pg_trigger g JOIN pg_class c ON c.oid = g.tgrelid
               JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE g.tgname = $1 AND (cardinality($2::text[]) = 0 OR n.nspname = ANY($2))",
            &[&names::WATCH_TRIGGER, &schemas],
        )
        .await
        .map_err(q("find the watch triggers"))?;
    for r in &rows {
        c.batch_execute(&format!(
            "DROP TRIGGER IF EXISTS {} ON {}",
            quote_ident(names::WATCH_TRIGGER),
            qualified(r.get(0), r.get(1))
        ))
        .await
        .map_err(q("remove a watch trigger"))?;
    }
    Ok(rows.len())
}

/// Removes a run's journal rows (abort): its groups' keys, and writes noted on its schemas.
/// A state schema from before the journals has none.
pub async fn forget(c: &impl GenericClient, origin: &str, schemas: &[String]) -> Result<(), Error> {
    let present: bool = c
        .query_one(
            "SELECT to_regclass('bluegreen.sync_touched') IS NOT NULL",
            &[],
        )
        .await
        .map_err(q("look for the change journals"))?
        .get(0);
    if !present {
        return Ok(());
    }
    c.execute(
        "DELETE FROM bluegreen.sync_touched WHERE origin = $1",
        &[&origin],
    )
    .await
    .map_err(q("remove the keys sync touched"))?;
    c.execute(
        "DELETE FROM bluegreen.green_writes WHERE table_schema = ANY($1)",
        &[&schemas],
    )
    .await
    .map_err(q("remove the writes on green"))?;
    Ok(())
}
