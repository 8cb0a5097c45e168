//! supervisord.conf to herd apps. A `[program:x]` becomes one app (`numprocs` as instances),
//! or one app per process when its command, directory or environment differ by
//! `%(process_num)`. supervisord's start checks (`startsecs`, `startretries`, its 1 s, 2 s,
//! 3 s... retry delays) become herd's crash limit, and `priority` becomes `depends_on`.

mod files;
mod policy;

use super::{Draft, Import, Tool, app_name, tidy};
use anyhow::bail;
use files::{Located, env_var, environment, expand};
use policy::{restart, stop};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// supervisord's default (supervisor/options.py).
const PRIORITY: i64 = 999;

pub fn import(path: &Path) -> anyhow::Result<Import> {
    let sections = files::load(path)?;
    from_sections(path, &sections)
}

/// Keys a program section may hold that this importer reads (the rest are reported).
const READ: &[&str] = &[
    "command",
    "directory",
    "environment",
    "numprocs",
    "numprocs_start",
    "process_name",
    "autorestart",
    "exitcodes",
    "startretries",
    "startsecs",
    "stopsignal",
    "stopwaitsecs",
    "stopasgroup",
    "killasgroup",
    "user",
    "umask",
    "priority",
    "redirect_stderr",
    "stdout_logfile_maxbytes",
    "stdout_logfile_backups",
];

pub fn from_sections(path: &Path, sections: &[Located]) -> anyhow::Result<Import> {
    let mut imp = Import::new(Tool::Supervisord, path);
    let daemon = sections.iter().find(|s| s.section.name == "supervisord");
    // program -> (group, group priority)
    let mut groups: BTreeMap<String, (String, Option<i64>)> = BTreeMap::new();
    for s in sections {
        let name = s.section.name.as_str();
        if let Some(group) = name.strip_prefix("group:") {
            let origin = format!("group \"{group}\"");
            let priority = match s.section.get("priority") {
                Some(p) => Some(int(s, "priority", p)?),
                None => None,
            };
            let programs: Vec<&str> = s
                .section
                .get("programs")
                .unwrap_or("")
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .collect();
            for p in &programs {
                groups.insert(p.to_string(), (group.to_string(), priority));
            }
            imp.skip(
                &origin,
                "programs",
                format!(
                    "herd has no groups; {} become apps of their own (start and stop them by name){}",
                    programs.join(", "),
                    if priority.is_some() { "; the group's priority orders them" } else { "" }
                ),
            );
            for (k, _) in &s.section.entries {
                if k != "programs" && k != "priority" {
                    imp.skip(&origin, k, "herd has no groups");
                }
            }
        } else if name == "supervisord" {
            for (k, _) in &s.section.entries {
                if k != "environment" && k != "directory" {
                    imp.skip(
                        "[supervisord]",
                        k,
                        "a setting of supervisord itself; herd's daemon reads $HERD_HOME/config.toml",
                    );
                }
            }
        } else if !name.starts_with("program:") {
            let why = match name.split(':').next().unwrap_or(name) {
                "eventlistener" => {
                    "herd has no event listeners; `herd events --follow --json` streams its events"
                }
                "fcgi-program" => "herd does not run FastCGI programs",
                "unix_http_server" | "inet_http_server" | "supervisorctl" | "rpcinterface" => {
                    "supervisord's control interface; herd has its own (the herd CLI, its socket and TCP API)"
                }
                _ => "not a section herd knows",
            };
            imp.skip("file", &format!("[{name}]"), why);
        }
    }

    let mut priorities: Vec<(String, i64)> = Vec::new();
    for s in sections {
        let Some(program) = s.section.name.strip_prefix("program:") else {
            continue;
        };
        let group = groups.get(program);
        let priority = match (group.and_then(|g| g.1), s.section.get("priority")) {
            (Some(p), _) => p,
            (None, Some(p)) => int(s, "priority", p)?,
            (None, None) => PRIORITY,
        };
        for d in program_apps(&mut imp, s, program, group.map(|g| g.0.as_str()), daemon)? {
            priorities.push((d.name().to_string(), priority));
            imp.apps.push(d);
        }
    }
    order(&mut imp, &priorities);
    Ok(imp)
}

/// `priority` as `depends_on`: each app waits for the apps of the next lower priority.
fn order(imp: &mut Import, priorities: &[(String, i64)]) {
    let tiers: BTreeSet<i64> = priorities.iter().map(|(_, p)| *p).collect();
    if tiers.len() < 2 {
        return;
    }
    let tiers: Vec<i64> = tiers.into_iter().collect();
    for app in &mut imp.apps {
        let name = app.name().to_string();
        let Some(mine) = priorities.iter().find(|(n, _)| *n == name).map(|(_, p)| *p) else {
            continue;
        };
        let Some(pos) = tiers.iter().position(|p| *p == mine).filter(|p| *p > 0) else {
            continue;
        };
        let below = tiers[pos - 1];
        let deps: Vec<toml::Value> = priorities
            .iter()
            .filter(|(_, p)| *p == below)
            .map(|(n, _)| toml::Value::String(n.clone()))
            .collect();
        app.set("depends_on", toml::Value::Array(deps), "priority")
            .note(format!(
                "supervisord priority {mine}: starts after the priority {below} apps run, stops before them"
            ));
    }
}

