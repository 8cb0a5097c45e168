//! `herd import`: real PM2 ecosystem files (JavaScript evaluated by node, JSON, YAML) and a
//! supervisord.conf with an include, a group and numprocs become app files that `herd start`
//! loads unchanged, and whose apps run the same commands with the same environment, instance
//! counts and restart behaviour; what cannot be mapped is listed on stderr.

mod common;

use common::*;
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

const SECS_20: Duration = Duration::from_secs(20);

fn fixture(rel: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/import")
        .join(rel)
        .canonicalize()
        .unwrap_or_else(|e| panic!("fixture {rel}: {e}"))
        .display()
        .to_string()
}

/// Runs `herd import ARGS`, insists on success; returns (stdout, stderr lines).
fn import(h: &Herd, args: &[&str]) -> (String, Vec<String>) {
    let mut all = vec!["import"];
    all.extend_from_slice(args);
    let out = h.run(&all);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "herd {all:?} failed: {stderr}");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr.lines().map(str::to_string).collect(),
    )
}

/// Imports into an app file in the home and `herd start`s it; returns the stderr lines.
fn import_and_start(h: &Herd, args: &[&str], file: &str) -> Vec<String> {
    let (text, report) = import(h, args);
    let path = h.app_file(file, &text);
    h.ok(&["start", &path]);
    report
}

fn rows<'a>(ps: &'a [Value], name: &str) -> Vec<&'a Value> {
    ps.iter().filter(|r| r["name"] == name).collect()
}

fn running(ps: &[Value], name: &str, n: usize) -> bool {
    let r = rows(ps, name);
    r.len() == n && r.iter().all(|r| r["status"] == "running")
}

