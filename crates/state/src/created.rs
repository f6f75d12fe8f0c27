//! What a run's pre-data created on the target, recorded in the same transaction, so
//! `abort --drop-data` drops those objects and nothing else (not an operator's table in a
//! schema the run only copied into).

use crate::{q, Error, GenericClient};

/// Every object that can be created and dropped on its own, by catalog and OID. Parts of
/// other objects (a table's row type, an array type, a toast table) and extension members
/// are left out when recording: they go with their owner. So are other sessions' temporary
/// objects (not the run's, whatever appears meanwhile).
const DROPPABLE: &str = "
    SELECT 'pg_catalog.pg_namespace'::regclass::oid AS classid, oid AS objid FROM pg_catalog.pg_namespace
               WHERE nspname !~ '^pg_(toast_)?temp_'
    UNION ALL SELECT 'pg_catalog.pg_class'::regclass, oid FROM pg_catalog.pg_class
               WHERE relkind IN ('r', 'p', 'v', 'm', 'S', 'f') AND relpersistence <> 't'
    UNION ALL SELECT 'pg_catalog.pg_type'::regclass, oid FROM pg_catalog.pg_type
    UNION ALL SELECT 'pg_catalog.pg_proc'::regclass, oid FROM pg_catalog.pg_proc
    UNION ALL SELECT 'pg_catalog.pg_extension'::regclass, oid FROM pg_catalog.pg_extension
    UNION ALL SELECT 'pg_catalog.pg_collation'::regclass, oid FROM pg_catalog.pg_collation
    UNION ALL SELECT 'pg_catalog.pg_operator'::regclass, oid FROM pg_catalog.pg_operator
    UNION ALL SELECT 'pg_catalog.pg_opfamily'::regclass, oid FROM pg_catalog.pg_opfamily
    UNION ALL SELECT 'pg_catalog.pg_opclass'::regclass, oid FROM pg_catalog.pg_opclass
    UNION ALL SELECT 'pg_catalog.pg_cast'::regclass, oid FROM pg_catalog.pg_cast
    UNION ALL SELECT 'pg_catalog.pg_ts_config'::regclass, oid FROM pg_catalog.pg_ts_config
    UNION ALL SELECT 'pg_catalog.pg_ts_dict'::regclass, oid FROM pg_catalog.pg_ts_dict
    UNION ALL SELECT 'pg_catalog.pg_conversion'::regclass, oid FROM pg_catalog.pg_conversion";

/// The objects that exist before pre-data runs: (catalog OIDs, object OIDs).
pub struct Before(Vec<u32>, Vec<u32>);

/// Takes the set of objects before pre-data; call in the transaction that applies it.
pub async fn before(c: &impl GenericClient) -> Result<Before, Error> {
    let rows = c
        .query(DROPPABLE, &[])
        .await
        .map_err(q("list objects before pre-data"))?;
    Ok(Before(
        rows.iter().map(|r| r.get(0)).collect(),
        rows.iter().map(|r| r.get(1)).collect(),
    ))
}

/// Records every object that is new since `before` as created by `run`. Returns how many.
pub async fn record(c: &impl GenericClient, run: &str, before: &Before) -> Result<u64, Error> {
    c.execute(
        &format!(
            "INSERT INTO bluegreen.created (run, classid, objid, kind, identity)
             SELECT $1, n.classid, n.objid, o.type, o.identity
               FROM ({DROPPABLE}) n,
                    LATERAL pg_catalog.pg_identify_object(n.classid, n.objid, 0) o
              WHERE NOT EXISTS (SELECT 1 FROM unnest($2::oid[], $3::oid[]) b(classid, objid)
                                 WHERE b.classid = n.classid AND b.objid = n.objid)
                AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                                 WHERE d.classid = n.classid AND d.objid = n.objid
                                   AND d.deptype IN ('i', 'e'))
             ON CONFLICT DO NOTHING"
        ),
        &[&run, &before.0, &before.1],
    )
    .await
    .map_err(q("record created objects"))
}

