//! `[[job]]` tables of an app file: work that runs to its end, on a schedule or on demand.
//! A job takes the keys of an `[[app]]` that make sense for one run (`command`, `args`, `cwd`,
//! `env`, identity, limits, logs, stop signal and timeout, backoff between retries) plus its
//! own (`schedule`, `timezone`, `overlap`, `catch_up`, `timeout_s`, `retries`, `priority`,
//! `key`, `retry_on_node_loss`). Keys that only mean something for a long-running app
//! (`instances`, `restart`, `health`, `watch`, ...) are refused by name.

use crate::supervisor::backoff::{Backoff, RestartPolicy};
use crate::supervisor::limits;
use crate::supervisor::spec::{self, AppSpec, SpecError};
use chrono::{TimeZone, Utc};
use herd_cluster::schedule::Schedule;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

/// What a tick does when a run of the same job is still queued or running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Overlap {
    /// Skip the tick (recorded as `skipped`, reason `overlap`).
    #[default]
    Forbid,
    /// Queue it anyway: copies may run side by side.
    Allow,
    /// Stop the running copy (`cancelled`), then run the new one.
    Replace,
}

impl Overlap {
    pub fn as_str(self) -> &'static str {
        match self {
            Overlap::Forbid => "forbid",
            Overlap::Allow => "allow",
            Overlap::Replace => "replace",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    /// What one run executes (its `name` is the job's; `instances` 1, `restart` never).
    pub app: AppSpec,
    /// A cron expression with 5 fields (minute precision) or 6 (seconds first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// An IANA zone (`Europe/Berlin`); none: the host's local time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    #[serde(default)]
    pub overlap: Overlap,
    #[serde(default)]
    pub catch_up: bool,
    /// A run still going after this long is stopped (reason `timeout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_s: Option<u64>,
    /// Runs again after a failure, at most this many times.
    #[serde(default)]
    pub retries: u32,
    #[serde(default)]
    pub priority: i32,
    /// A run whose expanded key is already queued or running is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// In a cluster: a run lost with its node runs again elsewhere.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub retry_on_node_loss: bool,
}

/// The job's own keys (taken out of the table before the rest is read as an app).
const JOB_KEYS: &[&str] = &[
    "schedule",
    "timezone",
    "overlap",
    "catch_up",
    "timeout_s",
    "retries",
    "priority",
    "key",
    "retry_on_node_loss",
];

/// `[[app]]` keys that mean nothing for a run, with what to use instead.
const APP_ONLY: &[(&str, &str)] = &[
    (
        "instances",
        "a job runs one process per run; queue more runs with `herd run`",
    ),
    ("restart", "use `retries`"),
    ("max_restarts", "use `retries`"),
    ("restart_window_s", "use `retries`"),
    ("stop_exit_codes", "a run's exit code is its result"),
    ("health", "a run is judged by its exit code"),
    ("max_memory_mb", "use `memory_max_mb` (a kernel limit)"),
    ("depends_on", "remove it"),
    ("cron_restart", "use `schedule`"),
    ("listen", "remove it"),
    ("on_disconnect", "remove it"),
    ("on_secret_change", "a run reads its secrets when it starts"),
    ("ready", "remove it"),
    ("watchdog_s", "use `timeout_s`"),
    ("watch", "remove it"),
    ("watch_ignore", "remove it"),
    ("watch_debounce_ms", "remove it"),
];

/// The most retries a job may ask for.
pub const MAX_RETRIES: u32 = 100;
/// Priorities are within ±this.
pub const MAX_PRIORITY: i32 = 1_000_000;
/// The longest `key` template.
const MAX_KEY: usize = 256;

impl JobSpec {
    pub fn name(&self) -> &str {
        &self.app.name
    }

    /// A quick job for tests: `command args`, on demand.
    #[cfg(test)]
    pub fn quick(name: &str, command: &str, args: Vec<String>) -> Self {
        Self {
            app: run_app(AppSpec::quick(name, command, args)),
            schedule: None,
            timezone: None,
            overlap: Overlap::default(),
            catch_up: false,
            timeout_s: None,
            retries: 0,
            priority: 0,
            key: None,
            retry_on_node_loss: false,
        }
    }

    /// The job's schedule, if it has one.
    pub fn schedule(&self) -> Option<Schedule<'_>> {
        Some(Schedule {
            cron: self.schedule.as_deref()?,
            timezone: self.timezone.as_deref(),
            catch_up: self.catch_up,
        })
    }

    pub fn zone(&self) -> Option<chrono_tz::Tz> {
        self.timezone.as_deref().and_then(|z| z.parse().ok())
    }

    pub fn timeout(&self) -> Option<Duration> {
        self.timeout_s
            .map(|s| limits::clamp(Duration::from_secs(s)))
    }

