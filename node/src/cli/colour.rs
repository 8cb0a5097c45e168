//! Whether the CLI's output is coloured, decided once from `--color` and `NO_COLOR`, and the
//! only place that writes ANSI escapes. `auto` colours a terminal only; `NO_COLOR` (any
//! non-empty value, see no-color.org) turns `auto` off; an explicit `--color always|never`
//! wins over the environment, as no-color.org asks of per-invocation flags.

use std::ffi::OsStr;
use std::sync::OnceLock;

/// `--color`: when to colour.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum When {
    /// Colour when standard output is a terminal and NO_COLOR is unset or empty.
    #[default]
    Auto,
    /// Colour even into a pipe or file.
    Always,
    /// Never colour.
    Never,
}

static ENABLED: OnceLock<bool> = OnceLock::new();

/// The decision, pure: the flag, the value of `NO_COLOR`, and whether stdout is a terminal.
pub fn decide(when: When, no_color: Option<&OsStr>, stdout_is_terminal: bool) -> bool {
    match when {
        When::Always => true,
        When::Never => false,
        When::Auto => no_color.is_none_or(OsStr::is_empty) && stdout_is_terminal,
    }
}

/// Sets the decision for this process from the flag and its environment; the first call wins.
pub fn init(when: When) {
    let no_color = std::env::var_os("NO_COLOR");
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let _ = ENABLED.set(decide(when, no_color.as_deref(), terminal));
}

/// Whether to colour; off until `init` ran.
pub fn enabled() -> bool {
    ENABLED.get().copied().unwrap_or(false)
}

/// The colours the CLI uses (ANSI foreground codes).
#[derive(Debug, Clone, Copy)]
pub enum Colour {
    Red = 31,
    Green = 32,
    Amber = 33,
    Grey = 90,
}

/// `text` in `colour` when `on`, else `text` unchanged.
pub fn paint(on: bool, colour: Colour, text: &str) -> String {
    if on {
        format!("\x1b[{}m{text}\x1b[0m", colour as u8)
    } else {
        text.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_colours_a_terminal_unless_no_color_is_set_and_non_empty() {
        let set = Some(OsStr::new("1"));
        let empty = Some(OsStr::new(""));
        assert!(decide(When::Auto, None, true));
        assert!(
            decide(When::Auto, empty, true),
            "an empty NO_COLOR is unset"
        );
        assert!(!decide(When::Auto, set, true));
        assert!(!decide(When::Auto, None, false), "a pipe is not coloured");
    }

    #[test]
    fn an_explicit_flag_wins_over_the_environment_and_the_terminal() {
        let set = Some(OsStr::new("1"));
        assert!(decide(When::Always, set, false));
        assert!(!decide(When::Never, None, true));
    }

    #[test]
    fn paint_writes_escapes_only_when_on() {
        assert_eq!(paint(true, Colour::Green, "x"), "\x1b[32mx\x1b[0m");
        assert_eq!(paint(false, Colour::Green, "x"), "x");
    }
}
