//! A replication connection (`replication=database`): startup, simple queries, and the
//! replication commands that answer with rows.

use conn::ConnSpec;
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;

use crate::codec::{self, Backend};
use crate::command::{self, PgOutputOptions, SnapshotAction};
use crate::error::{DbError, Error};
use crate::lsn::Lsn;
use crate::startup::{Progress, ServerInfo, Startup};
use crate::stream::{ReplicationStream, StreamConfig};
use crate::transport::{self, Transport};

/// Notices kept for [`ReplicationConnection::take_notices`]; older ones are only logged.
const MAX_NOTICES: usize = 100;

/// An open walsender session in database mode.
pub struct ReplicationConnection {
    pub(crate) t: Transport,
    info: ServerInfo,
    target: String,
}

/// The result of one statement of a simple query (all values in text form).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryResult {
    /// CommandComplete tag, e.g. `SELECT 1` or `CREATE_REPLICATION_SLOT`.
    pub tag: String,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Option<String>>>,
}

impl QueryResult {
    /// The value of `column` in the first row.
    pub fn first(&self, column: &str) -> Option<&str> {
        let i = self.columns.iter().position(|c| c == column)?;
        self.rows.first()?.get(i)?.as_deref()
    }

    fn required(&self, column: &str) -> Result<&str, Error> {
        self.first(column)
            .ok_or_else(|| Error::Protocol(format!("{} returned no {column}", self.tag)))
    }
}

/// IDENTIFY_SYSTEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemIdentity {
    pub system_id: String,
    pub timeline: u32,
    /// Current WAL flush position.
    pub xlogpos: Lsn,
    pub dbname: Option<String>,
}

/// CREATE_REPLICATION_SLOT's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedSlot {
    pub slot_name: String,
    /// Changes committed after this point stream from the slot; everything before is in the
    /// snapshot.
    pub consistent_point: Lsn,
    /// Only with [`SnapshotAction::Export`].
    pub snapshot_name: Option<String>,
    pub output_plugin: String,
}

/// A slot whose exported snapshot is still valid: it lives as long as this value holds the
/// connection that created it and runs nothing else on it. Dropping it (or
/// [`ExportedSnapshot::into_connection`] followed by any command) ends the snapshot.
pub struct ExportedSnapshot {
    pub slot: CreatedSlot,
    conn: ReplicationConnection,
}

impl ExportedSnapshot {
    /// The name for `SET TRANSACTION SNAPSHOT`.
    pub fn snapshot_name(&self) -> &str {
        self.slot.snapshot_name.as_deref().unwrap_or_default()
    }

    pub fn consistent_point(&self) -> Lsn {
        self.slot.consistent_point
    }

    /// Gives the connection back (e.g. to START_REPLICATION on a temporary slot). The
    /// snapshot stays valid until the next command on it.
    pub fn into_connection(self) -> ReplicationConnection {
        self.conn
    }
}

impl ReplicationConnection {
    /// Connects and authenticates (password, MD5 or SCRAM-SHA-256), with TLS per sslmode,
    /// within `connect_timeout` when one is set.
    pub async fn connect(spec: &ConnSpec) -> Result<Self, Error> {
        match transport::connect_timeout(spec) {
            Some(limit) => tokio::time::timeout(limit, Self::connect_inner(spec))
                .await
                .map_err(|_| Error::ConnectTimeout(limit))?,
            None => Self::connect_inner(spec).await,
        }
    }

    async fn connect_inner(spec: &ConnSpec) -> Result<Self, Error> {
        let mut t = transport::open(spec).await?;
        let mut startup = Startup::new(&spec.user, spec.password.as_deref());
        // The walsender prints pgoutput's text values with these settings.
        let options = conn::startup_options(spec.options.as_deref());
        startup.startup_message(
            &spec.dbname,
            spec.application_name.as_deref(),
            Some(&options),
            &mut t.wbuf,
        )?;
        t.flush().await?;
        loop {
            let msg = t.read_message().await?;
            let progress = startup.handle(msg, &mut t.wbuf)?;
            if !t.wbuf.is_empty() {
                t.flush().await?;
            }
            if progress == Progress::Ready {
                break;
            }
        }
        let conn = ReplicationConnection {
            t,
            info: startup.into_info(),
            target: spec.target(),
        };
        tracing::debug!(target = %conn.target, tls = conn.t.tls, pid = conn.info.process_id, "replication connection ready");
        Ok(conn)
    }

