//! Catalog queries. Each returns plain data; judging it is `findings`' job.

use std::collections::HashMap;

use tokio_postgres::Client;

use crate::error::Error;
use crate::plan::{
    Column, CompressionSettings, ContinuousAggregate, Dimension, Extension, Hypertable, Job,
    RelName, Sequence, Server, Table, UnkeyedHypertable,
};

pub(crate) fn q(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> Error {
    move |source| Error::Query { what, source }
}

pub async fn server(client: &Client, connection: String) -> Result<Server, Error> {
    let r = client
        .query_one(
            "SELECT current_setting('server_version'),
                    current_setting('server_version_num')::int,
                    current_database()::text,
                    pg_database_size(current_database()),
                    current_user::text,
                    r.rolsuper, r.rolreplication,
                    has_database_privilege(current_database(), 'CREATE'),
                    current_setting('wal_level'),
                    current_setting('max_replication_slots')::int,
                    (SELECT count(*) FROM pg_replication_slots)::int,
                    current_setting('max_wal_senders')::int,
                    (SELECT count(*) FROM pg_stat_replication)::int,
                    (SELECT extversion FROM pg_extension WHERE extname = 'timescaledb')::text,
                    -- pg_settings hides it from a role that may not read it; then
                    -- TimescaleDB's own settings tell (defined once its library is loaded,
                    -- which in a fresh session means preloaded).
                    coalesce((SELECT 'timescaledb' = ANY(string_to_array(replace(setting, ' ', ''), ','))
                                FROM pg_settings WHERE name = 'shared_preload_libraries'),
                             current_setting('timescaledb.license', true) IS NOT NULL),
                    d.datcollate::text, d.datctype::text
               FROM pg_roles r, pg_database d
              WHERE r.rolname = current_user AND d.datname = current_database()",
            &[],
        )
        .await
        .map_err(q("server settings"))?;
    Ok(Server {
        connection,
        version: r.get(0),
        version_num: r.get(1),
        database: r.get(2),
        database_bytes: r.get(3),
        role: r.get(4),
        superuser: r.get(5),
        replication: r.get(6),
        can_create: r.get(7),
        wal_level: r.get(8),
        max_replication_slots: r.get(9),
        used_replication_slots: r.get(10),
        max_wal_senders: r.get(11),
        used_wal_senders: r.get(12),
        timescaledb: r.get(13),
        preloads_timescaledb: r.get(14),
        collate: r.get(15),
        ctype: r.get(16),
    })
}

/// Who this server is: postmaster start time (to the microsecond), port and database.
/// Used to refuse migrating a database onto itself; the system identifier would not do,
/// since clones of one base backup share it, and reading it needs privileges.
pub async fn identity(client: &Client) -> Option<String> {
    client
        .query_one(
            "SELECT pg_postmaster_start_time()::text || '/' || current_setting('port')
                    || '/' || current_database()",
            &[],
        )
        .await
        .ok()
        .map(|r| r.get(0))
}

