//! `herd import pm2|supervisord FILE`: another supervisor's config turned into a herd app file.
//! An importer maps what it can into `Draft`s and names every key it could not map, with the
//! reason. `Import::finish` then loads the result exactly as `herd start` will, so what is
//! printed always loads unchanged; a value herd refuses is dropped and reported, never emitted.

pub mod emit;
pub mod ini;
pub mod pm2;
pub mod supervisord;

use crate::supervisor::backoff::Backoff;
use crate::supervisor::spec::{parse_app_file, valid_name};
use crate::supervisor::{app_env, deps, secret_env};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The tool a file comes from; it prefixes every line reported on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    Pm2,
    Supervisord,
}

impl fmt::Display for Tool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Tool::Pm2 => "pm2",
            Tool::Supervisord => "supervisord",
        })
    }
}

/// One key of a herd app being built.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub key: &'static str,
    pub value: toml::Value,
    /// Where the value came from, when that is not obvious; emitted as a trailing comment.
    pub note: Option<String>,
    /// Why the source key is not mapped if herd does not know `key` (yet): lets an importer
    /// offer a key that a newer herd accepts (`watch`, `user`) and fall back to a report.
    pub if_unknown: Option<&'static str>,
    /// The source key this came from, for the report when herd refuses the value.
    pub from: String,
}

/// A herd `[[app]]` in the making.
#[derive(Debug, Clone, PartialEq)]
pub struct Draft {
    /// What the source calls it, e.g. `app "api"` or `program "web"`.
    pub origin: String,
    pub entries: Vec<Entry>,
}

impl Draft {
    pub fn new(origin: String) -> Self {
        Self {
            origin,
            entries: Vec::new(),
        }
    }

    /// Sets `key` (replacing an earlier value) and returns the entry to annotate.
    pub fn set(
        &mut self,
        key: &'static str,
        value: impl Into<toml::Value>,
        from: &str,
    ) -> &mut Entry {
        self.entries.retain(|e| e.key != key);
        self.entries.push(Entry {
            key,
            value: value.into(),
            note: None,
            if_unknown: None,
            from: from.to_string(),
        });
        self.entries.last_mut().expect("just pushed")
    }

    pub fn get(&self, key: &str) -> Option<&toml::Value> {
        self.entries.iter().find(|e| e.key == key).map(|e| &e.value)
    }

    pub fn name(&self) -> &str {
        self.get("name").and_then(|v| v.as_str()).unwrap_or("")
    }
}

impl Entry {
    pub fn note(&mut self, note: impl Into<String>) -> &mut Self {
        self.note = Some(note.into());
        self
    }

    pub fn unless_unknown(&mut self, why: &'static str) -> &mut Self {
        self.if_unknown = Some(why);
        self
    }
}

/// A source key with no herd equivalent, or a value herd refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub tool: Tool,
    /// `app "api"`, `program "web"`, `group "backend"`, `file`.
    pub origin: String,
    pub key: String,
    pub why: String,
}

impl fmt::Display for Skipped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}: key \"{}\" not mapped: {}",
            self.tool, self.origin, self.key, self.why
        )
    }
}

/// What an importer made of a file.
#[derive(Debug)]
pub struct Import {
    pub tool: Tool,
    pub source: PathBuf,
    pub apps: Vec<Draft>,
    pub skipped: Vec<Skipped>,
}

impl Import {
    pub fn new(tool: Tool, source: &Path) -> Self {
        Self {
            tool,
            source: source.to_path_buf(),
            apps: Vec::new(),
            skipped: Vec::new(),
        }
    }

    pub fn skip(&mut self, origin: &str, key: &str, why: impl Into<String>) {
        self.skipped.push(Skipped {
            tool: self.tool,
            origin: origin.to_string(),
            key: key.to_string(),
            why: why.into(),
        });
    }

