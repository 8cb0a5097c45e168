//! Who an instance runs as and within which limits: the app-file keys `user`, `group`,
//! `umask` and `limits`. They are checked when an app file is loaded (syntax by `validate`,
//! the user database and the daemon's privileges by `check_host`) and resolved again at every
//! spawn (`Plan::prepare`), since the user database may change meanwhile.
//!
//! Invariants: only a root daemon switches to another user or group (a non-root daemon asked
//! for one is refused at load, nothing started); everything the child does between fork and
//! exec is prepared before the fork and is async-signal-safe (`Plan::apply_in_child`), in the
//! order setrlimit → setgroups → setgid → setuid → umask → chdir, so raised limits are set
//! while still privileged and the cwd is entered with the app user's own permissions.

mod child;
pub mod rlimits;
pub mod users;

pub use child::Plan;

use super::spec::AppSpec;
use rlimits::{Bound, Rlimit};
use serde_json::{Value, json};
use users::Account;

/// `umask = "027"`: one to four octal digits, at most 0777.
pub fn parse_umask(text: &str) -> Result<u32, String> {
    let ok =
        !text.is_empty() && text.len() <= 4 && text.bytes().all(|b| (b'0'..=b'7').contains(&b));
    match u32::from_str_radix(text, 8) {
        Ok(v) if ok && v <= 0o777 => Ok(v),
        _ => Err(format!(
            "`{}` is not an octal umask; write it as a string of octal digits, e.g. \"027\"",
            text.escape_debug()
        )),
    }
}

/// The checks any host would make: names that can be names, an octal umask, soft ≤ hard.
pub fn validate(spec: &AppSpec) -> Result<(), (&'static str, String)> {
    for (key, value) in [("user", &spec.user), ("group", &spec.group)] {
        if let Some(v) = value
            && (v.is_empty() || v.contains('\0') || v.contains(':') || v.trim() != v)
        {
            return Err((
                key,
                format!(
                    "`{}` is not a {key} name (no spaces, `:` or NUL; e.g. \"www-data\")",
                    v.escape_debug()
                ),
            ));
        }
    }
    if let Some(u) = &spec.umask {
        parse_umask(u).map_err(|why| ("umask", why))?;
    }
    spec.limits.validate().map_err(|why| ("limits", why))
}

/// The ids an instance runs with, resolved from the user database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The passwd entry of `user`, when it is set.
    pub account: Option<Account>,
    pub uid: u32,
    pub group: String,
    pub gid: u32,
    /// Supplementary groups (the user's, from the group database; with `group` alone, just it).
    pub groups: Vec<u32>,
}

