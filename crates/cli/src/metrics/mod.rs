//! Prometheus metrics (`--metrics-addr`): every metric bluegreen exports is defined here,
//! each carrying the run as a label. Values are read from what the stages already keep:
//! the state schema on the target (chunks, the applier's row, verify runs), the target's
//! table statistics (applied rows by kind), and the stages' own log events (cutover steps,
//! sync reconnects), so the stage crates need no metrics calls. Labels stay bounded: a
//! table, a chunk state or a kind of change, never a key or a chunk.

mod events;
mod http;
mod poll;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

pub use events::Layer;

use crate::trouble::Trouble;

/// The command whose process exports the metrics: says what `/readyz` means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Copy,
    Sync,
    Verify,
    Cutover,
    Rollback,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TableLabel {
    pub table: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OpLabel {
    pub op: &'static str,
}

type FloatGauge = Gauge<f64, std::sync::atomic::AtomicU64>;

/// The metric set of one process.
pub struct Metrics {
    registry: Registry,
    pub copy_rows: Family<TableLabel, Counter>,
    pub copy_bytes: Family<TableLabel, Counter>,
    pub copy_chunks: Family<StateLabel, Gauge>,
    pub apply_rows: Family<OpLabel, Counter>,
    pub lag_seconds: FloatGauge,
    pub lag_bytes: Gauge,
    pub retained_wal_bytes: Gauge,
    pub reconnects: Counter,
    pub errors: Counter,
    pub verify_mismatched_chunks: Gauge,
    pub cutover_phase: Gauge,
    pub cutover_pause_seconds: FloatGauge,
    /// 1 while the run's applier is attached without error (exported by sync only).
    pub sync_attached: Gauge,
    /// `/readyz`: set by the poller (sync) or at start (every other command).
    ready: AtomicBool,
}

/// Kinds of applied change, as labelled.
pub const OPS: [&str; 3] = ["insert", "update", "delete"];
/// Chunk states, as labelled (those of `bluegreen.chunks`).
pub const CHUNK_STATES: [&str; 2] = ["pending", "done"];

impl Metrics {
    pub fn new(run: &str, stage: Stage) -> Metrics {
        let mut registry = Registry::with_labels(
            [(
                std::borrow::Cow::Borrowed("run"),
                std::borrow::Cow::Owned(run.to_string()),
            )]
            .into_iter(),
        );
        let m = Metrics {
            registry: Registry::default(),
            copy_rows: Family::default(),
            copy_bytes: Family::default(),
            copy_chunks: Family::default(),
            apply_rows: Family::default(),
            lag_seconds: FloatGauge::default(),
            lag_bytes: Gauge::default(),
            retained_wal_bytes: Gauge::default(),
            reconnects: Counter::default(),
            errors: Counter::default(),
            verify_mismatched_chunks: Gauge::default(),
            cutover_phase: Gauge::default(),
            cutover_pause_seconds: FloatGauge::default(),
            sync_attached: Gauge::default(),
            ready: AtomicBool::new(false),
        };
        // Counters get `_total` from the registry.
        let r = &mut registry;
        r.register(
            "bluegreen_copy_rows",
            "Rows copied, by table",
            m.copy_rows.clone(),
        );
        r.register(
            "bluegreen_copy_bytes",
            "Bytes copied, by table",
            m.copy_bytes.clone(),
        );
        r.register(
            "bluegreen_copy_chunks",
            "Copy chunks, by state",
            m.copy_chunks.clone(),
        );
        r.register(
            "bluegreen_apply_rows",
            "Rows sync applied to the target, by kind of change",
            m.apply_rows.clone(),
        );
        r.register(
            "bluegreen_lag_seconds",
            "Age of the oldest source change sync has not applied",
            m.lag_seconds.clone(),
        );
        r.register(
            "bluegreen_lag_bytes",
            "Source WAL bytes sync has not applied",
            m.lag_bytes.clone(),
        );
        r.register(
            "bluegreen_slot_retained_wal_bytes",
            "WAL the run's replication slot keeps on the source",
            m.retained_wal_bytes.clone(),
        );
        r.register(
            "bluegreen_sync_reconnects",
            "Times sync resumed from the origin after an interruption",
            m.reconnects.clone(),
        );
        r.register(
            "bluegreen_sync_errors",
            "Errors that interrupted or ended sync",
            m.errors.clone(),
        );
        r.register(
            "bluegreen_verify_mismatched_chunks",
            "Chunks the run's latest verify found different",
            m.verify_mismatched_chunks.clone(),
        );
        r.register(
            "bluegreen_cutover_phase",
            "Last finished cutover/rollback step (1 guardrails .. 14 resume; 0 none; -1 put back)",
            m.cutover_phase.clone(),
        );
        r.register(
            "bluegreen_cutover_pause_seconds",
            "How long clients were paused by the last cutover/rollback",
            m.cutover_pause_seconds.clone(),
        );
        if stage == Stage::Sync {
            // Only sync says whether it is attached: from another command, 0 would page.
            r.register(
                "bluegreen_sync_attached",
                "1 while sync is attached to the source and applying without error",
                m.sync_attached.clone(),
            );
        }
        for state in CHUNK_STATES {
            let _ = m.copy_chunks.get_or_create(&StateLabel { state });
        }
        for op in OPS {
            let _ = m.apply_rows.get_or_create(&OpLabel { op });
        }
        Metrics { registry, ..m }
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    pub fn ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::SeqCst);
    }
}

/// Raises a counter to a total read elsewhere (a total that went down, e.g. a table copied
/// again, leaves it as it is: counters never go back).
pub fn advance(counter: &Counter, total: u64) {
    let now = counter.get();
    if total > now {
        counter.inc_by(total - now);
    }
}

/// The process's metrics, once `--metrics-addr` started them (log events feed them then).
static GLOBAL: OnceLock<Arc<Metrics>> = OnceLock::new();

pub fn global() -> Option<&'static Arc<Metrics>> {
    GLOBAL.get()
}

/// What `--metrics-addr` needs to know of the command.
pub struct Exporter {
    pub addr: String,
    pub run: String,
    pub stage: Stage,
    /// Sync: `/readyz` fails past this lag.
    pub max_lag: Duration,
    /// Where the run's state schema is (the target).
    pub target: conn::ConnSpec,
    /// Sync: the server it applies to (the source for reverse sync).
    pub applied_to: conn::ConnSpec,
    pub link_timeout: Duration,
}

/// Binds the address (only it), serves `/metrics`, `/healthz` and `/readyz` and starts the
/// poller; both end with the process.
pub async fn start(e: Exporter) -> Result<Arc<Metrics>, Trouble> {
    let listener = tokio::time::timeout(e.link_timeout, tokio::net::TcpListener::bind(&e.addr))
        .await
        .map_err(|_| bind_trouble(&e.addr, "timed out resolving the address"))?
        .map_err(|err| bind_trouble(&e.addr, &err.to_string()))?;
    let metrics = Arc::new(Metrics::new(&e.run, e.stage));
    let metrics = GLOBAL.get_or_init(|| metrics).clone();
    // Every command but sync is ready while it is alive.
    metrics.set_ready(e.stage != Stage::Sync);
    tokio::spawn(http::serve(listener, metrics.clone()));
    tokio::spawn(poll::run(e, metrics.clone()));
    Ok(metrics)
}

fn bind_trouble(addr: &str, why: &str) -> Trouble {
    Trouble::new(
        format!("--metrics-addr {addr}: cannot listen there: {why}"),
        "give HOST:PORT of a local address whose port is free (e.g. 127.0.0.1:9187, or 0.0.0.0:9187 in a pod)",
    )
}
