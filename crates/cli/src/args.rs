//! Command-line flags. Every flag can also be set in the `--config` TOML file; flags win.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::units;

const EXIT_CODES: &str = "\
Exit codes (as diff(1), for every command):
  0  clean: nothing blocks, nothing differs
  1  findings: blockers or differences were found (listed in the output)
  2  trouble: bad flags or config, unreachable server, failed login, missing database, …

Connection strings are libpq URIs (postgresql://user@host:5432/db?sslmode=require) or
key=value strings (host=… port=… dbname=…), or BLUEGREEN_SOURCE / BLUEGREEN_TARGET. A
service (service=, PGSERVICE, PGSERVICEFILE, PGSYSCONFDIR), then PGHOST, PGHOSTADDR, PGPORT,
PGUSER, PGPASSWORD, PGDATABASE, PGSSLMODE, PGSSLROOTCERT, PGSSLCERT, PGSSLKEY, PGAPPNAME,
PGCONNECT_TIMEOUT, PGOPTIONS, PGPASSFILE and ~/.pgpass fill what a string leaves out. Prefer PGPASSWORD or
~/.pgpass to a password on the command line; bluegreen blanks passwords out of its process
title, but other tools may read the command line before it does.";

#[derive(Debug, Parser)]
#[command(
    name = "bluegreen",
    version,
    about = "Migrate a live PostgreSQL (+TimescaleDB) database to another server with zero data loss, prove it equal, and flip PgBouncer",
    after_help = EXIT_CODES
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Global {
    /// Source ("blue") connection: libpq URI or key=value string [env: BLUEGREEN_SOURCE].
    #[arg(
        long,
        global = true,
        value_name = "CONN",
        env = "BLUEGREEN_SOURCE",
        hide_env = true
    )]
    pub source: Option<String>,

    /// Target ("green") connection: libpq URI or key=value string [env: BLUEGREEN_TARGET].
    #[arg(
        long,
        global = true,
        value_name = "CONN",
        env = "BLUEGREEN_TARGET",
        hide_env = true
    )]
    pub target: Option<String>,

    /// TOML file holding any of these settings (flags beat the file).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Log format on stderr.
    #[arg(long, global = true, value_enum, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Readable lines (the default).
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Read both servers and print what the migration will do and what blocks it.
    ///
    /// Lists versions, replication settings and rights on the source, create rights and
    /// emptiness of the target, every table with size, rows and key, sequences, extensions,
    /// TimescaleDB hypertables, and each blocker with the statement that fixes it.
    /// Exit 0: nothing blocks. Exit 1: blockers (listed). Exit 2: trouble.
    #[command(after_help = EXIT_CODES)]
    Plan(PlanArgs),

    /// Copy schema, data and sequences from one consistent snapshot; resumable.
    ///
    /// Creates the run's publication and logical slot on the source; the slot's exported
    /// snapshot is the one instant for schema (pg_dump pre-data), all table data (parallel
    /// chunks, binary COPY piped without decoding) and sequences; indexes and constraints
    /// are built afterwards, in parallel. Every chunk commits on the target together with
    /// its record in the `bluegreen` schema: after a crash, run the same command again and
    /// it skips what is done. Refuses to start while `plan` finds blockers.
    /// Exit 0: copied. Exit 1: blockers (nothing touched). Exit 2: trouble.
    #[command(after_help = EXIT_CODES)]
    Copy(CopyArgs),

    /// Stream the source's changes into the target, exactly once, until stopped.
    ///
    /// Starts where the copy's snapshot ends (or where the target's replication origin says
    /// a previous sync stopped) and applies in source commit order, grouping many small
    /// source transactions into one target transaction. Runs until SIGINT/SIGTERM (finishes
    /// the transaction at hand, commits, reports) or a stop requested through the state
    /// schema. Lost connections are retried with backoff; a source schema change the target
    /// lacks pauses apply until the DDL named in `status` is run on the target.
    /// Exit 0: stopped cleanly. Exit 2: trouble.
    #[command(after_help = EXIT_CODES)]
    Sync(SyncArgs),

    /// Show a run: copy progress, applied LSN, lag, apply rate, WAL retained on the source, last error.
    ///
    /// Exit 0: sync running, no error, lag under --max-lag. Exit 1: not so (said why), so
    /// status serves as a probe. Exit 2: trouble (no such run, target unreachable).
    #[command(after_help = EXIT_CODES)]
    Status(StatusArgs),

    /// Prove the target equal to the source at one LSN, while the source takes writes.
    ///
    /// Takes a source snapshot at a known LSN (temporary logical slot). With `sync` running,
    /// the applier is held at that LSN while the target's snapshot is taken, so both sides
    /// show the same instant and any difference is real; without it the target is read as
    /// it is and the report says how far it has applied. Every table is cut into key-range
    /// chunks (tables without a primary key are one chunk, compared as a multiset); each
    /// row's COPY bytes are hashed (xxh3-128) and summed per chunk on both sides at once.
    /// Mismatched chunks are narrowed down to rows: each key with the columns that differ and
    /// both values, and rows only on one side. --repair re-copies the mismatched ranges from
    /// a fresh source snapshot (applier held, triggers and foreign keys off) and verifies
    /// them again. Results are recorded in the target's `bluegreen` schema.
    /// Exit 0: equal. Exit 1: differences (listed; also after a successful repair — verify
    /// again for a clean result). Exit 2: trouble.
    #[command(after_help = EXIT_CODES)]
    Verify(VerifyArgs),

    /// Move client traffic from blue to green through PgBouncer, with a short pause.
    ///
    /// Guardrails (sync running and current, a recent clean verify, no long transaction on
    /// blue, every pooler reachable) → reverse slot and publication on green (rollback armed
    /// before green takes a write) → sequences pre-synced → PAUSE on every pooler → blue
    /// fenced (read-only for new sessions; other sessions listed, ended with
    /// --terminate-other-sessions) → sync holds exactly at blue's current LSN → final
    /// sequence sync → each pooler's databases file rewritten to green, RELOAD, checked →
    /// RESUME → forward sync stops. A failure before RESUME puts everything back: clients
    /// stay on blue, sync keeps running, nothing is lost.
    /// Exit 0: cut over. Exit 2: trouble (including a refused guardrail or a step that failed
    /// and was undone).
    #[command(after_help = EXIT_CODES)]
    Cutover(FlipArgs),

    /// Move client traffic back from green to blue (after cutover, with `sync --reverse` running).
    ///
    /// The same guarded dance the other way: reverse sync current → PAUSE → green fenced →
    /// reverse sync holds at green's current LSN → sequences → blue writable again → files
    /// rewritten to blue, RELOAD → RESUME → reverse sync stops. Exit codes as cutover.
    #[command(after_help = EXIT_CODES)]
    Rollback(FlipArgs),

    /// Remove everything a run created: slot and publication on the source, state on the target.
    ///
    /// Ends any session streaming from the run's slot first. Tables already copied stay
    /// on the target unless --drop-data. Safe to run twice; give --source, --target or both.
    #[command(after_help = EXIT_CODES)]
    Abort(AbortArgs),

    /// Print the changes waiting in the source's replication slot as JSON lines.
    ///
    /// One object per pgoutput message (kind, lsn, xid, schema, table, column values as
    /// text, null or "unchanged-toast"; a key-only old row holds just the key columns).
    /// Looks without consuming: the slot's confirmed
    /// position does not move. --temporary watches changes committed from now on through a
    /// temporary slot instead. Stops after --limit messages, --seconds, or Ctrl-C.
    /// Exit 0: done. Exit 2: trouble (unknown slot or publication, slot in use, …).
    #[command(after_help = EXIT_CODES)]
    Peek(PeekArgs),

    /// Render a run's report again: report.html (and report.json) into a directory.
    ///
    /// With a target (--target, BLUEGREEN_TARGET or the config file) the report comes from
    /// the target's state schema, where `bluegreen run` keeps it; without one, from
    /// DIR/report.json. Writes DIR/report.json and DIR/report.html (one self-contained file:
    /// stage timeline, lag and apply-rate curves, per-table copy figures, verify verdicts,
    /// cutover steps and client pause, findings, the window estimate) and prints a summary.
    /// Exit 0: rendered. Exit 2: trouble (no report of that run, unreadable file, …).
    #[command(after_help = EXIT_CODES)]
    Report(ReportArgs),

    /// The one-shot migration: plan, copy, sync until caught up, verify, cutover, reverse sync.
    ///
    /// Chains the stages in one process: copy (resumed if a copy of the run stopped), sync as
    /// a task, caught up when its lag is under --max-lag, verify at one LSN with sync held,
    /// cutover with all its guardrails, then reverse sync, which runs until SIGINT/SIGTERM so
    /// `bluegreen rollback` from another shell stays possible. --until stops earlier. The
    /// first blocker or failure stops it (exit 1 or 2, naming the stage), traffic stays on
    /// blue, and running the same command again continues from the run's recorded phase.
    /// A report (report.json, report.html) is written after every stage.
    /// Exit 0: done (or stopped by a signal in reverse sync). Exit 1: blockers or
    /// differences. Exit 2: trouble.
    #[command(after_help = EXIT_CODES)]
    Run(RunArgs),

    /// Started by cutover and rollback (not by hand): puts a flip back if its coordinator dies
    /// between PAUSE and RESUME. Reads its orders from stdin.
    #[command(name = "cutover-watchdog", hide = true)]
    CutoverWatchdog,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Run the plan is for: its slot and publication (bluegreen_<run>) must not exist on
    /// the source unless the target's state knows the run.
    #[arg(long, default_value = "main", value_name = "NAME")]
    pub run: String,

    /// Print the plan as JSON (stable shape, see README) instead of text.
    #[arg(long)]
    pub json: bool,

    /// Schema to migrate (repeatable); default: every application schema of the source.
    #[arg(long = "schema", value_name = "NAME")]
    pub schemas: Vec<String>,

    /// Conversion profile (TOML): plain tables that become TimescaleDB hypertables on the
    /// target, and continuous aggregates to create there (see README).
    #[arg(long, value_name = "FILE")]
    pub profile: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CopyArgs {
    /// Run name: names the slot and publication (bluegreen_<run>) and the state rows.
    #[arg(long, default_value = "main", value_name = "NAME")]
    pub run: String,

    /// Parallel workers for data and for index builds (default: number of CPU cores).
    #[arg(long, value_name = "N")]
    pub jobs: Option<usize>,

    /// Target size of one data chunk, in MB of table heap (or with a unit: 256MB, 1GB).
    #[arg(long, default_value = "64", value_name = "MB", value_parser = units::megabytes)]
    pub chunk_mb: i64,

    /// Where the target schema comes from: `dump` (pg_dump at the run's snapshot; the
    /// target must not have the tables) or `existing` (already created on the target, e.g.
    /// with hypertables; every table must exist and be empty).
    #[arg(long, value_enum, default_value = "dump", value_name = "FROM")]
    pub target_schema: TargetSchemaArg,

    /// Do not carry object owners over (the target's connecting role owns everything).
    #[arg(long)]
    pub no_owner: bool,

    /// Do not carry GRANTs over.
    #[arg(long)]
    pub no_privileges: bool,

    /// Conversion profile (TOML): plain tables that become TimescaleDB hypertables on the
    /// target, with compression and retention policies (paused until cutover) and
    /// continuous aggregates (see README).
    #[arg(long, value_name = "FILE")]
    pub profile: Option<PathBuf>,

    /// Schema to migrate (repeatable); default: every application schema of the source.
    #[arg(long = "schema", value_name = "NAME")]
    pub schemas: Vec<String>,

    /// Be a worker of the copy of this run that is running (in another process or pod):
    /// claim its chunks and index/constraint builds through the state schema until none is
    /// left. Exit 2 when no copy of the run is running.
    #[arg(long)]
    pub join: bool,
    /// A server that answers nothing this long counts as gone: a probe over a connection of
    /// its own gets no answer, and the command ends with exit 2 (seconds, or with a unit).
    #[arg(long, default_value = "30", value_name = "SECONDS", value_parser = units::duration)]
    pub link_timeout: std::time::Duration,
    #[command(flatten)]
    pub metrics: MetricsArgs,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum TargetSchemaArg {
    Dump,
    Existing,
}

#[derive(Debug, Args)]
pub struct AbortArgs {
    /// Run to remove.
    #[arg(long, default_value = "main", value_name = "NAME")]
    pub run: String,

    /// Also drop what the run's copy created on the target (recorded by copy; never an
    /// object the run did not create). Exit 1 when something else depends on it, or when
    /// no record is left (a plain abort removed it).
    #[arg(long)]
    pub drop_data: bool,

    /// The run's PgBouncers, as for cutover (repeatable; or [[pooler]] in the config): needed
    /// when a cutover or rollback died mid-flip, so abort resumes them and puts traffic
    /// back before it removes the run.
    #[arg(long = "pooler", value_name = "SPEC")]
    pub poolers: Vec<String>,
}

#[derive(Debug, Args)]
pub struct SyncArgs {
    /// Run to follow.
    #[arg(long, default_value = "main", value_name = "NAME")]
    pub run: String,

    /// After cutover: stream green's changes back to blue (from the reverse slot that
    /// cutover created on green), so rollback loses nothing.
    #[arg(long)]
    pub reverse: bool,

    /// Commit a group on the target after this many applied rows.
    #[arg(long, default_value_t = 50_000, value_name = "N")]
    pub group_rows: u64,

    /// Commit a group on the target after this many milliseconds (or with a unit: 1s).
    #[arg(long, default_value = "500", value_name = "MS", value_parser = units::millis)]
    pub group_ms: u64,

    /// Target sessions that apply updates and deletes, split by key (1 to 8). More than one
    /// commits each group with two-phase commit, which needs max_prepared_transactions of
    /// at least N-1 on the target; where it is 0, one session is used.
    #[arg(long, default_value_t = 2, value_name = "N",
          value_parser = clap::value_parser!(u16).range(1..=8))]
    pub apply_sessions: u16,

    /// A server that answers nothing this long counts as gone: a silent replication stream
    /// (asked for a reply a third of the way in) or an unanswered probe; sync then
    /// reconnects and resumes from the origin (seconds, or with a unit: 500ms, 1min).
    #[arg(long, default_value = "30", value_name = "SECONDS", value_parser = units::duration)]
    pub link_timeout: std::time::Duration,

    /// After SIGINT/SIGTERM, how long to wait for the transaction at hand before ending
    /// without it (a second signal ends at once; seconds, or with a unit).
    #[arg(long, default_value = "10", value_name = "SECONDS", value_parser = units::duration)]
    pub stop_grace: std::time::Duration,

    /// A hold on the applier that its requester (a verify, a cutover) neither releases nor
    /// completes this long is dropped: the requester is gone (seconds, or with a unit).
    #[arg(long, default_value = "10min", value_name = "SECONDS", value_parser = units::duration)]
    pub hold_expiry: std::time::Duration,

    /// `/readyz` (with --metrics-addr) fails when sync lags more than this (seconds, or
    /// with a unit: 2min).
    #[arg(long, default_value = "30", value_name = "SECONDS", value_parser = units::seconds)]
    pub max_lag: f64,
    #[command(flatten)]
    pub metrics: MetricsArgs,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Run to show.
    #[arg(long, default_value = "main", value_name = "NAME")]
    pub run: String,

    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,

    /// Exit 1 (not healthy) when sync lags more than this (seconds, or with a unit: 2min).
    #[arg(long, default_value = "30", value_name = "SECONDS", value_parser = units::seconds)]
    pub max_lag: f64,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Run to verify (its copy, and its sync when one is running).
    #[arg(long, default_value = "main", value_name = "NAME")]
    pub run: String,

    /// Schema to compare (repeatable); default: the run's schemas.
    #[arg(long = "schema", value_name = "NAME")]
    pub schemas: Vec<String>,

    /// Print the report as JSON (stable shape, see README) instead of text.
    #[arg(long)]
    pub json: bool,

    /// Re-copy mismatched key ranges from the source, then verify them again.
    #[arg(long)]
    pub repair: bool,

    /// Check every chunk. Without it, a verify after a clean one (sync running, held) checks
    /// only the chunks that may have changed since and carries the others' verdicts forward.
    #[arg(long)]
    pub full: bool,

    /// Target size of one checksum chunk, in MB of table size (or with a unit: 64MB).
    #[arg(long, default_value = "8", value_name = "MB", value_parser = units::megabytes)]
    pub chunk_mb: i64,

    /// Chunks checked at once, each reading both sides (default: number of CPU cores).
    #[arg(long, value_name = "N")]
    pub jobs: Option<usize>,

    /// Seconds to wait for a running sync to hold at the snapshot's LSN (or with a unit: 2min).
    #[arg(long, default_value = "120", value_name = "SECONDS", value_parser = units::whole_seconds)]
    pub hold_timeout: u64,

    /// Differing rows listed per table (further differing ranges are listed as ranges).
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub max_rows: i64,

    /// A server that answers nothing this long counts as gone: a probe over a connection of
    /// its own gets no answer, and the command ends with exit 2 (seconds, or with a unit).
    #[arg(long, default_value = "30", value_name = "SECONDS", value_parser = units::duration)]
    pub link_timeout: std::time::Duration,
    #[command(flatten)]
    pub metrics: MetricsArgs,
}

