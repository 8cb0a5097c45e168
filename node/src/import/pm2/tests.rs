use super::*;
use crate::supervisor::backoff::RestartPolicy;
use crate::supervisor::spec::{AppSpec, parse_app_file};
use serde_json::json;

/// Imports `value` as if read from /srv/shop/ecosystem.json; returns the loaded specs and the
/// report lines.
fn import(value: Value, env: Option<&str>) -> (Vec<AppSpec>, Vec<String>) {
    let opts = Options {
        env: env.map(Into::into),
        cpus: 8,
    };
    let imp = from_value(Path::new("/srv/shop/ecosystem.json"), &value, &opts).unwrap();
    let (text, skipped) = imp.finish().unwrap();
    let specs = parse_app_file("out", &text, Path::new("/elsewhere")).unwrap();
    (specs, skipped.iter().map(ToString::to_string).collect())
}

#[test]
fn script_interpreter_and_args_become_command_and_args() {
    let (specs, _) = import(
        json!({"apps": [
            {"name": "api", "script": "server.js", "node_args": "--inspect", "args": "--port 3000"},
            {"name": "py", "script": "w.py", "interpreter": "/usr/bin/python3.12", "args": ["-q", 1]},
            {"name": "bin", "script": "/bin/sleep", "interpreter": "none", "args": "600"},
        ]}),
        None,
    );
    assert_eq!(specs[0].command, "node");
    assert_eq!(specs[0].args, ["--inspect", "server.js", "--port", "3000"]);
    assert_eq!(specs[0].cwd.as_deref(), Some(Path::new("/srv/shop")));
    assert_eq!(specs[1].command, "/usr/bin/python3.12");
    assert_eq!(specs[1].args, ["w.py", "-q", "1"]);
    assert_eq!(
        (specs[2].command.as_str(), specs[2].args.as_slice()),
        ("/bin/sleep", &["600".to_string()][..])
    );
}

#[test]
fn env_name_merges_over_env_and_the_others_are_reported() {
    let app = json!({"apps": [{"name": "a", "script": "a.js", "env": {"A": "1", "B": 2},
        "env_production": {"B": "prod"}, "env_staging": {"B": "stage"}}]});
    let (specs, report) = import(app.clone(), Some("production"));
    assert_eq!(specs[0].env["A"], "1");
    assert_eq!(specs[0].env["B"], "prod");
    assert!(
        report.contains(&"pm2: app \"a\": key \"env_staging\" not mapped: not selected; `--env staging` merges it over env".to_string()),
        "{report:?}"
    );
    let (specs, _) = import(app, None);
    assert_eq!(specs[0].env["B"], "2");
}

#[test]
fn restart_behaviour_keeps_pm2_semantics() {
    let (specs, _) = import(
        json!({"apps": [
            {"name": "d", "script": "d.js"},
            {"name": "r", "script": "r.js", "restart_delay": 500, "max_restarts": 3, "min_uptime": "2s",
             "kill_timeout": 2500, "max_memory_restart": "300M", "stop_exit_codes": 0},
            {"name": "n", "script": "n.js", "autorestart": false},
        ]}),
        None,
    );
    let d = &specs[0];
    assert_eq!(d.restart, RestartPolicy::Always);
    assert_eq!(
        (d.backoff_initial_ms, d.backoff_max_ms, d.max_restarts),
        (0, 0, 16)
    );
    assert_eq!(d.stop_signal, "SIGINT");
    let r = &specs[1];
    assert_eq!(
        (r.backoff_initial_ms, r.backoff_max_ms, r.max_restarts),
        (500, 500, 3)
    );
    // three restarts 0.5 s apart of runs under 2 s
    assert_eq!(r.restart_window_s, 8);
    assert_eq!((r.stop_timeout_s, r.max_memory_mb), (3, Some(300)));
    assert_eq!(r.stop_exit_codes, [0]);
    assert_eq!(specs[2].restart, RestartPolicy::Never);
}

#[test]
fn instances_max_and_negative_use_this_hosts_cpus() {
    let (specs, _) = import(
        json!([{"name": "a", "script": "a.js", "instances": "max"},
               {"name": "b", "script": "b.js", "instances": -1},
               {"name": "c", "script": "c.js", "instances": 3, "exec_mode": "cluster"}]),
        None,
    );
    let counts: Vec<u32> = specs.iter().map(|s| s.instances).collect();
    assert_eq!(counts, [8, 7, 3]);
}

#[test]
fn unmappable_keys_and_refused_values_are_reported_not_emitted() {
    let (specs, report) = import(
        json!({"apps": [{"name": "my api", "script": "a.js", "out_file": "/var/log/a.log",
            "watch": true, "cron_restart": "not cron", "frobnicate": 1}],
            "deploy": {}}),
        None,
    );
    assert_eq!(specs[0].name, "my-api");
    assert!(specs[0].cron_restart.is_none());
    let has = |needle: &str| report.iter().any(|l| l.contains(needle));
    assert!(
        has("pm2: file: key \"deploy\" not mapped: herd does not deploy code"),
        "{report:?}"
    );
    assert!(
        has("pm2: app \"my api\": key \"out_file\" not mapped: herd writes"),
        "{report:?}"
    );
    assert!(
        has("key \"cron_restart\" not mapped: herd refuses it as `cron_restart`"),
        "{report:?}"
    );
    assert!(
        has("key \"frobnicate\" not mapped: not a PM2 key herd knows"),
        "{report:?}"
    );
}

#[test]
fn variables_herd_would_read_differently_are_reported_not_emitted() {
    let (specs, report) = import(
        json!([{"name": "a", "script": "a.js",
            "env": {"HERD_APP": "x", "TOKEN": "secret:abc", "OK": "1"}}]),
        None,
    );
    assert_eq!(specs[0].env.keys().collect::<Vec<_>>(), ["OK"]);
    let has = |n: &str| report.iter().any(|l| l.contains(n));
    assert!(
        has("key \"env.HERD_APP\" not mapped: herd sets it itself"),
        "{report:?}"
    );
    assert!(
        has("key \"env.TOKEN\" not mapped: herd would read this `secret:` value"),
        "{report:?}"
    );
}

#[test]
fn errors_name_the_file_the_app_and_the_key() {
    let opts = Options { env: None, cpus: 1 };
    let err = |v: Value| {
        from_value(Path::new("eco.json"), &v, &opts)
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        err(json!({"apps": [{"name": "a"}]})),
        "eco.json: app \"a\": missing required key `script`"
    );
    assert_eq!(
        err(json!({"apps": [{"script": "a.js", "max_memory_restart": "lots"}]})),
        "eco.json: apps[0]: key `max_memory_restart`: must be bytes or a size like \"300M\""
    );
    assert!(err(json!({"name": "x"})).starts_with("eco.json: no apps found"));
}

#[test]
fn uid_and_gid_become_user_and_group_and_an_unknown_user_is_reported() {
    let (specs, report) = import(
        json!({"apps": [
            {"name": "api", "script": "/bin/sleep", "uid": "nobody", "gid": 65534},
            {"name": "ghost", "script": "/bin/sleep", "uid": "no-such-user-herd-e2e"},
        ]}),
        None,
    );
    assert_eq!(specs[0].user.as_deref(), Some("nobody"));
    assert_eq!(specs[0].group.as_deref(), Some("65534"));
    assert_eq!(specs[1].user, None);
    assert!(
        report
            .iter()
            .any(|l| l.contains("\"ghost\"") && l.contains("key \"uid\"")),
        "{report:?}"
    );
}
