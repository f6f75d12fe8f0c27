//! The pgoutput logical replication message format (protocol versions 1 and 2), decoded from
//! bytes without I/O. Every read is bounds-checked: malformed input is a [`DecodeError`],
//! never a panic.
//!
//! Values borrow from the input [`Bytes`] (no copies of column data).

use std::sync::Arc;

use bytes::Bytes;

use crate::lsn::Lsn;

/// One pgoutput message.
#[derive(Debug, Clone, PartialEq)]
pub enum LogicalMessage {
    Begin(Begin),
    Commit(Commit),
    Origin(Origin),
    Relation(Arc<Relation>),
    Type(TypeInfo),
    Insert(Insert),
    Update(Update),
    Delete(Delete),
    Truncate(Truncate),
    Message(GenericMessage),
}

impl LogicalMessage {
    /// Short lowercase name, as used in logs and `peek` output.
    pub fn kind(&self) -> &'static str {
        match self {
            LogicalMessage::Begin(_) => "begin",
            LogicalMessage::Commit(_) => "commit",
            LogicalMessage::Origin(_) => "origin",
            LogicalMessage::Relation(_) => "relation",
            LogicalMessage::Type(_) => "type",
            LogicalMessage::Insert(_) => "insert",
            LogicalMessage::Update(_) => "update",
            LogicalMessage::Delete(_) => "delete",
            LogicalMessage::Truncate(_) => "truncate",
            LogicalMessage::Message(_) => "message",
        }
    }
}

/// Microseconds since 2000-01-01 00:00:00 UTC (PostgreSQL's epoch).
pub type PgTimestamp = i64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Begin {
    /// LSN of the commit record.
    pub final_lsn: Lsn,
    pub commit_time: PgTimestamp,
    pub xid: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    pub flags: u8,
    /// LSN of the commit record.
    pub commit_lsn: Lsn,
    /// End of the commit record: the position to confirm once the transaction is durable.
    pub end_lsn: Lsn,
    pub commit_time: PgTimestamp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub commit_lsn: Lsn,
    pub name: String,
}

/// `relreplident`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaIdentity {
    Default,
    Nothing,
    Full,
    Index,
}

impl ReplicaIdentity {
    fn from_byte(b: u8) -> Result<Self, DecodeError> {
        Ok(match b {
            b'd' => ReplicaIdentity::Default,
            b'n' => ReplicaIdentity::Nothing,
            b'f' => ReplicaIdentity::Full,
            b'i' => ReplicaIdentity::Index,
            other => return Err(DecodeError::UnknownReplicaIdentity(other)),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub id: u32,
    /// Schema name; pgoutput sends "" for pg_catalog, which is restored here.
    pub namespace: String,
    pub name: String,
    pub replica_identity: ReplicaIdentity,
    pub columns: Vec<Column>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    /// Part of the replica identity key.
    pub is_key: bool,
    pub name: String,
    pub type_oid: u32,
    pub type_modifier: i32,
}

/// A `Type` message: sent before the first use of a non-builtin type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeInfo {
    pub oid: u32,
    pub namespace: String,
    pub name: String,
}

/// One column value of a tuple.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Null,
    /// A TOASTed value the UPDATE left unchanged: it is not sent; keep the target's value.
    UnchangedToast,
    /// Text output form of the type (server encoding).
    Text(Bytes),
    /// Binary send form of the type (only with the `binary` option).
    Binary(Bytes),
}

pub type Tuple = Vec<Value>;

/// The old row of an UPDATE or DELETE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OldTuple {
    /// 'K': only the replica identity key columns are set, the others are null.
    Key(Tuple),
    /// 'O': the whole old row (REPLICA IDENTITY FULL).
    Full(Tuple),
}

