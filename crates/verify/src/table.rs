//! What verify needs to know of one table: the columns it compares (every non-generated
//! column, in the same order on both sides), its key, and the COPY format.

use catalog::Plan;
use conn::quote_ident;
use tokio_postgres::Client;

use crate::copybin::Format;
use crate::error::{sql, Error};

#[derive(Debug, Clone)]
pub struct Column {
    pub name: String,
    /// Quoted identifier.
    pub ident: String,
    /// Binary form embeds database-specific type OIDs: compare its text form.
    pub needs_text: bool,
}

#[derive(Debug, Clone)]
pub struct KeyColumn {
    pub name: String,
    pub ident: String,
    /// Compared with `COLLATE "C"` so both servers order (and cut ranges) the same way
    /// whatever their collations.
    pub collatable: bool,
}

impl KeyColumn {
    /// The column as it appears in ORDER BY and range predicates.
    pub fn expr(&self) -> String {
        if self.collatable {
            format!("{} COLLATE \"C\"", self.ident)
        } else {
            self.ident.clone()
        }
    }
}

#[derive(Debug, Clone)]
pub struct VerifyTable {
    pub schema: String,
    pub name: String,
    /// `"schema"."name"`.
    pub qualified: String,
    /// Read `FROM ONLY`: the tables inheriting from it are all planned and compared on their
    /// own. Otherwise verify reads what a plain SELECT sees, children included, so rows that
    /// live in tables outside the plan (other schemas' partitions, TimescaleDB chunks, a
    /// hypertable on one side only) are compared too.
    pub only: bool,
    pub columns: Vec<Column>,
    /// Primary key columns; None: the table is compared as one multiset.
    pub key: Option<Vec<KeyColumn>>,
    pub format: Format,
    /// Total relation size on the source (heap, TOAST, indexes).
    pub bytes: i64,
    pub estimated_rows: Option<i64>,
}

impl VerifyTable {
    pub fn display(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }

    /// The relation as verify reads it (`ONLY` or not; see [`VerifyTable::only`]).
    pub fn relation(&self) -> String {
        if self.only {
            format!("ONLY {}", self.qualified)
        } else {
            self.qualified.clone()
        }
    }

    /// `c1, c2, …` of the compared columns.
    pub fn column_list(&self) -> String {
        self.columns
            .iter()
            .map(|c| c.ident.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// ORDER BY list of the key (empty without a key).
    pub fn key_order(&self) -> String {
        self.key
            .iter()
            .flatten()
            .map(KeyColumn::expr)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Positions of the key columns among [`VerifyTable::columns`].
    pub fn key_positions(&self) -> Vec<usize> {
        self.key
            .iter()
            .flatten()
            .filter_map(|k| self.columns.iter().position(|c| c.name == k.name))
            .collect()
    }
}

/// The plan's ordinary tables (partitions by their own name, as copy reads them), and
/// partitioned tables with partitions outside the plan as a whole, with collatable key
/// columns looked up on the source.
pub async fn from_plan(plan: &Plan, source: &Client) -> Result<Vec<VerifyTable>, Error> {
    let oids: Vec<u32> = plan.tables.iter().map(|t| t.oid).collect();
    let rows = source
        .query(
            "SELECT attrelid, attname::text FROM pg_attribute
              WHERE attrelid = ANY($1) AND attnum > 0 AND NOT attisdropped AND attcollation <> 0",
            &[&oids],
        )
        .await
        .map_err(sql("source", "read column collations"))?;
    let collatable = |oid: u32, name: &str| {
        rows.iter()
            .any(|r| r.get::<_, u32>(0) == oid && r.get::<_, &str>(1) == name)
    };
    let mut out = Vec::new();
    for t in plan
        .tables
        .iter()
        .filter(|t| t.kind == "table" || !t.children_outside.is_empty())
    {
        let columns: Vec<Column> = t
            .copied_columns()
            .map(|c| Column {
                name: c.name.clone(),
                ident: quote_ident(&c.name),
                needs_text: c.needs_text,
            })
            .collect();
        if columns.is_empty() {
            continue;
        }
        let key = t.primary_key.as_ref().and_then(|pk| {
            // A key over a generated column cannot be read back from COPY: compare the
            // table as a multiset instead.
            pk.iter()
                .all(|k| columns.iter().any(|c| &c.name == k))
                .then(|| {
                    pk.iter()
                        .map(|k| KeyColumn {
                            name: k.clone(),
                            ident: quote_ident(k),
                            collatable: collatable(t.oid, k),
                        })
                        .collect()
                })
        });
        out.push(VerifyTable {
            schema: t.schema.clone(),
            name: t.name.clone(),
            qualified: t.qualified(),
            only: t.children_outside.is_empty() && t.children_planned > 0,
            format: if columns.iter().any(|c| c.needs_text) {
                Format::Text
            } else {
                Format::Binary
            },
            columns,
            key,
            bytes: t.bytes,
            estimated_rows: t.estimated_rows,
        });
    }
    Ok(out)
}
