//! The TCP API and the CLI under a stranger's or a careless user's hands (issue 11, items
//! 7–9): wrong tokens are throttled per peer and logged in a bounded way while another peer
//! is answered; connections are capped per peer and cut at the handshake deadline; a reload
//! rotates the token and applies `listen`; `herd kill` leaves a pid that is not this home's
//! daemon alone; the CLI names the owner on EACCES and gives up on a daemon that does not
//! answer.

mod common;

use common::*;
use herd_proto::supervisor::PingRequest;
use herd_proto::supervisor::supervisor_client::SupervisorClient;
use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

const TOKEN: &str = "e2e-token-0123456789abcdef";
const ROTATED: &str = "rotated-token-9876543210fedcba";

/// A daemon whose `[api]` listens on a free loopback port with `TOKEN` in `api.token` and
/// `extra` lines.
fn daemon_with_api(extra: &str) -> (Herd, String) {
    daemon_with_api_token(TOKEN, extra)
}

fn write_api_config(herd: &Herd, addr: &str, extra: &str) {
    std::fs::write(
        herd.path("config.toml"),
        format!(
            "[api]\nlisten = \"{addr}\"\ntoken_file = \"{}\"\n{extra}",
            herd.path("api.token").display()
        ),
    )
    .unwrap();
}

/// A token file outside any daemon's home.
fn token_file(dir: &Path, name: &str, token: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, token).unwrap();
    p.display().to_string()
}

/// `herd --host ADDR --token-file FILE ARGS` from an empty home (source address 127.0.0.1).
fn remote(cli: &Herd, addr: &str, token: &str, args: &[&str]) -> std::process::Output {
    let mut full = vec!["--host", addr, "--token-file", token];
    full.extend_from_slice(args);
    cli.run(&full)
}

/// A TCP connection to `to` from the loopback address `from` (Linux routes all of 127/8).
fn connect_from(from: &str, to: &str) -> std::io::Result<TcpStream> {
    let to: SocketAddr = to.parse().unwrap();
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    let from: SocketAddr = format!("{from}:0").parse().unwrap();
    s.bind(&from.into())?;
    s.connect_timeout(&to.into(), Duration::from_secs(2))?;
    Ok(s.into())
}

/// Whether the daemon hangs up on `s` within `within` (EOF or reset), rather than leaving it
/// open.
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    s.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 64];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue, // a server preface or GOAWAY on its way out
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false;
            }
            Err(_) => return true,
        }
    }
}

/// A gRPC client whose connections come from `source` (tonic cannot choose it itself).
#[derive(Clone)]
struct From(SocketAddr);

impl tonic::codegen::Service<http::Uri> for From {
    type Response = hyper_util::rt::TokioIo<tokio::net::TcpStream>;
    type Error = std::io::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = std::io::Result<Self::Response>> + Send>,
    >;
    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let source = self.0;
        Box::pin(async move {
            let host = uri.host().unwrap_or("127.0.0.1").to_string();
            let to: SocketAddr = format!("{host}:{}", uri.port_u16().unwrap_or(80))
                .parse()
                .map_err(std::io::Error::other)?;
            let sock = tokio::net::TcpSocket::new_v4()?;
            sock.bind(source)?;
            Ok(hyper_util::rt::TokioIo::new(sock.connect(to).await?))
        })
    }
}

/// One ping on a fresh connection from `source` with `token`: the gRPC code it got, or
/// `None` when the connection itself was refused or cut.
async fn ping_from(source: &str, addr: &str, token: &str) -> Option<tonic::Code> {
    let source: SocketAddr = format!("{source}:0").parse().unwrap();
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap();
    let attempt = async {
        let channel = endpoint.connect_with_connector(From(source)).await.ok()?;
        let mut client = SupervisorClient::new(channel);
        let mut req = tonic::Request::new(PingRequest {});
        req.metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        Some(match client.ping(req).await {
            Ok(_) => tonic::Code::Ok,
            Err(s) => s.code(),
        })
    };
    tokio::time::timeout(Duration::from_secs(3), attempt)
        .await
        .ok()
        .flatten()
}

fn log_lines_with(herd: &Herd, needle: &str) -> Vec<String> {
    read_lines(&herd.path("daemon.log"))
        .into_iter()
        .filter(|l| l.contains(needle))
        .collect()
}