/// Application schemas: everything but system schemas, extension-owned schemas, TimescaleDB's
/// internals and bluegreen's own state schema.
pub async fn schemas(client: &Client) -> Result<Vec<String>, Error> {
    let rows = client
        .query(
            r"SELECT n.nspname::text FROM pg_namespace n
               WHERE n.nspname NOT IN ('information_schema', 'bluegreen', 'toolkit_experimental')
                 AND n.nspname NOT LIKE 'pg\_%'
                 AND n.nspname NOT LIKE '\_timescaledb%'
                 AND n.nspname NOT LIKE 'timescaledb\_%'
                 AND NOT EXISTS (SELECT 1 FROM pg_depend d
                                  WHERE d.classid = 'pg_namespace'::regclass
                                    AND d.objid = n.oid AND d.deptype = 'e')
               ORDER BY 1",
            &[],
        )
        .await
        .map_err(q("schemas"))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

pub async fn tables(client: &Client, schemas: &[String]) -> Result<Vec<Table>, Error> {
    let rows = client
        .query(
            &format!(
                "SELECT n.nspname::text, c.relname::text, c.oid, c.relkind::text,
                    c.relpersistence = 'u',
                    pg_total_relation_size(c.oid),
                    CASE WHEN c.reltuples < 0 THEN NULL ELSE c.reltuples::bigint END,
                    c.relreplident::text,
                    (SELECT array_agg(a.attname::text ORDER BY k.ord)
                       FROM pg_index i, unnest(i.indkey::int2[]) WITH ORDINALITY k(attnum, ord)
                       JOIN pg_attribute a ON a.attnum = k.attnum
                      WHERE i.indrelid = c.oid AND a.attrelid = c.oid AND i.indisprimary),
                    (SELECT array_agg(a.attname::text ORDER BY k.ord)
                       FROM pg_index i, unnest(i.indkey::int2[]) WITH ORDINALITY k(attnum, ord)
                       JOIN pg_attribute a ON a.attnum = k.attnum
                      WHERE i.indrelid = c.oid AND a.attrelid = c.oid AND i.indisreplident),
                    (SELECT pn.nspname || '.' || pc.relname
                       FROM pg_inherits h JOIN pg_class pc ON pc.oid = h.inhparent
                       JOIN pg_namespace pn ON pn.oid = pc.relnamespace
                      WHERE h.inhrelid = c.oid AND c.relispartition),
                    pg_get_userbyid(c.relowner)::text,
                    has_table_privilege(c.oid, 'SELECT'),
                    pg_has_role(c.relowner, 'USAGE'),
                    {chunk_column}
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE c.relkind IN ('r', 'p') AND n.nspname = ANY($1)
              ORDER BY pg_total_relation_size(c.oid) DESC, 1, 2",
                chunk_column = state::changes::chunk_column_sql("c.oid")
            ),
            &[&schemas],
        )
        .await
        .map_err(q("tables"))?;
    let mut tables: Vec<Table> = rows
        .iter()
        .map(|r| {
            let kind: String = r.get(3);
            Table {
                schema: r.get(0),
                name: r.get(1),
                oid: r.get(2),
                kind: if kind == "p" { "partitioned" } else { "table" }.into(),
                unlogged: r.get(4),
                bytes: r.get(5),
                estimated_rows: r.get(6),
                primary_key: r.get(8),
                chunk_column: r
                    .get::<_, Option<Vec<String>>>(8)
                    .is_none()
                    .then(|| r.get(14))
                    .flatten(),
                replica_identity: match r.get::<_, String>(7).as_str() {
                    "f" => "full",
                    "i" => "index",
                    "n" => "nothing",
                    _ => "default",
                }
                .into(),
                identity_columns: Vec::new(),
                replica_identity_columns: Vec::new(),
                columns: Vec::new(),
                partition_of: r.get(10),
                children_outside: Vec::new(),
                children_planned: 0,
                owner: r.get(11),
                selectable: r.get(12),
                owned: r.get(13),
                on_target: false,
                time_column: None,
            }
        })
        .collect();
    let index_cols: Vec<Option<Vec<String>>> = rows.iter().map(|r| r.get(9)).collect();

    let oids: Vec<u32> = tables.iter().map(|t| t.oid).collect();
    let mut columns = columns(client, &oids).await?;
    let mut children = descendants(client, &oids).await?;
    for (t, ri_index) in tables.iter_mut().zip(index_cols) {
        for (schema, name) in children.remove(&t.oid).unwrap_or_default() {
            if schemas.contains(&schema) {
                t.children_planned += 1;
            } else {
                t.children_outside.push(RelName { schema, name });
            }
        }
        t.columns = columns.remove(&t.oid).unwrap_or_default();
        t.replica_identity_columns = match t.replica_identity.as_str() {
            "full" => t.columns.iter().map(|c| c.name.clone()).collect(),
            "index" => ri_index.unwrap_or_default(),
            "default" => t.primary_key.clone().unwrap_or_default(),
            _ => Vec::new(),
        };
        t.identity_columns = t.replica_identity_columns.clone();
    }
    Ok(tables)
}

/// Tables inheriting from each of `oids` at any depth (partitions, inheritance children,
/// TimescaleDB chunks), as (schema, name).
async fn descendants(
    client: &Client,
    oids: &[u32],
) -> Result<HashMap<u32, Vec<(String, String)>>, Error> {
    let rows = client
        .query(
            "WITH RECURSIVE d(root, rel) AS (
                 SELECT inhparent, inhrelid FROM pg_inherits WHERE inhparent = ANY($1)
                 UNION ALL
                 SELECT d.root, i.inhrelid FROM d JOIN pg_inherits i ON i.inhparent = d.rel)
             SELECT d.root, n.nspname::text, c.relname::text
               FROM d JOIN pg_class c ON c.oid = d.rel
               JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE c.relkind IN ('r', 'p', 'f')
              ORDER BY 1, 2, 3",
            &[&oids],
        )
        .await
        .map_err(q("inheritance"))?;
    let mut out: HashMap<u32, Vec<(String, String)>> = HashMap::new();
    for r in rows {
        out.entry(r.get(0)).or_default().push((r.get(1), r.get(2)));
    }
    Ok(out)
}

