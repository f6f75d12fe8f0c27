//! The CopyBoth stream after START_REPLICATION.
//!
//! A background task owns the socket: it reads, answers keepalives and sends status updates
//! on a timer even while the consumer is busy (otherwise a slow apply would trip
//! wal_sender_timeout). It hands data to the consumer through a channel, the messages of
//! each read as one batch, bounded both in batches and in bytes; when the channel is full
//! the task stops reading the socket, so a slow consumer slows the server instead of
//! growing memory.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::{interval_at, Instant, MissedTickBehavior};

use crate::codec::{self, Backend, ReplicationMessage, XLogData};
use crate::connection::ReplicationConnection;
use crate::error::Error;
use crate::feedback::Feedback;
use crate::lsn::Lsn;
use crate::pgoutput::{LogicalMessage, Relation};
use crate::relcache::Decoder;

/// Tuning of the stream.
#[derive(Debug, Clone)]
pub struct StreamConfig {
    /// Status update period when nothing else triggers one.
    pub status_interval: Duration,
    /// Batches (the messages of one read each) buffered between the socket and the consumer.
    pub channel_capacity: usize,
    /// Bytes of message payload buffered between the socket and the consumer. A single
    /// larger message still passes (alone). (64 MB here held sync at 142 MB of RSS through
    /// a 10M-row transaction once messages went in batches; 4 MB is ample read-ahead.)
    pub buffer_bytes: usize,
    /// Never report a flush position, so the slot does not move whatever is confirmed or
    /// received: for looking at a slot that something else consumes (`peek`).
    pub read_only: bool,
    /// A stream silent this long counts as a dead link ([`Error::Silent`]). A third of the
    /// way in, the status update asks the walsender for a reply (it answers at once with a
    /// keepalive), so a live server is never silent that long, however idle. Time the
    /// consumer keeps the reader from reading does not count. None: wait forever.
    pub silence_timeout: Option<Duration>,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            status_interval: Duration::from_secs(10),
            channel_capacity: 256,
            buffer_bytes: 4 << 20,
            read_only: false,
            silence_timeout: None,
        }
    }
}

/// One decoded pgoutput message with its WAL coordinates.
#[derive(Debug, Clone)]
pub struct Event {
    pub wal_start: Lsn,
    pub wal_end: Lsn,
    /// Server clock when sent, microseconds since 2000-01-01.
    pub send_time: i64,
    pub message: LogicalMessage,
    /// See [`crate::Decoded::relations`].
    pub relations: Vec<Arc<Relation>>,
}

impl Event {
    pub fn relation(&self) -> Option<&Arc<Relation>> {
        self.relations.first()
    }
}

/// The messages of one read, handed over together: one channel hand-off (and at most one
/// wakeup of the consumer) per read rather than per message, which with small transactions
/// cost more CPU than decoding them.
struct Envelope {
    data: Vec<XLogData>,
    // Released when the consumer takes the batch: that is what bounds buffered bytes.
    _budget: OwnedSemaphorePermit,
}

/// Most payload bytes in one batch.
const BATCH_BYTES: usize = 1 << 20;
/// While the stream trickles, a read waits for this much data or for GATHER_WAIT, whichever
/// comes first (see [`Pace`]).
const GATHER_BYTES: i32 = 64 * 1024;
const GATHER_WAIT: Duration = Duration::from_millis(2);
/// The stream trickles when data arrives slower than this many bytes per second spent
/// waiting for it, over windows of PACE_WINDOW.
const TRICKLE_RATE: f64 = 4e6;
const PACE_WINDOW: Duration = Duration::from_millis(100);

/// Whether reads let data gather in the socket. A reader that takes every message as it
/// comes costs the walsender a wakeup of this process per message: under 1-row
/// transactions at the source's full rate the walsender spent a fifth more CPU per
/// transaction and fell seconds behind. But when the walsender has a backlog, gathering
/// lets its socket fill, and it blocks: catching up on 1-row transactions then went from
/// 72k to 57k rows/s. So reads gather only while data comes slower than TRICKLE_RATE while
/// this side waits for it (time the consumer kept the reader from reading does not count:
/// a backlog can build then).
struct Pace {
    since: Instant,
    bytes: usize,
    waited: Duration,
    gather: bool,
}

