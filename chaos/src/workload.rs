//! What the cluster runs while it is being broken: replicated apps (one behind an HTTP health
//! check, one held to a zone by a placement constraint), the `on_disconnect = "stop"` singleton
//! whose copies must never overlap, and on every node a local app its supervisor must keep up.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::bail;

use crate::client::Writer;
use crate::history::WriteKind;
use crate::lab::Lab;

/// The singleton's app name; its instance runs as `solo@0`.
pub const SINGLETON: &str = "solo";
/// The local app on every node and its instance count.
pub const LOCAL_APP: &str = "local";
pub const LOCAL_INSTANCES: u32 = 2;

/// (name, desired instances, app file text)
fn apps() -> Vec<(&'static str, u32, String)> {
    vec![
        (
            "web",
            2,
            "[[app]]\nname = \"web\"\ncommand = \"python3\"\nargs = [\"-m\", \"http.server\", \"18080\"]\n\
             instances = 2\nrestart = \"always\"\n\
             [app.placement]\nspread = \"zone\"\nmax_per_node = 1\n\
             [app.health]\nhttp = \"http://127.0.0.1:18080/\"\ninterval_s = 2\ntimeout_s = 1\nfailures = 3\ngrace_s = 5\n"
                .to_string(),
        ),
        (
            "batch",
            2,
            "[[app]]\nname = \"batch\"\ncommand = \"sleep\"\nargs = [\"100000\"]\ninstances = 2\nrestart = \"always\"\n\
             [app.placement]\nconstraints = { zone = \"a\" }\n"
                .to_string(),
        ),
        (
            "worker",
            3,
            "[[app]]\nname = \"worker\"\ncommand = \"sleep\"\nargs = [\"100000\"]\ninstances = 3\nrestart = \"always\"\n"
                .to_string(),
        ),
        (
            SINGLETON,
            1,
            format!(
                "[[app]]\nname = \"{SINGLETON}\"\ncommand = \"sleep\"\nargs = [\"100000\"]\ninstances = 1\n\
                 restart = \"always\"\non_disconnect = \"stop\"\n"
            ),
        ),
    ]
}

/// Deploys every workload app (one file each, so each write is one app), trying each node in
/// turn until one acknowledges.
pub fn deploy(w: &Writer, dir: &Path) -> anyhow::Result<()> {
    for (name, instances, text) in apps() {
        let file = dir.join(format!("{name}.toml"));
        std::fs::write(&file, text)?;
        let acked = (0..3 * w.lab.nodes.len()).any(|attempt| {
            let node = attempt % w.lab.nodes.len() + 1;
            let op = w.write(node, WriteKind::Deploy, name, Some(instances), Some(&file));
            if !op.acked {
                eprintln!(
                    "herd-chaos: deploying `{name}` through node {node} failed: {}",
                    op.error.as_deref().unwrap_or("?")
                );
                std::thread::sleep(Duration::from_millis(500));
            }
            op.acked
        });
        if !acked {
            bail!("the workload app `{name}` could not be deployed through any node");
        }
    }
    Ok(())
}

/// The scheduled cluster job: each run appends `home:tick:trigger` to `ticks.log`.
pub const JOB: &str = "tick";
/// Its period (seconds): a tick every 5 s.
pub const JOB_PERIOD_S: u64 = 5;

/// Deploys the scheduled job through any node that acknowledges (not a recorded write: it is
/// no app, invariant 7 judges it); returns the file its runs append to, or why it could not.
pub fn deploy_job(lab: &Lab, dir: &Path) -> anyhow::Result<std::path::PathBuf> {
    let log = dir.join("ticks.log");
    let file = dir.join("tick.toml");
    std::fs::write(
        &file,
        format!(
            "[[job]]\nname = \"{JOB}\"\ncommand = \"sh\"\nargs = [\"-c\", \"echo $HERD_HOME:$HERD_TICK:$HERD_TRIGGER >> {}\"]\n\
             schedule = \"*/{JOB_PERIOD_S} * * * * *\"\noverlap = \"allow\"\nretry_on_node_loss = true\n",
            log.display()
        ),
    )?;
    let path = file.display().to_string();
    let mut last = String::new();
    for attempt in 0..3 * lab.nodes.len() {
        let node = &lab.nodes[attempt % lab.nodes.len()];
        let out = node.cli(&["cluster", "deploy", &path], Duration::from_secs(20))?;
        if out.ok() {
            return Ok(log);
        }
        last = out.failure();
        std::thread::sleep(Duration::from_millis(500));
    }
    bail!("the scheduled job could not be deployed through any node: {last}")
}

/// Starts the local app on every node; returns what each supervisor must keep running.
pub fn start_local(lab: &Lab) -> anyhow::Result<BTreeMap<usize, BTreeMap<String, u32>>> {
    let mut targets = BTreeMap::new();
    let n = LOCAL_INSTANCES.to_string();
    for node in &lab.nodes {
        let out = node.cli_in_host(
            &[
                "start",
                "--name",
                LOCAL_APP,
                "--instances",
                &n,
                "--restart",
                "always",
                "--",
                "sleep",
                "100000",
            ],
            Duration::from_secs(20),
        )?;
        if !out.ok() {
            bail!(
                "`herd start {LOCAL_APP}` on node {} failed: {}",
                node.index,
                out.failure()
            );
        }
        targets.insert(
            node.index,
            BTreeMap::from([(LOCAL_APP.to_string(), LOCAL_INSTANCES)]),
        );
    }
    Ok(targets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workload_has_replicas_a_constraint_a_health_check_and_one_stop_singleton() {
        let apps = apps();
        assert!(apps.iter().any(|(_, n, _)| *n > 1));
        assert!(apps.iter().any(|(_, _, t)| t.contains("constraints")));
        assert!(apps.iter().any(|(_, _, t)| t.contains("[app.health]")));
        let stops: Vec<_> = apps
            .iter()
            .filter(|(_, _, t)| t.contains("on_disconnect = \"stop\""))
            .collect();
        assert_eq!(stops.len(), 1);
        assert_eq!((stops[0].0, stops[0].1), (SINGLETON, 1));
    }
}
