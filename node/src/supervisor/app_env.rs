//! The environment an instance starts with. Apps are untrusted (see ARCHITECTURE.md, "Trust
//! boundaries"): herd's own credentials and plumbing — `HERD_API_TOKEN`, `HERD_TOKEN*`,
//! `HERD_CLUSTER_SECRET`, `HERD_REDIS_PASSWORD`, any other `HERD_*`, systemd's
//! `NOTIFY_SOCKET`, `WATCHDOG_*` and `LISTEN_*` — never pass from the daemon to an app. herd
//! then sets its per-instance identity (`HERD_INSTANCE`, `HERD_APP`, `HERD_SLOT`,
//! `HERD_HOME`, `HERD_MARKER`) and, for an app with `listen`, its own `LISTEN_*`.
//!
//! The app's own `env` table may set any name (that is the user's choice), except the
//! identity variables herd sets itself (refused when the file is loaded).

use super::marker::MARKER_VAR;
use super::spec::AppSpec;
use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Variables herd sets on every instance; an app's `env` cannot override them, because
/// they are what identifies the process as this instance after a daemon restart.
pub const IDENTITY_VARS: [&str; 4] = ["HERD_APP", "HERD_SLOT", "HERD_HOME", MARKER_VAR];

/// With `env_clear = true`, these (and only these, plus `env_allow`) come from the daemon.
const CLEAR_KEEPS: [(&str, &str); 3] = [
    (
        "PATH",
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    ),
    ("HOME", "/"),
    ("LANG", "C.UTF-8"),
];

/// The deny rule: true for a daemon variable that must never reach an app.
pub fn is_scrubbed(name: &OsStr) -> bool {
    let n = name.as_bytes();
    n.starts_with(b"HERD_")
        || n == b"NOTIFY_SOCKET"
        || n.starts_with(b"WATCHDOG_")
        || n.starts_with(b"LISTEN_")
}

/// A pattern of `env_allow`: a literal name, or a prefix followed by one trailing `*`.
pub fn pattern_matches(pattern: &str, name: &[u8]) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix.as_bytes()),
        None => name == pattern.as_bytes(),
    }
}

/// Why an `env_allow` pattern is refused, if it is.
pub fn check_pattern(pattern: &str) -> Result<(), String> {
    let body = pattern.strip_suffix('*').unwrap_or(pattern);
    if pattern.is_empty() || pattern == "*" {
        return Err(format!(
            "`{pattern}` would let every variable through; name them, e.g. [\"TZ\", \"AWS_*\"]"
        ));
    }
    if body.contains('*') || body.contains('=') || body.contains('\0') {
        return Err(format!(
            "`{}` is not a variable name or a prefix ending in one `*` (e.g. \"AWS_*\")",
            pattern.escape_debug()
        ));
    }
    Ok(())
}

