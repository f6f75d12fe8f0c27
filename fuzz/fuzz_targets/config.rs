//! Any text as the `--config` TOML file (bluegreen::config::load_with), for a few commands:
//! parsing never panics and never ends the process; a bad file is trouble (exit 2) with a
//! cause and a hint.
#![no_main]

use std::ffi::OsString;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for command in ["plan", "copy", "cutover", "run"] {
        let argv: Vec<OsString> = ["bluegreen", "--config", "fuzz.toml", command]
            .into_iter()
            .map(OsString::from)
            .collect();
        match bluegreen::config::load_with(argv, |_| Ok(text.to_string())) {
            Ok((_, settings)) => {
                for p in &settings.poolers {
                    let _ = p.parse::<cutover::PoolerSpec>();
                }
                let _ = settings.secrets();
            }
            Err(t) => assert!(!t.cause.is_empty() && !t.hint.is_empty()),
        }
    }
});
