//! The churn scenario: does the daemon's memory stay flat while apps crash, restart and
//! scale for a long time? [`APPS`] apps: [`CRASHERS`] crash-loop (`sh -c 'sleep 0.5; exit 1'`,
//! restarted always, 100 ms to 1 s backoff, no crash limit), one runs 3 instances of
//! `sleep 100000` and the rest one instance each. Every second the bench runs one
//! `herd restart` of a random single-instance app and one `herd scale` of the 3-instance app
//! to a random other count between 1 and 5. Every [`SAMPLE_EVERY`] it reads the daemon's
//! memory; the result is the RSS series and its least-squares slope.

use crate::error::Result;
use crate::herd::{Herd, Instance, status_counts};
use crate::idle::{Cpu, Mark};
use crate::procfs::{Memory, memory};
use crate::stats::{Summary, ms};
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub const APPS: usize = 100;
pub const CRASHERS: usize = 20;
const SLEEPERS: usize = APPS - CRASHERS - 1;
const SCALED: &str = "scaled";
pub const SAMPLE_EVERY: u64 = 10;

pub struct ChurnResult {
    pub secs: u64,
    /// `(seconds since the churn began, daemon memory)`, every [`SAMPLE_EVERY`] s.
    pub samples: Vec<(f64, Memory)>,
    pub rss_slope_kib_per_h: f64,
    /// The same over the second half of the samples only: a warm-up (allocator arenas,
    /// buffers reaching their working size) shows in the whole slope but not here; a leak
    /// shows in both.
    pub rss_slope_second_half_kib_per_h: f64,
    /// The same two slopes for the anonymous RSS.
    pub anon_slope_kib_per_h: f64,
    pub anon_slope_second_half_kib_per_h: f64,
    /// Samples whose PSS is under 70 % of the median PSS. PSS is not fitted: most of the
    /// daemon's RSS is its executable's pages, so its PSS halves whenever another process maps
    /// the same file (another herd daemon or CLI on the machine, or a just-forked child that
    /// has not yet `exec`ed).
    pub pss_dips: usize,
    /// Sum of `restarts` over `herd ps --json` at the end: the crash-loop restarts herd did.
    pub restarts_sum: u64,
    pub cli_restarts: Ops,
    pub cli_scales: Ops,
    /// The daemon's CPU over the whole churn.
    pub cpu: Cpu,
    /// `herd ps` at the end, e.g. "83 running, 2 backoff".
    pub end_status: String,
    /// The instances of the scaled app at the end, and the count last asked for.
    pub scaled_end: (usize, u32),
    pub seed: u64,
}

/// The bench's own `herd restart` or `herd scale` calls.
#[derive(Default)]
pub struct Ops {
    pub ok: u64,
    pub failed: u64,
    pub first_error: Option<String>,
    pub took_ms: Vec<f64>,
}

impl Ops {
    fn record(&mut self, outcome: Result<Duration>) {
        match outcome {
            Ok(took) => {
                self.ok += 1;
                self.took_ms.push(ms(took));
            }
            Err(e) => {
                self.failed += 1;
                self.first_error.get_or_insert(e);
            }
        }
    }

    pub fn summary(&self) -> Option<Summary> {
        Summary::of_ms(&self.took_ms)
    }
}

