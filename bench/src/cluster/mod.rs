//! `--cluster`: three real herd daemons and a three-member etcd on loopback, measured the same
//! way in the same run. For each tool: idle CPU of the three processes, durable writes/s with
//! 1, 16 and 64 clients over the tool's own gRPC API, and leader failover after `kill -9` as
//! the survivors' own status commands report it. Every process started here is killed, and
//! every directory removed, when its tool's value is dropped, error or not.

pub mod etcd;
pub mod herd;
pub mod report;
pub mod writes;

use crate::cleanup::wait_gone;
use crate::error::Result;
use crate::stats::Summary;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Cluster members, for both tools.
pub const MEMBERS: usize = 3;
/// How often each survivor's status command is run while a new leader is awaited.
const POLL_EVERY: Duration = Duration::from_millis(10);
/// A failover not seen within this is a failure of the run, not a sample.
const FAILOVER_LIMIT: Duration = Duration::from_secs(30);
/// After a restarted member agrees on the leader again, before the next kill: time for it to
/// catch up its log, so a kill never lands on a cluster still repairing itself.
const REJOIN_SETTLE: Duration = Duration::from_secs(1);
/// Before idle CPU is counted: start-up and formation work is over.
const IDLE_SETTLE: Duration = Duration::from_secs(5);

/// What the `--cluster` run takes from the command line.
#[derive(Debug, Clone, PartialEq)]
pub struct Knobs {
    pub kills: usize,
    pub idle_secs: u64,
    pub write_secs: u64,
    pub clients: Vec<usize>,
}

impl Default for Knobs {
    fn default() -> Self {
        Self {
            kills: 20,
            idle_secs: 30,
            write_secs: 10,
            clients: vec![1, 16, 64],
        }
    }
}

/// One member's answer to its own status command.
#[derive(Debug, Clone, PartialEq)]
pub struct View {
    /// The member's own id, in the tool's terms.
    pub me: String,
    /// The leader it names, if any.
    pub leader: Option<String>,
}

/// A running three-member cluster of one tool, driven through its own commands.
pub trait Cluster: Sync {
    /// "herd 0.1.0", "etcd 3.4.23".
    fn label(&self) -> &str;
    /// Member `i`'s own status command (`herd cluster status`, `etcdctl endpoint status`).
    fn view(&self, i: usize) -> Result<View>;
    /// The pid of member `i`'s server process.
    fn pid(&self, i: usize) -> Result<u32>;
    /// Starts member `i` again, on its old data, after it was killed.
    fn restart(&mut self, i: usize) -> Result<()>;
    /// `clients` clients, each on its own connection, writing one small key after another
    /// for `secs`.
    fn write_load(&self, clients: usize, secs: u64) -> Result<writes::Load>;
}

/// The measures of one tool.
#[derive(Debug, Clone)]
pub struct ClusterResult {
    pub label: String,
    pub idle: IdleCpu,
    pub writes: Vec<writes::Load>,
    pub failover: Failover,
    /// `/proc/loadavg`'s 1-minute figure before and after this tool's run.
    pub load_before: f64,
    pub load_after: f64,
}

#[derive(Debug, Clone)]
pub struct IdleCpu {
    pub secs: f64,
    pub ticks: u64,
    /// Each member's share of `ticks`, in member order (the leader's is usually the most).
    pub per_member: Vec<u64>,
    /// Of one core.
    pub percent: f64,
}

#[derive(Debug, Clone)]
pub struct Failover {
    pub samples_ms: Vec<f64>,
    pub summary: Option<Summary>,
}

