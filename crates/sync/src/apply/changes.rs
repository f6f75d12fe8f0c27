//! Each kind of change as it arrives: inserts join a COPY batch; updates and deletes join the
//! net changes where row order cannot matter, else go row by row; truncates go at once.

use super::*;
use crate::relmap::DroppedRows;
use crate::timescale::TimeRange;

impl Applier {
    pub async fn insert(&mut self, rel: &Arc<TargetRel>, new: &Tuple) -> Result<(), Error> {
        self.touch();
        if !self.execs.is_empty() {
            self.flush_execs().await?;
        }
        // A key the group deleted may come back: the delete goes first.
        if self.net.has_table(rel) && net::key_of(rel, new).is_some_and(|k| self.net.holds(rel, &k))
        {
            self.flush().await?;
        }
        self.main_writes(rel, || vec![net::key_of(rel, new)])?;
        if self.journal {
            self.group.touched.row(rel, new);
        }
        let (before, after) = loop {
            let convs = rel
                .copy_binary
                .as_ref()
                .filter(|_| !self.text_copy.contains(&rel.qualified));
            let binary = convs.is_some();
            if self
                .copy
                .as_ref()
                .is_some_and(|c| !Arc::ptr_eq(&c.rel, rel) || c.binary != binary)
            {
                self.flush_copy().await?;
            }
            let batch = self.copy.get_or_insert_with(|| {
                let mut buf = BytesMut::with_capacity(COPY_BATCH_BYTES + 4096);
                if binary {
                    binary::header(&mut buf);
                }
                CopyBatch {
                    rel: rel.clone(),
                    buf,
                    binary,
                    rows: Vec::new(),
                }
            });
            let before = batch.buf.len();
            match convs {
                Some(convs) => {
                    if encode_binary_row(&mut batch.buf, new, convs) {
                        break (before, batch.buf.len());
                    }
                    // Not in the form PostgreSQL prints: this table's inserts go as text.
                    batch.buf.truncate(before);
                    tracing::info!(
                        table = %rel.display,
                        "a value is not in the form binary COPY reads: this table's inserts go as text"
                    );
                    self.text_copy.insert(rel.qualified.clone());
                }
                None => {
                    encode_copy_row(&mut batch.buf, new, &rel.display)?;
                    break (before, batch.buf.len());
                }
            }
        };
        if let (Some(batch), Some(col)) = (self.copy.as_mut(), rel.insert_order) {
            batch.rows.push((order_key(new.get(col)), before));
        }
        self.group.rows += 1;
        self.group.bytes += (after - before) as u64;
        if after >= COPY_BATCH_BYTES {
            self.flush_copy().await?;
        }
        Ok(())
    }

    pub async fn update(
        &mut self,
        rel: &Arc<TargetRel>,
        old: Option<&OldTuple>,
        new: &Tuple,
    ) -> Result<(), Error> {
        self.touch();
        if self.journal {
            self.group.touched.row(rel, new);
            if let Some(o) = old {
                self.group.touched.row(rel, o.tuple());
            }
        }
        if rel.batchable {
            let key = net::key_of(rel, new);
            let old_key = match old {
                Some(o) => net::key_of(rel, o.tuple()),
                None => key.clone(),
            };
            if let Some(k) = key.as_ref().filter(|k| old_key.as_ref() == Some(*k)) {
                let bytes = tuple_bytes(new);
                if self.net_take(|n| n.update(rel, k.clone(), new)).await? {
                    self.group.bytes += bytes;
                    return Ok(());
                }
            }
            // A changed key, or nothing to merge with: in order, row by row.
            self.flush().await?;
            self.main_writes(rel, || vec![key, old_key])?;
        }
        self.flush_copy().await?;
        // SET every column the source sent; an unchanged TOAST value keeps the target's. Not
        // the key when it stays (TimescaleDB refuses to set a unique index's columns in a
        // compressed chunk), nor, under REPLICA IDENTITY FULL, a column that keeps its value.
        // An ALWAYS identity column is left out unless the UPDATE changed it (the old key says
        // so); then it is overridden, the column made BY DEFAULT for the statement.
        let identity = old.map(OldTuple::tuple).unwrap_or(new);
        let mut params: Vec<Option<String>> = Vec::new();
        let mut sets = Vec::new();
        let mut overridden = Vec::new();
        for (i, v) in new.iter().enumerate() {
            if rel.always_identity.get(i) == Some(&true) {
                if identity
                    .get(i)
                    .is_none_or(|was| was == v || *was == Value::Null)
                {
                    continue;
                }
                overridden.push(rel.columns[i].clone());
            } else {
                let stays = match old {
                    None => rel.key.contains(&i),
                    Some(o) => rel.full_identity && o.tuple().get(i) == Some(v),
                };
                if stays {
                    continue;
                }
            }
            if let Some(p) = param(v, &rel.display)? {
                params.push(p);
                sets.push(format!(
                    "{} = ${}::{}",
                    rel.columns[i],
                    params.len(),
                    rel.types[i]
                ));
            }
        }
        if sets.is_empty() {
            return Ok(());
        }
        let filter = self.identity_filter(rel, identity, &mut params)?;
        let sql_text = if rel.full_identity {
            format!(
                "UPDATE {t} SET {s} WHERE (tableoid, ctid) = (SELECT tableoid, ctid FROM {t} WHERE {filter} LIMIT 1)",
                t = rel.qualified,
                s = sets.join(", ")
            )
        } else {
            format!(
                "UPDATE {} SET {} WHERE {filter}",
                rel.qualified,
                sets.join(", ")
            )
        };
        if overridden.is_empty() {
            return self.queue(sql_text, params).await;
        }
        self.with_identity_by_default(rel, &overridden, sql_text, params)
            .await
    }