impl Pace {
    fn new() -> Pace {
        Pace {
            since: Instant::now(),
            bytes: 0,
            waited: Duration::ZERO,
            gather: false,
        }
    }

    /// A read brought `n` bytes after waiting `waited` for them.
    fn read(&mut self, n: usize, waited: Duration) {
        self.read_at(n, waited, Instant::now());
    }

    fn read_at(&mut self, n: usize, waited: Duration, now: Instant) {
        self.bytes += n;
        self.waited += waited;
        if now.saturating_duration_since(self.since) >= PACE_WINDOW {
            self.gather = (self.bytes as f64) < TRICKLE_RATE * self.waited.as_secs_f64();
            self.since = now;
            self.bytes = 0;
            self.waited = Duration::ZERO;
        }
    }

    fn lowat(&self) -> i32 {
        if self.gather {
            GATHER_BYTES
        } else {
            1
        }
    }
}

enum Command {
    Status(oneshot::Sender<()>),
    Shutdown,
}

#[derive(Default)]
struct Shared {
    confirmed: AtomicU64,
    reported_flush: AtomicU64,
    server_wal_end: AtomicU64,
    /// Why the task stopped, for the consumer's next `recv`.
    error: Mutex<Option<Error>>,
}

impl Shared {
    fn take_error(&self) -> Option<Error> {
        self.error.lock().ok().and_then(|mut e| e.take())
    }
}

/// Confirms progress and asks for status updates; clone it into the task that knows when
/// data is durable.
#[derive(Clone)]
pub struct FeedbackHandle {
    shared: Arc<Shared>,
    cmd: mpsc::Sender<Command>,
}

impl FeedbackHandle {
    /// Everything up to `lsn` (a Commit's `end_lsn`, or a non-transactional message's lsn) is
    /// durable at the consumer; the slot may release WAL before it. Never moves backwards.
    pub fn confirm(&self, lsn: Lsn) {
        self.shared.confirmed.fetch_max(lsn.0, Ordering::SeqCst);
    }

    pub fn confirmed(&self) -> Lsn {
        Lsn(self.shared.confirmed.load(Ordering::SeqCst))
    }

    /// The flush position in the last status update sent.
    pub fn reported_flush(&self) -> Lsn {
        Lsn(self.shared.reported_flush.load(Ordering::SeqCst))
    }

    /// Highest WAL position the server has told us about (keepalives and data): with
    /// `confirmed` it gives the lag.
    pub fn server_wal_end(&self) -> Lsn {
        Lsn(self.shared.server_wal_end.load(Ordering::SeqCst))
    }

    /// Sends a status update now and waits until it is written.
    pub async fn send_status(&self) -> Result<(), Error> {
        let (tx, rx) = oneshot::channel();
        self.cmd
            .send(Command::Status(tx))
            .await
            .map_err(|_| Error::StreamGone)?;
        rx.await.map_err(|_| Error::StreamGone)
    }
}

/// A running logical replication stream.
pub struct ReplicationStream {
    rx: mpsc::Receiver<Envelope>,
    /// The rest of the batch taken last.
    queue: VecDeque<XLogData>,
    feedback: FeedbackHandle,
    task: Option<JoinHandle<Option<ReplicationConnection>>>,
    decoder: Decoder,
    budget: Arc<Semaphore>,
    budget_max: usize,
}

impl ReplicationStream {
    pub(crate) fn spawn(conn: ReplicationConnection, start: Lsn, config: StreamConfig) -> Self {
        let shared = Arc::new(Shared::default());
        shared.server_wal_end.store(start.0, Ordering::SeqCst);
        let (tx, rx) = mpsc::channel(config.channel_capacity.max(1));
        let (cmd_tx, cmd_rx) = mpsc::channel(16);
        let budget_max = config.buffer_bytes.clamp(1, u32::MAX as usize);
        let budget = Arc::new(Semaphore::new(budget_max));
        let worker = Worker {
            conn,
            tx,
            cmd_rx,
            shared: Arc::clone(&shared),
            budget: Arc::clone(&budget),
            budget_max,
            feedback: Feedback::new(),
            config,
        };
        let task = tokio::spawn(worker.run());
        ReplicationStream {
            rx,
            queue: VecDeque::new(),
            feedback: FeedbackHandle {
                shared,
                cmd: cmd_tx,
            },
            task: Some(task),
            decoder: Decoder::new(),
            budget,
            budget_max,
        }
    }

