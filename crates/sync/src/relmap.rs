//! What the applier knows of each source relation: the target table it lands in, each
//! column's target type (values arrive as text and are cast on the target, or read into
//! binary COPY fields for inserts), the replica
//! identity, and the LSN from which the table's changes apply.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use conn::{qualified, quote_ident};
use tokio_postgres::Client;
use wire::pgoutput::{Relation, ReplicaIdentity};
use wire::Lsn;

use crate::binary::Conv;
use crate::error::{sql, Error};
use crate::timescale::{self, Named};

#[derive(Debug)]
pub struct TargetRel {
    /// `"schema"."name"`.
    pub qualified: String,
    /// `schema.name`, for messages.
    pub display: String,
    /// The target table's schema and name, unquoted (what sync records as touched).
    pub schema: String,
    pub name: String,
    /// The replica identity's column names (unquoted), in `key` order.
    pub key_names: Vec<String>,
    /// Quoted column names, in the source's column order.
    pub columns: Vec<String>,
    /// The target's type of each column, as format_type prints it.
    pub types: Vec<String>,
    /// Columns the target makes `GENERATED ALWAYS AS IDENTITY`: an UPDATE may only set them to
    /// DEFAULT, so they are left out where unchanged and overridden where they change.
    pub always_identity: Vec<bool>,
    /// Positions of the replica identity key columns (all columns for FULL).
    pub key: Vec<usize>,
    /// REPLICA IDENTITY FULL: the old row is the whole row, and rows may repeat.
    pub full_identity: bool,
    /// Changes committed before this LSN are already in the table's copied rows.
    pub applies_from: Lsn,
    /// How each column's text becomes a binary COPY field, where every column has a way
    /// (see `binary`); inserts go as text otherwise.
    pub copy_binary: Option<Vec<Conv>>,
    /// Updates and deletes may be applied as their net effect per key, many rows per
    /// statement: the key is the target table's only unique index (no other uniqueness that
    /// the order of row changes could trip) and no trigger fires for applied changes.
    pub batchable: bool,
    /// The column (source position) by whose value a batch of inserts is grouped: the one
    /// that leads most of the target's non-unique B-tree indexes (a metric or machine id,
    /// repeated across rows that arrive interleaved). None where no such index exists or a
    /// trigger fires for applied rows (it would see them in another order).
    pub insert_order: Option<usize>,
    /// For a table without a usable key (none, or REPLICA IDENTITY FULL): the column
    /// (source position, name) verify cuts it into chunks by
    /// (`state::changes::CHUNK_COLUMN_SQL`), whose values sync records as the rows it wrote.
    pub chunk_column: Option<(usize, String)>,
}

/// The rows of a hypertable that a chunk dropped on the source held.
#[derive(Debug)]
pub struct DroppedRows {
    /// The hypertable, `"schema"."name"`.
    pub qualified: String,
    pub display: String,
    /// Its time and space ranges, as SQL.
    pub filter: String,
    /// Its time range, for dropping the target's chunks it emptied.
    pub time: Option<timescale::TimeRange>,
    /// Drops committed before this LSN are already in the table's copy.
    pub applies_from: Lsn,
}

/// Relations by source relation id, refreshed whenever the source sends a Relation message.
pub struct RelMap {
    rels: HashMap<u32, Arc<TargetRel>>,
    /// Relations whose changes are not applied (TimescaleDB's own, see `timescale`).
    ignored: HashSet<u32>,
    /// Hypertable chunks: mapped to their hypertable's target table.
    chunks: HashSet<u32>,
    /// TimescaleDB's dimension slices (`timescale::SLICE_TABLE`) by relation id, with its
    /// column names: a DELETE there drops chunks.
    slice_rels: HashMap<u32, Vec<String>>,
    /// Every slice of the source sync knows, to tell which rows a dropped chunk held.
    slices: timescale::Slices,
    /// The run's schemas: hypertables elsewhere are not the run's.
    schemas: Vec<String>,
    /// Per table (schema, name): the snapshot LSN its copy was read at.
    snapshot_lsns: HashMap<(String, String), Lsn>,
    /// The source prints dates in the ISO style (the only one read into binary).
    iso_dates: bool,
}

