//! The TCP API end to end: a real daemon with `[api]` and a token, driven by the real CLI from
//! another (empty) herd home with `--host` and `--token-file`; wrong and missing tokens are
//! refused and logged, and a daemon without a token opens no port.

mod common;

use common::*;
use std::net::TcpStream;
use std::time::Duration;

const TOKEN: &str = "e2e-token-0123456789abcdef";

/// A daemon whose config enables the TCP API on a free loopback port with `TOKEN`.
fn daemon_with_api(token: Option<&str>) -> (Herd, String) {
    let herd = Herd::new();
    std::fs::create_dir_all(herd.home.path()).unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let token_line = match token {
        Some(t) => {
            let file = herd.path("api.token");
            std::fs::write(&file, format!("{t}\n")).unwrap();
            format!("token_file = \"{}\"\n", file.display())
        }
        None => String::new(),
    };
    std::fs::write(
        herd.path("config.toml"),
        format!("[api]\nlisten = \"{addr}\"\n{token_line}"),
    )
    .unwrap();
    herd.ok(&["up"]);
    (herd, addr)
}

/// A CLI with its own empty home (no local daemon), holding `token` in a file.
fn remote_cli(token: &str) -> (Herd, String) {
    let cli = Herd::new();
    std::fs::create_dir_all(cli.home.path()).unwrap();
    let file = cli.path("token");
    std::fs::write(&file, token).unwrap();
    let path = file.display().to_string();
    (cli, path)
}

#[test]
fn a_remote_cli_with_the_token_drives_the_daemon_over_tcp() {
    let (daemon, addr) = daemon_with_api(Some(TOKEN));
    let (cli, token) = remote_cli(TOKEN);
    let remote = |args: &[&str]| {
        let mut full = vec!["--host", addr.as_str(), "--token-file", token.as_str()];
        full.extend_from_slice(args);
        full.iter().map(|s| s.to_string()).collect::<Vec<_>>()
    };
    let run = |args: &[&str]| {
        let a = remote(args);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        cli.ok(&a)
    };
    run(&[
        "start",
        "--name",
        "far",
        "--instances",
        "2",
        "--",
        "sleep",
        "1000",
    ]);
    // The daemon runs it (seen locally), and the remote CLI sees the same rows.
    daemon.wait_ps("far running on the daemon", SECS_10, |rows| {
        rows.iter()
            .filter(|r| r["name"] == "far" && r["status"] == "running")
            .count()
            == 2
    });
    let rows: serde_json::Value = serde_json::from_str(&run(&["ps", "--json"])).unwrap();
    let pids: Vec<u64> = rows
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["pid"].as_u64())
        .collect();
    assert_eq!(pids.len(), 2, "{rows}");
    let ping: serde_json::Value = serde_json::from_str(&run(&["ping", "--json"])).unwrap();
    assert_eq!(
        ping["home"].as_str(),
        Some(daemon.home.path().to_str().unwrap())
    );
    // The CLI's own home has no daemon: without --host it says so.
    assert!(cli.fails(&["ps"]).contains("herd is not running"));
    run(&["stop", "far"]);
    daemon.wait_ps("far stopped", SECS_10, |rows| {
        rows.iter()
            .filter(|r| r["name"] == "far")
            .all(|r| r["status"] == "stopped")
    });
    for p in pids {
        assert!(!alive(p as u32), "pid {p} still alive after a remote stop");
    }
}

#[test]
fn wrong_and_missing_tokens_are_refused_logged_and_harm_nothing() {
    let (daemon, addr) = daemon_with_api(Some(TOKEN));
    daemon.ok(&["start", "--name", "keep", "--", "sleep", "1000"]);
    let before = daemon.wait_status("keep", 0, "running", SECS_10)["pid"].as_u64();

    let (cli, wrong) = remote_cli("not-the-token-0123456789");
    let err = cli.fails(&["--host", &addr, "--token-file", &wrong, "delete", "keep"]);
    assert!(err.contains("token is missing or wrong"), "{err}");
    // No token at all: the CLI refuses before connecting.
    let err = cli.fails(&["--host", &addr, "ps"]);
    assert!(err.contains("needs the daemon's API token"), "{err}");
    // A token from the environment is presented too (here a wrong one).
    let out = cli
        .cmd(&["--host", &addr, "ps"])
        .env("HERD_TOKEN", "x".repeat(20))
        .output()
        .unwrap();
    assert!(!out.status.success());

    // Logged once: further refusals from the same peer within a minute are counted into one
    // line ("N refusals from IP in the last minute"; see tests/security_api.rs).
    wait_until("the refusal in the daemon's log", SECS_10, || {
        std::fs::read_to_string(daemon.path("daemon.log"))
            .unwrap_or_default()
            .matches("refused API call")
            .count()
            >= 1
    });
    // Nothing was deleted or restarted.
    assert_eq!(daemon.instance("keep", 0)["pid"].as_u64(), before);
    assert_eq!(daemon.instance("keep", 0)["status"], "running");
}