/// Runs every measure against `cluster`: idle first (a fresh, formed cluster), then writes,
/// then the kills.
pub fn measure(cluster: &mut dyn Cluster, knobs: &Knobs) -> Result<ClusterResult> {
    let label = cluster.label().to_string();
    let load_before = load1();
    agreed_leader(cluster, &[0, 1, 2], Duration::from_secs(60))?;
    eprintln!(
        "herd-bench: {label}: formed; idle CPU over {} s ...",
        knobs.idle_secs
    );
    std::thread::sleep(IDLE_SETTLE);
    let idle = idle_cpu(cluster, knobs.idle_secs)?;
    let mut loads = Vec::new();
    for &clients in &knobs.clients {
        eprintln!(
            "herd-bench: {label}: {clients} writing clients for {} s ...",
            knobs.write_secs
        );
        let load = cluster.write_load(clients, knobs.write_secs)?;
        eprintln!(
            "herd-bench: {label}: {clients} clients: {:.0} writes/s",
            load.per_s()
        );
        loads.push(load);
        // The log the load left is compacted or applied before the next figure.
        std::thread::sleep(Duration::from_secs(2));
    }
    let mut samples_ms = Vec::new();
    for k in 1..=knobs.kills {
        let took = one_failover(cluster)?;
        eprintln!(
            "herd-bench: {label}: kill {k}/{}: new leader agreed in {:.0} ms",
            knobs.kills,
            took.as_secs_f64() * 1000.0
        );
        samples_ms.push(took.as_secs_f64() * 1000.0);
    }
    Ok(ClusterResult {
        label,
        idle,
        writes: loads,
        failover: Failover {
            summary: Summary::of_ms(&samples_ms),
            samples_ms,
        },
        load_before,
        load_after: load1(),
    })
}

/// utime + stime of the three server processes over `secs`, as a share of one core.
fn idle_cpu(cluster: &dyn Cluster, secs: u64) -> Result<IdleCpu> {
    let pids = (0..MEMBERS)
        .map(|i| cluster.pid(i))
        .collect::<Result<Vec<_>>>()?;
    let ticks = |pids: &[u32]| -> Result<Vec<u64>> {
        pids.iter()
            .map(|&p| crate::procfs::stat(p).map(|s| s.cpu_ticks))
            .collect()
    };
    let start = Instant::now();
    let before = ticks(&pids)?;
    std::thread::sleep(Duration::from_secs(secs));
    let after = ticks(&pids)?;
    let secs = start.elapsed().as_secs_f64();
    let per_member: Vec<u64> = after
        .iter()
        .zip(&before)
        .map(|(a, b)| a.saturating_sub(*b))
        .collect();
    let used = per_member.iter().sum::<u64>();
    Ok(IdleCpu {
        secs,
        ticks: used,
        per_member,
        percent: used as f64 / crate::procfs::ticks_per_s() as f64 / secs * 100.0,
    })
}

/// Kills the leader with SIGKILL and times until both survivors' status commands name the
/// same new leader; then restarts the killed member and waits until all three agree again.
fn one_failover(cluster: &mut dyn Cluster) -> Result<Duration> {
    let (old, at) = agreed_leader(cluster, &[0, 1, 2], Duration::from_secs(60))?;
    let pid = cluster.pid(at)?;
    let survivors: Vec<usize> = (0..MEMBERS).filter(|&i| i != at).collect();
    let killed = Instant::now();
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL)
        .map_err(|e| format!("cannot SIGKILL leader pid {pid}: {e}"))?;
    let took = watch_new_leader(&*cluster, &survivors, &old, killed)?;
    if !wait_gone(pid, Duration::from_secs(10)) {
        return Err(format!("killed leader pid {pid} is still alive after 10 s"));
    }
    cluster.restart(at)?;
    agreed_leader(cluster, &[0, 1, 2], Duration::from_secs(60))?;
    std::thread::sleep(REJOIN_SETTLE);
    Ok(took)
}

