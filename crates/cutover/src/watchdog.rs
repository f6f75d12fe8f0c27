//! A cutover that dies between PAUSE and RESUME (killed, out of memory, its machine gone)
//! must not leave clients paused, the old primary fenced and sync held. Before the PAUSE the
//! coordinator starts a watchdog: the same binary (`bluegreen cutover-watchdog`, hidden) in a
//! process group of its own, so a signal to the coordinator's group does not reach it. The
//! coordinator writes its orders (how to reach both servers and the poolers) to the
//! watchdog's stdin, and `finished` once the flip is over, done or undone. Should stdin
//! close without it, the coordinator is gone: the watchdog recovers the flip from its record
//! on green ([`crate::recover`]: undone before the commit point, finished after it) and the
//! audit log says so.
//!
//! The flip's lock on green is held by the coordinator's session. A coordinator that died,
//! or gave up on a green that stopped answering, can leave that session's backend behind
//! (nothing told green the connection is gone), and with it the lock: the watchdog knows
//! that backend (the coordinator tells it which, and again when it replaces the session)
//! and ends it, then recovers; while green cannot be reached it tries again, for
//! [`RECOVER_LIMIT`] at most.
//!
//! Passwords travel only through the pipe, never on a command line or in the environment.

use std::process::Stdio;
use std::time::{Duration, Instant};

use conn::ConnSpec;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};

use crate::ctx::{end_backend, Backend};
use crate::{connect, Error, Options, PoolerSpec, Recovery};

/// The hidden subcommand that runs [`serve`].
pub const SUBCOMMAND: &str = "cutover-watchdog";

/// What the watchdog needs to undo a flip on its own.
#[derive(Serialize, Deserialize)]
struct Orders {
    blue: Conn,
    green: Conn,
    run: String,
    /// `--pooler` specs as given.
    poolers: Vec<String>,
    pause_timeout_ms: u64,
    /// The backend of the coordinator's session that holds the flip's lock.
    #[serde(default)]
    holder: Option<Backend>,
}

/// A connection as a password-free libpq string plus its password.
#[derive(Serialize, Deserialize)]
struct Conn {
    dsn: String,
    password: Option<String>,
}

impl Conn {
    fn of(spec: &ConnSpec) -> Conn {
        Conn {
            dsn: spec.libpq_env().0,
            password: spec.password.clone(),
        }
    }

    fn spec(&self) -> Result<ConnSpec, Error> {
        let mut spec = ConnSpec::parse(&self.dsn).map_err(|source| Error::Conn {
            side: "watchdog",
            source,
        })?;
        spec.password = self.password.clone();
        Ok(spec)
    }
}

/// The line after the orders: the flip is over, nothing left to guard.
const FINISHED: &str = "finished";

/// A line after the orders: the flip's lock is held by this backend now (JSON follows).
const HOLDER: &str = "holder ";

/// How long the watchdog waits for a dead coordinator's session on green to end.
const HOLDER_GRACE: Duration = Duration::from_secs(15);

/// How long the watchdog keeps trying to reach green to recover the flip: the poolers stay
/// paused meanwhile, and only green's record says whether the flip passed its commit point.
const RECOVER_LIMIT: Duration = Duration::from_secs(600);

/// The coordinator's end of the pipe.
pub(crate) struct Watchdog {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Watchdog {
    /// Starts the watchdog and hands it its orders.
    pub(crate) async fn start(
        blue: &ConnSpec,
        green: &ConnSpec,
        opts: &Options,
        holder: &Backend,
    ) -> Result<Watchdog, Error> {
        let exe = std::env::current_exe().map_err(|e| {
            Error::Pooler(format!(
                "cannot find the bluegreen binary for the watchdog: {e}"
            ))
        })?;
        let mut cmd = Command::new(exe);
        cmd.arg(SUBCOMMAND)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .process_group(0)
            .kill_on_drop(false);
        let mut child = cmd
            .spawn()
            .map_err(|e| Error::Pooler(format!("cannot start the cutover watchdog: {e}")))?;
        let orders = Orders {
            blue: Conn::of(blue),
            green: Conn::of(green),
            run: opts.run.clone(),
            poolers: opts.poolers.iter().map(|p| p.text.clone()).collect(),
            pause_timeout_ms: opts.pause_timeout.as_millis() as u64,
            holder: Some(holder.clone()),
        };
        let mut w = Watchdog {
            stdin: child.stdin.take(),
            child,
        };
        w.send(&serde_json::to_string(&orders).unwrap_or_default())
            .await?;
        Ok(w)
    }

