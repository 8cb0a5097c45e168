//! Running a command with a deadline. A frozen daemon makes its CLI hang, so nothing the suite
//! runs may wait without a limit; on the deadline (or a signal) the command is SIGKILLed.

use std::io::Read;
use std::process::Child;
use std::process::Command;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;
use std::time::Instant;

use anyhow::Context;

use super::interrupt;

/// What a finished (or abandoned) command left.
#[derive(Clone, Debug)]
pub struct Output {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub timed_out: bool,
    pub elapsed: Duration,
}

impl Output {
    pub fn ok(&self) -> bool {
        !self.timed_out && self.code == Some(0)
    }

    /// One line on why it failed, for histories and messages.
    pub fn failure(&self) -> String {
        if self.timed_out {
            return format!("no answer within {:.1} s", self.elapsed.as_secs_f64());
        }
        let text = self.stderr.trim();
        let text = if text.is_empty() {
            self.stdout.trim()
        } else {
            text
        };
        let last = text.lines().last().unwrap_or("").trim();
        match self.code {
            Some(c) => format!("exit {c}: {last}"),
            None => format!("killed by a signal: {last}"),
        }
    }
}

fn drain(pipe: Option<impl Read + Send + 'static>) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    if let Some(mut p) = pipe {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = p.read_to_end(&mut buf);
            let _ = tx.send(String::from_utf8_lossy(&buf).into_owned());
        });
    } else {
        let _ = tx.send(String::new());
    }
    rx
}

/// Runs `cmd` (stdin closed, output captured) for at most `timeout`.
pub fn run(cmd: &mut Command, timeout: Duration) -> anyhow::Result<Output> {
    let started = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run {:?}", cmd.get_program()))?;
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    let (code, timed_out) = wait(&mut child, started, timeout)?;
    // A daemonizing `herd up` hands its pipes to the daemon until it is ready; by the time the
    // command exits it has let go, but never wait long for a straggler.
    let grace = Duration::from_millis(500);
    Ok(Output {
        code,
        stdout: out.recv_timeout(grace).unwrap_or_default(),
        stderr: err.recv_timeout(grace).unwrap_or_default(),
        timed_out,
        elapsed: started.elapsed(),
    })
}

fn wait(
    child: &mut Child,
    started: Instant,
    timeout: Duration,
) -> anyhow::Result<(Option<i32>, bool)> {
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok((status.code(), false));
        }
        if interrupt::requested() {
            let _ = child.kill();
            let _ = child.wait();
            return Err(interrupt::Interrupted.into());
        }
        if started.elapsed() >= timeout {
            let _ = child.kill();
            let _ = child.wait();
            return Ok((None, true));
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quick_command_reports_its_output_and_code() {
        let out = run(
            Command::new("sh").args(["-c", "echo hi; echo oops >&2; exit 3"]),
            Duration::from_secs(5),
        )
        .expect("sh runs");
        assert_eq!(out.code, Some(3));
        assert_eq!(out.stdout.trim(), "hi");
        assert_eq!(out.failure(), "exit 3: oops");
        assert!(!out.ok());
    }

    #[test]
    fn a_hanging_command_is_killed_at_its_deadline() {
        let out =
            run(Command::new("sleep").arg("30"), Duration::from_millis(200)).expect("sleep runs");
        assert!(out.timed_out && !out.ok());
        assert!(out.elapsed < Duration::from_secs(5));
        assert!(out.failure().starts_with("no answer within"));
    }
}
