//! Property tests: the decoder never panics, whatever the bytes, and valid messages survive
//! single-byte corruption without panicking either.

use bytes::Bytes;
use proptest::prelude::*;
use wire::{Decoder, LogicalMessage};

/// A message tag followed by arbitrary bytes, biased toward the tags the decoder knows.
fn tagged() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::sample::select(b"BCORYIUDTMSEcAbPKrpZ".to_vec()),
        prop::collection::vec(any::<u8>(), 0..200),
    )
        .prop_map(|(tag, rest)| {
            let mut v = vec![tag];
            v.extend(rest);
            v
        })
}

/// A well-formed Relation + Insert pair for a random column list.
fn relation_and_insert() -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
    prop::collection::vec(("[a-z]{0,8}", any::<u32>(), any::<bool>(), ".{0,12}"), 0..6).prop_map(
        |cols| {
            let mut r = vec![b'R'];
            r.extend(77u32.to_be_bytes());
            r.extend(b"s\0t\0d");
            r.extend((cols.len() as i16).to_be_bytes());
            let mut i = vec![b'I'];
            i.extend(77u32.to_be_bytes());
            i.push(b'N');
            i.extend((cols.len() as i16).to_be_bytes());
            for (name, oid, null, val) in &cols {
                r.push(0);
                r.extend(name.as_bytes());
                r.push(0);
                r.extend(oid.to_be_bytes());
                r.extend((-1i32).to_be_bytes());
                if *null {
                    i.push(b'n');
                } else {
                    i.push(b't');
                    i.extend((val.len() as i32).to_be_bytes());
                    i.extend(val.as_bytes());
                }
            }
            (r, i)
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..300)) {
        let _ = wire::pgoutput::decode(&Bytes::from(data.clone()));
        let _ = Decoder::new().decode(&Bytes::from(data));
    }

    #[test]
    fn tagged_garbage_never_panics(msgs in prop::collection::vec(tagged(), 1..8)) {
        let mut d = Decoder::new();
        for m in msgs {
            let _ = d.decode(&Bytes::from(m));
        }
    }

    #[test]
    fn valid_messages_decode_and_corruptions_do_not_panic(
        (rel, ins) in relation_and_insert(),
        flip_at in any::<prop::sample::Index>(),
        flip_to in any::<u8>(),
    ) {
        let mut d = Decoder::new();
        d.decode(&Bytes::from(rel.clone())).unwrap();
        let decoded = d.decode(&Bytes::from(ins.clone())).unwrap();
        let is_insert = matches!(decoded.message, LogicalMessage::Insert(_));
        prop_assert!(is_insert);
        prop_assert_eq!(decoded.relation().unwrap().id, 77);
        for original in [rel, ins] {
            let mut bad = original;
            let at = flip_at.index(bad.len());
            bad[at] = flip_to;
            let _ = d.decode(&Bytes::from(bad));
        }
    }
}
