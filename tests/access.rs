//! Roles and tokens over the real TCP API (issue 12): every command of the roles table is
//! allowed or refused exactly per the table for viewer, operator and admin tokens; expired and
//! revoked tokens are refused with their reasons; a refusal is logged with the accessor and
//! never the secret; events say who caused them; the config's single token is still admin.

mod common;

use common::*;
use serde_json::Value;
use std::process::Output;

const TOKEN: &str = "access-e2e-token-0123456789abcdef";

/// A daemon with the TCP API on a free loopback port and `TOKEN` as its config token, and an
/// empty home for a remote CLI.
fn daemon() -> (Herd, Herd, String) {
    let (herd, addr) = daemon_with_api_token(TOKEN, "");
    let cli = Herd::new();
    std::fs::create_dir_all(cli.home.path()).unwrap();
    (herd, cli, addr)
}

/// Makes a token through the socket; returns (accessor, token file for the CLI).
fn token(herd: &Herd, cli: &Herd, role: &str, extra: &[&str]) -> (String, String, String) {
    let mut args = vec!["token", "create", "--role", role, "--name", role, "--json"];
    args.extend_from_slice(extra);
    let v = herd.json(&args);
    let secret = v["secret"].as_str().unwrap().to_string();
    let file = cli.app_file(&format!("{role}.token"), &secret);
    (v["accessor"].as_str().unwrap().to_string(), file, secret)
}

fn remote(cli: &Herd, addr: &str, token_file: &str, args: &[&str], stdin: &str) -> Output {
    let mut full = vec!["--host", addr, "--token-file", token_file];
    full.extend_from_slice(args);
    cli.run_with_stdin(&full, stdin)
}

#[derive(Clone, Copy, PartialEq, PartialOrd, Debug)]
enum Role {
    Viewer,
    Operator,
    Admin,
}

/// A command of the roles table, the least role it needs, and whether it must succeed when
/// allowed (cluster commands on a standalone daemon are let in, then say it is standalone).
struct Row {
    args: Vec<String>,
    needs: Role,
    succeeds: bool,
    command: &'static str,
}

fn row(args: &[&str], needs: Role, succeeds: bool, command: &'static str) -> Row {
    Row {
        args: args.iter().map(|s| s.to_string()).collect(),
        needs,
        succeeds,
        command,
    }
}

