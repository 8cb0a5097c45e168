//! What the bench reads from `/proc` about a supervisor: its memory, its CPU time, and the
//! processes it spawns.

use crate::error::{Context, Result};
use nix::unistd::{SysconfVar, sysconf};
use std::collections::HashSet;

/// A process's memory and handles at one moment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Memory {
    pub rss_kib: u64,
    pub pss_kib: u64,
    /// The anonymous part of the RSS (heap, stacks): what a leak grows. The rest is mostly
    /// the executable's and libraries' pages, bounded by their size and shared with every
    /// other process mapping the same files (which is why PSS drops when another process
    /// runs the same binary).
    pub anon_kib: u64,
    pub threads: u64,
    pub open_fds: usize,
}

pub fn memory(pid: u32) -> Result<Memory> {
    let rollup_path = format!("/proc/{pid}/smaps_rollup");
    let rollup =
        std::fs::read_to_string(&rollup_path).context(|| format!("cannot read {rollup_path}"))?;
    let status_path = format!("/proc/{pid}/status");
    let status =
        std::fs::read_to_string(&status_path).context(|| format!("cannot read {status_path}"))?;
    let fd_dir = format!("/proc/{pid}/fd");
    let open_fds = std::fs::read_dir(&fd_dir)
        .context(|| format!("cannot list {fd_dir}"))?
        .count();
    Ok(Memory {
        rss_kib: field(&rollup, "Rss:").ok_or(format!("no Rss in {rollup_path}"))?,
        pss_kib: field(&rollup, "Pss:").ok_or(format!("no Pss in {rollup_path}"))?,
        anon_kib: field(&status, "RssAnon:").ok_or(format!("no RssAnon in {status_path}"))?,
        threads: field(&status, "Threads:").ok_or(format!("no Threads in {status_path}"))?,
        open_fds,
    })
}

/// The memory of several processes added up: s6's and runit's supervisor is a scanner plus one
/// supervisor process per service. RSS so counts the pages they share once per process (it is
/// what `ps` would sum); PSS divides those pages among the processes, so its sum is fair.
pub fn memory_of(pids: &[u32]) -> Result<Memory> {
    let mut total = Memory {
        rss_kib: 0,
        pss_kib: 0,
        anon_kib: 0,
        threads: 0,
        open_fds: 0,
    };
    for &pid in pids {
        let m = memory(pid)?;
        total.rss_kib += m.rss_kib;
        total.pss_kib += m.pss_kib;
        total.anon_kib += m.anon_kib;
        total.threads += m.threads;
        total.open_fds += m.open_fds;
    }
    Ok(total)
}

/// The number after `key` on the line that starts with it (`Rss:   1234 kB`).
fn field(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

/// The fields of `/proc/PID/stat` the bench uses.
#[derive(Debug, Clone, PartialEq)]
pub struct Stat {
    /// Field 2, without its parentheses: the executable's name, changed by `exec`.
    pub comm: String,
    /// Field 4.
    pub ppid: u32,
    /// Fields 14 + 15, utime + stime, in clock ticks. They include the CPU time of the
    /// process's threads that have exited, not that of its children.
    pub cpu_ticks: u64,
}

pub fn stat(pid: u32) -> Result<Stat> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).context(|| format!("cannot read {path}"))?;
    parse_stat(&text).ok_or(format!("{path}: cannot parse `{}`", text.trim()))
}

fn parse_stat(text: &str) -> Option<Stat> {
    // The name may hold spaces and parentheses: it ends at the last ')'. `f[0]` is field 3.
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let f: Vec<&str> = text.get(close + 1..)?.split_ascii_whitespace().collect();
    let num = |n: usize| f.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        comm: text.get(open + 1..close)?.to_string(),
        ppid: num(4)? as u32,
        cpu_ticks: num(14)? + num(15)?,
    })
}

/// `sysconf(_SC_CLK_TCK)`: the unit of the CPU times in `/proc/PID/stat` (100 on Linux).
pub fn ticks_per_s() -> u64 {
    match sysconf(SysconfVar::CLK_TCK) {
        Ok(Some(t)) if t > 0 => t as u64,
        _ => 100,
    }
}

/// The command line of `pid`, its arguments joined by spaces (a process may rewrite it:
/// PM2's daemon shows `PM2 vX: God Daemon (HOME)` there).
pub fn cmdline(pid: u32) -> Result<String> {
    let path = format!("/proc/{pid}/cmdline");
    let raw = std::fs::read(&path).context(|| format!("cannot read {path}"))?;
    let args: Vec<String> = raw
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    Ok(args.join(" "))
}

/// Every pid in `/proc` now.
pub fn pids() -> HashSet<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return HashSet::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// The children of `parent` whose executable is `comm`.
pub fn children_named(parent: u32, comm: &str) -> Vec<u32> {
    pids()
        .into_iter()
        .filter(|&pid| stat(pid).is_ok_and(|s| s.ppid == parent && s.comm == comm))
        .collect()
}

/// Watches for a new child of one process: `poll` looks only at pids it has not seen before,
/// so each call costs one `/proc` listing plus a read of the few new processes' `stat`.
pub struct NewChildWatch {
    parent: u32,
    comm: String,
    seen: HashSet<u32>,
}

impl NewChildWatch {
    /// Every process alive now counts as old.
    pub fn new(parent: u32, comm: &str) -> Self {
        Self {
            parent,
            comm: comm.to_string(),
            seen: pids(),
        }
    }

    /// A process that appeared since [`NewChildWatch::new`] whose parent is `parent` and
    /// whose executable is already `comm` (a child that has forked but not yet `exec`ed
    /// still has its parent's name: it is looked at again next time).
    pub fn poll(&mut self) -> Option<u32> {
        for pid in pids() {
            if self.seen.contains(&pid) {
                continue;
            }
            match stat(pid) {
                Ok(s) if s.ppid == self.parent && s.comm == self.comm => return Some(pid),
                Ok(s) if s.ppid == self.parent => {}
                // Someone else's process, or gone already.
                _ => {
                    self.seen.insert(pid);
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_a_strange_name() {
        let text = "4242 (a b) (c)) S 17 4242 4242 0 -1 4194560 100 0 0 0 7 5 0 0 20 0 3 0 \
                    12345 1000 200 18446744073709551615";
        let s = parse_stat(text).unwrap();
        assert_eq!(
            s,
            Stat {
                comm: "a b) (c)".into(),
                ppid: 17,
                cpu_ticks: 12
            }
        );
        assert!(parse_stat("garbage").is_none());
    }

    #[test]
    fn this_process_is_readable() {
        let me = std::process::id();
        assert_eq!(stat(me).unwrap().ppid, std::os::unix::process::parent_id());
        let m = memory(me).unwrap();
        assert!(m.rss_kib > 0 && m.anon_kib > 0 && m.anon_kib <= m.rss_kib);
        assert!(pids().contains(&me));
        assert!(ticks_per_s() > 0);
    }

    #[test]
    fn a_new_child_is_seen_once_it_runs_the_named_program() {
        let me = std::process::id();
        let mut watch = NewChildWatch::new(me, "sleep");
        assert_eq!(watch.poll(), None);
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let found = loop {
            if let Some(pid) = watch.poll() {
                break Some(pid);
            }
            if std::time::Instant::now() > deadline {
                break None;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        };
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(found, Some(child.id()));
    }
}
