//! pgoutput bytes captured from PostgreSQL 15.18 (`WIRE_PRINT_CAPTURE=1 cargo test -p wire
//! --test capture -- --nocapture` prints them again), decoded without a server.

use bytes::Bytes;
use wire::pgoutput::{OldTuple, ReplicaIdentity, Value};
use wire::{Decoder, LogicalMessage, Lsn};

/// items(id int PK, name text, c color, tags text[]) and logs(line text, REPLICA IDENTITY
/// FULL): inserts, a plain update, a key update, a delete, full-row update/delete, logical
/// messages in and out of a transaction, TRUNCATE of both, and a transaction from origin 'blue'.
const CAPTURE: &[&str] = &[
    "42000000000150ab580003044b0660f336000002d6",
    "59000040017075626c696300636f6c6f7200",
    "52000040057075626c6963006974656d73006400040169640000000017ffffffff006e616d650000000019ffffffff00630000004001ffffffff007461677300000003f1ffffffff",
    "49000040054e000474000000013174000000036f6e65740000000372656474000000057b612c627d",
    "49000040054e00047400000001326e7400000005677265656e6e",
    "4300000000000150ab58000000000150ab880003044b0660f336",
    "55000040054e00047400000001317400000003756e6f740000000372656474000000057b612c627d",
    "55000040054b00047400000001326e6e6e4e00047400000001336e7400000005677265656e6e",
    "44000040054b00047400000001316e6e6e",
    "520000400c7075626c6963006c6f677300660001016c696e650000000019ffffffff",
    "550000400c4f000174000000026c314e000174000000026c32",
    "440000400c4f000174000000026c32",
    "4d01000000000150aea874780000000006696e73696465",
    "4d00000000000150af106e7478000000000200ff",
    "540000000200000040050000400c",
    "42000000000150c8700003044b0735b277000002de",
    "4f0000000000abcdef626c756500",
    "49000040054e0004740000000139740000000966726f6d20626c75656e74000000027b7d",
    "4300000000000150c870000000000150c8b80003044b0735b277",
];

fn bytes(hex: &str) -> Bytes {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect::<Vec<u8>>()
        .into()
}

fn t(s: &str) -> Value {
    Value::Text(Bytes::copy_from_slice(s.as_bytes()))
}

#[test]
fn captured_stream_decodes_with_relations_resolved() {
    let mut d = Decoder::new();
    let out: Vec<_> = CAPTURE
        .iter()
        .map(|h| d.decode(&bytes(h)).unwrap_or_else(|e| panic!("{h}: {e}")))
        .collect();
    let kinds: Vec<&str> = out.iter().map(|x| x.message.kind()).collect();
    assert_eq!(
        kinds,
        [
            "begin", "type", "relation", "insert", "insert", "commit", "update", "update",
            "delete", "relation", "update", "delete", "message", "message", "truncate", "begin",
            "origin", "insert", "commit"
        ]
    );

    let LogicalMessage::Begin(b) = &out[0].message else {
        panic!()
    };
    assert_eq!(b.xid, 726);
    assert_eq!(b.final_lsn, "0/150AB58".parse::<Lsn>().unwrap());
    let LogicalMessage::Commit(c) = &out[5].message else {
        panic!()
    };
    assert_eq!(c.commit_lsn, b.final_lsn);
    assert_eq!(c.end_lsn, "0/150AB88".parse::<Lsn>().unwrap());
    assert_eq!(c.commit_time, b.commit_time);

    let LogicalMessage::Type(ty) = &out[1].message else {
        panic!()
    };
    assert_eq!(
        (ty.oid, ty.namespace.as_str(), ty.name.as_str()),
        (16385, "public", "color")
    );
    assert_eq!(d.cache().type_info(16385).unwrap().name, "color");

    let items = out[3].relation().unwrap();
    assert_eq!(
        (items.namespace.as_str(), items.name.as_str()),
        ("public", "items")
    );
    assert_eq!(items.replica_identity, ReplicaIdentity::Default);
    let cols: Vec<(&str, u32, bool)> = items
        .columns
        .iter()
        .map(|c| (c.name.as_str(), c.type_oid, c.is_key))
        .collect();
    assert_eq!(
        cols,
        [
            ("id", 23, true),
            ("name", 25, false),
            ("c", 16385, false),
            ("tags", 1009, false)
        ]
    );
    let LogicalMessage::Insert(i) = &out[4].message else {
        panic!()
    };
    assert_eq!(i.new, vec![t("2"), Value::Null, t("green"), Value::Null]);

    // Key update: old key first, then the new row.
    let LogicalMessage::Update(u) = &out[7].message else {
        panic!()
    };
    assert_eq!(
        u.old,
        Some(OldTuple::Key(vec![
            t("2"),
            Value::Null,
            Value::Null,
            Value::Null
        ]))
    );
    assert_eq!(u.new[0], t("3"));

    // REPLICA IDENTITY FULL: the whole old row.
    let logs = out[10].relation().unwrap();
    assert_eq!(logs.replica_identity, ReplicaIdentity::Full);
    let LogicalMessage::Update(u) = &out[10].message else {
        panic!()
    };
    assert_eq!(u.old, Some(OldTuple::Full(vec![t("l1")])));
    assert_eq!(u.new, vec![t("l2")]);

    let LogicalMessage::Message(m) = &out[13].message else {
        panic!()
    };
    assert!(!m.transactional);
    assert_eq!(
        (m.prefix.as_str(), &m.content[..]),
        ("ntx", &[0x00, 0xff][..])
    );

    let LogicalMessage::Truncate(tr) = &out[14].message else {
        panic!()
    };
    assert_eq!(tr.relation_ids, vec![items.id, logs.id]);
    assert_eq!(out[14].relations.len(), 2);
    assert!(!tr.cascade && !tr.restart_identity);

    let LogicalMessage::Origin(o) = &out[16].message else {
        panic!()
    };
    assert_eq!((o.name.as_str(), o.commit_lsn), ("blue", Lsn(0xABCDEF)));
}

#[test]
fn every_truncation_of_a_captured_message_is_an_error() {
    let mut d = Decoder::new();
    for hex in CAPTURE {
        let full = bytes(hex);
        for cut in 0..full.len() {
            assert!(
                wire::pgoutput::decode(&full.slice(..cut)).is_err(),
                "{hex} cut at {cut} decoded"
            );
        }
        d.decode(&full).unwrap();
    }
}
