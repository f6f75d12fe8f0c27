//! Property: a password written into a connection string, in any of the forms libpq takes,
//! never survives `redact` of a message that quotes the string, nor a parsed spec's
//! `redacted()` or `Debug`.

use std::path::PathBuf;

use proptest::prelude::*;

struct NoEnv;

impl conn::Env for NoEnv {
    fn var(&self, _: &str) -> Option<String> {
        None
    }
    fn home(&self) -> Option<PathBuf> {
        None
    }
    fn os_user(&self) -> Option<String> {
        Some("someone".into())
    }
}

/// key=value quoting: single quotes, with `'` and `\` escaped.
fn kv_quoted(p: &str) -> String {
    format!("'{}'", p.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn uri_encoded(p: &str) -> String {
    p.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn passwords_never_survive_redaction(
        // Printable ASCII without spaces, long enough not to occur by chance elsewhere.
        password in "[!-~]{8,24}".prop_filter("not in the fixed text", |p| {
            !"error: cannot connect to host=db.example port=5432 user=app dbname=plant postgresql://app:@db.example:5432/plant?sslmode=require"
                .contains(p.as_str())
        }),
        upper in any::<bool>(),
    ) {
        let key = if upper { "PASSWORD" } else { "password" };
        let kv = format!("host=db.example port=5432 user=app {key}={} dbname=plant", kv_quoted(&password));
        let uri = format!("postgresql://app:{}@db.example:5432/plant?sslmode=require", uri_encoded(&password));
        for (conn_string, shown) in [(&kv, kv_quoted(&password)), (&uri, uri_encoded(&password))] {
            let message = format!("error: cannot connect to {conn_string}: timeout");
            let redacted = conn::redact(&message);
            prop_assert!(!redacted.contains(&password), "{redacted}");
            prop_assert!(!redacted.contains(&shown), "{redacted}");
        }
        // Parsed (lower-case keys only, as libpq), the spec never shows it either.
        if !upper {
            for conn_string in [&kv, &uri] {
                let spec = conn::ConnSpec::parse_with(conn_string, &NoEnv).unwrap();
                prop_assert_eq!(spec.password.as_deref(), Some(password.as_str()));
                prop_assert!(!spec.redacted().contains(&password));
                let debug = format!("{:?}", spec);
                prop_assert!(!debug.contains(&password));
            }
        }
    }
}
