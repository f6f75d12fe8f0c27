//! A TCP proxy on 127.0.0.1 that breaks the link between a client and a server on demand:
//! added latency, a bandwidth cap, a stall, a black hole, resets.
//!
//! Each connection has a reader and a writer thread per direction: readers take bytes off
//! one socket and queue them with the time they may leave; writers hold them for the
//! latency and the bandwidth cap, then write them to the other socket. Modes switch live.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::Result;

/// How often stalled or dead links' threads look at the mode and the stop flag.
const POLL: Duration = Duration::from_millis(10);
/// How long an idle link's threads block before looking again (a reset wakes them at once,
/// see [`abort`]): polling every [`POLL`] cost 600 threads (150 pooled connections) a
/// fifth of a core, which a 2-core benchmark took from the load under test.
const IDLE: Duration = Duration::from_secs(1);
const CHUNK: usize = 64 * 1024;
/// Under added latency, a read that brought less than this waits `GATHER` before the next,
/// so a sender of many small writes (a walsender flushes each message) costs the proxy a
/// wake-up per millisecond instead of one per message: per-message thread hand-offs on a
/// 2-core machine took more CPU than the servers and halved the rate under test.
const SMALL_READ: usize = CHUNK / 4;
const GATHER: Duration = Duration::from_millis(1);
/// At most this much is written in one go (queued reads are joined up to it).
const MOST_WRITTEN: usize = 256 * 1024;

/// What the proxy does with traffic (see the builder-like setters on [`Proxy`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forward everything (with the latency and bandwidth cap in force).
    Pass,
    /// Forward nothing, read nothing, keep every socket open; back to `Pass` forwards what
    /// was held. New connections are accepted and held too.
    Stall,
    /// The path is dead, as when a NAT forgets the flow: connections open now never carry
    /// another byte (not even after the hole heals); nothing is read from them, nothing
    /// reset. New connections are accepted and never answered until `heals_at`, if given;
    /// then they pass again.
    BlackHole { heals_at: Option<Instant> },
}

#[derive(Debug, Clone, Copy)]
struct Shaping {
    /// Added one-way delay, client to server and server to client.
    up: Duration,
    down: Duration,
    /// Bytes per second in each direction; None: no cap.
    rate: Option<u64>,
}

struct Shared {
    mode: Mutex<Mode>,
    shaping: Mutex<Shaping>,
    conns: Mutex<Vec<Arc<Link>>>,
    stop: AtomicBool,
    accepted: AtomicUsize,
}

impl Shared {
    /// The mode now, with a healed black hole back to `Pass`.
    fn mode(&self) -> Mode {
        let mut m = self.mode.lock().unwrap();
        if let Mode::BlackHole { heals_at: Some(at) } = *m {
            if Instant::now() >= at {
                *m = Mode::Pass;
            }
        }
        *m
    }

    fn shaping(&self) -> Shaping {
        *self.shaping.lock().unwrap()
    }
}

/// One proxied connection: the client's socket and the server's (None while a black hole
/// holds it unanswered).
struct Link {
    client: TcpStream,
    server: Option<TcpStream>,
    /// Black-holed: nothing moves any more.
    dead: AtomicBool,
    /// Reset requested or both directions ended: threads end, sockets close.
    closed: AtomicBool,
    /// Directions whose writer has ended.
    finished: AtomicUsize,
}

impl Link {
    fn ended(&self, shared: &Shared) -> bool {
        self.closed.load(Ordering::SeqCst) || shared.stop.load(Ordering::SeqCst)
    }
}

