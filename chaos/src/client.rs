//! A client that keeps writing to the registry through random nodes while faults fly:
//! `herd cluster deploy FILE`, `herd cluster undeploy NAME`, and `herd cluster scale NAME N`
//! when this herd has it. Each write runs inside the chosen node's namespace with its
//! HERD_HOME, and is recorded as acknowledged (exit 0) or failed with the reason.

use std::path::Path;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rand::RngExt;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;

use crate::history::Recorder;
use crate::history::WriteKind;
use crate::history::WriteOp;
use crate::lab::Lab;

/// A write may take this long (elections, forwarding) before it counts as failed.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Beyond this many apps the client prefers undeploying.
const MAX_APPS: usize = 10;

/// Sends registry writes and records them; numbers every write of a run, whoever sends it.
pub struct Writer<'a> {
    pub lab: &'a Lab,
    pub rec: &'a Recorder,
    ids: AtomicU64,
}

impl<'a> Writer<'a> {
    pub fn new(lab: &'a Lab, rec: &'a Recorder) -> Writer<'a> {
        Writer {
            lab,
            rec,
            ids: AtomicU64::new(1),
        }
    }

    /// The id the next write will get.
    fn peek(&self) -> u64 {
        self.ids.load(Ordering::SeqCst)
    }

    /// One registry write through `node`, recorded. `file` is the app file of a deploy.
    pub fn write(
        &self,
        node: usize,
        kind: WriteKind,
        app: &str,
        instances: Option<u32>,
        file: Option<&Path>,
    ) -> WriteOp {
        let id = self.ids.fetch_add(1, Ordering::SeqCst);
        let n = instances.unwrap_or(1).to_string();
        let file = file
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let args: Vec<&str> = match kind {
            WriteKind::Deploy => vec!["cluster", "deploy", &file],
            WriteKind::Undeploy => vec!["cluster", "undeploy", app],
            WriteKind::Scale => vec!["cluster", "scale", app, &n],
        };
        let started_ms = self.rec.now_ms();
        let out = self.lab.node(node).cli_in_host(&args, WRITE_TIMEOUT);
        let ended_ms = self.rec.now_ms();
        let (acked, error) = match out {
            Ok(o) if o.ok() => (true, None),
            Ok(o) => (false, Some(o.failure())),
            Err(e) => (false, Some(format!("{e:#}"))),
        };
        let op = WriteOp {
            id,
            kind,
            app: app.to_string(),
            instances: (kind != WriteKind::Undeploy).then_some(instances.unwrap_or(1)),
            node,
            started_ms,
            ended_ms,
            acked,
            error,
        };
        self.rec.with(|h| h.writes.push(op.clone()));
        op
    }
}

/// An app file with one `sleep` app.
pub fn sleeper_file(dir: &Path, name: &str, instances: u32) -> anyhow::Result<PathBuf> {
    let path = dir.join(format!("{name}-{instances}.toml"));
    std::fs::write(
        &path,
        format!(
            "[[app]]\nname = \"{name}\"\ncommand = \"sleep\"\nargs = [\"100000\"]\ninstances = {instances}\nrestart = \"always\"\n"
        ),
    )?;
    Ok(path)
}

pub struct ClientConfig {
    pub seed: u64,
    pub pause_ms: (u64, u64),
    pub scale: bool,
    pub dir: PathBuf,
}

/// Writes until `stop` is set. Names of new apps are unique (`c<write id>`), so an
/// unacknowledged deploy can only ever be one app.
pub fn run(w: &Writer, stop: &AtomicBool, cfg: &ClientConfig) -> anyhow::Result<()> {
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let mut known: Vec<String> = Vec::new();
    let n = w.lab.nodes.len();
    while !stop.load(Ordering::SeqCst) && !crate::lab::interrupt::requested() {
        let node = rng.random_range(1..=n);
        let roll = rng.random_range(0..100);
        let existing = known.choose(&mut rng).cloned();
        let instances = rng.random_range(1..=3u32);
        match (roll, existing) {
            (r, Some(app)) if r < 25 || known.len() > MAX_APPS => {
                let op = w.write(node, WriteKind::Undeploy, &app, None, None);
                if op.acked {
                    known.retain(|k| k != &app);
                }
            }
            (r, Some(app)) if r < 45 && cfg.scale => {
                w.write(node, WriteKind::Scale, &app, Some(instances), None);
            }
            (r, Some(app)) if r < 60 => {
                let file = sleeper_file(&cfg.dir, &app, instances)?;
                w.write(node, WriteKind::Deploy, &app, Some(instances), Some(&file));
            }
            _ => {
                let app = format!("c{}", w.peek());
                let instances = instances.min(2);
                let file = sleeper_file(&cfg.dir, &app, instances)?;
                w.write(node, WriteKind::Deploy, &app, Some(instances), Some(&file));
                known.push(app);
            }
        }
        let pause = rng.random_range(cfg.pause_ms.0..=cfg.pause_ms.1);
        let end = std::time::Instant::now() + Duration::from_millis(pause);
        while std::time::Instant::now() < end && !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sleeper_file_is_one_app_with_its_count() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = sleeper_file(dir.path(), "c7", 2).expect("written");
        let text = std::fs::read_to_string(f).expect("read");
        assert!(text.contains("name = \"c7\"") && text.contains("instances = 2"));
    }
}
