//! PM2's restart behaviour as herd's: policy, delays and the crash limit, written out in full
//! with PM2's defaults, so an app restarts under herd as it did under PM2.

use super::Keys;
use super::values::millis;
use crate::import::{Draft, crash_window_s};
use crate::supervisor::backoff::Backoff;
use serde_json::Value;
use std::time::Duration;

/// PM2's defaults (lib/API/schema.json).
const MAX_RESTARTS: u32 = 16;
const MIN_UPTIME: Duration = Duration::from_millis(1000);
/// PM2 caps `exp_backoff_restart_delay` growth at 15 s.
const EXP_BACKOFF_MAX_MS: u64 = 15_000;

/// autorestart, stop_exit_codes, max_restarts, min_uptime, restart_delay,
/// exp_backoff_restart_delay: written out in full, PM2's defaults included.
pub(super) fn restart(
    d: &mut Draft,
    keys: &Keys,
    bad: impl Fn(&str, &str) -> anyhow::Error,
) -> anyhow::Result<()> {
    let take = |key: &str| keys.take(key);
    let autorestart = match take("autorestart") {
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(bad("autorestart", "must be true or false")),
        None => true,
    };
    if let Some(v) = take("stop_exit_codes") {
        let codes: Option<Vec<toml::Value>> = match v {
            Value::Array(a) => a.iter().map(|c| c.as_i64().map(Into::into)).collect(),
            Value::Number(n) => n.as_i64().map(|c| vec![c.into()]),
            _ => None,
        };
        let codes = codes.ok_or_else(|| bad("stop_exit_codes", "must be exit codes"))?;
        d.set(
            "stop_exit_codes",
            toml::Value::Array(codes),
            "stop_exit_codes",
        );
    }
    let max_restarts = take("max_restarts");
    let min_uptime = take("min_uptime");
    let restart_delay = take("restart_delay");
    let exp = take("exp_backoff_restart_delay");
    if !autorestart {
        d.set("restart", "never", "autorestart");
        return Ok(());
    }
    d.set("restart", "always", "autorestart")
        .note("pm2 restarts after any exit");
    let (initial, max, note) = match (exp, restart_delay) {
        (Some(v), _) => {
            let ms = millis(v)
                .ok_or_else(|| bad("exp_backoff_restart_delay", "must be milliseconds"))?;
            (
                ms,
                ms.max(EXP_BACKOFF_MAX_MS),
                "pm2 exp_backoff_restart_delay (pm2 grows it 1.5x up to 15 s, herd doubles it)",
            )
        }
        (None, Some(v)) => {
            let ms = millis(v).ok_or_else(|| bad("restart_delay", "must be milliseconds"))?;
            (ms, ms, "pm2 restart_delay: a fixed delay")
        }
        (None, None) => (0, 0, "pm2 restarts at once"),
    };
    d.set("backoff_initial_ms", initial as i64, "restart_delay")
        .note(note);
    d.set("backoff_max_ms", max as i64, "restart_delay");
    let restarts = match max_restarts {
        Some(v) => u32::try_from(
            v.as_u64()
                .ok_or_else(|| bad("max_restarts", "must be a number"))?,
        )
        .unwrap_or(u32::MAX),
        None => MAX_RESTARTS,
    };
    let uptime = match min_uptime {
        Some(v) => Duration::from_millis(
            millis(v).ok_or_else(|| bad("min_uptime", "must be milliseconds or like \"5s\""))?,
        ),
        None => MIN_UPTIME,
    };
    let backoff = Backoff::new(Duration::from_millis(initial), Duration::from_millis(max));
    d.set("max_restarts", i64::from(restarts), "max_restarts");
    d.set(
        "restart_window_s",
        crash_window_s(restarts, uptime, backoff) as i64,
        "min_uptime",
    )
    .note(format!(
        "{restarts} restarts of runs under pm2's min_uptime {} ms fit in it",
        uptime.as_millis()
    ));
    Ok(())
}
