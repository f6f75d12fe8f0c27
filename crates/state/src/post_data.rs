//! Post-data items (indexes, constraints, triggers, …), each built and marked done in one
//! target transaction, in stages: keys and indexes, then foreign keys and the rest, then
//! materialized view refreshes.

use crate::{q, Error, GenericClient};

/// The kind of the items that ANALYZE one table each (one per plan table, appended after
/// pg_dump's items): claimed like any other item, so `copy --join` workers take a share.
pub const ANALYZE_KIND: &str = "ANALYZE";

#[derive(Debug, Clone)]
pub struct NewItem {
    pub stage: i32,
    pub kind: String,
    pub name: String,
    pub sql: String,
}

#[derive(Debug, Clone)]
pub struct PostDataItem {
    pub item: i32,
    pub stage: i32,
    pub kind: String,
    pub name: String,
    pub sql: String,
}

impl PostDataItem {
    pub async fn insert_all(
        c: &impl GenericClient,
        run: &str,
        items: &[NewItem],
    ) -> Result<(), Error> {
        let stmt = c
            .prepare(
                "INSERT INTO bluegreen.post_data (run, item, stage, kind, name, sql)
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
            )
            .await
            .map_err(q("prepare post-data insert"))?;
        for (i, it) in items.iter().enumerate() {
            c.execute(
                &stmt,
                &[&run, &(i as i32), &it.stage, &it.kind, &it.name, &it.sql],
            )
            .await
            .map_err(q("insert post-data item"))?;
        }
        Ok(())
    }

    /// Stages that still have pending items, in order.
    pub async fn pending_stages(c: &impl GenericClient, run: &str) -> Result<Vec<i32>, Error> {
        let rows = c
            .query(
                "SELECT DISTINCT stage FROM bluegreen.post_data
                  WHERE run = $1 AND state = 'pending' ORDER BY 1",
                &[&run],
            )
            .await
            .map_err(q("pending post-data stages"))?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    /// Claims the next pending item of `stage` for the calling transaction.
    pub async fn claim(
        c: &impl GenericClient,
        run: &str,
        stage: i32,
    ) -> Result<Option<PostDataItem>, Error> {
        let row = c
            .query_opt(
                "SELECT item, stage, kind, name, sql FROM bluegreen.post_data
                  WHERE run = $1 AND stage = $2 AND state = 'pending'
                  ORDER BY item LIMIT 1 FOR UPDATE SKIP LOCKED",
                &[&run, &stage],
            )
            .await
            .map_err(q("claim post-data item"))?;
        Ok(row.map(|r| PostDataItem {
            item: r.get(0),
            stage: r.get(1),
            kind: r.get(2),
            name: r.get(3),
            sql: r.get(4),
        }))
    }

    /// Every pending item, in item order (a scheduler picks among them).
    pub async fn pending(c: &impl GenericClient, run: &str) -> Result<Vec<PostDataItem>, Error> {
        let rows = c
            .query(
                "SELECT item, stage, kind, name, sql FROM bluegreen.post_data
                  WHERE run = $1 AND state = 'pending' ORDER BY item",
                &[&run],
            )
            .await
            .map_err(q("pending post-data items"))?;
        Ok(rows
            .iter()
            .map(|r| PostDataItem {
                item: r.get(0),
                stage: r.get(1),
                kind: r.get(2),
                name: r.get(3),
                sql: r.get(4),
            })
            .collect())
    }

    /// Claims item number `item` for the calling transaction. None: it is built already, or
    /// another transaction holds it ([`PostDataItem::is_done`] tells which).
    pub async fn claim_one(
        c: &impl GenericClient,
        run: &str,
        item: i32,
    ) -> Result<Option<PostDataItem>, Error> {
        let row = c
            .query_opt(
                "SELECT item, stage, kind, name, sql FROM bluegreen.post_data
                  WHERE run = $1 AND item = $2 AND state = 'pending' FOR UPDATE SKIP LOCKED",
                &[&run, &item],
            )
            .await
            .map_err(q("claim post-data item"))?;
        Ok(row.map(|r| PostDataItem {
            item: r.get(0),
            stage: r.get(1),
            kind: r.get(2),
            name: r.get(3),
            sql: r.get(4),
        }))
    }

    /// True once item number `item` is built (committed by whichever process built it).
    pub async fn is_done(c: &impl GenericClient, run: &str, item: i32) -> Result<bool, Error> {
        c.query_one(
            "SELECT coalesce(bool_and(state = 'done'), true) FROM bluegreen.post_data
              WHERE run = $1 AND item = $2",
            &[&run, &item],
        )
        .await
        .map(|r| r.get(0))
        .map_err(q("post-data item state"))
    }

    /// Marks the item built by process `by`, in the transaction that built it.
    pub async fn finish(
        &self,
        c: &impl GenericClient,
        run: &str,
        seconds: f64,
        by: &str,
    ) -> Result<(), Error> {
        c.execute(
            "UPDATE bluegreen.post_data SET state = 'done', seconds = $3, built_by = $4
              WHERE run = $1 AND item = $2",
            &[&run, &self.item, &seconds, &by],
        )
        .await
        .map(|_| ())
        .map_err(q("finish post-data item"))
    }

    /// Items built, whoever built them.
    pub async fn done(c: &impl GenericClient, run: &str) -> Result<i64, Error> {
        c.query_one(
            "SELECT count(*) FROM bluegreen.post_data WHERE run = $1 AND state = 'done'",
            &[&run],
        )
        .await
        .map(|r| r.get(0))
        .map_err(q("count built post-data items"))
    }

    /// Items process `by` built.
    pub async fn done_by(c: &impl GenericClient, run: &str, by: &str) -> Result<i64, Error> {
        c.query_one(
            "SELECT count(*) FROM bluegreen.post_data
              WHERE run = $1 AND state = 'done' AND built_by = $2",
            &[&run, &by],
        )
        .await
        .map(|r| r.get(0))
        .map_err(q("count items built by a process"))
    }

    /// Items of `kind`, built or not.
    pub async fn count_of_kind(
        c: &impl GenericClient,
        run: &str,
        kind: &str,
    ) -> Result<i64, Error> {
        c.query_one(
            "SELECT count(*) FROM bluegreen.post_data WHERE run = $1 AND kind = $2",
            &[&run, &kind],
        )
        .await
        .map(|r| r.get(0))
        .map_err(q("count post-data items of a kind"))
    }

    pub async fn count(c: &impl GenericClient, run: &str) -> Result<i64, Error> {
        c.query_one(
            "SELECT count(*) FROM bluegreen.post_data WHERE run = $1",
            &[&run],
        )
        .await
        .map(|r| r.get(0))
        .map_err(q("count post-data items"))
    }
}