impl RelMap {
    pub fn new(
        snapshot_lsns: HashMap<(String, String), Lsn>,
        iso_dates: bool,
        schemas: Vec<String>,
    ) -> RelMap {
        RelMap {
            rels: HashMap::new(),
            ignored: HashSet::new(),
            chunks: HashSet::new(),
            slice_rels: HashMap::new(),
            slices: timescale::Slices::default(),
            schemas,
            snapshot_lsns,
            iso_dates,
        }
    }

    pub fn get(&self, id: u32) -> Option<&Arc<TargetRel>> {
        self.rels.get(&id)
    }

    /// The relation's changes are not applied.
    pub fn ignored(&self, id: u32) -> bool {
        self.ignored.contains(&id)
    }

    /// The relation is a hypertable's chunk (its changes land in the hypertable).
    pub fn is_chunk(&self, id: u32) -> bool {
        self.chunks.contains(&id)
    }

    /// The relation is TimescaleDB's `dimension_slice` (see `timescale::Slices`).
    pub fn is_slices(&self, id: u32) -> bool {
        self.slice_rels.contains_key(&id)
    }

    /// Reads the source's dimensions and slices as they are now (the session's start):
    /// the chunks the stream may drop, with their ranges. Nothing without TimescaleDB.
    pub async fn load_timescale(&mut self, source: &Client) -> Result<(), Error> {
        if !self.load_dimensions(source).await? {
            return Ok(());
        }
        let rows = source
            .query(
                "SELECT id, chunk_id, dimension_id, range_start, range_end
                   FROM _timescaledb_catalog.dimension_slice",
                &[],
            )
            .await
            .map_err(sql("source", "read TimescaleDB's dimension slices"))?;
        for r in rows {
            self.slices.inserted(
                r.get(0),
                timescale::Slice {
                    chunk: r.get(1),
                    dimension: r.get(2),
                    start: r.get(3),
                    end: r.get(4),
                },
            );
        }
        Ok(())
    }

    /// False without TimescaleDB on the source. (to_regclass twice: a `'…'::regclass`
    /// literal is resolved when the query is parsed, and fails where the schema is absent.)
    async fn load_dimensions(&mut self, source: &Client) -> Result<bool, Error> {
        let what = "read TimescaleDB's dimensions";
        let installed: bool = source
            .query_one(
                "SELECT to_regclass('_timescaledb_catalog.dimension_slice') IS NOT NULL
                    AND EXISTS (SELECT 1 FROM pg_attribute
                                 WHERE attrelid = to_regclass('_timescaledb_catalog.dimension_slice')
                                   AND attname = 'chunk_id' AND NOT attisdropped)",
                &[],
            )
            .await
            .map_err(sql("source", what))?
            .get(0);
        if !installed {
            return Ok(false);
        }
        let rows = source
            .query(
                "SELECT d.id, h.schema_name::text, h.table_name::text, d.column_name::text,
                        d.column_type::regtype::text, d.num_slices IS NOT NULL,
                        d.partitioning_func_schema::text, d.partitioning_func::text
                   FROM _timescaledb_catalog.dimension d
                   JOIN _timescaledb_catalog.hypertable h ON h.id = d.hypertable_id",
                &[],
            )
            .await
            .map_err(sql("source", what))?;
        for r in rows {
            let func = match (r.get::<_, Option<String>>(6), r.get::<_, Option<String>>(7)) {
                (Some(s), Some(f)) => Some((s, f)),
                _ => None,
            };
            self.slices.dimension(
                r.get(0),
                timescale::Dimension {
                    hypertable: (r.get(1), r.get(2)),
                    column: r.get(3),
                    column_type: r.get(4),
                    space: r.get(5),
                    func,
                },
            );
        }
        Ok(true)
    }

    /// A new chunk's slice (a new hypertable's dimension is read when first seen).
    pub async fn slice_inserted(
        &mut self,
        id: u32,
        row: &wire::pgoutput::Tuple,
        source: &Client,
    ) -> Result<(), Error> {
        let Some((slice_id, slice)) = self
            .slice_rels
            .get(&id)
            .and_then(|cols| timescale::slice_row(cols, row))
        else {
            return Err(Error::Protocol(
                "a TimescaleDB dimension slice arrived without its id, chunk or range".into(),
            ));
        };
        if !self.slices.knows_dimension(slice.dimension) {
            self.load_dimensions(source).await?;
        }
        self.slices.inserted(slice_id, slice);
        Ok(())
    }