/// The object identifier types whose values name other objects by OID (PostgreSQL docs,
/// "Object Identifier Types"); `oid` itself is a plain number and stays binary.
const REG_TYPES: [&str; 11] = [
    "regclass",
    "regcollation",
    "regconfig",
    "regdictionary",
    "regnamespace",
    "regoper",
    "regoperator",
    "regproc",
    "regprocedure",
    "regrole",
    "regtype",
];

async fn columns(client: &Client, oids: &[u32]) -> Result<HashMap<u32, Vec<Column>>, Error> {
    // needs_text: arrays whose element is user-defined or not a plain base type, and
    // composites, carry type OIDs in binary COPY that differ between databases; reg* values
    // are OIDs of other objects (a class, a type, a function…), which mean other objects or
    // none on the target. Domains (over domains) count as the type they end in.
    let rows = client
        .query(
            "SELECT a.attrelid, a.attname::text, format_type(a.atttypid, a.atttypmod),
                    a.atttypid, a.attnotnull, a.attgenerated <> '',
                    CASE a.attidentity WHEN 'a' THEN 'always' WHEN 'd' THEN 'by default' END,
                    bt.typtype = 'c'
                    OR (bt.typelem <> 0 AND bt.typlen = -1
                        AND (bt.typelem >= 16384 OR et.typtype IN ('c', 'd', 'e')))
                    OR bt.oid IN (SELECT unnest($2::text[]::regtype[]))
                    OR (bt.typlen = -1 AND bt.typelem IN (SELECT unnest($2::text[]::regtype[])))
               FROM pg_attribute a
               CROSS JOIN LATERAL (
                    WITH RECURSIVE d(oid, typtype, typbasetype) AS (
                         SELECT oid, typtype, typbasetype FROM pg_type WHERE oid = a.atttypid
                         UNION ALL
                         SELECT p.oid, p.typtype, p.typbasetype
                           FROM pg_type p JOIN d ON p.oid = d.typbasetype WHERE d.typtype = 'd')
                    SELECT oid FROM d WHERE typtype <> 'd') base
               JOIN pg_type bt ON bt.oid = base.oid
               LEFT JOIN pg_type et ON et.oid = bt.typelem
              WHERE a.attrelid = ANY($1) AND a.attnum > 0 AND NOT a.attisdropped
              ORDER BY a.attrelid, a.attnum",
            &[&oids, &&REG_TYPES[..]],
        )
        .await
        .map_err(q("columns"))?;
    let mut out: HashMap<u32, Vec<Column>> = HashMap::new();
    for r in rows {
        out.entry(r.get(0)).or_default().push(Column {
            name: r.get(1),
            type_name: r.get(2),
            type_oid: r.get(3),
            not_null: r.get(4),
            generated: r.get(5),
            identity: r.get(6),
            needs_text: r.get(7),
        });
    }
    Ok(out)
}

