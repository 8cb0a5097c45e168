//! App files: TOML with one or more `[[app]]` tables. A file is accepted whole or not at all;
//! every error names the file, the app and the key.

use super::app_env;
use super::backoff::{Backoff, RestartPolicy};
use super::identity::{self, rlimits::Limits};
use super::limits;
pub use super::notify::Readiness;
pub use super::probe_spec::HealthSpec;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One app as written in an app file (and as persisted in `state.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppSpec {
    pub name: String,
    pub command: String,
    #[serde(default)]
    pub args: Vec<String>,
    /// Resolved to an absolute path when the file is loaded.
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Start from an empty environment (plus `PATH`, `HOME`, `LANG` and `env_allow`) rather
    /// than the daemon's (always without herd's own variables; see `app_env`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub env_clear: bool,
    /// Daemon variables let through with `env_clear`: names, or prefixes ending in `*`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env_allow: Vec<String>,
    #[serde(default = "defaults::instances")]
    pub instances: u32,
    #[serde(default)]
    pub restart: RestartPolicy,
    #[serde(default = "defaults::backoff_initial_ms")]
    pub backoff_initial_ms: u64,
    #[serde(default = "defaults::backoff_max_ms")]
    pub backoff_max_ms: u64,
    #[serde(default = "defaults::max_restarts")]
    pub max_restarts: u32,
    #[serde(default = "defaults::restart_window_s")]
    pub restart_window_s: u64,
    #[serde(default = "defaults::stop_signal")]
    pub stop_signal: String,
    #[serde(default = "defaults::stop_timeout_s")]
    pub stop_timeout_s: u64,
    #[serde(default = "defaults::log_max_bytes")]
    pub log_max_bytes: u64,
    #[serde(default = "defaults::log_files")]
    pub log_files: u32,
    /// A probe that decides whether an instance is healthy (`[app.health]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthSpec>,
    /// RSS of the instance's process tree above this restarts it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_memory_mb: Option<u64>,
    /// Apps that must be running (and healthy, if probed) before this one starts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    /// Exit codes that never trigger a restart, whatever the policy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stop_exit_codes: Vec<i32>,
    /// A 5-field cron expression (local time): restart the app then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron_restart: Option<String>,
    /// Sockets herd binds once and hands to every instance as fd 3, 4, ... (`LISTEN_FDS`,
    /// systemd-style), so instances share one accept queue and a reload drops no connection.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listen: Vec<String>,
    /// Where `herd cluster deploy` may place instances (`[app.placement]`); ignored by a
    /// standalone `herd start`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<PlacementSpec>,
    /// `"keep"` (default) or `"stop"`: what a node cut off from the master does with the
    /// app's instances (cluster only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_disconnect: Option<OnDisconnect>,
    /// What a change of a secret the app's env names does: `"restart"` (default) or
    /// `"signal:SIGHUP"` (any signal name: sent to every instance, which then re-reads its
    /// own configuration; its environment keeps the old value until its next start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_secret_change: Option<String>,
    /// Run as this user (name, or uid with an entry): its uid, primary group, supplementary
    /// groups and `HOME`/`USER`/`LOGNAME`/`SHELL`. Needs a root daemon (see `identity`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Run with this primary group instead of the user's. Needs a root daemon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// The file-mode creation mask, as octal text (`"027"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub umask: Option<String>,
    /// Resource limits (`limits = { nofile = 4096, core = 0 }`).
    #[serde(default, skip_serializing_if = "Limits::is_empty")]
    pub limits: Limits,
    /// Kernel-enforced memory ceiling of each instance's cgroup, MiB (`memory.max`); an
    /// instance past it is OOM-killed by the kernel (`last_exit.reason == "oom"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_max_mb: Option<u64>,
    /// CPU quota of each instance's cgroup, percent of one core (`cpu.max`; 150 = 1.5 cores).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_max_percent: Option<u64>,
    /// Most processes and threads in each instance's cgroup (`pids.max`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids_max: Option<u64>,
    /// `"notify"`: the instance is `starting` until it sends `READY=1` on its own
    /// `NOTIFY_SOCKET` (see `notify`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<Readiness>,
    /// With `ready = "notify"`: an instance that sends no `WATCHDOG=1` for this long is
    /// restarted (reason `watchdog`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watchdog_s: Option<u64>,
    /// Restart (or reload) the app when these paths or globs, relative to `cwd`, change;
    /// `watch = true` is the whole cwd (see `file_watch`).
    #[serde(
        default,
        deserialize_with = "super::file_watch::rules::deserialize_watch",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub watch: Vec<String>,
    /// Changes that never count: globs relative to `cwd` (`*.log` matches at any depth).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub watch_ignore: Vec<String>,
    /// A burst of changes closer together than this gives one restart (default 500).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watch_debounce_ms: Option<u64>,
}