/// The whole environment of an instance, from the daemon's environment `daemon`, the app's
/// spec, and the identity herd gives it. `listen` holds `LISTEN_FDS`/`LISTEN_FDNAMES` when
/// herd passes sockets, and the instance's own `NOTIFY_SOCKET`/`WATCHDOG_USEC` (see `notify`).
pub fn build(
    daemon: impl IntoIterator<Item = (OsString, OsString)>,
    spec: &AppSpec,
    index: u32,
    home: &Path,
    marker: &str,
    listen: &[(&str, String)],
) -> BTreeMap<OsString, OsString> {
    let mut env = BTreeMap::new();
    let daemon: Vec<(OsString, OsString)> = daemon.into_iter().collect();
    if spec.env_clear {
        for (k, default) in CLEAR_KEEPS {
            let v = daemon
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| default.into());
            env.insert(OsString::from(k), v);
        }
    }
    for (k, v) in daemon {
        if is_scrubbed(&k) {
            continue;
        }
        let allowed = !spec.env_clear
            || spec
                .env_allow
                .iter()
                .any(|p| pattern_matches(p, k.as_bytes()));
        if allowed {
            env.insert(k, v);
        }
    }
    // The spec may override HERD_INSTANCE (cluster instances carry their cluster index).
    env.insert("HERD_INSTANCE".into(), index.to_string().into());
    for (k, v) in listen {
        env.insert((*k).into(), v.into());
    }
    for (k, v) in &spec.env {
        env.insert(k.into(), v.into());
    }
    env.insert("HERD_APP".into(), spec.name.clone().into());
    env.insert("HERD_SLOT".into(), index.to_string().into());
    env.insert("HERD_HOME".into(), home.as_os_str().to_owned());
    env.insert(MARKER_VAR.into(), marker.into());
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    fn daemon() -> Vec<(OsString, OsString)> {
        [
            ("PATH", "/bin"),
            ("TZ", "UTC"),
            ("AWS_REGION", "eu"),
            ("HERD_API_TOKEN", "t"),
            ("HERD_TOKEN", "t"),
            ("HERD_TOKEN_FILE", "/x"),
            ("HERD_CLUSTER_SECRET", "s"),
            ("HERD_REDIS_PASSWORD", "p"),
            ("HERD_SOMETHING_NEW", "n"),
            ("NOTIFY_SOCKET", "/run/n"),
            ("WATCHDOG_USEC", "1"),
            ("WATCHDOG_PID", "1"),
            ("LISTEN_FDS", "2"),
            ("LISTEN_PID", "1"),
            ("LISTEN_FDNAMES", "a"),
        ]
        .into_iter()
        .map(|(k, v)| (k.into(), v.into()))
        .collect()
    }

    fn names(env: &BTreeMap<OsString, OsString>) -> Vec<String> {
        env.keys()
            .map(|k| k.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn the_deny_rule_covers_herd_and_systemd_plumbing() {
        for n in [
            "HERD_API_TOKEN",
            "HERD_TOKEN",
            "HERD_TOKEN_FILE",
            "HERD_CLUSTER_SECRET",
            "HERD_REDIS_PASSWORD",
            "HERD_ANYTHING",
            "NOTIFY_SOCKET",
            "WATCHDOG_USEC",
            "LISTEN_FDS",
            "LISTEN_PID",
        ] {
            assert!(is_scrubbed(OsStr::new(n)), "{n}");
        }
        for n in ["PATH", "HERDSMAN", "NOTIFY", "TZ", "XLISTEN_FDS"] {
            assert!(!is_scrubbed(OsStr::new(n)), "{n}");
        }
    }

    #[test]
    fn no_daemon_secret_reaches_an_app() {
        let spec = AppSpec::quick("web", "x", vec![]);
        let env = build(daemon(), &spec, 2, Path::new("/h"), "m", &[]);
        assert_eq!(
            names(&env),
            [
                "AWS_REGION",
                "HERD_APP",
                "HERD_HOME",
                "HERD_INSTANCE",
                "HERD_MARKER",
                "HERD_SLOT",
                "PATH",
                "TZ"
            ]
        );
        assert_eq!(env[OsStr::new("HERD_SLOT")], "2");
        assert_eq!(env[OsStr::new("HERD_MARKER")], "m");
    }

    #[test]
    fn the_apps_own_env_and_listen_sockets_are_kept_but_not_identity() {
        let mut spec = AppSpec::quick("web", "x", vec![]);
        spec.env.insert("HERD_INSTANCE".into(), "7".into());
        spec.env.insert("HERD_CLUSTER_APP".into(), "web".into());
        spec.env.insert("NOTIFY_SOCKET".into(), "/mine".into());
        let listen = [("LISTEN_FDS", "1".to_string())];
        let env = build(daemon(), &spec, 2, Path::new("/h"), "m", &listen);
        assert_eq!(env[OsStr::new("HERD_INSTANCE")], "7");
        assert_eq!(env[OsStr::new("HERD_CLUSTER_APP")], "web");
        assert_eq!(env[OsStr::new("NOTIFY_SOCKET")], "/mine");
        assert_eq!(env[OsStr::new("LISTEN_FDS")], "1");
        assert!(!env.contains_key(OsStr::new("LISTEN_PID")));
    }

    #[test]
    fn env_clear_keeps_path_home_lang_and_the_allowed() {
        let mut spec = AppSpec::quick("web", "x", vec![]);
        spec.env_clear = true;
        spec.env_allow = vec!["AWS_*".into(), "HERD_*".into()];
        spec.env.insert("MINE".into(), "1".into());
        let env = build(daemon(), &spec, 0, Path::new("/h"), "m", &[]);
        assert_eq!(
            names(&env),
            [
                "AWS_REGION",
                "HERD_APP",
                "HERD_HOME",
                "HERD_INSTANCE",
                "HERD_MARKER",
                "HERD_SLOT",
                "HOME",
                "LANG",
                "MINE",
                "PATH"
            ]
        );
        // PATH from the daemon; HOME and LANG, which it lacks, get defaults.
        assert_eq!(env[OsStr::new("PATH")], "/bin");
        assert_eq!(env[OsStr::new("HOME")], "/");
    }

    #[test]
    fn systemds_notify_and_watchdog_never_reach_an_app_even_when_allowed() {
        // The daemon's own sd_notify plumbing (herd under systemd): an app that sent on it,
        // or pinged the daemon's watchdog, would speak for the daemon's unit.
        let mut spec = AppSpec::quick("web", "x", vec![]);
        let plain = build(daemon(), &spec, 0, Path::new("/h"), "m", &[]);
        spec.env_clear = true;
        spec.env_allow = vec!["NOTIFY_SOCKET".into(), "WATCHDOG_*".into()];
        let cleared = build(daemon(), &spec, 0, Path::new("/h"), "m", &[]);
        for env in [plain, cleared] {
            for n in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"] {
                assert!(!env.contains_key(OsStr::new(n)), "{n} reached the app");
            }
        }
    }

    #[test]
    fn patterns_are_names_or_trailing_star_prefixes() {
        assert!(pattern_matches("TZ", b"TZ"));
        assert!(!pattern_matches("TZ", b"TZX"));
        assert!(pattern_matches("AWS_*", b"AWS_REGION"));
        assert!(!pattern_matches("AWS_*", b"AWS"));
        assert!(check_pattern("AWS_*").is_ok());
        assert!(check_pattern("TZ").is_ok());
        for bad in ["", "*", "A*B", "A=B", "*A"] {
            assert!(check_pattern(bad).is_err(), "{bad}");
        }
    }
}
