//! Command-line options.

use crate::cluster::Knobs;
use crate::error::Result;
use std::path::PathBuf;

pub const USAGE: &str = "\
usage: herd-bench [--apps N[,N...]] [--restarts N] [--ps-runs N] [--idle-secs N]
                  [--churn-secs N] [--kills N] [--compare] [--only S[,S...]] [--json FILE]
                  [--cluster [--cluster-kills N] [--cluster-idle-secs N] [--cluster-write-secs N]]

  --apps        app counts for the start / memory / down scenario (default 100,1000)
  --restarts    SIGKILLs in the restart-latency scenario (default 50)
  --ps-runs     `herd ps` invocations timed with 100 apps registered (default 200)
  --idle-secs   idle scenario: daemon CPU measured over N s with 100 apps (default 120)
  --churn-secs  churn scenario: N s of crash loops, restarts and scaling (default 300)
  --kills       SIGKILLs per supervisor after the idle period (default 30, at most 100)
  --compare     also run the idle scenario for PM2, supervisord, s6 and runit (PM2 and
                supervisord installed on demand into target/bench-tools from npm and PyPI,
                s6 and runit with apt-get as root; each skipped if that fails)
  --only        run only these scenarios: apps, restart, ps, idle, churn (default: all;
                --compare always runs idle)
  --json        also write the results to FILE as JSON
  --cluster     3 herd daemons against a 3-member etcd on loopback (etcd installed with
                apt-get if missing): failover, durable writes/s, idle CPU; alone unless
                --only names other scenarios
  --cluster-kills       leader kills per tool (default 20)
  --cluster-idle-secs   idle CPU of each 3-node cluster over N s (default 30)
  --cluster-write-secs  each write load (1, 16, 64 clients) lasts N s (default 10)

Drives target/release/herd, which must sit next to this executable:
  cargo build --release -p herd -p herd-bench && target/release/herd-bench";

/// The scenarios `--only` can pick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    Apps,
    Restart,
    Ps,
    Idle,
    Churn,
}

impl Scenario {
    pub const ALL: [Scenario; 5] = [
        Scenario::Apps,
        Scenario::Restart,
        Scenario::Ps,
        Scenario::Idle,
        Scenario::Churn,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Apps => "apps",
            Scenario::Restart => "restart",
            Scenario::Ps => "ps",
            Scenario::Idle => "idle",
            Scenario::Churn => "churn",
        }
    }
}

#[derive(Debug, PartialEq)]
pub struct Options {
    pub apps: Vec<usize>,
    pub restarts: usize,
    pub ps_runs: usize,
    pub idle_secs: u64,
    pub churn_secs: u64,
    pub kills: usize,
    pub compare: bool,
    pub only: Vec<Scenario>,
    pub json: Option<PathBuf>,
    pub cluster: Option<Knobs>,
}

impl Options {
    /// Whether `s` runs (idle always does with `--compare`: it is herd's side of the table).
    pub fn runs(&self, s: Scenario) -> bool {
        self.only.contains(&s) || (s == Scenario::Idle && self.compare)
    }
}

impl Default for Options {
    fn default() -> Self {
        Self {
            apps: vec![100, 1000],
            restarts: 50,
            ps_runs: 200,
            idle_secs: 120,
            churn_secs: 300,
            kills: 30,
            compare: false,
            only: Scenario::ALL.to_vec(),
            json: None,
            cluster: None,
        }
    }
}

/// `Ok(None)` means help was asked for.
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Option<Options>> {
    let mut opts = Options::default();
    let mut args = args.into_iter();
    let (mut only_given, mut cluster) = (false, false);
    let mut knobs = Knobs::default();
    while let Some(arg) = args.next() {
        if arg == "-h" || arg == "--help" {
            return Ok(None);
        }
        if arg == "--compare" {
            opts.compare = true;
            continue;
        }
        if arg == "--cluster" {
            cluster = true;
            continue;
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
            "--idle-secs" => opts.idle_secs = count(&flag, &value()?)? as u64,
            "--churn-secs" => opts.churn_secs = count(&flag, &value()?)? as u64,
            "--kills" => match count(&flag, &value()?)? {
                n @ 1..=100 => opts.kills = n,
                n => return Err(format!("--kills: {n} is more than 100 (one kill per app)")),
            },
            "--only" => {
                only_given = true;
                opts.only = value()?.split(',').map(scenario).collect::<Result<_>>()?
            }
            "--cluster-kills" => knobs.kills = count(&flag, &value()?)?,
            "--cluster-idle-secs" => knobs.idle_secs = count(&flag, &value()?)? as u64,
            "--cluster-write-secs" => knobs.write_secs = count(&flag, &value()?)? as u64,
            "--json" => opts.json = Some(PathBuf::from(value()?)),
            _ => return Err(format!("unknown argument `{flag}`\n\n{USAGE}")),
        }
    }
    if cluster {
        // The cluster run takes minutes of its own: the other scenarios only when named.
        if !only_given {
            opts.only.clear();
        }
        opts.cluster = Some(knobs);
    }
    Ok(Some(opts))
}

fn scenario(text: &str) -> Result<Scenario> {
    let text = text.trim();
    Scenario::ALL
        .into_iter()
        .find(|s| s.name() == text)
        .ok_or(format!(
            "--only: `{text}` is not one of apps, restart, ps, idle, churn"
        ))
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
        let o = parse_str(
            "--apps 10,20 --restarts=5 --ps-runs 7 --idle-secs 60 --churn-secs=120 --kills 9 \
             --compare --only idle,churn --json=out.json",
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            o,
            Options {
                apps: vec![10, 20],
                restarts: 5,
                ps_runs: 7,
                idle_secs: 60,
                churn_secs: 120,
                kills: 9,
                compare: true,
                only: vec![Scenario::Idle, Scenario::Churn],
                json: Some("out.json".into()),
                cluster: None,
            }
        );
        assert!(o.runs(Scenario::Churn) && !o.runs(Scenario::Apps));
    }

    #[test]
    fn compare_always_runs_idle() {
        let o = parse_str("--only churn --compare").unwrap().unwrap();
        assert!(o.runs(Scenario::Idle) && o.runs(Scenario::Churn) && !o.runs(Scenario::Ps));
        let o = parse_str("--only churn").unwrap().unwrap();
        assert!(!o.runs(Scenario::Idle));
    }

    #[test]
    fn cluster_runs_alone_unless_only_names_more() {
        let o = parse_str("--cluster --cluster-kills 25").unwrap().unwrap();
        assert!(o.only.is_empty());
        assert_eq!(o.cluster.unwrap().kills, 25);
        let o = parse_str("--cluster --only idle").unwrap().unwrap();
        assert!(o.runs(Scenario::Idle) && o.cluster.is_some());
        assert!(
            parse_str("--cluster-kills 5")
                .unwrap()
                .unwrap()
                .cluster
                .is_none()
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
        assert!(
            parse_str("--only idle,bogus")
                .unwrap_err()
                .starts_with("--only: `bogus`")
        );
        assert!(
            parse_str("--kills 101")
                .unwrap_err()
                .starts_with("--kills: 101")
        );
        assert_eq!(parse_str("--help").unwrap(), None);
    }
}
