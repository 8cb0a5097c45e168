//! PM2 ecosystem files to herd apps. PM2's restart defaults (restart after any exit, at once,
//! giving up after 16 runs shorter than `min_uptime`) and its SIGINT stop are written out, so
//! the apps behave under herd as they did under PM2 rather than by herd's defaults.

mod command;
mod load;
mod restart;
mod values;

use super::{Draft, Import, Tool, app_name, tidy};
use anyhow::bail;
use command::command;
use restart::restart;
use serde_json::{Map, Value};
use std::cell::RefCell;
use std::collections::BTreeSet;
use std::path::Path;
use values::{bytes, millis, string, strings};

pub struct Options {
    /// `--env NAME`: merge `env_NAME` over `env`.
    pub env: Option<String>,
    /// What `instances: "max"` means: this host's CPUs.
    pub cpus: u32,
}

pub fn import(path: &Path, opts: &Options) -> anyhow::Result<Import> {
    let value = load::load(path)?;
    from_value(path, &value, opts)
}

pub fn from_value(path: &Path, value: &Value, opts: &Options) -> anyhow::Result<Import> {
    let mut imp = Import::new(Tool::Pm2, path);
    let abs = std::path::absolute(path)?;
    let dir = abs.parent().unwrap_or(Path::new("/")).to_path_buf();
    let apps: Vec<&Value> = match value {
        Value::Array(a) => a.iter().collect(),
        Value::Object(o) if o.contains_key("apps") => {
            for key in o.keys().filter(|k| *k != "apps") {
                let why = if key == "deploy" {
                    "herd does not deploy code; keep using your deploy tool, then `herd reload NAME`"
                } else {
                    "not a part of a PM2 ecosystem file herd knows"
                };
                imp.skip("file", key, why);
            }
            match &o["apps"] {
                Value::Array(a) => a.iter().collect(),
                single @ Value::Object(_) => vec![single],
                _ => bail!("{}: `apps` must be a list of apps", path.display()),
            }
        }
        Value::Object(o) if o.contains_key("script") => vec![value],
        _ => bail!(
            "{}: no apps found: an ecosystem file exports `{{ apps: [{{ name, script, ... }}] }}`",
            path.display()
        ),
    };
    let mut selected_env_used = false;
    for (i, app) in apps.into_iter().enumerate() {
        let Value::Object(app) = app else {
            bail!("{}: apps[{i}] is not an object", path.display());
        };
        selected_env_used |= map_app(&mut imp, i, app, &dir, opts)?;
    }
    if let Some(env) = &opts.env
        && !selected_env_used
    {
        imp.skip(
            "file",
            &format!("env_{env}"),
            format!("no app defines it, so --env {env} changed nothing"),
        );
    }
    Ok(imp)
}

/// An app's keys, remembering which were read, so the rest can be reported.
struct Keys<'a> {
    app: &'a Map<String, Value>,
    used: RefCell<BTreeSet<String>>,
}

impl<'a> Keys<'a> {
    fn take(&self, key: &str) -> Option<&'a Value> {
        self.used.borrow_mut().insert(key.to_string());
        self.app.get(key).filter(|v| !v.is_null())
    }

    fn unused(&self) -> Vec<&'a str> {
        let used = self.used.borrow();
        self.app
            .keys()
            .filter(|k| !used.contains(k.as_str()))
            .map(String::as_str)
            .collect()
    }
}

