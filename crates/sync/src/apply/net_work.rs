//! Net changes turned into statements: one DELETE per table and one UPDATE per table and set
//! of columns, with array parameters, for each session the keys go to.

use super::*;

/// Rows of net updates and deletes that go out together.
pub(super) const NET_ROWS: usize = 10_000;

/// One net statement for the task.
pub(super) struct NetStatement {
    statement: Statement,
    /// One text[] per parameter, a value per row.
    columns: Vec<TextArray>,
    rows: usize,
    /// The table, as errors and logs name it.
    table: String,
}

impl Applier {
    /// Hands a change to the net changes; false when it must go row by row instead.
    pub(super) async fn net_take(
        &mut self,
        take: impl FnOnce(&mut NetChanges) -> Taken,
    ) -> Result<bool, Error> {
        // Row-by-row statements queued before stay before.
        if !self.execs.is_empty() {
            self.flush_execs().await?;
        }
        if take(&mut self.net) == Taken::No {
            return Ok(false);
        }
        self.group.rows += 1;
        if self.net.len() >= NET_ROWS {
            // Inserts before go first; the net changes run while decoding goes on.
            self.flush_copy().await?;
            self.flush_net().await?;
        }
        Ok(true)
    }
    /// Starts the pending net changes in a task of their own.
    pub(super) async fn flush_net(&mut self) -> Result<(), Error> {
        let work = self.net_work().await?;
        if work.is_empty() {
            return Ok(());
        }
        self.begin().await?;
        self.run(work, None);
        Ok(())
    }
    /// One DELETE per table, and one UPDATE per table and set of columns sent, for the
    /// pending net changes (emptied), for each session they go to: a key a further session
    /// changed in the group stays with it; a new key goes by its hash, unless the main
    /// session wrote the table in the group or the further sessions hold enough keys.
    pub(super) async fn net_work(&mut self) -> Result<Work, Error> {
        let n = if self.group.parallel == Some(true) {
            self.sessions()
        } else {
            1
        };
        let mut parts: Vec<Vec<NetStatement>> = (0..n).map(|_| Vec::new()).collect();
        for table in self.net.take() {
            let rel = table.rel;
            let id = rel.qualified.as_str();
            let mut ops: Vec<Vec<(Vec<Bytes>, NetOp)>> = (0..n).map(|_| Vec::new()).collect();
            for (key, op) in table.ops {
                let mut session = 0;
                if n > 1 {
                    let h = key_hash(&key);
                    session = match self.holder(id, h) {
                        Some(j) => j + 1,
                        None if self.group.main_wrote.contains(id)
                            || self.group.second_keys >= SECOND_KEYS =>
                        {
                            0
                        }
                        None => (h % n as u64) as usize,
                    };
                    if session > 0 {
                        let keys = &mut self.seconds[session - 1].keys;
                        let new = match keys.get_mut(id) {
                            Some(set) => set.insert(h),
                            None => keys.insert(id.to_string(), HashSet::from([h])).is_none(),
                        };
                        self.group.second_keys += usize::from(new);
                    }
                }
                ops[session].push((key, op));
            }
            for (session, ops) in ops.into_iter().enumerate() {
                if !ops.is_empty() {
                    let statements = self.table_statements(&rel, ops, session).await?;
                    parts[session].extend(statements);
                }
            }
        }
        let main = parts.remove(0);
        let mut seconds = Vec::new();
        for (second, statements) in self.seconds.iter_mut().zip(parts) {
            if !statements.is_empty() {
                seconds.push(SecondWork {
                    client: second.client.clone(),
                    begin: !second.in_tx,
                    statements,
                });
                second.in_tx = true;
            }
        }
        Ok(Work::Net { main, seconds })
    }

