//! Network faults inside the hosts' namespaces: nftables rules that really drop packets (a
//! table `inet herd_chaos` per host, removed to heal), and `tc netem` delay and loss where the
//! kernel has it (random loss through nftables where it has not).

use std::net::SocketAddr;
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use anyhow::bail;

use crate::lab::Lab;
use crate::lab::exec;

const TABLE: &str = "herd_chaos";

/// What one host drops.
#[derive(Clone, Debug, PartialEq)]
pub enum Cut {
    /// Everything but loopback.
    Everything,
    /// Traffic to and from these addresses.
    Peers(Vec<String>),
    /// This share (in %) of every packet but loopback's, at random: loss without `tc netem`.
    Loss(u32),
}

/// The nftables script for one host. It first creates and deletes the table, so applying it
/// twice replaces the rules instead of failing.
pub fn ruleset(cut: &Cut) -> String {
    let (input, output) = match cut {
        Cut::Everything => (
            "iifname != \"lo\" drop".to_string(),
            "oifname != \"lo\" drop".to_string(),
        ),
        Cut::Peers(ips) => {
            let set = ips.join(", ");
            (
                format!("ip saddr {{ {set} }} drop"),
                format!("ip daddr {{ {set} }} drop"),
            )
        }
        Cut::Loss(percent) => (
            format!("iifname != \"lo\" numgen random mod 100 < {percent} drop"),
            format!("oifname != \"lo\" numgen random mod 100 < {percent} drop"),
        ),
    };
    format!(
        "table inet {TABLE} {{}}\ndelete table inet {TABLE}\ntable inet {TABLE} {{\n  \
         chain input {{ type filter hook input priority 0; policy accept; {input}; }}\n  \
         chain output {{ type filter hook output priority 0; policy accept; {output}; }}\n}}\n"
    )
}

fn in_host(lab: &Lab, node: usize, args: &[&str]) -> anyhow::Result<exec::Output> {
    exec::run(
        Command::new("ip")
            .args(["netns", "exec", &lab.net.namespace(node)])
            .args(args),
        Duration::from_secs(10),
    )
}

pub fn apply(lab: &Lab, node: usize, cut: &Cut) -> anyhow::Result<()> {
    let file = lab.work_dir().join(format!("nft-h{node}.nft"));
    std::fs::write(&file, ruleset(cut))?;
    let out = in_host(lab, node, &["nft", "-f", &file.to_string_lossy()])?;
    if !out.ok() {
        bail!("nft on node {node}: {}", out.failure());
    }
    Ok(())
}

/// Removes the host's rules; a host without any is fine.
pub fn heal(lab: &Lab, node: usize) {
    let _ = in_host(lab, node, &["nft", "delete", "table", "inet", TABLE]);
}

/// Proof that an isolated host really drops packets: its cluster port does not answer from
/// the bridge.
pub fn unreachable_from_bridge(ip: &str) -> bool {
    let Ok(addr) = format!("{ip}:9701").parse::<SocketAddr>() else {
        return false;
    };
    TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_err()
}

/// Adds delay and loss on the host's link.
pub fn netem(lab: &Lab, node: usize, delay_ms: u64, loss_percent: u64) -> anyhow::Result<()> {
    let out = in_host(
        lab,
        node,
        &[
            "tc",
            "qdisc",
            "replace",
            "dev",
            "eth0",
            "root",
            "netem",
            "delay",
            &format!("{delay_ms}ms"),
            &format!("{}ms", delay_ms / 5),
            "loss",
            &format!("{loss_percent}%"),
        ],
    )?;
    if !out.ok() {
        bail!("tc netem on node {node}: {}", out.failure());
    }
    Ok(())
}

pub fn netem_heal(lab: &Lab, node: usize) {
    let _ = in_host(lab, node, &["tc", "qdisc", "del", "dev", "eth0", "root"]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_isolated_host_keeps_only_loopback() {
        let r = ruleset(&Cut::Everything);
        assert!(r.starts_with("table inet herd_chaos {}\ndelete table inet herd_chaos\n"));
        assert!(r.contains("iifname != \"lo\" drop") && r.contains("oifname != \"lo\" drop"));
    }

    #[test]
    fn loss_drops_a_random_share_of_everything_but_loopback() {
        let r = ruleset(&Cut::Loss(20));
        assert!(
            r.contains("iifname != \"lo\" numgen random mod 100 < 20 drop"),
            "{r}"
        );
        assert!(
            r.contains("oifname != \"lo\" numgen random mod 100 < 20 drop"),
            "{r}"
        );
    }

    #[test]
    fn a_split_drops_both_directions_to_the_other_side() {
        let r = ruleset(&Cut::Peers(vec!["10.88.1.12".into(), "10.88.1.13".into()]));
        assert!(r.contains("ip saddr { 10.88.1.12, 10.88.1.13 } drop"));
        assert!(r.contains("ip daddr { 10.88.1.12, 10.88.1.13 } drop"));
    }
}