    pub fn backoff(&self) -> Backoff {
        self.app.backoff()
    }

    /// The first tick strictly after `after_ms`, in the job's zone.
    pub fn next_tick_after(&self, after_ms: u64) -> Option<u64> {
        self.schedule()?.next_tick_after(after_ms)
    }

    /// The key of a run queued at `at_ms`: `{job}`, `{date}` (YYYY-MM-DD), `{hour}` (HH) and
    /// `{minute}` (HH:MM) in the job's zone, `{tick}` (seconds since the epoch).
    pub fn key_at(&self, at_ms: u64) -> Option<String> {
        let template = self.key.as_deref()?;
        let at = Utc
            .timestamp_millis_opt(i64::try_from(at_ms).unwrap_or(i64::MAX))
            .single()
            .unwrap_or_default();
        let local = |f: &str| match self.zone() {
            Some(tz) => at.with_timezone(&tz).format(f).to_string(),
            None => at.with_timezone(&chrono::Local).format(f).to_string(),
        };
        Some(
            template
                .replace("{job}", self.name())
                .replace("{date}", &local("%Y-%m-%d"))
                .replace("{hour}", &local("%H"))
                .replace("{minute}", &local("%H:%M"))
                .replace("{tick}", &(at_ms / 1000).to_string()),
        )
    }

    fn validate(&self) -> Result<(), (&'static str, String)> {
        if let Some(s) = &self.schedule {
            let cron: croner::Cron = s.parse().map_err(|e| {
                (
                    "schedule",
                    format!(
                        "`{s}` is not a cron expression ({e}); write 5 fields (`0 3 * * *`: 03:00 daily) or 6 with seconds first (`*/10 * * * * *`)"
                    ),
                )
            })?;
            if cron.find_next_occurrence(&Utc::now(), false).is_err() {
                return Err((
                    "schedule",
                    format!("`{s}` never comes; check the date fields"),
                ));
            }
        }
        if let Some(z) = &self.timezone
            && z.parse::<chrono_tz::Tz>().is_err()
        {
            return Err((
                "timezone",
                format!(
                    "`{z}` is not a time zone; use an IANA name such as `Europe/Berlin` or `UTC`, or remove the key for the host's local time"
                ),
            ));
        }
        if self.timezone.is_some() && self.schedule.is_none() {
            return Err((
                "timezone",
                "only means something with `schedule`; add one or remove the key".into(),
            ));
        }
        if let Some(t) = self.timeout_s {
            if t == 0 {
                return Err(("timeout_s", "must be at least 1 (or left out)".into()));
            }
            limits::check_secs(t).map_err(|why| ("timeout_s", why))?;
        }
        if self.retries > MAX_RETRIES {
            return Err((
                "retries",
                format!("{} is more than the limit of {MAX_RETRIES}", self.retries),
            ));
        }
        if !(-MAX_PRIORITY..=MAX_PRIORITY).contains(&self.priority) {
            return Err((
                "priority",
                format!("must be between -{MAX_PRIORITY} and {MAX_PRIORITY}"),
            ));
        }
        if let Some(k) = &self.key
            && (k.is_empty() || k.len() > MAX_KEY || k.contains('\0'))
        {
            return Err(("key", format!("must be 1 to {MAX_KEY} bytes without NUL")));
        }
        Ok(())
    }
}

/// What a run executes: the job's app keys, one instance, never restarted by the supervisor.
fn run_app(mut app: AppSpec) -> AppSpec {
    app.instances = 1;
    app.restart = RestartPolicy::Never;
    app
}

