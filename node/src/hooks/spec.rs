//! A `[[hook]]` table of `config.toml`: which events it takes, where it sends them, how hard
//! it tries. Checked like every other key of the config: a bad hook refuses the whole file
//! (at `herd up` and at a reload, which then keeps the running config), naming the hook, the
//! key and the fix.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// Every event kind herd emits (`supervisor::facts`, the audit events, the jobs' events and
/// the master's `node_offline`). A test holds the README's event list to it.
pub const KNOWN_KINDS: &[&str] = &[
    "started",
    "exited",
    "restarting",
    "crashed",
    "stopping",
    "stopped",
    "killed",
    "health",
    "unhealthy_restart",
    "memory_limit",
    "reload",
    "waiting",
    "awaiting_lease",
    "adopted",
    "died_while_down",
    "spawn_failed",
    "registered",
    "updated",
    "deleted",
    "scaled",
    "cron_restart",
    "ready",
    "watchdog",
    "main_pid",
    "watch_restart",
    "watching",
    "watch_started",
    "watch_refused",
    "secret_changed",
    "secret_deleted",
    "token_created",
    "token_revoked",
    "secret_set",
    "drain",
    "undrain",
    "cluster_step_down",
    "cluster_leave",
    "deployed",
    "undeployed",
    "cluster_scaled",
    "cluster_restart",
    "job_queued",
    "job_started",
    "job_finished",
    "job_skipped",
    "job_lost",
    "node_offline",
];

/// Bounds on what a user may ask for (durations are also multiplied with saturation).
const MAX_RETRIES: u32 = 1000;
const MAX_TIMEOUT_S: u64 = 3600;
const MAX_BACKOFF_MS: u64 = 24 * 3600 * 1000;
const MAX_NAME: usize = 64;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookSpec {
    /// Letters, digits, `-`, `_`: it names the hook's queue directory.
    pub name: String,
    /// Event kinds (`crashed`, `job_finished`, ...).
    pub on: Vec<String>,
    /// Globs on the event's app; events of no app (`app` = `-`) always pass.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub apps: Vec<String>,
    /// An `http://` or `https://` URL that gets the event as a JSON POST.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
    /// Extra request headers of a webhook (e.g. `Authorization`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// A program and its arguments that get the event as JSON on stdin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<Vec<String>>,
    /// Attempts after the first; then the delivery becomes a dead letter.
    #[serde(default = "defaults::retries")]
    pub retries: u32,
    /// Longest one attempt may take (connect to last byte, or the program's run).
    #[serde(default = "defaults::timeout_s")]
    pub timeout_s: u64,
    #[serde(default = "defaults::backoff_initial_ms")]
    pub backoff_initial_ms: u64,
    #[serde(default = "defaults::backoff_max_ms")]
    pub backoff_max_ms: u64,
}

mod defaults {
    pub fn retries() -> u32 {
        5
    }
    pub fn timeout_s() -> u64 {
        10
    }
    pub fn backoff_initial_ms() -> u64 {
        1000
    }
    pub fn backoff_max_ms() -> u64 {
        60_000
    }
}

/// Where a hook sends its deliveries.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    Webhook {
        url: http::Uri,
        headers: Vec<(http::HeaderName, http::HeaderValue)>,
    },
    Exec(Vec<String>),
}