    /// A slice the source deleted: when it was a dropped chunk's last, the rows the target
    /// deletes (see `timescale::Slices`); an error when sync cannot say which rows went.
    pub fn slice_deleted(
        &mut self,
        id: u32,
        key: &wire::pgoutput::Tuple,
    ) -> Result<Option<DroppedRows>, Error> {
        let cols = self.slice_rels.get(&id);
        // With REPLICA IDENTITY FULL on the source's dimension_slice the old row is whole:
        // the range is known even for a slice dropped before this session.
        if let Some((slice_id, slice)) = cols.and_then(|cols| timescale::slice_row(cols, key)) {
            self.slices.inserted(slice_id, slice);
        }
        let Some(slice_id) = cols.and_then(|cols| timescale::slice_id(cols, key)) else {
            return Err(Error::Protocol(
                "a deleted TimescaleDB dimension slice arrived without its id".into(),
            ));
        };
        match self.slices.deleted(slice_id, &self.schemas) {
            timescale::Dropped::Nothing => Ok(None),
            timescale::Dropped::Rows {
                hypertable: (schema, name),
                filter,
                time,
            } => Ok(Some(DroppedRows {
                qualified: qualified(&schema, &name),
                display: format!("{schema}.{name}"),
                filter,
                time,
                applies_from: self
                    .snapshot_lsns
                    .get(&(schema, name))
                    .copied()
                    .unwrap_or(Lsn(0)),
            })),
            timescale::Dropped::Unknown(what) => Err(Error::Unsupported {
                what: format!(
                    "chunks dropped on the source (drop_chunks or a retention policy), but sync does not know {what} (dropped before this session started, or a dimension it cannot compare): the target would keep rows the source dropped"
                ),
                fix: "this run cannot go past the drop exactly: bluegreen abort, then copy again; before that, ALTER TABLE _timescaledb_catalog.dimension_slice REPLICA IDENTITY FULL on the source (a dropped slice then carries its range) or keep drop_chunks and retention policies off the source while sync is stopped (SELECT alter_job(id, scheduled => false))".into(),
            }),
        }
    }

