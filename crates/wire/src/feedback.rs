//! What the standby status updates report, without I/O.
//!
//! The flush position tells the server which WAL the slot may forget, so it only moves when
//! the consumer confirms durable data, with one exception that keeps an idle slot from
//! retaining WAL forever: a keepalive's position may be reported once everything received
//! before that keepalive is confirmed and no transaction was half-received at that moment.
//! (During a transaction the walsender has already read past its commit record, so the
//! keepalive position would skip it: the bug that loses transactions in some tools.)

use bytes::Bytes;

use crate::codec::{PrimaryKeepalive, StandbyStatus, XLogData};
use crate::lsn::Lsn;
use crate::pgoutput::{self, LogicalMessage};

#[derive(Debug, Clone, Default)]
pub struct Feedback {
    /// Highest WAL position seen in data or keepalives.
    received: Lsn,
    /// Between a Begin and its Commit.
    in_txn: bool,
    /// End of the last complete unit (commit, non-transactional message) received.
    units_end: Lsn,
    /// A keepalive position seen while idle, with `units_end` at that moment: reportable
    /// once the consumer confirms that.
    idle_candidate: Option<(Lsn, Lsn)>,
    /// Highest keepalive position known to be safe to report.
    idle_flush: Lsn,
}

impl Feedback {
    pub fn new() -> Self {
        Self::default()
    }

    /// Accounts for a data message as it leaves the socket (before the consumer sees it).
    pub fn on_data(&mut self, x: &XLogData) {
        self.received = self.received.max(x.wal_end).max(x.wal_start);
        match x.data.first() {
            Some(b'B') => self.in_txn = true,
            Some(b'C') => {
                self.in_txn = false;
                self.units_end = self.units_end.max(commit_end(&x.data).unwrap_or(x.wal_end));
            }
            _ if !self.in_txn => {
                // A non-transactional logical message (or anything else outside a
                // transaction) must be confirmed before we skip past it.
                let end = match pgoutput::decode(&x.data) {
                    Ok(LogicalMessage::Message(m)) => m.lsn.max(x.wal_end),
                    _ => x.wal_end.max(x.wal_start),
                };
                self.units_end = self.units_end.max(end);
            }
            _ => {}
        }
    }

    /// Accounts for a keepalive. `confirmed` is what the consumer has confirmed so far.
    pub fn on_keepalive(&mut self, k: &PrimaryKeepalive, confirmed: Lsn) {
        self.received = self.received.max(k.wal_end);
        self.settle(confirmed);
        if !self.in_txn {
            self.idle_candidate = Some((k.wal_end, self.units_end));
            self.settle(confirmed);
        }
    }

    fn settle(&mut self, confirmed: Lsn) {
        if let Some((pos, needs)) = self.idle_candidate {
            if confirmed >= needs {
                self.idle_flush = self.idle_flush.max(pos);
                self.idle_candidate = None;
            }
        }
    }

    /// The update to send now. Flush and apply are the same: the consumer's confirmation
    /// means applied and durable.
    pub fn status(&mut self, confirmed: Lsn, reply_requested: bool) -> StandbyStatus {
        self.settle(confirmed);
        let flush = confirmed.max(self.idle_flush);
        StandbyStatus {
            write: self.received.max(flush),
            flush,
            apply: flush,
            reply_requested,
        }
    }

    /// Highest position received (data or keepalive).
    pub fn received(&self) -> Lsn {
        self.received
    }
}

fn commit_end(data: &Bytes) -> Option<Lsn> {
    match pgoutput::decode(data) {
        Ok(LogicalMessage::Commit(c)) => Some(c.end_lsn),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(at: u64, payload: Vec<u8>) -> XLogData {
        XLogData {
            wal_start: Lsn(at),
            wal_end: Lsn(at),
            send_time: 0,
            data: payload.into(),
        }
    }

    fn begin(at: u64) -> XLogData {
        let mut p = vec![b'B'];
        p.extend(at.to_be_bytes());
        p.extend(0i64.to_be_bytes());
        p.extend(1u32.to_be_bytes());
        data(at, p)
    }

    fn commit(end: u64) -> XLogData {
        let mut p = vec![b'C', 0];
        p.extend((end - 8).to_be_bytes());
        p.extend(end.to_be_bytes());
        p.extend(0i64.to_be_bytes());
        data(end, p)
    }

    fn keepalive(at: u64) -> PrimaryKeepalive {
        PrimaryKeepalive {
            wal_end: Lsn(at),
            send_time: 0,
            reply_requested: true,
        }
    }

    #[test]
    fn flush_only_moves_with_confirmation() {
        let mut f = Feedback::new();
        f.on_data(&begin(100));
        f.on_data(&commit(200));
        let s = f.status(Lsn::ZERO, false);
        assert_eq!((s.write, s.flush), (Lsn(200), Lsn::ZERO));
        assert_eq!(f.status(Lsn(200), false).flush, Lsn(200));
    }

    #[test]
    fn keepalive_advances_an_idle_fully_confirmed_stream() {
        let mut f = Feedback::new();
        f.on_data(&begin(100));
        f.on_data(&commit(200));
        f.on_keepalive(&keepalive(300), Lsn(200));
        assert_eq!(f.status(Lsn(200), true).flush, Lsn(300));
    }

    #[test]
    fn keepalive_waits_for_the_confirmation_of_earlier_data() {
        let mut f = Feedback::new();
        f.on_data(&begin(100));
        f.on_data(&commit(200));
        f.on_keepalive(&keepalive(300), Lsn::ZERO);
        assert_eq!(f.status(Lsn::ZERO, false).flush, Lsn::ZERO);
        // Once the consumer catches up, the remembered keepalive becomes reportable.
        assert_eq!(f.status(Lsn(200), false).flush, Lsn(300));
    }

    #[test]
    fn keepalive_inside_a_transaction_is_never_reported() {
        let mut f = Feedback::new();
        f.on_data(&begin(100));
        f.on_data(&commit(200));
        // Transaction 2 started in the WAL before 200 and commits at 400; the walsender is
        // past its commit record while sending it.
        f.on_data(&begin(150));
        f.on_keepalive(&keepalive(450), Lsn(200));
        assert_eq!(f.status(Lsn(200), false).flush, Lsn(200));
        f.on_data(&commit(400));
        assert_eq!(f.status(Lsn(200), false).flush, Lsn(200));
        assert_eq!(f.status(Lsn(400), false).flush, Lsn(400));
    }

    #[test]
    fn nontransactional_message_must_be_confirmed_first() {
        let mut f = Feedback::new();
        let mut p = vec![b'M', 0];
        p.extend(500u64.to_be_bytes());
        p.extend(b"pfx\0");
        p.extend(0i32.to_be_bytes());
        f.on_data(&data(500, p));
        f.on_keepalive(&keepalive(600), Lsn::ZERO);
        assert_eq!(f.status(Lsn::ZERO, false).flush, Lsn::ZERO);
        assert_eq!(f.status(Lsn(500), false).flush, Lsn(600));
    }

    #[test]
    fn fresh_stream_reports_keepalive_position() {
        let mut f = Feedback::new();
        f.on_keepalive(&keepalive(42), Lsn::ZERO);
        let s = f.status(Lsn::ZERO, true);
        assert_eq!((s.write, s.flush, s.apply), (Lsn(42), Lsn(42), Lsn(42)));
        assert!(s.reply_requested);
    }
}
