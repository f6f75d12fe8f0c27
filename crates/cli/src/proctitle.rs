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
        for secret in secrets {
            let mut i = 0;
            while i + secret.len() <= block.len() {
                if &block[i..i + secret.len()] == secret {
                    block[i..i + secret.len()].fill(b'*');
                    i += secret.len();
                } else {
                    i += 1;
                }
            }
        }
    }
}