/// Marks the run's record as taken (in the transaction that applies pre-data, also when
/// the target's schema was the operator's and the run created nothing).
pub async fn mark_recorded(c: &impl GenericClient, run: &str) -> Result<(), Error> {
    c.execute(
        "UPDATE bluegreen.runs SET created_recorded = true WHERE run = $1",
        &[&run],
    )
    .await
    .map(|_| ())
    .map_err(q("mark the record of created objects"))
}

/// Whether the run's copy recorded what it created: false for a run copied by a bluegreen
/// older than the record (state schema version 4), or one whose start did not finish.
pub async fn recorded(c: &impl GenericClient, run: &str) -> Result<bool, Error> {
    // Through jsonb: an older state schema has no such column.
    let row = c
        .query_opt(
            "SELECT coalesce((to_jsonb(r) ->> 'created_recorded')::boolean, false)
               FROM bluegreen.runs r WHERE r.run = $1",
            &[&run],
        )
        .await
        .map_err(q("look up the record of created objects"))?;
    Ok(row.is_some_and(|r| r.get(0)))
}

/// One object a run created, as recorded and as it stands now.
#[derive(Debug, Clone)]
pub struct CreatedObject {
    pub classid: u32,
    pub objid: u32,
    /// As `pg_identify_object` names it: `table`, `view`, `function`, `schema`, …
    pub kind: String,
    /// Qualified and quoted by the server, e.g. `factory_telemetry.f(integer)`.
    pub identity: String,
    /// The OID still names this object (not gone, not reused for another one).
    pub present: bool,
}

impl CreatedObject {
    /// Everything recorded for `run`, with whether each object is still there.
    pub async fn list(c: &impl GenericClient, run: &str) -> Result<Vec<CreatedObject>, Error> {
        let rows = c
            .query(
                "SELECT c.classid, c.objid, c.kind, c.identity,
                        o.identity IS NOT DISTINCT FROM c.identity AND o.type = c.kind
                   FROM bluegreen.created c,
                        LATERAL pg_catalog.pg_identify_object(c.classid, c.objid, 0) o
                  WHERE c.run = $1
                  ORDER BY c.kind, c.identity",
                &[&run],
            )
            .await
            .map_err(q("read created objects"))?;
        Ok(rows
            .iter()
            .map(|r| CreatedObject {
                classid: r.get(0),
                objid: r.get(1),
                kind: r.get(2),
                identity: r.get(3),
                present: r.get::<_, Option<bool>>(4).unwrap_or(false),
            })
            .collect())
    }

    pub fn is_schema(&self) -> bool {
        self.kind == "schema"
    }
}

/// Objects the run did not create that depend on one it did (a view an operator made over
/// a copied table, a foreign key into one): dropping the run's objects would take them too.
/// Membership in a schema the run created does not count; such objects keep the schema.
/// What TimescaleDB made for the run's hypertables after the record was taken (their chunks,
/// compressed hypertables and continuous aggregates' views and materializations) is the
/// run's too: dropping the hypertable drops it.
/// Each entry: (dependent object, what it depends on), as the server describes them.
pub async fn foreign_dependents(
    c: &impl GenericClient,
    run: &str,
) -> Result<Vec<(String, String)>, Error> {
    let timescaledb: bool = c
        .query_one(
            "SELECT to_regclass('_timescaledb_catalog.continuous_agg') IS NOT NULL",
            &[],
        )
        .await
        .map_err(q("look for TimescaleDB's catalog"))?
        .get(0);
    let rows = c
        .query(
            &format!(
                "WITH RECURSIVE parts(classid, objid, refclassid, refobjid) AS (
                     SELECT d.classid, d.objid, d.refclassid, d.refobjid FROM pg_catalog.pg_depend d
                      WHERE d.deptype IN ('a', 'i', 'e')
                     UNION ALL
                     SELECT 'pg_catalog.pg_class'::regclass, i.inhrelid,
                            'pg_catalog.pg_class'::regclass, i.inhparent
                       FROM pg_catalog.pg_inherits i
                       JOIN pg_catalog.pg_class k ON k.oid = i.inhrelid
                       JOIN pg_catalog.pg_namespace n ON n.oid = k.relnamespace
                      WHERE n.nspname = '_timescaledb_internal'
                     {}
                 ), owned(classid, objid) AS (
                     SELECT c.classid, c.objid FROM bluegreen.created c,
                            LATERAL pg_catalog.pg_identify_object(c.classid, c.objid, 0) o
                      WHERE c.run = $1 AND o.identity IS NOT DISTINCT FROM c.identity
                     UNION
                     SELECT p.classid, p.objid FROM parts p
                       JOIN owned o ON p.refclassid = o.classid AND p.refobjid = o.objid
                 )
                 SELECT DISTINCT pg_catalog.pg_describe_object(d.classid, d.objid, 0),
                        pg_catalog.pg_describe_object(d.refclassid, d.refobjid, 0)
                   FROM pg_catalog.pg_depend d
                   JOIN owned o ON d.refclassid = o.classid AND d.refobjid = o.objid
                  WHERE d.deptype = 'n'
                    AND d.refclassid <> 'pg_catalog.pg_namespace'::regclass
                    AND NOT EXISTS (SELECT 1 FROM owned x WHERE x.classid = d.classid AND x.objid = d.objid)
                  ORDER BY 1, 2",
                if timescaledb { TIMESCALEDB_PARTS } else { "" }
            ),
            &[&run],
        )
        .await
        .map_err(q("look for objects that depend on the run's"))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// TimescaleDB's own relations of a hypertable, as edges to it: its chunks (compressed
