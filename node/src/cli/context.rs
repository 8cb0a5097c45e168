//! Contexts: named remote daemons (host, token file, CA file), so an operator of several hosts
//! types `herd context use prod` once instead of `--host`/`--token-file` on every command.
//! Kept in `$XDG_CONFIG_HOME/herd/contexts.toml` (else `~/.config/herd/`), the directory 0700
//! and the file 0600, always replaced whole (temp file, fsync, rename). A token file is
//! referenced by its absolute path, never copied: rotating the token needs no `context add`.

use super::exit::{CliError, Code};
use super::output::{print_json, table};
use anyhow::{Context as _, bail};
use clap::Subcommand;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

const FILE: &str = "contexts.toml";

#[derive(Debug, Subcommand)]
pub enum ContextCommand {
    /// Add (or replace) context NAME: `herd context add prod --host 10.0.0.5 --token-file
    /// ~/.herd-prod.token [--ca-file ca.pem]` (the global flags name what it stores).
    Add { name: String },
    /// Make NAME the current context: commands without --host or --context talk to it.
    Use { name: String },
    /// Every context; `*` marks the current one.
    #[command(alias = "ls")]
    List,
    /// Forget context NAME (its token file is left alone).
    #[command(alias = "rm")]
    Remove { name: String },
}

/// One remote daemon: what `--host`, `--token-file` and `--ca-file` would say.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Context {
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
}

/// The whole file: the contexts by name and which one is current.
#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Contexts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<String>,
    #[serde(default)]
    pub contexts: BTreeMap<String, Context>,
}

impl Contexts {
    /// `name` as a context, or the "not found" error that lists where to look.
    pub fn get(&self, name: &str) -> Result<&Context, CliError> {
        self.contexts.get(name).ok_or_else(|| {
            CliError::new(
                Code::NotFound,
                format!("no context `{name}`; `herd context list` shows them"),
            )
        })
    }
}

/// Where contexts live: `$XDG_CONFIG_HOME/herd`, else `$HOME/.config/herd`.
pub fn dir(env: impl Fn(&str) -> Option<String>) -> anyhow::Result<PathBuf> {
    let set = |k: &str| env(k).filter(|v| Path::new(v).is_absolute());
    if let Some(x) = set("XDG_CONFIG_HOME") {
        return Ok(PathBuf::from(x).join("herd"));
    }
    match set("HOME") {
        Some(h) => Ok(PathBuf::from(h).join(".config").join("herd")),
        None => bail!("cannot find the config directory for contexts: set HOME or XDG_CONFIG_HOME"),
    }
}

