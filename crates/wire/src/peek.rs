//! `peek`: attach to a slot (or a temporary one) and print its changes as JSON lines, without
//! ever moving the slot.

use std::io::{self, Write};
use std::time::Duration;

use conn::ConnSpec;
use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use crate::command::{PgOutputOptions, SnapshotAction};
use crate::connection::ReplicationConnection;
use crate::error::Error;
use crate::lsn::Lsn;
use crate::pgoutput::{Column, LogicalMessage, OldTuple, ReplicaIdentity, Value};
use crate::stream::{Event, StreamConfig};

/// Which slot a peek reads.
#[derive(Debug, Clone)]
pub enum PeekSlot {
    /// An existing slot, left exactly where it was.
    Existing(String),
    /// A TEMPORARY slot of this name, created for the peek: it shows changes committed from
    /// now on and vanishes with the connection.
    Temporary(String),
}

/// What to look at and for how long.
#[derive(Debug, Clone)]
pub struct PeekOptions {
    pub slot: PeekSlot,
    pub publications: Vec<String>,
    /// Where to start; `None` = the slot's confirmed position (or the new slot's start).
    pub start_lsn: Option<Lsn>,
    /// Stop after this many messages.
    pub limit: Option<usize>,
    /// Stop after this long.
    pub duration: Option<Duration>,
}

/// How a peek ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeekSummary {
    pub slot: String,
    pub temporary: bool,
    pub messages: usize,
    /// Highest WAL position seen.
    pub last_lsn: Lsn,
}

/// Runs a peek, writing one JSON object per pgoutput message to `out`. A closed `out`
/// (e.g. `| head`) ends the peek normally.
pub async fn run(
    spec: &ConnSpec,
    opts: &PeekOptions,
    out: &mut (dyn Write + Send),
) -> Result<PeekSummary, Error> {
    if opts.publications.is_empty() {
        return Err(Error::InvalidArgument(
            "peek needs at least one publication".into(),
        ));
    }
    let mut conn = ReplicationConnection::connect(spec).await?;
    let (slot, temporary, start) = match &opts.slot {
        PeekSlot::Existing(name) => (name.clone(), false, opts.start_lsn.unwrap_or(Lsn::ZERO)),
        PeekSlot::Temporary(name) => {
            let name = name.clone();
            let created = conn
                .create_slot(&name, true, SnapshotAction::NoExport)
                .await?;
            let start = opts.start_lsn.unwrap_or(created.consistent_point);
            (name, true, start)
        }
    };
    let config = StreamConfig {
        read_only: true,
        ..StreamConfig::default()
    };
    let mut stream = conn
        .start_replication(
            &slot,
            start,
            &PgOutputOptions::new(opts.publications.iter().cloned()),
            config,
        )
        .await?;

    let deadline = opts.duration.map(|d| tokio::time::Instant::now() + d);
    let mut summary = PeekSummary {
        slot,
        temporary,
        messages: 0,
        last_lsn: start,
    };
    let mut xid = None;
    while opts.limit.is_none_or(|l| summary.messages < l) {
        let next = match deadline {
            Some(d) => match tokio::time::timeout_at(d, stream.recv()).await {
                Ok(r) => r,
                Err(_) => break,
            },
            None => stream.recv().await,
        };
        let event = next?;
        if let LogicalMessage::Begin(b) = &event.message {
            xid = Some(b.xid);
        }
        summary.messages += 1;
        summary.last_lsn = summary.last_lsn.max(event.wal_end);
        let mut line = serde_json::to_vec(&Line { event: &event, xid })
            .map_err(|e| Error::Protocol(format!("JSON: {e}")))?;
        line.push(b'\n');
        match out.write_all(&line).and_then(|_| out.flush()) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => break,
            Err(e) => return Err(Error::Io(e)),
        }
        if let LogicalMessage::Commit(_) = &event.message {
            xid = None;
        }
    }
    // Read-only: nothing was confirmed, so the slot stays where it was.
    let conn = stream.shutdown().await?;
    conn.close().await;
    Ok(summary)
}

/// One output line.
struct Line<'a> {
    event: &'a Event,
    xid: Option<u32>,
}