#[test]
fn wrong_tokens_are_throttled_per_peer_and_logged_in_a_bounded_way_while_another_peer_answers() {
    let (daemon, addr) = daemon_with_api("");
    let cli = Herd::new();
    let right = token_file(cli.home.path(), "right", TOKEN);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let wrong = "not-the-token-0123456789";
    let started = Instant::now();
    let (codes, same_peer) = rt.block_on(async {
        let mut codes = Vec::new();
        for _ in 0..5 {
            codes.push(ping_from("127.0.0.2", &addr, wrong).await);
        }
        // The fifth wrong token started a penalty (1 s): the right token from the same
        // address is refused too, so the penalty cannot be used to keep guessing.
        let same_peer = ping_from("127.0.0.2", &addr, TOKEN).await;
        for _ in 5..200 {
            codes.push(ping_from("127.0.0.2", &addr, wrong).await);
        }
        (codes, same_peer)
    });
    let took = started.elapsed().as_secs_f64();
    assert_ne!(same_peer, Some(tonic::Code::Ok));
    assert!(
        codes.iter().all(|c| *c != Some(tonic::Code::Ok)),
        "{codes:?}"
    );
    // Five wrong tokens per penalty, and penalties of 1, 2, 4, ... s: in `took` seconds at
    // most 5 * (1 + log2(took + 1)) tokens are even looked at.
    let checked = codes
        .iter()
        .filter(|c| **c == Some(tonic::Code::Unauthenticated))
        .count();
    let bound = 5 * (2 + (took + 1.0).log2().floor() as usize);
    // (The fifth may see its connection cut instead: the penalty hangs up on the peer.)
    assert!(
        codes[..4]
            .iter()
            .all(|c| *c == Some(tonic::Code::Unauthenticated)),
        "{codes:?}"
    );
    assert!(
        (4..=bound).contains(&checked),
        "{checked} of 200 wrong tokens were checked in {took:.1} s (bound {bound})"
    );

    // Another peer (127.0.0.1) with the right token is answered at once.
    let started = Instant::now();
    let out = remote(&cli, &addr, &right, &["ping", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // The daemon logged the flood in a line or two, not 200.
    wait_until("the first refusal in daemon.log", SECS_10, || {
        !log_lines_with(&daemon, "127.0.0.2").is_empty()
    });
    let lines = log_lines_with(&daemon, "127.0.0.2");
    assert!(
        lines.len() <= 5,
        "{} lines:\n{}",
        lines.len(),
        lines.join("\n")
    );
}

#[test]
fn connections_over_the_per_peer_cap_are_closed_at_once_and_another_peer_still_answers() {
    let (_daemon, addr) = daemon_with_api("max_connections_per_peer = 4\n");
    let mut held: Vec<TcpStream> = (0..4)
        .map(|_| connect_from("127.0.0.2", &addr).unwrap())
        .collect();
    // Accepted in order: let the daemon take the first four before the extra ones arrive.
    std::thread::sleep(Duration::from_millis(200));
    let mut extra: Vec<TcpStream> = (0..4)
        .map(|_| connect_from("127.0.0.2", &addr).unwrap())
        .collect();
    for (i, s) in extra.iter_mut().enumerate() {
        assert!(
            closed_within(s, Duration::from_secs(3)),
            "extra connection {i} is still open"
        );
    }
    for (i, s) in held.iter_mut().enumerate() {
        assert!(
            !closed_within(s, Duration::from_millis(200)),
            "connection {i} within the cap was closed"
        );
    }
    let cli = Herd::new();
    let right = token_file(cli.home.path(), "right", TOKEN);
    let out = remote(&cli, &addr, &right, &["ping"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_connection_that_sends_nothing_is_closed_at_the_handshake_timeout() {
    let (_daemon, addr) = daemon_with_api("handshake_timeout_s = 1\n");
    let mut silent = connect_from("127.0.0.1", &addr).unwrap();
    let started = Instant::now();
    assert!(
        closed_within(&mut silent, Duration::from_secs(5)),
        "a silent connection is still open after 5 s"
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_secs(4),
        "closed after {took:?}"
    );
}

#[test]
fn a_rotated_token_is_refused_right_after_reload_config_and_a_short_one_is_refused() {
    let (daemon, addr) = daemon_with_api("");
    let cli = Herd::new();
    let old = token_file(cli.home.path(), "old", TOKEN);
    let new = token_file(cli.home.path(), "new", ROTATED);
    assert!(remote(&cli, &addr, &old, &["ping"]).status.success());

    std::fs::write(daemon.path("api.token"), format!("{ROTATED}\n")).unwrap();
    let out = daemon.ok(&["reload-config"]);
    assert!(out.contains("api.token"), "{out}");
    let refused = remote(&cli, &addr, &old, &["ping"]);
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("token is missing or wrong"), "{err}");
    assert!(remote(&cli, &addr, &new, &["ping"]).status.success());

    // A new token the next start would refuse is refused now, and the running one stays.
    std::fs::write(daemon.path("api.token"), "short\n").unwrap();
    let err = daemon.fails(&["reload-config"]);
    assert!(err.contains("at least 16"), "{err}");
    assert!(remote(&cli, &addr, &new, &["ping"]).status.success());
    // So does an unreadable one.
    std::fs::remove_file(daemon.path("api.token")).unwrap();
    let err = daemon.fails(&["reload-config"]);
    assert!(err.contains("token_file"), "{err}");
    assert!(remote(&cli, &addr, &new, &["ping"]).status.success());

    // SIGHUP rotates it just the same (back to the first token).
    std::fs::write(daemon.path("api.token"), format!("{TOKEN}\n")).unwrap();
    let replaced = || log_lines_with(&daemon, "API token replaced").len();
    let before = replaced();
    let pid = daemon.daemon_pid().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    // (Polled in the log, not with the old token: wrong tokens would earn a penalty.)
    wait_until("the SIGHUP reload to swap the token", SECS_10, || {
        replaced() > before
    });
    assert!(remote(&cli, &addr, &old, &["ping"]).status.success());
    assert!(!remote(&cli, &addr, &new, &["ping"]).status.success());
}

#[test]
fn reload_config_applies_a_changed_listen_and_turns_the_api_on() {
    // Off at start (no [api]); a reload turns it on.
    let daemon = Herd::up();
    let cli = Herd::new();
    let token = token_file(cli.home.path(), "token", TOKEN);
    std::fs::write(daemon.path("api.token"), format!("{TOKEN}\n")).unwrap();
    let first = format!("127.0.0.1:{}", free_port());
    write_api_config(&daemon, &first, "");
    daemon.ok(&["reload-config"]);
    assert!(remote(&cli, &first, &token, &["ping"]).status.success());

    // A new listen is bound and the old port let go.
    let second = format!("127.0.0.1:{}", free_port());
    write_api_config(&daemon, &second, "");
    daemon.ok(&["reload-config"]);
    assert!(remote(&cli, &second, &token, &["ping"]).status.success());
    wait_until("the old port to close", SECS_10, || {
        TcpStream::connect(&first).is_err()
    });

    // A port that is taken refuses the reload; the API stays where it was.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap().to_string();
    write_api_config(&daemon, &taken_addr, "");
    let err = daemon.fails(&["reload-config"]);
    assert!(err.contains(&taken_addr), "{err}");
    assert!(remote(&cli, &second, &token, &["ping"]).status.success());
}

#[test]
fn kill_leaves_a_pid_that_is_not_this_homes_daemon_alone() {
    let h = Herd::up();
    let mut sleep = std::process::Command::new("sleep")
        .arg("1000")
        .spawn()
        .unwrap();
    let pid = sleep.id();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Field 22 (start time), counted after the command name's closing parenthesis.
    let start = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .nth(19)
        .unwrap()
        .to_string();
    let forged = format!("{pid}\n{start}\n");
    let real = std::fs::read_to_string(h.path("daemon.pid")).unwrap();

    // The daemon runs and holds the lock, but the file names the sleep.
    std::fs::write(h.path("daemon.pid"), &forged).unwrap();
    let err = h.fails(&["kill"]);
    assert!(err.contains("not this home's herd daemon"), "{err}");
    assert!(alive(pid), "herd kill killed an unrelated process");
    std::fs::write(h.path("daemon.pid"), &real).unwrap();
    h.ok(&["ping"]);

    // No daemon at all: a leftover file naming the sleep is cleared, the sleep left alone.
    h.ok(&["down"]);
    std::fs::write(h.path("daemon.pid"), &forged).unwrap();
    let out = h.ok(&["kill"]);
    assert!(out.contains("left pid"), "{out}");
    assert!(alive(pid), "herd kill killed an unrelated process");
    let _ = sleep.kill();
    let _ = sleep.wait();
}

fn as_nobody(bin: &Path, home: &Path, args: &[&str]) -> String {
    let out = nobody_cmd(bin, home)
        .args(args)
        .output()
        .expect("setpriv runs");
    assert!(!out.status.success(), "herd {args:?} worked as nobody");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn eacces_on_the_home_or_the_socket_names_the_owner_instead_of_not_running() {
    use std::os::unix::fs::PermissionsExt;
    let h = Herd::up();
    let (_bin_dir, bin) = binary_for_nobody();
    let home = h.home.path();
    // The home is 0700: nobody cannot even reach the socket.
    std::fs::set_permissions(home, std::fs::Permissions::from_mode(0o700)).unwrap();
    let err = as_nobody(&bin, home, &["ps"]);
    let expected = format!(
        "permission denied on {} (owned by root uid 0, mode 0700)",
        home.display()
    );
    assert!(err.contains(&expected), "{err}");
    assert!(!err.contains("not running"), "{err}");
    // A searchable home: the socket itself (0600) is the wall.
    std::fs::set_permissions(home, std::fs::Permissions::from_mode(0o711)).unwrap();
    let err = as_nobody(&bin, home, &["ps"]);
    let expected = format!(
        "permission denied on {} (owned by root uid 0, mode 0600)",
        h.path("daemon.sock").display()
    );
    assert!(err.contains(&expected), "{err}");
    std::fs::set_permissions(home, std::fs::Permissions::from_mode(0o700)).unwrap();
}

/// SIGCONTs the daemon however the test ends, so the harness can take it down.
struct Resume(u32);
impl Drop for Resume {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0 as i32),
            nix::sys::signal::Signal::SIGCONT,
        );
    }
}

#[test]
fn the_cli_gives_up_on_a_stopped_daemon_after_the_request_timeout() {
    let h = Herd::up();
    let pid = h.daemon_pid().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGSTOP,
    )
    .unwrap();
    let _resume = Resume(pid);
    let started = Instant::now();
    let err = h.fails(&["ps", "--request-timeout", "1"]);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let expected = format!(
        "the daemon at {} did not answer within 1 s",
        h.path("daemon.sock").display()
    );
    assert!(err.contains(&expected), "{err}");
    // The environment sets it too.
    let started = Instant::now();
    let out = h
        .cmd(&["ping"])
        .env("HERD_REQUEST_TIMEOUT", "1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    drop(_resume);
    h.ok(&["ping"]);
}

#[test]
fn the_cluster_port_caps_connections_per_peer_and_cuts_silent_ones() {
    let h = Herd::new();
    let addr = format!("127.0.0.1:{}", free_port());
    std::fs::write(h.path("cluster.key"), "cluster-secret-0123456789").unwrap();
    std::fs::write(
        h.path("config.toml"),
        format!(
            "[cluster]\nenabled = true\nname = \"e2e\"\nadvertise = \"{addr}\"\nlisten = \"{addr}\"\ndiscovery = \"static:{addr}\"\nvoters = 1\nsecret_file = \"{}\"\n",
            h.path("cluster.key").display()
        ),
    )
    .unwrap();
    h.ok(&["up"]);
    // 64 per peer (roomier than the API's 32: peers may share an address).
    let mut held: Vec<TcpStream> = (0..64)
        .map(|_| connect_from("127.0.0.2", &addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut extra: Vec<TcpStream> = (0..3)
        .map(|_| connect_from("127.0.0.2", &addr).unwrap())
        .collect();
    for (i, s) in extra.iter_mut().enumerate() {
        assert!(
            closed_within(s, Duration::from_secs(3)),
            "extra connection {i} is still open"
        );
    }
    assert!(!closed_within(&mut held[0], Duration::from_millis(200)));
    // None of them sent a request: all are cut at the 10 s handshake deadline.
    let started = Instant::now();
    for (i, s) in held.iter_mut().enumerate() {
        assert!(
            closed_within(s, Duration::from_secs(15)),
            "silent connection {i} still open after {:?}",
            started.elapsed()
        );
    }
    // The node itself is unharmed.
    h.ok(&["cluster", "status"]);
}