/// The stored contexts (none when the file does not exist).
pub fn load(dir: &Path) -> anyhow::Result<Contexts> {
    let path = dir.join(FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => toml::from_str(&text).with_context(|| {
            format!(
                "{} does not parse; fix or remove it (`herd context add` writes it)",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Contexts::default()),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Replaces the file whole: a crash leaves the old file or the new one, never half of either.
pub fn save(dir: &Path, contexts: &Contexts) -> anyhow::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    // It may have existed with a looser mode; it holds references to credentials.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot make {} 0700", dir.display()))?;
    let text = toml::to_string(contexts).context("cannot encode the contexts")?;
    let path = dir.join(FILE);
    let tmp = dir.join(format!(".{FILE}.{}.tmp", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(dir)?.sync_all()
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        anyhow::anyhow!("cannot write {}: {e}", path.display())
    })
}

/// The context a command talks to: `named` (`--context` or `HERD_CONTEXT`), else the current
/// one, else none (this host's daemon). An unknown name is "not found" (exit code 3).
pub fn chosen(
    named: Option<&str>,
    env: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<Option<(String, Context)>> {
    let named = named.map(str::trim).filter(|n| !n.is_empty());
    let dir = match (dir(env), named) {
        (Ok(d), _) => d,
        (Err(e), Some(_)) => return Err(e),
        // No config directory, nothing asked for: the local daemon, as before contexts.
        (Err(_), None) => return Ok(None),
    };
    let all = match load(&dir) {
        Ok(all) => all,
        // Another user's config dir (`sudo -u nobody herd ...` keeps root's HOME): nothing
        // asked for, so the local daemon, as without contexts.
        Err(e)
            if named.is_none()
                && e.root_cause()
                    .downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::PermissionDenied) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    let Some(name) = named.map(String::from).or(all.current.clone()) else {
        return Ok(None);
    };
    let context = all.get(&name).map_err(|e| match named {
        Some(_) => e,
        None => CliError::new(
            Code::NotFound,
            format!(
                "the current context `{name}` is gone from {}; `herd context use NAME` picks another",
                dir.join(FILE).display()
            ),
        ),
    })?;
    Ok(Some((name, context.clone())))
}

fn check_name(name: &str) -> anyhow::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !ok {
        bail!("context name `{name}`: use 1-64 letters, digits, `-`, `_` or `.`");
    }
    Ok(())
}

/// A file a context refers to, as an absolute path that exists now.
fn referenced(what: &str, path: &Path) -> anyhow::Result<PathBuf> {
    let abs =
        std::path::absolute(path).with_context(|| format!("cannot resolve {}", path.display()))?;
    if !abs.is_file() {
        bail!("the {what} {} does not exist", abs.display());
    }
    Ok(abs)
}

/// What `herd context add` stores, from the global flags.
pub struct AddArgs<'a> {
    pub host: Option<&'a str>,
    pub token_file: Option<&'a Path>,
    pub ca_file: Option<&'a Path>,
}

pub fn run(
    command: ContextCommand,
    add: AddArgs<'_>,
    json: bool,
    env: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<()> {
    let dir = dir(env)?;
    let mut all = load(&dir)?;
    match command {
        ContextCommand::Add { name } => {
            check_name(&name)?;
            let Some(host) = add.host.map(str::trim).filter(|h| !h.is_empty()) else {
                bail!(
                    "`herd context add {name}` needs --host HOST[:PORT] (and usually --token-file FILE)"
                );
            };
            let context = Context {
                host: host.to_string(),
                token_file: add
                    .token_file
                    .map(|f| referenced("token file", f))
                    .transpose()?,
                ca_file: add.ca_file.map(|f| referenced("CA file", f)).transpose()?,
            };
            let replaced = all.contexts.insert(name.clone(), context.clone()).is_some();
            save(&dir, &all)?;
            if json {
                print_json(&json!({ "added": name, "replaced": replaced, "context": context }));
            } else {
                outln!(
                    "context {name} {} (host {host}); `herd context use {name}` makes it current",
                    if replaced { "replaced" } else { "added" }
                );
            }
        }
        ContextCommand::Use { name } => {
            all.get(&name)?;
            all.current = Some(name.clone());
            save(&dir, &all)?;
            if json {
                print_json(&json!({ "current": name }));
            } else {
                outln!("current context: {name}");
            }
        }
        ContextCommand::List => {
            let current = all.current.as_deref();
            if json {
                let list: Vec<_> = all
                    .contexts
                    .iter()
                    .map(|(name, c)| {
                        json!({
                            "name": name,
                            "host": c.host,
                            "token_file": c.token_file,
                            "ca_file": c.ca_file,
                            "current": current == Some(name.as_str()),
                        })
                    })
                    .collect();
                print_json(&json!({ "current": current, "contexts": list }));
                return Ok(());
            }
            if all.contexts.is_empty() {
                outln!(
                    "no contexts; `herd context add NAME --host HOST --token-file FILE` adds one"
                );
                return Ok(());
            }
            let path = |p: &Option<PathBuf>| {
                p.as_ref()
                    .map_or_else(|| "-".into(), |p| p.display().to_string())
            };
            let rows: Vec<Vec<String>> = all
                .contexts
                .iter()
                .map(|(name, c)| {
                    vec![
                        if current == Some(name.as_str()) {
                            "*".into()
                        } else {
                            String::new()
                        },
                        name.clone(),
                        c.host.clone(),
                        path(&c.token_file),
                        path(&c.ca_file),
                    ]
                })
                .collect();
            table(&["CURRENT", "NAME", "HOST", "TOKEN FILE", "CA FILE"], &rows);
        }
        ContextCommand::Remove { name } => {
            all.get(&name)?;
            all.contexts.remove(&name);
            let was_current = all.current.as_deref() == Some(name.as_str());
            if was_current {
                all.current = None;
            }
            save(&dir, &all)?;
            if json {
                print_json(&json!({ "removed": name, "was_current": was_current }));
            } else if was_current {
                outln!(
                    "context {name} removed; it was current: commands now talk to this host's daemon"
                );
            } else {
                outln!("context {name} removed");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    }

    #[test]
    fn the_config_dir_is_xdg_then_home_and_relative_values_are_ignored() {
        let d = |v: &[(&str, &str)]| dir(env_of(v)).ok();
        assert_eq!(
            d(&[("XDG_CONFIG_HOME", "/x"), ("HOME", "/h")]),
            Some("/x/herd".into())
        );
        assert_eq!(
            d(&[("XDG_CONFIG_HOME", "rel"), ("HOME", "/h")]),
            Some("/h/.config/herd".into())
        );
        assert_eq!(d(&[]), None);
    }

    #[test]
    fn saved_contexts_load_back_with_private_modes_and_a_named_one_beats_the_current() {
        let tmp = tempfile::tempdir().unwrap();
        let xdg = tmp.path().display().to_string();
        let env = env_of(&[("XDG_CONFIG_HOME", &xdg)]);
        let dir = dir(&env).unwrap();
        let mut all = Contexts {
            current: Some("a".into()),
            ..Contexts::default()
        };
        for (name, host) in [("a", "10.0.0.1"), ("b", "10.0.0.2")] {
            all.contexts.insert(
                name.into(),
                Context {
                    host: host.into(),
                    token_file: Some("/t".into()),
                    ca_file: None,
                },
            );
        }
        save(&dir, &all).unwrap();
        assert_eq!(load(&dir).unwrap(), all);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(FILE)), 0o600);
        assert_eq!(chosen(None, &env).unwrap().unwrap().0, "a");
        assert_eq!(chosen(Some("b"), &env).unwrap().unwrap().1.host, "10.0.0.2");
        let e = chosen(Some("nope"), &env).unwrap_err();
        assert_eq!(super::super::exit::code_of(&e), Code::NotFound);
        // No leftovers of the atomic write.
        let names: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().collect();
        assert_eq!(names.len(), 1);
    }
}
