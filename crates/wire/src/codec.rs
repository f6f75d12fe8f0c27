//! Frontend/backend message framing without I/O: backend messages (with the CopyBothResponse
//! that postgres-protocol rejects), error fields, and the replication sub-protocol carried in
//! CopyData (XLogData, primary keepalive, standby status update).

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use fallible_iterator::FallibleIterator;
use postgres_protocol::message::backend::{self, ErrorFields, Message};

use crate::error::{DbError, Error};
use crate::lsn::Lsn;

/// Largest backend message accepted. One row change travels in one CopyData, and a single
/// value may be up to 1 GB, so the cap sits above that rather than at a "comfortable" size.
pub const MAX_MESSAGE_LEN: usize = (1 << 30) + (64 << 20);

const COPY_BOTH_RESPONSE_TAG: u8 = b'W';

/// A backend message.
pub enum Backend {
    Message(Message),
    /// Start of CopyBoth mode (START_REPLICATION's answer).
    CopyBothResponse,
}

/// Splits one complete message off the front of `buf`; `Ok(None)` when more bytes are needed.
pub fn parse_backend(buf: &mut BytesMut) -> Result<Option<Backend>, Error> {
    let Some(header) = buf.get(..5) else {
        return Ok(None);
    };
    let tag = header[0];
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    if !(4..=MAX_MESSAGE_LEN).contains(&len) {
        return Err(Error::Protocol(format!(
            "backend message '{}' has impossible length {len}",
            tag.escape_ascii()
        )));
    }
    if buf.len() < len + 1 {
        buf.reserve(len + 1 - buf.len());
        return Ok(None);
    }
    if tag == COPY_BOTH_RESPONSE_TAG {
        // Body: overall format, column count, per-column formats. Replication uses none of it.
        let _ = buf.split_to(len + 1);
        return Ok(Some(Backend::CopyBothResponse));
    }
    match Message::parse(buf) {
        Ok(Some(m)) => Ok(Some(Backend::Message(m))),
        Ok(None) => Err(Error::Protocol(
            "message framing disagrees with postgres-protocol".into(),
        )),
        Err(e) => Err(Error::Protocol(format!(
            "malformed backend message '{}': {e}",
            tag.escape_ascii()
        ))),
    }
}

/// The fields of an ErrorResponse or NoticeResponse.
pub fn db_error(fields: ErrorFields<'_>) -> Result<DbError, Error> {
    let pairs: Vec<(u8, Vec<u8>)> = fields
        .map(|f| Ok((f.type_(), f.value_bytes().to_vec())))
        .collect()
        .map_err(|e| Error::Protocol(format!("malformed error fields: {e}")))?;
    Ok(DbError::from_fields(
        pairs.iter().map(|(t, v)| (*t, v.as_slice())),
    ))
}

/// Name of a message for "unexpected message" errors.
pub fn describe(m: &Backend) -> &'static str {
    use Message as M;
    match m {
        Backend::CopyBothResponse => "CopyBothResponse",
        Backend::Message(m) => match m {
            M::AuthenticationOk
            | M::AuthenticationCleartextPassword
            | M::AuthenticationMd5Password(_)
            | M::AuthenticationSasl(_)
            | M::AuthenticationSaslContinue(_)
            | M::AuthenticationSaslFinal(_) => "Authentication",
            M::BackendKeyData(_) => "BackendKeyData",
            M::CommandComplete(_) => "CommandComplete",
            M::CopyData(_) => "CopyData",
            M::CopyDone => "CopyDone",
            M::CopyInResponse(_) => "CopyInResponse",
            M::CopyOutResponse(_) => "CopyOutResponse",
            M::DataRow(_) => "DataRow",
            M::EmptyQueryResponse => "EmptyQueryResponse",
            M::ErrorResponse(_) => "ErrorResponse",
            M::NoticeResponse(_) => "NoticeResponse",
            M::NotificationResponse(_) => "NotificationResponse",
            M::ParameterStatus(_) => "ParameterStatus",
            M::ReadyForQuery(_) => "ReadyForQuery",
            M::RowDescription(_) => "RowDescription",
            _ => "another message",
        },
    }
}

