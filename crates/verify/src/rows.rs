//! Rows fetched for the report: every compared column twice, as the exact bytes compared
//! (the binary send form, or the text form where binary embeds type OIDs) and as text for
//! people. Both are arrow record batches, one column per table column.

use std::sync::Arc;

use arrow_array::builder::{BinaryBuilder, StringBuilder};
use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{ArrowError, DataType, Field, Schema};
use futures_util::{pin_mut, TryStreamExt};
use tokio_postgres::types::{FromSql, Type};
use tokio_postgres::{Client, Row};

use crate::error::{sql, Error};
use crate::hash::values_hash;
use crate::range::KeyRange;
use crate::table::VerifyTable;

/// A value's bytes as the server sent them, whatever its type.
struct Raw<'a>(&'a [u8]);

impl<'a> FromSql<'a> for Raw<'a> {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(raw))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// Rows of one side of a range.
#[derive(Debug, Clone)]
pub struct FetchedRows {
    /// Exact values compared, Binary columns.
    pub raw: RecordBatch,
    /// Text forms, Utf8 columns.
    pub text: RecordBatch,
}

impl FetchedRows {
    pub fn len(&self) -> usize {
        self.raw.num_rows()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The exact value of column `c` in row `r` (None: NULL).
    pub fn raw_value(&self, r: usize, c: usize) -> Option<&[u8]> {
        let a = self.raw.column(c).as_binary::<i32>();
        (!a.is_null(r)).then(|| a.value(r))
    }

    pub fn text_value(&self, r: usize, c: usize) -> Option<String> {
        let a = self.text.column(c).as_string::<i32>();
        (!a.is_null(r)).then(|| a.value(r).to_string())
    }

    /// Hash of the row's key columns (or of every column when `cols` lists them all).
    pub fn hash_of(&self, r: usize, cols: &[usize]) -> u128 {
        values_hash(cols.iter().map(|&c| self.raw_value(r, c)))
    }
}

/// `SELECT <exact values>, <text values>` of a range, in key order.
fn select_sql(t: &VerifyTable, range: &KeyRange) -> String {
    // Output columns get their own names: ORDER BY must see the table's columns, not
    // their text forms.
    let raw = t.columns.iter().enumerate().map(|(i, c)| {
        if c.needs_text {
            format!("{}::text AS bluegreen_r{i}", c.ident)
        } else {
            format!("{} AS bluegreen_r{i}", c.compared())
        }
    });
    let text = t
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{}::text AS bluegreen_t{i}", c.ident));
    let order = if t.key.is_some() {
        format!(" ORDER BY {}", t.key_order())
    } else {
        String::new()
    };
    format!(
        "SELECT {} FROM {}{}{order}",
        raw.chain(text).collect::<Vec<_>>().join(", "),
        t.relation(),
        range.where_clause(t)
    )
}

/// Fetches a (small) range's rows; with `keep`, only rows whose full-row hash it accepts
/// (used for tables without a key, which are streamed whole).
pub async fn fetch(
    client: &Client,
    side: &'static str,
    t: &VerifyTable,
    range: &KeyRange,
    keep: Option<&(dyn Fn(u128) -> bool + Sync)>,
) -> Result<FetchedRows, Error> {
    let what = || format!("fetch rows of {} {}", t.display(), range.describe());
    let stream = client
        .query_raw(&select_sql(t, range), std::iter::empty::<&str>())
        .await
        .map_err(sql(side, what()))?;
    pin_mut!(stream);
    let n = t.columns.len();
    let mut builder = Builder::new(n);
    let all: Vec<usize> = (0..n).collect();
    while let Some(row) = stream.try_next().await.map_err(|e| sql(side, what())(e))? {
        if let Some(keep) = keep {
            if !keep(row_hash(&row, &all)?) {
                continue;
            }
        }
        builder
            .push(&row, n)
            .map_err(|e| Error::Worker(e.to_string()))?;
    }
    builder
        .finish(t)
        .map_err(|e| Error::Worker(format!("{}: {e}", what())))
}

/// Full-row hashes of a whole table (tables without a key), streamed.
pub async fn row_hashes(
    client: &Client,
    side: &'static str,
    t: &VerifyTable,
    range: &KeyRange,
) -> Result<Vec<u128>, Error> {
    let what = format!("hash rows of {} {}", t.display(), range.describe());
    Ok(hashes(client, side, t, &range.where_clause(t), None, what)
        .await?
        .0)
}

/// The row hashes of the rows whose [`VerifyTable::range_key`] is one of `keys` (text
/// forms), in no order, and the bytes hashed.
pub async fn row_hashes_of_keys(
    client: &Client,
    side: &'static str,
    t: &VerifyTable,
    keys: &[Vec<String>],
) -> Result<(Vec<u128>, u64), Error> {
    let lhs: Vec<String> = t
        .range_key()
        .unwrap_or_default()
        .iter()
        .map(|k| k.ident.clone())
        .collect();
    let filter = format!(
        " WHERE ({}) IN (SELECT {} FROM jsonb_array_elements($1) k)",
        lhs.join(", "),
        t.range_key_from_json("k")
    );
    let json = serde_json::to_value(keys).unwrap_or_default();
    let what = format!("hash the rows of {} at {} key(s)", t.display(), keys.len());
    hashes(client, side, t, &filter, Some(&json), what).await
}

/// Rows in `range` on one side.
pub async fn count_rows(
    client: &Client,
    side: &'static str,
    t: &VerifyTable,
    range: &KeyRange,
) -> Result<u64, Error> {
    let q = format!(
        "SELECT count(*) FROM {}{}",
        t.relation(),
        range.where_clause(t)
    );
    let row = client.query_one(&q, &[]).await.map_err(sql(
        side,
        format!("count rows of {} {}", t.display(), range.describe()),
    ))?;
    Ok(row.get::<_, i64>(0) as u64)
}

async fn hashes(
    client: &Client,
    side: &'static str,
    t: &VerifyTable,
    filter: &str,
    param: Option<&serde_json::Value>,
    what: String,
) -> Result<(Vec<u128>, u64), Error> {
    let what = || what.clone();
    let raw: Vec<String> = t
        .columns
        .iter()
        .map(|c| {
            if c.needs_text {
                format!("{}::text", c.ident)
            } else {
                c.compared()
            }
        })
        .collect();
    let q = format!("SELECT {} FROM {}{filter}", raw.join(", "), t.relation());
    let stream = client
        .query_raw(&q, param)
        .await
        .map_err(sql(side, what()))?;
    pin_mut!(stream);
    let (mut out, mut bytes) = (Vec::new(), 0);
    while let Some(row) = stream.try_next().await.map_err(|e| sql(side, what())(e))? {
        let vals = (0..t.columns.len())
            .map(|i| raw_at(&row, i))
            .collect::<Result<Vec<_>, _>>()?;
        bytes += vals.iter().flatten().map(|v| v.len() as u64).sum::<u64>();
        out.push(values_hash(vals));
    }
    Ok((out, bytes))
}

fn raw_at(row: &Row, i: usize) -> Result<Option<&[u8]>, Error> {
    row.try_get::<_, Option<Raw>>(i)
        .map(|v| v.map(|r| r.0))
        .map_err(|e| Error::Worker(format!("read column {i}: {e}")))
}

fn row_hash(row: &Row, cols: &[usize]) -> Result<u128, Error> {
    let vals: Result<Vec<Option<&[u8]>>, Error> = cols.iter().map(|&c| raw_at(row, c)).collect();
    Ok(values_hash(vals?))
}

struct Builder {
    raw: Vec<BinaryBuilder>,
    text: Vec<StringBuilder>,
}

impl Builder {
    fn new(n: usize) -> Builder {
        Builder {
            raw: (0..n).map(|_| BinaryBuilder::new()).collect(),
            text: (0..n).map(|_| StringBuilder::new()).collect(),
        }
    }

