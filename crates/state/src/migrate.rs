//! Creates and upgrades the state schema. Each migration runs once, in order, under an
//! advisory lock so concurrent processes do not race.

use tokio_postgres::Client;

use crate::{q, Error};

pub const SCHEMA: &str = "bluegreen";

/// Migrations in order; index + 1 is the version each one brings the schema to.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE bluegreen.runs (
    run            text PRIMARY KEY,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    phase          text NOT NULL,
    source         text NOT NULL,
    slot_name      text NOT NULL,
    publication    text NOT NULL,
    consistent_lsn pg_lsn,
    schemas        text[] NOT NULL,
    post_data      text
);
CREATE TABLE bluegreen.chunks (
    run          text NOT NULL REFERENCES bluegreen.runs ON DELETE CASCADE,
    table_schema text NOT NULL,
    table_name   text NOT NULL,
    chunk        int  NOT NULL,
    kind         text NOT NULL CHECK (kind IN ('ctid', 'whole')),
    lower_bound  bigint,
    upper_bound  bigint,
    est_bytes    bigint NOT NULL,
    text_format  boolean NOT NULL DEFAULT false,
    state        text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'done')),
    snapshot_lsn pg_lsn,
    rows         bigint,
    bytes        bigint,
    seconds      double precision,
    done_at      timestamptz,
    PRIMARY KEY (run, table_schema, table_name, chunk)
);
CREATE TABLE bluegreen.post_data (
    run     text NOT NULL REFERENCES bluegreen.runs ON DELETE CASCADE,
    item    int  NOT NULL,
    stage   int  NOT NULL,
    kind    text NOT NULL,
    name    text NOT NULL,
    sql     text NOT NULL,
    state   text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'done')),
    seconds double precision,
    PRIMARY KEY (run, item)
);
CREATE TABLE bluegreen.audit (
    id      bigserial PRIMARY KEY,
    run     text NOT NULL,
    at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    step    text NOT NULL,
    seconds double precision,
    detail  jsonb
);
"#,
    r#"
CREATE TABLE bluegreen.apply (
    run            text PRIMARY KEY REFERENCES bluegreen.runs ON DELETE CASCADE,
    origin         text NOT NULL,
    pid            int,
    heartbeat      timestamptz,
    applied_lsn    pg_lsn,
    received_lsn   pg_lsn,
    source_lsn     pg_lsn,
    lag_bytes      bigint,
    lag_seconds    double precision,
    rows_per_second double precision,
    retained_bytes bigint,
    last_error     text,
    last_error_at  timestamptz,
    hold_lsn       pg_lsn,
    held_lsn       pg_lsn,
    stop_requested boolean NOT NULL DEFAULT false
);
"#,
    r#"
CREATE TABLE bluegreen.verify_runs (
    id                 bigserial PRIMARY KEY,
    run                text NOT NULL REFERENCES bluegreen.runs ON DELETE CASCADE,
    started_at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at        timestamptz,
    lsn                pg_lsn NOT NULL,
    mode               text NOT NULL CHECK (mode IN ('held', 'unheld')),
    target_applied_lsn pg_lsn,
    result             text NOT NULL DEFAULT 'running'
                           CHECK (result IN ('running', 'equal', 'differ', 'repaired', 'failed')),
    tables             int,
    chunks             int,
    mismatched_chunks  int,
    differences        bigint,
    source_rows        bigint,
    target_rows        bigint,
    repair_lsn         pg_lsn,
    seconds            double precision,
    detail             jsonb
);
CREATE INDEX verify_runs_run_idx ON bluegreen.verify_runs (run, id DESC);
CREATE TABLE bluegreen.verify_chunks (
    verify_id       bigint NOT NULL REFERENCES bluegreen.verify_runs ON DELETE CASCADE,
    pass            text NOT NULL CHECK (pass IN ('check', 'recheck')),
    table_schema    text NOT NULL,
    table_name      text NOT NULL,
    chunk           int NOT NULL,
    lower_bound     text[],
    upper_bound     text[],
    lsn             pg_lsn NOT NULL,
    source_checksum text NOT NULL,
    target_checksum text NOT NULL,
    source_rows     bigint NOT NULL,
    target_rows     bigint NOT NULL,
    equal           boolean NOT NULL,
    seconds         double precision,
    checked_at      timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (verify_id, pass, table_schema, table_name, chunk)
);
"#,
    // What the run's pre-data created on the target (abort --drop-data drops only these).
    r#"
