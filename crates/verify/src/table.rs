//! What verify needs to know of one table: the columns it compares (every column, generated
//! ones included, in the same order on both sides), its key, and the COPY format.

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
    /// Binary form embeds database-specific OIDs, or the target's type differs from the
    /// source's: compare its text form.
    pub needs_text: bool,
    /// The source's type, as `format_type` prints it.
    pub source_type: String,
    /// Computed by each server: compared (the target may compute it otherwise, e.g. under
    /// another locale), never written by a repair.
    pub generated: bool,
}

impl Column {
    /// The value compared in binary form: the column, except that a NaN of `real` or
    /// `double precision` becomes the one NaN `'NaN'` reads as. PostgreSQL holds all NaNs
    /// equal, but their bytes differ (`'Infinity' - 'Infinity'` has the sign bit set), and
    /// sync's text path can only write the NaN `'NaN'` reads as.
    pub fn compared(&self) -> String {
        match self.source_type.as_str() {
            "double precision" | "real" => format!(
                "CASE WHEN {i} = 'NaN' THEN 'NaN'::{t} ELSE {i} END",
                i = self.ident,
                t = self.source_type
            ),
            _ => self.ident.clone(),
        }
    }
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
    /// Primary key columns; None: the table is compared as a multiset of rows.
    pub key: Option<Vec<KeyColumn>>,
    /// Without a key: the column its chunks are cut by (`state::changes::CHUNK_COLUMN_SQL`),
    /// its rows compared as one multiset per chunk. None: the whole table is one chunk.
    pub chunk_column: Option<KeyColumn>,
    pub format: Format,
    /// Total relation size on the source (heap, TOAST, indexes).
    pub bytes: i64,
    pub estimated_rows: Option<i64>,
    /// Sync records the table's changes under its own name, so an incremental verify may
    /// carry its chunks: not so for a partition (its changes may arrive under its root's
    /// name) or a table read with its children (theirs arrive under theirs), but a
    /// TimescaleDB hypertable, whose chunks' changes sync records as the hypertable's.
    pub journaled: bool,
}

impl VerifyTable {
    pub fn display(&self) -> String {
        conn::display_qualified(&self.schema, &self.name)
    }

    /// The relation as verify reads it (`ONLY` or not; see [`VerifyTable::only`]).
    pub fn relation(&self) -> String {
        if self.only {
            format!("ONLY {}", self.qualified)
        } else {
            self.qualified.clone()
        }
    }