    /// A ParameterStatus value (server_version, server_encoding, ...).
    pub fn parameter(&self, name: &str) -> Option<&str> {
        self.info.parameters.get(name).map(String::as_str)
    }

    /// The walsender's process id (for pg_stat_replication / pg_terminate_backend).
    pub fn backend_pid(&self) -> i32 {
        self.info.process_id
    }

    /// True when the session is encrypted.
    pub fn is_tls(&self) -> bool {
        self.t.tls
    }

    /// The TCP keepalive and user-timeout options on the connection's socket, read back from
    /// the kernel; None on a unix socket.
    pub fn tcp_options(&self) -> Option<std::io::Result<crate::TcpOptions>> {
        self.t.tcp_options()
    }

    /// Notices received so far (also logged as they arrive).
    pub fn take_notices(&mut self) -> Vec<DbError> {
        std::mem::take(&mut self.info.notices)
    }

    pub(crate) fn note(&mut self, notice: DbError) {
        tracing::info!(%notice, "server notice");
        if self.info.notices.len() < MAX_NOTICES {
            self.info.notices.push(notice);
        }
    }

    /// Runs one or more statements with the simple query protocol. On a replication
    /// connection this takes replication commands and, in database mode, plain SQL.
    pub async fn simple_query(&mut self, sql: &str) -> Result<Vec<QueryResult>, Error> {
        frontend::query(sql, &mut self.t.wbuf)
            .map_err(|e| Error::InvalidArgument(format!("query text: {e}")))?;
        self.t.flush().await?;
        let mut results = Vec::new();
        let mut current = QueryResult::default();
        let mut failed: Option<DbError> = None;
        loop {
            let msg = match self.t.read_message().await {
                Ok(m) => m,
                // A FATAL error closes the connection right after: report the error, not EOF.
                Err(e) => return Err(failed.map(Error::from).unwrap_or(e)),
            };
            match msg {
                Backend::Message(Message::RowDescription(body)) => {
                    current.columns = codec::column_names(&body)?;
                }
                Backend::Message(Message::DataRow(body)) => {
                    current.rows.push(codec::row_values(&body)?);
                }
                Backend::Message(Message::CommandComplete(body)) => {
                    current.tag = body
                        .tag()
                        .map_err(|e| Error::Protocol(e.to_string()))?
                        .to_string();
                    results.push(std::mem::take(&mut current));
                }
                Backend::Message(Message::EmptyQueryResponse) => {}
                Backend::Message(Message::ErrorResponse(body)) => {
                    failed = Some(codec::db_error(body.fields())?);
                }
                Backend::Message(Message::NoticeResponse(body)) => {
                    let n = codec::db_error(body.fields())?;
                    self.note(n);
                }
                Backend::Message(Message::ParameterStatus(p)) => {
                    if let (Ok(k), Ok(v)) = (p.name(), p.value()) {
                        self.info.parameters.insert(k.to_string(), v.to_string());
                    }
                }
                Backend::Message(Message::ReadyForQuery(_)) => {
                    return match failed {
                        Some(e) => Err(Error::from(e)),
                        None => Ok(results),
                    };
                }
                other => {
                    return Err(Error::Protocol(format!(
                        "unexpected {} in answer to a simple query (use start_replication for streaming)",
                        codec::describe(&other)
                    )))
                }
            }
        }
    }

    async fn single(&mut self, sql: &str) -> Result<QueryResult, Error> {
        let mut results = self.simple_query(sql).await?;
        match results.len() {
            1 => Ok(results.remove(0)),
            n => Err(Error::Protocol(format!(
                "{sql}: expected one result, got {n}"
            ))),
        }
    }

    pub async fn identify_system(&mut self) -> Result<SystemIdentity, Error> {
        let r = self.single(command::IDENTIFY_SYSTEM).await?;
        Ok(SystemIdentity {
            system_id: r.required("systemid")?.to_string(),
            timeline: r
                .required("timeline")?
                .parse()
                .map_err(|e| Error::Protocol(format!("IDENTIFY_SYSTEM timeline: {e}")))?,
            xlogpos: parse_lsn(r.required("xlogpos")?)?,
            dbname: r.first("dbname").map(str::to_string),
        })
    }

