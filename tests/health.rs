//! Health probes on real processes: http, tcp and exec probes; a hung process is restarted
//! after exactly `failures` failed probes; `starting` until healthy; memory limit restarts.

mod common;

use common::*;
use serde_json::Value;
use std::time::Duration;

/// An HTTP server that answers /healthz until `hang` exists, then keeps the process alive but
/// leaves every request hanging (after logging it).
const HANGING_SERVER: &str = r#"
import http.server, os, sys, time
hang = sys.argv[2]
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if os.path.exists(hang):
            print("hung probe", flush=True)
            time.sleep(3600)
        self.send_response(200); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *a): pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"#;

fn events(h: &Herd, app: &str) -> Vec<Value> {
    h.ok(&["events", app, "--json", "--lines", "1000"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn a_hung_http_app_is_restarted_after_exactly_failures_probes() {
    let h = Herd::up();
    let port = free_port();
    std::fs::write(h.path("server.py"), HANGING_SERVER).unwrap();
    let hang = h.path("hang");
    let file = h.app_file(
        "apps.toml",
        &format!(
            r#"
[[app]]
name = "web"
command = "python3"
args = ["server.py", "{port}", "{}"]

[app.health]
http = "http://127.0.0.1:{port}/healthz"
interval_s = 0.3
timeout_s = 0.3
failures = 3
grace_s = 0
"#,
            hang.display()
        ),
    );
    h.ok(&["start", &file]);
    let first = pid_of(
        &h.wait_ps("web healthy", SECS_10, |rows| {
            rows[0]["health"] == "healthy" && rows[0]["status"] == "running"
        })[0],
    );
    std::fs::write(&hang, b"").unwrap();
    let rows = h.wait_ps("web restarted", Duration::from_secs(15), |rows| {
        rows[0]["restarts"] == 1
    });
    std::fs::remove_file(&hang).unwrap();
    assert_ne!(rows[0]["pid"], first);
    let log = std::fs::read_to_string(h.path("logs/web-0.log")).unwrap();
    assert_eq!(
        log.matches("hung probe").count(),
        3,
        "probes the hung process saw: {log}"
    );
    let exit = &h.json(&["inspect", "web", "--json"])["instances"][0]["exits"]
        .as_array()
        .unwrap()
        .last()
        .cloned()
        .unwrap();
    assert!(
        exit["reason"]
            .as_str()
            .unwrap()
            .starts_with("unhealthy: 3 consecutive failed probes"),
        "{exit}"
    );
    let kinds: Vec<String> = events(&h, "web")
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_string())
        .collect();
    let unhealthy = kinds
        .iter()
        .position(|k| k == "unhealthy_restart")
        .expect("unhealthy_restart event");
    assert_eq!(
        &kinds[unhealthy + 1..unhealthy + 3],
        ["stopping", "exited"],
        "{kinds:?}"
    );
    h.wait_ps("web healthy again", SECS_10, |rows| {
        rows[0]["health"] == "healthy"
    });
}

#[test]
fn tcp_probe_restarts_an_instance_whose_port_closes() {
    let h = Herd::up();
    let port = free_port();
    let close = h.path("close");
    let script = format!(
        "import socket, os, time\ns = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\ns.bind(('127.0.0.1', {port})); s.listen()\nwhile not os.path.exists('{}'): time.sleep(0.05)\ns.close(); time.sleep(3600)\n",
        close.display()
    );
    std::fs::write(h.path("tcp.py"), script).unwrap();
    let file = h.app_file(
        "apps.toml",
        &format!("[[app]]\nname = \"db\"\ncommand = \"python3\"\nargs = [\"tcp.py\"]\n[app.health]\ntcp = \"127.0.0.1:{port}\"\ninterval_s = 0.2\nfailures = 2\ngrace_s = 0\n"),
    );
    h.ok(&["start", &file]);
    h.wait_ps("db healthy", SECS_10, |rows| rows[0]["health"] == "healthy");
    std::fs::write(&close, b"").unwrap();
    let rows = h.wait_ps("db restarted", SECS_10, |rows| rows[0]["restarts"] == 1);
    std::fs::remove_file(&close).unwrap();
    assert!(
        rows[0]["last_exit"]["reason"]
            .as_str()
            .unwrap()
            .contains("unhealthy: 2 consecutive failed probes"),
        "{}",
        rows[0]
    );
    let health = h.json(&["health", "db", "--json"]);
    assert!(health[0]["health"].is_string());
}

#[test]
fn exec_probe_gates_running_and_restarts_on_failures() {
    let h = Herd::up();
    let ok = h.path("ok");
    let file = h.app_file(
        "apps.toml",
        &format!(
            "[[app]]\nname = \"w\"\ncommand = \"sleep\"\nargs = [\"1000\"]\n[app.health]\nexec = [\"test\", \"-e\", \"{}\"]\ninterval_s = 0.2\nfailures = 2\ngrace_s = 1\n",
            ok.display()
        ),
    );
    h.ok(&["start", &file]);
    // No probe has passed: starting, not running.
    h.wait_ps("w probed", SECS_10, |rows| {
        rows[0]["status"] == "starting" && rows[0]["pid"].is_u64()
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(h.instance("w", 0)["status"], "starting");
    std::fs::write(&ok, b"").unwrap();
    h.wait_status("w", 0, "running", SECS_10);
    assert_eq!(h.instance("w", 0)["health"], "healthy");
    std::fs::remove_file(&ok).unwrap();
    // Restarted (after its backoff), it waits for its probe again.
    h.wait_ps("w restarted", SECS_10, |rows| {
        rows[0]["restarts"] == 1 && rows[0]["status"] == "starting"
    });
    wait_until(
        "the failing probe's error in `herd health`",
        SECS_10,
        || {
            h.json(&["health", "--json"])[0]["last_probe_error"]
                .as_str()
                .is_some_and(|e| e.contains("exited"))
        },
    );
}

#[test]
fn an_instance_over_its_memory_limit_is_restarted_with_the_reason() {
    let h = Herd::new();
    let out = h
        .cmd(&["up"])
        .env("HERD_METRICS_INTERVAL_S", "0.3")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let file = h.app_file(
        "apps.toml",
        "[[app]]\nname = \"hog\"\ncommand = \"python3\"\nargs = [\"-c\", \"x = b'x' * (120 * 1024 * 1024); import time; time.sleep(3600)\"]\nmax_memory_mb = 60\n",
    );
    h.ok(&["start", &file]);
    let rows = h.wait_ps(
        "hog restarted for memory",
        Duration::from_secs(20),
        |rows| rows[0]["restarts"].as_u64() >= Some(1),
    );
    let reason = rows[0]["last_exit"]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        reason.starts_with("memory limit: ") && reason.contains("> max_memory_mb 60"),
        "{reason}"
    );
    let m = h.json(&["metrics", "--json"]);
    assert!(m["host"]["mem_total_bytes"].as_u64() > Some(0), "{m}");
    assert!(m["daemon"]["rss_bytes"].as_u64() > Some(0), "{m}");
    assert!(
        events(&h, "hog")
            .iter()
            .any(|e| e["event"] == "memory_limit" && e["limit_mb"] == 60)
    );
}

#[test]
fn metrics_cover_the_whole_process_tree() {
    let h = Herd::new();
    assert!(
        h.cmd(&["up"])
            .env("HERD_METRICS_INTERVAL_S", "0.3")
            .output()
            .unwrap()
            .status
            .success()
    );
    h.ok(&[
        "start",
        "--name",
        "tree",
        "--",
        "sh",
        "-c",
        "sleep 1000 & sleep 1000 & wait",
    ]);
    let rows = h.wait_ps("tree metrics", SECS_10, |rows| {
        rows[0]["rss_bytes"].as_u64().is_some_and(|r| r > 0)
    });
    let m = h.json(&["metrics", "tree", "--json"]);
    assert_eq!(m["instances"][0]["processes"], 3, "{m}");
    assert!(rows[0]["cpu_percent"].is_number());
}
