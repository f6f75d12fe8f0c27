//! Running server programs as the `postgres` OS user when we are root, free ports, watchdogs.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::Result;

/// The unprivileged account servers run as when the caller is root (postgres and
/// pgbouncer both refuse to run as root).
pub const SERVER_USER: &str = "postgres";

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A command for `program`, wrapped in `runuser -u postgres --` when running as root.
pub fn server_command(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", SERVER_USER, "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

/// Hands `dir` (recursively) to the server user when running as root.
pub fn give_to_server_user(dir: &Path) -> Result<()> {
    if !is_root() {
        return Ok(());
    }
    run(Command::new("chown")
        .args(["-R", &format!("{SERVER_USER}:")])
        .arg(dir))
    .map(|_| ())
}

/// Runs a command to completion; a non-zero exit becomes an error carrying its output.
pub fn run(cmd: &mut Command) -> Result<Output> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(out)
}

/// A port that was free a moment ago. Callers retry on a collision.
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

/// Starts a detached shell that waits for this process to end, then runs `cleanup`.
/// It covers deaths that skip `Drop` (SIGKILL, abort); after a normal drop the cleanup
/// finds nothing left to do.
pub fn spawn_watchdog(cleanup: &str) {
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 1; done; {cleanup}",
        pid = std::process::id()
    );
    let _ = Command::new("setsid")
        .args(["sh", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
}

/// Single-quotes a word for `sh`.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}