/// `[app.placement]`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlacementSpec {
    /// Node labels an eligible node must carry.
    #[serde(default)]
    pub constraints: BTreeMap<String, String>,
    /// Spread instances across the values of this node label.
    #[serde(default)]
    pub spread: Option<String>,
    #[serde(default)]
    pub max_per_node: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnDisconnect {
    Keep,
    Stop,
}

mod defaults {
    pub fn instances() -> u32 {
        1
    }
    pub fn backoff_initial_ms() -> u64 {
        1000
    }
    pub fn backoff_max_ms() -> u64 {
        30_000
    }
    pub fn max_restarts() -> u32 {
        5
    }
    pub fn restart_window_s() -> u64 {
        60
    }
    pub fn stop_signal() -> String {
        "SIGTERM".into()
    }
    pub fn stop_timeout_s() -> u64 {
        10
    }
    pub fn log_max_bytes() -> u64 {
        10 * 1024 * 1024
    }
    pub fn log_files() -> u32 {
        5
    }
}

/// The most instances one app may ask for; a typo like `instances = 100000` is refused.
pub const MAX_INSTANCES: u32 = 10_000;

impl AppSpec {
    /// A spec with every optional key at its default (the `herd start --name` quick form).
    pub fn quick(name: &str, command: &str, args: Vec<String>) -> Self {
        Self {
            name: name.into(),
            command: command.into(),
            args,
            cwd: None,
            env: BTreeMap::new(),
            env_clear: false,
            env_allow: Vec::new(),
            instances: defaults::instances(),
            restart: RestartPolicy::default(),
            backoff_initial_ms: defaults::backoff_initial_ms(),
            backoff_max_ms: defaults::backoff_max_ms(),
            max_restarts: defaults::max_restarts(),
            restart_window_s: defaults::restart_window_s(),
            stop_signal: defaults::stop_signal(),
            stop_timeout_s: defaults::stop_timeout_s(),
            log_max_bytes: defaults::log_max_bytes(),
            log_files: defaults::log_files(),
            health: None,
            max_memory_mb: None,
            depends_on: Vec::new(),
            stop_exit_codes: Vec::new(),
            cron_restart: None,
            listen: Vec::new(),
            placement: None,
            on_disconnect: None,
            on_secret_change: None,
            user: None,
            group: None,
            umask: None,
            limits: Limits::default(),
            ready: None,
            watchdog_s: None,
            memory_max_mb: None,
            cpu_max_percent: None,
            pids_max: None,
            watch: Vec::new(),
            watch_ignore: Vec::new(),
            watch_debounce_ms: None,
        }
    }

    /// What the app asks of its cgroup.
    pub fn cgroup_limits(&self) -> super::cgroup::Limits {
        super::cgroup::Limits {
            memory_max_mb: self.memory_max_mb,
            cpu_max_percent: self.cpu_max_percent,
            pids_max: self.pids_max,
        }
    }