    /// The net statements of one table's changes, prepared on `session` (0: the main one).
    pub(super) async fn table_statements(
        &mut self,
        rel: &Arc<TargetRel>,
        ops: Vec<(Vec<Bytes>, NetOp)>,
        session: usize,
    ) -> Result<Vec<NetStatement>, Error> {
        let mut work = Vec::new();
        let mut deletes: Vec<Vec<Bytes>> = Vec::new();
        let mut updates: HashMap<Vec<usize>, Vec<Tuple>> = HashMap::new();
        for (key, op) in ops {
            match op {
                NetOp::Delete => deletes.push(key),
                NetOp::Update(row) => {
                    let cols: Vec<usize> = (0..row.len())
                        .filter(|&i| row[i] != Value::UnchangedToast)
                        .collect();
                    updates.entry(cols).or_default().push(row);
                }
            }
        }
        if !deletes.is_empty() {
            let columns: Vec<TextArray> = (0..rel.key.len())
                .map(|k| TextArray(deletes.iter().map(|key| Some(key[k].clone())).collect()))
                .collect();
            let stmt = self
                .net_statement(&net::delete_sql(rel), columns.len(), session)
                .await?;
            work.push(NetStatement {
                statement: stmt,
                columns,
                rows: deletes.len(),
                table: rel.display.clone(),
            });
        }
        for (cols, rows) in updates {
            let columns: Vec<TextArray> = cols
                .iter()
                .map(|&c| {
                    rows.iter()
                        .map(|row| match &row[c] {
                            Value::Text(b) => Ok(Some(b.clone())),
                            Value::Null => Ok(None),
                            _ => Err(Error::Protocol(format!(
                                "{}: a value arrived in binary form, which this applier does not request",
                                rel.display
                            ))),
                        })
                        .collect::<Result<_, _>>()
                        .map(TextArray)
                })
                .collect::<Result<_, _>>()?;
            let stmt = self
                .net_statement(&net::update_sql(rel, &cols), columns.len(), session)
                .await?;
            work.push(NetStatement {
                statement: stmt,
                columns,
                rows: rows.len(),
                table: rel.display.clone(),
            });
        }
        Ok(work)
    }
    pub(super) async fn net_statement(
        &mut self,
        sql_text: &str,
        params: usize,
        session: usize,
    ) -> Result<Statement, Error> {
        let types = vec![Type::TEXT_ARRAY; params];
        let Some(second) = session.checked_sub(1).map(|i| &mut self.seconds[i]) else {
            return self.statement(sql_text, &types).await;
        };
        if let Some(s) = second.statements.get(sql_text) {
            return Ok(s.clone());
        }
        // Prepared on a session that may be running a task: the connection queues it.
        let s = second
            .client
            .prepare_typed(sql_text, &types)
            .await
            .map_err(sql("target", format!("prepare {sql_text}")))?;
        second.statements.insert(sql_text.to_string(), s.clone());
        Ok(s)
    }
}

/// Runs net statements on one session; returns the rows they found missing.
pub(super) async fn apply_net(
    client: &Client,
    statements: Vec<NetStatement>,
) -> Result<u64, Error> {
    let mut missing = 0;
    for NetStatement {
        statement: stmt,
        columns,
        rows,
        table,
    } in statements
    {
        let params: Vec<&(dyn ToSql + Sync)> =
            columns.iter().map(|c| c as &(dyn ToSql + Sync)).collect();
        let changed = client.execute(&stmt, &params).await.map_err(sql(
            "target",
            format!("apply updates or deletes to {table}"),
        ))?;
        let m = (rows as u64).saturating_sub(changed);
        if m > 0 {
            tracing::warn!(
                table,
                missing = m,
                "UPDATEs or DELETEs found no row on the target: the target differs from the source"
            );
            missing += m;
        }
    }
    Ok(missing)
}

/// A text[] parameter built from the values as pgoutput sent them, without copying them
/// (the server checks their encoding, as it does for any text it receives).
#[derive(Debug)]
pub(super) struct TextArray(Vec<Option<Bytes>>);

impl ToSql for TextArray {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        let Kind::Array(member) = ty.kind() else {
            return Err(format!("{ty} is not an array type").into());
        };
        let dimension = postgres_protocol::types::ArrayDimension {
            len: i32::try_from(self.0.len())?,
            lower_bound: 1,
        };
        postgres_protocol::types::array_to_sql(
            Some(dimension),
            member.oid(),
            self.0.iter(),
            |v, buf| match v {
                Some(b) => {
                    buf.put_slice(b);
                    Ok(postgres_protocol::IsNull::No)
                }
                None => Ok(postgres_protocol::IsNull::Yes),
            },
            out,
        )?;
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::TEXT_ARRAY
    }

    to_sql_checked!();
}