#[test]
fn each_role_may_call_exactly_the_commands_of_its_row_in_the_table() {
    let (herd, cli, addr) = daemon();
    let file = cli.app_file(
        "web.toml",
        "[[app]]\nname = \"filed\"\ncommand = \"sleep\"\nargs = [\"1000\"]\n",
    );
    let tokens: Vec<(Role, String)> = [
        (Role::Viewer, "viewer"),
        (Role::Operator, "operator"),
        (Role::Admin, "admin"),
    ]
    .into_iter()
    .map(|(r, name)| (r, token(&herd, &cli, name, &[]).1))
    .collect();

    for (role, token_file) in &tokens {
        // Each role works on apps of its own, so one role's allowed calls do not change what
        // the next one sees.
        let app = format!("app-{role:?}").to_lowercase();
        let gone = format!("gone-{role:?}").to_lowercase();
        for name in [&app, &gone] {
            herd.ok(&["start", "--name", name, "--", "sleep", "1000"]);
        }
        let rows = vec![
            row(&["ping"], Role::Viewer, true, "ping"),
            row(&["ps"], Role::Viewer, true, "ps"),
            row(&["inspect", &app], Role::Viewer, true, "inspect"),
            row(&["logs", &app, "-n", "1"], Role::Viewer, true, "logs"),
            row(&["health"], Role::Viewer, true, "ps"),
            row(&["metrics"], Role::Viewer, true, "metrics"),
            row(&["events", "-n", "1"], Role::Viewer, true, "events"),
            row(&["graph", &app], Role::Viewer, true, "graph"),
            row(&["hooks"], Role::Viewer, true, "hooks"),
            row(
                &["cluster", "status"],
                Role::Viewer,
                false,
                "cluster status",
            ),
            row(&["cluster", "nodes"], Role::Viewer, false, "cluster status"),
            row(
                &["cluster", "leader"],
                Role::Viewer,
                false,
                "cluster status",
            ),
            row(&["cluster", "apps"], Role::Viewer, false, "cluster apps"),
            row(
                &["cluster", "uptime"],
                Role::Viewer,
                false,
                "cluster uptime",
            ),
            row(&["start", &file], Role::Operator, true, "start"),
            row(&["start", &app], Role::Operator, true, "start"),
            row(&["stop", &app], Role::Operator, true, "stop"),
            row(&["restart", &app], Role::Operator, true, "restart"),
            row(&["reload", &app], Role::Operator, true, "reload"),
            row(&["scale", &app, "2"], Role::Operator, true, "scale"),
            row(&["delete", &gone], Role::Operator, true, "delete"),
            row(&["hooks", "dead"], Role::Operator, true, "hooks dead"),
            row(
                &["cluster", "deploy", &file],
                Role::Operator,
                false,
                "cluster deploy",
            ),
            row(
                &["cluster", "undeploy", "x"],
                Role::Operator,
                false,
                "cluster undeploy",
            ),
            row(
                &["cluster", "scale", "x", "1"],
                Role::Operator,
                false,
                "cluster scale",
            ),
            row(
                &["cluster", "restart", "x"],
                Role::Operator,
                false,
                "cluster restart",
            ),
            row(
                &["cluster", "drain", "1", "--no-wait"],
                Role::Operator,
                false,
                "cluster drain",
            ),
            row(
                &["cluster", "undrain", "1"],
                Role::Operator,
                false,
                "cluster drain",
            ),
            row(&["reload-config"], Role::Admin, true, "reload-config"),
            row(
                &["cluster", "step-down"],
                Role::Admin,
                false,
                "cluster step-down",
            ),
            row(&["cluster", "leave"], Role::Admin, false, "cluster leave"),
            row(&["token", "list"], Role::Admin, true, "token list"),
            row(
                &["token", "create", "--role", "viewer"],
                Role::Admin,
                true,
                "token create",
            ),
            row(
                &["token", "revoke", "0000000000000000"],
                Role::Admin,
                false,
                "token revoke",
            ),
            row(&["secret", "list"], Role::Admin, true, "secret list"),
            row(
                &["hooks", "replay", "--all"],
                Role::Admin,
                true,
                "hooks replay",
            ),
            row(&["secret", "put", "x/y"], Role::Admin, false, "secret put"),
            row(&["secret", "get", "x/y"], Role::Admin, false, "secret get"),
            row(
                &["secret", "delete", "x/y"],
                Role::Admin,
                false,
                "secret delete",
            ),
        ];
        for r in &rows {
            let args: Vec<&str> = r.args.iter().map(String::as_str).collect();
            let out = remote(&cli, &addr, token_file, &args, "value");
            let err = String::from_utf8_lossy(&out.stderr);
            if *role >= r.needs {
                assert!(
                    !err.contains("permission denied"),
                    "{role:?} {args:?} was refused: {err}"
                );
                if r.succeeds {
                    assert!(out.status.success(), "{role:?} {args:?} failed: {err}");
                }
            } else {
                let role_name = format!("{role:?}").to_lowercase();
                assert!(!out.status.success(), "{role:?} {args:?} was let in");
                assert!(
                    err.contains(&format!(
                        "permission denied: role {role_name} may not {}",
                        r.command
                    )),
                    "{role:?} {args:?}: {err}"
                );
            }
        }
    }
    // `down` last: refused to viewer and operator (the daemon stays), done by admin.
    for (role, token_file) in &tokens[..2] {
        let out = remote(&cli, &addr, token_file, &["down"], "");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("may not down"), "{role:?}: {err}");
        herd.ok(&["ping"]);
    }
    let out = remote(&cli, &addr, &tokens[2].1, &["down"], "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_until("the daemon gone", SECS_10, || herd.daemon_pid().is_none());
}