    /// The flip's lock is held by another backend now (the coordinator replaced its session).
    pub(crate) async fn holder(&mut self, b: &Backend) {
        let line = format!("{HOLDER}{}", serde_json::to_string(b).unwrap_or_default());
        if let Err(e) = self.send(&line).await {
            tracing::warn!(error = %e, "could not tell the cutover watchdog the lock's new session");
        }
    }

    /// Nothing left to guard: the watchdog exits without touching anything.
    pub(crate) async fn finish(mut self) {
        if let Err(e) = self.send(FINISHED).await {
            tracing::warn!(error = %e, "could not dismiss the cutover watchdog");
        }
        drop(self.stdin.take());
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.start_kill();
        }
    }

    /// The coordinator could not put everything back: the watchdog does it on fresh
    /// connections (its input ends without `finished`). Waits for it, `limit` at most.
    pub(crate) async fn hand_over(mut self, limit: Duration) {
        drop(self.stdin.take());
        if tokio::time::timeout(limit, self.child.wait())
            .await
            .is_err()
        {
            tracing::error!(
                "the cutover watchdog is still putting the flip right; the next cutover, rollback or abort finishes it"
            );
        }
    }

    async fn send(&mut self, line: &str) -> Result<(), Error> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| Error::Pooler("the cutover watchdog is gone".into()))?;
        let write = async {
            stdin.write_all(line.as_bytes()).await?;
            stdin.write_all(b"\n").await?;
            stdin.flush().await
        };
        match tokio::time::timeout(Duration::from_secs(2), write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Error::Pooler(format!("the cutover watchdog: {e}"))),
            Err(_) => Err(Error::Timeout("the cutover watchdog does not read".into())),
        }
    }
}

/// The watchdog process: reads its orders from stdin, then waits for `finished` (exit
/// quietly) or the end of input without it (recover the flip).
pub async fn serve() -> Result<(), Error> {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let Some(first) = lines.next_line().await.ok().flatten() else {
        return Ok(());
    };
    let mut orders: Orders = serde_json::from_str(&first)
        .map_err(|e| Error::Usage(format!("cutover-watchdog: unreadable orders: {e}")))?;
    // Until the end of input (or a broken pipe): the coordinator is gone.
    while let Ok(Some(line)) = lines.next_line().await {
        if line == FINISHED {
            return Ok(());
        }
        if let Some(json) = line.strip_prefix(HOLDER) {
            orders.holder = serde_json::from_str(json).ok().or(orders.holder);
        }
    }
    tracing::error!("the cutover coordinator died mid-flip; the watchdog puts things right");
    let poolers = orders
        .poolers
        .iter()
        .map(|p| p.parse::<PoolerSpec>())
        .collect::<Result<Vec<_>, _>>()?;
    let opts = Options {
        run: orders.run.clone(),
        poolers,
        pause_timeout: Duration::from_millis(orders.pause_timeout_ms),
        ..Options::default()
    };
    let (blue, green) = (orders.blue.spec()?, orders.green.spec()?);
    let started = Instant::now();
    loop {
        // The coordinator's session may outlive it on green (see the module comment).
        let holder_gone = match &orders.holder {
            None => true,
            Some(holder) => match connect(&green, "green").await {
                Ok(c) => {
                    end_backend(&c, holder, opts.pause_timeout.max(Duration::from_secs(1))).await
                }
                Err(_) => false,
            },
        };
        let again = started.elapsed() < RECOVER_LIMIT;
        match crate::recover(&blue, &green, &opts, "watchdog", HOLDER_GRACE).await {
            Err(e) if again => {
                tracing::warn!(error = %e, "cannot recover the flip yet; trying again");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            // The lock may still be the dead coordinator's own session, not another
            // process's: not ended yet (green was out of reach a moment ago).
            Ok(Recovery::Live { .. }) if again && !holder_gone => {
                tracing::warn!(
                    "the coordinator's session on green still holds the flip; ending it again"
                );
            }
            Err(e) => return Err(e),
            // Recovered, or taken over by another process (`Live`: the next command).
            Ok(r) => {
                tracing::warn!("{r}");
                return Ok(());
            }
        }
    }
}