    /// The signal `on_secret_change = "signal:..."` asks for; `None` means restart.
    pub fn secret_change_signal(&self) -> Option<nix::sys::signal::Signal> {
        self.on_secret_change
            .as_deref()
            .and_then(|v| v.strip_prefix("signal:"))
            .and_then(parse_signal)
    }

    /// The parsed cron schedule (validated at load).
    pub fn cron(&self) -> Option<croner::Cron> {
        self.cron_restart.as_deref().and_then(|c| c.parse().ok())
    }

    /// Whether an exit with this code is one the app asked never to restart.
    pub fn is_stop_exit(&self, code: Option<i32>) -> bool {
        code.is_some_and(|c| self.stop_exit_codes.contains(&c))
    }

    pub fn backoff(&self) -> Backoff {
        Backoff::new(
            Duration::from_millis(self.backoff_initial_ms),
            Duration::from_millis(self.backoff_max_ms),
        )
    }

    /// The quiet time that ends a burst of changes (clamped: a restored spec was never checked).
    pub fn watch_debounce(&self) -> Duration {
        let ms = self
            .watch_debounce_ms
            .unwrap_or(super::file_watch::rules::DEFAULT_DEBOUNCE_MS)
            .clamp(
                super::file_watch::rules::MIN_DEBOUNCE_MS,
                super::file_watch::rules::MAX_DEBOUNCE_MS,
            );
        Duration::from_millis(ms)
    }

    /// Clamped (see `limits`): a spec restored from an old state file was never checked.
    pub fn stop_timeout(&self) -> Duration {
        limits::clamp(Duration::from_secs(self.stop_timeout_s))
    }

    /// The validated stop signal (validation happened at load, so this cannot fail later).
    pub fn signal(&self) -> nix::sys::signal::Signal {
        parse_signal(&self.stop_signal).unwrap_or(nix::sys::signal::Signal::SIGTERM)
    }

    /// The same checks as an app file, for a spec that did not come from one (`state.json`).
    pub fn check(&self) -> Result<(), String> {
        self.clone()
            .validate()
            .map_err(|(key, why)| format!("app `{}`: key `{key}`: {why}", self.name))
    }

