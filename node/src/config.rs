//! The daemon's own settings: `$HERD_HOME/config.toml` (or `herd up --config FILE`), each key
//! overridable by an environment variable `HERD_<KEY>` (e.g. `HERD_METRICS_INTERVAL_S=2`).
//! SIGHUP or `herd reload-config` re-reads it without touching running apps; an invalid file
//! is refused with the reason and the running config stays.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::watch;
use tracing::{info, warn};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonConfig {
    /// A tracing filter: `info`, `debug`, `herd=debug,h2=warn`, ...
    #[serde(default = "defaults::log_level")]
    pub log_level: String,
    /// How often CPU and memory are sampled (and `max_memory_mb` enforced).
    #[serde(default = "defaults::metrics_interval_s")]
    pub metrics_interval_s: f64,
    /// How often instances whose process vanished unseen are looked for.
    #[serde(default = "defaults::recovery_sweep_s")]
    pub recovery_sweep_s: f64,
    /// The state is written on every transition and at least this often.
    #[serde(default = "defaults::state_flush_s")]
    pub state_flush_s: f64,
    #[serde(default = "defaults::events_max_bytes")]
    pub events_max_bytes: u64,
    #[serde(default = "defaults::events_files")]
    pub events_files: u32,
    /// `daemon.log` (written when `herd up` runs the daemon in the background) is rotated by
    /// size like app logs. Read at start.
    #[serde(default = "defaults::daemon_log_max_bytes")]
    pub daemon_log_max_bytes: u64,
    #[serde(default = "defaults::daemon_log_files")]
    pub daemon_log_files: u32,
    /// Each instance in a cgroup of its own where the host allows (see `supervisor::cgroup`);
    /// `false` keeps to process groups and refuses kernel limits. Read at start.
    #[serde(default = "defaults::cgroups")]
    pub cgroups: bool,
    /// `[cluster]` (see the README's Cluster section). Read at start; changes need a restart,
    /// except a renewed TLS certificate and key, which a reload applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<crate::cluster::ClusterSection>,
    /// `[api]`: the token-guarded TCP API. A reload applies it (token, bounds, listener) except
    /// on a port shared with `[cluster] listen`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<crate::api::remote::ApiSection>,
    /// `[http]`: `/healthz` and `/metrics` (see `http`). Read at start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<crate::http::HttpSection>,
    /// `[jobs]`: slots and headroom of the job queue (see `jobs`). A reload applies it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jobs: Option<crate::jobs::queue::JobsSection>,
    /// `[[hook]]` tables (see `hooks::spec`). A reload applies them.
    #[serde(default, rename = "hook", skip_serializing_if = "Vec::is_empty")]
    pub hooks: Vec<crate::hooks::spec::HookSpec>,
}

mod defaults {
    pub fn cgroups() -> bool {
        true
    }
    pub fn log_level() -> String {
        "info".into()
    }
    pub fn metrics_interval_s() -> f64 {
        5.0
    }
    pub fn recovery_sweep_s() -> f64 {
        60.0
    }
    pub fn state_flush_s() -> f64 {
        30.0
    }
    pub fn events_max_bytes() -> u64 {
        10 * 1024 * 1024
    }
    pub fn events_files() -> u32 {
        5
    }
    pub fn daemon_log_max_bytes() -> u64 {
        10 * 1024 * 1024
    }
    pub fn daemon_log_files() -> u32 {
        5
    }
}

impl Default for DaemonConfig {
    fn default() -> Self {
        toml::from_str("").unwrap_or_else(|_| unreachable!("every key has a default"))
    }
}

impl DaemonConfig {
    pub fn metrics_interval(&self) -> Duration {
        Duration::from_secs_f64(self.metrics_interval_s)
    }
    pub fn recovery_sweep(&self) -> Duration {
        Duration::from_secs_f64(self.recovery_sweep_s)
    }
    pub fn state_flush(&self) -> Duration {
        Duration::from_secs_f64(self.state_flush_s)
    }

    /// Reads `path` (a missing file means all defaults unless `required`), then the `HERD_*`
    /// overrides from `env`, then checks every value.
    pub fn load(
        path: &Path,
        required: bool,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, String> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => String::new(),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        Self::parse(path, &text, env)
    }

