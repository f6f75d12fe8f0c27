//! The flip's links to both servers, watched for the steps that have no deadline of their
//! own: those before the PAUSE (arming rollback, refreshing a large materialized view or a
//! pre-drain behind a busy applier may rightly take minutes) and those after the commit
//! point. TCP keepalives and the user timeout end a wait on a dead path, but not on one
//! where something still acknowledges what it no longer forwards; a probe over a session of
//! its own ([`conn::watch_link`]) asks the servers themselves, so such a step fails within
//! `--link-timeout` instead of waiting for good.

use std::sync::Arc;
use std::time::Duration;

use conn::ConnSpec;
use state::Side;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::step::{at, Step, StepResult};
use crate::Error;

/// Probes of blue and green, running until the last clone is dropped.
#[derive(Clone)]
pub(crate) struct Links {
    /// Per side: set once its probe finds the link dead.
    dead: Vec<(Side, watch::Receiver<bool>)>,
    limit: Duration,
    _probes: Arc<Probes>,
}

struct Probes(Vec<JoinHandle<()>>);

impl Drop for Probes {
    fn drop(&mut self) {
        for p in &self.0 {
            p.abort();
        }
    }
}

impl Links {
    /// Starts probing both sides (`limit` zero: the default link timeout).
    pub(crate) fn watch(blue: &ConnSpec, green: &ConnSpec, limit: Duration) -> Links {
        let limit = if limit.is_zero() {
            conn::DEFAULT_LINK_TIMEOUT
        } else {
            limit
        };
        let (mut dead, mut probes) = (Vec::new(), Vec::new());
        for (side, spec) in [(Side::Blue, blue), (Side::Green, green)] {
            let (tx, rx) = watch::channel(false);
            let spec = spec.clone();
            probes.push(tokio::spawn(async move {
                conn::watch_link(spec, limit).await;
                let _ = tx.send(true);
                // Kept open: a closed channel would read as "stopped", not "dead".
                std::future::pending::<()>().await;
            }));
            dead.push((side, rx));
        }
        Links {
            dead,
            limit,
            _probes: Arc::new(Probes(probes)),
        }
    }

    /// `fut` as step `step`, failed when a probe finds either link dead first.
    pub(crate) async fn guard<T>(
        &self,
        step: Step,
        fut: impl std::future::Future<Output = Result<T, Error>>,
    ) -> StepResult<T> {
        self.guard_on(&[Side::Blue, Side::Green], step, fut).await
    }

    /// As [`Links::guard`], for a step that needs only green (where the run's state is).
    pub(crate) async fn guard_green<T>(
        &self,
        step: Step,
        fut: impl std::future::Future<Output = Result<T, Error>>,
    ) -> StepResult<T> {
        self.guard_on(&[Side::Green], step, fut).await
    }

    async fn guard_on<T>(
        &self,
        sides: &[Side],
        step: Step,
        fut: impl std::future::Future<Output = Result<T, Error>>,
    ) -> StepResult<T> {
        let found = futures_util::future::select_all(
            self.dead
                .iter()
                .filter(|(side, _)| sides.contains(side))
                .map(|(side, rx)| {
                    let (side, mut rx) = (*side, rx.clone());
                    Box::pin(async move {
                        match rx.wait_for(|dead| *dead).await {
                            Ok(_) => side,
                            Err(_) => std::future::pending().await,
                        }
                    })
                }),
        );
        tokio::select! {
            r = fut => at(step, r),
            (side, _, _) = found => Err((step, Error::Timeout(format!(
                "{step}: {} gave no answer to a probe within {:?} (--link-timeout): the link looks dead",
                side.as_str(),
                self.limit
            )))),
        }
    }
}
