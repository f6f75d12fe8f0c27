//! `bluegreen peek` against a real source: JSON lines from the run's slot, which stays where
//! it was; a temporary slot; typed trouble for an unknown slot.

mod common;

use common::{bluegreen, code, stderr, stdout};
use testkit::Cluster;

fn source() -> Cluster {
    let pg = Cluster::new();
    pg.sql(
        "postgres",
        "CREATE TABLE items (id int PRIMARY KEY, name text);
         CREATE PUBLICATION bluegreen_main FOR TABLE items;",
    );
    pg.sql(
        "postgres",
        "SELECT pg_create_logical_replication_slot('bluegreen_main', 'pgoutput')",
    );
    pg
}

#[test]
fn peek_prints_the_runs_slot_without_moving_it() {
    let pg = source();
    pg.sql("postgres", "INSERT INTO items VALUES (1, 'one'), (2, NULL)");
    let slot =
        "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = 'bluegreen_main'";
    let before = pg.sql("postgres", slot);
    let url = pg.url("postgres");
    let out = bluegreen(&["peek", "--source", &url, "--limit", "5", "--seconds", "30"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let lines: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<&str> = lines.iter().map(|l| l["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["begin", "relation", "insert", "insert", "commit"]);
    assert_eq!(lines[2]["table"], "items");
    assert_eq!(lines[2]["new"]["name"], "one");
    assert!(lines[3]["new"]["name"].is_null());
    assert!(stderr(&out).contains("5 message(s)"), "{}", stderr(&out));
    assert!(!stderr(&out).contains(pg.password()));
    assert_eq!(pg.sql("postgres", slot), before, "peek moved the slot");
}

#[test]
fn temporary_peek_and_unknown_slot() {
    let pg = source();
    let url = pg.url("postgres");
    let out = bluegreen(&["peek", "--source", &url, "--temporary", "--seconds", "1"]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(stdout(&out), "");
    assert_eq!(
        pg.sql(
            "postgres",
            "SELECT count(*) FROM pg_replication_slots WHERE temporary"
        ),
        "0"
    );

    let out = bluegreen(&["peek", "--source", &url, "--slot", "nope", "--limit", "1"]);
    assert_eq!(code(&out), 2);
    let err = stderr(&out);
    assert!(err.contains("42704") && err.contains("nope"), "{err}");
    assert!(err.contains("hint:"), "{err}");
}