/// One thread per survivor runs its status command every [`POLL_EVERY`]; the failover is
/// over when the latest answers of all survivors name one leader that is not `old`.
fn watch_new_leader(
    cluster: &dyn Cluster,
    survivors: &[usize],
    old: &str,
    killed: Instant,
) -> Result<Duration> {
    let latest: Mutex<Vec<Option<String>>> = Mutex::new(vec![None; survivors.len()]);
    let done: Mutex<Option<Result<Duration>>> = Mutex::new(None);
    std::thread::scope(|s| {
        for (slot, &member) in survivors.iter().enumerate() {
            let (latest, done) = (&latest, &done);
            s.spawn(move || {
                while lock(done).is_none() {
                    // A status command that fails (no leader yet, a timeout) names none.
                    let seen = cluster.view(member).ok().and_then(|v| v.leader);
                    let mut all = lock(latest);
                    all[slot] = seen;
                    let agreed = all[0].is_some()
                        && all.iter().all(|l| *l == all[0])
                        && all[0].as_deref() != Some(old);
                    let mut done = lock(done);
                    if agreed && done.is_none() {
                        *done = Some(Ok(killed.elapsed()));
                    } else if killed.elapsed() > FAILOVER_LIMIT && done.is_none() {
                        *done = Some(Err(format!(
                            "no new leader agreed by members {survivors:?} within {} s of killing leader {old} (they name {all:?})",
                            FAILOVER_LIMIT.as_secs()
                        )));
                    }
                    drop(done);
                    drop(all);
                    std::thread::sleep(POLL_EVERY);
                }
            });
        }
    });
    lock(&done)
        .take()
        .unwrap_or_else(|| Err("no survivor was polled".to_string()))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Waits until every member in `members` names the same leader, and that leader is one of
/// the three; returns its id and index.
pub fn agreed_leader(
    cluster: &dyn Cluster,
    members: &[usize],
    limit: Duration,
) -> Result<(String, usize)> {
    let deadline = Instant::now() + limit;
    loop {
        let views: Vec<Result<View>> = members.iter().map(|&i| cluster.view(i)).collect();
        if let Some(found) = agreement(&views) {
            return Ok(found);
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{}: members did not agree on a leader within {} s: {views:?}",
                cluster.label(),
                limit.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The leader all views name and its index in `views`, if they all name one of them.
fn agreement(views: &[Result<View>]) -> Option<(String, usize)> {
    let leader = views.first()?.as_ref().ok()?.leader.clone()?;
    let same = views
        .iter()
        .all(|v| v.as_ref().is_ok_and(|v| v.leader.as_ref() == Some(&leader)));
    let at = views
        .iter()
        .position(|v| v.as_ref().is_ok_and(|v| v.me == leader))?;
    same.then_some((leader, at))
}

/// The 1-minute load average (0 if unreadable): the machine is shared, the report says so.
pub fn load1() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// The whole `--cluster` run: herd, then etcd; a tool that cannot be set up is skipped with
/// its reason, the other is still measured.
pub fn run(herd_exe: &std::path::Path, knobs: &Knobs) -> Vec<Outcome> {
    let mut out = Vec::new();
    out.push(outcome("herd", || {
        let mut c = herd::HerdCluster::up(herd_exe)?;
        measure(&mut c, knobs)
    }));
    out.push(outcome("etcd", || {
        let (etcd, etcdctl) = etcd::install()?;
        let mut c = etcd::EtcdCluster::up(&etcd, &etcdctl)?;
        measure(&mut c, knobs)
    }));
    out
}

#[derive(Debug)]
pub enum Outcome {
    Measured(Box<ClusterResult>),
    Failed { tool: String, reason: String },
}

fn outcome(tool: &str, f: impl FnOnce() -> Result<ClusterResult>) -> Outcome {
    match f() {
        Ok(r) => Outcome::Measured(Box::new(r)),
        Err(reason) => {
            eprintln!("herd-bench: cluster: {tool} not measured: {reason}");
            Outcome::Failed {
                tool: tool.to_string(),
                reason,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(me: &str, leader: Option<&str>) -> Result<View> {
        Ok(View {
            me: me.into(),
            leader: leader.map(String::from),
        })
    }

    #[test]
    fn agreement_needs_every_member_to_name_a_member() {
        let all = [
            view("1", Some("2")),
            view("2", Some("2")),
            view("3", Some("2")),
        ];
        assert_eq!(agreement(&all), Some(("2".into(), 1)));
        let split = [
            view("1", Some("2")),
            view("2", Some("3")),
            view("3", Some("3")),
        ];
        assert_eq!(agreement(&split), None);
        let none = [view("1", None), view("2", None)];
        assert_eq!(agreement(&none), None);
        let failed = [view("1", Some("1")), Err("timeout".into())];
        assert_eq!(agreement(&failed), None);
        // Survivors agreeing on a leader that is not among them (the dead one) is no answer.
        let stale = [view("1", Some("3")), view("2", Some("3"))];
        assert_eq!(agreement(&stale), None);
    }
}
