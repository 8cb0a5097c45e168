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

/// Milliseconds on `CLOCK_BOOTTIME`: what durations that outlive the daemon are measured on
/// (uptime, the crash window, a backoff's end). Unlike wall time it never steps, and unlike
/// `CLOCK_MONOTONIC` it counts a suspended host's time and means the same in the next daemon
/// of the same boot (`boot_id` tells the boots apart).
pub fn boot_ms() -> u64 {
    super::lease::BootInstant::now().as_millis()
}

/// This boot's id (`/proc/sys/kernel/random/boot_id`, written by the kernel); None if it
/// cannot be read. Read once.
pub fn boot_id() -> Option<&'static str> {
    static ID: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    ID.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty() && s.len() <= 64)
    })
    .as_deref()
}

/// tokio's monotonic now: what deadlines and timers are measured against.
pub fn monotonic() -> tokio::time::Instant {
    tokio::time::Instant::now()
}

/// std's monotonic now, for measuring intervals outside the runtime's clock (CPU sampling).
pub fn std_instant() -> std::time::Instant {
    std::time::Instant::now()
}
