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