#[test]
fn expired_and_revoked_tokens_are_refused_with_their_reasons_and_refusals_name_no_secret() {
    let (herd, cli, addr) = daemon();
    herd.ok(&["start", "--name", "keep", "--", "sleep", "1000"]);
    let pid = herd.wait_status("keep", 0, "running", SECS_10)["pid"].as_u64();

    // Expiry: a token made with --ttl 1s works, then is refused as expired.
    let (_, short, _) = token(&herd, &cli, "viewer", &["--ttl", "1s"]);
    let first = remote(&cli, &addr, &short, &["ps"], "");
    let expired = |out: &Output| String::from_utf8_lossy(&out.stderr).contains("token expired");
    if !first.status.success() {
        // A loaded host can take a second between create and use: then it must say expired.
        assert!(
            expired(&first),
            "{}",
            String::from_utf8_lossy(&first.stderr)
        );
    }
    wait_until("the short token to expire", SECS_10, || {
        expired(&remote(&cli, &addr, &short, &["ps"], ""))
    });

    // Revocation: refused at once, as revoked; the list shows it revoked, never a secret.
    let (accessor, operator, secret) = token(&herd, &cli, "operator", &[]);
    let ok = remote(&cli, &addr, &operator, &["restart", "keep"], "");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let restarted = herd.wait_status("keep", 0, "running", SECS_10)["pid"].as_u64();
    assert_ne!(restarted, pid);
    herd.ok(&["token", "revoke", &accessor]);
    let out = remote(&cli, &addr, &operator, &["ps"], "");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("token revoked"), "{err}");
    let list = herd.ok(&["token", "list", "--json"]);
    let row = serde_json::from_str::<Value>(&list).unwrap()["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["accessor"] == accessor.as_str())
        .cloned()
        .unwrap();
    assert_eq!(row["state"], "revoked", "{row}");
    assert!(!list.contains(&secret), "token list shows a secret");
    assert!(
        !std::fs::read_to_string(herd.path("access.json"))
            .unwrap()
            .contains(&secret),
        "access.json keeps only hashes"
    );

    // A refused call changes nothing, and the daemon logs it with the accessor, not the secret.
    let (viewer_accessor, viewer, viewer_secret) = token(&herd, &cli, "viewer", &[]);
    let out = remote(&cli, &addr, &viewer, &["stop", "keep"], "");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("permission denied: role viewer may not stop"),
        "{err}"
    );
    assert_eq!(herd.instance("keep", 0)["pid"].as_u64(), restarted);
    assert_eq!(herd.instance("keep", 0)["status"], "running");
    wait_until("the refusal in the daemon's log", SECS_10, || {
        std::fs::read_to_string(herd.path("daemon.log"))
            .unwrap_or_default()
            .contains(&viewer_accessor)
    });
    let log = std::fs::read_to_string(herd.path("daemon.log")).unwrap();
    for s in [&secret, &viewer_secret] {
        assert!(!log.contains(s.as_str()), "a token secret is in daemon.log");
    }
    assert!(log.contains("may not stop"), "{log}");

    // Events say who: the operator's restart carries its accessor and name; the config's
    // token is still admin and is named as such; the socket is `local`.
    let events = herd.ok(&["events", "keep", "-n", "100", "--json"]);
    let by: Vec<Value> = events
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["by"].is_string())
        .collect();
    assert!(
        by.iter()
            .any(|e| e["by"] == accessor.as_str() && e["by_name"] == "operator"),
        "{events}"
    );
    assert!(by.iter().any(|e| e["by"] == "local"), "{events}");
    let admin = cli.app_file("admin.token", TOKEN);
    let out = remote(&cli, &addr, &admin, &["restart", "keep"], "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events = herd.ok(&["events", "keep", "-n", "100", "--json"]);
    assert!(events.contains("\"by\":\"api-token\""), "{events}");
}

#[test]
fn a_token_cannot_be_made_with_a_role_that_does_not_exist_or_a_zero_ttl() {
    let herd = Herd::up();
    let err = herd.fails(&["token", "create", "--role", "root"]);
    assert!(err.contains("use viewer, operator or admin"), "{err}");
    let err = herd.fails(&["token", "create", "--role", "viewer", "--ttl", "0s"]);
    assert!(err.contains("longer than 0"), "{err}");
    let err = herd.fails(&["token", "revoke", "feedfacefeedface"]);
    assert!(err.contains("herd token list"), "{err}");
    assert!(herd.ok(&["token", "list"]).starts_with("ACCESSOR"));
}
