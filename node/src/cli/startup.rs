//! `herd startup` and `herd unstartup`: install (or remove) the systemd unit that starts this
//! host's daemon at boot, like `pm2 startup`. Files and `systemctl` only; no daemon needed.

use crate::home::Home;
use crate::systemd::unit::{self, UNIT_NAME, UNIT_PATH};
use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Present exactly when systemd is the running init (sd_booted(3)).
const SYSTEMD_RUNNING: &str = "/run/systemd/system";

/// What `startup`/`unstartup` did: a line for people, an object for `--json`.
fn say(json: bool, doc: serde_json::Value, text: String) {
    if json {
        super::output::print_json(&doc);
    } else {
        outln!("{text}");
    }
}

/// `herd startup [--user USER] [--print]`.
pub fn startup(user: Option<&str>, print: bool, json: bool) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("cannot find the herd binary")?;
    let exe = exe.canonicalize().unwrap_or(exe);
    let home = home_for(user)?;
    let text = unit::render(&exe, home.root(), user).map_err(anyhow::Error::msg)?;
    let systemd = Path::new(SYSTEMD_RUNNING).exists();
    if print || !systemd {
        if json {
            let doc = serde_json::json!({ "unit": text, "installed": false });
            super::output::print_json(&doc);
        } else {
            out!("{text}");
        }
        if !print {
            eprintln!(
                "herd: this host does not run systemd ({SYSTEMD_RUNNING} is missing), so nothing was installed. On a systemd host, save the unit above as {UNIT_PATH} and run `systemctl daemon-reload && systemctl enable --now {UNIT_NAME}`; elsewhere, start `herd up` at boot from your init system."
            );
        }
        return Ok(());
    }
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "installing {UNIT_PATH} needs root; run `sudo {} startup`, or `herd startup --print` to see the unit",
            exe.display()
        );
    }
    write_unit(Path::new(UNIT_PATH), &text)?;
    systemctl(&["daemon-reload"])?;
    // A daemon already running outside systemd holds the home's pid lock: a second one
    // started by the unit would fail. Enable now, start after it is handed over.
    let unit_active = Command::new("systemctl")
        .args(["is-active", "--quiet", UNIT_NAME])
        .status()
        .is_ok_and(|s| s.success());
    if unit_active {
        // Re-run to update the unit: restarting it would run `herd down` and stop the apps.
        systemctl(&["enable", UNIT_NAME])?;
        say(
            json,
            serde_json::json!({ "installed": UNIT_PATH, "enabled": true, "started": false, "updated": true }),
            format!(
                "updated {UNIT_PATH}; {UNIT_NAME}.service is running and takes the new unit at its next start (`herd down --keep-apps && systemctl start {UNIT_NAME}` keeps the apps running)"
            ),
        );
    } else if crate::state::pidlock::is_locked(&home.pid_file()) {
        systemctl(&["enable", UNIT_NAME])?;
        say(
            json,
            serde_json::json!({ "installed": UNIT_PATH, "enabled": true, "started": false }),
            format!(
                "wrote {UNIT_PATH} and enabled it; a herd daemon already runs with home {} outside systemd. Hand it over without stopping the apps: `herd down --keep-apps && systemctl start {UNIT_NAME}`",
                home.root().display()
            ),
        );
    } else {
        systemctl(&["enable", "--now", UNIT_NAME])?;
        say(
            json,
            serde_json::json!({ "installed": UNIT_PATH, "enabled": true, "started": true }),
            format!(
                "wrote {UNIT_PATH}, enabled and started it (home {}); `systemctl status {UNIT_NAME}` shows it, `herd unstartup` removes it",
                home.root().display()
            ),
        );
    }
    Ok(())
}

/// `herd unstartup`: disables the unit and removes its file. A running daemon is left
/// running (stopping the unit would stop every app); `herd down` stops it.
pub fn unstartup(json: bool) -> anyhow::Result<()> {
    let path = Path::new(UNIT_PATH);
    let systemd = Path::new(SYSTEMD_RUNNING).exists();
    if path.symlink_metadata().is_err() {
        say(
            json,
            serde_json::json!({ "removed": false, "unit": UNIT_PATH }),
            format!("{UNIT_PATH} does not exist; nothing to remove"),
        );
        return Ok(());
    }
    if systemd {
        systemctl(&["disable", UNIT_NAME])?;
    }
    std::fs::remove_file(path).with_context(|| format!("cannot remove {UNIT_PATH}"))?;
    if systemd {
        systemctl(&["daemon-reload"])?;
    }
    say(
        json,
        serde_json::json!({ "removed": true, "unit": UNIT_PATH }),
        format!(
            "disabled and removed {UNIT_PATH}; a daemon it started keeps running until `herd down`"
        ),
    );
    Ok(())
}

/// The home the unit's daemon uses: HERD_HOME when set; else, for `--user`, that user's
/// `~/.herd`; else this shell's (what `herd ps` here talks to). A `--user` must exist: a unit
/// naming an unknown user fails only when systemd starts it.
fn home_for(user: Option<&str>) -> anyhow::Result<Home> {
    let user_home = match user {
        Some(name) => Some(
            nix::unistd::User::from_name(name)
                .with_context(|| format!("cannot read the user database for `{name}`"))?
                .with_context(|| {
                    format!(
                        "user `{name}` does not exist on this host; `getent passwd` lists users"
                    )
                })?
                .dir,
        ),
        None => None,
    };
    match (
        std::env::var_os("HERD_HOME").filter(|v| !v.is_empty()),
        user_home,
    ) {
        (Some(dir), _) => Ok(Home::at(PathBuf::from(dir))),
        (None, Some(dir)) => Ok(Home::at(dir.join(".herd"))),
        (None, None) => Home::from_env(),
    }
}

/// Writes the unit beside its place, then renames it in: never half a unit file.
fn write_unit(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension(format!("service.herd-{}.tmp", std::process::id()));
    let result = (|| -> anyhow::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        f.write_all(text.as_bytes())
            .and_then(|()| f.sync_all())
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))
    })();
    let _ = std::fs::remove_file(&tmp);
    result
}

fn systemctl(args: &[&str]) -> anyhow::Result<()> {
    let status = Command::new("systemctl")
        .args(args)
        .status()
        .with_context(|| format!("cannot run `systemctl {}`", args.join(" ")))?;
    if !status.success() {
        bail!(
            "`systemctl {}` failed ({status}); `journalctl -u {UNIT_NAME}` may say why",
            args.join(" ")
        );
    }
    Ok(())
}
