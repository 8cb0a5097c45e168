//! `[app.health]` as written in an app file: which probe, how often, how long to wait, how
//! many failures restart the instance. Bounded at load (a day at most per duration), so a
//! probe loop can neither spin nor overflow a clock.

use super::spec::nul_in;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// `[app.health]`: exactly one of `http`, `tcp`, `exec`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthSpec {
    /// Healthy on a 2xx or 3xx answer to a GET.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
    /// Healthy when a TCP connection opens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<String>,
    /// Healthy when the command exits 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<Vec<String>>,
    #[serde(default = "probe_defaults::interval_s")]
    pub interval_s: f64,
    #[serde(default = "probe_defaults::timeout_s")]
    pub timeout_s: f64,
    /// Consecutive failed probes that restart the instance.
    #[serde(default = "probe_defaults::failures")]
    pub failures: u32,
    /// No probe counts until this long after start.
    #[serde(default = "probe_defaults::grace_s")]
    pub grace_s: f64,
}

/// Seconds as a duration that never panics (`from_secs_f64` does on NaN, negative or huge
/// values): validation keeps them within 0..=86400, this holds even for an unchecked spec.
fn probe_secs(v: f64) -> Duration {
    Duration::try_from_secs_f64(v.clamp(0.0, MAX_PROBE_S)).unwrap_or(Duration::from_secs(1))
}

/// The longest probe interval, timeout or grace period (a day).
const MAX_PROBE_S: f64 = 86_400.0;

/// The most consecutive failures a probe may wait for.
const MAX_PROBE_FAILURES: u32 = 10_000;

impl HealthSpec {
    pub fn interval(&self) -> Duration {
        probe_secs(self.interval_s)
    }
    pub fn timeout(&self) -> Duration {
        probe_secs(self.timeout_s)
    }
    pub fn grace(&self) -> Duration {
        probe_secs(self.grace_s)
    }

    pub(super) fn validate(&self) -> Result<(), (&'static str, String)> {
        let kinds = [self.http.is_some(), self.tcp.is_some(), self.exec.is_some()];
        if kinds.iter().filter(|k| **k).count() != 1 {
            return Err((
                "health",
                "give exactly one of `http`, `tcp` or `exec`".into(),
            ));
        }
        if let Some(url) = &self.http {
            let ok = url
                .parse::<http::Uri>()
                .is_ok_and(|u| u.scheme_str() == Some("http") && u.host().is_some());
            if !ok {
                return Err((
                    "health.http",
                    format!("`{url}` is not an http:// URL with a host"),
                ));
            }
        }
        if let Some(addr) = &self.tcp
            && addr
                .rsplit_once(':')
                .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
        {
            return Err(("health.tcp", format!("`{addr}` is not host:port")));
        }
        if self
            .exec
            .as_ref()
            .is_some_and(|c| c.is_empty() || c[0].is_empty())
        {
            return Err((
                "health.exec",
                "needs a command, e.g. [\"pg_isready\", \"-q\"]".into(),
            ));
        }
        let ranges = [
            ("health.interval_s", self.interval_s, 0.05),
            ("health.timeout_s", self.timeout_s, 0.05),
            ("health.grace_s", self.grace_s, 0.0),
        ];
        for (key, v, min) in ranges {
            if !v.is_finite() || v < min || v > MAX_PROBE_S {
                return Err((key, format!("{v} is out of range ({min} to 86400 seconds)")));
            }
        }
        if self.failures == 0 || self.failures > MAX_PROBE_FAILURES {
            return Err((
                "health.failures",
                format!("must be 1 to {MAX_PROBE_FAILURES}"),
            ));
        }
        if let Some(arg) = self.exec.iter().flatten().find(|a| a.contains('\0')) {
            return Err(("health.exec", nul_in(arg)));
        }
        Ok(())
    }
}

mod probe_defaults {
    pub fn interval_s() -> f64 {
        15.0
    }
    pub fn timeout_s() -> f64 {
        2.0
    }
    pub fn failures() -> u32 {
        3
    }
    pub fn grace_s() -> f64 {
        10.0
    }
}