/// Whether the daemon may switch to other ids (it runs as root).
pub fn privileged() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Resolves `user` and `group` against this host, or `None` when the app sets neither (it
/// runs as the daemon). `Err` carries the key and why: an unknown name, or a non-root daemon
/// asked to be someone else.
pub fn resolve(spec: &AppSpec) -> Result<Option<Resolved>, (&'static str, String)> {
    if spec.user.is_none() && spec.group.is_none() {
        return Ok(None);
    }
    let account = match &spec.user {
        Some(name) => Some(users::user(name).map_err(|e| ("user", e))?),
        None => None,
    };
    let group = match &spec.group {
        Some(name) => Some(users::group(name).map_err(|e| ("group", e))?),
        None => None,
    };
    let euid = nix::unistd::geteuid().as_raw();
    let egid = nix::unistd::getegid().as_raw();
    let uid = account.as_ref().map_or(euid, |a| a.uid);
    let (group, gid) = match (group, &account) {
        (Some(g), _) => g,
        (None, Some(a)) => (users::group_name(a.gid), a.gid),
        (None, None) => (users::group_name(egid), egid),
    };
    if !privileged() {
        if uid != euid {
            return Err((
                "user",
                format!(
                    "herd runs as uid {euid}, not as root, so it cannot start apps as user `{}` (uid {uid}); remove `user` or run the daemon as root",
                    spec.user.as_deref().unwrap_or_default()
                ),
            ));
        }
        if gid != egid {
            return Err((
                "group",
                format!(
                    "herd runs as gid {egid}, not as root, so it cannot start apps in group `{group}` (gid {gid}); remove `group` or run the daemon as root"
                ),
            ));
        }
    }
    let groups = match &account {
        Some(a) => users::groups_of(a, gid).map_err(|e| ("user", e))?,
        None => vec![gid],
    };
    Ok(Some(Resolved {
        account,
        uid,
        group,
        gid,
        groups,
    }))
}

/// Everything `validate` checks plus what only this host can tell: the user and group exist,
/// the daemon may become them, the limits are within what it may set.
pub fn check_host(spec: &AppSpec) -> Result<(), (&'static str, String)> {
    validate(spec)?;
    resolve(spec)?;
    spec.limits
        .check_host(privileged())
        .map_err(|why| ("limits", why))
}

/// What `herd inspect` shows: the ids, umask and limits an instance of `spec` starts with
/// on this host now (the app's keys, else the daemon's own).
pub fn describe(spec: &AppSpec) -> Value {
    let euid = nix::unistd::geteuid().as_raw();
    let egid = nix::unistd::getegid().as_raw();
    let mut v = match resolve(spec) {
        Ok(Some(r)) => json!({
            "user": r.account.as_ref().map_or_else(|| users::user_name(r.uid), |a| a.name.clone()),
            "uid": r.uid,
            "group": r.group,
            "gid": r.gid,
            "groups": r.groups,
            "from_app": true,
        }),
        Ok(None) => json!({
            "user": users::user_name(euid),
            "uid": euid,
            "group": users::group_name(egid),
            "gid": egid,
            "groups": nix::unistd::getgroups()
                .map(|g| g.into_iter().map(|g| g.as_raw()).collect::<Vec<_>>())
                .unwrap_or_default(),
            "from_app": false,
        }),
        Err((key, why)) => json!({
            "user": spec.user,
            "group": spec.group,
            "error": format!("key `{key}`: {why}"),
            "from_app": true,
        }),
    };
    v["umask"] = match &spec.umask {
        Some(u) => json!(u),
        None => json!(daemon_umask()),
    };
    let mut limits = serde_json::Map::new();
    for (key, resource) in rlimits::RESOURCES {
        let set = spec.limits.get(key);
        let limit = set.or_else(|| own_limit(resource));
        if let Some(l) = limit {
            limits.insert(
                key.into(),
                json!({ "soft": l.soft, "hard": l.hard, "from_app": set.is_some() }),
            );
        }
    }
    v["limits"] = Value::Object(limits);
    v
}

/// The daemon's own limit (what an instance inherits when the app does not set it).
fn own_limit(resource: rlimits::Resource) -> Option<Rlimit> {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct it is given.
    (unsafe { libc::getrlimit(resource, &mut l) } == 0).then(|| Rlimit {
        soft: Bound::from_raw(l.rlim_cur),
        hard: Bound::from_raw(l.rlim_max),
    })
}

/// The daemon's umask as `/proc/self/status` shows it (calling umask() to read it would
/// change it for a moment under every other thread).
fn daemon_umask() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Umask:"))
        .map(|v| v.trim().to_string())
}

