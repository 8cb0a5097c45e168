//! The lab's network: `deploy/netns-lab.sh` (embedded, so there is one source of truth) run
//! under the suite's own names, so a lab a user made by hand is never touched. Host i is
//! namespace `herdchaos-h<i>` at 10.88.1.(10+i) on bridge `herdchaos0` (10.88.1.1).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::bail;

use super::exec;
use super::exec::Output;

/// The script users run; the suite runs the very same text.
pub const SCRIPT: &str = include_str!("../../../deploy/netns-lab.sh");

#[derive(Clone, Debug)]
pub struct LabNet {
    pub prefix: String,
    pub bridge: String,
    pub subnet: String,
}

impl LabNet {
    pub fn chaos() -> LabNet {
        LabNet {
            prefix: "herdchaos-h".into(),
            bridge: "herdchaos0".into(),
            subnet: "10.88.1".into(),
        }
    }

    pub fn namespace(&self, node: usize) -> String {
        format!("{}{node}", self.prefix)
    }

    pub fn ip(&self, node: usize) -> String {
        format!("{}.{}", self.subnet, 10 + node)
    }

    pub fn bridge_ip(&self) -> String {
        format!("{}.1", self.subnet)
    }

    /// Runs the script with `args` (`up N`, `down`, ...), printing what it does.
    pub fn script(&self, args: &[&str]) -> anyhow::Result<Output> {
        let out = exec::run(
            Command::new("bash")
                .arg("-c")
                .arg(SCRIPT)
                .arg("netns-lab.sh")
                .args(args)
                .env("HERD_LAB_PREFIX", &self.prefix)
                .env("HERD_LAB_BRIDGE", &self.bridge)
                .env("HERD_LAB_SUBNET", &self.subnet),
            Duration::from_secs(60),
        )?;
        for line in out.stdout.lines() {
            eprintln!("  {line}");
        }
        if !out.ok() {
            bail!("deploy/netns-lab.sh {}: {}", args.join(" "), out.failure());
        }
        Ok(out)
    }

    pub fn up(&self, nodes: usize) -> anyhow::Result<()> {
        self.script(&["up", &nodes.to_string()]).map(drop)
    }

    pub fn down(&self) -> anyhow::Result<()> {
        self.script(&["down"]).map(drop)
    }

    /// Our namespaces that exist now.
    pub fn namespaces(&self) -> Vec<String> {
        let out = exec::run(
            Command::new("ip").args(["netns", "list"]),
            Duration::from_secs(10),
        );
        let Ok(out) = out else { return Vec::new() };
        out.stdout
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|n| {
                n.strip_prefix(&self.prefix)
                    .is_some_and(|i| !i.is_empty() && i.bytes().all(|b| b.is_ascii_digit()))
            })
            .map(String::from)
            .collect()
    }

    pub fn bridge_exists(&self) -> bool {
        Path::new("/sys/class/net").join(&self.bridge).exists()
    }

    /// Root-side interfaces of ours (the bridge and veth ends) that still exist.
    pub fn interfaces(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir("/sys/class/net") else {
            return Vec::new();
        };
        entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n == &self.bridge || n.starts_with(&format!("{}-", self.bridge)))
            .collect()
    }

    /// Processes whose network namespace is host `node`'s.
    pub fn pids(&self, node: usize) -> Vec<i32> {
        let out = exec::run(
            Command::new("ip").args(["netns", "pids", &self.namespace(node)]),
            Duration::from_secs(10),
        );
        out.map(|o| {
            o.stdout
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_the_kernel_limits_and_the_script_reads_them() {
        let net = LabNet::chaos();
        // Interface names are at most 15 bytes: the bridge and "<bridge>-<i>" veth ends.
        assert!(format!("{}-{}", net.bridge, 99).len() <= 15);
        assert_eq!(net.ip(3), "10.88.1.13");
        assert_eq!(net.bridge_ip(), "10.88.1.1");
        for var in ["HERD_LAB_PREFIX", "HERD_LAB_BRIDGE", "HERD_LAB_SUBNET"] {
            assert!(SCRIPT.contains(var), "the script ignores {var}");
        }
    }
}