    /// [`DaemonConfig::load`] past the read: `text` is the content of `path` (named in errors).
    pub fn parse(
        path: &Path,
        text: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, String> {
        let mut table: toml::Table = toml::from_str(text)
            .map_err(|e| format!("{}: {}", path.display(), e.to_string().trim_end()))?;
        for key in [
            "log_level",
            "metrics_interval_s",
            "recovery_sweep_s",
            "state_flush_s",
            "events_max_bytes",
            "events_files",
            "daemon_log_max_bytes",
            "daemon_log_files",
        ] {
            let var = format!("HERD_{}", key.to_ascii_uppercase());
            if let Some(v) = env(&var) {
                let value = if key == "log_level" {
                    toml::Value::String(v)
                } else {
                    v.parse::<i64>()
                        .map(toml::Value::Integer)
                        .or_else(|_| v.parse::<f64>().map(toml::Value::Float))
                        .map_err(|_| format!("{var}=`{v}` is not a number"))?
                };
                table.insert(key.into(), value);
            }
        }
        crate::hooks::spec::check_tables(&table).map_err(|e| format!("{}: {e}", path.display()))?;
        let config: DaemonConfig = table.try_into().map_err(|e: toml::de::Error| {
            format!(
                "{}: {}",
                path.display(),
                e.message()
                    .trim_end()
                    .replace("unknown field", "unknown key")
            )
        })?;
        config
            .validate()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        config
            .http
            .clone()
            .unwrap_or_default()
            .listen_addr(&env)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        tracing_subscriber::EnvFilter::try_new(&self.log_level)
            .map_err(|e| format!("key `log_level`: `{}`: {e}", self.log_level))?;
        for (key, v, min) in [
            ("metrics_interval_s", self.metrics_interval_s, 0.2),
            ("recovery_sweep_s", self.recovery_sweep_s, 1.0),
            ("state_flush_s", self.state_flush_s, 1.0),
        ] {
            if !v.is_finite() || v < min || v > 86_400.0 {
                return Err(format!("key `{key}`: {v} is out of range ({min} to 86400)"));
            }
        }
        if self.events_max_bytes < 4096 {
            return Err(format!(
                "key `events_max_bytes`: {} is below the minimum of 4096",
                self.events_max_bytes
            ));
        }
        if self.events_files == 0 {
            return Err("key `events_files`: must be at least 1".into());
        }
        if self.daemon_log_max_bytes < 4096 {
            return Err(format!(
                "key `daemon_log_max_bytes`: {} is below the minimum of 4096",
                self.daemon_log_max_bytes
            ));
        }
        if self.daemon_log_files == 0 {
            return Err("key `daemon_log_files`: must be at least 1".into());
        }
        if let Some(jobs) = &self.jobs {
            jobs.check()?;
        }
        if let Some(api) = &self.api
            && api.listen.parse::<std::net::SocketAddr>().is_err()
        {
            return Err(format!("[api] listen `{}` is not ip:port", api.listen));
        }
        Ok(())
    }
}

/// Changes the log filter of the running daemon.
pub type LogLevelSetter = Box<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// Applies a reloaded `[api]` to the running TCP API; returns the keys it changed beyond the
/// file's text (`api.token`), or why it cannot (the reload is then refused).
pub type ApiApplier = Box<dyn Fn(&DaemonConfig) -> Result<Vec<String>, String> + Send + Sync>;

/// Checks a reloaded `[cluster]` against the running node (its TLS certificate may have been
/// renewed on disk) and returns what applies it, run once nothing else can refuse the reload.
pub type ClusterApplier =
    Box<dyn Fn(&DaemonConfig) -> Result<Option<ClusterCommit>, String> + Send + Sync>;
/// Applies a checked `[cluster]` change; returns the keys it changed (`cluster.tls`).
pub type ClusterCommit = Box<dyn FnOnce() -> Vec<String> + Send>;

/// The running config and how to re-read it.
pub struct ConfigHandle {
    path: PathBuf,
    required: bool,
    current: watch::Sender<DaemonConfig>,
    set_log_level: LogLevelSetter,
    apply_api: Mutex<Option<ApiApplier>>,
    apply_cluster: Mutex<Option<ClusterApplier>>,
    reloading: Mutex<()>,
}

impl ConfigHandle {
    pub fn new(
        path: PathBuf,
        required: bool,
        config: DaemonConfig,
        set_log_level: LogLevelSetter,
    ) -> Self {
        let (current, _) = watch::channel(config);
        Self {
            path,
            required,
            current,
            set_log_level,
            apply_api: Mutex::new(None),
            apply_cluster: Mutex::new(None),
            reloading: Mutex::new(()),
        }
    }

    /// Installed once the TCP API exists; every reload goes through it.
    pub fn set_api_applier(&self, apply: ApiApplier) {
        *self.apply_api.lock().unwrap_or_else(|p| p.into_inner()) = Some(apply);
    }

    /// Installed once the cluster node runs; every reload goes through it.
    pub fn set_cluster_applier(&self, apply: ClusterApplier) {
        *self.apply_cluster.lock().unwrap_or_else(|p| p.into_inner()) = Some(apply);
    }

    pub fn subscribe(&self) -> watch::Receiver<DaemonConfig> {
        self.current.subscribe()
    }

