//! Whether the CLI's output is coloured, decided once from `--color` and `NO_COLOR`, and the
//! only place that writes ANSI escapes. `auto` colours a terminal only; `NO_COLOR` (any
//! non-empty value, see no-color.org) turns `auto` off; an explicit `--color always|never`
//! wins over the environment, as no-color.org asks of per-invocation flags.

use std::ffi::{OsStr, OsString};
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

/// What `--color` says on the raw command line, for clap's own help and usage errors: those
/// are printed while parsing, before the parsed flag exists. As in clap, the last one wins;
/// nothing after `--` (a quick-start app's own arguments) counts; a bad value is `Auto` here
/// and a usage error from clap.
pub fn from_raw_args(args: impl IntoIterator<Item = OsString>) -> When {
    let mut when = When::Auto;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let value = match arg.to_str() {
            Some("--") => break,
            Some("--color") => args.next(),
            Some(a) => a.strip_prefix("--color=").map(OsString::from),
            None => None,
        };
        if let Some(v) = value {
            when = match v.to_str() {
                Some("always") => When::Always,
                Some("never") => When::Never,
                _ => When::Auto,
            };
        }
    }
    when
}

impl When {
    /// The same choice for clap's help and errors (clap's `auto` also honours `NO_COLOR`).
    pub fn for_clap(self) -> clap::ColorChoice {
        match self {
            When::Auto => clap::ColorChoice::Auto,
            When::Always => clap::ColorChoice::Always,
            When::Never => clap::ColorChoice::Never,
        }
    }
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
    fn the_raw_flag_is_read_like_clap_reads_it_and_stops_at_the_double_dash() {
        let when = |line: &str| from_raw_args(line.split_whitespace().map(OsString::from));
        assert_eq!(when("ps"), When::Auto);
        assert_eq!(when("--color never --help"), When::Never);
        assert_eq!(when("ps --color=always"), When::Always);
        assert_eq!(when("--color never ps --color always"), When::Always);
        assert_eq!(when("--color bogus ps"), When::Auto);
        assert_eq!(when("start --name a -- ls --color=never"), When::Auto);
    }

    #[test]
    fn paint_writes_escapes_only_when_on() {
        assert_eq!(paint(true, Colour::Green, "x"), "\x1b[32mx\x1b[0m");
        assert_eq!(paint(false, Colour::Green, "x"), "x");
    }
}