    /// Runs one UPDATE that changes ALWAYS identity columns, with those columns made
    /// `GENERATED BY DEFAULT` around it inside the group's transaction (an UPDATE may only set
    /// an ALWAYS identity column to DEFAULT; its sequence is left as it is).
    pub(super) async fn with_identity_by_default(
        &mut self,
        rel: &TargetRel,
        columns: &[String],
        update: String,
        params: Vec<Option<String>>,
    ) -> Result<(), Error> {
        let alter = |how: &str| {
            let each: Vec<String> = columns
                .iter()
                .map(|c| format!("ALTER COLUMN {c} SET GENERATED {how}"))
                .collect();
            format!("ALTER TABLE {} {}", rel.qualified, each.join(", "))
        };
        self.flush_execs().await?;
        self.begin().await?;
        self.client
            .batch_execute(&alter("BY DEFAULT"))
            .await
            .map_err(sql(
                "target",
                format!("let {} take identity values", rel.display),
            ))?;
        self.queue(update, params).await?;
        self.flush_execs().await?;
        self.client
            .batch_execute(&alter("ALWAYS"))
            .await
            .map_err(sql("target", format!("restore {}'s identity", rel.display)))
    }

    pub async fn delete(&mut self, rel: &Arc<TargetRel>, old: &OldTuple) -> Result<(), Error> {
        self.touch();
        if self.journal {
            self.group.touched.row(rel, old.tuple());
        }
        if rel.batchable {
            let key = net::key_of(rel, old.tuple());
            if let Some(k) = &key {
                if self.net_take(|n| n.delete(rel, k.clone())).await? {
                    return Ok(());
                }
            }
            self.flush().await?;
            self.main_writes(rel, || vec![key])?;
        }
        self.flush_copy().await?;
        let mut params = Vec::new();
        let filter = self.identity_filter(rel, old.tuple(), &mut params)?;
        // (tableoid, ctid): a ctid is unique only within one table, and the rows of a
        // hypertable (an aggregate's materialization) live in many chunks.
        let sql_text = if rel.full_identity {
            format!(
                "DELETE FROM {t} WHERE (tableoid, ctid) = (SELECT tableoid, ctid FROM {t} WHERE {filter} LIMIT 1)",
                t = rel.qualified
            )
        } else {
            format!("DELETE FROM {} WHERE {filter}", rel.qualified)
        };
        self.queue(sql_text, params).await
    }

    pub async fn truncate(
        &mut self,
        rels: &[Arc<TargetRel>],
        cascade: bool,
        restart_identity: bool,
    ) -> Result<(), Error> {
        if rels.is_empty() {
            return Ok(());
        }
        self.touch();
        self.flush().await?;
        for rel in rels {
            self.main_writes(rel, || vec![None])?;
            if self.journal {
                self.group.touched.whole(rel);
            }
        }
        self.begin().await?;
        let names: Vec<&str> = rels.iter().map(|r| r.qualified.as_str()).collect();
        let text = format!(
            "TRUNCATE {}{}{}",
            names.join(", "),
            if restart_identity {
                " RESTART IDENTITY"
            } else {
                ""
            },
            if cascade { " CASCADE" } else { "" }
        );
        self.client
            .batch_execute(&text)
            .await
            .map_err(sql("target", format!("apply {text}")))
    }