    /// Maps a source Relation onto the target's table (a chunk onto its hypertable's), or
    /// explains what the target lacks.
    pub async fn learn(
        &mut self,
        rel: &Relation,
        target: &Client,
        source: &Client,
    ) -> Result<(), Error> {
        self.rels.remove(&rel.id);
        self.ignored.remove(&rel.id);
        self.chunks.remove(&rel.id);
        self.slice_rels.remove(&rel.id);
        if timescale::drops_chunks(&rel.namespace, &rel.name, timescale::Change::Delete) {
            self.slice_rels
                .insert(rel.id, rel.columns.iter().map(|c| c.name.clone()).collect());
        }
        let (schema, name) = match timescale::by_name(&rel.namespace, &rel.name) {
            Named::Table => (rel.namespace.clone(), rel.name.clone()),
            Named::Ignored => {
                self.ignored.insert(rel.id);
                return Ok(());
            }
            Named::Chunk => {
                let mut parent = chunk_parent(source, rel).await?;
                // An aggregate's materialization: its rows land in the target's
                // materialization of the aggregate of the same name (ids differ).
                if let Some((ps, pn)) = &parent {
                    if timescale::is_materialization(ps, pn) {
                        parent = match aggregate_of(source, "source", ps, pn).await? {
                            Some(view) if self.schemas.contains(&view.0) => {
                                materialization_of(target, &view).await?
                            }
                            _ => None,
                        };
                    }
                }
                match parent.and_then(|p| {
                    if timescale::is_materialization(&p.0, &p.1) {
                        Some(p)
                    } else {
                        timescale::chunk_target(Some(p), &self.schemas)
                    }
                }) {
                    Some(hypertable) => {
                        self.chunks.insert(rel.id);
                        hypertable
                    }
                    None => {
                        self.ignored.insert(rel.id);
                        return Ok(());
                    }
                }
            }
        };
        let display = format!("{schema}.{name}");
        let qualified = qualified(&schema, &name);
        let rows = target
            .query(
                "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), a.attidentity = 'a'
                   FROM pg_attribute a
                  WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped",
                &[&qualified],
            )
            .await
            .map_err(sql("target", format!("look up {display}")))?;
        if rows.is_empty() {
            return Err(Error::SchemaMismatch {
                table: display.clone(),
                problem: "the table exists on the source but not on the target".into(),
                ddl: format!(
                    "pg_dump --schema-only --table={qualified} <source> | psql <target>   (then sync goes on by itself)"
                ),
            });
        }
        let target_types: HashMap<String, (String, bool)> = rows
            .iter()
            .map(|r| (r.get(0), (r.get(1), r.get(2))))
            .collect();
        let mut columns = Vec::with_capacity(rel.columns.len());
        let mut types = Vec::with_capacity(rel.columns.len());
        let mut always_identity = Vec::with_capacity(rel.columns.len());
        for c in &rel.columns {
            match target_types.get(&c.name) {
                Some((t, always)) => {
                    columns.push(quote_ident(&c.name));
                    types.push(t.clone());
                    always_identity.push(*always);
                }
                None => {
                    let definition = column_definition(source, &qualified, c).await?;
                    return Err(Error::SchemaMismatch {
                        table: display.clone(),
                        problem: format!(
                            "column {} ({definition}) exists on the source but not on the target",
                            c.name
                        ),
                        ddl: format!(
                            "ALTER TABLE {qualified} ADD COLUMN {} {definition};",
                            quote_ident(&c.name)
                        ),
                    });
                }
            }
        }
        changed_type(source, &qualified, &display, rel, &types).await?;
        let full_identity = rel.replica_identity == ReplicaIdentity::Full;
        let key: Vec<usize> = if full_identity {
            (0..rel.columns.len()).collect()
        } else {
            rel.columns
                .iter()
                .enumerate()
                .filter(|(_, c)| c.is_key)
                .map(|(i, _)| i)
                .collect()
        };
        // Both questions hang on the target's indexes and on whether a trigger fires for
        // applied rows (it would see them in another order).
        let indexes = target
            .query_one(
                &format!(
                    "SELECT (SELECT count(*) FROM pg_index
                          WHERE indrelid = r AND (indisunique OR indisexclusion)) <= 1,
                        NOT EXISTS (SELECT 1 FROM pg_trigger
                                     WHERE tgrelid = r AND NOT tgisinternal
                                       AND tgenabled IN ('A', 'R')),
                        (SELECT a.attname::text
                           FROM pg_index i
                           JOIN pg_class c ON c.oid = i.indexrelid
                           JOIN pg_am am ON am.oid = c.relam AND am.amname = 'btree'
                           JOIN pg_attribute a ON a.attrelid = r AND a.attnum = i.indkey[0]
                          WHERE i.indrelid = r AND NOT i.indisunique
                          GROUP BY a.attname
                          ORDER BY count(*) DESC, a.attname
                          LIMIT 1),
                        {chunk_column}
                   FROM to_regclass($1) AS r",
                    chunk_column = state::changes::chunk_column_sql("r")
                ),
                &[&qualified],
            )
            .await
            .map_err(sql("target", format!("look up {display}'s indexes")))?;
        let (one_unique, no_trigger): (bool, bool) = (indexes.get(0), indexes.get(1));
        // Net changes set every column they carry; an ALWAYS identity column takes the row
        // path, which leaves it out unless it really changes. Rows of a compressed chunk are
        // changed by decompressing their whole batch: two sessions changing neighbours would
        // wait for each other until the group commits.
        let compressed = compressed_hypertable(target, &schema, &name).await?;
        let batchable = !full_identity
            && !key.is_empty()
            && one_unique
            && no_trigger
            && !always_identity.contains(&true)
            && !compressed;
        let insert_order = indexes
            .get::<_, Option<String>>(2)
            .filter(|_| no_trigger)
            .and_then(|name| rel.columns.iter().position(|c| c.name == name));
        // A chunk's changes apply from its hypertable's copy.
        let applies_from = self
            .snapshot_lsns
            .get(&(schema.clone(), name.clone()))
            .copied()
            .unwrap_or(Lsn(0));
        let copy_binary = types
            .iter()
            .map(|t| Conv::for_type(t).filter(|c| self.iso_dates || !c.needs_iso()))
            .collect();
        let chunk_column = indexes
            .get::<_, Option<String>>(3)
            .and_then(|name| Some((rel.columns.iter().position(|c| c.name == name)?, name)));
        let key_names = key.iter().map(|&i| rel.columns[i].name.clone()).collect();
        let new = TargetRel {
            qualified,
            display,
            schema,
            name,
            key_names,
            columns,
            types,
            always_identity,
            copy_binary,
            key,
            full_identity,
            applies_from,
            batchable,
            insert_order,
            chunk_column,
        };
        // The chunks of one hypertable share its description, so the applier sees one table
        // (a key's pending change is found whichever chunk the next change names).
        let shared = self
            .rels
            .values()
            .find(|r| {
                r.qualified == new.qualified
                    && r.columns == new.columns
                    && r.types == new.types
                    && r.always_identity == new.always_identity
                    && r.key == new.key
                    && r.full_identity == new.full_identity
                    && r.applies_from == new.applies_from
            })
            .cloned();
        self.rels
            .insert(rel.id, shared.unwrap_or_else(|| Arc::new(new)));
        Ok(())
    }
}