/// Column names of a RowDescription.
pub fn column_names(body: &backend::RowDescriptionBody) -> Result<Vec<String>, Error> {
    body.fields()
        .map(|f| Ok(f.name().to_string()))
        .collect()
        .map_err(|e| Error::Protocol(format!("malformed RowDescription: {e}")))
}

/// Text values of a DataRow (simple query results are always text).
pub fn row_values(body: &backend::DataRowBody) -> Result<Vec<Option<String>>, Error> {
    let buf = body.buffer();
    body.ranges()
        .map(|r| {
            Ok(r.and_then(|r| buf.get(r))
                .map(|v| String::from_utf8_lossy(v).into_owned()))
        })
        .collect()
        .map_err(|e| Error::Protocol(format!("malformed DataRow: {e}")))
}

/// A WAL data message: one pgoutput message and where it sits in the WAL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XLogData {
    pub wal_start: Lsn,
    pub wal_end: Lsn,
    /// Server clock, microseconds since 2000-01-01.
    pub send_time: i64,
    pub data: Bytes,
}

/// The server's heartbeat; `reply_requested` means "answer now or be timed out".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrimaryKeepalive {
    pub wal_end: Lsn,
    pub send_time: i64,
    pub reply_requested: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicationMessage {
    XLogData(XLogData),
    Keepalive(PrimaryKeepalive),
}

/// Parses the payload of a CopyData received in CopyBoth mode.
pub fn parse_replication(data: Bytes) -> Result<ReplicationMessage, Error> {
    let be64 = |at: usize| -> Result<u64, Error> {
        data.get(at..at + 8)
            .and_then(|s| <[u8; 8]>::try_from(s).ok())
            .map(u64::from_be_bytes)
            .ok_or_else(|| {
                Error::Protocol(format!(
                    "replication message too short ({} bytes)",
                    data.len()
                ))
            })
    };
    match data.first() {
        Some(b'w') => {
            let (wal_start, wal_end, send_time) = (be64(1)?, be64(9)?, be64(17)?);
            Ok(ReplicationMessage::XLogData(XLogData {
                wal_start: Lsn(wal_start),
                wal_end: Lsn(wal_end),
                send_time: send_time as i64,
                data: data.slice(25..),
            }))
        }
        Some(b'k') => {
            let (wal_end, send_time) = (be64(1)?, be64(9)?);
            if data.len() != 18 {
                return Err(Error::Protocol(format!(
                    "keepalive has {} bytes, expected 18",
                    data.len()
                )));
            }
            Ok(ReplicationMessage::Keepalive(PrimaryKeepalive {
                wal_end: Lsn(wal_end),
                send_time: send_time as i64,
                reply_requested: data[17] != 0,
            }))
        }
        Some(other) => Err(Error::Protocol(format!(
            "unknown replication message '{}'",
            other.escape_ascii()
        ))),
        None => Err(Error::Protocol(
            "empty CopyData in replication stream".into(),
        )),
    }
}

/// Standby status update ('r'), framed as a CopyData message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StandbyStatus {
    pub write: Lsn,
    pub flush: Lsn,
    pub apply: Lsn,
    pub reply_requested: bool,
}

impl StandbyStatus {
    pub fn encode(&self, now: i64, out: &mut BytesMut) {
        out.put_u8(b'd');
        out.put_i32(4 + 34);
        out.put_u8(b'r');
        out.put_u64(self.write.0);
        out.put_u64(self.flush.0);
        out.put_u64(self.apply.0);
        out.put_i64(now);
        out.put_u8(u8::from(self.reply_requested));
    }
}

/// Seconds between the Unix epoch and PostgreSQL's (2000-01-01).
const PG_EPOCH_OFFSET_SECS: u64 = 946_684_800;