    /// The rows of a hypertable that a chunk dropped on the source held (`rows.filter`: the
    /// chunk's ranges, see `timescale::Slices`), deleted in stream order; then the
    /// hypertable's chunks lying wholly inside the dropped time range are dropped too, once
    /// all of them are empty (a space partition's rows may still be to go, or the target's
    /// chunks differ): never a row the source still has. Both in the group's transaction,
    /// so a replay after a crash does the same (deleting nothing, dropping what is left).
    pub async fn delete_range(&mut self, rows: &DroppedRows) -> Result<(), Error> {
        let (qualified, display) = (rows.qualified.as_str(), rows.display.as_str());
        self.touch();
        self.flush().await?;
        if self.group.parallel == Some(true) && self.held(qualified) {
            return Err(Error::Replay {
                table: display.to_string(),
                lsn: self.txn_lsn,
            });
        }
        self.group.main_wrote.insert(qualified.to_string());
        self.begin().await?;
        let text = format!("DELETE FROM {qualified} WHERE {}", rows.filter);
        self.client
            .batch_execute(&text)
            .await
            .map_err(sql("target", format!("apply {text}")))?;
        match &rows.time {
            Some(time) => self.drop_empty_chunks(qualified, time).await,
            None => Ok(()),
        }
    }

    /// Drops the hypertable's chunks inside `time` when every one of them is empty.
    /// Not on a plain table (the reverse stream from a table a profile made a hypertable).
    async fn drop_empty_chunks(&mut self, qualified: &str, time: &TimeRange) -> Result<(), Error> {
        let what = || format!("look up {qualified} in TimescaleDB's catalog");
        // Named through to_regclass: a query naming the catalog fails to parse without it.
        let installed: bool = self
            .client
            .query_one(
                "SELECT to_regclass('_timescaledb_catalog.hypertable') IS NOT NULL",
                &[],
            )
            .await
            .map_err(sql("target", what()))?
            .get(0);
        let hypertable = installed
            && self
                .client
                .query_one(
                    "SELECT EXISTS (SELECT FROM _timescaledb_catalog.hypertable
                                     WHERE format('%I.%I', schema_name, table_name)::regclass
                                           = $1::text::regclass)",
                    &[&qualified],
                )
                .await
                .map_err(sql("target", what()))?
                .get::<_, bool>(0);
        if !hypertable {
            return Ok(());
        }
        let args = time.args();
        let text = format!("SELECT c::text FROM show_chunks($1::text::regclass, {args}) c");
        let chunks: Vec<String> = self
            .client
            .query(&text, &[&qualified])
            .await
            .map_err(sql("target", format!("apply {text}")))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if chunks.is_empty() {
            return Ok(());
        }
        let any = chunks
            .iter()
            .map(|c| format!("EXISTS (SELECT FROM {c})"))
            .collect::<Vec<_>>()
            .join(" OR ");
        let text = format!("SELECT {any}");
        let rows_left: bool = self
            .client
            .query_one(&text, &[])
            .await
            .map_err(sql("target", format!("apply {text}")))?
            .get(0);
        if rows_left {
            return Ok(());
        }
        let text = format!("SELECT count(*) FROM drop_chunks($1::text::regclass, {args})");
        self.client
            .query_one(&text, &[&qualified])
            .await
            .map(drop)
            .map_err(sql("target", format!("apply {text}")))
    }

    /// `key = $n` on the replica identity: typed equality on a key (index scans); for
    /// REPLICA IDENTITY FULL, every column's printed form, which also matches types without
    /// an equality operator (json) and tells -0 from 0.
    pub(super) fn identity_filter(
        &self,
        rel: &TargetRel,
        tuple: &Tuple,
        params: &mut Vec<Option<String>>,
    ) -> Result<String, Error> {
        let mut parts = Vec::new();
        for &i in &rel.key {
            let v = tuple.get(i).ok_or_else(|| {
                Error::Protocol(format!(
                    "{}: a change carries fewer columns than the table has",
                    rel.display
                ))
            })?;
            let Some(p) = param(v, &rel.display)? else {
                continue;
            };
            let col = &rel.columns[i];
            match (p, rel.full_identity) {
                (None, _) => parts.push(format!("{col} IS NULL")),
                (Some(p), false) => {
                    params.push(Some(p));
                    parts.push(format!("{col} = ${}::{}", params.len(), rel.types[i]));
                }
                (Some(p), true) => {
                    params.push(Some(p));
                    // format('%s') prints through the type's output function, as pgoutput
                    // did; a ::text cast would not (inet's adds the netmask).
                    parts.push(format!("format('%s', {col}) = ${}", params.len()));
                }
            }
        }
        if parts.is_empty() {
            return Err(Error::Protocol(format!(
                "{}: an UPDATE or DELETE arrived without its replica identity",
                rel.display
            )));
        }
        Ok(parts.join(" AND "))
    }
}
