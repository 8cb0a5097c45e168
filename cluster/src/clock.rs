//! The cluster's clock: the only place in `master` and `agent` that reads a clock (the
//! `disallowed_methods` lint, configured in `clippy.toml`, is denied in both). `now()` is tokio's
//! monotonic clock, so a paused test runtime controls every deadline the master and the agent
//! compute. Wall-clock milliseconds for uptime samples and "last seen" are derived from it: one
//! anchor taken when a master term starts, plus tokio time elapsed since. Under a paused tokio
//! clock (tests) wall time therefore advances with virtual time, from any chosen anchor.
#![allow(clippy::disallowed_methods)]

use std::time::SystemTime;
use std::time::UNIX_EPOCH;

use tokio::time::Instant;

/// Now, on tokio's clock (paused and advanced by tests).
pub fn now() -> Instant {
    Instant::now()
}

#[derive(Clone, Copy, Debug)]
pub struct WallClock {
    anchor_ms: u64,
    anchor: Instant,
}

impl WallClock {
    /// Anchored at the system clock now.
    pub fn system() -> WallClock {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        WallClock::at(ms)
    }

    /// Anchored so that "now" is `ms` after the Unix epoch.
    pub fn at(ms: u64) -> WallClock {
        WallClock {
            anchor_ms: ms,
            anchor: Instant::now(),
        }
    }

    pub fn now_ms(&self) -> u64 {
        self.ms_at(Instant::now())
    }

    pub fn ms_at(&self, t: Instant) -> u64 {
        if t >= self.anchor {
            self.anchor_ms + t.duration_since(self.anchor).as_millis() as u64
        } else {
            self.anchor_ms
                .saturating_sub(self.anchor.duration_since(t).as_millis() as u64)
        }
    }
}
