//! The contract scripts rely on (issue 18): contexts that drive a remote daemon without flags,
//! one JSON document from every command under the global `--json` (an error too), the
//! documented exit codes each produced by the case it names, and progress that is drawn on a
//! terminal only.

mod common;

use common::*;
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::process::{Output, Stdio};

const TOKEN: &str = "contract-e2e-token-0123456789abcdef";

/// A daemon with the TCP API on a free loopback port and `TOKEN` as its (admin) token.
fn daemon_with_api() -> (Herd, String) {
    daemon_with_api_token(TOKEN, "")
}

/// The exit code, insisting the process was not killed by a signal.
fn code(out: &Output) -> i32 {
    out.status
        .code()
        .unwrap_or_else(|| panic!("killed by a signal: {out:?}"))
}

/// stdout as exactly one JSON document (serde_json refuses trailing data).
fn one_document(args: &[&str], out: &Output) -> Value {
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "herd {args:?} did not print one JSON document ({e}):\nstdout: {text}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn contexts_drive_a_remote_daemon_without_flags_and_the_flags_and_env_override_them() {
    let (daemon, addr) = daemon_with_api();
    daemon.ok(&["start", "--name", "far", "--", "sleep", "1000"]);
    daemon.wait_status("far", 0, "running", SECS_10);
    // A CLI with its own home and no daemon; its contexts live in its own config dir.
    let cli = Herd::new();
    let token = cli.app_file("prod.token", TOKEN);
    let dead = format!("127.0.0.1:{}", free_port());
    cli.ok(&[
        "context",
        "add",
        "prod",
        "--host",
        &addr,
        "--token-file",
        &token,
    ]);
    cli.ok(&[
        "context",
        "add",
        "dead",
        "--host",
        &dead,
        "--token-file",
        &token,
    ]);

    // No current context yet: this host's socket, where nothing runs.
    assert_eq!(code(&cli.run(&["ps", "--json"])), 5);
    cli.ok(&["context", "use", "prod"]);
    let rows = cli.json(&["ps", "--json"]);
    assert_eq!(rows[0]["name"], "far", "{rows}");

    // --context and HERD_CONTEXT beat the current context; --context beats HERD_CONTEXT.
    assert_eq!(code(&cli.run(&["--context", "dead", "ps"])), 5);
    let with_env = |name: &str, args: &[&str]| {
        cli.cmd(args)
            .env("HERD_CONTEXT", name)
            .output()
            .expect("run herd")
    };
    assert_eq!(code(&with_env("dead", &["ps"])), 5);
    assert_eq!(code(&with_env("dead", &["--context", "prod", "ps"])), 0);
    // An explicit --host beats every context.
    let out = cli.run(&["--host", &dead, "--token-file", &token, "ps"]);
    assert_eq!(code(&out), 5, "{out:?}");
    // A typed --token-file beats the context's: a wrong one is refused by the daemon.
    let wrong = cli.app_file("wrong.token", "not-the-token-0123456789");
    assert_eq!(code(&cli.run(&["--token-file", &wrong, "ps"])), 4);

    // The file: 0600 in a 0700 dir, the token referenced by its absolute path, not copied.
    let dir = cli.path("xdg-config/herd");
    let file = dir.join("contexts.toml");
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&file), 0o600);
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(!text.contains(TOKEN), "the token was copied: {text}");
    assert!(
        text.contains(&token),
        "the token file is not referenced: {text}"
    );
    let list = cli.json(&["context", "list", "--json"]);
    assert_eq!(list["current"], "prod", "{list}");
    assert_eq!(list["contexts"].as_array().map(Vec::len), Some(2), "{list}");

    // Unknown contexts are "not found"; a missing token file names the context and the file.
    let out = cli.run(&["context", "use", "nope"]);
    assert_eq!(code(&out), 3, "{out:?}");
    assert_eq!(code(&cli.run(&["--context", "nope", "ps"])), 3);
    std::fs::remove_file(&token).unwrap();
    let err = cli.fails(&["ps"]);
    assert!(
        err.contains("context `prod`") && err.contains(&token),
        "{err}"
    );
    // `herd up` and `herd kill` act on this host whatever the current context says.
    cli.ok(&["kill"]);
    let removed = cli.json(&["context", "remove", "prod", "--json"]);
    assert_eq!(removed["was_current"], true, "{removed}");
}