#[derive(Debug, Args)]
pub struct PeekArgs {
    /// Run whose slot and publication to look at (bluegreen_<run>).
    #[arg(long, default_value = "main", value_name = "NAME")]
    pub run: String,

    /// Existing slot to look at instead of the run's.
    #[arg(long, value_name = "NAME")]
    pub slot: Option<String>,

    /// Watch new changes through a temporary slot instead of an existing one.
    #[arg(long, conflicts_with = "slot")]
    pub temporary: bool,

    /// Publication (repeatable); default: the run's.
    #[arg(long = "publication", value_name = "NAME")]
    pub publications: Vec<String>,

    /// Start here (X/Y) instead of where the slot stands.
    #[arg(long, value_name = "LSN")]
    pub start_lsn: Option<String>,

    /// Stop after this many messages.
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,

    /// Stop after this many seconds (or with a unit: 500ms, 2min).
    #[arg(long, value_name = "SECONDS", value_parser = units::whole_seconds)]
    pub seconds: Option<u64>,
}

#[derive(Debug, Args)]
pub struct FlipArgs {
    /// Run to cut over (or roll back).
    #[arg(long, default_value = "main", value_name = "NAME")]
    pub run: String,

    /// A PgBouncer to flip (repeatable; all flip or none do):
    /// admin=CONN,db=NAME,file=PATH[,green=HOST:PORT[/DB]][,blue=HOST:PORT[/DB]].
    /// CONN reaches its admin console; db is the pooled database; file is the included
    /// [databases] file bluegreen rewrites; green/blue say how the pooler reaches each
    /// server when that differs from --target/--source.
    #[arg(long = "pooler", value_name = "SPEC")]
    pub poolers: Vec<String>,

