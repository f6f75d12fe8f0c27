//! The fault proxy against an echo server and a real cluster: every mode does what it says.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use testkit::{Cluster, Proxy};

/// An echo server on 127.0.0.1; lives as long as the test process.
fn echo() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut s = s;
                let mut buf = [0u8; 65536];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 || s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

fn dial(p: &Proxy) -> TcpStream {
    let s = TcpStream::connect(p.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    s
}

/// Sends `msg` and reads the echo back: Ok(true) when it came, Ok(false) on silence.
fn round_trip(s: &mut TcpStream, msg: &[u8]) -> std::io::Result<bool> {
    s.write_all(msg)?;
    let mut got = vec![0u8; msg.len()];
    let mut at = 0;
    while at < got.len() {
        match s.read(&mut got[at..]) {
            Ok(0) => return Err(ErrorKind::UnexpectedEof.into()),
            Ok(n) => at += n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Ok(false)
            }
            Err(e) => return Err(e),
        }
    }
    assert_eq!(got, msg);
    Ok(true)
}

#[test]
fn passes_and_adds_latency_per_direction() {
    let p = Proxy::to(echo()).unwrap();
    let mut s = dial(&p);
    assert!(round_trip(&mut s, b"hello").unwrap());
    p.latency(Duration::from_millis(150), Duration::from_millis(100));
    let t = Instant::now();
    assert!(round_trip(&mut s, b"slow").unwrap());
    let rtt = t.elapsed();
    assert!(
        rtt >= Duration::from_millis(250) && rtt < Duration::from_millis(450),
        "{rtt:?}"
    );
    p.latency(Duration::ZERO, Duration::ZERO);
    let t = Instant::now();
    assert!(round_trip(&mut s, b"fast").unwrap());
    assert!(t.elapsed() < Duration::from_millis(100));
    assert_eq!(p.connections(), 1);
}

#[test]
fn caps_bandwidth() {
    let p = Proxy::to(echo()).unwrap();
    p.bandwidth(Some(200_000));
    let mut s = dial(&p);
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let msg = vec![7u8; 200_000];
    let t = Instant::now();
    let w = {
        let mut s = s.try_clone().unwrap();
        let msg = msg.clone();
        std::thread::spawn(move || s.write_all(&msg).unwrap())
    };
    let mut got = vec![0u8; msg.len()];
    s.read_exact(&mut got).unwrap();
    w.join().unwrap();
    // 200 kB each way at 200 kB/s, pipelined: about a second.
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(4),
        "{took:?}"
    );
    assert_eq!(got, msg);
}

#[test]
fn stall_holds_bytes_and_pass_delivers_them() {
    let p = Proxy::to(echo()).unwrap();
    let mut s = dial(&p);
    assert!(round_trip(&mut s, b"a").unwrap());
    p.stall();
    assert!(
        !round_trip(&mut s, b"held").unwrap(),
        "nothing while stalled"
    );
    // New connections are accepted and held too.
    let mut n = dial(&p);
    assert!(!round_trip(&mut n, b"new").unwrap());
    p.pass();
    let mut got = [0u8; 4];
    s.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"held");
    let mut got = [0u8; 3];
    n.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"new");
}

#[test]
fn black_hole_is_silent_forever_for_old_connections_and_heals_for_new_ones() {
    let p = Proxy::to(echo()).unwrap();
    let mut s = dial(&p);
    assert!(round_trip(&mut s, b"a").unwrap());
    p.black_hole(Some(Duration::from_millis(1500)));
    // No answer, no reset, no end of stream: silence.
    assert!(!round_trip(&mut s, b"lost").unwrap());
    // A new connection is accepted and never answered.
    let mut n = dial(&p);
    assert!(!round_trip(&mut n, b"unanswered").unwrap());
    std::thread::sleep(Duration::from_millis(1200));
    assert!(matches!(p.mode(), testkit::ProxyMode::Pass));
    // Healed: new connections pass; the old flows stay dead.
    let mut fresh = dial(&p);
    assert!(round_trip(&mut fresh, b"fresh").unwrap());
    assert!(!round_trip(&mut s, b"still lost").unwrap());
    assert!(!round_trip(&mut n, b"x").unwrap());
    // A black hole without healing keeps new connections unanswered.
    p.black_hole(None);
    std::thread::sleep(Duration::from_millis(300));
    let mut late = dial(&p);
    assert!(!round_trip(&mut late, b"late").unwrap());
    assert!(!round_trip(&mut fresh, b"fresh again").unwrap());
}

/// The error a read ends with (waiting up to 5 s through read timeouts).
fn read_error(s: &mut TcpStream) -> std::io::Error {
    let started = Instant::now();
    let mut buf = [0u8; 1];
    loop {
        match s.read(&mut buf) {
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                assert!(started.elapsed() < Duration::from_secs(5), "no reset");
            }
            Err(e) => return e,
            Ok(n) => panic!("read {n} bytes, expected a reset"),
        }
    }
}

#[test]
fn reset_sends_rst_and_new_connections_work() {
    let p = Proxy::to(echo()).unwrap();
    let mut s = dial(&p);
    assert!(round_trip(&mut s, b"a").unwrap());
    p.reset();
    let err = read_error(&mut s);
    assert_eq!(err.kind(), ErrorKind::ConnectionReset, "{err}");
    let mut n = dial(&p);
    assert!(round_trip(&mut n, b"again").unwrap());
    // Black-holed connections are reset too.
    p.black_hole(None);
    p.reset();
    assert_eq!(read_error(&mut n).kind(), ErrorKind::ConnectionReset);
    assert_eq!(p.connections(), 0);
}

#[test]
fn a_cluster_answers_through_it() {
    let pg = Cluster::new();
    let p = Proxy::to_port(pg.port()).unwrap();
    let out = std::process::Command::new(testkit::pg_bin("psql"))
        .arg(p.url(&pg, "postgres"))
        .args(["-XAtc", "SELECT inet_server_port()"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        pg.port().to_string()
    );
    assert!(p.accepted() >= 1);
}
