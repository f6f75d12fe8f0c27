//! Work in flight on the main session: inserts' COPY, net changes over every session, and a
//! group's commit run in a task of their own while the next changes are decoded; the next
//! task waits for the one before it, so the connection sees everything in order.

use super::*;

/// A group committed on the target: the source position it applied and its rows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Applied {
    pub lsn: Lsn,
    pub rows: u64,
}

/// What a task on the connection finished: rows its updates and deletes missed, and the
/// group it committed, if it ended one.
#[derive(Debug, Default)]
pub(super) struct Done {
    pub(super) missing: u64,
    pub(super) applied: Option<Applied>,
}

impl Applied {
    /// Two groups' commits as one report.
    pub(super) fn merge(a: Option<Applied>, b: Option<Applied>) -> Option<Applied> {
        match (a, b) {
            (Some(a), Some(b)) => Some(Applied {
                lsn: a.lsn.max(b.lsn),
                rows: a.rows + b.rows,
            }),
            (a, b) => a.or(b),
        }
    }
}

/// What a task on the connection sends before the group's commit, if any.
pub(super) enum Work {
    /// A batch of inserts.
    Copy {
        statement: String,
        data: Bytes,
        /// What to call it in an error.
        what: String,
    },
    /// Net statements for the main session and for further sessions, all run at once.
    Net {
        main: Vec<NetStatement>,
        seconds: Vec<SecondWork>,
    },
}

/// A further session's share of net statements.
pub(super) struct SecondWork {
    pub client: Arc<Client>,
    /// Its transaction must begin first.
    pub begin: bool,
    pub statements: Vec<NetStatement>,
}

/// A group's end, as the task runs it.
pub(super) struct Commit {
    /// The origin and the keys the group wrote, recorded in its transaction.
    pub(super) touched: Option<(String, serde_json::Value)>,
    /// A target transaction is open: advance the origin and COMMIT it.
    pub(super) in_tx: bool,
    pub(super) last: Option<(Lsn, i64)>,
    pub(super) applied: Option<Applied>,
    /// Further sessions with a part of the group, and the name to prepare it under.
    pub(super) prepare: Vec<(Arc<Client>, String)>,
}

impl Work {
    pub(super) fn is_empty(&self) -> bool {
        match self {
            Work::Copy { .. } => false,
            Work::Net { main, seconds } => main.is_empty() && seconds.is_empty(),
        }
    }
}

impl Applier {
    /// Runs a COPY or net statements, then the group's commit if given, in a task that
    /// first waits for the one before it (so the connection sees everything in order).
    pub(super) fn run(&mut self, work: Work, commit: Option<Commit>) {
        let client = self.client.clone();
        let before = self.inflight.take();
        let has_work = !work.is_empty();
        self.inflight_work = has_work || (before.is_some() && self.inflight_work);
        self.inflight = Some(tokio::spawn(async move {
            let mut done = match before {
                Some(task) => join(task).await?,
                None => Done::default(),
            };
            match work {
                Work::Copy {
                    statement,
                    data,
                    what,
                } => {
                    let sink = client
                        .copy_in::<_, Bytes>(&statement)
                        .await
                        .map_err(sql("target", what.clone()))?;
                    futures_util::pin_mut!(sink);
                    sink.send(data).await.map_err(sql("target", what.clone()))?;
                    sink.as_mut().finish().await.map_err(sql("target", what))?;
                }
                Work::Net { main, seconds } => {
                    let others = futures_util::future::try_join_all(seconds.into_iter().map(
                        |w| async move {
                            if w.begin {
                                w.client
                                    .batch_execute("BEGIN")
                                    .await
                                    .map_err(sql("target", "begin"))?;
                            }
                            apply_net(&w.client, w.statements).await
                        },
                    ));
                    let (m, others) = tokio::try_join!(apply_net(&client, main), others)?;
                    done.missing += m + others.iter().sum::<u64>();
                }
            }
            if let Some(c) = commit {
                for (second, gid) in &c.prepare {
                    second
                        .batch_execute(&format!("PREPARE TRANSACTION {}", conn::quote_literal(gid)))
                        .await
                        .map_err(sql(
                            "target",
                            "prepare a further session's part of the group",
                        ))?;
                }
                if c.in_tx {
                    if let (Some((origin, tables)), Some((lsn, _))) = (&c.touched, c.last) {
                        state::changes::record_touched(&*client, origin, lsn, tables).await?;
                    }
                    if let Some((lsn, time)) = c.last {
                        client
                            .execute(
                                "SELECT pg_replication_origin_xact_setup($1::text::pg_lsn,
                                        timestamptz '2000-01-01 00:00:00+00' + make_interval(secs => $2::text::float8 / 1e6))",
                                &[&lsn.to_string(), &time.to_string()],
                            )
                            .await
                            .map_err(sql("target", "record the applied position"))?;
                    }
                    client
                        .batch_execute("COMMIT")
                        .await
                        .map_err(sql("target", "commit applied changes"))?;
                }
                if c.in_tx && !c.prepare.is_empty() {
                    stall_after_main_commit(c.prepare.len()).await;
                }
                // On the main session, whose origin marks them as applied changes too.
                for (_, gid) in &c.prepare {
                    client
                        .batch_execute(&format!("COMMIT PREPARED {}", conn::quote_literal(gid)))
                        .await
                        .map_err(sql(
                            "target",
                            "commit a further session's part of the group",
                        ))?;
                }
                done.applied = Applied::merge(done.applied, c.applied);
            }
            Ok(done)
        }));
    }
}

/// Test hook (crash campaign): `BLUEGREEN_TEST_STALL_AFTER=main commit` holds the group
/// between its main commit and the COMMIT PREPARED of its further sessions' parts for
/// `BLUEGREEN_TEST_STALL_MS` (default 10 s), logging that it does, so a test can kill the
/// process with the parts prepared.
async fn stall_after_main_commit(parts: usize) {
    if std::env::var("BLUEGREEN_TEST_STALL_AFTER").is_ok_and(|s| s == "main commit") {
        let ms = std::env::var("BLUEGREEN_TEST_STALL_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(10_000);
        tracing::warn!(
            parts,
            "test hook: stalled after a group's main commit, its prepared parts pending"
        );
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    }
}

pub(super) async fn join(task: JoinHandle<Result<Done, Error>>) -> Result<Done, Error> {
    task.await
        .map_err(|e| Error::Internal(format!("the apply task failed: {e}")))?
}