    /// Refuse when sync lags more than this many seconds (or with a unit: 500ms).
    #[arg(long, default_value = "5", value_name = "SECONDS", value_parser = units::seconds)]
    pub max_lag: f64,

    /// Refuse without a clean verify at most this old (seconds, or with a unit: 1h).
    #[arg(long, default_value = "3600", value_name = "SECONDS", value_parser = units::seconds,
          conflicts_with = "no_verify_check")]
    pub verify_max_age: f64,

    /// Do not require a clean verify.
    #[arg(long)]
    pub no_verify_check: bool,

    /// Refuse when a transaction on the old primary has been open longer than this
    /// (seconds, or with a unit: 2min).
    #[arg(long, default_value = "30", value_name = "SECONDS", value_parser = units::seconds)]
    pub max_xact_age: f64,

    /// Give up (and put everything back) when a pooler's PAUSE takes longer than this
    /// (seconds, or with a unit: 500ms). Also each step's bound while clients are paused
    /// (the fence gets twice this, the drain --drain-timeout plus this).
    #[arg(long, default_value = "5", value_name = "SECONDS", value_parser = units::seconds)]
    pub pause_timeout: f64,

    /// Give up (and put everything back) when sync needs longer than this to catch up
    /// (seconds, or with a unit: 30s).
    #[arg(long, default_value = "10", value_name = "SECONDS", value_parser = units::seconds)]
    pub drain_timeout: f64,

    /// Before the PAUSE and after the commit point, a server that answers no probe this
    /// long fails the step at hand (seconds, or with a unit): the link looks dead.
    #[arg(long, default_value = "30", value_name = "SECONDS", value_parser = units::duration)]
    pub link_timeout: std::time::Duration,

    /// Kept for old scripts: every session on the old primary not from bluegreen is ended
    /// after the fence, with or without it.
    #[arg(long, hide = true)]
    pub terminate_other_sessions: bool,
    #[command(flatten)]
    pub metrics: MetricsArgs,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Run whose report to render.
    #[arg(long, default_value = "main", value_name = "NAME")]
    pub run: String,

    /// Directory for report.json and report.html (default: ./bluegreen-report-<run>);
    /// without a target, the report is read from DIR/report.json.
    #[arg(long, value_name = "DIR")]
    pub report_dir: Option<PathBuf>,
}