pub fn churn(herd_exe: &Path, secs: u64) -> Result<ChurnResult> {
    let herd = Herd::up(herd_exe)?;
    let file = herd.home().join("churn.toml");
    std::fs::write(&file, app_file())
        .map_err(|e| format!("cannot write {}: {e}", file.display()))?;
    herd.run(["start", &file.to_string_lossy()])?;
    herd.wait_for(
        &format!("the {SLEEPERS} single apps and 3 `{SCALED}` instances to run"),
        |rows| steady_ones(rows) == SLEEPERS + 3,
    )?;
    let pid = herd.daemon_pid()?;

    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
        | 1;
    let mut rng = XorShift(seed);
    let mut scale = 3u32;
    let mut cli_restarts = Ops::default();
    let mut cli_scales = Ops::default();

    let first = Mark::now(&[pid])?;
    let t0 = Instant::now();
    let mut samples = vec![(0.0, first.memory)];
    for tick in 1..=secs {
        let app = format!("s{}", rng.below(SLEEPERS as u64));
        cli_restarts.record(herd.time(["restart", &app]));
        scale = other_count(&mut rng, scale);
        cli_scales.record(herd.time(["scale", SCALED, &scale.to_string()]));
        if tick % SAMPLE_EVERY == 0 {
            // Gone means the daemon died: that ends the run with the reason.
            let mem = memory(pid)
                .map_err(|e| format!("the daemon (pid {pid}) after {tick} s of churn: {e}"))?;
            samples.push((t0.elapsed().as_secs_f64(), mem));
            eprintln!(
                "herd-bench: churn {tick}/{secs} s: daemon RSS {} KiB (anon {} KiB), PSS {} KiB, {} fds, {} threads",
                mem.rss_kib, mem.anon_kib, mem.pss_kib, mem.open_fds, mem.threads
            );
        }
        // Paced from the start, so slow commands do not stretch the run.
        let next = t0 + Duration::from_secs(tick);
        if let Some(wait) = next.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
    let last = Mark::now(&[pid])?;
    let cpu = last.cpu_since(&first);

    let rows = herd.ps()?;
    let restarts_sum = rows.iter().map(|r| r.restarts).sum();
    let scaled_end = rows.iter().filter(|r| r.name == SCALED).count();
    herd.down()?;
    let rss: Vec<(f64, f64)> = samples
        .iter()
        .map(|(t, m)| (*t, m.rss_kib as f64))
        .collect();
    let anon: Vec<(f64, f64)> = samples
        .iter()
        .map(|(t, m)| (*t, m.anon_kib as f64))
        .collect();
    Ok(ChurnResult {
        secs,
        rss_slope_kib_per_h: slope(&rss) * 3600.0,
        rss_slope_second_half_kib_per_h: slope(&rss[rss.len() / 2..]) * 3600.0,
        anon_slope_kib_per_h: slope(&anon) * 3600.0,
        anon_slope_second_half_kib_per_h: slope(&anon[anon.len() / 2..]) * 3600.0,
        pss_dips: dips(&samples.iter().map(|s| s.1.pss_kib).collect::<Vec<_>>()),
        samples,
        restarts_sum,
        cli_restarts,
        cli_scales,
        cpu,
        end_status: status_counts(&rows),
        scaled_end: (scaled_end, scale),
        seed,
    })
}

/// Running instances of the apps that do not crash.
fn steady_ones(rows: &[Instance]) -> usize {
    rows.iter()
        .filter(|r| !r.name.starts_with('c') && r.status == "running")
        .count()
}

fn app_file() -> String {
    let mut text = String::new();
    for i in 0..SLEEPERS {
        text += &format!("[[app]]\nname = \"s{i}\"\ncommand = \"sleep\"\nargs = [\"100000\"]\n\n");
    }
    text += &format!(
        "[[app]]\nname = \"{SCALED}\"\ncommand = \"sleep\"\nargs = [\"100000\"]\ninstances = 3\n\n"
    );
    for i in 0..CRASHERS {
        text += &format!(
            "[[app]]\nname = \"c{i}\"\ncommand = \"sh\"\nargs = [\"-c\", \"sleep 0.5; exit 1\"]\n\
             restart = \"always\"\nbackoff_initial_ms = 100\nbackoff_max_ms = 1000\n\
             max_restarts = 1000000\nrestart_window_s = 1\n\n"
        );
    }
    text
}

/// How many values are under 70 % of the median.
fn dips(values: &[u64]) -> usize {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let Some(&median) = sorted.get(sorted.len() / 2) else {
        return 0;
    };
    values.iter().filter(|v| **v * 10 < median * 7).count()
}

/// A count from 1 to 5 other than `now`.
fn other_count(rng: &mut XorShift, now: u32) -> u32 {
    let pick = 1 + rng.below(4) as u32;
    if pick >= now { pick + 1 } else { pick }
}

/// The least-squares slope of `y` over `x` (0 for fewer than two distinct `x`).
pub fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if points.len() < 2 {
        return 0.0;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    if sxx == 0.0 { 0.0 } else { sxy / sxx }
}

/// Marsaglia's xorshift64: enough to pick apps; the seed is reported.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform enough in `0..n` for n far below 2^64.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slope_of_a_line_and_of_noise() {
        let line: Vec<(f64, f64)> = (0..10).map(|i| (i as f64, 3.0 * i as f64 + 7.0)).collect();
        assert!((slope(&line) - 3.0).abs() < 1e-9);
        assert_eq!(slope(&[(1.0, 5.0)]), 0.0);
        assert_eq!(slope(&[(1.0, 5.0), (1.0, 6.0)]), 0.0);
    }

    #[test]
    fn dips_are_counted_against_the_median() {
        assert_eq!(dips(&[12_000, 5_800, 12_100, 12_200, 6_000]), 2);
        assert_eq!(dips(&[]), 0);
    }

    #[test]
    fn other_count_is_always_another_in_range() {
        let mut rng = XorShift(12345);
        let mut seen = [false; 6];
        let mut now = 3;
        for _ in 0..1000 {
            let next = other_count(&mut rng, now);
            assert!((1..=5).contains(&next) && next != now);
            seen[next as usize] = true;
            now = next;
        }
        assert_eq!(seen, [false, true, true, true, true, true]);
    }

    #[test]
    fn app_file_has_every_app() {
        let text = app_file();
        assert_eq!(text.matches("[[app]]").count(), APPS);
        assert_eq!(text.matches("exit 1").count(), CRASHERS);
        assert_eq!(text.matches("instances = 3").count(), 1);
    }
}