/// Maps one app; returns whether it had the `env_NAME` that `--env` selects.
fn map_app(
    imp: &mut Import,
    index: usize,
    app: &Map<String, Value>,
    dir: &Path,
    opts: &Options,
) -> anyhow::Result<bool> {
    let source = imp.source.display().to_string();
    let keys = Keys {
        app,
        used: RefCell::default(),
    };
    let take = |key: &str| keys.take(key);
    // Errors name the app as the file does: by name, else by its place in `apps`.
    let label = match app.get("name").and_then(string) {
        Some(n) => format!("app \"{n}\""),
        None => format!("apps[{index}]"),
    };
    let bad = |key: &str, want: &str| anyhow::anyhow!("{source}: {label}: key `{key}`: {want}");

    let Some(script) = take("script") else {
        bail!("{source}: {label}: missing required key `script`");
    };
    let script = string(script).ok_or_else(|| bad("script", "must be a string"))?;
    let wanted = match take("name") {
        Some(n) => string(n).ok_or_else(|| bad("name", "must be a string"))?,
        // PM2 names an unnamed app after its script.
        None => Path::new(&script)
            .file_stem()
            .map_or("app".into(), |s| s.to_string_lossy().into_owned()),
    };
    let origin = format!("app \"{wanted}\"");
    let mut d = Draft::new(origin.clone());
    let name = app_name(&wanted);
    let e = d.set("name", name.as_str(), "name");
    if name != wanted {
        e.note(format!("pm2 name \"{wanted}\""));
    }

    let cwd = match take("cwd") {
        Some(c) => {
            let c = string(c).ok_or_else(|| bad("cwd", "must be a string"))?;
            tidy(&dir.join(c))
        }
        None => dir.to_path_buf(),
    };
    command(&mut d, imp, &origin, &script, &cwd, &keys)?;
    d.set("cwd", cwd.display().to_string(), "cwd");

    // instances (PM2 runs one when unset).
    if let Some(v) = take("instances") {
        let (n, note) = instances(v, opts.cpus)
            .ok_or_else(|| bad("instances", "must be a number or \"max\""))?;
        let e = d.set("instances", i64::from(n), "instances");
        if let Some(note) = note {
            e.note(note);
        }
    }
    if let Some(mode) = take("exec_mode").and_then(string)
        && mode.starts_with("cluster")
    {
        imp.skip(
            &origin,
            "exec_mode",
            "herd runs every instance as its own process (no node cluster master); instances that must share a port get it from herd with `listen`",
        );
    }

    let had_selected = env(&mut d, imp, &origin, &keys, opts)?;
    restart(&mut d, &keys, bad)?;

    if let Some(v) = take("kill_timeout") {
        let ms = millis(v).ok_or_else(|| bad("kill_timeout", "must be milliseconds"))?;
        let s = ms.div_ceil(1000).max(1);
        let e = d.set("stop_timeout_s", s as i64, "kill_timeout");
        if s * 1000 != ms {
            e.note(format!(
                "pm2 kill_timeout {ms} ms, rounded up to whole seconds"
            ));
        }
    }
    let signal = take("kill_signal").and_then(string);
    let e = d.set(
        "stop_signal",
        signal.clone().unwrap_or_else(|| "SIGINT".into()),
        "kill_signal",
    );
    if signal.is_none() {
        e.note("pm2 stops apps with SIGINT");
    }
    if let Some(v) = take("max_memory_restart") {
        let b = bytes(v).ok_or_else(|| {
            bad(
                "max_memory_restart",
                "must be bytes or a size like \"300M\"",
            )
        })?;
        let mb = b.div_ceil(1024 * 1024).max(1);
        d.set("max_memory_mb", mb as i64, "max_memory_restart")
            .note(format!("pm2 max_memory_restart {}", show(v)));
    }
    if let Some(v) = take("cron_restart") {
        let expr = string(v).ok_or_else(|| bad("cron_restart", "must be a string"))?;
        let fields: Vec<&str> = expr.split_whitespace().collect();
        // PM2's cron takes an optional seconds field; herd's is 5 fields.
        if fields.len() == 6 && fields[0] == "0" {
            d.set("cron_restart", fields[1..].join(" "), "cron_restart")
                .note(format!("pm2 \"{expr}\" without its seconds field"));
        } else {
            d.set("cron_restart", expr, "cron_restart");
        }
    }
    // PM2's `uid`/`gid` (a name or a number): herd's own parser checks them below.
    for (from, to) in [("uid", "user"), ("gid", "group")] {
        if let Some(v) = take(from) {
            let who =
                string(v).ok_or_else(|| bad(from, "must be a user or group name or number"))?;
            d.set(to, who, from);
        }
    }
    watch(&mut d, &keys);

    for key in keys.unused() {
        if let Some(env) = key.strip_prefix("env_") {
            imp.skip(
                &origin,
                key,
                format!("not selected; `--env {env}` merges it over env"),
            );
        } else {
            imp.skip(&origin, key, unmapped_reason(key));
        }
    }
    imp.apps.push(d);
    Ok(had_selected)
}

/// `instances`: a count, or PM2's `"max"`/`0` (every CPU) and `-N` (every CPU but N), which
/// herd, with a fixed count, fixes to this host's CPUs at import.
fn instances(v: &Value, cpus: u32) -> Option<(u32, Option<String>)> {
    let n: i64 = match v {
        Value::Number(n) => n.as_i64()?,
        Value::String(s) if s.trim() == "max" => 0,
        Value::String(s) => s.trim().parse().ok()?,
        _ => return None,
    };
    if n > 0 {
        return Some((u32::try_from(n).ok()?, None));
    }
    let count = (i64::from(cpus) + n).max(1) as u32;
    Some((
        count,
        Some(format!(
            "pm2 instances {}: this host's {cpus} CPUs{}, fixed at import",
            show(v),
            if n < 0 {
                format!(" less {}", -n)
            } else {
                String::new()
            }
        )),
    ))
}