/// A TCP proxy in front of one address. Dropping it closes every connection.
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl Proxy {
    /// A proxy to a server on 127.0.0.1 at `port` (e.g. a [`crate::Cluster`]'s).
    pub fn to_port(port: u16) -> Result<Proxy> {
        Proxy::to(SocketAddr::from(([127, 0, 0, 1], port)))
    }

    /// A proxy to `upstream`, listening on a free port of 127.0.0.1.
    pub fn to(upstream: SocketAddr) -> Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("proxy: bind: {e}"))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("proxy: nonblocking: {e}"))?;
        let addr = listener
            .local_addr()
            .map_err(|e| format!("proxy: address: {e}"))?;
        let shared = Arc::new(Shared {
            mode: Mutex::new(Mode::Pass),
            shaping: Mutex::new(Shaping {
                up: Duration::ZERO,
                down: Duration::ZERO,
                rate: None,
            }),
            conns: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
            accepted: AtomicUsize::new(0),
        });
        let s = Arc::clone(&shared);
        let acceptor = std::thread::Builder::new()
            .name("proxy-accept".into())
            .spawn(move || accept_loop(listener, upstream, s))
            .map_err(|e| format!("proxy: thread: {e}"))?;
        Ok(Proxy {
            addr,
            shared,
            acceptor: Some(acceptor),
        })
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// libpq URI through the proxy for a [`crate::Cluster`] behind it.
    pub fn url(&self, cluster: &crate::Cluster, db: &str) -> String {
        format!(
            "postgresql://{}:{}@127.0.0.1:{}/{db}?sslmode=disable",
            cluster.superuser(),
            cluster.password(),
            self.port()
        )
    }

    pub fn mode(&self) -> Mode {
        self.shared.mode()
    }

    /// Forward again. Connections a black hole killed stay dead.
    pub fn pass(&self) {
        *self.shared.mode.lock().unwrap() = Mode::Pass;
    }

    /// Stop forwarding, keep every socket open (see [`Mode::Stall`]).
    pub fn stall(&self) {
        *self.shared.mode.lock().unwrap() = Mode::Stall;
    }

    /// Kill the path silently (see [`Mode::BlackHole`]); new connections pass again after
    /// `heal_after`, if given.
    pub fn black_hole(&self, heal_after: Option<Duration>) {
        let heals_at = heal_after.map(|d| Instant::now() + d);
        // Under the connection list's lock: a connection accepted meanwhile is either in the
        // list (and dies) or sees the new mode.
        let conns = self.shared.conns.lock().unwrap();
        *self.shared.mode.lock().unwrap() = Mode::BlackHole { heals_at };
        for c in conns.iter() {
            c.dead.store(true, Ordering::SeqCst);
        }
    }

    /// Reset every open connection (RST to both ends: SO_LINGER 0, then close). New
    /// connections are accepted as the mode says.
    pub fn reset(&self) {
        let conns: Vec<Arc<Link>> = std::mem::take(&mut *self.shared.conns.lock().unwrap());
        for c in &conns {
            abort(c);
        }
    }

    /// Added one-way delay in each direction (client to server, server to client).
    pub fn latency(&self, up: Duration, down: Duration) {
        let mut s = self.shared.shaping.lock().unwrap();
        s.up = up;
        s.down = down;
    }

    /// At most `bytes_per_second` in each direction; None lifts the cap.
    pub fn bandwidth(&self, bytes_per_second: Option<u64>) {
        self.shared.shaping.lock().unwrap().rate = bytes_per_second.filter(|r| *r > 0);
    }

    /// Connections open now (black-holed ones included).
    pub fn connections(&self) -> usize {
        let mut conns = self.shared.conns.lock().unwrap();
        conns.retain(|c| !c.closed.load(Ordering::SeqCst));
        conns.len()
    }

    /// Connections accepted since the start.
    pub fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.reset();
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
    }
}

/// RST to both ends: with SO_LINGER {on, 0}, the close that follows once the threads let go
/// of the sockets sends a reset rather than a FIN. Shutting the sockets' receiving side
/// sends nothing to the peers and wakes readers blocked on them, which then see `closed`.
fn abort(c: &Link) {
    for s in std::iter::once(&c.client).chain(c.server.as_ref()) {
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        // SAFETY: the fd is an open socket this link owns; the option is a struct linger.
        unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&linger as *const libc::linger).cast(),
                std::mem::size_of::<libc::linger>() as libc::socklen_t,
            );
        }
    }
    c.closed.store(true, Ordering::SeqCst);
    for s in std::iter::once(&c.client).chain(c.server.as_ref()) {
        let _ = s.shutdown(Shutdown::Read);
    }
}

fn accept_loop(listener: TcpListener, upstream: SocketAddr, shared: Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        let client = match listener.accept() {
            Ok((c, _)) => c,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(POLL);
                continue;
            }
            Err(_) => {
                std::thread::sleep(POLL);
                continue;
            }
        };
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        let _ = client.set_nonblocking(false);
        let _ = client.set_nodelay(true);
        let held = matches!(shared.mode(), Mode::BlackHole { .. });
        let server = if held {
            None
        } else {
            match TcpStream::connect_timeout(&upstream, Duration::from_secs(5)) {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    Some(s)
                }
                Err(_) => {
                    // As a refused connection would look to the client.
                    let link = Link {
                        client,
                        server: None,
                        dead: AtomicBool::new(false),
                        closed: AtomicBool::new(false),
                        finished: AtomicUsize::new(0),
                    };
                    abort(&link);
                    continue;
                }
            }
        };
        let link = Arc::new(Link {
            client,
            server,
            dead: AtomicBool::new(held),
            closed: AtomicBool::new(false),
            finished: AtomicUsize::new(0),
        });
        {
            let mut conns = shared.conns.lock().unwrap();
            // A black hole that began while this one was connecting kills it too.
            if matches!(shared.mode(), Mode::BlackHole { .. }) {
                link.dead.store(true, Ordering::SeqCst);
            }
            conns.retain(|c| !c.closed.load(Ordering::SeqCst));
            conns.push(Arc::clone(&link));
        }
        if link.server.is_some() {
            for up in [true, false] {
                start_direction(&link, &shared, up);
            }
        }
    }
}

/// Bytes read from one side, waiting to be written to the other.
struct Pipe {
    queue: Mutex<VecDeque<(Instant, Vec<u8>)>>,
    ready: Condvar,
    /// The reader saw end of stream: the writer ends after the queue.
    eof: AtomicBool,
}

