//! Errors are sentences: every failure says what was being done and what went wrong.

/// A result whose error is a message for the person running the bench.
pub type Result<T> = std::result::Result<T, String>;

/// Adds what was being done to a lower-level error.
pub trait Context<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T, E: std::fmt::Display> Context<T> for std::result::Result<T, E> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| format!("{}: {e}", what()))
    }
}
