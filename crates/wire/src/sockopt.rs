//! TCP keepalives and the user timeout on the walsender's socket, as libpq sets them
//! (SO_KEEPALIVE, TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT, TCP_USER_TIMEOUT), so a link that
//! dies silently ends the stream within a bound instead of leaving it waiting for hours.

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

use conn::Keepalives;

/// TCP options as the kernel holds them for a connection's socket (read back with getsockopt).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpOptions {
    pub keepalive: bool,
    /// Quiet time before the first probe.
    pub idle: Duration,
    /// Time between unanswered probes.
    pub interval: Duration,
    /// Unanswered probes before the connection is dropped.
    pub count: u32,
    /// How long sent data may stay unacknowledged; zero = the system's rule.
    pub user_timeout: Duration,
}

/// Applies `k` to a connected TCP socket; settings that are `None` keep the system's value.
pub(crate) fn apply(fd: RawFd, k: &Keepalives) -> io::Result<()> {
    set(
        fd,
        libc::SOL_SOCKET,
        libc::SO_KEEPALIVE,
        i32::from(k.enabled),
    )?;
    if k.enabled {
        if let Some(d) = k.idle {
            set(fd, libc::IPPROTO_TCP, libc::TCP_KEEPIDLE, secs(d))?;
        }
        if let Some(d) = k.interval {
            set(fd, libc::IPPROTO_TCP, libc::TCP_KEEPINTVL, secs(d))?;
        }
        if let Some(n) = k.count {
            set(fd, libc::IPPROTO_TCP, libc::TCP_KEEPCNT, clamp(n.into()))?;
        }
    }
    if let Some(d) = k.tcp_user_timeout {
        set(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_USER_TIMEOUT,
            clamp(d.as_millis()),
        )?;
    }
    Ok(())
}

/// Reads the options back from the kernel.
pub(crate) fn read(fd: RawFd) -> io::Result<TcpOptions> {
    let secs = |v: i32| Duration::from_secs(v.max(0) as u64);
    Ok(TcpOptions {
        keepalive: get(fd, libc::SOL_SOCKET, libc::SO_KEEPALIVE)? != 0,
        idle: secs(get(fd, libc::IPPROTO_TCP, libc::TCP_KEEPIDLE)?),
        interval: secs(get(fd, libc::IPPROTO_TCP, libc::TCP_KEEPINTVL)?),
        count: get(fd, libc::IPPROTO_TCP, libc::TCP_KEEPCNT)?.max(0) as u32,
        user_timeout: Duration::from_millis(
            get(fd, libc::IPPROTO_TCP, libc::TCP_USER_TIMEOUT)?.max(0) as u64,
        ),
    })
}

fn secs(d: Duration) -> i32 {
    // The kernel's minimum is one second.
    clamp(d.as_secs().max(1).into())
}

fn clamp(v: u128) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

fn set(fd: RawFd, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: fd is an open socket owned by the caller; every option here takes an int.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn get(fd: RawFd, level: i32, name: i32) -> io::Result<i32> {
    let mut value: i32 = 0;
    let mut len = std::mem::size_of::<i32>() as libc::socklen_t;
    // SAFETY: as in `set`; value and len point to live locals of the right size.
    let rc =
        unsafe { libc::getsockopt(fd, level, name, (&mut value as *mut i32).cast(), &mut len) };
    if rc == 0 {
        Ok(value)
    } else {
        Err(io::Error::last_os_error())
    }
}
