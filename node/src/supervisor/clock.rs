//! The supervisor's clocks: the only place in `supervisor/` that reads one (clippy's
//! `disallowed_methods`, configured in `clippy.toml`, is denied for the rest of the module).
//! Wall time for what is recorded (exits, events, `state.json`); tokio's monotonic instant
//! for deadlines and timers, which a test pauses and advances; std's for the CPU sampler.
//! The state machine reads none of them: the runtime hands it the moment (`machine::Ctx`).
#![allow(clippy::disallowed_methods)]

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Microseconds since the Unix epoch (0 if the clock is before it).
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// tokio's monotonic now: what deadlines and timers are measured against.
pub fn monotonic() -> tokio::time::Instant {
    tokio::time::Instant::now()
}

/// std's monotonic now, for measuring intervals outside the runtime's clock (CPU sampling).
pub fn std_instant() -> std::time::Instant {
    std::time::Instant::now()
}