/// The argv and environment a running instance was really started with.
fn process(row: &Value) -> (Vec<String>, Vec<String>) {
    let pid = pid_of(row);
    let read = |f: &str| {
        std::fs::read(format!("/proc/{pid}/{f}"))
            .unwrap_or_default()
            .split(|b| *b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect::<Vec<_>>()
    };
    (read("cmdline"), read("environ"))
}

/// `argv` ends with `command` (by file name) and `args`: a `python3` that is a pyenv shim,
/// or a script run through its `#!` interpreter, adds words in front.
fn assert_runs(argv: &[String], command: &str, args: &[&str]) {
    let file_name = |p: &str| std::path::Path::new(p).file_name().map(|f| f.to_owned());
    let start = argv.len().checked_sub(args.len() + 1);
    let ok =
        start.is_some_and(|s| file_name(&argv[s]) == file_name(command) && argv[s + 1..] == *args);
    assert!(ok, "{argv:?} does not run {command} {args:?}");
}

fn spec(h: &Herd, name: &str) -> Value {
    h.json(&["inspect", name, "--json"])["spec"].clone()
}

fn has_line(report: &[String], line: &str) -> bool {
    report.iter().any(|l| l == line)
}

#[test]
fn pm2_ecosystem_js_runs_the_same_commands_env_instances_and_restarts() {
    assert!(
        std::process::Command::new("node")
            .arg("--version")
            .output()
            .is_ok(),
        "this test evaluates an ecosystem.config.js and needs node (scripts/test installs nodejs)"
    );
    let h = Herd::up();
    let dir = fixture("pm2");
    let report = import_and_start(
        &h,
        &[
            "pm2",
            &fixture("pm2/ecosystem.config.js"),
            "--env",
            "production",
        ],
        "pm2.toml",
    );
    assert!(
        has_line(
            &report,
            "pm2: app \"api\": key \"exec_mode\" not mapped: herd runs every instance as its own process (no node cluster master); instances that must share a port get it from herd with `listen`"
        ),
        "{report:#?}"
    );
    for line in [
        "pm2: file: key \"deploy\" not mapped:",
        "pm2: app \"api\": key \"out_file\" not mapped:",
        "pm2: app \"flaky\": key \"instance_var\" not mapped:",
        "pm2: app \"migrate\": key \"pid_file\" not mapped:",
    ] {
        assert!(
            report.iter().any(|l| l.starts_with(line)),
            "no `{line}` in {report:#?}"
        );
    }

    let ps = h.wait_ps("api x2 and worker running", SECS_20, |ps| {
        running(ps, "api", 2) && running(ps, "worker", 1)
    });
    for row in rows(&ps, "api") {
        let (argv, env) = process(row);
        assert_runs(
            &argv,
            "node",
            &[
                "--max-old-space-size=256",
                "server.js",
                "--port",
                "3000",
                "--host",
                "127.0.0.1",
            ],
        );
        for var in [
            "NODE_ENV=production",
            "PORT=3000",
            "API_URL=https://api.example.com",
        ] {
            assert!(env.iter().any(|e| e == var), "{var} not in {env:?}");
        }
    }
    let (argv, env) = process(rows(&ps, "worker")[0]);
    assert_runs(
        &argv,
        "python3",
        &["-u", &format!("{dir}/worker.py"), "--queue", "emails"],
    );
    assert!(env.iter().any(|e| e == "CONCURRENCY=4"), "{env:?}");

    let api = spec(&h, "api");
    assert_eq!(api["restart"], "always");
    assert_eq!(api["stop_signal"], "SIGINT");
    assert_eq!(api["stop_timeout_s"], 3);
    assert_eq!(api["max_memory_mb"], 300);
    assert_eq!(api["cwd"], dir.as_str());
    // PM2's watch keys under herd's names.
    assert_eq!(api["watch"], serde_json::json!(["src"]));
    assert_eq!(
        api["watch_ignore"],
        serde_json::json!(["node_modules", "logs"])
    );
    assert_eq!(api["watch_debounce_ms"], 1000);
    assert!(
        !report.iter().any(|l| l.contains("watch")),
        "the watch keys are mapped now: {report:#?}"
    );
    let worker = spec(&h, "worker");
    assert_eq!(worker["cron_restart"], "0 3 * * *");
    assert_eq!(worker["backoff_initial_ms"], 2000);
    assert_eq!(worker["max_restarts"], 10);

    // Restart behaviour, live: PM2 gives up on flaky after max_restarts 2 quick failures, and
    // leaves migrate (autorestart: false) stopped after its one run.
    let flaky = h.wait_status("flaky", 0, "crashed", SECS_20);
    assert_eq!(flaky["restarts"], 2);
    let migrate = h.wait_status("migrate", 0, "stopped", SECS_20);
    assert_eq!(migrate["last_exit"]["code"], 0);
    assert_eq!(migrate["restarts"], 0);
}

#[test]
fn pm2_json_and_yaml_files_load_unchanged_and_run() {
    let h = Herd::up();
    let report = import_and_start(
        &h,
        &["pm2", &fixture("pm2/ecosystem.json"), "--env", "staging"],
        "json.toml",
    );
    assert!(
        has_line(
            &report,
            "pm2: app \"scheduler\": key \"env_production\" not mapped: not selected; `--env production` merges it over env"
        ),
        "{report:#?}"
    );
    let report = import_and_start(&h, &["pm2", &fixture("pm2/ecosystem.yaml")], "yaml.toml");
    assert!(
        report
            .iter()
            .any(|l| l.starts_with("pm2: app \"web\": key \"wait_ready\" not mapped:")),
        "{report:#?}"
    );

    // instances: "max" is this host's CPUs.
    let cpus = std::thread::available_parallelism().unwrap().get();
    let ps = h.wait_ps("scheduler, server and web running", SECS_20, |ps| {
        running(ps, "scheduler", cpus) && running(ps, "server", 1) && running(ps, "web", 2)
    });
    let (argv, env) = process(rows(&ps, "scheduler")[0]);
    assert_runs(&argv, "/bin/sleep", &["600"]);
    for var in ["LOG_LEVEL=debug", "STAGE=staging"] {
        assert!(env.iter().any(|e| e == var), "{var} not in {env:?}");
    }
    let (argv, env) = process(&h.instance("web", 1));
    assert_runs(
        &argv,
        "python3",
        &["app.py", "--workers", "2", "--bind", "127.0.0.1:8000"],
    );
    assert!(
        env.iter()
            .any(|e| e == "DJANGO_SETTINGS_MODULE=shop.settings")
    );
    assert!(env.iter().any(|e| e == "HERD_INSTANCE=1"));
    let scheduler = spec(&h, "scheduler");
    assert_eq!(scheduler["stop_exit_codes"], serde_json::json!([0, 3]));
    assert_eq!(scheduler["max_memory_mb"], 1024);
    assert_eq!(spec(&h, "web")["stop_timeout_s"], 2);
    // cleanup (autorestart: false) ran once and stays stopped.
    let cleanup = h.wait_status("cleanup", 0, "stopped", SECS_20);
    assert_eq!(cleanup["last_exit"]["code"], 0);
    assert_eq!(spec(&h, "cleanup")["cron_restart"], "30 4 * * *");
}

#[test]
fn supervisord_conf_with_include_group_and_numprocs_runs_the_same_programs() {
    let h = Herd::up();
    let dir = fixture("supervisord");
    let report = import_and_start(
        &h,
        &["supervisord", &fixture("supervisord/supervisord.conf")],
        "supervisord.toml",
    );
    for line in [
        "supervisord: program \"cache\": key \"stdout_logfile\" not mapped:",
        "supervisord: group \"backend\": key \"programs\" not mapped: herd has no groups",
        "supervisord: program \"queue\": key \"stopasgroup\" not mapped:",
        "supervisord: file: key \"[unix_http_server]\" not mapped:",
    ] {
        assert!(
            report.iter().any(|l| l.starts_with(line)),
            "no `{line}` in {report:#?}"
        );
    }

    let ps = h.wait_ps(
        "cache, web_00, web_01 and queue x3 running",
        SECS_20,
        |ps| {
            running(ps, "cache", 1)
                && running(ps, "web_00", 1)
                && running(ps, "web_01", 1)
                && running(ps, "queue", 3)
        },
    );
    // `user` and `umask` carry over: the cache runs as www-data, the queue with umask 022.
    assert!(
        !report
            .iter()
            .any(|l| l.contains("key \"user\"") || l.contains("key \"umask\"")),
        "{report:#?}"
    );
    let cache_pid = pid_of(rows(&ps, "cache")[0]);
    let status = std::fs::read_to_string(format!("/proc/{cache_pid}/status")).unwrap();
    let www_data = nix::unistd::User::from_name("www-data")
        .unwrap()
        .expect("Debian's www-data user")
        .uid
        .as_raw();
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("Uid:")
                && l.split_whitespace().nth(1) == Some(&www_data.to_string())),
        "{status}"
    );
    assert_eq!(spec(&h, "queue")["umask"], "022");
    let (argv, env) = process(rows(&ps, "cache")[0]);
    assert_runs(
        &argv,
        "python3",
        &[&format!("{dir}/bin/cache.py"), "--size", "64"],
    );
    assert!(env.iter().any(|e| e == "APP_ENV=production"), "{env:?}");
    for (name, port) in [("web_00", "8000"), ("web_01", "8001")] {
        let (argv, env) = process(rows(&ps, name)[0]);
        assert_runs(&argv, &format!("{dir}/bin/web.sh"), &["--port", port]);
        assert!(env.iter().any(|e| *e == format!("PORT={port}")), "{env:?}");
        assert!(env.iter().any(|e| e == "TZ=UTC"), "{env:?}");
    }
    let (_, env) = process(&h.instance("queue", 2));
    assert!(env.iter().any(|e| e == "QUEUE=orders") && env.iter().any(|e| e == "BATCH=50"));

    let cache = spec(&h, "cache");
    assert_eq!(cache["stop_signal"], "SIGINT");
    assert_eq!(cache["stop_timeout_s"], 5);
    assert_eq!(cache["log_max_bytes"], 50 * 1024 * 1024);
    assert_eq!(cache["log_files"], 4);
    assert_eq!(cache["restart"], "always");
    let web = spec(&h, "web_00");
    assert_eq!(web["stop_exit_codes"], serde_json::json!([0, 2]));
    assert_eq!(web["depends_on"], serde_json::json!(["cache"]));

    // priority: the cache (10) starts before the backend (20).
    let started: Vec<String> = h
        .ok(&["events", "--json", "--lines", "1000"])
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|e| e["event"] == "started")
        .map(|e| e["app"].as_str().unwrap_or_default().to_string())
        .collect();
    let first = |app: &str| started.iter().position(|a| a == app).unwrap();
    assert!(
        first("cache") < first("web_00") && first("cache") < first("queue"),
        "{started:?}"
    );

    // report exits 3 every time: supervisord gives up after startretries 2.
    let report = h.wait_status("report", 0, "crashed", SECS_20);
    assert_eq!(report["restarts"], 2);
    assert_eq!(report["last_exit"]["code"], 3);
}