#[test]
fn without_a_token_the_daemon_opens_no_port_and_a_short_token_is_refused_at_start() {
    let (daemon, addr) = daemon_with_api(None);
    daemon.ok(&["ping"]);
    assert!(
        TcpStream::connect(&addr).is_err(),
        "nothing listens on {addr} without a token"
    );

    let short = Herd::new();
    std::fs::create_dir_all(short.home.path()).unwrap();
    std::fs::write(
        short.path("config.toml"),
        format!("[api]\nlisten = \"127.0.0.1:{}\"\n", free_port()),
    )
    .unwrap();
    let err = short
        .cmd(&["up"])
        .env("HERD_API_TOKEN", "short")
        .output()
        .unwrap();
    assert!(!err.status.success());
    let stderr = String::from_utf8_lossy(&err.stderr);
    assert!(stderr.contains("at least 16"), "{stderr}");
    assert!(short.fails(&["ping"]).contains("herd is not running"));
}

#[test]
fn with_a_certificate_the_api_speaks_tls_and_refuses_plain_or_untrusted_clients() {
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificates(certs.path(), "IP:127.0.0.1");
    let daemon = Herd::new();
    std::fs::create_dir_all(daemon.home.path()).unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let token_file = daemon.path("api.token");
    std::fs::write(&token_file, TOKEN).unwrap();
    std::fs::write(
        daemon.path("config.toml"),
        format!(
            "[api]\nlisten = \"{addr}\"\ntoken_file = \"{}\"\ntls_cert = \"{cert}\"\ntls_key = \"{key}\"\n",
            token_file.display()
        ),
    )
    .unwrap();
    daemon.ok(&["up"]);
    daemon.ok(&["start", "--name", "sealed", "--", "sleep", "1000"]);

    let (cli, token) = remote_cli(TOKEN);
    let https = format!("https://{addr}");
    let rows: serde_json::Value = serde_json::from_str(&cli.ok(&[
        "--host",
        &https,
        "--ca-file",
        &ca,
        "--token-file",
        &token,
        "ps",
        "--json",
    ]))
    .unwrap();
    assert_eq!(rows[0]["name"], "sealed", "{rows}");

    // Plain HTTP/2 to a TLS port fails; so does TLS checked against another CA.
    let err = cli.fails(&["--host", &addr, "--token-file", &token, "ps"]);
    assert!(err.contains("--host https://"), "{err}");
    let other = tempfile::tempdir().unwrap();
    let (other_ca, _, _) = certificates(other.path(), "IP:127.0.0.1");
    let err = cli.fails(&[
        "--host",
        &https,
        "--ca-file",
        &other_ca,
        "--token-file",
        &token,
        "ps",
    ]);
    assert!(err.contains("no herd daemon answers at"), "{err}");
    // https without a CA is refused by the CLI itself.
    let err = cli.fails(&["--host", &https, "--token-file", &token, "ps"]);
    assert!(err.contains("--ca-file"), "{err}");
    assert_eq!(daemon.instance("sealed", 0)["status"], "running");

    // TLS on the cluster's port would lock the peers out: refused before anything starts.
    let node = Herd::new();
    std::fs::create_dir_all(node.home.path()).unwrap();
    let shared = format!("127.0.0.1:{}", free_port());
    std::fs::write(node.path("secret"), "s3cret").unwrap();
    std::fs::write(
        node.path("config.toml"),
        format!(
            "[cluster]\nenabled = true\nadvertise = \"{shared}\"\nlisten = \"{shared}\"\ndiscovery = \"static:{shared}\"\nsecret_file = \"{}\"\n\n[api]\nlisten = \"{shared}\"\ntoken_file = \"{}\"\ntls_cert = \"{cert}\"\ntls_key = \"{key}\"\n",
            node.path("secret").display(),
            token_file.display()
        ),
    )
    .unwrap();
    let err = node.fails(&["up"]);
    assert!(err.contains("needs its own port"), "{err}");
}

