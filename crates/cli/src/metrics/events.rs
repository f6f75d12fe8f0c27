//! Metrics read off the stages' own log events, so the stage crates need no hook: a
//! cutover step finished (`cutover step`, with the step's name and time), and a sync interrupted
//! and resuming (the warning that carries `retry_in`).

use tracing::field::{Field, Visit};
use tracing_subscriber::layer::Context;

use super::{global, Metrics};

/// A tracing layer; feeds the metrics only once `--metrics-addr` started them.
pub struct Layer;

#[derive(Default)]
struct Fields {
    step: Option<String>,
    retry_in: bool,
    seconds: Option<f64>,
    message: String,
}

impl Visit for Fields {
    fn record_f64(&mut self, field: &Field, value: f64) {
        if field.name() == "seconds" {
            self.seconds = Some(value);
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "step" => self.step = Some(value.to_string()),
            "message" => self.message = value.to_string(),
            "retry_in" => self.retry_in = true,
            _ => {}
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => self.message = format!("{value:?}"),
            "retry_in" => self.retry_in = true,
            "step" => self.step = Some(format!("{value:?}")),
            _ => {}
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Layer {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let Some(m) = global() else { return };
        let target = event.metadata().target();
        if !(target.starts_with("sync") || target.starts_with("cutover")) {
            return;
        }
        let mut f = Fields::default();
        event.record(&mut f);
        note(m, target, &f);
    }
}

fn note(m: &Metrics, target: &str, f: &Fields) {
    if target.starts_with("sync") && f.retry_in {
        m.reconnects.inc();
        m.errors.inc();
    }
    if target.starts_with("cutover") && f.message == "cutover step" {
        if let Some(n) = f.step.as_deref().and_then(step_number) {
            m.cutover_phase.set(n);
            // Clients wait from the pause step on: its time and every later step's, until
            // the final report sets the exact figure.
            if let (Some(pause), Some(t)) = (step_number(cutover::Step::Pause.name()), f.seconds) {
                if n == pause {
                    m.cutover_pause_seconds.set(t);
                } else if n > pause {
                    m.cutover_pause_seconds
                        .set(m.cutover_pause_seconds.get() + t);
                }
            }
        }
    }
}

/// 1 for the first step of a flip, as [`cutover::Step::ALL`] orders them.
pub fn step_number(name: &str) -> Option<i64> {
    cutover::Step::ALL
        .iter()
        .position(|s| s.name() == name)
        .map(|i| i as i64 + 1)
}
