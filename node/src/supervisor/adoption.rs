//! Adoption by proof, not by claim: after a daemon restart, which live processes are this
//! home's instances. A process is ours only if it leads its own process group
//! (pgid == pid > 1) and either is the one the state file records (same pid *and* start
//! signature: no other process can have both, so its uid does not matter, and an app that
//! drops privileges itself, `setpriv ... -- app`, is still adopted) or, found by scanning
//! /proc, runs as the uid its app runs as (its `user`'s, else the daemon's) and carries the
//! home's secret marker (see `marker`). The uid is checked per app: a local user who read
//! the marker from an app running as that user cannot pose as an app of another user.
//! Anything else that claims the home is logged and left alone: never adopted, never
//! signalled.

use super::marker::{MARKER_VAR, Marker};
use super::process::{ProcStat, read_proc_file, read_stat};
use std::path::Path;
use tracing::{debug, warn};

/// A process found on the host that herd started for this home: a process-group leader
/// of its app's uid whose environment carries `HERD_HOME`, `HERD_APP`, `HERD_SLOT` and
/// the home's secret marker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub app: String,
    pub index: u32,
    pub pid: u32,
    pub signature: u64,
}

/// The real and effective uid of a process (`Uid:` of `/proc/PID/status`).
pub fn read_uids(pid: u32) -> Option<(u32, u32)> {
    let status = read_proc_file(format!("/proc/{pid}/status"))?;
    let line = status.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    let mut ids = line.split_ascii_whitespace().map(|v| v.parse::<u32>().ok());
    Some((ids.next()??, ids.next()??))
}

/// Why a live process cannot be an instance, if it cannot: an instance leads its own process
/// group, with a pid above 1 (signalling its group must never reach pid 1's or another's).
fn not_a_leader(pid: u32, stat: &ProcStat) -> Option<String> {
    if pid <= 1 {
        return Some(format!("pid {pid} is never an instance"));
    }
    (stat.pgrp != pid).then(|| format!("it is in process group {}, not leading its own", stat.pgrp))
}

/// Why a process found by the scan may not be taken as one of `app`'s, if it may not: it
/// must lead its own group and run as `uid` (real and effective), the uid `app` runs as;
/// `None` when that uid is unknown now (the app's user no longer resolves).
pub fn not_ours(pid: u32, stat: &ProcStat, app: &str, uid: Option<u32>) -> Option<String> {
    if let Some(why) = not_a_leader(pid, stat) {
        return Some(why);
    }
    let Some(uid) = uid else {
        return Some(format!(
            "the user app `{app}` runs as cannot be resolved, so no process can prove it is one of its instances"
        ));
    };
    match read_uids(pid) {
        Some((real, effective)) if real == uid && effective == uid => None,
        Some((real, effective)) => Some(format!(
            "it runs as uid {real} (effective {effective}), not as uid {uid}, which app `{app}` runs as"
        )),
        None => Some("its uid cannot be read".into()),
    }
}

/// What became of a process the state file records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    /// Gone, or its pid now belongs to another process (start signature differs).
    Gone,
    /// Still ours: alive, same signature, leading its own group.
    Ours,
    /// Alive with that signature but not provably ours (why): never adopted, never signalled.
    NotOurs(String),
}

pub fn recorded(pid: u32, signature: u64) -> Recorded {
    match read_stat(pid) {
        Some(stat) if !stat.is_gone() && stat.start == signature => {
            match not_a_leader(pid, &stat) {
                None => Recorded::Ours,
                Some(why) => Recorded::NotOurs(why),
            }
        }
        _ => Recorded::Gone,
    }
}

/// A process that claims (by `HERD_HOME`) to be an instance of this home.
struct Claim {
    app: Option<String>,
    index: Option<u32>,
    marked: bool,
}

fn read_claim(pid: u32, want_home: &[u8], marker: &Marker) -> Option<Claim> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    let mut claim = Claim {
        app: None,
        index: None,
        marked: false,
    };
    let mut home = false;
    let marker_prefix = format!("{MARKER_VAR}=");
    for var in environ.split(|b| *b == 0) {
        if var == want_home {
            home = true;
        } else if let Some(v) = var.strip_prefix(b"HERD_APP=") {
            claim.app = Some(String::from_utf8_lossy(v).into_owned());
        } else if let Some(v) = var.strip_prefix(b"HERD_SLOT=") {
            claim.index = std::str::from_utf8(v).ok().and_then(|v| v.parse().ok());
        } else if let Some(v) = var.strip_prefix(marker_prefix.as_bytes()) {
            claim.marked = marker.matches(v);
        }
    }
    home.then_some(claim)
}

