//! Property tests that throw arbitrary and near-valid input at the parsers that face users and
//! peers: app files, `config.toml`, `state.json` and the access book (tokens and secrets, as
//! loaded from `access.json` or applied from the Raft log). Each must answer with a value or
//! an error, never a panic. `PROPTEST_CASES` scales them; `scripts/fuzz` runs them long, and
//! the request path of the running daemon is fuzzed end to end in `tests/fuzz_api.rs`.

use crate::config::DaemonConfig;
use crate::supervisor::spec::parse_app_file;
use crate::supervisor::{Snapshot, validate_snapshot};
use herd_cluster::registry::access::{AccessBook, AccessChange};
use proptest::prelude::*;
use std::path::Path;

/// A TOML value of any shape, including the extremes.
fn value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        Just("18446744073709551615".to_string()),
        Just("-1".to_string()),
        Just("0".to_string()),
        any::<f64>().prop_map(|f| format!("{f:?}")),
        Just("nan".to_string()),
        Just("inf".to_string()),
        any::<bool>().prop_map(|b| b.to_string()),
        "[ -~]{0,24}".prop_map(|s| format!("{s:?}")),
        Just("\"secret:db/pass\"".to_string()),
        Just("\"signal:SIGHUP\"".to_string()),
        Just("\"127.0.0.1:0\"".to_string()),
        Just("\"027\"".to_string()),
        Just("\"infinity\"".to_string()),
        Just("\"notify\"".to_string()),
        Just("\"nobody\"".to_string()),
        Just("{ nofile = 64, core = { soft = 0, hard = \"infinity\" } }".to_string()),
        Just("{ nproc = { soft = 9, hard = 8 }, cpu = -1 }".to_string()),
    ];
    leaf.prop_recursive(2, 8, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4)
                .prop_map(|v| format!("[{}]", v.join(", "))),
            proptest::collection::vec(("[a-z_]{1,8}", inner), 0..3).prop_map(|kv| {
                let body: Vec<String> = kv.iter().map(|(k, v)| format!("{k} = {v}")).collect();
                format!("{{ {} }}", body.join(", "))
            }),
        ]
    })
}

const APP_KEYS: &[&str] = &[
    "name",
    "command",
    "args",
    "cwd",
    "env",
    "env_clear",
    "env_allow",
    "instances",
    "restart",
    "backoff_initial_ms",
    "backoff_max_ms",
    "max_restarts",
    "restart_window_s",
    "stop_signal",
    "stop_timeout_s",
    "log_max_bytes",
    "log_files",
    "health",
    "max_memory_mb",
    "depends_on",
    "stop_exit_codes",
    "cron_restart",
    "listen",
    "placement",
    "on_disconnect",
    "on_secret_change",
    "user",
    "group",
    "umask",
    "limits",
    "ready",
    "watchdog_s",
    "watch",
    "watch_ignore",
    "watch_debounce_ms",
    "bogus",
];

const CONFIG_KEYS: &[&str] = &[
    "log_level",
    "metrics_interval_s",
    "recovery_sweep_s",
    "state_flush_s",
    "events_max_bytes",
    "events_files",
    "daemon_log_max_bytes",
    "daemon_log_files",
    "api",
    "cluster",
    "bogus",
];

fn table_lines(keys: &'static [&'static str]) -> impl Strategy<Value = String> {
    proptest::collection::vec((proptest::sample::select(keys), value()), 0..8).prop_map(|kv| {
        kv.iter()
            .map(|(k, v)| format!("{k} = {v}\n"))
            .collect::<String>()
    })
}

/// App files that are TOML, with `[[app]]` tables of real keys and odd values.
fn app_file() -> impl Strategy<Value = String> {
    proptest::collection::vec((table_lines(APP_KEYS), any::<bool>()), 0..3).prop_map(|apps| {
        apps.iter()
            .map(|(lines, named)| {
                let name = if *named {
                    "name = \"a\"\ncommand = \"true\"\n"
                } else {
                    ""
                };
                format!("[[app]]\n{name}{lines}")
            })
            .collect()
    })
}

