//! The socket: TCP or unix, TLS per sslmode, and message-level reads and writes.

use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use bytes::BytesMut;
use conn::{ConnSpec, Host, SslMode};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

use crate::codec::{self, Backend};
use crate::error::Error;
use crate::sockopt;

/// Any byte stream to the server.
pub(crate) trait Socket: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Socket for T {}

/// A socket with a read buffer and a write buffer of whole protocol messages.
pub(crate) struct Transport {
    sock: Box<dyn Socket>,
    rbuf: BytesMut,
    /// Messages to send; filled by the codecs, emptied by [`Transport::flush`].
    pub(crate) wbuf: BytesMut,
    pub(crate) tls: bool,
    /// The TCP socket under it (TLS or not), for SO_RCVLOWAT; None on unix sockets.
    tcp_fd: Option<RawFd>,
    /// The SO_RCVLOWAT last set.
    lowat: i32,
    /// The TCP socket, for reading its options back; None on unix sockets.
    tcp: Option<RawFd>,
}

const READ_CHUNK: usize = 64 * 1024;

impl Transport {
    fn new((sock, tcp_fd): (Box<dyn Socket>, Option<RawFd>), tls: bool) -> Self {
        Transport {
            sock,
            rbuf: BytesMut::with_capacity(READ_CHUNK),
            wbuf: BytesMut::new(),
            tls,
            tcp_fd,
            lowat: 1,
            tcp: tcp_fd,
        }
    }

    /// The keepalive and user-timeout options in force on the TCP socket; None on a unix
    /// socket.
    pub(crate) fn tcp_options(&self) -> Option<std::io::Result<crate::TcpOptions>> {
        self.tcp.map(sockopt::read)
    }

    /// Reads more bytes, but lets them gather in the socket first: the kernel signals the
    /// socket readable only once `lowat` bytes wait (SO_RCVLOWAT), or, after `wait`, once
    /// any byte does. Cancel-safe like [`Transport::fill`]; returns the bytes read.
    pub(crate) async fn fill_gathered(
        &mut self,
        lowat: i32,
        wait: Duration,
    ) -> Result<usize, Error> {
        if self.tcp_fd.is_none() || lowat <= 1 {
            return self.fill().await;
        }
        self.set_lowat(lowat);
        if let Ok(read) = tokio::time::timeout(wait, self.read_more()).await {
            return read;
        }
        // Linux signals readiness at once if enough is already queued for the new mark.
        self.fill().await
    }

    fn set_lowat(&mut self, n: i32) {
        let Some(fd) = self.tcp_fd.filter(|_| n != self.lowat) else {
            return;
        };
        // SAFETY: fd is the open TCP socket this transport owns; the option is an int.
        let rc = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVLOWAT,
                (&n as *const i32).cast(),
                std::mem::size_of::<i32>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            self.lowat = n;
        } else if n > 1 {
            // Reads then wake per message, as without it; nothing else changes. (A failed
            // reset to 1 is retried by the next read.)
            tracing::debug!(error = %std::io::Error::last_os_error(), "SO_RCVLOWAT not set");
            self.tcp_fd = None;
        }
    }

    /// A complete message already in the read buffer, if any.
    pub(crate) fn try_message(&mut self) -> Result<Option<Backend>, Error> {
        codec::parse_backend(&mut self.rbuf)
    }

    /// Reads more bytes; returns how many. Cancel-safe: bytes are either in the buffer or
    /// still in the socket.
    pub(crate) async fn fill(&mut self) -> Result<usize, Error> {
        self.set_lowat(1);
        self.read_more().await
    }

    async fn read_more(&mut self) -> Result<usize, Error> {
        if self.rbuf.capacity() - self.rbuf.len() < READ_CHUNK / 4 {
            self.rbuf.reserve(READ_CHUNK);
        }
        match self.sock.read_buf(&mut self.rbuf).await? {
            0 => Err(Error::Closed),
            n => Ok(n),
        }
    }

    pub(crate) async fn read_message(&mut self) -> Result<Backend, Error> {
        loop {
            if let Some(m) = self.try_message()? {
                return Ok(m);
            }
            self.fill().await?;
        }
    }

    /// Sends everything in the write buffer.
    pub(crate) async fn flush(&mut self) -> Result<(), Error> {
        self.sock.write_all(&self.wbuf).await?;
        self.wbuf.clear();
        self.sock.flush().await?;
        Ok(())
    }

    /// Best-effort Terminate before dropping the socket.
    pub(crate) async fn terminate(mut self) {
        frontend::terminate(&mut self.wbuf);
        let _ = self.flush().await;
        let _ = self.sock.shutdown().await;
    }
}

