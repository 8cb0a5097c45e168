//! Progress on long waits, for a person at a terminal: a spinner with the elapsed time where
//! the daemon answers only at the end (`down`, `start FILE`), a count where the CLI polls
//! (`cluster drain`, `cluster restart --wait`). Drawn on stderr, and only when stderr is a
//! terminal and the output is not `--json`: logs and pipes get no `\r` and no escape codes.

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::time::Duration;

const TICK: Duration = Duration::from_millis(120);

/// A spinner or a counter that clears itself when dropped (done or failed).
pub struct Progress(ProgressBar);

/// Whether progress may be drawn at all.
pub fn shown(json: bool) -> bool {
    !json && std::io::stderr().is_terminal()
}

impl Progress {
    fn new(json: bool, template: &str, message: String) -> Self {
        if !shown(json) {
            return Self(ProgressBar::hidden());
        }
        let bar = ProgressBar::new_spinner();
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style);
        }
        bar.set_message(message);
        bar.enable_steady_tick(TICK);
        bar.tick();
        Self(bar)
    }

    /// For a call that answers only when everything is done: "⠋ stopping apps (12s)".
    pub fn spinner(json: bool, message: impl Into<String>) -> Self {
        Self::new(json, "{spinner} {msg} ({elapsed})", message.into())
    }

    /// For a wait the CLI polls: "⠋ rolling api: 3/8 (1m02s)"; `set` updates the count.
    pub fn counter(json: bool, message: impl Into<String>) -> Self {
        Self::new(
            json,
            "{spinner} {msg}: {pos}/{len} ({elapsed})",
            message.into(),
        )
    }

    pub fn set(&self, done: u64, total: u64) {
        self.0.set_length(total);
        self.0.set_position(done);
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}
