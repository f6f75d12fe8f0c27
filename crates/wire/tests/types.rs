//! Column values through pgoutput and the decoder, compared with the source's own text form
//! (what a simple query returns), for the common types; unchanged TOAST values.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use testkit::Cluster;
use wire::pgoutput::Value;
use wire::{Event, LogicalMessage, Lsn, PgOutputOptions, SnapshotAction, StreamConfig};

const WAIT: Duration = Duration::from_secs(30);

const SCHEMA: &str = r#"
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE DOMAIN posint AS int CHECK (VALUE > 0);
CREATE TABLE typed (
    id int PRIMARY KEY,
    c_int2 int2, c_int4 int4, c_int8 int8, c_numeric numeric, c_float4 float4, c_float8 float8,
    c_text text, c_varchar varchar(20), c_char char(3), c_bool bool, c_bytea bytea, c_uuid uuid,
    c_json json, c_jsonb jsonb, c_timestamptz timestamptz, c_timestamp timestamp, c_date date,
    c_time time, c_interval interval, c_inet inet, c_cidr cidr, c_int_array int[],
    c_text_array text[], c_mood mood, c_mood_array mood[], c_posint posint, "Mixed Case" text
);
CREATE PUBLICATION pub FOR TABLE typed;
"#;

const ROWS: &str = r#"
INSERT INTO typed VALUES
 (1, 32767, -2147483648, 9223372036854775807, 123456789012345678901234567890.000000001,
  '-0', '-0', 'plain', 'vc', 'ab', true, '\x00ff10', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
  '{ "spaced" :  [1, 2] }', '{"b": [1, 2, {"c": null}], "a": "x"}', '2024-02-29 23:59:59.123456+05:30',
  '2024-02-29 23:59:59.5', '2024-02-29', '12:34:56.789', '1 year 2 mons 3 days 04:05:06.7',
  '192.168.0.1/24', '10.0.0.0/8', '{1,NULL,3}', '{"a b","c,d","e\"f",NULL,""}', 'happy',
  '{sad,happy}', 42, 'mixed'),
 (2, -1, 0, -1, 'NaN', 'NaN', 'NaN', E'multi\nline\ttab \\ backslash ''quote''', '', '   ', false,
  '\x', '00000000-0000-0000-0000-000000000000', 'null', '[]', 'infinity', '-infinity',
  '-infinity', '00:00', '-1 days +02:00:00', '::1', '2001:db8::/32', '{}', '{}', 'sad', '{}', 1,
  'ünïcødé ✓ 😀'),
 (3, 0, 1, 0, '-0.000', 'Infinity', '-Infinity', NULL, NULL, NULL, NULL, NULL, NULL, NULL,
  NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
 (4, 1, 2, 3, 1e-20, 3.4028235e38, 1.7976931348623157e308, repeat('x', 5000), 'v', 'c', true,
  decode(repeat('ab', 3000), 'hex'), gen_random_uuid(), '{"k": 1.50}', '{"k": 1.50}',
  '1970-01-01 00:00:00+00', '0001-01-01 00:00:00', '0044-03-15 BC', '24:00:00', '0', '0.0.0.0',
  '0.0.0.0/0', '{{1,2},{3,4}}', '{{"x"},{"y"}}', 'ok', '{ok,NULL}', 2147483647, NULL);
"#;

fn text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::Text(b) => Some(String::from_utf8(b.to_vec()).expect("UTF-8 text")),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_common_type_matches_the_source_text_form() {
    let pg = Cluster::new();
    pg.sql("postgres", SCHEMA);
    let mut c = common::connect(&pg, "postgres").await;
    c.create_slot("types", true, SnapshotAction::NoExport)
        .await
        .unwrap();
    let mut stream = c
        .start_replication(
            "types",
            Lsn::ZERO,
            &PgOutputOptions::new(["pub"]),
            StreamConfig::default(),
        )
        .await
        .unwrap();
    pg.sql("postgres", ROWS);
    let txn = common::next_txn(&mut stream, WAIT).await;

    // User-defined types are announced before the relation that uses them.
    let mood_oid: u32 = pg
        .sql("postgres", "SELECT 'mood'::regtype::oid")
        .parse()
        .unwrap();
    assert_eq!(
        stream
            .decoder()
            .cache()
            .type_info(mood_oid)
            .map(|t| t.name.as_str()),
        Some("mood")
    );

    let client = common::sql_client(&pg, "postgres").await;
    let mut expected: HashMap<String, Vec<Option<String>>> = HashMap::new();
    for msg in client
        .simple_query("SELECT * FROM typed ORDER BY id")
        .await
        .unwrap()
    {
        if let tokio_postgres::SimpleQueryMessage::Row(row) = msg {
            let vals: Vec<Option<String>> = (0..row.len())
                .map(|i| row.get(i).map(str::to_string))
                .collect();
            expected.insert(vals[0].clone().unwrap(), vals);
        }
    }

    let inserts: Vec<&Event> = txn
        .iter()
        .filter(|e| matches!(e.message, LogicalMessage::Insert(_)))
        .collect();
    assert_eq!(inserts.len(), 4);
    for ev in inserts {
        let LogicalMessage::Insert(ins) = &ev.message else {
            unreachable!()
        };
        let rel = ev.relation().unwrap();
        assert_eq!(rel.columns.len(), 28);
        assert_eq!(rel.columns[27].name, "Mixed Case");
        let got: Vec<Option<String>> = ins.new.iter().map(text).collect();
        let want = &expected[got[0].as_ref().unwrap()];
        for (i, col) in rel.columns.iter().enumerate() {
            assert_eq!(got[i], want[i], "row {:?} column {}", got[0], col.name);
        }
    }
    // Spot checks on the forms that trip up decoders.
    let row2 = &expected["2"];
    assert_eq!(row2[5].as_deref(), Some("NaN"));
    assert_eq!(expected["1"][5].as_deref(), Some("-0"));
    assert_eq!(expected["1"][6].as_deref(), Some("-0"));
    assert_eq!(expected["1"][11].as_deref(), Some("\\x00ff10"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unchanged_toast_column_arrives_as_u_and_binary_mode_sends_b() {
    let pg = Cluster::new();
    pg.sql(
        "postgres",
        "CREATE TABLE toasty (id int PRIMARY KEY, big text, small int);
         ALTER TABLE toasty ALTER COLUMN big SET STORAGE EXTERNAL;
         CREATE PUBLICATION pub FOR TABLE toasty;",
    );
    let mut c = common::connect(&pg, "postgres").await;
    c.create_slot("toast", true, SnapshotAction::NoExport)
        .await
        .unwrap();
    let mut options = PgOutputOptions::new(["pub"]);
    options.binary = true;
    let mut stream = c
        .start_replication("toast", Lsn::ZERO, &options, StreamConfig::default())
        .await
        .unwrap();
    // 1.5 MB, stored out of line without compression.
    pg.sql(
        "postgres",
        "INSERT INTO toasty SELECT 1, string_agg(md5(i::text), ''), 1 FROM generate_series(1, 48000) i",
    );
    pg.sql("postgres", "UPDATE toasty SET small = 2 WHERE id = 1");
    let size = pg.sql(
        "postgres",
        "SELECT pg_column_size(big) > 1000000 AND length(big) = 1536000 FROM toasty",
    );
    assert_eq!(size, "t", "value is stored out of line");

    let insert = common::next_txn(&mut stream, WAIT).await;
    let ins = insert
        .iter()
        .find_map(|e| match &e.message {
            LogicalMessage::Insert(i) => Some(i),
            _ => None,
        })
        .unwrap();
    // Binary mode: int4 is 4 big-endian bytes, text is its UTF-8 bytes.
    assert_eq!(
        ins.new[0],
        Value::Binary(1i32.to_be_bytes().to_vec().into())
    );
    let Value::Binary(big) = &ins.new[1] else {
        panic!("{:?}", &ins.new[1])
    };
    assert_eq!(big.len(), 1_536_000);
    let md5_1 = pg.sql("postgres", "SELECT md5('1')");
    assert!(big.starts_with(md5_1.as_bytes()));

    let update = common::next_txn(&mut stream, WAIT).await;
    let up = update
        .iter()
        .find_map(|e| match &e.message {
            LogicalMessage::Update(u) => Some(u),
            _ => None,
        })
        .unwrap();
    assert_eq!(up.old, None, "key unchanged, REPLICA IDENTITY DEFAULT");
    assert_eq!(up.new[1], Value::UnchangedToast);
    assert_eq!(up.new[2], Value::Binary(2i32.to_be_bytes().to_vec().into()));
}
