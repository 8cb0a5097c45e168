//! SIGINT, SIGTERM and SIGHUP only raise a flag; every wait in the suite polls it and unwinds,
//! so the lab's `Drop` always runs its cleanup on the main thread. While cleaning up, the flag
//! is ignored: a second Ctrl-C must not leave half a lab behind.

use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

use nix::sys::signal::SaFlags;
use nix::sys::signal::SigAction;
use nix::sys::signal::SigHandler;
use nix::sys::signal::SigSet;
use nix::sys::signal::Signal;
use nix::sys::signal::sigaction;

static REQUESTED: AtomicBool = AtomicBool::new(false);
static CLEANING: AtomicBool = AtomicBool::new(false);

/// The run was interrupted by a signal; the lab cleans up as this error unwinds.
#[derive(Debug)]
pub struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted by a signal")
    }
}

impl std::error::Error for Interrupted {}

extern "C" fn on_signal(_: nix::libc::c_int) {
    REQUESTED.store(true, Ordering::SeqCst);
}

pub fn install() -> anyhow::Result<()> {
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { sigaction(sig, &action) }?;
    }
    Ok(())
}

/// A signal arrived (and we are not already cleaning up).
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst) && !CLEANING.load(Ordering::SeqCst)
}

pub fn was_requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}

/// From now on waits no longer give up on a signal: cleanup must finish.
pub fn start_cleaning() {
    CLEANING.store(true, Ordering::SeqCst);
}

pub fn check() -> anyhow::Result<()> {
    if requested() {
        Err(Interrupted.into())
    } else {
        Ok(())
    }
}

/// Sleeps `d`, waking early (with `Interrupted`) on a signal.
pub fn sleep(d: Duration) -> anyhow::Result<()> {
    let end = Instant::now() + d;
    loop {
        check()?;
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
}
