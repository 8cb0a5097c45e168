//! `[cluster]` in config.toml: what a user writes, checked and turned into the cluster
//! library's `ClusterConfig`. The secret comes from `secret_file` (or `HERD_CLUSTER_SECRET`);
//! a Redis password from the URL or `HERD_REDIS_PASSWORD`, and never appears in `Debug`.

use herd_cluster::tls::CertPair;
use herd_cluster::{ClusterConfig, Discovery, PeerTls};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default = "default_name")]
    pub name: String,
    /// `"auto"` (default: chosen once, kept in `$HERD_HOME/raft/node_id`) or a number.
    #[serde(default)]
    pub node_id: NodeIdSetting,
    /// host:port other nodes use to reach this node.
    #[serde(default)]
    pub advertise: Option<String>,
    #[serde(default = "default_listen")]
    pub listen: String,
    /// `redis://[:password@]host:port/db` or `static:host:port,host:port`.
    #[serde(default)]
    pub discovery: Option<String>,
    #[serde(default = "default_voters")]
    pub voters: usize,
    /// Caught-up learners kept ready to replace a lost voter (default 2); nodes beyond the
    /// voters and standbys are agents.
    #[serde(default)]
    pub standbys: Option<usize>,
    /// `"auto"` (default): a voter or standby when the cluster needs one, an agent otherwise;
    /// `"agent"`: never joins Raft.
    #[serde(default)]
    pub role: Option<String>,
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub heartbeat_ms: Option<u64>,
    #[serde(default)]
    pub election_min_ms: Option<u64>,
    #[serde(default)]
    pub election_max_ms: Option<u64>,
    /// The master's duties (see the README): heartbeat, health sweep, offline timeout, uptime.
    #[serde(default)]
    pub heartbeat_interval_ms: Option<u64>,
    #[serde(default)]
    pub health_sweep_interval_ms: Option<u64>,
    #[serde(default)]
    pub offline_timeout_ms: Option<u64>,
    #[serde(default)]
    pub uptime_bucket_ms: Option<u64>,
    #[serde(default)]
    pub uptime_retention_days: Option<u64>,
    /// How often the master writes its uptime counters to the registry (default: five sweeps,
    /// at most 5 min; at least one sweep).
    #[serde(default)]
    pub uptime_rollup_ms: Option<u64>,
    /// A voter unreachable from the leader this long is replaced by a standby (default 30 s).
    #[serde(default)]
    pub replace_voter_after_ms: Option<u64>,
    /// Mutual TLS between nodes (all three or none): the cluster CA, and this node's
    /// certificate (naming its advertise host) and key, in PEM.
    #[serde(default)]
    pub tls_ca: Option<PathBuf>,
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum NodeIdSetting {
    #[default]
    #[serde(with = "auto")]
    Auto,
    Fixed(u64),
}

mod auto {
    pub fn serialize<S: serde::Serializer>(s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("auto")
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<(), D::Error> {
        let s = <String as serde::Deserialize>::deserialize(d)?;
        if s == "auto" {
            Ok(())
        } else {
            Err(serde::de::Error::custom(format!(
                "node_id `{s}`: use \"auto\" or a number"
            )))
        }
    }
}

fn default_name() -> String {
    "default".into()
}
fn default_listen() -> String {
    "0.0.0.0:9700".into()
}
fn default_voters() -> usize {
    3
}

impl std::fmt::Debug for ClusterSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let discovery = self.discovery.as_deref().map(|d| {
            d.parse::<Discovery>()
                .map(|d| d.to_string())
                .unwrap_or_else(|_| "<invalid>".into())
        });
        f.debug_struct("ClusterSection")
            .field("enabled", &self.enabled)
            .field("name", &self.name)
            .field("node_id", &self.node_id)
            .field("advertise", &self.advertise)
            .field("listen", &self.listen)
            .field("discovery", &discovery)
            .field("voters", &self.voters)
            .field("standbys", &self.standbys)
            .field("role", &self.role)
            .field("secret_file", &self.secret_file)
            .field("labels", &self.labels)
            .field("tls_ca", &self.tls_ca)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .finish()
    }
}