impl OldTuple {
    pub fn tuple(&self) -> &Tuple {
        match self {
            OldTuple::Key(t) | OldTuple::Full(t) => t,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Insert {
    pub relation_id: u32,
    pub new: Tuple,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    pub relation_id: u32,
    /// Present when the key changed (K) or the table has REPLICA IDENTITY FULL (O).
    pub old: Option<OldTuple>,
    pub new: Tuple,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delete {
    pub relation_id: u32,
    pub old: OldTuple,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncate {
    pub cascade: bool,
    pub restart_identity: bool,
    pub relation_ids: Vec<u32>,
}

/// A `pg_logical_emit_message` message (sent with `messages 'true'`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenericMessage {
    pub transactional: bool,
    pub lsn: Lsn,
    pub prefix: String,
    pub content: Bytes,
}

/// Why bytes are not a valid pgoutput message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("empty message")]
    Empty,
    #[error("message '{tag}' truncated: needed {needed} more bytes at offset {offset}")]
    Truncated {
        tag: char,
        offset: usize,
        needed: usize,
    },
    #[error("message '{tag}': string at offset {offset} has no terminating NUL")]
    UnterminatedString { tag: char, offset: usize },
    #[error("message '{tag}': string at offset {offset} is not UTF-8")]
    InvalidUtf8 { tag: char, offset: usize },
    #[error("message '{tag}' has {extra} unexpected trailing bytes")]
    TrailingBytes { tag: char, extra: usize },
    #[error("unknown pgoutput message type {0:#04x}")]
    UnknownMessage(u8),
    #[error(
        "pgoutput message '{0}' belongs to streaming or two-phase mode, which this client never requests"
    )]
    UnsupportedMode(char),
    #[error("unknown tuple column kind {0:#04x} (expected n, u, t or b)")]
    UnknownColumnKind(u8),
    #[error("unknown tuple marker {0:#04x} (expected N, K or O)")]
    UnknownTupleMarker(u8),
    #[error("unknown replica identity {0:#04x}")]
    UnknownReplicaIdentity(u8),
    #[error("negative {what} {value}")]
    Negative { what: &'static str, value: i64 },
    #[error("change for relation {0} arrived before its Relation message")]
    UnknownRelation(u32),
    #[error("relation {relation} has {expected} columns but the tuple has {got}")]
    ColumnCount {
        relation: u32,
        expected: usize,
        got: usize,
    },
}

/// Decodes one pgoutput message (the payload of one XLogData).
pub fn decode(buf: &Bytes) -> Result<LogicalMessage, DecodeError> {
    let tag = *buf.first().ok_or(DecodeError::Empty)?;
    let mut r = Reader {
        buf,
        pos: 1,
        tag: tag as char,
    };
    let msg = match tag {
        b'B' => LogicalMessage::Begin(Begin {
            final_lsn: r.lsn()?,
            commit_time: r.i64()?,
            xid: r.u32()?,
        }),
        b'C' => LogicalMessage::Commit(Commit {
            flags: r.u8()?,
            commit_lsn: r.lsn()?,
            end_lsn: r.lsn()?,
            commit_time: r.i64()?,
        }),
        b'O' => LogicalMessage::Origin(Origin {
            commit_lsn: r.lsn()?,
            name: r.string()?,
        }),
        b'R' => LogicalMessage::Relation(Arc::new(relation(&mut r)?)),
        b'Y' => LogicalMessage::Type(TypeInfo {
            oid: r.u32()?,
            namespace: catalog_namespace(r.string()?),
            name: r.string()?,
        }),
        b'I' => {
            let relation_id = r.u32()?;
            match r.u8()? {
                b'N' => LogicalMessage::Insert(Insert {
                    relation_id,
                    new: r.tuple()?,
                }),
                other => return Err(DecodeError::UnknownTupleMarker(other)),
            }
        }
        b'U' => {
            let relation_id = r.u32()?;
            let (old, marker) = match r.u8()? {
                b'K' => (Some(OldTuple::Key(r.tuple()?)), r.u8()?),
                b'O' => (Some(OldTuple::Full(r.tuple()?)), r.u8()?),
                m => (None, m),
            };
            if marker != b'N' {
                return Err(DecodeError::UnknownTupleMarker(marker));
            }
            LogicalMessage::Update(Update {
                relation_id,
                old,
                new: r.tuple()?,
            })
        }
        b'D' => {
            let relation_id = r.u32()?;
            let old = match r.u8()? {
                b'K' => OldTuple::Key(r.tuple()?),
                b'O' => OldTuple::Full(r.tuple()?),
                other => return Err(DecodeError::UnknownTupleMarker(other)),
            };
            LogicalMessage::Delete(Delete { relation_id, old })
        }
        b'T' => {
            let n = r.count_i32("relation count")?;
            let options = r.u8()?;
            // Cap the reservation by what the input can hold: a forged count must not allocate.
            let mut relation_ids = Vec::with_capacity(n.min(r.remaining() / 4));
            for _ in 0..n {
                relation_ids.push(r.u32()?);
            }
            LogicalMessage::Truncate(Truncate {
                cascade: options & 1 != 0,
                restart_identity: options & 2 != 0,
                relation_ids,
            })
        }
        b'M' => {
            let flags = r.u8()?;
            let lsn = r.lsn()?;
            let prefix = r.string()?;
            let len = r.count_i32("message length")?;
            LogicalMessage::Message(GenericMessage {
                transactional: flags & 1 != 0,
                lsn,
                prefix,
                content: r.bytes(len)?,
            })
        }
        // Streaming (S E c A) and two-phase (b P K r p) messages: inside a stream every
        // message gains an xid prefix, so decoding them needs state we do not keep.
        b'S' | b'E' | b'c' | b'A' | b'b' | b'P' | b'K' | b'r' | b'p' => {
            return Err(DecodeError::UnsupportedMode(tag as char))
        }
        other => return Err(DecodeError::UnknownMessage(other)),
    };
    r.finish()?;
    Ok(msg)
}

fn relation(r: &mut Reader<'_>) -> Result<Relation, DecodeError> {
    let id = r.u32()?;
    let namespace = catalog_namespace(r.string()?);
    let name = r.string()?;
    let replica_identity = ReplicaIdentity::from_byte(r.u8()?)?;
    let ncols = r.count_i16("column count")?;
    // Each column takes at least 10 bytes (flags, empty name, oid, typmod).
    let mut columns = Vec::with_capacity(ncols.min(r.remaining() / 10));
    for _ in 0..ncols {
        columns.push(Column {
            is_key: r.u8()? & 1 != 0,
            name: r.string()?,
            type_oid: r.u32()?,
            type_modifier: r.i32()?,
        });
    }
    Ok(Relation {
        id,
        namespace,
        name,
        replica_identity,
        columns,
    })
}

/// pgoutput writes "" for objects in pg_catalog to save bytes.
fn catalog_namespace(ns: String) -> String {
    if ns.is_empty() {
        "pg_catalog".to_string()
    } else {
        ns
    }
}

/// A bounds-checked cursor over one message.
struct Reader<'a> {
    buf: &'a Bytes,
    pos: usize,
    tag: char,
}

impl Reader<'_> {
    fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    fn take<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let bytes = self
            .buf
            .get(self.pos..)
            .and_then(|rest| rest.get(..N))
            .ok_or(DecodeError::Truncated {
                tag: self.tag,
                offset: self.pos,
                needed: N - self.remaining().min(N),
            })?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        self.pos += N;
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take::<1>()?[0])
    }

    fn i16(&mut self) -> Result<i16, DecodeError> {
        Ok(i16::from_be_bytes(self.take()?))
    }

    fn i32(&mut self) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(self.take()?))
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.take()?))
    }

    fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.take()?))
    }

    fn lsn(&mut self) -> Result<Lsn, DecodeError> {
        Ok(Lsn(u64::from_be_bytes(self.take()?)))
    }

    fn count_i16(&mut self, what: &'static str) -> Result<usize, DecodeError> {
        let v = self.i16()?;
        usize::try_from(v).map_err(|_| DecodeError::Negative {
            what,
            value: v.into(),
        })
    }

    fn count_i32(&mut self, what: &'static str) -> Result<usize, DecodeError> {
        let v = self.i32()?;
        usize::try_from(v).map_err(|_| DecodeError::Negative {
            what,
            value: v.into(),
        })
    }

    fn bytes(&mut self, len: usize) -> Result<Bytes, DecodeError> {
        if self.remaining() < len {
            return Err(DecodeError::Truncated {
                tag: self.tag,
                offset: self.pos,
                needed: len - self.remaining(),
            });
        }
        let out = self.buf.slice(self.pos..self.pos + len);
        self.pos += len;
        Ok(out)
    }

    fn string(&mut self) -> Result<String, DecodeError> {
        let start = self.pos;
        let rest = self.buf.get(start..).unwrap_or_default();
        let nul = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or(DecodeError::UnterminatedString {
                tag: self.tag,
                offset: start,
            })?;
        let s = std::str::from_utf8(&rest[..nul]).map_err(|_| DecodeError::InvalidUtf8 {
            tag: self.tag,
            offset: start,
        })?;
        self.pos = start + nul + 1;
        Ok(s.to_string())
    }

    fn tuple(&mut self) -> Result<Tuple, DecodeError> {
        let n = self.count_i16("tuple column count")?;
        // Each column takes at least one byte.
        let mut values = Vec::with_capacity(n.min(self.remaining()));
        for _ in 0..n {
            let v = match self.u8()? {
                b'n' => Value::Null,
                b'u' => Value::UnchangedToast,
                b't' => {
                    let len = self.count_i32("text value length")?;
                    Value::Text(self.bytes(len)?)
                }
                b'b' => {
                    let len = self.count_i32("binary value length")?;
                    Value::Binary(self.bytes(len)?)
                }
                other => return Err(DecodeError::UnknownColumnKind(other)),
            };
            values.push(v);
        }
        Ok(values)
    }

    fn finish(&self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            extra => Err(DecodeError::TrailingBytes {
                tag: self.tag,
                extra,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hand-built messages in the layout of PostgreSQL's logical/proto.c.
    struct W(Vec<u8>);
    impl W {
        fn new(tag: u8) -> Self {
            W(vec![tag])
        }
        fn u8(mut self, v: u8) -> Self {
            self.0.push(v);
            self
        }
        fn i16(mut self, v: i16) -> Self {
            self.0.extend(v.to_be_bytes());
            self
        }
        fn i32(mut self, v: i32) -> Self {
            self.0.extend(v.to_be_bytes());
            self
        }
        fn i64(mut self, v: i64) -> Self {
            self.0.extend(v.to_be_bytes());
            self
        }
        fn s(mut self, v: &str) -> Self {
            self.0.extend(v.as_bytes());
            self.0.push(0);
            self
        }
        fn text(self, v: &str) -> Self {
            let mut w = self.u8(b't').i32(v.len() as i32);
            w.0.extend(v.as_bytes());
            w
        }
        fn done(self) -> Bytes {
            Bytes::from(self.0)
        }
    }

    #[test]
    fn begin_and_commit() {
        let b = W::new(b'B').i64(0x1_0000_0010).i64(42).i32(777).done();
        assert_eq!(
            decode(&b).unwrap(),
            LogicalMessage::Begin(Begin {
                final_lsn: Lsn(0x1_0000_0010),
                commit_time: 42,
                xid: 777
            })
        );
        let c = W::new(b'C').u8(0).i64(16).i64(24).i64(99).done();
        assert_eq!(
            decode(&c).unwrap(),
            LogicalMessage::Commit(Commit {
                flags: 0,
                commit_lsn: Lsn(16),
                end_lsn: Lsn(24),
                commit_time: 99
            })
        );
    }

    #[test]
    fn relation_restores_pg_catalog_and_key_flags() {
        let r = W::new(b'R')
            .i32(16384)
            .s("")
            .s("t")
            .u8(b'f')
            .i16(2)
            .u8(1)
            .s("id")
            .i32(23)
            .i32(-1)
            .u8(0)
            .s("v")
            .i32(25)
            .i32(-1)
            .done();
        let LogicalMessage::Relation(rel) = decode(&r).unwrap() else {
            panic!("not a relation")
        };
        assert_eq!(rel.namespace, "pg_catalog");
        assert_eq!(rel.replica_identity, ReplicaIdentity::Full);
        assert!(rel.columns[0].is_key && !rel.columns[1].is_key);
        assert_eq!(
            (rel.columns[1].name.as_str(), rel.columns[1].type_oid),
            ("v", 25)
        );
    }

    #[test]
    fn update_with_key_and_all_column_kinds() {
        let u = W::new(b'U')
            .i32(5)
            .u8(b'K')
            .i16(2)
            .text("1")
            .u8(b'n')
            .u8(b'N')
            .i16(4)
            .text("2")
            .u8(b'u')
            .u8(b'n')
            .u8(b'b')
            .i32(2)
            .u8(0xde)
            .u8(0xad)
            .done();
        let LogicalMessage::Update(up) = decode(&u).unwrap() else {
            panic!("not an update")
        };
        assert_eq!(
            up.old,
            Some(OldTuple::Key(vec![Value::Text("1".into()), Value::Null]))
        );
        assert_eq!(
            up.new,
            vec![
                Value::Text("2".into()),
                Value::UnchangedToast,
                Value::Null,
                Value::Binary(Bytes::from_static(&[0xde, 0xad]))
            ]
        );
    }

    #[test]
    fn update_without_old_and_delete_with_full_row() {
        let u = W::new(b'U').i32(5).u8(b'N').i16(1).text("x").done();
        assert!(matches!(
            decode(&u).unwrap(),
            LogicalMessage::Update(Update { old: None, .. })
        ));
        let d = W::new(b'D').i32(5).u8(b'O').i16(1).text("x").done();
        assert!(matches!(
            decode(&d).unwrap(),
            LogicalMessage::Delete(Delete {
                old: OldTuple::Full(_),
                ..
            })
        ));
    }

    #[test]
    fn truncate_message_origin_type() {
        let t = W::new(b'T').i32(2).u8(3).i32(10).i32(11).done();
        assert_eq!(
            decode(&t).unwrap(),
            LogicalMessage::Truncate(Truncate {
                cascade: true,
                restart_identity: true,
                relation_ids: vec![10, 11]
            })
        );
        let m = W::new(b'M')
            .u8(1)
            .i64(7)
            .s("pfx")
            .i32(3)
            .u8(b'a')
            .u8(b'b')
            .u8(b'c')
            .done();
        assert_eq!(
            decode(&m).unwrap(),
            LogicalMessage::Message(GenericMessage {
                transactional: true,
                lsn: Lsn(7),
                prefix: "pfx".into(),
                content: "abc".into()
            })
        );
        let o = W::new(b'O').i64(9).s("blue").done();
        assert!(matches!(decode(&o).unwrap(), LogicalMessage::Origin(o) if o.name == "blue"));
        let y = W::new(b'Y').i32(16400).s("public").s("mood").done();
        assert!(matches!(decode(&y).unwrap(), LogicalMessage::Type(t) if t.name == "mood"));
    }

    #[test]
    fn malformed_input_is_an_error() {
        let cases: Vec<(Bytes, &str)> = vec![
            (Bytes::new(), "empty"),
            (W::new(b'B').i64(1).done(), "truncated"),
            (
                W::new(b'C').u8(0).i64(1).i64(2).i64(3).u8(9).done(),
                "trailing",
            ),
            (W::new(b'O').i64(9).u8(b'x').done(), "NUL"),
            (W::new(b'I').i32(1).u8(b'N').i16(-1).done(), "negative"),
            (W::new(b'I').i32(1).u8(b'X').done(), "marker"),
            (
                W::new(b'I').i32(1).u8(b'N').i16(1).u8(b'z').done(),
                "column kind",
            ),
            (
                W::new(b'I').i32(1).u8(b'N').i16(1).u8(b't').i32(100).done(),
                "truncated",
            ),
            (W::new(b'T').i32(i32::MAX).u8(0).done(), "truncated"),
            (W::new(b'S').i32(1).u8(1).done(), "streaming"),
            (W::new(b'Z').done(), "unknown"),
            (W::new(b'O').i64(9).u8(0xff).u8(0).done(), "UTF-8"),
        ];
        for (bytes, want) in cases {
            let err = decode(&bytes).unwrap_err().to_string();
            assert!(err.contains(want), "{bytes:?}: {err} lacks {want:?}");
        }
    }
}
