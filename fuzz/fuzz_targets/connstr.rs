//! Arbitrary connection strings (URIs and key=value) and pooler specs: parsing never panics,
//! and a password that parsed never shows in the redacted form or an error message.
#![no_main]

use std::path::PathBuf;

use libfuzzer_sys::fuzz_target;

struct NoEnv;

impl conn::Env for NoEnv {
    fn var(&self, _: &str) -> Option<String> {
        None
    }
    fn home(&self) -> Option<PathBuf> {
        None
    }
    fn os_user(&self) -> Option<String> {
        Some("fuzz".into())
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    match conn::ConnSpec::parse_with(s, &NoEnv) {
        Ok(spec) => {
            // The same spec with another password shows everything but it: a password that
            // occurs there anyway (as the user, host or database name, or a word like
            // "password") is no leak.
            let mut other = spec.clone();
            other.password = Some("\u{1}".into());
            let shown = format!("{} {other:?}", other.redacted());
            if let Some(pw) = spec
                .password
                .as_deref()
                .filter(|p| p.len() >= 4 && !shown.contains(p))
            {
                assert!(!spec.redacted().contains(pw));
                assert!(!format!("{spec:?}").contains(pw));
            }
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
    let _ = s.parse::<cutover::PoolerSpec>();
});
