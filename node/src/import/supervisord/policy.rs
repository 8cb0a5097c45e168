//! How a program restarts and stops, in herd's keys: `autorestart`/`exitcodes` as the
//! policy, supervisord's start checks (`startsecs`, `startretries`, retry delays of 1 s, 2 s,
//! 3 s...) as the backoff and crash limit, `stopsignal`/`stopwaitsecs` as the stop.

use super::files::Located;
use super::{boolean, int};
use crate::import::{Draft, Import, crash_window_s};
use crate::supervisor::backoff::Backoff;
use std::time::Duration;

/// supervisord's defaults (supervisor/options.py).
const START_RETRIES: u32 = 3;
const START_SECS: u64 = 1;

/// autorestart/exitcodes, startretries/startsecs as herd's policy, backoff and crash limit.
pub(super) fn restart(d: &mut Draft, s: &Located) -> anyhow::Result<()> {
    let sec = &s.section;
    let exitcodes: Vec<i64> = match sec.get("exitcodes") {
        Some(v) => v
            .split(',')
            .map(|c| int(s, "exitcodes", c))
            .collect::<anyhow::Result<_>>()?,
        None => vec![0],
    };
    match sec
        .get("autorestart")
        .map(|v| v.trim().to_ascii_lowercase())
        .as_deref()
    {
        None | Some("unexpected") if exitcodes == [0] => {
            d.set("restart", "on-failure", "autorestart")
                .note("supervisord autorestart = unexpected, exitcodes = 0");
        }
        None | Some("unexpected") => {
            d.set("restart", "always", "autorestart")
                .note("supervisord autorestart = unexpected: any exit but exitcodes");
            d.set(
                "stop_exit_codes",
                toml::Value::Array(exitcodes.iter().map(|c| (*c).into()).collect()),
                "exitcodes",
            );
        }
        Some(v) => {
            let policy = if boolean(s, "autorestart", v)? {
                "always"
            } else {
                "never"
            };
            d.set("restart", policy, "autorestart");
            if policy == "never" {
                return Ok(());
            }
        }
    }
    let retries = match sec.get("startretries") {
        Some(v) => u32::try_from(int(s, "startretries", v)?.max(0)).unwrap_or(u32::MAX),
        None => START_RETRIES,
    };
    let startsecs = match sec.get("startsecs") {
        Some(v) => u64::try_from(int(s, "startsecs", v)?.max(0)).unwrap_or(0),
        None => START_SECS,
    };
    // supervisord waits 1 s, 2 s, 3 s... between start attempts; herd doubles from 1 s, so
    // cap it at supervisord's last delay.
    let initial = Duration::from_secs(1);
    let max = Duration::from_secs(u64::from(retries.max(1)));
    d.set(
        "backoff_initial_ms",
        initial.as_millis() as i64,
        "startretries",
    )
    .note("supervisord waits 1 s, 2 s, 3 s... between attempts");
    d.set("backoff_max_ms", max.as_millis() as i64, "startretries");
    d.set("max_restarts", i64::from(retries), "startretries");
    let window = crash_window_s(
        retries,
        Duration::from_secs(startsecs),
        Backoff::new(initial, max),
    );
    d.set("restart_window_s", window as i64, "startsecs")
        .note(format!(
            "{retries} retries of runs under supervisord's startsecs {startsecs} s fit in it"
        ));
    Ok(())
}

/// stopsignal, stopwaitsecs, stopasgroup/killasgroup. `report` is false for the second and
/// later apps of a program, whose keys were reported with the first.
pub(super) fn stop(
    d: &mut Draft,
    imp: &mut Import,
    s: &Located,
    origin: &str,
    report: bool,
) -> anyhow::Result<()> {
    let sec = &s.section;
    if let Some(sig) = sec.get("stopsignal") {
        let sig = sig.trim().to_ascii_uppercase();
        let sig = if sig.starts_with("SIG") {
            sig
        } else {
            format!("SIG{sig}")
        };
        d.set("stop_signal", sig, "stopsignal");
    }
    if let Some(v) = sec.get("stopwaitsecs") {
        d.set(
            "stop_timeout_s",
            int(s, "stopwaitsecs", v)?.max(0),
            "stopwaitsecs",
        );
    }
    for key in ["stopasgroup", "killasgroup"] {
        if let Some(v) = sec.get(key)
            && !boolean(s, key, v)?
            && report
        {
            imp.skip(
                origin,
                key,
                "herd always signals the whole process group (so no child outlives a stop)",
            );
        }
    }
    Ok(())
}
