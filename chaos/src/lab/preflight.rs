//! What the lab needs from the machine, checked before anything is created, with the fix for
//! each missing piece. A fresh Debian/Ubuntu box gets there with
//! `apt-get install -y iproute2 nftables redis-server python3`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::bail;

use super::exec;

const INSTALL: &str = "apt-get install -y iproute2 nftables redis-server python3";

fn has(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
        .unwrap_or(false)
        || ["/usr/sbin", "/sbin"]
            .iter()
            .any(|d| Path::new(d).join(program).is_file())
}

/// Fails with every missing prerequisite named, and how to get it.
pub fn check(herd: &Path) -> anyhow::Result<()> {
    let mut missing = Vec::new();
    if !nix::unistd::geteuid().is_root() {
        missing.push(
            "root: network namespaces, bridges and nftables need it (run with sudo)".to_string(),
        );
    }
    for (program, why, package) in [
        ("ip", "network namespaces and veth pairs", "iproute2"),
        (
            "nft",
            "partitions (packets dropped inside the namespaces)",
            "nftables",
        ),
        ("redis-server", "cluster discovery", "redis-server"),
        (
            "python3",
            "the workload's HTTP app behind a health check",
            "python3",
        ),
        ("bash", "deploy/netns-lab.sh", "bash"),
    ] {
        if !has(program) {
            missing.push(format!(
                "`{program}` ({why}) is not installed: apt-get install -y {package}"
            ));
        }
    }
    match exec::run(Command::new(herd).arg("--version"), Duration::from_secs(10)) {
        Ok(out) if out.ok() => {}
        Ok(out) => missing.push(format!(
            "{} does not run: {}",
            herd.display(),
            out.failure()
        )),
        Err(e) => missing.push(format!(
            "no herd binary at {} ({e}); build it with `cargo build --release -p herd` or pass --herd PATH",
            herd.display()
        )),
    }
    if missing.is_empty() {
        return Ok(());
    }
    bail!(
        "the chaos lab cannot start:\n  - {}\n(on a fresh machine: {INSTALL})",
        missing.join("\n  - ")
    )
}

/// Whether `tc netem` works inside `namespace` (it needs the kernel's `sch_netem`); `Err`
/// holds the reason it does not. Leaves no qdisc behind.
pub fn netem(namespace: &str) -> Result<(), String> {
    if !has("tc") {
        return Err("`tc` is not installed (apt-get install -y iproute2)".into());
    }
    let tc = |args: &[&str]| {
        exec::run(
            Command::new("ip")
                .args(["netns", "exec", namespace, "tc"])
                .args(args),
            Duration::from_secs(10),
        )
    };
    match tc(&[
        "qdisc", "add", "dev", "eth0", "root", "netem", "delay", "1ms",
    ]) {
        Ok(out) if out.ok() => {
            let _ = tc(&["qdisc", "del", "dev", "eth0", "root"]);
            Ok(())
        }
        Ok(out) => {
            let why = out.stderr.trim().to_string();
            if why.contains("unknown") {
                Err(format!("this kernel has no sch_netem (tc: {why})"))
            } else {
                Err(format!("tc netem failed: {why}"))
            }
        }
        Err(e) => Err(format!("cannot run tc: {e}")),
    }
}