/// Now, in microseconds since 2000-01-01, for status updates.
pub fn pg_now() -> i64 {
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0);
    i64::try_from(micros).unwrap_or(i64::MAX) - (PG_EPOCH_OFFSET_SECS as i64) * 1_000_000
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend(((body.len() + 4) as u32).to_be_bytes());
        v.extend(body);
        v
    }

    #[test]
    fn copy_both_response_is_framed_here_and_the_rest_passes_through() {
        let mut buf = BytesMut::new();
        buf.extend(frame(b'W', &[0, 0, 0]));
        buf.extend(frame(b'd', b"k12345678abcdefgh\x01"));
        buf.extend(&frame(b'Z', b"I")[..3]);
        assert!(matches!(
            parse_backend(&mut buf).unwrap(),
            Some(Backend::CopyBothResponse)
        ));
        let Some(Backend::Message(Message::CopyData(d))) = parse_backend(&mut buf).unwrap() else {
            panic!("expected CopyData")
        };
        let ReplicationMessage::Keepalive(k) = parse_replication(d.into_bytes()).unwrap() else {
            panic!("expected keepalive")
        };
        assert!(k.reply_requested);
        assert_eq!(k.wal_end, Lsn(u64::from_be_bytes(*b"12345678")));
        assert!(
            parse_backend(&mut buf).unwrap().is_none(),
            "partial message waits"
        );
    }

    #[test]
    fn impossible_lengths_are_protocol_errors() {
        let mut buf = BytesMut::from(&[b'd', 0, 0, 0, 2][..]);
        assert!(matches!(parse_backend(&mut buf), Err(Error::Protocol(_))));
        let mut buf = BytesMut::from(&[b'd', 0xff, 0xff, 0xff, 0xff][..]);
        assert!(matches!(parse_backend(&mut buf), Err(Error::Protocol(_))));
    }

    #[test]
    fn error_response_fields() {
        let mut buf = BytesMut::new();
        buf.extend(frame(
            b'E',
            b"SERROR\0VERROR\0C42704\0Mreplication slot \"nope\" does not exist\0\0",
        ));
        let Some(Backend::Message(Message::ErrorResponse(e))) = parse_backend(&mut buf).unwrap()
        else {
            panic!("expected ErrorResponse")
        };
        let e = db_error(e.fields()).unwrap();
        assert_eq!((e.severity.as_str(), e.code.as_str()), ("ERROR", "42704"));
    }

    #[test]
    fn xlogdata_and_status_update_layout() {
        let mut payload = vec![b'w'];
        payload.extend(1u64.to_be_bytes());
        payload.extend(2u64.to_be_bytes());
        payload.extend(3u64.to_be_bytes());
        payload.extend(b"Bxyz");
        let ReplicationMessage::XLogData(x) = parse_replication(payload.into()).unwrap() else {
            panic!()
        };
        assert_eq!((x.wal_start, x.wal_end, x.send_time), (Lsn(1), Lsn(2), 3));
        assert_eq!(&x.data[..], b"Bxyz");
        assert!(parse_replication(Bytes::from_static(b"w123")).is_err());
        assert!(parse_replication(Bytes::from_static(b"q")).is_err());

        let mut out = BytesMut::new();
        StandbyStatus {
            write: Lsn(10),
            flush: Lsn(9),
            apply: Lsn(8),
            reply_requested: false,
        }
        .encode(7, &mut out);
        assert_eq!(out.len(), 1 + 4 + 34);
        assert_eq!(&out[..6], &[b'd', 0, 0, 0, 38, b'r']);
        assert_eq!(&out[6..14], &10u64.to_be_bytes());
        assert_eq!(&out[14..22], &9u64.to_be_bytes());
        assert_eq!(&out[30..38], &7i64.to_be_bytes());
    }

    #[test]
    fn pg_now_is_after_2020() {
        // 2020-01-01 is 631152000 s after the PostgreSQL epoch.
        assert!(pg_now() > 631_152_000 * 1_000_000);
    }
}