/// chunks belong to the compressed hypertable), its compressed hypertable, and each
/// continuous aggregate over it (the view, its partial and direct views, and its
/// materialization hypertable).
const TIMESCALEDB_PARTS: &str = "
    UNION ALL
    SELECT 'pg_catalog.pg_class'::regclass, to_regclass(format('%I.%I', c.schema_name, c.table_name)),
           'pg_catalog.pg_class'::regclass, to_regclass(format('%I.%I', h.schema_name, h.table_name))
      FROM _timescaledb_catalog.chunk c
      JOIN _timescaledb_catalog.hypertable h ON h.id = c.hypertable_id
    UNION ALL
    SELECT 'pg_catalog.pg_class'::regclass, to_regclass(format('%I.%I', ch.schema_name, ch.table_name)),
           'pg_catalog.pg_class'::regclass, to_regclass(format('%I.%I', h.schema_name, h.table_name))
      FROM _timescaledb_catalog.hypertable h
      JOIN _timescaledb_catalog.hypertable ch ON ch.id = h.compressed_hypertable_id
    UNION ALL
    SELECT 'pg_catalog.pg_class'::regclass, to_regclass(format('%I.%I', v.s, v.n)),
           'pg_catalog.pg_class'::regclass, to_regclass(format('%I.%I', h.schema_name, h.table_name))
      FROM _timescaledb_catalog.continuous_agg a
      JOIN _timescaledb_catalog.hypertable h ON h.id = a.raw_hypertable_id
      JOIN _timescaledb_catalog.hypertable m ON m.id = a.mat_hypertable_id
     CROSS JOIN LATERAL (VALUES (a.user_view_schema, a.user_view_name),
                                (a.partial_view_schema, a.partial_view_name),
                                (a.direct_view_schema, a.direct_view_name),
                                (m.schema_name, m.table_name)) v(s, n)";

/// What is in a schema now (after the run's own objects are gone), described by the server.
pub async fn schema_contents(
    c: &impl GenericClient,
    schema_oid: u32,
) -> Result<Vec<String>, Error> {
    let rows = c
        .query(
            "SELECT DISTINCT pg_catalog.pg_describe_object(d.classid, d.objid, 0)
               FROM pg_catalog.pg_depend d
              WHERE d.refclassid = 'pg_catalog.pg_namespace'::regclass AND d.refobjid = $1
                AND d.deptype = 'n'
                AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend i
                                 WHERE i.classid = d.classid AND i.objid = d.objid
                                   AND i.deptype = 'i')
              ORDER BY 1",
            &[&schema_oid],
        )
        .await
        .map_err(q("list a schema's contents"))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}