    /// Checks one app's values; `Err` carries `(key, problem)`.
    fn validate(&mut self) -> Result<(), (&'static str, String)> {
        if !valid_name(&self.name) {
            return Err((
                "name",
                format!(
                    "`{}` is not a valid name: use 1-64 letters, digits, `-`, `_` or `.`, not starting with `.`",
                    self.name
                ),
            ));
        }
        if self.command.trim().is_empty() {
            return Err(("command", "must not be empty".into()));
        }
        if self.instances > MAX_INSTANCES {
            return Err((
                "instances",
                format!(
                    "{} is more than the limit of {MAX_INSTANCES}",
                    self.instances
                ),
            ));
        }
        if self.backoff_max_ms < self.backoff_initial_ms {
            return Err((
                "backoff_max_ms",
                format!(
                    "{} is below backoff_initial_ms ({})",
                    self.backoff_max_ms, self.backoff_initial_ms
                ),
            ));
        }
        match parse_signal(&self.stop_signal) {
            Some(sig) => self.stop_signal = sig.as_str().to_string(),
            None => {
                return Err((
                    "stop_signal",
                    format!(
                        "`{}` is not a signal name (try SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1)",
                        self.stop_signal
                    ),
                ));
            }
        }
        if self.log_max_bytes < 4096 {
            return Err((
                "log_max_bytes",
                format!("{} is below the minimum of 4096", self.log_max_bytes),
            ));
        }
        if self.log_files == 0 {
            return Err(("log_files", "must be at least 1 (the live file)".into()));
        }
        if let Some(h) = &self.health {
            h.validate()?;
        }
        if self.max_memory_mb == Some(0) {
            return Err(("max_memory_mb", "must be at least 1".into()));
        }
        // Bounds a typo cannot pass: 16 PiB of memory, 100,000 % (1,000 cores), 4 million
        // tasks (the kernel's pid_max ceiling).
        for (key, value, max) in [
            ("memory_max_mb", self.memory_max_mb, 1u64 << 34),
            ("cpu_max_percent", self.cpu_max_percent, 100_000),
            ("pids_max", self.pids_max, 1 << 22),
        ] {
            match value {
                Some(0) => return Err((key, "must be at least 1".into())),
                Some(v) if v > max => {
                    return Err((key, format!("{v} is more than the limit of {max}")));
                }
                _ => {}
            }
        }
        if let Some(dep) = self.depends_on.iter().find(|d| **d == self.name) {
            return Err(("depends_on", format!("`{dep}` depends on itself")));
        }
        for (var, value) in &self.env {
            if let Some(name) = value.strip_prefix(super::secret_env::PREFIX)
                && let Err(e) = herd_cluster::registry::access::check_secret_name(name)
            {
                return Err(("env", format!("`{var}`: {e}")));
            }
        }
        if let Some(v) = &self.on_secret_change {
            let ok = v == "restart" || v.strip_prefix("signal:").and_then(parse_signal).is_some();
            if !ok {
                return Err((
                    "on_secret_change",
                    format!(
                        "`{v}` is neither \"restart\" nor \"signal:NAME\" (e.g. \"signal:SIGHUP\")"
                    ),
                ));
            }
        }
        if let Some(expr) = &self.cron_restart
            && let Err(e) = expr.parse::<croner::Cron>()
        {
            return Err((
                "cron_restart",
                format!("`{expr}` is not a cron expression: {e}"),
            ));
        }
        if let Some(addr) = self
            .listen
            .iter()
            .find(|a| a.parse::<std::net::SocketAddr>().is_err())
        {
            return Err((
                "listen",
                format!("`{addr}` is not an ip:port address (e.g. 127.0.0.1:8080)"),
            ));
        }
        if let Some(key) = self
            .env
            .keys()
            .find(|k| k.is_empty() || k.contains('=') || k.contains('\0'))
        {
            return Err((
                "env",
                format!("`{}` is not a valid variable name", key.escape_debug()),
            ));
        }
        if let Some(key) = self
            .env
            .keys()
            .find(|k| app_env::IDENTITY_VARS.contains(&k.as_str()))
        {
            return Err((
                "env",
                format!(
                    "`{key}` is set by herd itself (it identifies the instance); remove it from env"
                ),
            ));
        }
        if let Some((key, value)) = self.env.iter().find(|(_, v)| v.contains('\0')) {
            return Err(("env", format!("the value of `{key}`: {}", nul_in(value))));
        }
        for p in &self.env_allow {
            app_env::check_pattern(p).map_err(|why| ("env_allow", why))?;
        }
        if !self.env_allow.is_empty() && !self.env_clear {
            return Err((
                "env_allow",
                "only applies with env_clear = true (without it, every variable but herd's own passes already)".into(),
            ));
        }
        self.check_no_nul()?;
        self.check_durations()?;
        super::notify::validate(self)?;
        super::file_watch::rules::validate(
            &self.watch,
            &self.watch_ignore,
            self.watch_debounce_ms,
        )?;
        identity::validate(self)?;
        if self.listen.len() > MAX_LISTEN {
            return Err((
                "listen",
                format!(
                    "{} sockets is more than the limit of {MAX_LISTEN}",
                    self.listen.len()
                ),
            ));
        }
        Ok(())
    }

    /// A NUL byte cannot pass to exec: refused here rather than failing at every spawn.
    fn check_no_nul(&self) -> Result<(), (&'static str, String)> {
        if self.command.contains('\0') {
            return Err(("command", nul_in(&self.command)));
        }
        if let Some(arg) = self.args.iter().find(|a| a.contains('\0')) {
            return Err(("args", nul_in(arg)));
        }
        if let Some(cwd) = &self.cwd
            && cwd.as_os_str().as_encoded_bytes().contains(&0)
        {
            return Err(("cwd", nul_in(&cwd.to_string_lossy())));
        }
        Ok(())
    }

