//! The config fuzz target's seeds (fuzz/seeds/config: the repository's example files and a
//! few odd ones) replayed through the same entry point on every test run: the CI smoke of
//! fuzz/fuzz_targets/config.rs (scripts/fuzz.sh runs the fuzzer itself).

use std::ffi::OsString;
use std::path::Path;

fn load(text: &str, command: &str) -> Result<bluegreen::config::Settings, String> {
    let argv: Vec<OsString> = ["bluegreen", "--config", "seed.toml", command]
        .into_iter()
        .map(OsString::from)
        .collect();
    bluegreen::config::load_with(argv, |_| Ok(text.to_string()))
        .map(|(_, s)| s)
        .map_err(|t| format!("{} / {}", t.cause, t.hint))
}

#[test]
fn config_seeds_load_or_fail_cleanly() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds/config");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        let text = std::fs::read_to_string(&path).unwrap();
        for command in ["plan", "copy", "cutover", "run"] {
            let got = load(&text, command);
            if name == "unknown-key.toml" {
                let e = got.unwrap_err();
                assert!(e.contains("[plan] has no setting `no_such`"), "{e}");
            } else {
                let s = got.unwrap_or_else(|e| panic!("{name} ({command}): {e}"));
                assert!(s.source.is_some() || !s.poolers.is_empty(), "{name}");
            }
        }
        n += 1;
    }
    assert!(n >= 4, "seeds missing from {}", dir.display());
}

/// A password in the file never shows in the trouble a bad file gives (TOML's parse errors
/// quote the line they stop at).
#[test]
fn a_bad_file_does_not_show_its_password() {
    let text = "source = \"postgresql://bg:Canary-pw-1@blue/db\" oops\n";
    let e = load(text, "plan").unwrap_err();
    assert!(!e.contains("Canary-pw-1"), "{e}");
    assert!(e.contains("line 1"), "{e}");
}