    pub fn get(&self) -> DaemonConfig {
        self.current.borrow().clone()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Re-reads the file. On error the running config is untouched and the error returned.
    pub fn reload(&self) -> Result<Vec<String>, String> {
        let _one_at_a_time = self.reloading.lock().unwrap_or_else(|p| p.into_inner());
        let env = |k: &str| std::env::var(k).ok();
        // `[api]` as the daemon uses it: the token file read and checked, the TLS pair
        // loaded, so a reload cannot accept what the next start would refuse.
        let loaded =
            DaemonConfig::load(&self.path, self.required, env).and_then(|c| match &c.api {
                Some(api) => api
                    .to_config(env)
                    .map_err(|e| format!("{}: {e}", self.path.display()))
                    .map(|_| c),
                None => Ok(c),
            });
        let new = match loaded {
            Ok(c) => c,
            Err(e) => {
                warn!(file = %self.path.display(), error = %e, "config reload refused; keeping the running config");
                return Err(e);
            }
        };
        let old = self.get();
        let mut changed = changed_keys(&old, &new);
        let refused = |e: String| {
            let e = format!("{}: {e}", self.path.display());
            warn!(file = %self.path.display(), error = %e, "config reload refused; keeping the running config");
            e
        };
        // First the parts that can still refuse (a file the config names may have changed
        // while config.toml did not): the cluster's certificate is checked, then `[api]` is
        // applied, and only then is the checked certificate swapped in, so nothing is
        // half-applied.
        let cluster = match &*self.apply_cluster.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(prepare) => prepare(&new).map_err(refused)?,
            None => None,
        };
        if let Some(apply) = &*self.apply_api.lock().unwrap_or_else(|p| p.into_inner()) {
            let more = apply(&new).map_err(refused)?;
            changed.extend(more.into_iter().filter(|k| k != "api.listen"));
        }
        if let Some(commit) = cluster {
            changed.extend(commit());
        }
        if new.log_level != old.log_level {
            (self.set_log_level)(&new.log_level)?;
        }
        if new.http != old.http {
            warn!("[http] changes take effect at the next daemon start");
        }
        if new.cluster != old.cluster {
            warn!(
                "[cluster] changes (other than a renewed certificate and key) take effect at the next daemon start"
            );
        }
        info!(file = %self.path.display(), changed = ?changed, "config reloaded");
        self.current.send_replace(new);
        Ok(changed)
    }
}

fn changed_keys(old: &DaemonConfig, new: &DaemonConfig) -> Vec<String> {
    let (Ok(toml::Value::Table(a)), Ok(toml::Value::Table(b))) =
        (toml::Value::try_from(old), toml::Value::try_from(new))
    else {
        return Vec::new();
    };
    let mut keys: Vec<String> = a
        .keys()
        .chain(b.keys())
        .filter(|k| a.get(*k) != b.get(*k))
        .cloned()
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str, env: &[(&str, &str)]) -> Result<DaemonConfig, String> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.toml");
        std::fs::write(&p, text).unwrap();
        DaemonConfig::load(&p, true, |k| {
            env.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn the_example_cluster_node_config_in_deploy_loads() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/cluster-node.toml"
        ));
        let c = DaemonConfig::load(path, true, |_| None).expect("deploy/cluster-node.toml");
        let cluster = c.cluster.expect("[cluster]");
        assert!(cluster.enabled && cluster.tls_ca.is_some());
        let api = c.api.expect("[api]");
        assert_ne!(api.listen, cluster.listen, "TLS needs its own API port");
    }

    #[test]
    fn defaults_fill_a_missing_file() {
        let c = DaemonConfig::load(Path::new("/nonexistent/config.toml"), false, |_| None).unwrap();
        assert_eq!(c, DaemonConfig::default());
        assert_eq!(c.metrics_interval(), Duration::from_secs(5));
        assert!(DaemonConfig::load(Path::new("/nonexistent/config.toml"), true, |_| None).is_err());
    }

    #[test]
    fn env_overrides_the_file() {
        let c = load(
            "metrics_interval_s = 2\n",
            &[
                ("HERD_METRICS_INTERVAL_S", "1.5"),
                ("HERD_LOG_LEVEL", "debug"),
            ],
        )
        .unwrap();
        assert_eq!(c.metrics_interval_s, 1.5);
        assert_eq!(c.log_level, "debug");
    }

    #[test]
    fn bad_values_are_named() {
        assert!(
            load("metrics_intervl_s = 2\n", &[])
                .unwrap_err()
                .contains("unknown key `metrics_intervl_s`")
        );
        assert!(
            load("metrics_interval_s = 0\n", &[])
                .unwrap_err()
                .contains("key `metrics_interval_s`: 0 is out of range")
        );
        assert!(
            load("", &[("HERD_EVENTS_FILES", "many")])
                .unwrap_err()
                .contains("HERD_EVENTS_FILES=`many` is not a number")
        );
        assert!(
            load("log_level = \"[[\"\n", &[])
                .unwrap_err()
                .contains("key `log_level`")
        );
    }

    #[test]
    fn reload_keeps_the_old_config_when_the_new_one_is_bad() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("config.toml");
        std::fs::write(&p, "metrics_interval_s = 2\n").unwrap();
        let c = DaemonConfig::load(&p, true, |_| None).unwrap();
        let h = ConfigHandle::new(p.clone(), true, c, Box::new(|_| Ok(())));
        std::fs::write(&p, "metrics_interval_s = \"fast\"\n").unwrap();
        assert!(h.reload().is_err());
        assert_eq!(h.get().metrics_interval_s, 2.0);
        std::fs::write(&p, "metrics_interval_s = 3\n").unwrap();
        assert_eq!(h.reload().unwrap(), vec!["metrics_interval_s".to_string()]);
        assert_eq!(h.get().metrics_interval_s, 3.0);
    }
}