fn int(s: &Located, key: &str, v: &str) -> anyhow::Result<i64> {
    v.trim().parse().map_err(|_| {
        anyhow::anyhow!(
            "{}: [{}] key `{key}`: `{v}` is not a whole number",
            s.file.display(),
            s.section.name
        )
    })
}

fn boolean(s: &Located, key: &str, v: &str) -> anyhow::Result<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "1" => Ok(true),
        "false" | "no" | "off" | "0" => Ok(false),
        _ => bail!(
            "{}: [{}] key `{key}`: `{v}` is not true or false",
            s.file.display(),
            s.section.name
        ),
    }
}

/// supervisord's byte sizes: `50MB`, `1KB`, `1GB` (binary units) or plain bytes.
fn byte_size(v: &str) -> Option<u64> {
    let v = v.trim().to_ascii_uppercase();
    let (digits, scale) = match v.len().checked_sub(2).map(|i| v.split_at(i)) {
        Some((d, "KB")) => (d, 1u64 << 10),
        Some((d, "MB")) => (d, 1 << 20),
        Some((d, "GB")) => (d, 1 << 30),
        _ => (v.as_str(), 1),
    };
    digits.trim().parse::<u64>().ok()?.checked_mul(scale)
}

/// The herd apps of one `[program:x]`.
fn program_apps(
    imp: &mut Import,
    s: &Located,
    program: &str,
    group: Option<&str>,
    daemon: Option<&Located>,
) -> anyhow::Result<Vec<Draft>> {
    let sec = &s.section;
    let origin = format!("program \"{program}\"");
    let numprocs = match sec.get("numprocs") {
        Some(v) => int(s, "numprocs", v)?.max(1),
        None => 1,
    };
    let start = match sec.get("numprocs_start") {
        Some(v) => int(s, "numprocs_start", v)?,
        None => 0,
    };
    let here = s.here();
    let host = hostname();
    let vars = |num: i64| {
        let (here, host) = (here.clone(), host.clone());
        let program = program.to_string();
        let group = group.unwrap_or(&program).to_string();
        move |name: &str| -> Option<String> {
            match name {
                "program_name" => Some(program.clone()),
                "group_name" => Some(group.clone()),
                "process_num" => Some(num.to_string()),
                "numprocs" => Some(numprocs.to_string()),
                "here" => Some(here.clone()),
                "host_node_name" => Some(host.clone()),
                other => env_var(other),
            }
        }
    };
    let get = |key: &str, num: i64| -> anyhow::Result<Option<String>> {
        match sec.get(key) {
            Some(v) => expand(v, &vars(num)).map(Some).map_err(|e| {
                anyhow::anyhow!("{}: [{}] key `{key}`: {e}", s.file.display(), sec.name)
            }),
            None => Ok(None),
        }
    };
    // Processes that differ only by number are instances of one app; others are apps.
    let per_process = numprocs > 1
        && ["command", "directory", "environment"]
            .iter()
            .any(|k| sec.get(k).is_some_and(|v| v.contains("%(process_num)")));
    let nums: Vec<i64> = if per_process {
        (start..start + numprocs).collect()
    } else {
        vec![start]
    };
    let mut apps = Vec::new();
    for num in nums {
        let name = if per_process {
            get("process_name", num)?.unwrap_or_else(|| format!("{program}_{num}"))
        } else {
            program.to_string()
        };
        let mut d = Draft::new(origin.clone());
        let herd_name = app_name(&name);
        let e = d.set("name", herd_name.as_str(), "process_name");
        if herd_name != name {
            e.note(format!("supervisord name \"{name}\""));
        } else if per_process {
            e.note(format!(
                "process {num} of {program}: its command differs by process_num"
            ));
        }
        let Some(command) = get("command", num)? else {
            bail!(
                "{}: [{}] has no `command`; every program needs one",
                s.file.display(),
                sec.name
            );
        };
        let Some(mut words) = shlex::split(&command).filter(|w| !w.is_empty()) else {
            bail!(
                "{}: [{}] key `command`: `{command}` does not split into words (an unclosed quote?)",
                s.file.display(),
                sec.name
            );
        };
        let program_path = words.remove(0);
        let program_path = if program_path.starts_with('/') {
            tidy(Path::new(&program_path)).display().to_string()
        } else {
            program_path
        };
        d.set("command", program_path, "command");
        if !words.is_empty() {
            d.set(
                "args",
                toml::Value::Array(words.into_iter().map(Into::into).collect()),
                "command",
            );
        }
        let daemon_dir = daemon.and_then(|d| {
            let dir = d.section.get("directory")?;
            Some(tidy(&Path::new(&d.here()).join(dir)).display().to_string())
        });
        match (get("directory", num)?, daemon_dir) {
            (Some(dir), _) => {
                d.set(
                    "cwd",
                    tidy(&Path::new(&here).join(dir)).display().to_string(),
                    "directory",
                );
            }
            (None, Some(dir)) => {
                d.set("cwd", dir, "directory")
                    .note("[supervisord] directory");
            }
            (None, None) => {
                d.set("cwd", "/", "directory")
                    .note("supervisord runs programs in / (its own directory when daemonized)");
            }
        }
        if !per_process && numprocs > 1 {
            d.set("instances", numprocs, "numprocs").note(format!(
                "supervisord numprocs {numprocs}; herd numbers them in HERD_INSTANCE from 0"
            ));
        }
        let mut env = toml::Table::new();
        if let Some(daemon) = daemon
            && let Some(text) = daemon.section.get("environment")
        {
            let here = daemon.here();
            let vars = expand(text, &|n| {
                if n == "here" {
                    Some(here.clone())
                } else {
                    env_var(n)
                }
            })
            .and_then(|t| environment(&t))
            .map_err(|e| {
                anyhow::anyhow!(
                    "{}: [supervisord] key `environment`: {e}",
                    daemon.file.display()
                )
            })?;
            for (k, v) in vars {
                imp.env_var(&origin, &mut env, &k, v);
            }
        }
        if let Some(text) = get("environment", num)? {
            let vars = environment(&text).map_err(|e| {
                anyhow::anyhow!(
                    "{}: [{}] key `environment`: {e}",
                    s.file.display(),
                    sec.name
                )
            })?;
            for (k, v) in vars {
                imp.env_var(&origin, &mut env, &k, v);
            }
        }
        if !env.is_empty() {
            d.set("env", env, "environment");
        }
        restart(&mut d, s)?;
        stop(&mut d, imp, s, &origin, num == start)?;
        logs(&mut d, imp, s, &origin, num == start)?;
        // Checked by herd's own parser below: a user this host lacks (or a daemon that is
        // not root) drops the key with herd's reason.
        if let Some(user) = get("user", num)? {
            d.set("user", user, "user");
        }
        if let Some(umask) = get("umask", num)? {
            d.set("umask", umask, "umask");
        }
        apps.push(d);
    }
    for (k, v) in &sec.entries {
        // autostart = true is what `herd start` does anyway.
        if READ.contains(&k.as_str()) || (k == "autostart" && boolean(s, k, v)?) {
            continue;
        }
        imp.skip(&origin, k, unmapped_reason(k));
    }
    Ok(apps)
}

