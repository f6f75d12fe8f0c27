//! Values that binary COPY would carry wrong and verify would call equal: reg* columns
//! (OIDs of other objects), columns whose types differ between the sides, generated columns
//! computed under other locales.

mod common;

use common::{bluegreen, code, stderr, stdout};
use testkit::Cluster;

const DB: &str = "exact";

fn pair() -> (Cluster, Cluster) {
    let (source, target) = (Cluster::new(), Cluster::new());
    source.create_database(DB);
    target.create_database(DB);
    (source, target)
}

fn copy(source: &Cluster, target: &Cluster, extra: &[&str]) -> std::process::Output {
    let (s, t) = (source.url(DB), target.url(DB));
    let mut args = vec!["copy", "--source", &s, "--target", &t];
    args.extend_from_slice(extra);
    bluegreen(&args)
}

fn verify(source: &Cluster, target: &Cluster) -> std::process::Output {
    let (s, t) = (source.url(DB), target.url(DB));
    bluegreen(&["verify", "--source", &s, "--target", &t])
}

#[test]
fn reg_columns_are_copied_and_compared_by_name() {
    let (source, target) = pair();
    // Objects get other OIDs on the target: burn some on the source first.
    source.sql(
        DB,
        "DO $$ BEGIN FOR i IN 1..30 LOOP
             EXECUTE format('CREATE TABLE burn%s (a int)', i);
             EXECUTE format('DROP TABLE burn%s', i);
         END LOOP; END $$;
         CREATE SCHEMA r;
         CREATE TABLE r.other (id int PRIMARY KEY);
         CREATE TYPE r.mood AS ENUM ('ok');
         CREATE FUNCTION r.f(a int) RETURNS int LANGUAGE sql AS 'SELECT a';
         CREATE DOMAIN r.typename AS regtype;
         CREATE DOMAIN r.typename2 AS r.typename;
         CREATE TABLE r.refs (id int PRIMARY KEY, rc regclass, rt regtype, rp regproc,
                              rpr regprocedure, rn regnamespace, rcs regclass[],
                              rd r.typename2, n int);
         INSERT INTO r.refs VALUES
             (1, 'r.other', 'r.mood', 'r.f', 'r.f(integer)', 'r',
              ARRAY['r.other', 'r.refs']::regclass[], 'r.mood', 7);",
    );
    let o = copy(&source, &target, &[]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let names = "SELECT row(rc, rt, rp, rpr, rn, rcs, rd, n)::text FROM r.refs";
    let on_source = source.sql(DB, names);
    assert!(on_source.contains("r.other"), "{on_source}");
    assert_eq!(target.sql(DB, names), on_source);
    // The OIDs themselves differ, and verify compares what they name.
    assert_ne!(
        target.sql(DB, "SELECT rc::oid FROM r.refs"),
        source.sql(DB, "SELECT rc::oid FROM r.refs")
    );
    let o = verify(&source, &target);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));

    // The source's OID on the target names nothing (or something else): a difference.
    let oid = source.sql(DB, "SELECT rc::oid FROM r.refs");
    target.sql(DB, &format!("UPDATE r.refs SET rc = {oid}::oid::regclass"));
    let o = verify(&source, &target);
    assert_eq!(code(&o), 1, "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("r.refs"), "{}", stdout(&o));
}

