//! Names that need quoting (quotes, dots, spaces, non-ASCII, upper case, reserved words) in
//! every kind of object, through plan, copy, sync, verify and cutover: the contents end equal
//! and every stage names them right.

mod common;

use std::process::Command;

use common::{bluegreen, code, stderr, stdout};
use testkit::{Cluster, Pgbouncer};

const DB: &str = "Fäbrik \"db\".x";
const SCHEMA: &str = "Wëird \"Schema\".x";

/// The schema: a table named like a keyword with a composite key of odd columns, an enum
/// and a domain with odd names, an identity column, a sequence, an index, a partitioned
/// table with an odd partition, a foreign key and a view.
const SETUP: &str = r#"
CREATE SCHEMA "Wëird ""Schema"".x";
SET search_path = "Wëird ""Schema"".x";
CREATE TYPE "Mood ""x""" AS ENUM ('ok', 'not ok', 'it''s');
CREATE DOMAIN "pösitive.int" AS int CHECK (VALUE > 0);
CREATE SEQUENCE "seq ""1"".x";
CREATE TABLE "select" (
    "from" int NOT NULL,
    "Ünïcode col" text NOT NULL,
    "a.b" "pösitive.int",
    "quote""d" "Mood ""x""",
    "order" bigint GENERATED ALWAYS AS IDENTITY,
    n bigint DEFAULT nextval('"seq ""1"".x"'),
    PRIMARY KEY ("from", "Ünïcode col")
);
CREATE INDEX "idx.""select""" ON "select" ("a.b");
CREATE TABLE "Child Table" (
    id int PRIMARY KEY,
    "from" int, "Ünïcode col" text,
    FOREIGN KEY ("from", "Ünïcode col") REFERENCES "select" ("from", "Ünïcode col")
);
CREATE TABLE "part""ed" (k int, "väl" text, PRIMARY KEY (k)) PARTITION BY RANGE (k);
CREATE TABLE "part""ed 1" PARTITION OF "part""ed" FOR VALUES FROM (0) TO (1000);
CREATE TABLE "part""ed.2" PARTITION OF "part""ed" FOR VALUES FROM (1000) TO (2000);
CREATE VIEW "the view" AS SELECT "from", "a.b" FROM "select";
INSERT INTO "select" ("from", "Ünïcode col", "a.b", "quote""d")
     SELECT g, 'zeile ' || g, g, (ARRAY['ok', 'not ok', 'it''s'])[1 + g % 3]::"Mood ""x"""
       FROM generate_series(1, 300) g;
INSERT INTO "Child Table" SELECT g, g, 'zeile ' || g FROM generate_series(1, 100) g;
INSERT INTO "part""ed" SELECT g, 'w' || g FROM generate_series(0, 1999, 7) g;
"#;

/// Changes after the copy, for sync to carry.
const CHANGES: &str = r#"
SET search_path = "Wëird ""Schema"".x";
INSERT INTO "select" ("from", "Ünïcode col", "a.b", "quote""d") VALUES (1000, 'neu "quoted"', 5, 'it''s');
UPDATE "select" SET "a.b" = "a.b" + 1, "quote""d" = 'not ok' WHERE "from" % 10 = 0;
DELETE FROM "Child Table" WHERE id % 3 = 0;
DELETE FROM "select" s WHERE "from" % 3 = 0 AND NOT EXISTS
    (SELECT 1 FROM "Child Table" c WHERE c."from" = s."from");
UPDATE "part""ed" SET k = k + 1000 WHERE k < 100;
SELECT nextval('"seq ""1"".x"') FROM generate_series(1, 5);
"#;

/// Ordered contents of every table of the schema, and the sequence's position.
fn contents(pg: &Cluster) -> Vec<String> {
    let tables = pg.sql(
        DB,
        "SELECT string_agg(format('%I.%I', schemaname, tablename), E'\\n' ORDER BY tablename)
           FROM pg_tables WHERE schemaname = 'Wëird \"Schema\".x'",
    );
    let mut out: Vec<String> = tables
        .lines()
        .map(|t| {
            pg.sql(
                DB,
                &format!(
                    "SELECT '{t}: ' || count(*) || ' ' || md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) FROM {t} x"
                ),
            )
        })
        .collect();
    out.push(pg.sql(
        DB,
        r#"SELECT last_value FROM "Wëird ""Schema"".x"."seq ""1"".x""#,
    ));
    out
}

#[test]
fn names_that_need_quoting_survive_every_stage() {
    let (blue, green) = (Cluster::new(), Cluster::new());
    for pg in [&blue, &green] {
        pg.create_database(DB);
    }
    let mut psql = blue.psql_command(DB);
    let out = psql.arg("-c").arg(SETUP).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let url = |pg: &Cluster| {
        format!(
            "host=127.0.0.1 port={} user=postgres password={} dbname='Fäbrik \"db\".x' sslmode=disable",
            pg.port(),
            pg.password()
        )
    };
    let (s, t) = (url(&blue), url(&green));
    let pooler = Pgbouncer::builder()
        .database("app", "127.0.0.1", blue.port(), DB)
        .user("postgres", blue.password())
        .start()
        .unwrap();
    let pooler_arg = format!(
        "admin={},db=app,file={}",
        pooler.admin_url(),
        pooler.databases_file().display()
    );
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report");
    let run = |until: &str| {
        bluegreen(&[
            "run",
            "--source",
            &s,
            "--target",
            &t,
            "--schema",
            SCHEMA,
            "--pooler",
            &pooler_arg,
            "--until",
            until,
            "--report-dir",
            report.to_str().unwrap(),
        ])
    };

    let o = bluegreen(&["plan", "--source", &s, "--target", &t, "--schema", SCHEMA]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains(r#""Wëird ""Schema"".x"."select""#),
        "{}",
        stdout(&o)
    );

    let o = run("copied");
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert_eq!(contents(&green), contents(&blue));

    let mut psql = blue.psql_command(DB);
    let out = psql.arg("-c").arg(CHANGES).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let o = run("cutover");
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("verify: EQUAL"), "{}", stdout(&o));
    assert_eq!(contents(&green), contents(&blue));
    let routed = std::fs::read_to_string(pooler.databases_file()).unwrap();
    assert!(
        routed.contains(&format!("port={}", green.port())),
        "{routed}"
    );

    // Clients through the pooler now write on green, under the same names.
    let out = Command::new(testkit::pg_bin("psql"))
        .args(["-X", "-A", "-t", "-c"])
        .arg(r#"INSERT INTO "Wëird ""Schema"".x"."select" ("from", "Ünïcode col") VALUES (5000, 'after') RETURNING inet_server_port()"#)
        .arg(pooler.url("app", "postgres", blue.password()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim().lines().next(),
        Some(green.port().to_string().as_str())
    );
}
