//! herd's HTTP face end to end: a real daemon serving `[http] listen`, read over real TCP.
//! `/healthz` answers; `/metrics` passes `promtool check metrics` and says what `herd ps
//! --json` and `herd metrics --json` say; unknown paths are 404 and other methods 405; a port
//! another daemon holds stops `herd up` with the reason; off loopback, `/metrics` needs a token.

mod common;

use common::cluster::*;
use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

/// `METHOD PATH` over plain HTTP/1.1: (status, body).
fn http(addr: &str, method: &str, path: &str, auth: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect to the HTTP server");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let auth = auth
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, body.to_string())
}

/// The value of the sample `name{labels}` (labels exactly as the exposition writes them).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

fn up_with_http(h: &Herd, listen: &str) {
    std::fs::create_dir_all(h.home.path()).unwrap();
    let out = h
        .cmd(&["up"])
        .env("HERD_HTTP_LISTEN", listen)
        .env("HERD_METRICS_INTERVAL_S", "0.2")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "herd up: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn promtool_check(text: &str) {
    let mut child = match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => panic!(
            "promtool is needed to check /metrics ({e}): `apt-get install prometheus` provides it (scripts/test installs it)"
        ),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics refused /metrics:\n{}{}\n---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn healthz_and_metrics_say_what_the_cli_says_and_pass_promtool() {
    let h = Herd::new();
    let addr = format!("127.0.0.1:{}", free_port());
    up_with_http(&h, &addr);
    let file = h.app_file(
        "apps.toml",
        "[[app]]\nname = \"web\"\ncommand = \"sleep\"\nargs = [\"1000\"]\ninstances = 2\n\n[[app]]\nname = \"once\"\ncommand = \"true\"\nrestart = \"never\"\n",
    );
    h.ok(&["start", &file]);
    h.wait_status("web", 1, "running", WAIT);
    h.wait_status("once", 0, "stopped", WAIT);

    let (code, body) = http(&addr, "GET", "/healthz", None);
    assert_eq!(code, 200, "{body}");
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["status"], "ok", "{health}");

    let (code, text) = http(&addr, "GET", "/metrics", None);
    assert_eq!(code, 200, "{text}");
    promtool_check(&text);
    for row in h.ps() {
        let (app, index) = (
            row["name"].as_str().unwrap(),
            row["instance"].as_u64().unwrap(),
        );
        let labels = format!("{{app=\"{app}\",instance=\"{index}\"}}");
        let up = sample(&text, &format!("herd_instance_up{labels}"));
        let running = row["status"] == "running";
        assert_eq!(
            up,
            Some(if running { 1.0 } else { 0.0 }),
            "{app}/{index}\n{text}"
        );
        let status = format!(
            "herd_instance_status{{app=\"{app}\",instance=\"{index}\",status=\"{}\"}}",
            row["status"].as_str().unwrap()
        );
        assert_eq!(sample(&text, &status), Some(1.0), "{status}\n{text}");
        assert_eq!(
            sample(&text, &format!("herd_instance_restarts_total{labels}")),
            row["restarts"].as_f64(),
            "{text}"
        );
    }
    let rss = sample(&text, "herd_daemon_resident_memory_bytes").expect("daemon RSS");
    let mut cli_rss = 0.0;
    wait_until("herd metrics has sampled the daemon", WAIT, || {
        cli_rss = h.json(&["metrics", "--json"])["daemon"]["rss_bytes"]
            .as_f64()
            .unwrap_or(0.0);
        cli_rss > 0.0
    });
    assert!(
        rss > cli_rss / 2.0 && rss < cli_rss * 2.0,
        "daemon RSS {rss} vs herd metrics {cli_rss}"
    );
    assert!(
        sample(&text, "herd_daemon_cpu_seconds_total").is_some(),
        "{text}"
    );
    assert!(text.contains("herd_build_info{version=\""), "{text}");

    // Events by kind: as many `started` as `herd events` lists (3 instances started once).
    let started = h
        .ok(&["events", "--json", "-n", "1000"])
        .lines()
        .filter(|l| l.contains("\"event\":\"started\""))
        .count();
    assert_eq!(started, 3, "herd events");
    assert_eq!(
        sample(&text, "herd_events_total{event=\"started\"}"),
        Some(started as f64),
        "{text}"
    );

    // A stop shows at the next scrape.
    h.ok(&["stop", "web"]);
    let (_, text) = http(&addr, "GET", "/metrics", None);
    assert_eq!(
        sample(&text, "herd_instance_up{app=\"web\",instance=\"0\"}"),
        Some(0.0)
    );

    // An oversized body (the sign-in form takes a token, not megabytes) gets 413.
    let mut s = TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let body = format!("token={}", "x".repeat(64 * 1024));
    let _ = write!(
        s,
        "POST /login HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut raw = String::new();
    let _ = s.read_to_string(&mut raw);
    assert!(
        raw.starts_with("HTTP/1.1 413"),
        "{}",
        &raw[..raw.len().min(200)]
    );

    // Bad input: 404 and 405, and the daemon is unharmed.
    assert_eq!(http(&addr, "GET", "/nope", None).0, 404);
    assert_eq!(http(&addr, "POST", "/metrics", None).0, 405);
    assert_eq!(http(&addr, "DELETE", "/healthz", None).0, 405);
    h.ok(&["ping"]);

    // Another daemon cannot take the port: its `herd up` fails, saying why.
    let other = Herd::new();
    std::fs::create_dir_all(other.home.path()).unwrap();
    let out = other
        .cmd(&["up"])
        .env("HERD_HTTP_LISTEN", &addr)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("[http] listen") && err.contains("cannot bind"),
        "{err}"
    );
    // A bad address is refused naming the variable.
    let out = other
        .cmd(&["up"])
        .env("HERD_HTTP_LISTEN", "9800")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("HERD_HTTP_LISTEN"),
        "{err}"
    );
}