#[test]
fn existing_target_with_other_column_types_is_refused_and_never_verified_equal() {
    let (source, target) = pair();
    let blue = "CREATE SCHEMA e; CREATE TYPE e.mood AS ENUM ('ok');
                CREATE TABLE e.w (id int PRIMARY KEY, f int4, t timestamp, k int8, m e.mood);
                CREATE TABLE e.m (id int PRIMARY KEY, a int);";
    source.sql(DB, blue);
    source.sql(
        DB,
        "INSERT INTO e.w VALUES (1, 1, '2020-04-05 06:07:08', 1234, 'ok');
         INSERT INTO e.m VALUES (1, 2);",
    );
    // On the source e.mood prints as mood, on the target as e.mood: still the same type.
    source.sql(
        DB,
        &format!("ALTER DATABASE {DB} SET search_path = e, public"),
    );
    target.sql(
        DB,
        "CREATE SCHEMA e; CREATE TYPE e.mood AS ENUM ('ok');
         CREATE TABLE e.w (id int PRIMARY KEY, f real, t timestamptz, k timestamp, m e.mood);
         CREATE TABLE e.m (id int PRIMARY KEY, b int NOT NULL);",
    );
    let o = copy(&source, &target, &["--target-schema", "existing"]);
    assert_eq!(code(&o), 2, "{}{}", stdout(&o), stderr(&o));
    let err = stderr(&o);
    for line in [
        "e.w.f: integer on the source, real on the target",
        "e.w.t: timestamp without time zone on the source, timestamp with time zone on the target",
        "e.w.k: bigint on the source, timestamp without time zone on the target",
        "e.m.a: column (integer) is missing on the target",
        "e.m.b: NOT NULL without a default on the target",
        "ALTER TABLE",
    ] {
        assert!(err.contains(line), "{line} not in {err}");
    }
    assert!(!err.contains("e.w.m"), "{err}");
    assert_eq!(
        source.sql(DB, "SELECT count(*) FROM pg_replication_slots"),
        "0"
    );
    assert_eq!(target.sql(DB, "SELECT count(*) FROM e.w"), "0");

    // Matching types copy; then the target's types change under bytes that stay the same
    // (what a binary copy into other types leaves): verify must not call that equal.
    target.sql(DB, "DROP SCHEMA e CASCADE");
    target.sql(DB, blue);
    let o = copy(&source, &target, &["--target-schema", "existing"]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let o = verify(&source, &target);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert!(
        !stderr(&o).contains("column types differ"),
        "{}",
        stderr(&o)
    );
    let file = std::env::temp_dir().join(format!("bluegreen-ew-{}.bin", std::process::id()));
    let file = file.to_str().unwrap();
    source.sql(DB, &format!("COPY e.w TO '{file}' (FORMAT binary)"));
    target.sql(
        DB,
        &format!(
            "TRUNCATE e.w;
             ALTER TABLE e.w ALTER f TYPE real, ALTER t TYPE timestamptz,
                             ALTER k TYPE timestamp USING NULL;
             COPY e.w FROM '{file}' (FORMAT binary);"
        ),
    );
    let _ = std::fs::remove_file(file);
    assert_eq!(target.sql(DB, "SELECT f FROM e.w"), "1e-45");
    let o = verify(&source, &target);
    assert_eq!(code(&o), 1, "{}{}", stdout(&o), stderr(&o));
    for line in [
        r#"f: source "1"  target "1e-45""#,
        r#"t: source "2020-04-05 06:07:08"  target "2020-04-05 06:07:08+00""#,
        r#"k: source "1234"  target "2000-01-01 00:00:00.001234""#,
    ] {
        assert!(stdout(&o).contains(line), "{line} not in {}", stdout(&o));
    }

    // A compared column missing on the target: refused, naming it.
    target.sql(DB, "ALTER TABLE e.m DROP COLUMN a");
    let o = verify(&source, &target);
    assert_eq!(code(&o), 2, "{}{}", stdout(&o), stderr(&o));
    assert!(
        stderr(&o).contains("column e.m.a (integer) is missing on the target"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn other_locale_is_warned_and_generated_columns_are_compared() {
    let (source, target) = (Cluster::new(), Cluster::new());
    source.create_database(DB); // the cluster's C.UTF-8
    target.sql(
        "postgres",
        &format!("CREATE DATABASE {DB} LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"),
    );
    source.sql(
        DB,
        "CREATE SCHEMA g;
         CREATE TABLE g.t (id int PRIMARY KEY, a text,
                           b text GENERATED ALWAYS AS (lower(a)) STORED);
         CREATE INDEX t_lower ON g.t (lower(a));
         CREATE INDEX t_a ON g.t (a);
         CREATE INDEX t_id ON g.t (id);
         INSERT INTO g.t (id, a) VALUES (1, 'ÉCOLE'), (2, 'PLAIN');",
    );
    let (s, t) = (source.url(DB), target.url(DB));
    let o = bluegreen(&["plan", "--source", &s, "--target", &t]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    for part in [
        "locale-differs",
        "source LC_COLLATE C.UTF-8 LC_CTYPE C.UTF-8, target LC_COLLATE C LC_CTYPE C",
        "g.t.b",
        "g.t_lower",
        "g.t_a",
        "LC_CTYPE 'C.UTF-8' TEMPLATE template0",
    ] {
        assert!(out.contains(part), "{part} not in {out}");
    }
    assert!(!out.contains("g.t_id"), "{out}");

    let o = copy(&source, &target, &[]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert_eq!(source.sql(DB, "SELECT b FROM g.t WHERE id = 1"), "école");
    assert_eq!(target.sql(DB, "SELECT b FROM g.t WHERE id = 1"), "École");
    let o = verify(&source, &target);
    assert_eq!(code(&o), 1, "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains(r#"b: source "école"  target "École""#),
        "{}",
        stdout(&o)
    );
    // Repair writes the stored columns only (COPY cannot write b); the target computes b
    // again by its own locale, so the difference stays.
    let o = bluegreen(&["verify", "--source", &s, "--target", &t, "--repair"]);
    assert_eq!(code(&o), 1, "{}{}", stdout(&o), stderr(&o));
    assert_eq!(target.sql(DB, "SELECT b FROM g.t WHERE id = 1"), "École");
}

#[test]
fn source_database_output_settings_do_not_change_values() {
    let (source, target) = pair();
    source.sql(
        DB,
        "CREATE SCHEMA s;
         CREATE TABLE s.v (id int PRIMARY KEY, d date, bc date, i interval, f float8,
                           r regclass);
         INSERT INTO s.v VALUES (1, '2020-04-05', '0044-03-15 BC', '-1 days -02:00:00',
                                 0.1::float8 + 0.2::float8, 's.v');",
    );
    // New sessions, bluegreen's included, get these unless they set their own.
    source.sql(
        DB,
        &format!(
            "ALTER DATABASE {DB} SET datestyle = 'SQL, DMY';
             ALTER DATABASE {DB} SET intervalstyle = 'sql_standard';
             ALTER DATABASE {DB} SET extra_float_digits = 0;
             ALTER DATABASE {DB} SET bytea_output = 'escape';"
        ),
    );
    let rows = "SET datestyle = 'ISO, YMD'; SET intervalstyle = 'postgres';
                SET extra_float_digits = 3;
                SELECT string_agg(row(id, d, bc, i, f, r)::text, ' ' ORDER BY id) FROM s.v";
    let on_source = source.sql(DB, rows);
    assert_eq!(
        on_source,
        "(1,2020-04-05,\"0044-03-15 BC\",\"-1 days -02:00:00\",0.30000000000000004,s.v)"
    );
    let o = copy(&source, &target, &[]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert_eq!(target.sql(DB, rows), on_source);

    // Sync: the walsender prints values with the session's settings too.
    let dir = tempfile::tempdir().unwrap();
    let (s, t) = (source.url(DB), target.url(DB));
    let mut sync = common::spawn_bluegreen(
        &["sync", "--source", &s, "--target", &t],
        &dir.path().join("sync.log"),
    );
    source.sql(
        DB,
        "INSERT INTO s.v VALUES (2, make_date(2021, 6, 7), make_date(-10, 1, 2),
                                 make_interval(days => -3, hours => -4),
                                 0.1::float8 + 0.2::float8, 's.v');",
    );
    let on_source = source.sql(DB, rows);
    let started = std::time::Instant::now();
    while target.sql(DB, "SELECT count(*) FROM s.v") != "2" {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "row 2 not applied: {}",
            std::fs::read_to_string(dir.path().join("sync.log")).unwrap_or_default()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(target.sql(DB, rows), on_source);
    unsafe { libc::kill(sync.id() as i32, libc::SIGTERM) };
    assert!(sync.wait().unwrap().success());
    let o = verify(&source, &target);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
}

#[test]
fn nans_of_either_sign_are_equal() {
    let (source, target) = pair();
    source.sql(
        DB,
        "CREATE SCHEMA n;
         CREATE TABLE n.f (id int PRIMARY KEY, x float8, y real);
         INSERT INTO n.f VALUES (1, 'Infinity'::float8 - 'Infinity'::float8,
                                 'Infinity'::real - 'Infinity'::real);",
    );
    // The sign bit is set: not the NaN 'NaN' reads as.
    assert_eq!(
        source.sql(DB, "SELECT float8send(x) = float8send('NaN') FROM n.f"),
        "f"
    );
    let o = copy(&source, &target, &[]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let dir = tempfile::tempdir().unwrap();
    let (s, t) = (source.url(DB), target.url(DB));
    let mut sync = common::spawn_bluegreen(
        &["sync", "--source", &s, "--target", &t],
        &dir.path().join("sync.log"),
    );
    source.sql(
        DB,
        "INSERT INTO n.f VALUES (2, 'Infinity'::float8 - 'Infinity'::float8,
                                 'Infinity'::real - 'Infinity'::real);",
    );
    let started = std::time::Instant::now();
    while target.sql(DB, "SELECT count(*) FROM n.f") != "2" {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "row 2 not applied: {}",
            std::fs::read_to_string(dir.path().join("sync.log")).unwrap_or_default()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    unsafe { libc::kill(sync.id() as i32, libc::SIGTERM) };
    assert!(sync.wait().unwrap().success());
    // Through sync's text the NaN lost its sign bit; verify holds them equal, as PostgreSQL.
    assert_eq!(
        target.sql(
            DB,
            "SELECT float8send(x) = float8send('NaN') FROM n.f WHERE id = 2"
        ),
        "t"
    );
    let o = verify(&source, &target);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    // A NaN against a number is still a difference.
    target.sql(DB, "UPDATE n.f SET x = 0 WHERE id = 2");
    let o = verify(&source, &target);
    assert_eq!(code(&o), 1, "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains(r#"x: source "NaN"  target "0""#),
        "{}",
        stdout(&o)
    );
}

#[test]
fn operator_created_fixture_schema_copies_exactly() {
    let (source, target) = common::fixture_pair_at(0.002);
    let db = "factory_telemetry";
    source.sql(
        db,
        &format!(
            "ALTER TABLE {} REPLICA IDENTITY FULL",
            fixtures::NO_PK_TABLE
        ),
    );
    common::create_fixture_schema(&target);
    // The operator's triggers and foreign keys exist while the data loads: neither may
    // change or refuse the source's rows (a trigger counting downloads would count twice,
    // a foreign key see children before their parents).
    let (s, t) = (source.url(db), target.url(db));
    let o = bluegreen(&[
        "copy",
        "--source",
        &s,
        "--target",
        &t,
        "--target-schema",
        "existing",
    ]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let o = bluegreen(&["verify", "--source", &s, "--target", &t]);
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    assert!(
        !stderr(&o).contains("column types differ"),
        "{}",
        stderr(&o)
    );
}
