//! Command-line options.

use crate::error::Result;
use std::path::PathBuf;

pub const USAGE: &str = "\
usage: herd-bench [--apps N[,N...]] [--restarts N] [--ps-runs N] [--json FILE]

  --apps      app counts for the start / memory / down scenario (default 100,1000)
  --restarts  SIGKILLs in the restart-latency scenario (default 50)
  --ps-runs   `herd ps` invocations timed with 100 apps registered (default 200)
  --json      also write the results to FILE as JSON

Drives target/release/herd, which must sit next to this executable:
  cargo build --release -p herd -p herd-bench && target/release/herd-bench";

#[derive(Debug, PartialEq)]
pub struct Options {
    pub apps: Vec<usize>,
    pub restarts: usize,
    pub ps_runs: usize,
    pub json: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            apps: vec![100, 1000],
            restarts: 50,
            ps_runs: 200,
            json: None,
        }
    }
}

/// `Ok(None)` means help was asked for.
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Option<Options>> {
    let mut opts = Options::default();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        if arg == "-h" || arg == "--help" {
            return Ok(None);
        }
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) => (f.to_string(), Some(v.to_string())),
            None => (arg, None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or(format!("{flag} needs a value\n\n{USAGE}"))
        };
        match flag.as_str() {
            "--apps" => {
                opts.apps = value()?
                    .split(',')
                    .map(|n| count("--apps", n))
                    .collect::<Result<_>>()?
            }
            "--restarts" => opts.restarts = count(&flag, &value()?)?,
            "--ps-runs" => opts.ps_runs = count(&flag, &value()?)?,
            "--json" => opts.json = Some(PathBuf::from(value()?)),
            _ => return Err(format!("unknown argument `{flag}`\n\n{USAGE}")),
        }
    }
    Ok(Some(opts))
}

/// A positive whole number.
fn count(flag: &str, text: &str) -> Result<usize> {
    match text.trim().parse() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{flag}: `{text}` is not a positive whole number")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(line: &str) -> Result<Option<Options>> {
        parse(line.split_whitespace().map(String::from))
    }

    #[test]
    fn defaults() {
        assert_eq!(parse_str("").unwrap(), Some(Options::default()));
    }

    #[test]
    fn every_option_both_spellings() {
        let o = parse_str("--apps 10,20 --restarts=5 --ps-runs 7 --json=out.json")
            .unwrap()
            .unwrap();
        assert_eq!(
            o,
            Options {
                apps: vec![10, 20],
                restarts: 5,
                ps_runs: 7,
                json: Some("out.json".into())
            }
        );
    }

    #[test]
    fn bad_input_is_named() {
        assert!(
            parse_str("--apps 10,x")
                .unwrap_err()
                .starts_with("--apps: `x`")
        );
        assert!(
            parse_str("--restarts 0")
                .unwrap_err()
                .starts_with("--restarts: `0`")
        );
        assert!(
            parse_str("--json")
                .unwrap_err()
                .starts_with("--json needs a value")
        );
        assert!(
            parse_str("--bogus")
                .unwrap_err()
                .starts_with("unknown argument `--bogus`")
        );
        assert_eq!(parse_str("--help").unwrap(), None);
    }
}
