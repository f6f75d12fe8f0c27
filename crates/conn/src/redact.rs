//! Hides passwords in free text that may echo a connection string (errors from other
//! programs, config dumps): `scheme://user:SECRET@` and `password=SECRET` (quoted or not).

pub fn redact(text: &str) -> String {
    redact_key_values(&redact_uris(text))
}

fn redact_uris(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c == '/' || c == '?' || c.is_whitespace())
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(at) => {
                let userinfo = &authority[..at];
                match userinfo.find(':') {
                    Some(colon) => {
                        out.push_str(&userinfo[..colon]);
                        out.push_str(":***");
                    }
                    None => out.push_str(userinfo),
                }
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

fn redact_key_values(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    loop {
        let Some(i) = find_ci(rest, "password") else {
            out.push_str(rest);
            return out;
        };
        let (head, tail) = rest.split_at(i + "password".len());
        out.push_str(head);
        let after_ws = tail.trim_start();
        let Some(value) = after_ws.strip_prefix('=') else {
            rest = tail;
            continue;
        };
        let value = value.trim_start();
        out.push_str("=***");
        rest = skip_value(value);
    }
}

/// Skips one key=value value: a quoted one with `\` escapes, or up to white space or `&`.
fn skip_value(v: &str) -> &str {
    let mut chars = v.char_indices();
    if v.starts_with('\'') {
        chars.next();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    chars.next();
                }
                '\'' => return &v[i + 1..],
                _ => {}
            }
        }
        return "";
    }
    let end = v
        .find(|c: char| c.is_whitespace() || c == '&' || c == '"' || c == ',')
        .unwrap_or(v.len());
    &v[end..]
}

fn find_ci(hay: &str, needle: &str) -> Option<usize> {
    hay.to_ascii_lowercase().find(needle)
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn uris_and_key_values() {
        let cases = [
            ("postgresql://u:s3cr3t@h:5/db", "postgresql://u:***@h:5/db"),
            ("x postgres://u@h/db y", "x postgres://u@h/db y"),
            (
                "host=h password=s3cr3t user=u",
                "host=h password=*** user=u",
            ),
            (
                "host=h password = 's3 cr\\'3t' user=u",
                "host=h password=*** user=u",
            ),
            (
                "postgresql://h/db?password=s3cr3t&sslmode=require",
                "postgresql://h/db?password=***&sslmode=require",
            ),
            ("PASSWORD=s3cr3t", "PASSWORD=***"),
            ("no secrets here", "no secrets here"),
        ];
        for (input, want) in cases {
            assert_eq!(redact(input), want, "{input}");
        }
    }
}