#[test]
fn off_loopback_metrics_need_a_token_and_healthz_does_not() {
    let h = Herd::new();
    std::fs::create_dir_all(h.home.path()).unwrap();
    let token = h.path("api.token");
    std::fs::write(&token, "http-e2e-token-0123456789").unwrap();
    std::fs::write(
        h.path("config.toml"),
        format!(
            "[api]\nlisten = \"127.0.0.1:{}\"\ntoken_file = \"{}\"\n",
            free_port(),
            token.display()
        ),
    )
    .unwrap();
    let port = free_port();
    up_with_http(&h, &format!("0.0.0.0:{port}"));
    let addr = format!("127.0.0.1:{port}");
    assert_eq!(http(&addr, "GET", "/healthz", None).0, 200);
    let (code, body) = http(&addr, "GET", "/metrics", None);
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("viewer token"), "{body}");
    assert!(!body.contains("herd_instance"), "{body}");
    let made = h.json(&["token", "create", "--role", "viewer", "--json"]);
    let bearer = format!("Bearer {}", made["secret"].as_str().unwrap());
    let (code, body) = http(&addr, "GET", "/metrics", Some(&bearer));
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("herd_daemon_uptime_seconds"), "{body}");
    let (code, _) = http(&addr, "GET", "/metrics", Some("Bearer herd_00"));
    assert_eq!(code, 401);
}

#[test]
fn the_leader_serves_the_master_metrics_and_they_match_the_cli() {
    let redis = Redis::start();
    let nodes = fast_three(&redis.url());
    let all: Vec<&Node> = nodes.iter().collect();
    wait_formed(&all, 3, 0);
    // Every node again, now with its HTTP server on (the helpers start them without).
    let addrs: Vec<String> = nodes
        .iter()
        .map(|n| {
            n.herd.ok(&["down", "--keep-apps"]);
            let addr = format!("127.0.0.1:{}", free_port());
            up_with_http(&n.herd, &addr);
            addr
        })
        .collect();
    let leader = wait_formed(&all, 3, 0);
    let master = by_id(&all, leader);
    let file = master.herd.app_file(
        "apps.toml",
        "[[app]]\nname = \"web\"\ncommand = \"sleep\"\nargs = [\"1000\"]\ninstances = 2\n",
    );
    master.herd.ok(&["cluster", "deploy", &file]);
    wait_until("both instances running", Duration::from_secs(30), || {
        counts_of(&all, "web").iter().sum::<usize>() == 2
    });
    // The leader alone serves the master's figures; each figure is counted once.
    let mut text = String::new();
    wait_until(
        "the leader reports web running twice and some heartbeats",
        Duration::from_secs(30),
        || {
            let served: Vec<String> = addrs
                .iter()
                .map(|a| http(a, "GET", "/metrics", None).1)
                .collect();
            let leaders: Vec<&String> = served
                .iter()
                .filter(|t| sample(t, "herd_raft_is_leader") == Some(1.0))
                .collect();
            let [one] = leaders.as_slice() else {
                return false;
            };
            text = (*one).clone();
            served
                .iter()
                .filter(|t| t.contains("herd_master_heartbeats_sent_total"))
                .count()
                == 1
                && sample(
                    &text,
                    "herd_cluster_app_instances{app=\"web\",state=\"running\"}",
                ) == Some(2.0)
                && sample(&text, "herd_master_heartbeat_rtt_seconds_count").unwrap_or(0.0) > 0.0
        },
    );
    promtool_check(&text);
    let apps = master.herd.json(&["cluster", "apps", "--json"]);
    let web = &apps.as_array().unwrap()[0];
    assert_eq!(
        sample(
            &text,
            "herd_cluster_app_instances{app=\"web\",state=\"desired\"}"
        ),
        web["desired"].as_f64()
    );
    assert_eq!(
        sample(
            &text,
            "herd_cluster_app_instances{app=\"web\",state=\"placed\"}"
        ),
        Some(web["assignments"].as_object().unwrap().len() as f64)
    );
    assert_eq!(
        sample(&text, "herd_cluster_nodes{status=\"online\"}"),
        Some(3.0),
        "{text}"
    );
    let sent = sample(&text, "herd_master_heartbeats_sent_total").unwrap();
    let rtt = sample(&text, "herd_master_heartbeat_rtt_seconds_count").unwrap();
    assert!(rtt > 0.0 && rtt <= sent, "rtt count {rtt}, sent {sent}");
    let inf = sample(
        &text,
        "herd_master_heartbeat_rtt_seconds_bucket{le=\"+Inf\"}",
    );
    assert_eq!(inf, Some(rtt), "{text}");
    // Uptime: once the master has rolled samples of every node into the registry, each node
    // has a ratio, and with nobody down it is 1.
    wait_uptime_samples(master, 3);
    let leader_addr = addrs
        .iter()
        .find(|a| sample(&http(a, "GET", "/metrics", None).1, "herd_raft_is_leader") == Some(1.0))
        .expect("a leader serving /metrics");
    let (_, text) = http(leader_addr, "GET", "/metrics", None);
    let ratios: Vec<f64> = text
        .lines()
        .filter(|l| l.starts_with("herd_cluster_node_uptime_ratio{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    assert_eq!(ratios, vec![1.0; 3], "{text}");
}

/// `curl` over HTTPS trusting `ca`: (status, headers + body); status 0 when no TLS answer.
fn curl_https(ca: &str, url: &str, extra: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "-i", "--max-time", "5", "--cacert", ca])
        .args(extra)
        .arg(url)
        .output()
        .expect("curl (apt-get install -y curl; scripts/test installs it)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let code = text
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, text)
}