#[test]
fn write_refuses_to_overwrite_without_force_and_the_file_loads() {
    let h = Herd::up();
    let out = h.path("apps.toml");
    let out_s = out.display().to_string();
    std::fs::write(&out, "# mine\n").unwrap();
    let conf = fixture("supervisord/supervisord.conf");
    let err = h.fails(&["import", "supervisord", &conf, "--write", &out_s]);
    assert!(
        err.contains(&format!("{out_s} exists; add --force to replace it")),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "# mine\n");

    let (stdout, report) = import(&h, &["supervisord", &conf, "--write", &out_s, "--force"]);
    assert!(stdout.is_empty(), "{stdout}");
    assert!(report.iter().any(|l| l.starts_with("wrote ")), "{report:?}");
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.starts_with("# herd app file imported by `herd import supervisord`"));
    let leftovers: Vec<_> = std::fs::read_dir(h.home.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    h.ok(&["start", &out_s]);
    h.wait_ps("cache running", SECS_20, |ps| running(ps, "cache", 1));
}

#[test]
fn errors_name_the_file_and_the_fix() {
    // No daemon here: importing needs none.
    let h = Herd::new();
    let (text, _) = import(&h, &["pm2", &fixture("pm2/ecosystem.yaml")]);
    assert!(text.contains("name = \"web\""), "{text}");
    // JavaScript without node: say so, and how to get on.
    let empty = tempfile::tempdir().unwrap();
    let out = h
        .cmd(&["import", "pm2", &fixture("pm2/ecosystem.config.js")])
        .env("PATH", empty.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("is JavaScript, which needs `node` to evaluate it, and node is not on PATH: install Node.js"),
        "{err}"
    );
    let bad = h.path("bad.conf");
    std::fs::write(&bad, "[program:x]\ncommand=run\nstartsecs=soon\n").unwrap();
    let err = h.fails(&["import", "supervisord", &bad.display().to_string()]);
    assert!(
        err.contains(&format!(
            "{}: [program:x] key `startsecs`: `soon` is not a whole number",
            bad.display()
        )),
        "{err}"
    );
    let err = h.fails(&["import", "pm2", "/no/such/ecosystem.json"]);
    assert!(err.contains("cannot read /no/such/ecosystem.json"), "{err}");
}