/// A column as the source defines it, for the DDL that adds it on the target: type, default
/// or generation expression, identity, NOT NULL (a column added on the source with a default
/// filled its existing rows; the same DDL fills the target's alike).
async fn column_definition(
    source: &Client,
    qualified: &str,
    c: &wire::pgoutput::Column,
) -> Result<String, Error> {
    let row = source
        .query_opt(
            "SELECT format_type(a.atttypid, a.atttypmod), a.attnotnull,
                    pg_get_expr(d.adbin, d.adrelid), a.attgenerated::text, a.attidentity::text
               FROM pg_attribute a
               LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
              WHERE a.attrelid = to_regclass($1::text) AND a.attname = $2 AND NOT a.attisdropped",
            &[&qualified, &c.name],
        )
        .await
        .map_err(sql("source", "look up a column's definition"))?;
    let Some(row) = row else {
        // The table was renamed or dropped since: its type is what the stream says.
        return source
            .query_one(
                "SELECT format_type($1, $2)",
                &[&c.type_oid, &c.type_modifier],
            )
            .await
            .map(|r| r.get(0))
            .map_err(sql("source", "look up a column type"));
    };
    let mut def: String = row.get(0);
    let expr: Option<String> = row.get(2);
    match (row.get::<_, String>(3).as_str(), expr) {
        ("s", Some(e)) => def.push_str(&format!(" GENERATED ALWAYS AS ({e}) STORED")),
        (_, Some(e)) => def.push_str(&format!(" DEFAULT {e}")),
        _ => {}
    }
    match row.get::<_, String>(4).as_str() {
        "a" => def.push_str(" GENERATED ALWAYS AS IDENTITY"),
        "d" => def.push_str(" GENERATED BY DEFAULT AS IDENTITY"),
        _ => {}
    }
    if row.get::<_, bool>(1) {
        def.push_str(" NOT NULL");
    }
    Ok(def)
}

/// A built-in column type that differs between source and target means the source's column
/// changed type (`ALTER COLUMN … TYPE … USING …` rewrites its rows without a logical
/// change): the target keeps the old values, so apply stops with the DDL and the repair.
/// (User-defined types print schema-qualified or not by search_path, so they are not
/// compared here; verify compares their values.)
async fn changed_type(
    source: &Client,
    qualified: &str,
    display: &str,
    rel: &Relation,
    target_types: &[String],
) -> Result<(), Error> {
    let oids: Vec<u32> = rel.columns.iter().map(|c| c.type_oid).collect();
    let mods: Vec<i32> = rel.columns.iter().map(|c| c.type_modifier).collect();
    let rows = source
        .query(
            "SELECT format_type(t, m) FROM unnest($1::oid[], $2::int4[]) WITH ORDINALITY u(t, m, i)
              ORDER BY i",
            &[&oids, &mods],
        )
        .await
        .map_err(sql("source", "look up column types"))?;
    for ((c, row), target) in rel.columns.iter().zip(&rows).zip(target_types) {
        let source_type: String = row.get(0);
        if c.type_oid < FIRST_USER_OID && &source_type != target {
            return Err(Error::SchemaMismatch {
                table: display.to_string(),
                problem: format!(
                    "column {} is {source_type} on the source but {target} on the target: its type changed on the source, whose rewrite of the rows is not streamed",
                    c.name
                ),
                ddl: format!(
                    "ALTER TABLE {qualified} ALTER COLUMN {col} TYPE {source_type} USING {col}::{source_type};   (then bluegreen verify --repair re-copies the rows whose values differ)",
                    col = quote_ident(&c.name)
                ),
            });
        }
    }
    Ok(())
}