CREATE TABLE bluegreen.created (
    run      text NOT NULL REFERENCES bluegreen.runs ON DELETE CASCADE,
    classid  oid  NOT NULL,
    objid    oid  NOT NULL,
    kind     text NOT NULL,
    identity text NOT NULL,
    PRIMARY KEY (run, classid, objid)
);
ALTER TABLE bluegreen.runs ADD COLUMN created_recorded boolean NOT NULL DEFAULT false;
"#,
    // UPDATEs/DELETEs the applier found no row for: green diverged (cutover needs a clean
    // verify started after diverged_at).
    r#"
ALTER TABLE bluegreen.apply
    ADD COLUMN diverged_rows bigint NOT NULL DEFAULT 0,
    ADD COLUMN diverged_at   timestamptz,
    ADD COLUMN diverged_lsn  pg_lsn;
"#,
    // What a cutover's fence revoked (given back exactly when it is lifted), and a flip under
    // way (finished or undone by whoever comes next if its process dies). No foreign key to
    // runs: both must outlive a run row until abort has put things right.
    r#"
CREATE TABLE bluegreen.fences (
    run          text NOT NULL,
    side         text NOT NULL CHECK (side IN ('blue', 'green')),
    database     text NOT NULL,
    revoked_from text[] NOT NULL,
    grant_option boolean[] NOT NULL,
    self_granted boolean NOT NULL,
    raised_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (run, side)
);
CREATE TABLE bluegreen.flips (
    run         text PRIMARY KEY,
    rollback    boolean NOT NULL,
    file_paths  text[] NOT NULL,
    file_texts  text[] NOT NULL,
    committed   boolean NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
"#,
    // Time slices of TimescaleDB hypertables as copy chunks.
    r#"
ALTER TABLE bluegreen.chunks DROP CONSTRAINT chunks_kind_check;
ALTER TABLE bluegreen.chunks ADD CONSTRAINT chunks_kind_check
    CHECK (kind IN ('ctid', 'whole', 'time'));
"#,
    // The report of a run or rehearsal (`report` crate's JSON), one per run and kind. No
    // foreign key to runs: a report outlives its run's row (until the schema goes).
    r#"
CREATE TABLE bluegreen.reports (
    run        text NOT NULL,
    kind       text NOT NULL,
    written_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    report     jsonb NOT NULL,
    PRIMARY KEY (run, kind)
);
"#,
    // Incremental verify (issue 18): what may have changed on green since the last clean
    // verify. Sync records the keys each group touched in the group's own transaction;
    // verify's statement-level trigger on green's tables records writes by anyone but the
    // applier (it runs with session_replication_role = replica, so the trigger skips it);
    // each verify records its tables' shapes and the chunks it carried forward.
    r#"
CREATE TABLE bluegreen.sync_touched (
    id     bigserial PRIMARY KEY,
    origin text NOT NULL,
    lsn    pg_lsn NOT NULL,
    tables jsonb NOT NULL
);
CREATE TABLE bluegreen.green_writes (
    id           bigserial PRIMARY KEY,
    table_schema text NOT NULL,
    table_name   text NOT NULL,
    op           text NOT NULL,
    at           timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE FUNCTION bluegreen.note_green_write() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $fn$
BEGIN
    INSERT INTO bluegreen.green_writes (table_schema, table_name, op)
    VALUES (TG_TABLE_SCHEMA, TG_TABLE_NAME, TG_OP);
    RETURN NULL;
END
$fn$;
GRANT INSERT ON bluegreen.green_writes TO PUBLIC;
GRANT USAGE ON SEQUENCE bluegreen.green_writes_id_seq TO PUBLIC;
CREATE TABLE bluegreen.verify_tables (
    verify_id    bigint NOT NULL REFERENCES bluegreen.verify_runs ON DELETE CASCADE,
    table_schema text NOT NULL,
    table_name   text NOT NULL,
    shape        text NOT NULL,
    chunks       int NOT NULL,
    checked      int NOT NULL,
    carried      int NOT NULL,
    carried_from bigint,
    PRIMARY KEY (verify_id, table_schema, table_name)
);
ALTER TABLE bluegreen.verify_chunks DROP CONSTRAINT verify_chunks_pass_check;
ALTER TABLE bluegreen.verify_chunks ADD CONSTRAINT verify_chunks_pass_check
    CHECK (pass IN ('check', 'recheck', 'carried'));
ALTER TABLE bluegreen.verify_chunks ADD COLUMN carried_from bigint;
"#,
    // Copy across processes (`copy --join`): the snapshot the leader's data phase reads at
    // (workers import it while the leader holds it; a new leader replaces it, so a worker of
    // the old one can no longer commit a chunk), and which process copied each chunk and
    // built each item.
    r#"
ALTER TABLE bluegreen.runs
    ADD COLUMN copy_snapshot     text,
    ADD COLUMN copy_snapshot_lsn pg_lsn;
ALTER TABLE bluegreen.chunks ADD COLUMN copied_by text;
ALTER TABLE bluegreen.post_data ADD COLUMN built_by text;
"#,
    // Sync's apply capacity (issue 16's window estimate): WAL applied by groups that
    // started behind, and their seconds.
    r#"
ALTER TABLE bluegreen.apply
    ADD COLUMN behind_bytes   bigint NOT NULL DEFAULT 0,
    ADD COLUMN behind_seconds float8 NOT NULL DEFAULT 0;
"#,
    // The audit log is append-only from bluegreen's side (issue 20): no statement of
    // bluegreen updates, deletes or truncates it, and this trigger refuses any that tries, so
    // a bug cannot rewrite history. An aborted run's entries stay; dropping the whole schema
    // (abort of the last run) still takes them. An operator who must remove entries disables
    // the triggers for that (ALTER TABLE bluegreen.audit DISABLE TRIGGER USER).
    // Self-contained: kept last when migrations are renumbered.
    r#"
CREATE FUNCTION bluegreen.audit_append_only() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog AS $fn$
BEGIN
    RAISE EXCEPTION 'bluegreen.audit is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'audit entries are never changed or removed; '
                     'DROP SCHEMA bluegreen CASCADE removes the whole state';
END
$fn$;
CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON bluegreen.audit
    FOR EACH ROW EXECUTE FUNCTION bluegreen.audit_append_only();
CREATE TRIGGER audit_append_only_truncate BEFORE TRUNCATE ON bluegreen.audit
    FOR EACH STATEMENT EXECUTE FUNCTION bluegreen.audit_append_only();
"#,
];

/// Version this build knows.
pub fn known_version() -> i32 {
    MIGRATIONS.len() as i32
}

/// True when the state schema exists on this database.
pub async fn exists(c: &Client) -> Result<bool, Error> {
    c.query_one(
        "SELECT to_regclass('bluegreen.schema_version') IS NOT NULL",
        &[],
    )
    .await
    .map(|r| r.get(0))
    .map_err(q("look up the state schema"))
}

/// Creates the schema or brings it to the version this build knows.
pub async fn migrate(c: &mut Client) -> Result<(), Error> {
    let tx = c.transaction().await.map_err(q("begin"))?;
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('bluegreen.migrate'))",
        &[],
    )
    .await
    .map_err(q("lock"))?;
    tx.batch_execute(
        "CREATE SCHEMA IF NOT EXISTS bluegreen;
         CREATE TABLE IF NOT EXISTS bluegreen.schema_version (version int NOT NULL);",
    )
    .await
    .map_err(q("create schema"))?;
    let found: Option<i32> = tx
        .query_one("SELECT max(version) FROM bluegreen.schema_version", &[])
        .await
        .map_err(q("read version"))?
        .get(0);
    let found = found.unwrap_or(0);
    if found > known_version() {
        return Err(Error::TooNew {
            found,
            known: known_version(),
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        tx.batch_execute(sql).await.map_err(q("migrate"))?;
        tx.execute(
            "INSERT INTO bluegreen.schema_version VALUES ($1)",
            &[&(i as i32 + 1)],
        )
        .await
        .map_err(q("record version"))?;
    }
    tx.commit().await.map_err(q("commit migration"))
}

/// Drops the whole state schema (when the last run is removed).
pub async fn drop_schema(c: &Client) -> Result<(), Error> {
    c.batch_execute("DROP SCHEMA IF EXISTS bluegreen CASCADE")
        .await
        .map_err(q("drop state schema"))
}
