//! Blanks passwords out of this process's command line, so `ps` and /proc/PID/cmdline do not
//! show them once flags are parsed. The argv strings are one contiguous block starting at
//! argv[0] (glibc's `program_invocation_name`); we overwrite matches in place.

use std::ffi::c_char;

extern "C" {
    static mut program_invocation_name: *mut c_char;
}

pub fn scrub(secrets: &[String]) {
    let secrets: Vec<&[u8]> = secrets
        .iter()
        .map(|s| s.as_bytes())
        .filter(|s| !s.is_empty())
        .collect();
    if secrets.is_empty() {
        return;
    }
    let Ok(cmdline) = std::fs::read("/proc/self/cmdline") else {
        return;
    };
    // SAFETY: program_invocation_name points at argv[0], and the kernel laid out all argv
    // strings contiguously after it: exactly the bytes /proc/self/cmdline reports. We check
    // that the memory matches before writing, and only write within that block. Flags were
    // already copied out by clap, so nothing reads these bytes afterwards.
    unsafe {
        let start = program_invocation_name as *mut u8;
        if start.is_null() {
            return;
        }
        let block = std::slice::from_raw_parts_mut(start, cmdline.len());
        if block != cmdline.as_slice() {
            return;
        }
        // Each password becomes a fixed `***` and what follows moves up, so the title does
        // not tell a password's length; the bytes freed at the end become NULs (empty
        // arguments, which ps shows as nothing).
        let mut masked: Vec<u8> = block.to_vec();
        for secret in secrets {
            if secret.is_empty() {
                continue;
            }
            let mut out = Vec::with_capacity(masked.len());
            let mut i = 0;
            while i < masked.len() {
                if masked[i..].starts_with(secret) {
                    // (A password shorter than the mask keeps its length: never longer.)
                    out.extend_from_slice(&b"***"[..secret.len().min(3)]);
                    i += secret.len();
                } else {
                    out.push(masked[i]);
                    i += 1;
                }
            }
            masked = out;
        }
        if masked.len() <= block.len() {
            block[..masked.len()].copy_from_slice(&masked);
            block[masked.len()..].fill(0);
        }
    }
}
