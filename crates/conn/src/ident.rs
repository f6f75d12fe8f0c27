//! The one place SQL identifiers and literals are quoted; every crate goes through here.

/// `"name"` with embedded quotes doubled: always quoted, so capitals, spaces, reserved words
/// and non-ASCII survive exactly.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `"schema"."name"`.
pub fn qualified(schema: &str, name: &str) -> String {
    format!("{}.{}", quote_ident(schema), quote_ident(name))
}

/// Keywords PostgreSQL never reads as a bare name (reserved, and those allowed only as
/// function or type names): shown quoted.
const KEYWORDS: &[&str] = &[
    "all",
    "analyse",
    "analyze",
    "and",
    "any",
    "array",
    "as",
    "asc",
    "asymmetric",
    "authorization",
    "binary",
    "both",
    "case",
    "cast",
    "check",
    "collate",
    "collation",
    "column",
    "concurrently",
    "constraint",
    "create",
    "cross",
    "current_catalog",
    "current_date",
    "current_role",
    "current_schema",
    "current_time",
    "current_timestamp",
    "current_user",
    "default",
    "deferrable",
    "desc",
    "distinct",
    "do",
    "else",
    "end",
    "except",
    "false",
    "fetch",
    "for",
    "foreign",
    "freeze",
    "from",
    "full",
    "grant",
    "group",
    "having",
    "ilike",
    "in",
    "initially",
    "inner",
    "intersect",
    "into",
    "is",
    "isnull",
    "join",
    "lateral",
    "leading",
    "left",
    "like",
    "limit",
    "localtime",
    "localtimestamp",
    "natural",
    "not",
    "notnull",
    "null",
    "offset",
    "on",
    "only",
    "or",
    "order",
    "outer",
    "overlaps",
    "placing",
    "primary",
    "references",
    "returning",
    "right",
    "select",
    "session_user",
    "similar",
    "some",
    "symmetric",
    "table",
    "tablesample",
    "then",
    "to",
    "trailing",
    "true",
    "union",
    "unique",
    "user",
    "using",
    "variadic",
    "verbose",
    "when",
    "where",
    "window",
    "with",
];

/// A name for people, as psql shows it: bare when PostgreSQL reads it back unchanged (lower
/// case letters, digits, `_` and `$`, not a keyword), else quoted, so `a.b` in a message is
/// never ambiguous. SQL always takes [`quote_ident`].
pub fn display_ident(name: &str) -> String {
    let bare = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '$')
        && !KEYWORDS.contains(&name);
    if bare {
        name.to_string()
    } else {
        quote_ident(name)
    }
}

/// `schema.name` for people (see [`display_ident`]).
pub fn display_qualified(schema: &str, name: &str) -> String {
    format!("{}.{}", display_ident(schema), display_ident(name))
}

/// `'text'` for the few places a value cannot be a parameter (replication commands, DDL).
/// Uses E'' syntax when the text holds a backslash so standard_conforming_strings does not matter.
pub fn quote_literal(text: &str) -> String {
    let body = text.replace('\'', "''");
    if body.contains('\\') {
        format!("E'{}'", body.replace('\\', "\\\\"))
    } else {
        format!("'{body}'")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("Shift Notes"), "\"Shift Notes\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(qualified("s", "order"), "\"s\".\"order\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_literal(r"a\b"), r"E'a\\b'");
        assert_eq!(
            display_qualified("factory_telemetry", "Shift Notes"),
            "factory_telemetry.\"Shift Notes\""
        );
        assert_eq!(display_qualified("a.b", "select"), "\"a.b\".\"select\"");
        assert_eq!(display_ident("metric_hist$2"), "metric_hist$2");
        assert_eq!(display_ident("Ünï"), "\"Ünï\"");
        assert_eq!(display_ident("1st"), "\"1st\"");
    }
}