    /// Durations a user gives are bounded (see `limits`), so no deadline overflows.
    fn check_durations(&self) -> Result<(), (&'static str, String)> {
        limits::check_secs(self.stop_timeout_s).map_err(|why| ("stop_timeout_s", why))?;
        limits::check_secs(self.restart_window_s).map_err(|why| ("restart_window_s", why))?;
        limits::check_millis(self.backoff_initial_ms).map_err(|why| ("backoff_initial_ms", why))?;
        limits::check_millis(self.backoff_max_ms).map_err(|why| ("backoff_max_ms", why))?;
        Ok(())
    }

    /// Makes `cwd` absolute against `base` (the app file's directory), and a relative command
    /// path (one with a `/`) absolute against that cwd, so the daemon's own directory never matters.
    fn resolve_paths(&mut self, base: &Path) {
        let cwd = match self.cwd.take() {
            Some(c) if c.is_absolute() => c,
            Some(c) => base.join(c),
            None => base.to_path_buf(),
        };
        if self.command.contains('/') && !self.command.starts_with('/') {
            self.command = cwd.join(&self.command).to_string_lossy().into_owned();
        }
        self.cwd = Some(cwd);
    }
}

/// The most sockets one app may ask herd to hold (they become fds 3, 4, ...).
const MAX_LISTEN: usize = 64;

pub(super) fn nul_in(value: &str) -> String {
    format!(
        "`{}` holds a NUL byte, which no program can receive; remove it",
        value.escape_debug()
    )
}

pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// `SIGTERM`, `TERM` and `term` all name the same signal.
pub fn parse_signal(name: &str) -> Option<nix::sys::signal::Signal> {
    let upper = name.trim().to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    full.parse().ok()
}

/// Why an app file was refused. The message is the whole story: file, app, key, fix.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SpecError(pub String);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AppFile {
    #[serde(default)]
    app: Vec<toml::Table>,
    /// `[[job]]` tables: read by `crate::jobs::spec`, not here.
    #[serde(default)]
    job: Vec<toml::Table>,
}

/// The `[[app]]` and `[[job]]` tables of an app file, not yet checked. A file must hold at
/// least one of either.
pub fn tables(source: &str, text: &str) -> Result<(Vec<toml::Table>, Vec<toml::Table>), SpecError> {
    let file: AppFile = toml::from_str(text)
        .map_err(|e| SpecError(format!("{source}: {}", e.to_string().trim_end())))?;
    if file.app.is_empty() && file.job.is_empty() {
        return Err(SpecError(format!(
            "{source}: no [[app]] table; an app file lists apps as [[app]] tables (and jobs as [[job]] tables)"
        )));
    }
    Ok((file.app, file.job))
}

/// A table's label in errors: `app `web``, or `app #2` when it has no name.
pub fn label(kind: &str, i: usize, table: &toml::Table) -> String {
    match table.get("name").and_then(|v| v.as_str()) {
        Some(n) => format!("{kind} `{n}`"),
        None => format!("{kind} #{}", i + 1),
    }
}

/// One `[[app]]`-shaped table as a checked spec, its relative paths resolved against `base`.
/// `label` names the table in errors.
pub fn from_table(
    source: &str,
    label: &str,
    table: toml::Table,
    base: &Path,
) -> Result<AppSpec, SpecError> {
    let mut spec: AppSpec = table.try_into().map_err(|e: toml::de::Error| {
        let msg = e.message().trim_end().to_string();
        let msg = match msg.strip_prefix("missing field ") {
            Some(key) => format!("missing required key {key}"),
            None => msg
                .replace("unknown field", "unknown key")
                .replace("expected one of", "known keys are"),
        };
        SpecError(format!("{source}: {label}: {msg}"))
    })?;
    spec.validate()
        .map_err(|(key, why)| SpecError(format!("{source}: {label}: key `{key}`: {why}")))?;
    spec.resolve_paths(base);
    Ok(spec)
}

