//! Feeds arbitrary bytes to the pgoutput decoder and the replication message parser.
//! Input: a sequence of frames `len: u16 BE, bytes`, decoded in order by one stateful
//! Decoder (so Relation messages can precede the changes that use them); the whole input
//! also goes through the stateless decoder and the CopyData parser as one message.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let whole = Bytes::copy_from_slice(data);
    let _ = wire::pgoutput::decode(&whole);
    let _ = wire::codec::parse_replication(whole.clone());

    let mut decoder = wire::Decoder::new();
    let mut feedback = wire::feedback::Feedback::new();
    let mut rest = whole;
    while rest.len() >= 2 {
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]])).min(rest.len() - 2);
        let frame = rest.slice(2..2 + len);
        rest = rest.slice(2 + len..);
        if let Ok(d) = decoder.decode(&frame) {
            // Round trip through the relation cache must stay consistent.
            if let Some(rel) = d.relation() {
                assert!(decoder.cache().relation(rel.id).is_ok());
            }
        }
        feedback.on_data(&wire::codec::XLogData {
            wal_start: wire::Lsn(len as u64),
            wal_end: wire::Lsn(len as u64),
            send_time: 0,
            data: frame,
        });
    }
});