    fn push(&mut self, row: &Row, n: usize) -> Result<(), Error> {
        for i in 0..n {
            self.raw[i].append_option(raw_at(row, i)?);
            let text: Option<&str> = row
                .try_get(n + i)
                .map_err(|e| Error::Worker(format!("read column {}: {e}", n + i)))?;
            self.text[i].append_option(text);
        }
        Ok(())
    }

    fn finish(mut self, t: &VerifyTable) -> Result<FetchedRows, ArrowError> {
        let schema = |dt: DataType| {
            Arc::new(Schema::new(
                t.columns
                    .iter()
                    .map(|c| Field::new(&c.name, dt.clone(), true))
                    .collect::<Vec<_>>(),
            ))
        };
        let raw: Vec<ArrayRef> = self
            .raw
            .iter_mut()
            .map(|b| Arc::new(b.finish()) as ArrayRef)
            .collect();
        let text: Vec<ArrayRef> = self
            .text
            .iter_mut()
            .map(|b| Arc::new(b.finish()) as ArrayRef)
            .collect();
        Ok(FetchedRows {
            raw: RecordBatch::try_new(schema(DataType::Binary), raw)?,
            text: RecordBatch::try_new(schema(DataType::Utf8), text)?,
        })
    }
}

#[cfg(test)]
impl FetchedRows {
    /// Rows whose exact values are their text forms' bytes (for tests of the comparison).
    pub fn from_text(names: &[&str], rows: &[Vec<Option<&str>>]) -> FetchedRows {
        let mut raw: Vec<BinaryBuilder> = names.iter().map(|_| BinaryBuilder::new()).collect();
        let mut text: Vec<StringBuilder> = names.iter().map(|_| StringBuilder::new()).collect();
        for r in rows {
            for (i, v) in r.iter().enumerate() {
                raw[i].append_option(v.map(str::as_bytes));
                text[i].append_option(*v);
            }
        }
        let schema = |dt: DataType| {
            Arc::new(Schema::new(
                names
                    .iter()
                    .map(|n| Field::new(*n, dt.clone(), true))
                    .collect::<Vec<_>>(),
            ))
        };
        FetchedRows {
            raw: RecordBatch::try_new(
                schema(DataType::Binary),
                raw.iter_mut()
                    .map(|b| Arc::new(b.finish()) as ArrayRef)
                    .collect(),
            )
            .unwrap(),
            text: RecordBatch::try_new(
                schema(DataType::Utf8),
                text.iter_mut()
                    .map(|b| Arc::new(b.finish()) as ArrayRef)
                    .collect(),
            )
            .unwrap(),
        }
    }
}