#[test]
fn every_command_prints_one_json_document_and_an_error_is_one_too() {
    let herd = Herd::new();
    let file = herd.app_file(
        "apps.toml",
        "[[app]]\nname = \"api\"\ncommand = \"sleep\"\nargs = [\"1000\"]\n\n\
         [[app]]\nname = \"worker\"\ncommand = \"sleep\"\nargs = [\"1000\"]\n",
    );
    let check = |args: &[&str]| -> Value {
        let out = herd.run(args);
        let v = one_document(args, &out);
        assert!(out.status.success(), "herd {args:?}: {v}");
        v
    };
    check(&["up", "--json"]);
    check(&["--json", "ping"]);
    check(&["start", &file, "--json"]);
    herd.wait_status("api", 0, "running", SECS_10);
    let accessor = check(&["token", "create", "--role", "viewer", "--json"])["accessor"]
        .as_str()
        .unwrap()
        .to_string();
    for args in [
        vec!["ps", "--json"],
        vec!["ls", "api", "--json"],
        vec!["inspect", "api", "--json"],
        vec!["health", "--json"],
        vec!["metrics", "--json"],
        vec!["graph", "api", "--json"],
        vec!["scale", "api", "2", "--json"],
        vec!["stop", "worker", "--json"],
        vec!["start", "worker", "--json"],
        vec!["restart", "worker", "--json"],
        vec!["reload", "api", "--json"],
        vec!["reload-config", "--json"],
        vec!["token", "list", "--json"],
        vec!["token", "revoke", &accessor, "--json"],
        vec!["secret", "list", "--json"],
        vec!["context", "list", "--json"],
        vec!["hooks", "--json"],
        vec!["hooks", "dead", "--json"],
        vec!["hooks", "replay", "--all", "--json"],
        vec!["delete", "worker", "--json"],
    ] {
        check(&args);
    }
    let out = herd.run_with_stdin(&["secret", "put", "db/pass", "--json"], "s3cret");
    one_document(&["secret", "put"], &out);
    check(&["secret", "get", "db/pass", "--json"]);
    check(&["secret", "delete", "db/pass", "--json"]);

    // Streams print one JSON object per line.
    let events = herd.ok(&["events", "-n", "5", "--json"]);
    assert!(!events.trim().is_empty());
    for line in events.lines() {
        serde_json::from_str::<Value>(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    }

    // Errors: one object with the message and the exit code, which is also the status.
    for (args, want) in [
        (vec!["stop", "nope", "--json"], 3),
        (vec!["--json", "token", "revoke", "feedfacefeedface"], 3),
        (vec!["secret", "delete", "nope", "--json"], 3),
        (vec!["hooks", "replay", "00000000000000000001", "--json"], 3),
        (vec!["start", "/nonexistent/apps.toml", "--json"], 1),
        (vec!["cluster", "status", "--json"], 1),
        (vec!["ps", "--no-such-flag", "--json"], 2),
    ] {
        let out = herd.run(&args);
        let v = one_document(&args, &out);
        assert_eq!(v["code"], want, "herd {args:?}: {v}");
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
        assert_eq!(code(&out), want, "herd {args:?}");
    }

    // The commands that need no daemon speak JSON too.
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/import/pm2/ecosystem.json"
    );
    assert!(check(&["import", "pm2", fixture, "--json"])["app_file"].is_string());
    assert!(check(&["completions", "bash", "--json"])["script"].is_string());
    assert!(check(&["--json", "man"])["page"].is_string());
    assert!(check(&["startup", "--print", "--json"])["unit"].is_string());

    let down = check(&["down", "--json"]);
    assert_eq!(down["was_running"], true, "{down}");
    // Not running any more: still one document, still success.
    check(&["down", "--json"]);
    check(&["kill", "--json"]);
    let out = herd.run(&["ps", "--json"]);
    assert_eq!(one_document(&["ps"], &out)["code"], 5);
}

