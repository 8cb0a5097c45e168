//! The web dashboard in a real headless browser (Debian's chromium, driven by playwright-core
//! from `tests/browser/`; `scripts/test` installs both) against a real daemon and a real
//! 3-node cluster: the pages equal what the CLI prints, a killed instance turns green again
//! without a reload, the log pane is live, strangers see nothing and viewers cannot act.
//! Screenshots land in `target/dashboard-shots/`.

mod common;

use common::cluster::*;
use common::*;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const APP: &str = "ticker";
/// Prints `tick <unix seconds>` every 200 ms, so a line under 2 s old is always there.
const TICKER: &str = r#"
[[app]]
name = "ticker"
command = "sh"
args = ["-c", "while true; do echo tick $(date +%s); sleep 0.2; done"]
instances = 2
"#;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Fails (never skips) with what to install when the browser or the driver is missing.
fn browser_ready() -> PathBuf {
    let dir = repo().join("tests/browser");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "{chromium} is missing: the dashboard tests need Debian's chromium (`apt-get install -y chromium`; ./scripts/test installs it)"
    );
    assert!(
        dir.join("node_modules/playwright-core").exists(),
        "playwright-core is missing: run `npm ci --prefix tests/browser` (./scripts/test does)"
    );
    dir
}

/// Runs the browser script with `cfg`; panics with its output when a check failed.
fn drive(name: &str, cfg: serde_json::Value) {
    let dir = browser_ready();
    let out = Command::new("node")
        .arg(dir.join("dashboard.mjs"))
        .arg(cfg.to_string())
        .output()
        .expect("run node (apt-get install -y nodejs)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "browser checks ({name}) failed:\n{stdout}\n{stderr}"
    );
}

fn shots(name: &str) -> String {
    repo()
        .join("target/dashboard-shots")
        .join(name)
        .display()
        .to_string()
}

/// A one-time sign-in link, as `herd dashboard --json` prints it.
fn link(herd: &Herd) -> String {
    herd.json(&["dashboard", "--json"])["url"]
        .as_str()
        .unwrap()
        .to_string()
}

fn viewer_token(herd: &Herd) -> String {
    herd.json(&[
        "token", "create", "--role", "viewer", "--name", "browser", "--json",
    ])["secret"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn the_dashboard_shows_what_herd_ps_shows_live_and_only_to_who_may_see_it() {
    let herd = Herd::new();
    let addr = format!("127.0.0.1:{}", free_port());
    let up = herd
        .cmd(&["up"])
        .env("HERD_HTTP_LISTEN", &addr)
        .output()
        .unwrap();
    assert!(up.status.success(), "{up:?}");
    let file = herd.app_file("apps.toml", TICKER);
    herd.ok(&["start", &file]);
    herd.wait_ps("both instances running", Duration::from_secs(10), |ps| {
        ps.iter().filter(|i| i["status"] == "running").count() == 2
    });
    let url = link(&herd);
    assert!(
        url.starts_with(&format!("http://{addr}/login?once=")),
        "{url}"
    );
    drive(
        "standalone",
        json!({
            "base": format!("http://{addr}"),
            "link": url,
            "herd": herd_bin(),
            "home": herd.home.path(),
            "viewer_token": viewer_token(&herd),
            "shots": shots("standalone"),
            "app": APP,
            "cluster": false,
        }),
    );
    herd.ok(&["down"]);
}

#[test]
fn herd_dashboard_says_how_to_turn_the_http_server_on_when_it_is_off() {
    let herd = Herd::up();
    let err = herd.fails(&["dashboard"]);
    assert!(err.contains("[http] listen"), "{err}");
    herd.ok(&["down"]);
}

#[test]
fn on_a_cluster_the_dashboard_shows_the_cluster_apps_and_the_uptime_cells_of_every_node() {
    let redis = Redis::start();
    let url = redis.url();
    let nodes = fast_three(&url);
    let all: Vec<&Node> = nodes.iter().collect();
    wait_formed(&all, 3, 0);
    // Node 1 again, now with its HTTP server on (the helpers start nodes without one).
    let web = &nodes[0];
    web.herd.ok(&["down", "--keep-apps"]);
    let addr = format!("127.0.0.1:{}", free_port());
    let up = web
        .herd
        .cmd(&["up"])
        .env("HERD_HTTP_LISTEN", &addr)
        .output()
        .unwrap();
    assert!(up.status.success(), "{up:?}");
    wait_formed(&all, 3, 0);
    // One instance on every node, so node 1 runs one the browser can kill.
    let spread =
        TICKER.replace("instances = 2", "instances = 3") + "[app.placement]\nmax_per_node = 1\n";
    let file = web.herd.app_file("apps.toml", &spread);
    web.herd.ok(&["cluster", "deploy", &file]);
    wait_until(
        "an instance running on every node",
        Duration::from_secs(30),
        || counts_of(&all, APP) == vec![1, 1, 1],
    );
    // Wait for a first uptime sample of every node, so the cells have something to show.
    wait_uptime_samples(web, 3);
    drive(
        "cluster",
        json!({
            "base": format!("http://{addr}"),
            "link": link(&web.herd),
            "herd": herd_bin(),
            "home": web.herd.home.path(),
            "viewer_token": viewer_token(&web.herd),
            "shots": shots("cluster"),
            "app": APP,
            "cluster": true,
        }),
    );
}