impl Serialize for Line<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let ev = self.event;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("kind", ev.message.kind())?;
        // Relation and Type messages carry no WAL position (0/0).
        if !ev.wal_start.is_zero() {
            m.serialize_entry("lsn", &ev.wal_start)?;
        }
        if let Some(xid) = self.xid {
            m.serialize_entry("xid", &xid)?;
        }
        if let Some(rel) = ev.relation() {
            if !matches!(ev.message, LogicalMessage::Truncate(_)) {
                m.serialize_entry("schema", &rel.namespace)?;
                m.serialize_entry("table", &rel.name)?;
            }
        }
        match &ev.message {
            LogicalMessage::Begin(b) => {
                m.serialize_entry("commit_lsn", &b.final_lsn)?;
                m.serialize_entry("commit_time", &pg_time(b.commit_time))?;
            }
            LogicalMessage::Commit(c) => {
                m.serialize_entry("commit_lsn", &c.commit_lsn)?;
                m.serialize_entry("end_lsn", &c.end_lsn)?;
                m.serialize_entry("commit_time", &pg_time(c.commit_time))?;
            }
            LogicalMessage::Origin(o) => {
                m.serialize_entry("origin", &o.name)?;
                m.serialize_entry("origin_lsn", &o.commit_lsn)?;
            }
            LogicalMessage::Relation(r) => {
                m.serialize_entry("replica_identity", identity(r.replica_identity))?;
                let cols: Vec<ColumnInfo> = r.columns.iter().map(ColumnInfo).collect();
                m.serialize_entry("columns", &cols)?;
            }
            LogicalMessage::Type(t) => {
                m.serialize_entry("oid", &t.oid)?;
                m.serialize_entry("type_schema", &t.namespace)?;
                m.serialize_entry("type_name", &t.name)?;
            }
            LogicalMessage::Insert(i) => {
                m.serialize_entry("new", &Row::new(ev, &i.new))?;
            }
            LogicalMessage::Update(u) => {
                if let Some(old) = &u.old {
                    m.serialize_entry("old_kind", old_kind(old))?;
                    m.serialize_entry("old", &Row::old(ev, old))?;
                }
                m.serialize_entry("new", &Row::new(ev, &u.new))?;
            }
            LogicalMessage::Delete(d) => {
                m.serialize_entry("old_kind", old_kind(&d.old))?;
                m.serialize_entry("old", &Row::old(ev, &d.old))?;
            }
            LogicalMessage::Truncate(t) => {
                let names: Vec<String> = ev
                    .relations
                    .iter()
                    .map(|r| format!("{}.{}", r.namespace, r.name))
                    .collect();
                m.serialize_entry("tables", &names)?;
                m.serialize_entry("cascade", &t.cascade)?;
                m.serialize_entry("restart_identity", &t.restart_identity)?;
            }
            LogicalMessage::Message(g) => {
                m.serialize_entry("transactional", &g.transactional)?;
                m.serialize_entry("prefix", &g.prefix)?;
                m.serialize_entry("content", &String::from_utf8_lossy(&g.content))?;
            }
        }
        m.end()
    }
}

fn identity(r: ReplicaIdentity) -> &'static str {
    match r {
        ReplicaIdentity::Default => "default",
        ReplicaIdentity::Nothing => "nothing",
        ReplicaIdentity::Full => "full",
        ReplicaIdentity::Index => "index",
    }
}

fn old_kind(o: &OldTuple) -> &'static str {
    match o {
        OldTuple::Key(_) => "key",
        OldTuple::Full(_) => "full",
    }
}

struct ColumnInfo<'a>(&'a Column);

impl Serialize for ColumnInfo<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(3))?;
        m.serialize_entry("name", &self.0.name)?;
        m.serialize_entry("type_oid", &self.0.type_oid)?;
        m.serialize_entry("key", &self.0.is_key)?;
        m.end()
    }
}

/// Column name → value, in the table's column order. An old key tuple carries only the key
/// columns: the others were not sent (they are not NULL), so they are left out.
struct Row<'a> {
    columns: &'a [Column],
    values: &'a [Value],
    key_only: bool,
}

impl<'a> Row<'a> {
    fn new(ev: &'a Event, values: &'a [Value]) -> Self {
        Row {
            columns: ev.relation().map_or(&[], |r| r.columns.as_slice()),
            values,
            key_only: false,
        }
    }

    fn old(ev: &'a Event, old: &'a OldTuple) -> Self {
        Row {
            key_only: matches!(old, OldTuple::Key(_)),
            ..Row::new(ev, old.tuple())
        }
    }
}

impl Serialize for Row<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        for (col, v) in self.columns.iter().zip(self.values) {
            if self.key_only && !col.is_key {
                continue;
            }
            match v {
                Value::Null => m.serialize_entry(&col.name, &())?,
                Value::UnchangedToast => m.serialize_entry(&col.name, "unchanged-toast")?,
                Value::Text(b) => m.serialize_entry(&col.name, &String::from_utf8_lossy(b))?,
                Value::Binary(b) => m.serialize_entry(&col.name, &hex(b))?,
            }
        }
        m.end()
    }
}

fn hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(2 + b.len() * 2);
    s.push_str("\\x");
    for byte in b {
        s.push_str(&format!("{byte:02x}"));
    }
    s
}

/// Microseconds since 2000-01-01 as RFC 3339 UTC.
pub fn pg_time(micros: i64) -> String {
    const UNIX_TO_PG_DAYS: i64 = 10_957;
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000);
    let days = secs.div_euclid(86_400) + UNIX_TO_PG_DAYS;
    let sod = secs.rem_euclid(86_400);
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{frac:06}Z",
        sod / 3_600,
        sod % 3_600 / 60,
        sod % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pg_time_formats_utc() {
        assert_eq!(pg_time(0), "2000-01-01T00:00:00.000000Z");
        assert_eq!(pg_time(-1), "1999-12-31T23:59:59.999999Z");
        // 2024-02-29 12:34:56.5 UTC
        assert_eq!(pg_time(762_525_296_500_000), "2024-02-29T12:34:56.500000Z");
    }
}
