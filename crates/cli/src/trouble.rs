//! Trouble: anything that stops a command from judging (exit 2), reported as one line of
//! cause and one line of hint. Passwords are scrubbed from both.

use std::process::ExitCode;

#[derive(Debug)]
pub struct Trouble {
    pub cause: String,
    pub hint: String,
}

impl Trouble {
    pub fn new(cause: impl Into<String>, hint: impl Into<String>) -> Trouble {
        Trouble {
            cause: conn::redact(&cause.into()),
            hint: hint.into(),
        }
    }

    /// A connection failure on one side (`source` or `target`).
    pub fn conn(side: &str, e: conn::Error) -> Trouble {
        Trouble::new(format!("{side}: {e}"), e.hint())
    }

    pub fn catalog(side: &str, e: catalog::Error) -> Trouble {
        Trouble::new(format!("{side}: {e}"), e.hint())
    }

    pub fn copy(e: copy::Error) -> Trouble {
        let hint = e.hint();
        Trouble::new(e.to_string(), hint)
    }

    pub fn sync(e: sync::Error) -> Trouble {
        let hint = e.hint();
        Trouble::new(e.to_string(), hint)
    }

    pub fn cutover(e: cutover::Error) -> Trouble {
        let hint = e.hint();
        Trouble::new(e.to_string(), hint)
    }

    pub fn from_report(e: report::Error) -> Trouble {
        Trouble::new(e.to_string(), e.hint())
    }

    pub fn state(side: &str, e: state::Error) -> Trouble {
        Trouble::new(
            format!("{side}: {e}"),
            "check that the target is reachable and the run exists",
        )
    }

    /// A command-line error from clap: its first line is the cause; its tips, else the
    /// usage line, make the hint.
    pub fn usage(e: &clap::Error, command: Option<&str>) -> Trouble {
        let text = e.render().to_string();
        let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
        let cause = lines
            .next()
            .unwrap_or_default()
            .trim_start_matches("error: ")
            .to_string();
        let rest: Vec<&str> = lines.collect();
        let help = match command {
            Some(c) => format!("bluegreen {c} --help"),
            None => "bluegreen --help".into(),
        };
        let usage = rest.iter().find_map(|l| l.strip_prefix("Usage: "));
        let tips: Vec<&str> = rest
            .iter()
            .filter_map(|l| l.strip_prefix("tip: "))
            .collect();
        let conflict = e.kind() == clap::error::ErrorKind::ArgumentConflict;
        let hint = match (tips.is_empty(), usage) {
            // Either/or flags: the usage line would only repeat one of them.
            _ if conflict => format!("give only one of them ({help} says what each does)"),
            (false, _) => format!("{} ({help} lists every flag)", tips.join("; ")),
            (true, Some(u)) => format!("usage: {u} ({help} lists every flag)"),
            (true, None) => format!("{help} lists every flag and the values it takes"),
        };
        Trouble::new(cause, hint)
    }

    /// Prints to stderr (two lines, or one JSON object under `--log-format json`) and
    /// returns exit code 2.
    pub fn report(self) -> ExitCode {
        tracing::debug!(cause = %self.cause, "trouble");
        if crate::logging::json() {
            crate::logging::line(
                "ERROR",
                "",
                &self.cause,
                &[("hint", self.hint.as_str().into()), ("exit_code", 2.into())],
            );
            return ExitCode::from(2);
        }
        eprintln!("error: {}", self.cause);
        if !self.hint.is_empty() {
            eprintln!("hint: {}", self.hint);
        }
        ExitCode::from(2)
    }
}
