//! Materialized views of the planned schemas: which exist, in what order they refresh (one
//! reading another refreshes after it), whether they can refresh CONCURRENTLY, and an
//! order-independent digest of their rows. Their rows are not replicated (a refresh writes no
//! logical changes), so green's go stale unless something refreshes them there.

use std::collections::{BTreeMap, BTreeSet};

use conn::qualified;
use tokio_postgres::Client;

use crate::read::q;
use crate::Error;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatView {
    pub schema: String,
    pub name: String,
    /// Has rows (a view created WITH NO DATA and never refreshed has none to read).
    pub populated: bool,
    /// Populated, with a unique index on plain columns and no WHERE: REFRESH … CONCURRENTLY
    /// works, and readers are not blocked meanwhile.
    pub concurrently: bool,
}

impl MatView {
    pub fn qualified(&self) -> String {
        qualified(&self.schema, &self.name)
    }
}

/// The materialized views of `schemas`, each after every one it reads (directly or through
/// plain views).
pub async fn in_refresh_order(c: &Client, schemas: &[String]) -> Result<Vec<MatView>, Error> {
    let rows = c
        .query(
            "SELECT c.oid, n.nspname::text, c.relname::text, c.relispopulated,
                    c.relispopulated AND EXISTS (
                        SELECT 1 FROM pg_index i
                         WHERE i.indrelid = c.oid AND i.indisunique AND i.indisvalid
                           AND i.indpred IS NULL AND i.indexprs IS NULL)
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE c.relkind = 'm' AND n.nspname = ANY($1)
              ORDER BY 2, 3",
            &[&schemas],
        )
        .await
        .map_err(q("materialized views"))?;
    // Named order where nothing else decides (OIDs would follow creation order).
    let oids: Vec<u32> = rows.iter().map(|r| r.get(0)).collect();
    let mut views: BTreeMap<u32, MatView> = rows
        .iter()
        .map(|r| {
            (
                r.get::<_, u32>(0),
                MatView {
                    schema: r.get(1),
                    name: r.get(2),
                    populated: r.get(3),
                    concurrently: r.get(4),
                },
            )
        })
        .collect();
    if views.is_empty() {
        return Ok(Vec::new());
    }
    // What each view reads, following plain views to the relations under them.
    let deps = c
        .query(
            "WITH RECURSIVE reads(mv, rel) AS (
                 SELECT r.ev_class, d.refobjid
                   FROM pg_rewrite r
                   JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
                                   AND d.refclassid = 'pg_class'::regclass
                  WHERE r.ev_class = ANY($1) AND d.refobjid <> r.ev_class
                 UNION
                 SELECT reads.mv, d.refobjid
                   FROM reads
                   JOIN pg_class v ON v.oid = reads.rel AND v.relkind = 'v'
                   JOIN pg_rewrite r ON r.ev_class = v.oid
                   JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = r.oid
                                   AND d.refclassid = 'pg_class'::regclass
                  WHERE d.refobjid <> v.oid)
             SELECT mv, rel FROM reads WHERE rel = ANY($1) AND rel <> mv",
            &[&oids],
        )
        .await
        .map_err(q("materialized view dependencies"))?;
    let edges: Vec<(u32, u32)> = deps.iter().map(|r| (r.get(0), r.get(1))).collect();
    Ok(refresh_order(&oids, &edges)
        .into_iter()
        .filter_map(|oid| views.remove(&oid))
        .collect())
}

/// `nodes` ordered so that for every `(reader, read)` edge `read` comes first; otherwise in
/// the given order. A cycle (impossible in PostgreSQL) keeps the rest in the given order.
fn refresh_order(nodes: &[u32], edges: &[(u32, u32)]) -> Vec<u32> {
    let mut waiting: BTreeMap<u32, BTreeSet<u32>> =
        nodes.iter().map(|&n| (n, BTreeSet::new())).collect();
    for &(reader, read) in edges {
        if reader != read && waiting.contains_key(&read) {
            if let Some(w) = waiting.get_mut(&reader) {
                w.insert(read);
            }
        }
    }
    let mut out = Vec::with_capacity(nodes.len());
    while out.len() < nodes.len() {
        let next = nodes
            .iter()
            .find(|n| waiting.get(*n).is_some_and(|w| w.is_empty()))
            .or_else(|| nodes.iter().find(|n| waiting.contains_key(*n)))
            .copied();
        let Some(n) = next else { break };
        waiting.remove(&n);
        for w in waiting.values_mut() {
            w.remove(&n);
        }
        out.push(n);
    }
    out
}

/// Row count and an order-independent digest of a materialized view's rows (the sum of a
/// 64-bit hash of each row's text), for comparing one side's with the other's.
pub async fn digest(c: &Client, view: &MatView) -> Result<(i64, String), Error> {
    let r = c
        .query_one(
            &format!(
                "SELECT count(*), coalesce(sum(('x' || left(md5(t::text), 16))::bit(64)::bigint::numeric), 0)::text
                   FROM {} t",
                view.qualified()
            ),
            &[],
        )
        .await
        .map_err(q("materialized view digest"))?;
    Ok((r.get(0), r.get(1)))
}

#[cfg(test)]
mod tests {
    use super::refresh_order;

    #[test]
    fn readers_refresh_after_what_they_read() {
        // 3 reads 1; 1 reads 2; 4 stands alone.
        assert_eq!(
            refresh_order(&[1, 2, 3, 4], &[(3, 1), (1, 2)]),
            vec![2, 1, 3, 4]
        );
        assert_eq!(refresh_order(&[1, 2], &[]), vec![1, 2]);
        // Edges to relations that are not views of the list are ignored.
        assert_eq!(refresh_order(&[5, 6], &[(5, 99), (6, 5)]), vec![5, 6]);
        // A cycle does not lose anyone.
        assert_eq!(refresh_order(&[1, 2], &[(1, 2), (2, 1)]).len(), 2);
    }
}