#[test]
fn each_documented_exit_code_is_produced_by_the_case_it_names() {
    // 2: usage (clap's own).
    let nobody = Herd::new();
    assert_eq!(code(&nobody.run(&["ps", "--no-such-flag"])), 2);
    // 5: no daemon, in text and JSON mode alike.
    assert_eq!(code(&nobody.run(&["ps"])), 5);
    assert_eq!(code(&nobody.run(&["restart", "api", "--json"])), 5);

    let (daemon, addr) = daemon_with_api();
    daemon.ok(&["start", "--name", "api", "--", "sleep", "1000"]);
    daemon.wait_status("api", 0, "running", SECS_10);
    // 3: unknown app, token accessor, secret, context; the same with --json.
    for args in [
        vec!["restart", "nope"],
        vec!["logs", "nope"],
        vec!["token", "revoke", "feedfacefeedface"],
        vec!["secret", "get", "nope"],
        vec!["context", "use", "nope"],
    ] {
        assert_eq!(code(&daemon.run(&args)), 3, "herd {args:?}");
        let mut json = args.clone();
        json.push("--json");
        assert_eq!(code(&daemon.run(&json)), 3, "herd {json:?}");
    }
    // 1: anything else (an app file that does not exist).
    assert_eq!(code(&daemon.run(&["start", "/nonexistent/apps.toml"])), 1);

    // 4: a viewer token may not restart; a wrong token is refused.
    let cli = Herd::new();
    let viewer = daemon.json(&["token", "create", "--role", "viewer", "--json"]);
    let viewer = cli.app_file("viewer.token", viewer["secret"].as_str().unwrap());
    let wrong = cli.app_file("wrong.token", "not-the-token-0123456789");
    let remote = |token: &str, args: &[&str]| {
        let mut full = vec!["--host", addr.as_str(), "--token-file", token];
        full.extend_from_slice(args);
        cli.run(&full)
    };
    assert_eq!(code(&remote(&viewer, &["ps"])), 0);
    assert_eq!(code(&remote(&viewer, &["restart", "api"])), 4);
    assert_eq!(code(&remote(&viewer, &["restart", "api", "--json"])), 4);
    assert_eq!(code(&remote(&wrong, &["ps"])), 4);
    // 5: nothing listens at a remote address.
    let dead = format!("127.0.0.1:{}", free_port());
    let out = cli.run(&["--host", &dead, "--token-file", &viewer, "ps"]);
    assert_eq!(code(&out), 5, "{out:?}");

    // 6: the daemon is stopped (SIGSTOP) and the request timeout passes.
    let pid = nix::unistd::Pid::from_raw(daemon.daemon_pid().expect("daemon pid") as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let out = daemon.run(&["--request-timeout", "1", "ps", "--json"]);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    assert_eq!(code(&out), 6, "{out:?}");
    assert_eq!(one_document(&["ps"], &out)["code"], 6);
}

#[test]
fn progress_is_drawn_on_a_terminal_only() {
    let herd = Herd::up();
    let mut toml = String::new();
    for i in 0..30 {
        toml.push_str(&format!(
            "[[app]]\nname = \"a{i}\"\ncommand = \"sleep\"\nargs = [\"1000\"]\n\n"
        ));
    }
    let file = herd.app_file("many.toml", &toml);
    // stderr is a pipe here: no carriage returns, no escape codes, not a word of progress.
    for args in [vec!["start", file.as_str()], vec!["down"]] {
        let out = herd.run(&args);
        assert!(out.status.success(), "{out:?}");
        let err = &out.stderr;
        assert!(
            !err.contains(&b'\r') && !err.contains(&0x1b),
            "herd {args:?} drew on a pipe: {:?}",
            String::from_utf8_lossy(err)
        );
    }
    // On a terminal the same start shows a spinner, and `--json` does not.
    if !have_script() {
        return;
    }
    herd.ok(&["up"]);
    let shown = on_a_terminal(&herd, &format!("start {file}"));
    assert!(
        shown.contains("starting the 30 apps of"),
        "no progress on a terminal: {shown:?}"
    );
    let quiet = on_a_terminal(&herd, &format!("start {file} --json"));
    assert!(
        !quiet.contains("starting"),
        "progress with --json: {quiet:?}"
    );
}

/// Whether script(1) is here to give a command a terminal.
fn have_script() -> bool {
    let here = std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_ok();
    if !here {
        eprintln!("script(1) is not installed: the terminal half of this test is skipped");
    }
    here
}

/// What `herd ARGS` writes on its stderr when that is a terminal (a pty from script(1));
/// stdout goes to /dev/null. `args` is a shell word list.
fn on_a_terminal(herd: &Herd, args: &str) -> String {
    let line = format!("{} {args} >/dev/null", herd_bin());
    let out = std::process::Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .env("HERD_HOME", herd.home.path())
        .env("HERD_HTTP_LISTEN", "")
        .env("XDG_CONFIG_HOME", herd.path("xdg-config"))
        .env_remove("HERD_CONTEXT")
        .env("TERM", "xterm")
        .stdin(Stdio::null())
        .output()
        .expect("script");
    assert!(out.status.success(), "herd {args}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn cluster_waits_count_on_a_terminal_and_every_cluster_command_speaks_json() {
    use common::cluster::*;
    let redis = Redis::start();
    let nodes = fast_three(&redis.url());
    let all: Vec<&Node> = nodes.iter().collect();
    wait_formed(&all, 3, 0);
    let cli = &all[0].herd;
    let file = cli.app_file(
        "web.toml",
        "[[app]]\nname = \"web\"\ncommand = \"sleep\"\nargs = [\"1000\"]\ninstances = 3\n[app.placement]\nmax_per_node = 1\n",
    );
    let check = |args: &[&str]| -> Value {
        let out = cli.run(args);
        assert!(
            !out.stderr.contains(&b'\r') && !out.stderr.contains(&0x1b),
            "herd {args:?} drew on a pipe"
        );
        let v = one_document(args, &out);
        assert!(out.status.success(), "herd {args:?}: {v}");
        v
    };
    check(&["cluster", "deploy", &file, "--json"]);
    wait_until("one web instance on each node", SECS_10 * 3, || {
        counts_of(&all, "web") == [1, 1, 1]
    });
    for args in [
        vec!["cluster", "status", "--json"],
        vec!["cluster", "nodes", "--json"],
        vec!["cluster", "leader", "--json"],
        vec!["cluster", "apps", "--json"],
        vec!["cluster", "uptime", "--json"],
        vec![
            "cluster",
            "restart",
            "web",
            "--wait",
            "--timeout",
            "60",
            "--json",
        ],
    ] {
        check(&args);
    }
    // The master's view of each node's health is in the status people read.
    let text = cli.ok(&["cluster", "status"]);
    assert!(text.contains("HEALTH") && text.contains("online"), "{text}");

    // Room to drain a node: two instances on three nodes, at most one per node.
    check(&["cluster", "scale", "web", "2", "--json"]);
    wait_until("two web instances", SECS_10 * 3, || {
        counts_of(&all, "web").iter().sum::<usize>() == 2
    });
    let target = all
        .iter()
        .find(|n| !running_here(n, "web").is_empty())
        .expect("a node runs web")
        .id()
        .to_string();
    if have_script() {
        let roll = on_a_terminal(cli, "cluster restart web --wait --timeout 60");
        assert!(
            roll.contains("rolling restart of web") && roll.contains("/2"),
            "no count on a terminal: {roll:?}"
        );
        let drain = on_a_terminal(cli, &format!("cluster drain {target} --timeout 60"));
        assert!(
            drain.contains(&format!("draining node {target}")) && drain.contains("/1"),
            "no drain progress on a terminal: {drain:?}"
        );
    } else {
        check(&["cluster", "drain", &target, "--timeout", "60", "--json"]);
    }
    // The master's view: the drained node shows as draining.
    let text = cli.ok(&["cluster", "status"]);
    assert!(text.contains("draining"), "{text}");
    check(&["cluster", "undrain", &target, "--json"]);
    check(&["cluster", "undeploy", "web", "--json"]);
    // Unknown app and node: "not found", in JSON too.
    for args in [
        vec!["cluster", "restart", "nope", "--json"],
        vec!["cluster", "drain", "999", "--json"],
    ] {
        let out = cli.run(&args);
        assert_eq!(one_document(&args, &out)["code"], 3, "herd {args:?}");
        assert_eq!(code(&out), 3, "herd {args:?}");
    }
}

/// `sudo -u nobody herd ps` may keep root's HOME: a config dir the user cannot read is no
/// context at all, unless one is asked for by name.
#[test]
fn another_users_unreadable_config_dir_means_no_context_unless_one_is_named() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "needs root to run the CLI as nobody (CI runs as root)"
    );
    let (_bin_dir, bin) = binary_for_nobody();
    let home = tempfile::tempdir().unwrap();
    std::os::unix::fs::chown(home.path(), Some(65534), Some(65534)).unwrap();
    let run = |args: &[&str]| {
        nobody_cmd(&bin, home.path())
            .args(args)
            .env("HOME", "/root")
            .env_remove("XDG_CONFIG_HOME")
            .output()
            .expect("setpriv runs")
    };
    let out = run(&["ps"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "no daemon: {err}");
    assert!(!err.contains("contexts.toml"), "{err}");
    let out = run(&["--context", "prod", "ps"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("contexts.toml"),
        "a named context is looked for: {err}"
    );
}