impl ClusterSection {
    /// The library's config. `env` reads `HERD_CLUSTER_SECRET`; `home` holds `raft/`.
    pub fn to_config(
        &self,
        home: &Path,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<ClusterConfig, String> {
        let advertise = self
            .advertise
            .clone()
            .ok_or("[cluster] needs `advertise` (host:port other nodes reach this node at)")?;
        let listen = self
            .listen
            .parse()
            .map_err(|_| format!("[cluster] listen `{}` is not ip:port", self.listen))?;
        let discovery: Discovery = self
            .discovery
            .as_deref()
            .ok_or("[cluster] needs `discovery` (redis://host:port/0 or static:host:port,...)")?
            .parse()
            .map_err(|e| format!("[cluster] {e}"))?;
        let secret = match (&self.secret_file, env("HERD_CLUSTER_SECRET")) {
            (Some(path), _) => std::fs::read_to_string(path)
                .map_err(|e| format!("[cluster] secret_file {}: {e}", path.display()))?
                .trim()
                .to_string(),
            (None, Some(s)) => s,
            (None, None) => return Err(
                "[cluster] needs `secret_file` (or HERD_CLUSTER_SECRET): every node must share it"
                    .into(),
            ),
        };
        let mut cfg = ClusterConfig::new(
            &self.name,
            advertise,
            listen,
            discovery,
            secret,
            home.join("raft"),
        );
        cfg.node_id = match self.node_id {
            NodeIdSetting::Auto => None,
            NodeIdSetting::Fixed(id) => Some(id),
        };
        cfg.voters = self.voters;
        if let Some(v) = self.standbys {
            cfg.standbys = v;
        }
        if let Some(role) = &self.role {
            cfg.role = role.parse().map_err(|e| format!("[cluster] {e}"))?;
        }
        cfg.labels = self.labels.clone();
        if let Some(v) = self.heartbeat_ms {
            cfg.heartbeat_ms = v;
        }
        if let Some(v) = self.election_min_ms {
            cfg.election_min_ms = v;
        }
        if let Some(v) = self.election_max_ms {
            cfg.election_max_ms = v;
        }
        if let Some(v) = self.heartbeat_interval_ms {
            cfg.heartbeat_interval_ms = v;
        }
        if let Some(v) = self.health_sweep_interval_ms {
            cfg.health_sweep_interval_ms = v;
        }
        if let Some(v) = self.offline_timeout_ms {
            cfg.offline_timeout_ms = v;
        }
        if let Some(v) = self.uptime_bucket_ms {
            cfg.uptime_bucket_ms = v;
        }
        if let Some(v) = self.replace_voter_after_ms {
            cfg.replace_voter_after_ms = v;
        }
        if let Some(v) = self.uptime_retention_days {
            cfg.uptime_retention_days = v;
        }
        if self.uptime_rollup_ms.is_some() {
            cfg.uptime_rollup_ms = self.uptime_rollup_ms;
        }
        cfg.tls = self.peer_tls()?;
        cfg.validate().map_err(|e| format!("[cluster] {e}"))?;
        Ok(cfg)
    }

    /// The mutual TLS files, read and checked (the pair parses and belongs together), so a
    /// bad pair fails the start and is refused by a reload, naming the file.
    pub fn peer_tls(&self) -> Result<Option<PeerTls>, String> {
        let read = |key: &str, p: &Path| {
            std::fs::read(p).map_err(|e| {
                format!(
                    "[cluster] {key} {}: {e}; check the path and that the daemon's user can read it",
                    p.display()
                )
            })
        };
        match (&self.tls_ca, &self.tls_cert, &self.tls_key) {
            (None, None, None) => Ok(None),
            (Some(ca), Some(cert), Some(key)) => {
                let tls = PeerTls {
                    ca_pem: read("tls_ca", ca)?,
                    cert_pem: read("tls_cert", cert)?,
                    key_pem: read("tls_key", key)?,
                };
                CertPair::from_pem(&tls.cert_pem, &tls.key_pem)
                    .map_err(|e| format!("[cluster] {}", e.explain(cert, key)))?;
                Ok(Some(tls))
            }
            _ => Err("[cluster] mutual TLS needs all of `tls_ca`, `tls_cert` and `tls_key`".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(text: &str) -> ClusterSection {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn tls_takes_all_three_files_or_none() {
        let dir = tempfile::tempdir().unwrap();
        let pem = dir.path().join("x.pem");
        std::fs::write(&pem, "pem").unwrap();
        let base = "enabled = true\nadvertise = \"127.0.0.1:9700\"\ndiscovery = \"static:127.0.0.1:9700\"\n";
        let env = |k: &str| (k == "HERD_CLUSTER_SECRET").then(|| "s".to_string());
        let p = pem.display();
        let half = section(&format!("{base}tls_ca = \"{p}\"\ntls_cert = \"{p}\"\n"));
        let err = half.to_config(dir.path(), env).unwrap_err();
        assert!(
            err.contains("all of `tls_ca`, `tls_cert` and `tls_key`"),
            "{err}"
        );
        let all = section(&format!(
            "{base}tls_ca = \"{p}\"\ntls_cert = \"{p}\"\ntls_key = \"{p}\"\n"
        ));
        // All three files, but not a certificate and key: refused naming the file.
        let err = all.to_config(dir.path(), env).unwrap_err();
        assert!(
            err.contains(&format!("tls_cert {p}: no usable PEM certificate")),
            "{err}"
        );
        let missing = section(&format!(
            "{base}tls_ca = \"{p}\"\ntls_cert = \"{p}\"\ntls_key = \"/nope\"\n"
        ));
        let err = missing.to_config(dir.path(), env).unwrap_err();
        assert!(err.contains("tls_key /nope"), "{err}");
    }

    #[test]
    fn a_full_section_becomes_a_config() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("cluster.key");
        std::fs::write(&secret, "s3cret\n").unwrap();
        let s = section(&format!(
            "enabled = true\nname = \"prod\"\nnode_id = 7\nadvertise = \"10.0.0.11:9700\"\ndiscovery = \"redis://:pw@10.0.0.5:6379/0\"\nvoters = 5\nsecret_file = \"{}\"\nlabels = {{ zone = \"a\" }}\n",
            secret.display()
        ));
        let c = s.to_config(dir.path(), |_| None).unwrap();
        assert_eq!(
            (c.name.as_str(), c.node_id, c.voters, c.secret.as_str()),
            ("prod", Some(7), 5, "s3cret")
        );
        assert_eq!(c.labels["zone"], "a");
        assert_eq!(c.data_dir, dir.path().join("raft"));
        assert!(
            // The whole credential: a random temp dir name may well hold the letters "pw".
            !format!("{s:?}").contains(":pw@"),
            "the password leaked into Debug: {s:?}"
        );
    }

    #[test]
    fn missing_pieces_are_named() {
        let s = section("enabled = true\nnode_id = \"auto\"\n");
        assert!(
            s.to_config(Path::new("/tmp"), |_| None)
                .unwrap_err()
                .contains("needs `advertise`")
        );
        let s = section(
            "enabled = true\nadvertise = \"127.0.0.1:9700\"\ndiscovery = \"static:127.0.0.1:9700\"\n",
        );
        assert!(
            s.to_config(Path::new("/tmp"), |_| None)
                .unwrap_err()
                .contains("needs `secret_file`")
        );
        assert!(
            s.to_config(Path::new("/tmp"), |k| (k == "HERD_CLUSTER_SECRET")
                .then(|| "x".into()))
                .is_ok()
        );
        assert!(toml::from_str::<ClusterSection>("node_id = \"seven\"\n").is_err());
    }
}
