//! The hidden `child STAMPFILE` mode: the app the restart-latency scenario kills over and
//! over. It appends the wall clock (ns since the UNIX epoch) to STAMPFILE as its very first
//! action, then sleeps until it is killed.

use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub const SUBCOMMAND: &str = "child";

pub fn run() -> ! {
    let now = SystemTime::now();
    let Some(path) = std::env::args_os().nth(2) else {
        eprintln!("usage: herd-bench child STAMPFILE");
        std::process::exit(2);
    };
    let ns = now
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let appended = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        // One write of the whole line, so a reader never sees half of it.
        .and_then(|mut f| f.write_all(format!("{ns}\n").as_bytes()));
    if let Err(e) = appended {
        eprintln!(
            "herd-bench child: cannot append to {}: {e}",
            path.to_string_lossy()
        );
        std::process::exit(1);
    }
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