/// Where `bluegreen run` stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum Until {
    /// After the copy.
    Copied,
    /// After sync has caught up (sync then stops).
    Synced,
    /// After a clean verify (sync then stops).
    Verified,
    /// Right after the flip; reverse sync is not started.
    Cutover,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Run to carry out (its slot and publication are bluegreen_<run>).
    #[arg(long, default_value = "main", value_name = "NAME")]
    pub run: String,

    /// Stop after this stage instead of going on to reverse sync.
    #[arg(long, value_enum, value_name = "STAGE")]
    pub until: Option<Until>,

    /// A PgBouncer to flip, as for cutover (repeatable; or [[pooler]] in the config);
    /// needed unless --until stops before the cutover.
    #[arg(long = "pooler", value_name = "SPEC")]
    pub poolers: Vec<String>,

    /// Conversion profile (TOML): plain tables that become hypertables on green.
    #[arg(long, value_name = "FILE")]
    pub profile: Option<PathBuf>,

    /// Schema to migrate (repeatable); default: every application schema of the source.
    #[arg(long = "schema", value_name = "NAME")]
    pub schemas: Vec<String>,

    /// Copy workers (default: number of CPU cores).
    #[arg(long, value_name = "N")]
    pub jobs: Option<usize>,

    /// Target size of one copy chunk, in MB of table size (or with a unit: 1GB).
    #[arg(long, default_value = "64", value_name = "MB", value_parser = units::megabytes)]
    pub chunk_mb: i64,

    /// Caught up: sync's lag under this (also cutover's guardrail; seconds, or with a unit).
    #[arg(long, default_value = "5", value_name = "SECONDS", value_parser = units::seconds)]
    pub max_lag: f64,

    /// Give up when sync has not caught up after this long (seconds, or with a unit: 6h).
    #[arg(long, default_value = "6h", value_name = "SECONDS", value_parser = units::duration)]
    pub catch_up_timeout: std::time::Duration,

    /// Cutover refuses when a transaction on blue has been open longer than this.
    #[arg(long, default_value = "30", value_name = "SECONDS", value_parser = units::seconds)]
    pub max_xact_age: f64,

    /// Cutover gives up (and puts everything back) when PAUSE takes longer than this; also
    /// each step's bound while clients are paused (the fence gets twice this, the drain
    /// --drain-timeout plus this).
    #[arg(long, default_value = "5", value_name = "SECONDS", value_parser = units::seconds)]
    pub pause_timeout: f64,

    /// Cutover gives up (and puts everything back) when the drain takes longer than this.
    #[arg(long, default_value = "10", value_name = "SECONDS", value_parser = units::seconds)]
    pub drain_timeout: f64,

    /// Target sessions that apply updates and deletes (1 to 8), as for sync.
    #[arg(long, default_value_t = 2, value_name = "N",
          value_parser = clap::value_parser!(u16).range(1..=8))]
    pub apply_sessions: u16,

    /// Directory for report.json and report.html (default: ./bluegreen-report-<run>).
    #[arg(long, value_name = "DIR")]
    pub report_dir: Option<PathBuf>,

    /// Rehearse against a staging target: copy, sync, verify, and a cutover of the steps that
    /// touch no production traffic (with --pooler: staging poolers only, flipped and flipped
    /// back); blue is never fenced. Afterwards the run's slot and publication on the source
    /// are removed; the report holds the predicted production window.
    #[arg(long)]
    pub dry_run: bool,

    /// With --dry-run: the production source whose sizes and WAL rate the window estimate
    /// uses (default: the source).
    #[arg(long, value_name = "CONN", requires = "dry_run")]
    pub estimate_for: Option<String>,

    /// With --dry-run: also drop what the rehearsal's copy created on the staging target,
    /// and the run's state there (the report files stay).
    #[arg(long, requires = "dry_run")]
    pub drop_data: bool,

    /// A server that answers nothing this long counts as gone (seconds, or with a unit).
    #[arg(long, default_value = "30", value_name = "SECONDS", value_parser = units::duration)]
    pub link_timeout: std::time::Duration,

    /// After SIGINT/SIGTERM, how long sync may finish the transaction at hand.
    #[arg(long, default_value = "10", value_name = "SECONDS", value_parser = units::duration)]
    pub stop_grace: std::time::Duration,

    #[command(flatten)]
    pub metrics: MetricsArgs,
}

/// `--metrics-addr`, shared by the long-running commands.
#[derive(Debug, Clone, Args)]
pub struct MetricsArgs {
    /// Serve Prometheus metrics on http://HOST:PORT/metrics, with /healthz (alive) and
    /// /readyz (sync: attached, no error, lag within --max-lag; other commands: alive).
    /// Binds only this address.
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics_addr: Option<String>,
}
