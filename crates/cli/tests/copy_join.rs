//! `bluegreen copy --join`: workers in other processes share a running copy's chunks and
//! post-data items through the state schema; a worker killed mid-chunk loses only that chunk.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{bluegreen, code, stderr, stdout};
use testkit::Cluster;

const DB: &str = "factory_telemetry";

fn copy_args<'a>(source: &'a str, target: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["copy", "--source", source, "--target", target];
    v.extend_from_slice(extra);
    v
}

/// A background `bluegreen` whose output is kept (killed when the test fails).
struct Proc(Option<Child>);

impl Proc {
    fn spawn(args: &[&str]) -> Proc {
        Proc(Some(
            Command::new(env!("CARGO_BIN_EXE_bluegreen"))
                .args(args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        ))
    }

    fn pid(&self) -> u32 {
        self.0.as_ref().map_or(0, |c| c.id())
    }

    fn kill(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill(); // SIGKILL
        }
    }

    fn finish(mut self) -> std::process::Output {
        self.0.take().unwrap().wait_with_output().unwrap()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The fixture at `scale`, with its table without a key made replicable (else plan blocks).
fn pair(scale: f64) -> (Cluster, Cluster) {
    let (source, target) = common::publishable_pair_at(scale);
    (source, target)
}

fn query(target: &Cluster, sql: &str) -> String {
    target.psql(DB, sql).unwrap_or_default().trim().to_string()
}

/// Waits (60 s at most) until `sql` on the target returns `t`.
fn wait_for(target: &Cluster, sql: &str, what: &str) {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(60) {
        if query(target, sql) == "t" {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("timed out waiting for {what}");
}

const IN_DATA: &str = "SELECT phase = 'data' AND copy_snapshot IS NOT NULL FROM bluegreen.runs";

/// Chunks done per process (`copied_by`), as `name=count` lines.
fn shares(target: &Cluster) -> Vec<(String, i64)> {
    query(
        target,
        "SELECT copied_by || '=' || count(*) FROM bluegreen.chunks
          WHERE state = 'done' GROUP BY copied_by ORDER BY 1",
    )
    .lines()
    .filter_map(|l| {
        let (by, n) = l.rsplit_once('=')?;
        Some((by.to_string(), n.parse().ok()?))
    })
    .collect()
}

/// Copied by the process with this pid (names are `host:pid`).
fn share_of(shares: &[(String, i64)], pid: u32) -> i64 {
    shares
        .iter()
        .filter(|(by, _)| by.ends_with(&format!(":{pid}")))
        .map(|(_, n)| n)
        .sum()
}

/// The run is copied, every chunk once, and the target holds what the source holds: each
/// table compared row by row here, and `bluegreen verify` finds them equal.
fn assert_exact(source: &Cluster, target: &Cluster) {
    assert_eq!(query(target, "SELECT phase FROM bluegreen.runs"), "copied");
    assert_eq!(
        query(
            target,
            "SELECT count(*) FILTER (WHERE state <> 'done' OR copied_by IS NULL) FROM bluegreen.chunks"
        ),
        "0"
    );
    assert_eq!(
        query(
            target,
            "SELECT count(*) FILTER (WHERE state <> 'done') FROM bluegreen.post_data"
        ),
        "0"
    );
    // Each table analyzed once, by whichever process claimed its item.
    assert_eq!(
        query(
            target,
            "SELECT (SELECT count(*) FROM bluegreen.post_data
                      WHERE kind = 'ANALYZE' AND state = 'done')
                  = (SELECT count(*) FROM pg_tables WHERE schemaname = 'factory_telemetry')"
        ),
        "t"
    );
    assert_eq!(
        query(
            target,
            "SELECT coalesce(string_agg(relname, ' '), '') FROM pg_stat_user_tables
              WHERE schemaname = 'factory_telemetry' AND last_analyze IS NULL
                AND relname IN (SELECT tablename FROM pg_tables
                                 WHERE schemaname = 'factory_telemetry')"
        ),
        ""
    );
    for table in fixtures::TABLES {
        let sql = format!("SELECT t::text FROM {table} t ORDER BY 1");
        let (s, t) = (source.sql(DB, &sql), target.sql(DB, &sql));
        assert!(!s.is_empty(), "{table} is empty on the source");
        assert!(s == t, "{table} differs: {} vs {} bytes", s.len(), t.len());
    }
    let indexes = "SELECT string_agg(indexdef, E'\\n' ORDER BY indexdef) FROM pg_indexes
                    WHERE schemaname = 'factory_telemetry'";
    assert_eq!(source.sql(DB, indexes), target.sql(DB, indexes));
    let (s, t) = (source.url(DB), target.url(DB));
    let o = bluegreen(&["verify", "--source", &s, "--target", &t]);
    assert_eq!(code(&o), 0, "verify: {}{}", stdout(&o), stderr(&o));
}

#[test]
fn join_without_a_running_copy_exits_2_and_names_the_fix() {
    let (source, target) = pair(0.002);
    let (s, t) = (source.url(DB), target.url(DB));
    // Nothing on the target at all.
    let o = bluegreen(&copy_args(&s, &t, &["--join"]));
    assert_eq!(code(&o), 2, "{}{}", stdout(&o), stderr(&o));
    assert!(
        stderr(&o).contains("no copy of run main is running"),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("without --join"), "{}", stderr(&o));
    // A run that is copied already: nothing to do, and it says so.
    let o = bluegreen(&copy_args(&s, &t, &[]));
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let o = bluegreen(&copy_args(&s, &t, &["--join"]));
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains("already copied"), "{}", stdout(&o));
    // Another run of the same target has no copy running.
    let o = bluegreen(&copy_args(&s, &t, &["--join", "--run", "other"]));
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("no copy of run other is running"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn two_joined_workers_each_copy_a_share_and_the_copy_is_exact() {
    let (source, target) = pair(0.3);
    let (s, t) = (source.url(DB), target.url(DB));
    let leader = Proc::spawn(&copy_args(&s, &t, &["--jobs", "1", "--chunk-mb", "1"]));
    wait_for(&target, IN_DATA, "the leader's data phase");
    // A second leader is refused while the first runs.
    let o = bluegreen(&copy_args(&s, &t, &[]));
    assert_eq!(code(&o), 2, "{}{}", stdout(&o), stderr(&o));
    assert!(stderr(&o).contains("--join"), "{}", stderr(&o));
    let holder = query(
        &target,
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted
            AND classid = (hashtext('bluegreen.copy')::bigint & 4294967295)::oid",
    );
    assert!(
        stderr(&o).contains(&format!("pg_terminate_backend({holder})")),
        "{holder}: {}",
        stderr(&o)
    );
    let workers: Vec<Proc> = (0..2)
        .map(|_| Proc::spawn(&copy_args(&s, &t, &["--join", "--jobs", "1"])))
        .collect();
    let pids: Vec<u32> = std::iter::once(leader.pid())
        .chain(workers.iter().map(Proc::pid))
        .collect();
    for w in workers {
        let o = w.finish();
        assert_eq!(code(&o), 0, "worker: {}{}", stdout(&o), stderr(&o));
        assert!(
            stdout(&o).contains("joined in the data phase"),
            "{}",
            stdout(&o)
        );
    }
    let o = leader.finish();
    assert_eq!(code(&o), 0, "leader: {}{}", stdout(&o), stderr(&o));
    let shares = shares(&target);
    eprintln!("chunks per process: {shares:?}");
    for pid in &pids {
        assert!(
            share_of(&shares, *pid) > 0,
            "process {pid} copied no chunk: {shares:?}"
        );
    }
    assert_eq!(shares.len(), 3, "{shares:?}");
    eprintln!(
        "items per process: {}",
        query(
            &target,
            "SELECT string_agg(b || '=' || n, ' ') FROM (SELECT built_by b, count(*) n
               FROM bluegreen.post_data GROUP BY 1) x"
        )
    );
    assert_exact(&source, &target);
}

#[test]
fn a_worker_killed_mid_chunk_loses_only_that_chunk() {
    let (source, target) = pair(0.3);
    let (s, t) = (source.url(DB), target.url(DB));
    let leader = Proc::spawn(&copy_args(&s, &t, &["--jobs", "1", "--chunk-mb", "1"]));
    wait_for(&target, IN_DATA, "the leader's data phase");
    let mut worker = Proc::spawn(&copy_args(&s, &t, &["--join", "--jobs", "1"]));
    let pid = worker.pid();
    // The worker has committed a chunk, and both processes are streaming one into the
    // target (the leader has one job): the worker is mid-chunk.
    wait_for(
        &target,
        &format!(
            "SELECT (SELECT count(*) FROM bluegreen.chunks WHERE copied_by LIKE '%:{pid}') > 0
                AND (SELECT count(*) FROM pg_stat_activity
                      WHERE state = 'active' AND query LIKE 'COPY %FROM STDIN%') = 2"
        ),
        "the worker mid-chunk",
    );
    worker.kill();
    let o = worker.finish();
    assert_ne!(code(&o), 0);
    let kept = share_of(&shares(&target), pid);
    let o = leader.finish();
    assert_eq!(code(&o), 0, "leader: {}{}", stdout(&o), stderr(&o));
    // What the worker committed stays; the chunk it was copying was rolled back with its
    // session and copied again by the leader, once (the contents are exact).
    let shares = shares(&target);
    eprintln!("killed worker kept {kept} chunk(s); chunks per process: {shares:?}");
    assert!(kept > 0);
    assert_eq!(share_of(&shares, pid), kept, "{shares:?}");
    assert_eq!(
        query(
            &target,
            "SELECT count(DISTINCT snapshot_lsn) FROM bluegreen.chunks"
        ),
        "1",
        "every chunk at the leader's one snapshot"
    );
    assert_exact(&source, &target);
}

#[test]
fn a_worker_whose_leader_died_commits_nothing_at_the_old_snapshot_once_a_new_leader_runs() {
    let (source, target) = pair(0.3);
    let (s, t) = (source.url(DB), target.url(DB));
    let leader_args = copy_args(&s, &t, &["--jobs", "1", "--chunk-mb", "1"]);
    let mut leader = Proc::spawn(&leader_args);
    wait_for(&target, IN_DATA, "the leader's data phase");
    let worker = Proc::spawn(&copy_args(&s, &t, &["--join", "--jobs", "1"]));
    let pid = worker.pid();
    wait_for(
        &target,
        &format!("SELECT count(*) > 0 FROM bluegreen.chunks WHERE copied_by LIKE '%:{pid}'"),
        "a chunk from the worker",
    );
    leader.kill();
    let o = leader.finish();
    assert_ne!(code(&o), 0);
    // The worker goes on at the snapshot it imported until a new leader replaces it.
    let o = bluegreen(&leader_args);
    assert_eq!(code(&o), 0, "new leader: {}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("(resumed)"), "{}", stdout(&o));
    let w = worker.finish();
    eprintln!("worker: exit {}: {}{}", code(&w), stdout(&w), stderr(&w));
    match code(&w) {
        // It ran out of chunks first and waited for the new leader to end the data phase.
        0 => {}
        2 => assert!(
            stderr(&w).contains("that this worker joined stopped"),
            "{}",
            stderr(&w)
        ),
        other => panic!("worker exit {other}"),
    }
    // Tables the old leader's snapshot finished keep it; the rest were read at the new one:
    // never two in a table.
    assert_eq!(
        query(
            &target,
            "SELECT count(*) FROM (SELECT table_name FROM bluegreen.chunks
                GROUP BY 1 HAVING count(DISTINCT snapshot_lsn) <> 1) x"
        ),
        "0"
    );
    assert_exact(&source, &target);
}

/// A session that holds a chunk's claim the way a worker does mid-chunk (its row locked in
/// an open transaction), then dies: the leader neither ends the data phase while the chunk is
/// held nor skips it, and copies it once the claim is gone.
#[test]
fn a_chunk_held_elsewhere_keeps_the_data_phase_open_and_is_copied_once_released() {
    let (source, target) = pair(0.1);
    let (s, t) = (source.url(DB), target.url(DB));
    let leader = Proc::spawn(&copy_args(&s, &t, &["--jobs", "2", "--chunk-mb", "1"]));
    wait_for(&target, IN_DATA, "the leader's data phase");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (client, conn) = rt
        .block_on(tokio_postgres::connect(&t, tokio_postgres::NoTls))
        .unwrap();
    rt.spawn(conn);
    // The last chunk of the largest table: claimed last, so the leader is still copying.
    let held: i32 = rt
        .block_on(async {
            client.batch_execute("BEGIN").await?;
            client
                .query_one(
                    "SELECT chunk FROM bluegreen.chunks
                      WHERE table_name = 'metric_hist' AND state = 'pending'
                      ORDER BY chunk DESC LIMIT 1 FOR UPDATE",
                    &[],
                )
                .await
        })
        .unwrap()
        .get(0);
    wait_for(
        &target,
        "SELECT count(*) FILTER (WHERE state = 'pending') = 1 FROM bluegreen.chunks",
        "every other chunk",
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(query(&target, "SELECT phase FROM bluegreen.runs"), "data");
    // The holder dies: its transaction ends, the claim with it.
    rt.block_on(async {
        drop(client);
        tokio::time::sleep(Duration::from_millis(200)).await;
    });
    let o = leader.finish();
    assert_eq!(code(&o), 0, "leader: {}{}", stdout(&o), stderr(&o));
    assert_eq!(
        query(
            &target,
            &format!(
                "SELECT state || ' ' || (copied_by IS NOT NULL) FROM bluegreen.chunks
                  WHERE table_name = 'metric_hist' AND chunk = {held}"
            )
        ),
        "done true"
    );
    assert_exact(&source, &target);
}

/// A post-data item whose table lock is held elsewhere (another process's index build, here
/// an operator's session) sits out and is asked again, while the job builds what else may
/// start: waiting on the server would hold the job idle. One job, so a wait would stop all.
#[test]
fn an_item_whose_lock_another_session_holds_sits_out_while_the_job_builds_the_rest() {
    let (source, target) = pair(0.02);
    common::create_fixture_schema(&target);
    let (s, t) = (source.url(DB), target.url(DB));
    // ANALYZE takes SHARE UPDATE EXCLUSIVE; the copy's inserts (ROW EXCLUSIVE) pass.
    let mut holder = target.psql_command(DB);
    holder.stdin(Stdio::piped()).stdout(Stdio::null());
    let mut holder = holder.spawn().unwrap();
    let mut script = holder.stdin.take().unwrap();
    use std::io::Write;
    script
        .write_all(
            b"BEGIN;\nLOCK TABLE factory_telemetry.metric_hist IN SHARE UPDATE EXCLUSIVE MODE;\n",
        )
        .unwrap();
    wait_for(
        &target,
        "SELECT EXISTS (SELECT FROM pg_locks WHERE granted AND mode = 'ShareUpdateExclusiveLock'
                          AND relation = 'factory_telemetry.metric_hist'::regclass)",
        "the operator's lock",
    );
    let holder_pid = query(
        &target,
        "SELECT pid FROM pg_locks WHERE granted AND mode = 'ShareUpdateExclusiveLock'
            AND relation = 'factory_telemetry.metric_hist'::regclass",
    );
    let copy = Proc::spawn(&copy_args(
        &s,
        &t,
        &["--jobs", "1", "--target-schema", "existing"],
    ));
    wait_for(
        &target,
        r#"SELECT count(*) FILTER (WHERE state <> 'done') = 1
                AND bool_or(state <> 'done' AND name = '"factory_telemetry"."metric_hist"')
             FROM bluegreen.post_data WHERE kind = 'ANALYZE'"#,
        "every other table's ANALYZE while metric_hist's is held",
    );
    // Held past the warning's 10 s (metric_hist's ANALYZE, first by size, is refused from
    // before the others ran): the log names the item and the holder's session.
    std::thread::sleep(Duration::from_secs(12));
    script.write_all(b"COMMIT;\n").unwrap();
    drop(script);
    assert!(holder.wait().unwrap().success());
    let o = copy.finish();
    assert_eq!(code(&o), 0, "{}{}", stdout(&o), stderr(&o));
    let warned = stderr(&o)
        .lines()
        .filter(|l| l.contains("refused for over 10 s"))
        .map(String::from)
        .collect::<Vec<_>>();
    assert!(
        !warned.is_empty()
            && warned.iter().all(
                |l| l.contains(r#"ANALYZE "factory_telemetry"."metric_hist""#)
                    && l.contains(&format!("pid {holder_pid} ("))
                    && l.contains("idle in transaction")
            ),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        query(
            &target,
            "SELECT count(*) FILTER (WHERE state <> 'done') FROM bluegreen.post_data"
        ),
        "0"
    );
    let o = bluegreen(&["verify", "--source", &s, "--target", &t]);
    assert_eq!(code(&o), 0, "verify: {}{}", stdout(&o), stderr(&o));
}