/// Parses and validates an app file's apps (its `[[job]]` tables are `crate::jobs::spec`'s).
/// `source` names it in errors; `base` is the directory relative paths resolve against.
pub fn parse_app_file(source: &str, text: &str, base: &Path) -> Result<Vec<AppSpec>, SpecError> {
    let (apps, _) = tables(source, text)?;
    let mut specs = Vec::with_capacity(apps.len());
    let mut seen = HashSet::new();
    for (i, table) in apps.into_iter().enumerate() {
        let label = label("app", i, &table);
        let spec = from_table(source, &label, table, base)?;
        if !seen.insert(spec.name.clone()) {
            return Err(SpecError(format!(
                "{source}: {label}: key `name`: `{}` is used by more than one app; names must be unique",
                spec.name
            )));
        }
        specs.push(spec);
    }
    Ok(specs)
}

/// What only this host can tell about apps an app file starts here: their `user` and `group`
/// exist and the daemon may become them, their `limits` are within what it may set (see
/// `identity::check_host`). Run before anything of the file is applied, so a refused file
/// starts nothing. (A cluster deploy skips it: the apps run on other hosts.)
pub fn check_on_host(source: &str, specs: &[AppSpec]) -> Result<(), SpecError> {
    for spec in specs {
        identity::check_host(spec)
            .and_then(|()| check_cgroup_limits(spec))
            .map_err(|(key, why)| {
                SpecError(format!("{source}: app `{}`: key `{key}`: {why}", spec.name))
            })?;
    }
    Ok(())
}