fn start_direction(link: &Arc<Link>, shared: &Arc<Shared>, up: bool) {
    let pipe = Arc::new(Pipe {
        queue: Mutex::new(VecDeque::new()),
        ready: Condvar::new(),
        eof: AtomicBool::new(false),
    });
    let (l, s, p) = (Arc::clone(link), Arc::clone(shared), Arc::clone(&pipe));
    std::thread::spawn(move || read_side(&l, &s, &p, up));
    let (l, s) = (Arc::clone(link), Arc::clone(shared));
    std::thread::spawn(move || {
        write_side(&l, &s, &pipe, up);
        if l.finished.fetch_add(1, Ordering::SeqCst) == 1 {
            l.closed.store(true, Ordering::SeqCst);
        }
    });
}

fn ends(link: &Link, up: bool) -> (&TcpStream, &TcpStream) {
    let server = link
        .server
        .as_ref()
        .expect("a forwarding link has a server");
    if up {
        (&link.client, server)
    } else {
        (server, &link.client)
    }
}

fn read_side(link: &Link, shared: &Shared, pipe: &Pipe, up: bool) {
    let (mut from, _) = ends(link, up);
    let _ = from.set_read_timeout(Some(IDLE));
    let mut buf = vec![0u8; CHUNK];
    let mut gathering = false;
    while !link.ended(shared) {
        // Stalled or dead: leave the bytes in the kernel, so the sender's window fills.
        if link.dead.load(Ordering::SeqCst) || shared.mode() == Mode::Stall {
            std::thread::sleep(POLL);
            continue;
        }
        match from.read(&mut buf) {
            // The end of the stream, or a reset's shutdown (then the writer sends nothing).
            Ok(0) => break,
            Ok(n) => {
                let s = shared.shaping();
                let latency = if up { s.up } else { s.down };
                // Bytes read after a gathering pause waited half of it on average.
                let gathered = if gathering {
                    GATHER / 2
                } else {
                    Duration::ZERO
                };
                let due = Instant::now() + latency.saturating_sub(gathered);
                pipe.queue
                    .lock()
                    .unwrap()
                    .push_back((due, buf[..n].to_vec()));
                pipe.ready.notify_one();
                gathering = n < SMALL_READ && latency >= 2 * GATHER;
                if gathering {
                    std::thread::sleep(GATHER);
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => {
                // A reset from this side: pass it on.
                abort(link);
                break;
            }
        }
    }
    pipe.eof.store(true, Ordering::SeqCst);
    pipe.ready.notify_one();
}

fn write_side(link: &Link, shared: &Shared, pipe: &Pipe, up: bool) {
    let (_, mut to) = ends(link, up);
    let _ = to.set_write_timeout(Some(Duration::from_millis(100)));
    while !link.ended(shared) {
        if link.dead.load(Ordering::SeqCst) {
            // Dropped silently.
            pipe.queue.lock().unwrap().clear();
            if pipe.eof.load(Ordering::SeqCst) {
                return;
            }
            std::thread::sleep(POLL);
            continue;
        }
        let next = {
            let mut q = pipe.queue.lock().unwrap();
            if q.is_empty() {
                if pipe.eof.load(Ordering::SeqCst) {
                    // The reader saw the end: half-close as the sender did.
                    let _ = to.shutdown(Shutdown::Write);
                    return;
                }
                // The reader notifies at each read and at the end (a reset's included).
                let _ = pipe.ready.wait_timeout(q, IDLE);
                continue;
            }
            if shared.mode() == Mode::Stall {
                drop(q);
                std::thread::sleep(POLL);
                continue;
            }
            let due = q.front().map(|(d, _)| *d).unwrap_or_else(Instant::now);
            let now = Instant::now();
            if due > now {
                drop(q);
                std::thread::sleep((due - now).min(POLL));
                continue;
            }
            let (due, mut bytes) = q.pop_front().expect("not empty");
            // Under a cap, at most a 20th of a second's worth at a time.
            let most = shared
                .shaping()
                .rate
                .map_or(MOST_WRITTEN, |rate| (rate / 20).max(1) as usize);
            // Join what else is due, so that small reads leave in one write.
            while bytes.len() < most && q.front().is_some_and(|(d, _)| *d <= now) {
                let (_, more) = q.pop_front().expect("not empty");
                bytes.extend_from_slice(&more);
            }
            if bytes.len() > most {
                let rest = bytes.split_off(most);
                q.push_front((due, rest));
            }
            bytes
        };
        if write_all(&mut to, &next, link, shared).is_err() {
            abort(link);
            return;
        }
        if let Some(rate) = shared.shaping().rate {
            std::thread::sleep(Duration::from_secs_f64(next.len() as f64 / rate as f64));
        }
    }
}

/// Writes everything, giving up when the link ends meanwhile.
fn write_all(
    to: &mut &TcpStream,
    mut bytes: &[u8],
    link: &Link,
    shared: &Shared,
) -> std::io::Result<()> {
    while !bytes.is_empty() {
        if link.ended(shared) {
            return Ok(());
        }
        match to.write(bytes) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