    /// Adds a variable to an app's env, unless herd would read it differently: herd sets its
    /// identity variables itself, and reads a `secret:` value as a secret's name.
    pub fn env_var(&mut self, origin: &str, env: &mut toml::Table, key: &str, value: String) {
        if app_env::IDENTITY_VARS.contains(&key) {
            self.skip(
                origin,
                &format!("env.{key}"),
                "herd sets it itself to identify the instance",
            );
        } else if value.starts_with(secret_env::PREFIX) {
            self.skip(
                origin,
                &format!("env.{key}"),
                "herd would read this `secret:` value as the name of a herd secret; store the value with `herd secret put NAME` and set the variable to `secret:NAME`",
            );
        } else {
            env.insert(key.to_string(), value.into());
        }
    }

    /// Loads every app as `herd start` would, drops what herd refuses (reporting it), and
    /// returns the app file's text. An error here means the file cannot be made to load.
    pub fn finish(mut self) -> anyhow::Result<(String, Vec<Skipped>)> {
        if self.apps.is_empty() {
            anyhow::bail!(
                "{}: no apps found (a {} file lists {})",
                self.source.display(),
                self.tool,
                match self.tool {
                    Tool::Pm2 => "apps as `apps: [{ name, script, ... }]`",
                    Tool::Supervisord => "programs as [program:NAME] sections",
                }
            );
        }
        let base = self.source.parent().unwrap_or(Path::new("/")).to_path_buf();
        let mut names = BTreeMap::new();
        for app in &mut self.apps {
            if let Some(other) = names.insert(app.name().to_string(), app.origin.clone()) {
                anyhow::bail!(
                    "{}: {} and {} both become the herd app `{}`; rename one in the source file",
                    self.source.display(),
                    other,
                    app.origin,
                    app.name()
                );
            }
            let dropped = loadable(app, &base)?;
            for (entry, why) in dropped {
                self.skipped.push(Skipped {
                    tool: self.tool,
                    origin: app.origin.clone(),
                    key: entry.from,
                    why,
                });
            }
        }
        // Report in file order: the file's own keys, then each app's.
        let rank = |origin: &str| self.apps.iter().position(|a| a.origin == origin);
        self.skipped.sort_by_key(|s| rank(&s.origin));
        let text = emit::app_file(self.tool, &self.source, &self.apps, &self.skipped);
        let bug = |e: String| {
            anyhow::anyhow!("{e} (this is a bug in `herd import`; the file was not written)")
        };
        let specs = parse_app_file("the imported file", &text, &base).map_err(|e| bug(e.0))?;
        // What `herd start` checks across apps: depends_on names apps of the file, no cycle.
        let edges = specs
            .iter()
            .map(|s| (s.name.clone(), s.depends_on.clone()))
            .collect();
        deps::check(&edges).map_err(bug)?;
        Ok((text, self.skipped))
    }
}

/// Drops the keys herd refuses from one app until it loads; returns them with the reason.
fn loadable(app: &mut Draft, base: &Path) -> anyhow::Result<Vec<(Entry, String)>> {
    let mut dropped = Vec::new();
    loop {
        let text = emit::app_tables(std::slice::from_ref(app), &[]);
        // Loadable here: herd's parser, then what `herd start` checks on this host (the user
        // exists and the daemon may become it).
        let loaded = parse_app_file("app", &text, base)
            .and_then(|specs| crate::supervisor::spec::check_on_host("app", &specs));
        let err = match loaded {
            Ok(()) => return Ok(dropped),
            Err(e) => e.0,
        };
        let unknown = err.contains("unknown key `");
        let key = refused_key(&err);
        let Some(pos) = key.and_then(|k| {
            app.entries
                .iter()
                .position(|e| e.key == k && !matches!(k, "name" | "command"))
        }) else {
            anyhow::bail!("{}: {err}", app.origin);
        };
        let entry = app.entries.remove(pos);
        let why = match (unknown, entry.if_unknown) {
            (true, Some(why)) => why.to_string(),
            _ => format!(
                "herd refuses it as `{}`: {}",
                entry.key,
                err.split_once(&format!("key `{}`: ", entry.key))
                    .map_or(err.as_str(), |(_, why)| why)
            ),
        };
        dropped.push((entry, why));
    }
}

