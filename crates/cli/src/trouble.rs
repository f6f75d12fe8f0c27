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

    pub fn state(side: &str, e: state::Error) -> Trouble {
        Trouble::new(
            format!("{side}: {e}"),
            "check that the target is reachable and the run exists",
        )
    }

    /// Prints to stderr and returns exit code 2.
    pub fn report(self) -> ExitCode {
        tracing::debug!(cause = %self.cause, "trouble");
        eprintln!("error: {}", self.cause);
        if !self.hint.is_empty() {
            eprintln!("hint: {}", self.hint);
        }
        ExitCode::from(2)
    }
}