impl HookSpec {
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_s)
    }

    /// The wait before attempt `attempt + 1` after `attempt` failures (1, 2, ...): initial
    /// doubled each time, at most `backoff_max_ms`.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(63);
        let ms = self
            .backoff_initial_ms
            .saturating_mul(1u64 << doublings)
            .min(self.backoff_max_ms);
        Duration::from_millis(ms)
    }

    /// The checked target; `validate` has made sure it parses.
    pub fn target(&self) -> Result<Target, String> {
        match (&self.webhook, &self.exec) {
            (Some(url), None) => {
                let url = parse_url(url)?;
                let mut headers = Vec::new();
                for (k, v) in &self.headers {
                    let name = http::HeaderName::from_bytes(k.as_bytes())
                        .map_err(|_| format!("key `headers`: `{k}` is not a header name"))?;
                    let value = http::HeaderValue::from_str(v).map_err(|_| {
                        format!("key `headers`: the value of `{k}` is not a valid header value")
                    })?;
                    headers.push((name, value));
                }
                Ok(Target::Webhook { url, headers })
            }
            (None, Some(argv)) => Ok(Target::Exec(argv.clone())),
            (Some(_), Some(_)) => Err(
                "keys `webhook` and `exec`: give one of them, not both (make two hooks to do both)"
                    .into(),
            ),
            (None, None) => Err(
                "give `webhook = \"https://...\"` or `exec = [\"/path/to/program\", ...]`".into(),
            ),
        }
    }

    /// The apps filter, compiled.
    pub fn app_filter(&self) -> Result<Option<globset::GlobSet>, String> {
        if self.apps.is_empty() {
            return Ok(None);
        }
        let mut set = globset::GlobSetBuilder::new();
        for g in &self.apps {
            set.add(
                globset::Glob::new(g)
                    .map_err(|e| format!("key `apps`: `{g}` is not a glob: {e}"))?,
            );
        }
        set.build()
            .map(Some)
            .map_err(|e| format!("key `apps`: {e}"))
    }

    /// Every value checked; the error names the key and the fix (the caller names the hook).
    pub fn validate(&self) -> Result<(), String> {
        if self.name.is_empty()
            || self.name.len() > MAX_NAME
            || !self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(format!(
                "key `name`: `{}` must be 1 to {MAX_NAME} letters, digits, `-` or `_`",
                self.name
            ));
        }
        if self.on.is_empty() {
            return Err("key `on`: list at least one event kind, e.g. on = [\"crashed\"]".into());
        }
        for kind in &self.on {
            if !KNOWN_KINDS.contains(&kind.as_str()) {
                return Err(format!(
                    "key `on`: unknown event kind `{kind}`; known kinds: {}",
                    KNOWN_KINDS.join(", ")
                ));
            }
        }
        self.app_filter()?;
        self.target()?;
        if !self.headers.is_empty() && self.webhook.is_none() {
            return Err("key `headers`: only a `webhook` hook sends headers".into());
        }
        if let Some(argv) = &self.exec
            && (argv.is_empty() || argv[0].is_empty() || argv.iter().any(|a| a.contains('\0')))
        {
            return Err(
                "key `exec`: give the program and its arguments, e.g. [\"/usr/local/bin/notify\", \"--fast\"]"
                    .into(),
            );
        }
        if self.retries > MAX_RETRIES {
            return Err(format!(
                "key `retries`: {} is more than {MAX_RETRIES}",
                self.retries
            ));
        }
        if self.timeout_s == 0 || self.timeout_s > MAX_TIMEOUT_S {
            return Err(format!(
                "key `timeout_s`: {} is out of range (1 to {MAX_TIMEOUT_S})",
                self.timeout_s
            ));
        }
        if self.backoff_initial_ms == 0 || self.backoff_initial_ms > MAX_BACKOFF_MS {
            return Err(format!(
                "key `backoff_initial_ms`: {} is out of range (1 to {MAX_BACKOFF_MS})",
                self.backoff_initial_ms
            ));
        }
        if self.backoff_max_ms < self.backoff_initial_ms || self.backoff_max_ms > MAX_BACKOFF_MS {
            return Err(format!(
                "key `backoff_max_ms`: {} is out of range ({} to {MAX_BACKOFF_MS})",
                self.backoff_max_ms, self.backoff_initial_ms
            ));
        }
        Ok(())
    }
}

fn parse_url(url: &str) -> Result<http::Uri, String> {
    let bad = || format!("key `webhook`: `{url}` is not an http:// or https:// URL");
    let uri: http::Uri = url.parse().map_err(|_| bad())?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none_or(str::is_empty) {
        return Err(bad());
    }
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(format!(
            "key `webhook`: `{url}` carries credentials; put them in `headers` (e.g. Authorization) instead"
        ));
    }
    Ok(uri)
}