#[test]
fn with_tls_cert_and_key_the_port_speaks_https_and_a_stalled_handshake_blocks_nobody() {
    let h = Herd::new();
    std::fs::create_dir_all(h.home.path()).unwrap();
    let (ca, cert, key) = certificates(h.home.path(), "IP:127.0.0.1");
    std::fs::write(
        h.path("config.toml"),
        format!("[http]\ntls_cert = \"{cert}\"\ntls_key = \"{key}\"\n"),
    )
    .unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    up_with_http(&h, &addr);

    // A client that connects and never says hello holds one handshake slot, nothing more.
    let stalled: Vec<TcpStream> = (0..5).map(|_| TcpStream::connect(&addr).unwrap()).collect();
    let (code, text) = curl_https(&ca, &format!("https://{addr}/healthz"), &[]);
    assert_eq!(code, 200, "{text}");
    assert!(text.contains("\"status\":\"ok\""), "{text}");
    let (code, text) = curl_https(&ca, &format!("https://{addr}/metrics"), &[]);
    assert_eq!(code, 200, "{text}");
    drop(stalled);
    // Plain HTTP gets no answer on a TLS port.
    assert_ne!(try_get(&addr), 200);

    // The one-time link says https, and the session cookie is Secure.
    let link = h.json(&["dashboard", "--json"])["url"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        link.starts_with(&format!("https://{addr}/login?once=")),
        "{link}"
    );
    let (code, text) = curl_https(&ca, &link, &[]);
    assert_eq!(code, 303, "{text}");
    let cookie = text
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .unwrap_or_default();
    assert!(
        cookie.contains("HttpOnly")
            && cookie.contains("SameSite=Strict")
            && cookie.contains("Secure"),
        "{cookie}"
    );
    h.ok(&["down"]);

    // Half a pair, or a key that is not the certificate's, stops `herd up` naming [http].
    for (config, says) in [
        (format!("tls_cert = \"{cert}\"\n"), "[http] TLS needs both"),
        (
            format!("tls_cert = \"{cert}\"\ntls_key = \"{ca}\"\n"),
            "[http]",
        ),
    ] {
        std::fs::write(h.path("config.toml"), format!("[http]\n{config}")).unwrap();
        let out = h
            .cmd(&["up"])
            .env("HERD_HTTP_LISTEN", &addr)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(says),
            "{config}: {err}"
        );
    }
}

/// A GET that tolerates being hung up on: the status, or 0 when nothing came back.
fn try_get(addr: &str) -> u16 {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return 0;
    };
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let req = format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return 0;
    }
    let mut raw = String::new();
    let _ = s.read_to_string(&mut raw);
    raw.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[test]
fn one_peer_holds_at_most_32_connections_to_the_http_port() {
    let h = Herd::new();
    let addr = format!("127.0.0.1:{}", free_port());
    up_with_http(&h, &addr);
    assert_eq!(try_get(&addr), 200);
    // 32 idle connections (a stranger's slowloris) fill this peer's share...
    let held: Vec<TcpStream> = (0..32)
        .map(|_| TcpStream::connect(&addr).unwrap())
        .collect();
    wait_until("the 33rd connection hung up on", WAIT, || {
        try_get(&addr) == 0
    });
    // ...and nothing more: once they go, the port serves again, and the daemon never stopped.
    drop(held);
    wait_until("served again", WAIT, || try_get(&addr) == 200);
    h.ok(&["ping"]);
    h.ok(&["down"]);
}