/// stdout_logfile_maxbytes/backups as herd's log_max_bytes/log_files.
fn logs(
    d: &mut Draft,
    imp: &mut Import,
    s: &Located,
    origin: &str,
    report: bool,
) -> anyhow::Result<()> {
    let sec = &s.section;
    if let Some(v) = sec.get("stdout_logfile_maxbytes") {
        match byte_size(v) {
            Some(0) if report => imp.skip(
                origin,
                "stdout_logfile_maxbytes",
                "0 (never rotate) has no herd equivalent; herd always rotates (default 10 MiB)",
            ),
            Some(0) => {}
            Some(n) => {
                d.set("log_max_bytes", n as i64, "stdout_logfile_maxbytes")
                    .note(format!("supervisord {}", v.trim()));
            }
            None => bail!(
                "{}: [{}] key `stdout_logfile_maxbytes`: `{v}` is not a size like 50MB",
                s.file.display(),
                sec.name
            ),
        }
    }
    if let Some(v) = sec.get("stdout_logfile_backups") {
        let backups = int(s, "stdout_logfile_backups", v)?.max(0);
        d.set("log_files", backups + 1, "stdout_logfile_backups")
            .note(format!("{backups} backups and the live file"));
    }
    Ok(())
}

fn unmapped_reason(key: &str) -> &'static str {
    match key {
        "stdout_logfile" | "stderr_logfile" => {
            "herd writes each instance's stdout and stderr to $HERD_HOME/logs/NAME-N.log (`herd logs NAME`)"
        }
        "stderr_logfile_maxbytes" | "stderr_logfile_backups" => {
            "herd keeps stdout and stderr in one log, sized by stdout_logfile_maxbytes/backups"
        }
        "autostart" => "`herd start FILE` starts every app in it; `herd stop NAME` after it",
        "stdout_capture_maxbytes"
        | "stderr_capture_maxbytes"
        | "stdout_events_enabled"
        | "stderr_events_enabled" => "herd has no process communication events",
        "stdout_syslog" | "stderr_syslog" => "herd does not log to syslog",
        "serverurl" => "herd apps reach the daemon through the herd CLI",
        _ => "not a supervisord key herd knows",
    }
}

/// `%(host_node_name)s`: this host's name, as supervisord's `platform.node()`.
fn hostname() -> String {
    sysinfo::System::host_name().unwrap_or_default()
}

#[cfg(test)]
mod tests;
