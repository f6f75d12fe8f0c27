//! Counters the copy updates as it goes; the binary polls them to draw progress, so this
//! crate never touches a terminal.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

#[derive(Debug, Default)]
pub struct Counters {
    phase: Mutex<String>,
    pub bytes: AtomicU64,
    pub rows: AtomicU64,
    pub chunks_done: AtomicU64,
    pub chunks_total: AtomicU64,
    /// Estimated bytes of all chunks (heap size), for the ETA.
    pub est_bytes_total: AtomicU64,
    /// Estimated bytes of chunks already done.
    pub est_bytes_done: AtomicU64,
    pub items_done: AtomicU64,
    pub items_total: AtomicU64,
}

impl Counters {
    pub fn set_phase(&self, phase: &str) {
        tracing::info!(phase, "copy");
        if let Ok(mut p) = self.phase.lock() {
            *p = phase.to_string();
        }
    }

    pub fn phase(&self) -> String {
        self.phase.lock().map(|p| p.clone()).unwrap_or_default()
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