/// Checks the `hook` entries of a parsed `config.toml` one by one, so an error names its
/// hook (serde's own error for the whole file would not). Called before the file becomes a
/// `DaemonConfig`.
pub fn check_tables(table: &toml::Table) -> Result<(), String> {
    let Some(value) = table.get("hook") else {
        return Ok(());
    };
    let Some(hooks) = value.as_array() else {
        return Err("key `hook`: write each hook as a [[hook]] table".into());
    };
    let mut names: Vec<&str> = Vec::new();
    for (i, h) in hooks.iter().enumerate() {
        let label = h
            .get("name")
            .and_then(|n| n.as_str())
            .map_or_else(|| format!("number {}", i + 1), |n| format!("`{n}`"));
        let spec: HookSpec = h.clone().try_into().map_err(|e: toml::de::Error| {
            format!(
                "[[hook]] {label}: {}",
                e.message()
                    .trim_end()
                    .replace("unknown field", "unknown key")
            )
        })?;
        spec.validate()
            .map_err(|e| format!("[[hook]] {label}: {e}"))?;
        if names.contains(&spec.name.as_str()) {
            return Err(format!(
                "[[hook]] {label}: key `name`: another hook has this name; give each hook its own"
            ));
        }
        names.push(h.get("name").and_then(|n| n.as_str()).unwrap_or_default());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Result<(), String> {
        check_tables(&toml::from_str(text).unwrap())
    }

    const OK: &str = "[[hook]]\nname = \"pager\"\non = [\"crashed\"]\nwebhook = \"https://hooks.example/herd\"\n";

    #[test]
    fn a_good_hook_passes_and_gets_the_defaults() {
        check(OK).unwrap();
        let t: toml::Table = toml::from_str(OK).unwrap();
        let spec: HookSpec = t["hook"].as_array().unwrap()[0].clone().try_into().unwrap();
        assert_eq!((spec.retries, spec.timeout_s), (5, 10));
        assert!(matches!(spec.target(), Ok(Target::Webhook { .. })));
    }

    #[test]
    fn errors_name_the_hook_the_key_and_the_fix() {
        let e = check(&OK.replace("crashed", "crashd")).unwrap_err();
        assert!(
            e.contains("[[hook]] `pager`: key `on`: unknown event kind `crashd`"),
            "{e}"
        );
        assert!(
            e.contains("job_finished") && e.contains("node_offline"),
            "{e}"
        );
        let e = check(&format!("{OK}exec = [\"/bin/true\"]\n")).unwrap_err();
        assert!(e.contains("`pager`: keys `webhook` and `exec`"), "{e}");
        let e = check("[[hook]]\nname = \"x\"\non = [\"exited\"]\n").unwrap_err();
        assert!(e.contains("`x`: give `webhook"), "{e}");
        let e = check(&OK.replace("https://hooks.example/herd", "ftp://h/x")).unwrap_err();
        assert!(
            e.contains("key `webhook`: `ftp://h/x` is not an http"),
            "{e}"
        );
        let e = check(&format!("{OK}retry = 3\n")).unwrap_err();
        assert!(e.contains("`pager`: unknown key `retry`"), "{e}");
        let e = check(&format!("{OK}timeout_s = 0\n")).unwrap_err();
        assert!(e.contains("key `timeout_s`"), "{e}");
        let e = check(&format!("{OK}{OK}")).unwrap_err();
        assert!(e.contains("another hook has this name"), "{e}");
        let e = check(&OK.replace("pager", "../x")).unwrap_err();
        assert!(e.contains("key `name`"), "{e}");
        let e = check(&format!("{OK}apps = [\"a[\"]\n")).unwrap_err();
        assert!(e.contains("key `apps`"), "{e}");
    }

    #[test]
    fn backoff_doubles_up_to_the_maximum_without_overflow() {
        let t: toml::Table = toml::from_str(OK).unwrap();
        let mut spec: HookSpec = t["hook"].as_array().unwrap()[0].clone().try_into().unwrap();
        spec.backoff_initial_ms = 100;
        spec.backoff_max_ms = 1000;
        let ms: Vec<u128> = (1..6).map(|a| spec.backoff(a).as_millis()).collect();
        assert_eq!(ms, [100, 200, 400, 800, 1000]);
        spec.backoff_initial_ms = MAX_BACKOFF_MS;
        spec.backoff_max_ms = MAX_BACKOFF_MS;
        assert_eq!(
            spec.backoff(u32::MAX),
            Duration::from_millis(MAX_BACKOFF_MS)
        );
    }

    /// The README's event list: every kind listed there may be hooked.
    #[test]
    fn every_event_the_readme_lists_is_a_known_kind() {
        let readme = include_str!("../../../README.md");
        let start = readme
            .find("**Events** are written one JSON object per line")
            .expect("the README's event list");
        let mut in_list = false;
        for line in readme[start..].lines().skip(1) {
            if let Some(item) = line.strip_prefix("- ") {
                in_list = true;
                let spec = item.split('`').nth(1).unwrap_or_default();
                let name = spec.split(' ').next().unwrap_or_default();
                assert!(
                    KNOWN_KINDS.contains(&name),
                    "`{name}` is not in KNOWN_KINDS"
                );
            } else if in_list && !line.starts_with("  ") {
                break;
            }
        }
    }
}