/// The uid a process of `spec` must run as to be taken for one of its instances after a
/// daemon restart: its `user`'s, else the daemon's. `None` when the user cannot be resolved
/// now (then no process is taken for it).
pub fn expected_uid(spec: &AppSpec, daemon_uid: u32) -> Option<u32> {
    match &spec.user {
        None => Some(daemon_uid),
        Some(name) => users::user(name).ok().map(|a| a.uid),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> AppSpec {
        AppSpec::quick("web", "sleep", vec!["30".into()])
    }

    #[test]
    fn umask_is_octal_text() {
        assert_eq!(parse_umask("027"), Ok(0o027));
        assert_eq!(parse_umask("0022"), Ok(0o022));
        assert_eq!(parse_umask("7"), Ok(0o7));
        for bad in ["", "8", "0o27", "1777", "27 ", "-1", "00000"] {
            assert!(
                parse_umask(bad).unwrap_err().contains("not an octal umask"),
                "{bad}"
            );
        }
    }

    #[test]
    fn names_that_cannot_be_names_are_refused() {
        for bad in ["", " root", "a:b", "a\0b"] {
            let mut s = spec();
            s.user = Some(bad.into());
            assert_eq!(validate(&s).unwrap_err().0, "user", "{bad:?}");
        }
    }

    #[test]
    fn an_app_without_identity_keys_runs_as_the_daemon() {
        assert_eq!(resolve(&spec()), Ok(None));
        assert!(Plan::prepare(&spec()).unwrap().is_none());
    }

    #[test]
    fn an_unknown_user_is_named_with_its_key() {
        let mut s = spec();
        s.user = Some("no-such-user-herd".into());
        let (key, why) = check_host(&s).unwrap_err();
        assert_eq!(key, "user");
        assert!(why.starts_with("unknown user `no-such-user-herd`"), "{why}");
    }

    #[test]
    fn a_user_brings_its_passwd_variables() {
        let mut s = spec();
        s.user = Some("root".into());
        s.cwd = Some("/".into());
        let plan = Plan::prepare(&s).unwrap().unwrap();
        assert!(
            plan.env.contains(&("USER", "root".into())),
            "{:?}",
            plan.env
        );
        assert!(plan.env.iter().any(|(k, _)| *k == "HOME"));
        let r = resolve(&s).unwrap().unwrap();
        assert_eq!((r.uid, r.gid), (0, 0));
        // Only a root daemon switches ids, and only then enters the cwd itself.
        assert_eq!(plan.enters_cwd(), privileged());
    }

    #[test]
    fn the_uid_expected_of_an_adopted_process_is_the_apps() {
        let mut s = spec();
        assert_eq!(expected_uid(&s, 1234), Some(1234));
        s.user = Some("root".into());
        assert_eq!(expected_uid(&s, 1234), Some(0));
        s.user = Some("no-such-user-herd".into());
        assert_eq!(expected_uid(&s, 1234), None);
    }

    #[test]
    fn the_child_gets_the_umask_and_limits_without_a_switch() {
        use std::os::unix::process::CommandExt;
        let mut s = spec();
        s.umask = Some("077".into());
        s.limits.nofile = Some(Rlimit {
            soft: Bound::Finite(50),
            hard: Bound::Finite(60),
        });
        let plan = Plan::prepare(&s).unwrap().unwrap();
        assert!(!plan.switches() && !plan.enters_cwd() && plan.env.is_empty());
        let mut cmd = std::process::Command::new("/bin/sh");
        cmd.args(["-c", "umask; ulimit -n; ulimit -Hn"]);
        // SAFETY: `apply_in_child` is async-signal-safe (what this test runs it for).
        unsafe {
            cmd.pre_exec(move || plan.apply_in_child());
        }
        let out = cmd.output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "0077\n50\n60\n");
    }

    #[test]
    fn inspect_shows_set_and_inherited_limits() {
        let mut s = spec();
        s.umask = Some("027".into());
        s.limits.nofile = Some(Rlimit {
            soft: Bound::Finite(64),
            hard: Bound::Finite(128),
        });
        let v = describe(&s);
        assert_eq!(v["umask"], "027");
        assert_eq!(v["limits"]["nofile"]["soft"], 64);
        assert_eq!(v["limits"]["nofile"]["from_app"], true);
        assert_eq!(v["limits"]["core"]["from_app"], false);
        assert_eq!(v["from_app"], false);
    }
}