/// Every live instance leader of `home` on this host, whatever the state file says: the
/// way back to processes started just before a crash, before their pid reached the disk.
/// Only a process that proves it is ours (see `Found`) is returned; one that merely claims
/// the home is logged and left alone — never adopted, never signalled. `uid_of` gives the uid
/// a process claiming an app must run as (`None`: none may claim it).
pub fn scan_instances(
    home: &Path,
    marker: &Marker,
    uid_of: impl Fn(&str) -> Option<u32>,
) -> Vec<Found> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut want_home = b"HERD_HOME=".to_vec();
    want_home.extend_from_slice(home.as_os_str().as_encoded_bytes());
    let mut found = Vec::new();
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Some(stat) = read_stat(pid) else { continue };
        if stat.is_gone() {
            continue;
        }
        let Some(claim) = read_claim(pid, &want_home, marker) else {
            continue;
        };
        let (Some(app), Some(index)) = (claim.app, claim.index) else {
            continue;
        };
        let refused = match not_ours(pid, &stat, &app, uid_of(&app)) {
            // The children of an instance inherit its environment, marker included: not
            // leaders, they are its processes, not impostors.
            Some(_) if claim.marked && stat.pgrp != pid => {
                debug!(pid, app = %app, instance = index, "an instance's child, not its leader");
                continue;
            }
            Some(why) => Some(why),
            None if !claim.marked => Some("it lacks this home's marker".into()),
            None => None,
        };
        if let Some(reason) = refused {
            let uid = read_uids(pid).map(|(real, _)| real);
            warn!(pid, uid, app = %app, instance = index, %reason, "not adopting a process that claims to be an instance of this home; leaving it alone");
            continue;
        }
        found.push(Found {
            app,
            index,
            pid,
            signature: stat.start,
        });
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervisor::process::start_signature;

    fn claimant(home: &Path, marker: Option<&str>, leader: bool) -> std::process::Child {
        claimant_cmd(home, marker, leader).spawn().unwrap()
    }

    fn claimant_cmd(home: &Path, marker: Option<&str>, leader: bool) -> std::process::Command {
        use std::os::unix::process::CommandExt;
        let mut cmd = std::process::Command::new("sleep");
        cmd.arg("30")
            .env("HERD_HOME", home)
            .env("HERD_APP", "web")
            .env("HERD_SLOT", "3");
        if let Some(m) = marker {
            cmd.env(MARKER_VAR, m);
        }
        if leader {
            cmd.process_group(0);
        }
        cmd
    }

    fn uid() -> u32 {
        rustix::process::getuid().as_raw()
    }

    #[test]
    fn scan_finds_group_leaders_carrying_the_home_and_its_marker() {
        let home = tempfile::tempdir().unwrap();
        let marker = Marker::random();
        let mut child = claimant(home.path(), Some(marker.as_str()), true);
        // Until the child has exec'd, /proc shows the parent's environment: look again until
        // the new program's is there (500 looks 10 ms apart, then the assertions speak).
        let mut found = scan_instances(home.path(), &marker, |_| Some(uid()));
        for _ in 0..500 {
            if !found.is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
            found = scan_instances(home.path(), &marker, |_| Some(uid()));
        }
        let signature = start_signature(child.id());
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(
            (found[0].app.as_str(), found[0].index, found[0].pid),
            ("web", 3, child.id())
        );
        assert_eq!(Some(found[0].signature), signature);
    }

    #[test]
    fn scan_ignores_claims_without_the_marker_or_by_another_uid_or_not_leading() {
        let home = tempfile::tempdir().unwrap();
        let marker = Marker::random();
        let wrong = Marker::random();
        let mut children = vec![
            claimant(home.path(), None, true),
            claimant(home.path(), Some(wrong.as_str()), true),
            claimant(home.path(), Some(marker.as_str()), false),
        ];
        let mine = scan_instances(home.path(), &marker, |_| Some(uid()));
        // The right marker and a leader, but the app runs as another uid, or as a user that
        // no longer resolves.
        let leader = claimant(home.path(), Some(marker.as_str()), true);
        let other_uid = scan_instances(home.path(), &marker, |_| Some(uid() + 1));
        let unresolved = scan_instances(home.path(), &marker, |_| None);
        children.push(leader);
        for c in &mut children {
            let _ = c.kill();
            let _ = c.wait();
        }
        assert!(mine.is_empty(), "{mine:?}");
        assert!(other_uid.is_empty(), "{other_uid:?}");
        assert!(unresolved.is_empty(), "{unresolved:?}");
    }

    #[test]
    fn scan_takes_a_process_of_its_apps_own_uid_only() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: starting a process as another uid needs root");
            return;
        }
        use std::os::unix::process::CommandExt;
        let home = tempfile::tempdir().unwrap();
        let marker = Marker::random();
        let nobody = 65534;
        let mut child = claimant_cmd(home.path(), Some(marker.as_str()), true)
            .uid(nobody)
            .gid(nobody)
            .spawn()
            .unwrap();
        let runs_as_nobody = |app: &str| (app == "web").then_some(nobody);
        let mut found = Vec::new();
        for _ in 0..500 {
            found = scan_instances(home.path(), &marker, runs_as_nobody);
            if !found.is_empty() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        // The same process claiming an app that runs as the daemon (root) is refused.
        let as_daemon = scan_instances(home.path(), &marker, |_| Some(uid()));
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].pid, child.id());
        assert!(as_daemon.is_empty(), "{as_daemon:?}");
    }

    #[test]
    fn own_uids_are_read() {
        let (real, effective) = read_uids(std::process::id()).unwrap();
        assert_eq!(real, uid());
        assert_eq!(effective, rustix::process::geteuid().as_raw());
    }
}