/// The key an app-file error names: "... key `k`: ..." or "unknown key `k`, ...".
fn refused_key(err: &str) -> Option<&str> {
    let start = err.rfind("key `")? + "key `".len();
    let len = err[start..].find('`')?;
    Some(&err[start..start + len])
}

/// `path` without `.` and `..` components (lexically: `conf.d/../bin` is `bin`), so the
/// app file shows the directory a reader expects.
pub fn tidy(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

/// A herd app name for `wanted`: invalid characters become `-`.
pub fn app_name(wanted: &str) -> String {
    let mut name: String = wanted
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    while name.starts_with('.') {
        name.remove(0);
    }
    if valid_name(&name) {
        name
    } else {
        "app".into()
    }
}

/// The `restart_window_s` in which `restarts` restarts of runs shorter than `short_run`,
/// each after herd's backoff delay, all fit: so herd gives up after as many quick failures
/// as the source tool would (PM2's `min_uptime`, supervisord's `startsecs`), while runs that
/// last longer keep restarting.
pub fn crash_window_s(restarts: u32, short_run: Duration, backoff: Backoff) -> u64 {
    let delays: Duration = (1..=restarts).map(|n| backoff.delay(n)).sum();
    let total = delays + short_run * restarts;
    (total.as_secs() + u64::from(total.subsec_nanos() > 0)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_valid_herd_names() {
        assert_eq!(app_name("api"), "api");
        assert_eq!(app_name("my api:worker"), "my-api-worker");
        assert_eq!(app_name(".hidden"), "hidden");
        assert_eq!(app_name(""), "app");
    }

    #[test]
    fn tidy_drops_dot_components() {
        assert_eq!(
            tidy(Path::new("/etc/s/conf.d/../bin/./web.sh")),
            Path::new("/etc/s/bin/web.sh")
        );
        assert_eq!(tidy(Path::new("/a/b/.")), Path::new("/a/b"));
    }

    #[test]
    fn crash_window_holds_the_quick_failures_and_their_delays() {
        let b = Backoff::new(Duration::from_secs(1), Duration::from_secs(3));
        // 1 + 2 + 3 s of delays and three runs of up to 1 s.
        assert_eq!(crash_window_s(3, Duration::from_secs(1), b), 9);
        let none = Backoff::new(Duration::ZERO, Duration::ZERO);
        assert_eq!(crash_window_s(16, Duration::from_millis(1000), none), 16);
        assert_eq!(crash_window_s(3, Duration::from_millis(100), none), 1);
        assert_eq!(crash_window_s(0, Duration::ZERO, none), 1);
    }

    #[test]
    fn refused_key_is_read_from_the_error() {
        assert_eq!(
            refused_key("app: app `a`: key `cron_restart`: `x` is not a cron expression"),
            Some("cron_restart")
        );
        assert_eq!(
            refused_key("app: app `a`: unknown key `watch`, known keys are `name`"),
            Some("watch")
        );
    }

    fn draft() -> Draft {
        let mut d = Draft::new("app \"a\"".into());
        d.set("name", "a", "name");
        d.set("command", "sleep", "script");
        d
    }

    #[test]
    fn keys_herd_refuses_are_dropped_and_reported() {
        let mut d = draft();
        d.set("cron_restart", "every day", "cron_restart");
        d.set("no_such_key", toml::Value::Array(vec![".".into()]), "watch")
            .unless_unknown("herd does not watch files");
        let dropped = loadable(&mut d, Path::new("/")).unwrap();
        let report: Vec<(String, String)> =
            dropped.into_iter().map(|(e, why)| (e.from, why)).collect();
        assert_eq!(report.len(), 2, "{report:?}");
        assert!(report.iter().any(|(k, why)| k == "cron_restart"
            && why.starts_with("herd refuses it as `cron_restart`: `every day` is not a cron")));
        assert!(
            report
                .iter()
                .any(|(k, why)| k == "watch" && why == "herd does not watch files")
        );
        assert_eq!(d.entries.len(), 2);
    }
}
