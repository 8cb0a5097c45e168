//! Writes drafts as a herd app file. Values are formatted by the `toml` crate (so quoting and
//! escaping are TOML's own); the layout is ours, because the file carries comments: where a
//! value came from, and which keys were left out.

use super::{Draft, Skipped, Tool};
use std::fmt::Write;
use std::path::Path;

/// The whole file: a header naming the source, then the apps.
pub fn app_file(tool: Tool, source: &Path, apps: &[Draft], skipped: &[Skipped]) -> String {
    let mut out = format!(
        "# herd app file imported by `herd import {tool}` from {}.\n",
        source.display()
    );
    if !skipped.is_empty() {
        out.push_str("# Keys that were not mapped are listed at their app, and on stderr.\n");
    }
    out.push_str(&app_tables(apps, skipped));
    out
}

/// One `[[app]]` per draft. Tables (`env`) follow an app's plain keys as `[app.env]`, which
/// TOML requires.
pub fn app_tables(apps: &[Draft], skipped: &[Skipped]) -> String {
    let mut out = String::new();
    for app in apps {
        out.push('\n');
        app_table(&mut out, app, skipped);
    }
    out
}

fn app_table(out: &mut String, app: &Draft, skipped: &[Skipped]) {
    out.push_str("[[app]]\n");
    let _ = writeln!(out, "# {}", app.origin);
    for s in skipped.iter().filter(|s| s.origin == app.origin) {
        let _ = writeln!(out, "# not mapped: {}: {}", s.key, one_line(&s.why));
    }
    let (tables, plain): (Vec<_>, Vec<_>) = app
        .entries
        .iter()
        .partition(|e| matches!(e.value, toml::Value::Table(_)));
    for e in plain {
        let _ = write!(out, "{} = {}", key(e.key), e.value);
        if let Some(note) = &e.note {
            let _ = write!(out, "  # {}", one_line(note));
        }
        out.push('\n');
    }
    for e in tables {
        let toml::Value::Table(t) = &e.value else {
            continue;
        };
        let _ = writeln!(out, "\n[app.{}]", key(e.key));
        if let Some(note) = &e.note {
            let _ = writeln!(out, "# {}", one_line(note));
        }
        for (k, v) in t {
            let _ = writeln!(out, "{} = {v}", key(k));
        }
    }
}

/// A bare key when TOML allows one, else a quoted one.
fn key(k: &str) -> String {
    if !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
    {
        k.to_string()
    } else {
        toml::Value::String(k.to_string()).to_string()
    }
}

/// Comments end at a newline, so a note may not hold one.
fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_goes_last_as_a_table_and_odd_keys_are_quoted() {
        let mut d = Draft::new("app \"api\"".into());
        d.set("name", "api", "name");
        let mut env = toml::Table::new();
        env.insert("NODE_ENV".into(), "production".into());
        env.insert("weird key".into(), "a \"quoted\"\nvalue".into());
        d.set("env", env, "env")
            .note("env merged with env_production");
        d.set("command", "node", "script")
            .note("pm2's\ninterpreter");
        let text = app_file(Tool::Pm2, Path::new("/srv/eco.json"), &[d], &[]);
        assert_eq!(
            text,
            "# herd app file imported by `herd import pm2` from /srv/eco.json.\n\n\
             [[app]]\n# app \"api\"\nname = \"api\"\ncommand = \"node\"  # pm2's interpreter\n\n\
             [app.env]\n# env merged with env_production\nNODE_ENV = \"production\"\n\
             \"weird key\" = \"\"\"\na \"quoted\"\nvalue\"\"\"\n"
        );
        let parsed: toml::Table = toml::from_str(&text).unwrap();
        let app = &parsed["app"].as_array().unwrap()[0];
        assert_eq!(
            app["env"]["weird key"].as_str(),
            Some("a \"quoted\"\nvalue")
        );
    }
}