    /// The share (0 to 1) of the read-ahead that holds data the consumer has not taken: near
    /// 1 when the consumer is what holds the stream back, near 0 when it waits for the server.
    pub fn backlog(&self) -> f64 {
        let free = self.budget.available_permits().min(self.budget_max);
        (self.budget_max - free) as f64 / self.budget_max as f64
    }

    /// The next message. Cancel-safe. Errors are final: the server's ErrorResponse
    /// (e.g. a missing publication, a terminated walsender), [`Error::StreamEndedByServer`],
    /// [`Error::Closed`], or a decode error.
    pub async fn recv(&mut self) -> Result<Event, Error> {
        let data = loop {
            if let Some(data) = self.queue.pop_front() {
                break data;
            }
            let Some(env) = self.rx.recv().await else {
                return Err(self
                    .feedback
                    .shared
                    .take_error()
                    .unwrap_or(Error::StreamGone));
            };
            self.queue.extend(env.data);
        };
        let decoded = self.decoder.decode(&data.data)?;
        Ok(Event {
            wal_start: data.wal_start,
            wal_end: data.wal_end,
            send_time: data.send_time,
            message: decoded.message,
            relations: decoded.relations,
        })
    }

    /// See [`FeedbackHandle::confirm`].
    pub fn confirm(&self, lsn: Lsn) {
        self.feedback.confirm(lsn);
    }

    pub fn feedback(&self) -> FeedbackHandle {
        self.feedback.clone()
    }

    /// See [`FeedbackHandle::send_status`].
    pub async fn send_status(&self) -> Result<(), Error> {
        self.feedback.send_status().await
    }

    /// The relations seen so far.
    pub fn decoder(&self) -> &Decoder {
        &self.decoder
    }

    /// Stops cleanly: a last status update with the confirmed position, CopyDone, then reads
    /// to the end of the stream (discarding unconfirmed data, which the slot will send again).
    /// Gives the connection back for further commands (e.g. dropping a slot).
    pub async fn shutdown(mut self) -> Result<ReplicationConnection, Error> {
        // Handled even while the task waits for channel space.
        let _ = self.feedback.cmd.send(Command::Shutdown).await;
        let task = self.task.take().ok_or(Error::StreamGone)?;
        let conn = task
            .await
            .map_err(|e| Error::Protocol(format!("stream task failed: {e}")))?;
        match (conn, self.feedback.shared.take_error()) {
            (Some(conn), _) => Ok(conn),
            (None, Some(e)) => Err(e),
            (None, None) => Err(Error::StreamGone),
        }
    }
}