/// Sections of `config.toml` with real keys and odd values.
fn config_file() -> impl Strategy<Value = String> {
    (
        table_lines(CONFIG_KEYS),
        table_lines(&[
            "listen",
            "token_file",
            "tls_cert",
            "tls_key",
            "max_connections",
            "idle_timeout_s",
            "handshake_timeout_s",
        ]),
        table_lines(&[
            "enabled",
            "name",
            "listen",
            "advertise",
            "discovery",
            "voters",
            "secret_file",
            "labels",
            "heartbeat_interval_ms",
        ]),
    )
        .prop_map(|(top, api, cluster)| format!("{top}[api]\n{api}[cluster]\n{cluster}"))
}

proptest! {
    #[test]
    fn any_text_as_an_app_file_is_answered(text in any::<String>()) {
        let _ = parse_app_file("fuzz.toml", &text, Path::new("/"));
    }

    #[test]
    fn toml_app_files_with_odd_values_are_answered(text in app_file()) {
        if let Ok(specs) = parse_app_file("fuzz.toml", &text, Path::new("/")) {
            // What is accepted passes its own checks and round-trips through state.json.
            for s in &specs {
                prop_assert!(s.check().is_ok(), "{text}");
            }
            let json = serde_json::to_string(&specs).unwrap();
            let back: Vec<crate::supervisor::spec::AppSpec> = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(back, specs);
        }
    }

    #[test]
    fn config_files_are_answered(text in prop_oneof![any::<String>(), config_file()]) {
        // Past the read, which is std's: the parse, the HERD_* overrides and every check.
        let _ = DaemonConfig::parse(Path::new("config.toml"), &text, |_| None);
    }

    #[test]
    fn any_bytes_as_state_json_are_answered(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(s) = serde_json::from_slice::<Snapshot>(&bytes) {
            let _ = validate_snapshot(&s);
        }
    }

    #[test]
    fn a_mutated_state_json_is_answered(flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6)) {
        let mut bytes = br#"{"version":1,"apps":[{"spec":{"name":"a","command":"sleep","args":["9"],"instances":2},"desired":"running","instances":[{"index":0,"status":"running","pid":4242,"signature":7,"restarts":1,"exits":[{"at_ms":1,"code":1,"reason":"exited"}]}]}]}"#.to_vec();
        for (at, byte) in flips {
            let i = at.index(bytes.len());
            bytes[i] = byte;
        }
        if let Ok(s) = serde_json::from_slice::<Snapshot>(&bytes) {
            let _ = validate_snapshot(&s);
        }
    }

    #[test]
    fn access_books_and_changes_are_answered(
        book in proptest::collection::vec(any::<u8>(), 0..256),
        changes in proptest::collection::vec("[ -~]{0,160}", 0..6),
    ) {
        let mut b: AccessBook = serde_json::from_slice(&book).unwrap_or_default();
        for text in changes {
            if let Ok(change) = serde_json::from_str::<AccessChange>(&text) {
                let _ = b.apply(&change);
            }
        }
        // A valid change of every kind, with odd values, applied twice.
        for change in [
            r#"{"change":"revoke_token","accessor":"","at_ms":18446744073709551615}"#,
            r#"{"change":"delete_secret","name":"../x"}"#,
            r#"{"change":"put_secret","name":"a/b","secret":{"set_ms":0,"key_id":"","sealed":""}}"#,
            r#"{"change":"create_token","token":{"accessor":"x","hash":"y","role":"admin","created_ms":18446744073709551615,"expires_ms":0}}"#,
        ] {
            let c: AccessChange = serde_json::from_str(change).unwrap();
            let _ = b.apply(&c);
            let _ = b.apply(&c);
        }
    }
}
