//! `--target-schema existing`: the operator's tables must take the source's columns as they
//! are. Binary COPY does not convert: an int4 read as real, an int8 as a timestamp, a
//! timestamp as timestamptz would be reinterpreted bit for bit, and a numeric(10,2) read
//! into numeric(10,1) rounded. So every copied column must have the same type (as
//! `format_type` prints it) on both sides, and the target may have no column the copy
//! cannot fill.

use catalog::Table;
use tokio_postgres::Client;

use crate::error::{sql, Error};

/// A column of one side as the check needs it.
#[derive(Debug, Clone)]
pub struct SideColumn {
    pub name: String,
    pub type_name: String,
    pub not_null: bool,
    /// Generated, identity, or with a default: COPY fills it without a value.
    pub fills_itself: bool,
    pub generated: bool,
}

/// The columns of `qualified` on one side, types printed with an empty search_path (every
/// type outside pg_catalog schema-qualified), so a database-level search_path on either
/// side does not make equal types look different.
pub async fn columns_of(
    client: &Client,
    side: &'static str,
    qualified: &str,
) -> Result<Vec<SideColumn>, Error> {
    client
        .batch_execute("SET search_path = ''")
        .await
        .map_err(sql(side, "SET search_path"))?;
    let rows = client
        .query(
            "SELECT attname::text, format_type(atttypid, atttypmod), attnotnull,
                    attgenerated <> '' OR attidentity <> '' OR atthasdef, attgenerated <> ''
               FROM pg_attribute
              WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped
              ORDER BY attnum",
            &[&qualified],
        )
        .await
        .map_err(sql(side, format!("read the columns of {qualified}")))?;
    client
        .batch_execute("RESET search_path")
        .await
        .map_err(sql(side, "RESET search_path"))?;
    Ok(rows
        .iter()
        .map(|r| SideColumn {
            name: r.get(0),
            type_name: r.get(1),
            not_null: r.get(2),
            fills_itself: r.get(3),
            generated: r.get(4),
        })
        .collect())
}

/// Each way the target's columns cannot take the source's rows exactly, as one line.
/// `source_columns`: the source table's columns read as the target's are.
pub fn mismatches(
    source: &Table,
    source_columns: &[SideColumn],
    target: &[SideColumn],
) -> Vec<String> {
    let name = source.display_name();
    let mut out = Vec::new();
    for plan_column in source.copied_columns() {
        let Some(c) = source_columns.iter().find(|c| c.name == plan_column.name) else {
            continue;
        };
        match target.iter().find(|t| t.name == c.name) {
            None => out.push(format!(
                "{name}.{}: column ({}) is missing on the target",
                c.name, c.type_name
            )),
            Some(t) if t.generated => out.push(format!(
                "{name}.{}: generated on the target, a plain column ({}) on the source",
                c.name, c.type_name
            )),
            Some(t) if t.type_name != c.type_name => out.push(format!(
                "{name}.{}: {} on the source, {} on the target",
                c.name, c.type_name, t.type_name
            )),
            Some(_) => {}
        }
    }
    for t in target {
        match source.columns.iter().find(|c| c.name == t.name) {
            Some(c) if c.generated && !t.generated => out.push(format!(
                "{name}.{}: generated on the source, a plain column ({}) on the target (it would stay empty)",
                t.name, t.type_name
            )),
            None if t.not_null && !t.fills_itself => out.push(format!(
                "{name}.{}: NOT NULL without a default on the target, not on the source",
                t.name
            )),
            _ => {}
        }
    }
    out
}