impl Drop for ReplicationStream {
    fn drop(&mut self) {
        // Dropping without shutdown: end the task (and with it the connection) promptly.
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

struct Worker {
    conn: ReplicationConnection,
    tx: mpsc::Sender<Envelope>,
    cmd_rx: mpsc::Receiver<Command>,
    shared: Arc<Shared>,
    budget: Arc<Semaphore>,
    budget_max: usize,
    feedback: Feedback,
    config: StreamConfig,
}

enum Exit {
    Shutdown,
    ConsumerGone,
}

/// What one backend message asks of the worker.
enum Step {
    Deliver(XLogData),
    ReplyNow,
    Nothing,
}

impl Worker {
    async fn run(mut self) -> Option<ReplicationConnection> {
        match self.stream().await {
            Ok(Exit::Shutdown) => match self.finish().await {
                Ok(()) => Some(self.conn),
                Err(e) => {
                    self.fail(e);
                    None
                }
            },
            Ok(Exit::ConsumerGone) => None,
            Err(e) => {
                self.fail(e);
                None
            }
        }
    }

    fn fail(&self, e: Error) {
        tracing::debug!(error = %e, "replication stream stopped");
        if let Ok(mut slot) = self.shared.error.lock() {
            *slot = Some(e);
        }
    }

    async fn stream(&mut self) -> Result<Exit, Error> {
        let period = self.config.status_interval;
        let mut ticker = interval_at(Instant::now() + period, period);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut pending: Vec<XLogData> = Vec::new();
        let mut pending_bytes = 0;
        let mut pace = Pace::new();
        let quiet = self.config.silence_timeout.filter(|q| !q.is_zero());
        // When the server was last heard (or the consumer last let the reader read), and
        // whether a reply has been asked for since.
        let (mut heard, mut asked) = (Instant::now(), false);
        loop {
            // Work through what is buffered, as long as the consumer has room.
            while pending_bytes < BATCH_BYTES {
                let Some(msg) = self.conn.t.try_message()? else {
                    break;
                };
                match self.step(msg)? {
                    Step::Deliver(x) => {
                        pending_bytes += x.data.len();
                        pending.push(x);
                    }
                    Step::ReplyNow => self.send_status(false).await?,
                    Step::Nothing => {}
                }
            }
            let weight = pending_bytes.clamp(1, self.budget_max) as u32;
            tokio::select! {
                cmd = self.cmd_rx.recv() => match cmd {
                    Some(Command::Status(ack)) => {
                        self.send_status(false).await?;
                        let _ = ack.send(());
                    }
                    Some(Command::Shutdown) => return Ok(Exit::Shutdown),
                    None => return Ok(Exit::ConsumerGone),
                },
                _ = ticker.tick() => self.send_status(false).await?,
                slot = reserve(self.tx.clone(), Arc::clone(&self.budget), weight), if !pending.is_empty() => {
                    let Some((permit, budget)) = slot else {
                        return Ok(Exit::ConsumerGone);
                    };
                    permit.send(Envelope { data: std::mem::take(&mut pending), _budget: budget });
                    pending_bytes = 0;
                    (heard, asked) = (Instant::now(), false);
                }
                (read, waited) = timed(self.conn.t.fill_gathered(pace.lowat(), GATHER_WAIT)), if pending.is_empty() => {
                    pace.read(read?, waited);
                    (heard, asked) = (Instant::now(), false);
                }
                _ = tokio::time::sleep_until(silence_check(heard, quiet, asked)), if quiet.is_some() && pending.is_empty() => {
                    let q = quiet.unwrap_or_default();
                    if heard.elapsed() >= q {
                        return Err(Error::Silent(q));
                    }
                    if !asked {
                        self.send_status(true).await?;
                        asked = true;
                    }
                }
            }
        }
    }

    fn step(&mut self, msg: Backend) -> Result<Step, Error> {
        match msg {
            Backend::Message(Message::CopyData(body)) => {
                match codec::parse_replication(body.into_bytes())? {
                    ReplicationMessage::XLogData(x) => {
                        self.feedback.on_data(&x);
                        self.note_wal_end(x.wal_end);
                        Ok(Step::Deliver(x))
                    }
                    ReplicationMessage::Keepalive(k) => {
                        let confirmed = Lsn(self.shared.confirmed.load(Ordering::SeqCst));
                        self.feedback.on_keepalive(&k, confirmed);
                        self.note_wal_end(k.wal_end);
                        Ok(if k.reply_requested {
                            Step::ReplyNow
                        } else {
                            Step::Nothing
                        })
                    }
                }
            }
            Backend::Message(Message::ErrorResponse(body)) => {
                Err(Error::from(codec::db_error(body.fields())?))
            }
            Backend::Message(Message::NoticeResponse(body)) => {
                let n = codec::db_error(body.fields())?;
                self.conn.note(n);
                Ok(Step::Nothing)
            }
            Backend::Message(Message::ParameterStatus(_)) => Ok(Step::Nothing),
            // CopyDone: server shutdown. CommandComplete without CopyDone: PostgreSQL 15 does
            // not reset its walsender's end-of-streaming flags, so a second START_REPLICATION
            // on one connection ends at once (use a new connection per stream).
            Backend::Message(Message::CopyDone | Message::CommandComplete(_)) => {
                Err(Error::StreamEndedByServer)
            }
            other => Err(Error::Protocol(format!(
                "unexpected {} in the replication stream",
                codec::describe(&other)
            ))),
        }
    }

    fn note_wal_end(&self, lsn: Lsn) {
        self.shared
            .server_wal_end
            .fetch_max(lsn.0, Ordering::SeqCst);
    }

    async fn send_status(&mut self, reply_requested: bool) -> Result<(), Error> {
        let confirmed = Lsn(self.shared.confirmed.load(Ordering::SeqCst));
        let mut status = self.feedback.status(confirmed, reply_requested);
        if self.config.read_only {
            // 0/0 means "no position": the server leaves confirmed_flush_lsn alone.
            status.flush = Lsn::ZERO;
            status.apply = Lsn::ZERO;
        }
        status.encode(codec::pg_now(), &mut self.conn.t.wbuf);
        self.conn.t.flush().await?;
        self.shared
            .reported_flush
            .fetch_max(status.flush.0, Ordering::SeqCst);
        tracing::trace!(write = %status.write, flush = %status.flush, "status update sent");
        Ok(())
    }

    /// Clean end of COPY: report, CopyDone, read until the server's CopyDone,
    /// CommandComplete and ReadyForQuery.
    async fn finish(&mut self) -> Result<(), Error> {
        self.send_status(false).await?;
        frontend::copy_done(&mut self.conn.t.wbuf);
        self.conn.t.flush().await?;
        let mut copy_done = false;
        loop {
            match self.conn.t.read_message().await? {
                // Unconfirmed data is dropped (the slot sends it again). PostgreSQL 15's
                // walsender can still emit CopyData after its own CopyDone while it finishes
                // the loop iteration that saw ours, so that is tolerated too.
                Backend::Message(Message::CopyData(_)) => {}
                Backend::Message(Message::CopyDone) => copy_done = true,
                Backend::Message(Message::CommandComplete(_)) if copy_done => {}
                Backend::Message(Message::ReadyForQuery(_)) if copy_done => return Ok(()),
                Backend::Message(Message::NoticeResponse(body)) => {
                    let n = codec::db_error(body.fields())?;
                    self.conn.note(n);
                }
                Backend::Message(Message::ParameterStatus(_)) => {}
                Backend::Message(Message::ErrorResponse(body)) => {
                    return Err(Error::from(codec::db_error(body.fields())?))
                }
                other => {
                    return Err(Error::Protocol(format!(
                        "unexpected {} while ending the replication stream",
                        codec::describe(&other)
                    )))
                }
            }
        }
    }
}

/// When the silence since `heard` next needs a look: a third of `quiet` in, to ask for a
/// reply; at `quiet`, to give up.
fn silence_check(heard: Instant, quiet: Option<Duration>, asked: bool) -> Instant {
    let q = quiet.unwrap_or(Duration::from_secs(3600));
    heard + if asked { q } else { q / 3 }
}

/// The future's output and how long it took.
async fn timed<T>(f: impl std::future::Future<Output = T>) -> (T, Duration) {
    let start = Instant::now();
    let out = f.await;
    (out, start.elapsed())
}

/// Room for one message in the channel and its bytes in the budget; `None` when the
/// consumer is gone.
async fn reserve(
    tx: mpsc::Sender<Envelope>,
    budget: Arc<Semaphore>,
    weight: u32,
) -> Option<(mpsc::OwnedPermit<Envelope>, OwnedSemaphorePermit)> {
    let bytes = budget.acquire_many_owned(weight).await.ok()?;
    let permit = tx.reserve_owned().await.ok()?;
    Some((permit, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_gather_only_while_the_stream_trickles() {
        let ms = Duration::from_millis;
        let mut pace = Pace::new();
        let t0 = pace.since;
        assert_eq!(pace.lowat(), 1, "a new stream reads at once");
        // 2 MB/s while waiting for it (a source writing 1-row transactions at full
        // speed): gather.
        for i in 1..=10 {
            pace.read_at(20_000, ms(10), t0 + ms(10 * i));
        }
        assert_eq!(pace.lowat(), GATHER_BYTES);
        // 20 MB/s (a backlog): every read takes what is there.
        let t1 = pace.since;
        for i in 1..=10 {
            pace.read_at(200_000, ms(10), t1 + ms(10 * i));
        }
        assert_eq!(pace.lowat(), 1);
        // Within a window nothing changes.
        pace.read_at(1, ms(1), t1 + ms(150));
        assert_eq!(pace.lowat(), 1);
        // Little read in a window, but the reader hardly waited (the consumer was busy):
        // still a backlog.
        let t2 = pace.since;
        for i in 1..=2 {
            pace.read_at(64_000, ms(0), t2 + ms(50 * i));
        }
        assert_eq!(pace.lowat(), 1);
    }
}
