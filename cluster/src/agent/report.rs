//! What the local supervisor tells the agent on every heartbeat: each cluster instance's status
//! and the host's resources. These types are the daemon → cluster seam; their JSON (and the
//! status strings on the wire) are what masters of every version read, so the serialized form
//! must not change.

use std::fmt;
use std::str::FromStr;

use serde::Deserialize;
use serde::Serialize;

/// An instance's status as the supervisor reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InstanceStatus {
    Starting,
    Running,
    Backoff,
    Stopping,
    Stopped,
    Crashed,
}

impl InstanceStatus {
    /// The wire spelling (the `status` string of a heartbeat reply).
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceStatus::Starting => "starting",
            InstanceStatus::Running => "running",
            InstanceStatus::Backoff => "backoff",
            InstanceStatus::Stopping => "stopping",
            InstanceStatus::Stopped => "stopped",
            InstanceStatus::Crashed => "crashed",
        }
    }

    /// A process is (about to be) there: anything but stopped or crashed.
    pub fn is_live(self) -> bool {
        !matches!(self, InstanceStatus::Stopped | InstanceStatus::Crashed)
    }
}

impl fmt::Display for InstanceStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A status string no supervisor sends.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown instance status `{0}`; expected starting, running, backoff, stopping, stopped or crashed"
)]
pub struct UnknownStatus(pub String);

impl FromStr for InstanceStatus {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "starting" => InstanceStatus::Starting,
            "running" => InstanceStatus::Running,
            "backoff" => InstanceStatus::Backoff,
            "stopping" => InstanceStatus::Stopping,
            "stopped" => InstanceStatus::Stopped,
            "crashed" => InstanceStatus::Crashed,
            other => return Err(UnknownStatus(other.to_string())),
        })
    }
}

/// Whether a reported status string means a process is (about to be) there. Masters read the
/// status off the wire as a string; an unknown one counts as live, as it always has.
pub fn status_is_live(status: &str) -> bool {
    status
        .parse::<InstanceStatus>()
        .map_or(true, InstanceStatus::is_live)
}

/// One cluster instance as the local supervisor sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceReport {
    pub app: String,
    pub instance: u32,
    pub status: InstanceStatus,
    pub pid: Option<u32>,
    pub restarts: u32,
}

/// The host's resources, for placement. The field names and number types are the JSON masters
/// parse (`resources_json` in a heartbeat reply); fields are in key order so the bytes match
/// what the daemon sent when it built this with `json!`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    /// An `f64` although hosts sample an `f32`: the reply always carried the widened value
    /// (`33.29999923706055`, not `33.3`).
    pub cpu_percent: f64,
    pub cpus: u32,
    /// The one-minute load average.
    pub load1: f64,
    pub mem_total_bytes: u64,
    pub mem_used_bytes: u64,
}

/// The `resources_json` of a heartbeat reply: `null` with no supervisor attached yet, `{}`
/// before the first host sample, the fields otherwise.
pub(crate) fn resources_json(attached: bool, resources: Option<&Resources>) -> String {
    match (attached, resources) {
        (false, _) => "null".to_string(),
        (true, None) => "{}".to_string(),
        (true, Some(r)) => serde_json::to_string(r).expect("resources serialize"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_serialize_as_the_supervisor_strings() {
        for (status, s) in [
            (InstanceStatus::Starting, "starting"),
            (InstanceStatus::Running, "running"),
            (InstanceStatus::Backoff, "backoff"),
            (InstanceStatus::Stopping, "stopping"),
            (InstanceStatus::Stopped, "stopped"),
            (InstanceStatus::Crashed, "crashed"),
        ] {
            assert_eq!(serde_json::to_string(&status).unwrap(), format!("\"{s}\""));
            assert_eq!(status.as_str(), s);
            assert_eq!(s.parse::<InstanceStatus>(), Ok(status));
        }
        assert!("paused".parse::<InstanceStatus>().is_err());
    }

    #[test]
    fn liveness_is_anything_but_stopped_or_crashed() {
        assert!(status_is_live("running"));
        assert!(status_is_live("backoff"));
        assert!(status_is_live("starting"));
        assert!(status_is_live("stopping"));
        assert!(!status_is_live("stopped"));
        assert!(!status_is_live("crashed"));
        assert!(status_is_live("something-new"));
    }

    #[test]
    fn instance_report_round_trips_todays_json() {
        let today = r#"{"app":"api","instance":2,"status":"backoff","pid":null,"restarts":3}"#;
        let report: InstanceReport = serde_json::from_str(today).unwrap();
        assert_eq!(report.status, InstanceStatus::Backoff);
        assert_eq!(serde_json::to_string(&report).unwrap(), today);
    }

    #[test]
    fn resources_round_trip_todays_json_byte_for_byte() {
        // As the daemon built it with `json!` (sorted keys, an f32 CPU share widened to f64).
        let cpu: f32 = 33.3;
        let today = serde_json::json!({
            "cpu_percent": cpu,
            "cpus": 4,
            "mem_used_bytes": 1000u64,
            "mem_total_bytes": 8000u64,
            "load1": 0.75f64,
        })
        .to_string();
        let r: Resources = serde_json::from_str(&today).unwrap();
        assert_eq!(
            r,
            Resources {
                cpu_percent: f64::from(cpu),
                cpus: 4,
                load1: 0.75,
                mem_total_bytes: 8000,
                mem_used_bytes: 1000,
            }
        );
        assert_eq!(resources_json(true, Some(&r)), today);
        assert_eq!(resources_json(true, None), "{}");
        assert_eq!(resources_json(false, None), "null");
    }
}
