//! Zero-downtime reload of a real HTTP app under continuous requests, and a broken new
//! version that leaves the old instances serving.

mod common;

use common::*;
use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// Serves on the listen socket herd hands over as fd 3; answers with its pid; touches
/// `ready.<pid>` once serving; on SIGTERM stops accepting and finishes what it accepted.
const SERVER: &str = r#"
import http.server, os, signal, socket, sys, threading
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = str(os.getpid()).encode()
        self.send_response(200); self.send_header("content-length", str(len(body))); self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
assert os.environ["LISTEN_FDS"] == "1" and os.environ["LISTEN_PID"] == str(os.getpid())
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H, bind_and_activate=False)
srv.socket.close()
srv.socket = socket.socket(fileno=3)
srv.daemon_threads = False
signal.signal(signal.SIGTERM, lambda *a: threading.Thread(target=srv.shutdown).start())
open(os.path.join(sys.argv[1], "ready.%d" % os.getpid()), "w").close()
srv.serve_forever(poll_interval=0.05)
srv.server_close()
"#;

fn get(port: u16) -> Result<u32, String> {
    let mut s =
        std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    s.write_all(b"GET / HTTP/1.0\r\n\r\n")
        .map_err(|e| format!("write: {e}"))?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)
        .map_err(|e| format!("read: {e}"))?;
    if !resp.starts_with("HTTP/1.0 200") {
        return Err(format!("bad answer: {resp:?}"));
    }
    resp.rsplit("\r\n\r\n")
        .next()
        .and_then(|b| b.trim().parse().ok())
        .ok_or_else(|| format!("no pid in {resp:?}"))
}

/// Keeps requesting until stopped; returns (ok, failed, distinct pids seen, first error).
fn hammer(
    port: u16,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(u64, u64, Vec<u32>, Option<String>)> {
    std::thread::spawn(move || {
        let (ok, failed) = (AtomicU64::new(0), AtomicU64::new(0));
        let mut pids = Vec::new();
        let mut first_error = None;
        while !stop.load(Ordering::Relaxed) {
            match get(port) {
                Ok(pid) => {
                    ok.fetch_add(1, Ordering::Relaxed);
                    if !pids.contains(&pid) {
                        pids.push(pid);
                    }
                }
                Err(e) => {
                    failed.fetch_add(1, Ordering::Relaxed);
                    first_error.get_or_insert(e);
                }
            }
        }
        (ok.into_inner(), failed.into_inner(), pids, first_error)
    })
}

fn web_app(h: &Herd, port: u16) -> String {
    std::fs::write(h.path("server.py"), SERVER).unwrap();
    h.app_file(
        "apps.toml",
        &format!(
            r#"
[[app]]
name = "web"
command = "python3"
args = ["server.py", "{home}"]
instances = 2
listen = ["127.0.0.1:{port}"]
stop_timeout_s = 5

[app.health]
exec = ["sh", "-c", "test -e {home}/ready.$HERD_PID"]
interval_s = 0.2
timeout_s = 1
failures = 3
grace_s = 2
"#,
            home = h.home.path().display()
        ),
    )
}

fn pids(h: &Herd) -> Vec<u64> {
    h.ps()
        .iter()
        .map(|r| r["pid"].as_u64().unwrap_or(0))
        .collect()
}

#[test]
fn reload_under_continuous_requests_fails_no_request() {
    let h = Herd::up();
    let port = free_port();
    let file = web_app(&h, port);
    h.ok(&["start", &file]);
    h.wait_ps("both healthy", SECS_10, |rows| {
        rows.len() == 2 && rows.iter().all(|r| r["status"] == "running")
    });
    let before = pids(&h);

    let stop = Arc::new(AtomicBool::new(false));
    let client = hammer(port, stop.clone());
    std::thread::sleep(Duration::from_millis(300));
    h.ok(&["reload", "web"]);
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let (ok, failed, seen, first_error) = client.join().unwrap();

    assert_eq!(
        failed,
        0,
        "{failed} of {} requests failed during the reload; first: {first_error:?}",
        ok + failed
    );
    assert!(ok > 50, "only {ok} requests went through");
    let after = pids(&h);
    assert!(
        after.iter().all(|p| !before.contains(p)),
        "not every instance was replaced: {before:?} -> {after:?}"
    );
    assert!(
        seen.len() >= 3,
        "answers came from {seen:?}: old and new processes should both have served"
    );
    let steps: Vec<String> = h
        .ok(&["events", "web", "--json", "--lines", "200"])
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["event"] == "reload")
        .map(|e| e["step"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        steps,
        [
            "begin",
            "start_new",
            "stop_old",
            "start_new",
            "stop_old",
            "done"
        ]
    );
}

#[test]
fn a_broken_new_version_aborts_the_reload_and_the_old_instances_keep_serving() {
    let h = Herd::up();
    let port = free_port();
    let file = web_app(&h, port);
    h.ok(&["start", &file]);
    h.wait_ps("both healthy", SECS_10, |rows| {
        rows.len() == 2 && rows.iter().all(|r| r["status"] == "running")
    });
    let before = pids(&h);

    // The new version on disk never becomes ready.
    std::fs::write(h.path("server.py"), "import time\ntime.sleep(3600)\n").unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let client = hammer(port, stop.clone());
    let err = h.fails(&["reload", "web"]);
    stop.store(true, Ordering::Relaxed);
    let (ok, failed, _, first_error) = client.join().unwrap();

    assert!(
        err.contains("reload of `web` aborted") && err.contains("old instances keep serving"),
        "{err}"
    );
    assert_eq!(
        failed, 0,
        "requests failed during the aborted reload: {first_error:?}"
    );
    assert!(ok > 10);
    assert_eq!(pids(&h), before, "the old instances were replaced");
    assert!(h.ps().iter().all(|r| r["status"] == "running"));
    get(port).expect("still serving");
}