/// Opens the socket and negotiates TLS as `spec.sslmode` says (libpq's rules: prefer
/// falls back to plain on 'N' or a failed handshake, the others fail; no TLS on unix sockets).
pub(crate) async fn open(spec: &ConnSpec) -> Result<Transport, Error> {
    let tls = spec.tls_connector()?;
    let Some((connector, server_name)) = tls else {
        return Ok(Transport::new(dial(spec).await?, false));
    };
    let (mut sock, fd) = dial(spec).await?;
    let mut req = BytesMut::new();
    frontend::ssl_request(&mut req);
    sock.write_all(&req).await?;
    sock.flush().await?;
    // Exactly one byte: anything the server sent after it before the handshake would be
    // unauthenticated (CVE-2021-23222).
    let answer = sock.read_u8().await.map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => Error::Closed,
        _ => Error::Io(e),
    })?;
    match answer {
        b'S' => {
            let tcp = sock;
            match connector.connect(server_name, tcp).await {
                Ok(tls) => Ok(Transport::new((Box::new(tls), fd), true)),
                Err(e) if spec.sslmode == SslMode::Prefer => {
                    tracing::info!(target = %spec.target(), error = %e, "TLS handshake failed; sslmode=prefer retries without TLS");
                    Ok(Transport::new(dial(spec).await?, false))
                }
                Err(e) => Err(Error::Tls(format!("handshake with {}: {e}", spec.target()))),
            }
        }
        b'N' if spec.sslmode == SslMode::Prefer => Ok(Transport::new((sock, fd), false)),
        b'N' => Err(Error::Tls(format!(
            "{} does not accept TLS connections, but sslmode={} requires TLS",
            spec.target(),
            spec.sslmode.as_str()
        ))),
        other => Err(Error::Protocol(format!(
            "unexpected answer {:?} to SSLRequest",
            other as char
        ))),
    }
}

async fn dial(spec: &ConnSpec) -> Result<(Box<dyn Socket>, Option<RawFd>), Error> {
    let target = spec.target();
    let connect_err = |source: std::io::Error| Error::Connect {
        target: target.clone(),
        source,
    };
    match &spec.host {
        Host::Unix(dir) => {
            let path = dir.join(format!(".s.PGSQL.{}", spec.port));
            let s = UnixStream::connect(&path).await.map_err(connect_err)?;
            Ok((Box::new(s), None))
        }
        Host::Tcp(host) => {
            let addr = spec.hostaddr.as_deref().unwrap_or(host);
            let s = TcpStream::connect((addr, spec.port))
                .await
                .map_err(connect_err)?;
            // Status updates are tiny and time-critical.
            s.set_nodelay(true).map_err(connect_err)?;
            let fd = s.as_raw_fd();
            sockopt::apply(fd, &spec.keepalives).map_err(connect_err)?;
            Ok((Box::new(s), Some(fd)))
        }
    }
}

/// `connect_timeout` as libpq applies it (0 or absent = wait forever; libpq's minimum is 2 s).
pub(crate) fn connect_timeout(spec: &ConnSpec) -> Option<Duration> {
    spec.connect_timeout
        .filter(|d| !d.is_zero())
        .map(|d| d.max(Duration::from_secs(2)))
}