#[test]
fn a_certificate_swapped_on_disk_is_served_after_sighup_and_a_bad_pair_is_refused() {
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = certificates(certs.path(), "IP:127.0.0.1");
    let daemon = Herd::new();
    std::fs::create_dir_all(daemon.home.path()).unwrap();
    let addr = format!("127.0.0.1:{}", free_port());
    let token_file = daemon.path("api.token");
    std::fs::write(&token_file, TOKEN).unwrap();
    std::fs::write(
        daemon.path("config.toml"),
        format!(
            "[api]\nlisten = \"{addr}\"\ntoken_file = \"{}\"\ntls_cert = \"{cert}\"\ntls_key = \"{key}\"\nhandshake_timeout_s = 1\n",
            token_file.display()
        ),
    )
    .unwrap();
    daemon.ok(&["up"]);
    daemon.ok(&["start", "--name", "sealed", "--", "sleep", "1000"]);
    let app = pid_of(&daemon.instance("sealed", 0));
    let first = pem_file_body(&cert);
    assert_eq!(served_certificate(&addr, None), Some(first.clone()));
    // The handshake deadline still holds with the TLS done by the resolver's acceptor.
    let mut silent = TcpStream::connect(&addr).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 64];
    let closed = match std::io::Read::read(&mut silent, &mut buf) {
        Ok(n) => n == 0,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    };
    assert!(
        closed,
        "a silent TLS connection outlived the 1 s handshake deadline"
    );
    let (cli, token) = remote_cli(TOKEN);
    let https = format!("https://{addr}");
    let remote_ps = || {
        cli.ok(&[
            "--host",
            &https,
            "--ca-file",
            &ca,
            "--token-file",
            &token,
            "ps",
            "--json",
        ])
    };

    // A renewed pair from the same CA (another subject, serial and key) over the same files.
    let (renewed_cert, renewed_key) =
        certificate_signed_by(certs.path(), "renewed", "herd renewed", "IP:127.0.0.1");
    std::fs::copy(&renewed_cert, &cert).unwrap();
    std::fs::copy(&renewed_key, &key).unwrap();
    let renewed = pem_file_body(&renewed_cert);
    assert_ne!(renewed, first);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.daemon_pid().unwrap() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    wait_until(
        "new connections to be served the renewed certificate",
        Duration::from_secs(10),
        || served_certificate(&addr, None).as_ref() == Some(&renewed),
    );
    let rows: serde_json::Value = serde_json::from_str(&remote_ps()).unwrap();
    assert_eq!(rows[0]["name"], "sealed", "{rows}");
    assert_eq!(
        pid_of(&daemon.instance("sealed", 0)),
        app,
        "the app was touched"
    );

    // A key that belongs to another certificate: refused naming the file; the renewed one stays.
    let (_, stranger_key) =
        certificate_signed_by(certs.path(), "stranger", "herd stranger", "IP:127.0.0.1");
    std::fs::copy(&stranger_key, &key).unwrap();
    let err = daemon.fails(&["reload-config"]);
    assert!(err.contains(&key) && err.contains("tls_key"), "{err}");
    assert_eq!(served_certificate(&addr, None), Some(renewed.clone()));
    // A missing certificate is refused the same way.
    std::fs::copy(&renewed_key, &key).unwrap();
    std::fs::remove_file(&cert).unwrap();
    let err = daemon.fails(&["reload-config"]);
    assert!(err.contains(&cert) && err.contains("tls_cert"), "{err}");
    assert_eq!(served_certificate(&addr, None), Some(renewed.clone()));
    remote_ps();
    assert_eq!(
        pid_of(&daemon.instance("sealed", 0)),
        app,
        "the app was touched"
    );
}
