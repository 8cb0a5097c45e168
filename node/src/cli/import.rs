//! `herd import pm2|supervisord FILE`: prints (or `--write`s) the herd app file, and lists on
//! stderr every key that was not mapped. Runs in the CLI alone; no daemon is involved.

use crate::import::{self, Import};
use anyhow::{Context, bail};
use clap::Subcommand;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, Subcommand)]
pub enum ImportCommand {
    /// A PM2 ecosystem file: ecosystem.config.js (evaluated with node), .json or .yaml.
    Pm2 {
        file: PathBuf,
        /// Merge the apps' `env_NAME` over their `env`, as `pm2 start --env NAME` does.
        #[arg(long, value_name = "NAME")]
        env: Option<String>,
        #[command(flatten)]
        out: Output,
    },
    /// A supervisord.conf, with the files its [include] sections name.
    Supervisord {
        file: PathBuf,
        #[command(flatten)]
        out: Output,
    },
}

#[derive(Debug, clap::Args)]
pub struct Output {
    /// Write the app file to OUT instead of standard output (never a half-written file).
    #[arg(long, value_name = "OUT")]
    write: Option<PathBuf>,
    /// With --write: replace OUT if it exists.
    #[arg(long, requires = "write")]
    force: bool,
}

pub fn run(command: ImportCommand, json: bool) -> anyhow::Result<()> {
    let (imported, out) = match command {
        ImportCommand::Pm2 { file, env, out } => {
            let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
            let opts = import::pm2::Options { env, cpus };
            (import::pm2::import(&file, &opts)?, out)
        }
        ImportCommand::Supervisord { file, out } => (import::supervisord::import(&file)?, out),
    };
    emit(imported, &out, json)
}

/// With `--json`: `{"app_file": "...", "unmapped": [...]}` (or `"written": OUT` instead of
/// the file), the unmapped keys in the document instead of on stderr.
fn emit(imported: Import, out: &Output, json: bool) -> anyhow::Result<()> {
    let (text, skipped) = imported.finish()?;
    if json {
        let unmapped: Vec<String> = skipped.iter().map(ToString::to_string).collect();
        let doc = match &out.write {
            None => serde_json::json!({ "app_file": text, "unmapped": unmapped }),
            Some(path) => {
                write_file(path, &text, out.force)?;
                serde_json::json!({ "written": path, "unmapped": unmapped })
            }
        };
        super::output::print_json(&doc);
        return Ok(());
    }
    let mut stderr = std::io::stderr().lock();
    for s in &skipped {
        let _ = writeln!(stderr, "{s}");
    }
    match &out.write {
        None => out!("{text}"),
        Some(path) => {
            write_file(path, &text, out.force)?;
            let _ = writeln!(
                stderr,
                "wrote {}; start it with `herd start {}`",
                path.display(),
                path.display()
            );
        }
    }
    Ok(())
}

/// Writes `text` to a temp file beside `path`, then links it into place: a crash or a full
/// disk leaves the old file (or none), never half of the new one. Without `force`, the link
/// fails if `path` exists, so a file that appeared meanwhile is not replaced either.
fn write_file(path: &Path, text: &str, force: bool) -> anyhow::Result<()> {
    if !force && path.symlink_metadata().is_ok() {
        bail!(
            "{} exists; add --force to replace it, or --write another file",
            path.display()
        );
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let file_name = path
        .file_name()
        .with_context(|| format!("{} names no file", path.display()))?;
    let tmp = dir.join(format!(
        ".{}.herd-import-{}.tmp",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| -> anyhow::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        f.write_all(text.as_bytes())
            .and_then(|()| f.sync_all())
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        if force {
            std::fs::rename(&tmp, path)
                .with_context(|| format!("cannot replace {}", path.display()))?;
        } else {
            std::fs::hard_link(&tmp, path).map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    anyhow::anyhow!(
                        "{} exists; add --force to replace it, or --write another file",
                        path.display()
                    )
                } else {
                    anyhow::Error::new(e).context(format!("cannot create {}", path.display()))
                }
            })?;
        }
        Ok(())
    })();
    let _ = std::fs::remove_file(&tmp);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_refuses_an_existing_file_unless_forced_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("apps.toml");
        write_file(&out, "one\n", false).unwrap();
        let err = write_file(&out, "two\n", false).unwrap_err().to_string();
        assert!(err.contains("exists; add --force"), "{err}");
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "one\n");
        write_file(&out, "two\n", true).unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "two\n");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "a temp file was left behind");
    }
}