    /// `c1, c2, …` of the compared values (see [`Column::compared`]), for SELECT.
    pub fn column_list(&self) -> String {
        self.columns
            .iter()
            .map(Column::compared)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `c1, c2, …` of the compared columns a COPY can write (not generated ones).
    pub fn stored_column_list(&self) -> String {
        self.columns
            .iter()
            .filter(|c| !c.generated)
            .map(|c| c.ident.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The columns chunks are cut by: the key, or else the chunk column.
    pub fn range_key(&self) -> Option<&[KeyColumn]> {
        self.key
            .as_deref()
            .or(self.chunk_column.as_ref().map(std::slice::from_ref))
    }

    /// ORDER BY list of [`VerifyTable::range_key`].
    pub fn range_order(&self) -> String {
        self.range_key()
            .unwrap_or_default()
            .iter()
            .map(KeyColumn::expr)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `(e ->> 0)::type AS k0, …`: [`VerifyTable::range_key`]'s values out of `elem`, a JSON
    /// array of their text forms, each read as its column's type (as the source has it).
    pub fn range_key_from_json(&self, elem: &str) -> String {
        self.range_key()
            .unwrap_or_default()
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let ty = self
                    .columns
                    .iter()
                    .find(|c| c.name == k.name)
                    .map(|c| c.source_type.as_str())
                    .unwrap_or("text");
                format!("({elem} ->> {i})::{ty} AS {}", k.ident)
            })
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
            .columns
            .iter()
            .map(|c| Column {
                name: c.name.clone(),
                ident: quote_ident(&c.name),
                needs_text: c.needs_text,
                source_type: c.type_name.clone(),
                generated: c.generated,
            })
            .collect();
        if columns.is_empty() {
            continue;
        }
        let key = t.primary_key.as_ref().and_then(|pk| {
            // Every key column is among the compared columns (generated ones included);
            // should one not be, the table is compared as a multiset.
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
        let chunk_column = t
            .chunk_column
            .as_ref()
            .filter(|c| key.is_none() && columns.iter().any(|col| &col.name == *c))
            .map(|c| KeyColumn {
                name: c.clone(),
                ident: quote_ident(c),
                collatable: collatable(t.oid, c),
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
            chunk_column,
            bytes: t.bytes,
            estimated_rows: t.estimated_rows,
            journaled: t.partition_of.is_none()
                && ((t.children_planned == 0 && t.children_outside.is_empty())
                    || plan
                        .hypertables
                        .iter()
                        .any(|h| h.schema == t.schema && h.name == t.name)),
        });
    }
    Ok(out)
}

/// Columns whose type on the target differs from the source's are compared by their text
/// forms: equal bytes of different types are not equal values (an int4 1 read as real is
/// 1e-45). A compared column missing on the target is refused, naming it.
pub async fn align_with_target(
    tables: &mut [VerifyTable],
    source: &Client,
    target: &Client,
) -> Result<(), Error> {
    let (source_types, rows) = tokio::try_join!(
        column_types(tables, source, "source"),
        column_types(tables, target, "target")
    )?;
    for (i, t) in tables.iter_mut().enumerate() {
        let of_table: Vec<(String, String)> = rows
            .iter()
            .filter(|(n, _, _)| *n == i)
            .map(|(_, c, ty)| (c.clone(), ty.clone()))
            .collect();
        if of_table.is_empty() {
            // The table itself is missing: reading it reports that.
            continue;
        }
        let shown = t.display();
        for c in &mut t.columns {
            let source_type = source_types
                .iter()
                .find(|(n, name, _)| *n == i && *name == c.name)
                .map(|(_, _, ty)| ty.as_str())
                .unwrap_or(c.source_type.as_str());
            match of_table.iter().find(|(name, _)| *name == c.name) {
                None => {
                    return Err(Error::Refused {
                        what: format!(
                            "column {shown}.{} ({}) is missing on the target",
                            c.name, c.source_type
                        ),
                        fix: format!(
                            "add it on the target (ALTER TABLE {} ADD COLUMN {} {}) and copy its values, or verify other schemas with --schema",
                            t.qualified, c.ident, c.source_type
                        ),
                    });
                }
                Some((_, ty)) if ty != source_type => {
                    tracing::warn!(
                        column = %format!("{shown}.{}", c.name),
                        source = %source_type,
                        target = %ty,
                        "column types differ: compared by their text forms"
                    );
                    c.needs_text = true;
                }
                Some(_) => {}
            }
        }
        if t.columns.iter().any(|c| c.needs_text) {
            t.format = Format::Text;
        }
    }
    Ok(())
}

/// (table position, column, type) of every column of `tables` on one side, types printed
/// with an empty search_path (every type outside pg_catalog schema-qualified), so a
/// database-level search_path on either side does not make equal types look different.
async fn column_types(
    tables: &[VerifyTable],
    client: &Client,
    side: &'static str,
) -> Result<Vec<(usize, String, String)>, Error> {
    let names: Vec<String> = tables.iter().map(|t| t.qualified.clone()).collect();
    client
        .batch_execute("SET search_path = ''")
        .await
        .map_err(sql(side, "SET search_path"))?;
    let rows = client
        .query(
            "SELECT n.i::int, a.attname::text, format_type(a.atttypid, a.atttypmod)
               FROM unnest($1::text[]) WITH ORDINALITY n(name, i)
               JOIN pg_attribute a ON a.attrelid = to_regclass(n.name)
              WHERE a.attnum > 0 AND NOT a.attisdropped",
            &[&names],
        )
        .await
        .map_err(sql(side, "read column types"))?;
    client
        .batch_execute("RESET search_path")
        .await
        .map_err(sql(side, "RESET search_path"))?;
    Ok(rows
        .iter()
        .map(|r| (r.get::<_, i32>(0) as usize - 1, r.get(1), r.get(2)))
        .collect())
}