/// A cgroup limit the daemon cannot enforce here is refused, not dropped. (Outside the
/// daemon — the CLI — nothing is known of the host's cgroups and nothing is checked.)
fn check_cgroup_limits(spec: &AppSpec) -> Result<(), (&'static str, String)> {
    let Some(host) = super::cgroup::host() else {
        return Ok(());
    };
    for (key, value, controller) in [
        ("memory_max_mb", spec.memory_max_mb, "memory"),
        ("cpu_max_percent", spec.cpu_max_percent, "cpu"),
        ("pids_max", spec.pids_max, "pids"),
    ] {
        if value.is_some()
            && let Some(why) = host.unavailable(controller)
        {
            return Err((
                key,
                format!(
                    "this host cannot enforce it ({why}); run herd as root on a host with cgroups, or remove the key (`max_memory_mb` restarts above a threshold without cgroups)"
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<AppSpec>, String> {
        parse_app_file("apps.toml", text, Path::new("/srv")).map_err(|e| e.0)
    }

    #[test]
    fn minimal_app_gets_the_documented_defaults() {
        let apps = parse("[[app]]\nname = \"web\"\ncommand = \"python3\"\n").unwrap();
        let a = &apps[0];
        assert_eq!(a.instances, 1);
        assert_eq!(a.restart, RestartPolicy::OnFailure);
        assert_eq!((a.backoff_initial_ms, a.backoff_max_ms), (1000, 30_000));
        assert_eq!((a.max_restarts, a.restart_window_s), (5, 60));
        assert_eq!((a.stop_signal.as_str(), a.stop_timeout_s), ("SIGTERM", 10));
        assert_eq!((a.log_max_bytes, a.log_files), (10 * 1024 * 1024, 5));
        assert_eq!(a.cwd.as_deref(), Some(Path::new("/srv")));
    }

    #[test]
    fn unknown_key_names_file_app_and_key() {
        let err =
            parse("[[app]]\nname = \"web\"\ncommand = \"x\"\nrestrat = \"always\"\n").unwrap_err();
        assert!(
            err.starts_with("apps.toml: app `web`: unknown key `restrat`"),
            "{err}"
        );
    }

    #[test]
    fn missing_command_is_named() {
        let err = parse("[[app]]\nname = \"web\"\n").unwrap_err();
        assert_eq!(err, "apps.toml: app `web`: missing required key `command`");
    }

    #[test]
    fn duplicate_names_reject_the_file() {
        let err = parse(
            "[[app]]\nname = \"a\"\ncommand = \"x\"\n[[app]]\nname = \"a\"\ncommand = \"y\"\n",
        )
        .unwrap_err();
        assert!(
            err.contains("app `a`: key `name`: `a` is used by more than one app"),
            "{err}"
        );
    }

    #[test]
    fn bad_signal_is_named_and_good_ones_normalised() {
        let err = parse("[[app]]\nname = \"a\"\ncommand = \"x\"\nstop_signal = \"SIGFOO\"\n")
            .unwrap_err();
        assert!(
            err.contains("app `a`: key `stop_signal`: `SIGFOO` is not a signal name"),
            "{err}"
        );
        let ok = parse("[[app]]\nname = \"a\"\ncommand = \"x\"\nstop_signal = \"int\"\n").unwrap();
        assert_eq!(ok[0].stop_signal, "SIGINT");
    }

    #[test]
    fn wrong_type_and_syntax_errors_name_the_file() {
        let err =
            parse("[[app]]\nname = \"a\"\ncommand = \"x\"\ninstances = \"two\"\n").unwrap_err();
        assert!(err.starts_with("apps.toml: app `a`: invalid type"), "{err}");
        let err = parse("[[app]\nname = 1").unwrap_err();
        assert!(err.starts_with("apps.toml: "), "{err}");
    }

    #[test]
    fn relative_cwd_and_command_resolve_against_the_file() {
        let apps = parse("[[app]]\nname = \"a\"\ncommand = \"./run.sh\"\ncwd = \"app\"\n").unwrap();
        assert_eq!(apps[0].cwd.as_deref(), Some(Path::new("/srv/app")));
        assert_eq!(apps[0].command, "/srv/app/./run.sh");
    }

    #[test]
    fn identity_keys_parse_and_bad_ones_are_named() {
        let apps = parse(
            "[[app]]\nname = \"a\"\ncommand = \"x\"\nuser = \"root\"\ngroup = \"root\"\numask = \"027\"\nlimits = { nofile = 4096, core = 0 }\n",
        )
        .unwrap();
        assert_eq!(apps[0].user.as_deref(), Some("root"));
        assert_eq!(apps[0].umask.as_deref(), Some("027"));
        assert!(apps[0].limits.nofile.is_some() && apps[0].limits.core.is_some());
        let err = parse("[[app]]\nname = \"a\"\ncommand = \"x\"\numask = \"89\"\n").unwrap_err();
        assert!(
            err.starts_with("apps.toml: app `a`: key `umask`: `89` is not an octal umask"),
            "{err}"
        );
        let err = parse(
            "[[app]]\nname = \"a\"\ncommand = \"x\"\nlimits = { nofile = { soft = 9, hard = 8 } }\n",
        )
        .unwrap_err();
        assert!(
            err.contains("app `a`: key `limits`: nofile: the soft limit 9"),
            "{err}"
        );
        let err =
            parse("[[app]]\nname = \"a\"\ncommand = \"x\"\nlimits = { files = 1 }\n").unwrap_err();
        assert!(err.contains("app `a`: unknown key `files`"), "{err}");
    }

    #[test]
    fn an_unknown_user_is_refused_on_this_host() {
        let apps = parse("[[app]]\nname = \"a\"\ncommand = \"x\"\nuser = \"no-such-user-herd\"\n")
            .unwrap();
        let err = check_on_host("apps.toml", &apps).unwrap_err().0;
        assert!(
            err.starts_with("apps.toml: app `a`: key `user`: unknown user `no-such-user-herd`"),
            "{err}"
        );
    }

    #[test]
    fn a_file_without_apps_is_refused() {
        assert!(parse("").unwrap_err().contains("no [[app]] table"));
    }
}