    /// CREATE_REPLICATION_SLOT `slot` [TEMPORARY] LOGICAL pgoutput. With
    /// [`SnapshotAction::Export`] the snapshot is valid only until the next command on this
    /// connection; [`ReplicationConnection::create_slot_exporting`] makes that explicit.
    pub async fn create_slot(
        &mut self,
        slot: &str,
        temporary: bool,
        snapshot: SnapshotAction,
    ) -> Result<CreatedSlot, Error> {
        let sql = command::create_replication_slot(slot, temporary, snapshot)?;
        let r = self.single(&sql).await?;
        Ok(CreatedSlot {
            slot_name: r.required("slot_name")?.to_string(),
            consistent_point: parse_lsn(r.required("consistent_point")?)?,
            snapshot_name: r.first("snapshot_name").map(str::to_string),
            output_plugin: r.first("output_plugin").unwrap_or_default().to_string(),
        })
    }

    /// Creates a slot exporting its snapshot and keeps the connection inside the result, so
    /// the snapshot stays usable for as long as the caller holds it.
    pub async fn create_slot_exporting(
        mut self,
        slot: &str,
        temporary: bool,
    ) -> Result<ExportedSnapshot, Error> {
        let slot = self
            .create_slot(slot, temporary, SnapshotAction::Export)
            .await?;
        if slot.snapshot_name.is_none() {
            return Err(Error::Protocol(
                "CREATE_REPLICATION_SLOT exported no snapshot".into(),
            ));
        }
        Ok(ExportedSnapshot { slot, conn: self })
    }

    /// DROP_REPLICATION_SLOT `slot` WAIT (waits while another session uses the slot).
    pub async fn drop_slot(&mut self, slot: &str) -> Result<(), Error> {
        let sql = command::drop_replication_slot(slot)?;
        self.simple_query(&sql).await.map(|_| ())
    }

    /// START_REPLICATION on a logical slot; the connection becomes the stream. `start` may be
    /// 0/0 to resume where the slot's confirmed_flush_lsn stands. Use a fresh connection for
    /// each stream: PostgreSQL 15 ends a second START_REPLICATION on the same session at once.
    pub async fn start_replication(
        mut self,
        slot: &str,
        start: Lsn,
        options: &PgOutputOptions,
        config: StreamConfig,
    ) -> Result<ReplicationStream, Error> {
        let sql = command::start_replication(slot, start, options)?;
        frontend::query(&sql, &mut self.t.wbuf)
            .map_err(|e| Error::InvalidArgument(format!("query text: {e}")))?;
        self.t.flush().await?;
        let mut failed: Option<DbError> = None;
        loop {
            let msg = match self.t.read_message().await {
                Ok(m) => m,
                Err(e) => return Err(failed.map(Error::from).unwrap_or(e)),
            };
            match msg {
                Backend::CopyBothResponse => break,
                Backend::Message(Message::ErrorResponse(body)) => {
                    failed = Some(codec::db_error(body.fields())?);
                }
                Backend::Message(Message::NoticeResponse(body)) => {
                    let n = codec::db_error(body.fields())?;
                    self.note(n);
                }
                Backend::Message(Message::ReadyForQuery(_)) => {
                    return Err(failed.map(Error::from).unwrap_or_else(|| {
                        Error::Protocol("START_REPLICATION ended without streaming".into())
                    }))
                }
                other => {
                    return Err(Error::Protocol(format!(
                        "unexpected {} in answer to START_REPLICATION",
                        codec::describe(&other)
                    )))
                }
            }
        }
        tracing::debug!(slot, %start, "streaming started");
        Ok(ReplicationStream::spawn(self, start, config))
    }

    /// Sends Terminate and closes the socket.
    pub async fn close(self) {
        self.t.terminate().await;
    }
}

fn parse_lsn(s: &str) -> Result<Lsn, Error> {
    s.parse()
        .map_err(|e| Error::Protocol(format!("server sent {e}")))
}