/// Names (`schema.name`) of relations of one kind (`m` materialized views, `f` foreign tables).
pub async fn relations_of_kind(
    client: &Client,
    schemas: &[String],
    kind: &str,
) -> Result<Vec<String>, Error> {
    let rows = client
        .query(
            "SELECT n.nspname::text, c.relname::text FROM pg_class c
               JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE c.relkind::text = $2 AND n.nspname = ANY($1) ORDER BY 1, 2",
            &[&schemas, &kind],
        )
        .await
        .map_err(q("relations"))?;
    // As people read them (and as `Table::display_name` shows a planned table).
    Ok(rows
        .iter()
        .map(|r| conn::display_qualified(r.get(0), r.get(1)))
        .collect())
}

pub async fn sequences(client: &Client, schemas: &[String]) -> Result<Vec<Sequence>, Error> {
    let rows = client
        .query(
            "SELECT n.nspname::text, c.relname::text,
                    CASE WHEN has_sequence_privilege(c.oid, 'SELECT')
                         THEN pg_sequence_last_value(c.oid) END,
                    has_sequence_privilege(c.oid, 'SELECT'),
                    (SELECT tn.nspname || '.' || tc.relname || '.' || a.attname
                       FROM pg_depend d
                       JOIN pg_class tc ON tc.oid = d.refobjid
                       JOIN pg_namespace tn ON tn.oid = tc.relnamespace
                       JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
                      WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                        AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
                      LIMIT 1)
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE c.relkind = 'S' AND n.nspname = ANY($1)
              ORDER BY 1, 2",
            &[&schemas],
        )
        .await
        .map_err(q("sequences"))?;
    let mut out: Vec<Sequence> = rows
        .iter()
        .map(|r| Sequence {
            schema: r.get(0),
            name: r.get(1),
            last_value: r.get(2),
            sequence_last_value: None,
            is_called: None,
            owned_by: r.get(4),
        })
        .collect();
    // pg_sequence_last_value is NULL when nextval was not called since the sequence was
    // created or set with setval(…, false): the sequence's own fields say what it holds.
    let readable: Vec<usize> = (0..rows.len())
        .filter(|&i| rows[i].get::<_, bool>(3))
        .collect();
    // A few hundred per statement: one round trip each, none of unbounded length.
    for part in readable.chunks(200) {
        let sql = part
            .iter()
            .map(|&i| {
                format!(
                    "SELECT {i}, last_value, is_called FROM {}",
                    conn::qualified(&out[i].schema, &out[i].name)
                )
            })
            .collect::<Vec<_>>()
            .join(" UNION ALL ");
        for r in client
            .query(&sql, &[])
            .await
            .map_err(q("sequence values"))?
        {
            let i: i32 = r.get(0);
            if let Some(s) = out.get_mut(i as usize) {
                s.sequence_last_value = Some(r.get(1));
                s.is_called = Some(r.get(2));
            }
        }
    }
    Ok(out)
}

/// Prepared transactions anywhere on the source server (a slot waits for every one).
pub async fn prepared_transactions(client: &Client) -> Result<Vec<String>, Error> {
    let rows = client
        .query(
            "SELECT format('%s (owner %s, database %s, prepared %s)', gid, owner, database,
                           date_trunc('second', prepared))
               FROM pg_prepared_xacts ORDER BY prepared",
            &[],
        )
        .await
        .map_err(q("prepared transactions"))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

pub async fn large_objects(client: &Client) -> Result<i64, Error> {
    client
        .query_one("SELECT count(*) FROM pg_largeobject_metadata", &[])
        .await
        .map(|r| r.get(0))
        .map_err(q("large objects"))
}

/// Extensions installed on the source (plpgsql is always there), checked against the target.
pub async fn extensions(source: &Client, target: &Client) -> Result<Vec<Extension>, Error> {
    let installed = source
        .query(
            "SELECT extname::text, extversion FROM pg_extension WHERE extname <> 'plpgsql' ORDER BY 1",
            &[],
        )
        .await
        .map_err(q("source extensions"))?;
    let available: HashMap<String, (Option<String>, Option<String>)> = target
        .query(
            "SELECT name::text, installed_version, default_version FROM pg_available_extensions",
            &[],
        )
        .await
        .map_err(q("target extensions"))?
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect();
    Ok(installed
        .iter()
        .map(|r| {
            let name: String = r.get(0);
            Extension {
                version: r.get(1),
                available_on_target: available.contains_key(&name),
                installed_on_target: available.get(&name).and_then(|v| v.0.clone()),
                default_on_target: available.get(&name).and_then(|v| v.1.clone()),
                name,
            }
        })
        .collect())
}

