//! A small disk for out-of-space tests: a tmpfs of a set size, mounted on a temporary
//! directory and handed to the server user, grown or shrunk while servers use it, unmounted
//! when dropped (lazily, so a server still holding files cannot keep it mounted).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::process::{give_to_server_user, is_root, run, spawn_watchdog};
use crate::Result;

pub struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    /// Mounts `bytes` of tmpfs; an error when this process may not mount (not root, or a
    /// container without the capability).
    pub fn mount(bytes: u64) -> Result<SmallDisk> {
        if !is_root() {
            return Err("mounting a tmpfs needs root".into());
        }
        let dir = tempfile::Builder::new()
            .prefix("bluegreen-disk-")
            .tempdir()
            .map_err(|e| format!("tempdir: {e}"))?;
        run(Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}")])
            .arg("tmpfs")
            .arg(dir.path()))?;
        // Unmounted even if the test process dies without unwinding.
        spawn_watchdog(&format!("umount -l '{}'", dir.path().display()));
        let disk = SmallDisk { dir };
        give_to_server_user(disk.path())?;
        Ok(disk)
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// A directory on it for a tablespace, owned by the server user.
    pub fn tablespace_dir(&self, name: &str) -> Result<PathBuf> {
        let d = self.path().join(name);
        std::fs::create_dir_all(&d).map_err(|e| format!("{}: {e}", d.display()))?;
        give_to_server_user(&d)?;
        Ok(d)
    }

    /// Bytes in use on it.
    pub fn used(&self) -> Result<u64> {
        let out = run(Command::new("df")
            .args(["--output=used", "-B1"])
            .arg(self.path()))?;
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .ok_or_else(|| "df printed no usage".to_string())
    }

    /// Sets its size (a size below what is used fails).
    pub fn resize(&self, bytes: u64) -> Result<()> {
        run(Command::new("mount")
            .args(["-o", &format!("remount,size={bytes}")])
            .arg(self.path()))
        .map(|_| ())
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.path()).status();
    }
}