/// The `[[job]]` tables of an app file, checked (the whole file is refused on the first
/// problem, naming file, job and key). `app_names` are the file's apps: a job may not share
/// a name with one.
pub fn parse_jobs(
    source: &str,
    text: &str,
    base: &Path,
    app_names: &[&str],
) -> Result<Vec<JobSpec>, SpecError> {
    let (_, tables) = spec::tables(source, text)?;
    let mut jobs = Vec::with_capacity(tables.len());
    let mut seen = HashSet::new();
    for (i, mut table) in tables.into_iter().enumerate() {
        let label = spec::label("job", i, &table);
        let err =
            |key: &str, why: String| SpecError(format!("{source}: {label}: key `{key}`: {why}"));
        for (key, instead) in APP_ONLY {
            if table.contains_key(*key) {
                return Err(err(key, format!("is not a job key; {instead}")));
            }
        }
        let mut own = toml::Table::new();
        for key in JOB_KEYS {
            if let Some(v) = table.remove(*key) {
                own.insert((*key).to_string(), v);
            }
        }
        let app = spec::from_table(source, &label, table, base)?;
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Own {
            schedule: Option<String>,
            timezone: Option<String>,
            overlap: Option<String>,
            #[serde(default)]
            catch_up: bool,
            timeout_s: Option<u64>,
            #[serde(default)]
            retries: u32,
            #[serde(default)]
            priority: i32,
            key: Option<String>,
            #[serde(default)]
            retry_on_node_loss: bool,
        }
        let own: Own = own.try_into().map_err(|e: toml::de::Error| {
            let msg = e.message().trim_end().to_string();
            let msg = msg
                .replace("unknown variant", "unknown value")
                .replace("expected one of", "known values are");
            SpecError(format!("{source}: {label}: {msg}"))
        })?;
        let overlap = match own.overlap.as_deref() {
            None | Some("forbid") => Overlap::Forbid,
            Some("allow") => Overlap::Allow,
            Some("replace") => Overlap::Replace,
            Some(other) => {
                return Err(err(
                    "overlap",
                    format!("`{other}` is not one of `forbid` (skip the tick), `allow`, `replace`"),
                ));
            }
        };
        let job = JobSpec {
            app: run_app(app),
            schedule: own.schedule.map(|s| s.trim().to_string()),
            timezone: own.timezone,
            overlap,
            catch_up: own.catch_up,
            timeout_s: own.timeout_s,
            retries: own.retries,
            priority: own.priority,
            key: own.key,
            retry_on_node_loss: own.retry_on_node_loss,
        };
        job.validate().map_err(|(key, why)| err(key, why))?;
        if app_names.contains(&job.name()) {
            return Err(err(
                "name",
                format!(
                    "`{}` is also an app in this file; a job and an app need different names",
                    job.name()
                ),
            ));
        }
        if !seen.insert(job.name().to_string()) {
            return Err(err(
                "name",
                format!(
                    "`{}` is used by more than one job; names must be unique",
                    job.name()
                ),
            ));
        }
        jobs.push(job);
    }
    Ok(jobs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<JobSpec>, String> {
        parse_jobs("jobs.toml", text, Path::new("/srv"), &["web"]).map_err(|e| e.0)
    }

    #[test]
    fn a_job_takes_app_keys_and_its_own() {
        let jobs = parse(
            "[[job]]\nname = \"report\"\ncommand = \"./report.sh\"\nschedule = \"0 3 * * *\"\ntimezone = \"Europe/Berlin\"\noverlap = \"replace\"\ncatch_up = true\ntimeout_s = 60\nretries = 2\npriority = 10\nkey = \"report-{date}\"\nstop_timeout_s = 3\n",
        )
        .unwrap();
        let j = &jobs[0];
        assert_eq!(j.name(), "report");
        assert_eq!(j.app.command, "/srv/./report.sh");
        assert_eq!((j.app.instances, j.app.restart), (1, RestartPolicy::Never));
        assert_eq!(j.overlap, Overlap::Replace);
        assert!(j.catch_up);
        assert_eq!((j.timeout_s, j.retries, j.priority), (Some(60), 2, 10));
        assert_eq!(j.app.stop_timeout_s, 3);
    }

    #[test]
    fn bad_values_name_the_job_and_key() {
        for (text, key) in [
            ("schedule = \"every day\"", "schedule"),
            (
                "schedule = \"0 3 * * *\"\ntimezone = \"Mars/Olympus\"",
                "timezone",
            ),
            ("overlap = \"sometimes\"", "overlap"),
            ("priority = 2000000", "priority"),
            ("retries = 1000", "retries"),
            ("timeout_s = 0", "timeout_s"),
            ("instances = 2", "instances"),
            ("restart = \"always\"", "restart"),
        ] {
            let err =
                parse(&format!("[[job]]\nname = \"j\"\ncommand = \"x\"\n{text}\n")).unwrap_err();
            assert!(err.contains("job `j`"), "{err}");
            assert!(err.contains(key), "{text}: {err}");
        }
    }

    #[test]
    fn a_job_may_not_share_a_name_with_an_app_or_a_job() {
        assert!(
            parse("[[job]]\nname = \"web\"\ncommand = \"x\"\n")
                .unwrap_err()
                .contains("also an app")
        );
        let two =
            "[[job]]\nname = \"j\"\ncommand = \"x\"\n[[job]]\nname = \"j\"\ncommand = \"y\"\n";
        assert!(parse(two).unwrap_err().contains("more than one job"));
    }

    #[test]
    fn keys_expand_in_the_zone() {
        let mut j = JobSpec::quick("nightly", "x", vec![]);
        j.timezone = Some("UTC".into());
        j.key = Some("{job}-{date}-{hour}".into());
        assert_eq!(
            j.key_at(1_796_601_600_000).unwrap(),
            "nightly-2026-12-07-00"
        );
    }
}