/// `env`, with `env_NAME` merged over it for `--env NAME`. Returns whether it was there.
fn env(
    d: &mut Draft,
    imp: &mut Import,
    origin: &str,
    keys: &Keys,
    opts: &Options,
) -> anyhow::Result<bool> {
    let mut vars = toml::Table::new();
    let mut layers = vec!["env".to_string()];
    if let Some(name) = &opts.env {
        layers.push(format!("env_{name}"));
    }
    let mut had_selected = false;
    for layer in &layers {
        let Some(v) = keys.take(layer) else {
            continue;
        };
        had_selected |= layer != "env";
        let Value::Object(map) = v else {
            bail!(
                "{}: {origin}: key `{layer}`: must be an object of variables",
                imp.source.display()
            );
        };
        for (var, value) in map {
            match value {
                Value::Null => {
                    vars.remove(var);
                }
                Value::String(s) => imp.env_var(origin, &mut vars, var, s.clone()),
                // PM2 hands numbers, booleans and objects over as their JSON text.
                other => imp.env_var(origin, &mut vars, var, other.to_string()),
            }
        }
    }
    if !vars.is_empty() {
        let e = d.set("env", vars, "env");
        if had_selected {
            e.note(format!("env with {} merged over it", layers[1]));
        }
    }
    Ok(had_selected)
}

/// `watch`/`ignore_watch`/`watch_delay`, offered under herd's names; reported if this herd
/// does not have them.
fn watch(d: &mut Draft, keys: &Keys) {
    let take = |key: &str| keys.take(key);
    const NO_WATCH: &str =
        "this herd does not watch files; restart on deploy with `herd reload NAME`";
    let paths = match take("watch") {
        Some(Value::Bool(true)) => vec![".".to_string()],
        Some(v) => strings(v).unwrap_or_default(),
        None => Vec::new(),
    };
    if paths.is_empty() {
        // Nothing is watched, so there is nothing to ignore or debounce either.
        take("ignore_watch");
        take("watch_delay");
        return;
    }
    let list = |v: Vec<String>| toml::Value::Array(v.into_iter().map(Into::into).collect());
    d.set("watch", list(paths), "watch")
        .unless_unknown(NO_WATCH);
    if let Some(ignore) = take("ignore_watch").and_then(strings) {
        d.set("watch_ignore", list(ignore), "ignore_watch")
            .unless_unknown(NO_WATCH);
    }
    if let Some(ms) = take("watch_delay").and_then(millis) {
        d.set("watch_debounce_ms", ms as i64, "watch_delay")
            .unless_unknown(NO_WATCH);
    }
}

/// Why a PM2 key has no herd equivalent.
fn unmapped_reason(key: &str) -> &'static str {
    match key {
        "out_file" | "error_file" | "log_file" | "output" | "error" | "log" | "merge_logs"
        | "combine_logs" | "log_date_format" | "time" | "log_type" | "disable_logs" => {
            "herd writes each instance's stdout and stderr to $HERD_HOME/logs/NAME-N.log (`herd logs NAME`); size and count are log_max_bytes and log_files"
        }
        "pid_file" | "pid" => "herd keeps pids itself (`herd ps --json`)",
        "exec_mode" => "fork mode is how herd runs every app",
        "instance_var" | "increment_var" => {
            "herd gives each instance its index in HERD_INSTANCE (0, 1, ...)"
        }
        "wait_ready" | "listen_timeout" => {
            "herd has no ready message; an [app.health] probe says when an instance is ready"
        }
        "shutdown_with_message" => "herd stops apps with a signal (stop_signal)",
        "autostart" => "`herd start FILE` starts every app in it; `herd stop NAME` after it",
        "treekill" => "herd always signals the whole process group",
        "namespace" => "herd has no namespaces; app names are unique per host",
        "source_map_support" | "vizion" | "post_update" | "force" | "filter_env"
        | "append_env_to_name" | "automation" | "pmx" => "a PM2 feature herd does not have",
        "watch_options" => "herd's watcher (if any) has no such options",
        _ => "not a PM2 key herd knows",
    }
}

/// A JSON value as the user wrote it, for notes.
fn show(v: &Value) -> String {
    match v {
        Value::String(s) => format!("\"{s}\""),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests;
