//! Shared harness of the end-to-end tests: a real `herd` daemon in its own temporary
//! `HERD_HOME`, driven through the real CLI, with real child processes.
#![allow(dead_code)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub fn herd_bin() -> &'static str {
    env!("CARGO_BIN_EXE_herd")
}

/// The herd binary where `nobody` can run it (the build's directory may not be searchable);
/// the directory goes with the returned handle.
pub fn binary_for_nobody() -> (tempfile::TempDir, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = dir.path().join("herd");
    // A hard link opens nothing for writing. A copy does, and a test thread forking meanwhile
    // holds that descriptor until its child execs: running the copy then fails with ETXTBSY
    // (CI saw it), so a copy is run until it can be.
    if std::fs::hard_link(herd_bin(), &bin).is_err() {
        std::fs::copy(herd_bin(), &bin).unwrap();
        wait_until("the copied binary can be run", SECS_10, || {
            !matches!(
                Command::new(&bin).arg("--version").output(),
                Err(e) if e.raw_os_error() == Some(libc_etxtbsy())
            )
        });
    }
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    (dir, bin)
}

/// `bin` (from `binary_for_nobody`) as a command run by nobody, with `HERD_HOME` = `home`,
/// from `/`, and none of the caller's context or host variables.
pub fn nobody_cmd(bin: &Path, home: &Path) -> Command {
    let mut c = Command::new("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(bin)
        .env("HERD_HOME", home)
        .env_remove("HERD_CONTEXT")
        .env_remove("HERD_HOST")
        .current_dir("/");
    c
}

/// ETXTBSY (26 on Linux).
fn libc_etxtbsy() -> i32 {
    nix::errno::Errno::ETXTBSY as i32
}

/// A daemon whose `[api]` listens on a free loopback port with `token` in `api.token` (its
/// admin token), plus `extra` config lines; returns it and the address.
pub fn daemon_with_api_token(token: &str, extra: &str) -> (Herd, String) {
    let herd = Herd::new();
    let addr = format!("127.0.0.1:{}", free_port());
    std::fs::write(herd.path("api.token"), format!("{token}\n")).unwrap();
    std::fs::write(
        herd.path("config.toml"),
        format!(
            "[api]\nlisten = \"{addr}\"\ntoken_file = \"{}\"\n{extra}",
            herd.path("api.token").display()
        ),
    )
    .unwrap();
    herd.ok(&["up"]);
    (herd, addr)
}

/// A herd home with (usually) a daemon running in it. Dropping it stops the daemon and every
/// process it started, even when the test failed halfway.
pub struct Herd {
    pub home: tempfile::TempDir,
}

impl Herd {
    /// A fresh home, no daemon yet.
    pub fn new() -> Self {
        Self {
            home: tempfile::Builder::new()
                .prefix("herd-e2e-")
                .tempdir()
                .expect("temp home"),
        }
    }

    /// A fresh home with a daemon up.
    pub fn up() -> Self {
        let h = Self::new();
        h.ok(&["up"]);
        h
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.home.path().join(rel)
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(herd_bin());
        c.args(args)
            .env("HERD_HOME", self.home.path())
            .env_remove("HERD_LOG")
            // Many daemons run side by side here: no HTTP server unless a test asks for one.
            .env("HERD_HTTP_LISTEN", "")
            // The developer's own contexts (`herd context use prod`) must never reach a test:
            // each home has its own, empty, config directory.
            .env("XDG_CONFIG_HOME", self.home.path().join("xdg-config"))
            .env_remove("HERD_CONTEXT");
        c
    }

    /// Runs herd with `stdin` on its standard input. A command that reads none may be gone
    /// before it is written: that is no failure.
    pub fn run_with_stdin(&self, args: &[&str], stdin: &str) -> Output {
        use std::io::Write;
        use std::process::Stdio;
        let mut child = self
            .cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run herd");
        match child.stdin.take().unwrap().write_all(stdin.as_bytes()) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
            Err(e) => panic!("writing herd's stdin: {e}"),
        }
        child.wait_with_output().expect("wait for herd")
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run herd")
    }

    /// Runs herd and insists on success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        if !out.status.success() {
            // The daemon's own last words, when it died starting (the home goes with the test).
            let log = std::fs::read_to_string(self.path("daemon.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            panic!(
                "herd {args:?} failed ({}):\nstdout: {}\nstderr: {}\ndaemon.log (last lines, newest first):\n{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                tail.join("\n")
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs herd and insists on failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "herd {args:?} should have failed; stdout: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// `herd secret put NAME --json` with `value` on standard input; insists on success.
    pub fn put_secret(&self, name: &str, value: &str) -> Value {
        use std::io::Write;
        let mut child = self
            .cmd(&["secret", "put", name, "--json"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run herd secret put");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(value.as_bytes())
            .expect("write the value");
        let out = child.wait_with_output().expect("herd secret put");
        assert!(
            out.status.success(),
            "secret put {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("secret put --json")
    }

    pub fn json(&self, args: &[&str]) -> Value {
        let out = self.ok(args);
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("herd {args:?} printed no JSON ({e}): {out}"))
    }

    pub fn ps(&self) -> Vec<Value> {
        match self.json(&["ps", "--json"]) {
            Value::Array(rows) => rows,
            other => panic!("ps --json is not an array: {other}"),
        }
    }

    pub fn instance(&self, name: &str, index: u64) -> Value {
        self.ps()
            .into_iter()
            .find(|r| r["name"] == name && r["instance"] == index)
            .unwrap_or_else(|| panic!("no instance {name}/{index} in ps"))
    }

    /// Polls `ps` until `pred` holds; panics with the last rows after `timeout`.
    pub fn wait_ps(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let rows = self.ps();
            if pred(&rows) {
                return rows;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out after {timeout:?} waiting for {what}; ps: {}",
                    serde_json::to_string_pretty(&rows).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn wait_status(&self, name: &str, index: u64, status: &str, timeout: Duration) -> Value {
        let rows = self.wait_ps(&format!("{name}/{index} {status}"), timeout, |rows| {
            rows.iter()
                .any(|r| r["name"] == name && r["instance"] == index && r["status"] == status)
        });
        rows.into_iter()
            .find(|r| r["name"] == name && r["instance"] == index)
            .expect("row")
    }

    /// Writes an app file into the home and returns its path.
    pub fn app_file(&self, file: &str, toml: &str) -> String {
        let p = self.path(file);
        std::fs::write(&p, toml).expect("write app file");
        p.display().to_string()
    }

    pub fn daemon_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.path("daemon.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }

    /// Every pid recorded in the state file (for clean-up).
    fn recorded_pids(&self) -> Vec<u32> {
        let mut pids = Vec::new();
        for f in ["state.json", "state.json.bak"] {
            let Ok(text) = std::fs::read_to_string(self.path(f)) else {
                continue;
            };
            let Ok(v) = serde_json::from_str::<Value>(&text) else {
                continue;
            };
            for app in v["apps"].as_array().into_iter().flatten() {
                for i in app["instances"].as_array().into_iter().flatten() {
                    if let Some(p) = i["pid"].as_u64() {
                        pids.push(p as u32);
                    }
                }
            }
        }
        pids
    }
}

impl Drop for Herd {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // The home goes with the test; its daemon's last words are how a failure is read.
            let log = std::fs::read_to_string(self.path("daemon.log")).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(80)..].join("\n");
            eprintln!(
                "--- last lines of {} ---\n{tail}\n---",
                self.path("daemon.log").display()
            );
        }
        let _ = self.cmd(&["down", "--timeout", "1"]).output();
        let _ = self.cmd(&["kill"]).output();
        for pid in self.recorded_pids() {
            // Only groups this test's daemon started (each instance leads its own group).
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

pub fn alive(pid: u32) -> bool {
    // A zombie still "exists" for kill(0); look at its state too.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit_once(')')
                .map(|(_, r)| r.trim_start().chars().next().unwrap_or('X'))
                .unwrap_or('X');
            state != 'Z' && state != 'X'
        }
        Err(_) => false,
    }
}

pub fn group_alive(pgid: u32) -> bool {
    !matches!(
        nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid as i32), None),
        Err(nix::errno::Errno::ESRCH)
    )
}

/// Polls until `cond` holds or panics after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub fn pid_of(row: &Value) -> u32 {
    row["pid"]
        .as_u64()
        .unwrap_or_else(|| panic!("no pid in {row}")) as u32
}

pub fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

pub mod cluster;
pub mod disk;

pub const SECS_10: Duration = Duration::from_secs(10);

/// A loopback TCP port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The lines a child writes to its piped stdout, as they come.
pub fn stdout_lines(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    let stdout = child.stdout.take().expect("stdout piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Runs the openssl CLI in `dir` and insists on success.
fn openssl(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl must be installed (scripts/test installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A throwaway CA and a certificate it signed for `sans` (e.g. `IP:127.0.0.1,IP:127.0.0.2`),
/// good for serving and for calling, made with the openssl CLI (scripts/test installs it):
/// (ca.pem, server.pem, server.key).
pub fn certificates(dir: &Path, sans: &str) -> (String, String, String) {
    let openssl = |args: &[&str]| openssl(dir, args);
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509", "-days", "1", "-subj", "/CN=herd test CA"];
    ca.extend_from_slice(&ec);
    ca.extend_from_slice(&["-keyout", "ca.key", "-out", "ca.pem"]);
    openssl(&ca);
    let (cert, key) = certificate_signed_by(dir, "server", "127.0.0.1", sans);
    (dir.join("ca.pem").display().to_string(), cert, key)
}

/// Another certificate from the CA that `certificates` made in `dir`, with its own subject
/// `cn` and key: (`name`.pem, `name`.key).
pub fn certificate_signed_by(dir: &Path, name: &str, cn: &str, sans: &str) -> (String, String) {
    let openssl = |args: &[&str]| openssl(dir, args);
    let (pem, key, csr, ext) = (
        format!("{name}.pem"),
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.ext"),
    );
    let subject = format!("/CN={cn}");
    openssl(&[
        "req",
        "-subj",
        &subject,
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        &key,
        "-out",
        &csr,
    ]);
    std::fs::write(
        dir.join(&ext),
        format!("subjectAltName = {sans}\nextendedKeyUsage = serverAuth, clientAuth\n"),
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-days",
        "1",
        "-in",
        &csr,
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-extfile",
        &ext,
        "-out",
        &pem,
    ]);
    let p = |f: &str| dir.join(f).display().to_string();
    (p(&pem), p(&key))
}

/// The certificate a new TLS connection to `addr` is served, as the base64 of its DER (what
/// `openssl s_client` prints between the PEM lines); `client`: a certificate and key to present
/// (mutual TLS). `None` when no handshake completes.
pub fn served_certificate(addr: &str, client: Option<(&str, &str)>) -> Option<String> {
    let mut args = vec!["s_client", "-connect", addr, "-noservername"];
    if let Some((cert, key)) = client {
        args.extend_from_slice(&["-cert", cert, "-key", key]);
    }
    let out = std::process::Command::new("openssl")
        .args(&args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("openssl must be installed (scripts/test installs it)");
    first_pem_body(&String::from_utf8_lossy(&out.stdout))
}

fn first_pem_body(text: &str) -> Option<String> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    let start = text.find(BEGIN)? + BEGIN.len();
    let end = start + text[start..].find("-----END CERTIFICATE-----")?;
    Some(text[start..end].split_whitespace().collect())
}

/// The first certificate in a PEM file, as `served_certificate` gives it.
pub fn pem_file_body(path: &str) -> String {
    first_pem_body(&std::fs::read_to_string(path).unwrap()).expect("a PEM certificate")
}