/// OIDs below this are PostgreSQL's own (built-in types print the same on every server).
const FIRST_USER_OID: u32 = 16384;

/// A chunk's parent table on the source (schema, name): by pg_inherits while the chunk
/// exists, else (dropped since) by the hypertable id in its name. None when neither knows
/// it (the hypertable is gone too).
async fn chunk_parent(source: &Client, rel: &Relation) -> Result<Option<(String, String)>, Error> {
    let what = || {
        format!(
            "look up the hypertable of chunk {}.{}",
            rel.namespace, rel.name
        )
    };
    let row = source
        .query_opt(
            "SELECT pn.nspname::text, pc.relname::text
               FROM pg_inherits i JOIN pg_class pc ON pc.oid = i.inhparent
               JOIN pg_namespace pn ON pn.oid = pc.relnamespace
              WHERE i.inhrelid = $1",
            &[&rel.id],
        )
        .await
        .map_err(sql("source", what()))?;
    if let Some(r) = row {
        return Ok(Some((r.get(0), r.get(1))));
    }
    let Some(id) = timescale::hypertable_id(&rel.name) else {
        return Ok(None);
    };
    let row = source
        .query_opt(
            "SELECT schema_name::text, table_name::text FROM _timescaledb_catalog.hypertable
              WHERE id = $1",
            &[&id],
        )
        .await
        .map_err(sql("source", what()))?;
    Ok(row.map(|r| (r.get(0), r.get(1))))
}

/// The continuous aggregate (view schema, name) whose materialization hypertable this is.
async fn aggregate_of(
    c: &Client,
    side: &'static str,
    schema: &str,
    name: &str,
) -> Result<Option<(String, String)>, Error> {
    c.query_opt(
        "SELECT a.user_view_schema::text, a.user_view_name::text
           FROM _timescaledb_catalog.continuous_agg a
           JOIN _timescaledb_catalog.hypertable h ON h.id = a.mat_hypertable_id
          WHERE h.schema_name = $1 AND h.table_name = $2",
        &[&schema, &name],
    )
    .await
    .map(|r| r.map(|r| (r.get(0), r.get(1))))
    .map_err(sql(
        side,
        format!("look up the aggregate of {schema}.{name}"),
    ))
}

/// The target's materialization hypertable of a continuous aggregate, when it has it.
async fn materialization_of(
    target: &Client,
    view: &(String, String),
) -> Result<Option<(String, String)>, Error> {
    target
        .query_opt(
            "SELECT h.schema_name::text, h.table_name::text
               FROM _timescaledb_catalog.continuous_agg a
               JOIN _timescaledb_catalog.hypertable h ON h.id = a.mat_hypertable_id
              WHERE a.user_view_schema = $1 AND a.user_view_name = $2",
            &[&view.0, &view.1],
        )
        .await
        .map(|r| r.map(|r| (r.get(0), r.get(1))))
        .map_err(sql(
            "target",
            format!("look up the materialization of {}.{}", view.0, view.1),
        ))
}

/// Whether the target's table is a TimescaleDB hypertable with compression enabled.
async fn compressed_hypertable(target: &Client, schema: &str, name: &str) -> Result<bool, Error> {
    let what = || format!("look up {schema}.{name} in TimescaleDB's catalog");
    let installed: bool = target
        .query_one(
            "SELECT to_regclass('_timescaledb_catalog.hypertable') IS NOT NULL",
            &[],
        )
        .await
        .map_err(sql("target", what()))?
        .get(0);
    if !installed {
        return Ok(false);
    }
    target
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM _timescaledb_catalog.hypertable
                             WHERE schema_name = $1 AND table_name = $2
                               AND compressed_hypertable_id IS NOT NULL)",
            &[&schema, &name],
        )
        .await
        .map(|r| r.get(0))
        .map_err(sql("target", what()))
}