/// Indexes (`schema.name`) of the planned schemas whose contents depend on the database's
/// locale: over an expression or with a predicate, or on a column of the default collation.
pub async fn locale_dependent_indexes(
    client: &Client,
    schemas: &[String],
) -> Result<Vec<String>, Error> {
    let rows = client
        .query(
            "SELECT n.nspname || '.' || c.relname FROM pg_index i
               JOIN pg_class c ON c.oid = i.indexrelid
               JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = ANY($1)
                AND (i.indexprs IS NOT NULL OR i.indpred IS NOT NULL
                     OR 100::oid = ANY(i.indcollation::oid[]))
              ORDER BY 1",
            &[&schemas],
        )
        .await
        .map_err(q("locale-dependent indexes"))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Tables (`schema.name`) that already exist on the target in the planned schemas.
pub async fn existing_tables(client: &Client, schemas: &[String]) -> Result<Vec<String>, Error> {
    relations_of_kind(client, schemas, "r").await.map(|mut v| {
        v.sort();
        v
    })
}

/// Whether the target role may apply changes the way sync does (session_replication_role
/// and replication origins) without being superuser.
pub async fn can_apply(client: &Client) -> Result<bool, Error> {
    client
        .query_one(
            "SELECT has_parameter_privilege('session_replication_role', 'SET')
                AND has_function_privilege('pg_replication_origin_create(text)', 'EXECUTE')
                AND has_function_privilege('pg_replication_origin_session_setup(text)', 'EXECUTE')
                AND has_function_privilege('pg_replication_origin_xact_setup(pg_lsn, timestamptz)', 'EXECUTE')",
            &[],
        )
        .await
        .map(|r| r.get(0))
        .map_err(q("apply privileges"))
}

/// TimescaleDB's view of the source, read through `timescaledb_information`: hypertables
/// (dimensions, chunks, compression, jobs), continuous aggregates with their watermarks,
/// user jobs, and whether compression writes its WAL markers.
pub struct Timescale {
    pub hypertables: Vec<Hypertable>,
    pub continuous_aggregates: Vec<ContinuousAggregate>,
    pub other_jobs: Vec<Job>,
    pub markers: bool,
    /// `_timescaledb_catalog.dimension_slice` has REPLICA IDENTITY FULL: a dropped chunk's
    /// slices stream with their ranges, so sync drops it exactly even when the drop
    /// happened while sync was stopped.
    pub slice_ranges: bool,
    /// Hypertables of any schema (aggregates' materializations included) whose chunks have
    /// no replica identity.
    pub without_identity: Vec<UnkeyedHypertable>,
}

pub async fn timescale(client: &Client) -> Result<Timescale, Error> {
    let tables = client
        .query(
            "SELECT h.hypertable_schema::text, h.hypertable_name::text, h.num_chunks::bigint,
                    h.compression_enabled,
                    (SELECT count(*) FROM timescaledb_information.chunks c
                      WHERE c.hypertable_schema = h.hypertable_schema
                        AND c.hypertable_name = h.hypertable_name AND c.is_compressed),
                    s.segmentby, s.orderby,
                    ARRAY(SELECT DISTINCT c.chunk_schema::text FROM timescaledb_information.chunks c
                           WHERE c.hypertable_schema = h.hypertable_schema
                             AND c.hypertable_name = h.hypertable_name ORDER BY 1)
               FROM timescaledb_information.hypertables h
               LEFT JOIN timescaledb_information.hypertable_compression_settings s
                 ON s.hypertable = format('%I.%I', h.hypertable_schema, h.hypertable_name)::regclass
              WHERE h.hypertable_schema NOT LIKE '\\_timescaledb%'
              ORDER BY 1, 2",
            &[],
        )
        .await
        .map_err(q("hypertables"))?;
    let dims = client
        .query(
            "SELECT d.hypertable_schema::text, d.hypertable_name::text, d.column_name::text,
                    d.dimension_type::text,
                    coalesce(d.time_interval::text, d.integer_interval::text),
                    d.num_partitions::int, format_type(d.column_type, NULL),
                    (SELECT quote_ident(cd.partitioning_func_schema) || '.'
                            || quote_ident(cd.partitioning_func)
                       FROM _timescaledb_catalog.dimension cd
                       JOIN _timescaledb_catalog.hypertable ch ON ch.id = cd.hypertable_id
                      WHERE ch.schema_name = d.hypertable_schema
                        AND ch.table_name = d.hypertable_name
                        AND cd.column_name = d.column_name
                        AND (cd.partitioning_func_schema, cd.partitioning_func)
                            <> ('_timescaledb_functions', 'get_partition_hash')),
                    (SELECT quote_ident(cd.integer_now_func_schema) || '.'
                            || quote_ident(cd.integer_now_func)
                       FROM _timescaledb_catalog.dimension cd
                       JOIN _timescaledb_catalog.hypertable ch ON ch.id = cd.hypertable_id
                      WHERE ch.schema_name = d.hypertable_schema
                        AND ch.table_name = d.hypertable_name
                        AND cd.column_name = d.column_name)
               FROM timescaledb_information.dimensions d ORDER BY 1, 2, d.dimension_number",
            &[],
        )
        .await
        .map_err(q("hypertable dimensions"))?;
    let caggs = client
        .query(
            "SELECT a.view_schema::text, a.view_name::text,
                    a.hypertable_schema || '.' || a.hypertable_name,
                    a.view_definition, a.materialized_only,
                    a.materialization_hypertable_schema || '.' || a.materialization_hypertable_name,
                    (SELECT CASE WHEN d.column_type IN ('timestamptz'::regtype, 'timestamp'::regtype, 'date'::regtype)
                                 THEN _timescaledb_functions.to_timestamp(
                                          _timescaledb_functions.cagg_watermark(c.mat_hypertable_id))::text
                                 ELSE _timescaledb_functions.cagg_watermark(c.mat_hypertable_id)::text END
                       FROM _timescaledb_catalog.continuous_agg c
                       JOIN timescaledb_information.dimensions d
                         ON d.hypertable_schema = a.materialization_hypertable_schema
                        AND d.hypertable_name = a.materialization_hypertable_name
                        AND d.dimension_number = 1
                      WHERE c.user_view_schema = a.view_schema AND c.user_view_name = a.view_name)
               FROM timescaledb_information.continuous_aggregates a ORDER BY 1, 2",
            &[],
        )
        .await
        .map_err(q("continuous aggregates"))?;
    let jobs = client
        .query(
            "SELECT job_id, proc_schema || '.' || proc_name, proc_name::text,
                    schedule_interval::text, scheduled, config,
                    hypertable_schema || '.' || hypertable_name
               FROM timescaledb_information.jobs
              WHERE job_id >= 1000
              ORDER BY 1",
            &[],
        )
        .await
        .map_err(q("TimescaleDB jobs"))?;
    let markers: Option<String> = client
        .query_one(
            "SELECT current_setting('timescaledb.enable_compression_wal_markers', true)",
            &[],
        )
        .await
        .map_err(q("TimescaleDB settings"))?
        .get(0);

    let slice_ranges: bool = client
        .query_one(
            "SELECT coalesce((SELECT relreplident = 'f' FROM pg_class
                               WHERE oid = to_regclass('_timescaledb_catalog.dimension_slice')),
                             false)",
            &[],
        )
        .await
        .map_err(q("TimescaleDB's dimension slices"))?
        .get(0);

    // Compressed hypertables (internal) are left out: TimescaleDB writes them below the
    // executor, where replica identity is not checked.
    let unkeyed = client
        .query(
            "SELECT h.schema_name::text, h.table_name::text,
                    (SELECT a.view_schema || '.' || a.view_name
                       FROM timescaledb_information.continuous_aggregates a
                      WHERE a.materialization_hypertable_schema = h.schema_name
                        AND a.materialization_hypertable_name = h.table_name)
               FROM _timescaledb_catalog.hypertable h
               JOIN pg_namespace n ON n.nspname = h.schema_name
               JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = h.table_name
              WHERE NOT EXISTS (SELECT 1 FROM _timescaledb_catalog.hypertable x
                                 WHERE x.compressed_hypertable_id = h.id)
                AND (c.relreplident = 'n'
                     OR (c.relreplident = 'd' AND NOT EXISTS (
                             SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary))
                     OR (c.relreplident = 'i' AND NOT EXISTS (
                             SELECT 1 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisreplident)))
              ORDER BY 1, 2",
            &[],
        )
        .await
        .map_err(q("hypertables without replica identity"))?;
    let without_identity = unkeyed
        .iter()
        .map(|r| UnkeyedHypertable {
            schema: r.get(0),
            name: r.get(1),
            aggregate: r.get(2),
        })
        .collect();

    let continuous_aggregates: Vec<ContinuousAggregate> = caggs
        .iter()
        .map(|r| ContinuousAggregate {
            schema: r.get(0),
            name: r.get(1),
            hypertable: r.get(2),
            definition: r.get::<_, String>(3).trim().to_string(),
            materialized_only: r.get(4),
            materialization: r.get(5),
            watermark: r.get(6),
        })
        .collect();
    let mut all_jobs: Vec<Job> = jobs
        .iter()
        .map(|r| {
            let proc: String = r.get(2);
            Job {
                id: r.get(0),
                kind: match proc.as_str() {
                    "policy_compression" => "compression",
                    "policy_retention" => "retention",
                    "policy_reorder" => "reorder",
                    "policy_refresh_continuous_aggregate" => "refresh",
                    _ => "user",
                }
                .into(),
                proc: r.get(1),
                schedule_interval: r.get(3),
                scheduled: r.get(4),
                config: r.get(5),
                on: r.get(6),
            }
        })
        .collect();
    // A refresh policy names the aggregate's materialization hypertable: show it under the
    // aggregate's own name and count it with the hypertable it aggregates.
    for j in &mut all_jobs {
        if let Some(a) = continuous_aggregates
            .iter()
            .find(|a| j.on.as_deref() == Some(a.materialization.as_str()))
        {
            j.on = Some(format!("{}.{}", a.schema, a.name));
        }
    }
    let hypertables: Vec<Hypertable> = tables
        .iter()
        .map(|t| {
            let (schema, name): (String, String) = (t.get(0), t.get(1));
            let qualified = format!("{schema}.{name}");
            let dimensions = dims
                .iter()
                .filter(|d| d.get::<_, String>(0) == schema && d.get::<_, String>(1) == name)
                .map(|d| Dimension {
                    column: d.get(2),
                    kind: d.get(3),
                    interval: d.get(4),
                    partitions: d.get(5),
                    column_type: d.get(6),
                    partitioning_func: d.get(7),
                    integer_now_func: d.get(8),
                })
                .collect();
            let compression: bool = t.get(3);
            let aggregates: Vec<String> = continuous_aggregates
                .iter()
                .filter(|a| a.hypertable == qualified)
                .map(|a| format!("{}.{}", a.schema, a.name))
                .collect();
            let jobs = all_jobs
                .iter()
                .filter(|j| {
                    j.on.as_deref()
                        .is_some_and(|on| on == qualified || aggregates.iter().any(|a| a == on))
                })
                .cloned()
                .collect();
            Hypertable {
                dimensions,
                chunks: t.get(2),
                compression,
                compressed_chunks: t.get(4),
                compression_settings: compression.then(|| CompressionSettings {
                    segment_by: t.get(5),
                    order_by: t.get(6),
                }),
                jobs,
                chunk_schemas: t.get(7),
                schema,
                name,
            }
        })
        .collect();
    let other_jobs = all_jobs.into_iter().filter(|j| j.on.is_none()).collect();
    Ok(Timescale {
        hypertables,
        continuous_aggregates,
        other_jobs,
        markers: markers.as_deref() != Some("off"),
        slice_ranges,
        without_identity,
    })
}
