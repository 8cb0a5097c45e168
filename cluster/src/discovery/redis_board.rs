//! Redis as a notice board for forming a cluster — never for liveness.
//!
//! Keys, all under `herd:{cluster}:`:
//! - `node:{id}` → JSON [`Announcement`], `SET … EX ttl`, refreshed every 2 s;
//! - `bootstrap` → a random token, `SET … NX PX 15000`: who may initialize the Raft group now;
//! - `cluster-id` → JSON [`ClusterIdRecord`], written once with `NX` and never expired: its
//!   presence says "this cluster was formed; join it, never bootstrap it again".

use std::time::Duration;

use redis::IntoConnectionInfo;
use redis::aio::ConnectionManager;
use redis::aio::ConnectionManagerConfig;
use serde::Deserialize;
use serde::Serialize;

use super::Announcement;
use super::DiscoveryError;
use super::RedisTarget;

use crate::NodeId;

/// How long the bootstrap lock lives if its holder dies.
pub const BOOTSTRAP_LOCK_MS: u64 = 15_000;

const RELEASE_IF_OWNER: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
else
  return 0
end
"#;

/// The permanent record of a formed cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterIdRecord {
    pub cluster_id: String,
    /// The node that was chosen to initialize the Raft group.
    pub bootstrapper: NodeId,
}

/// Connection to the Redis board of one cluster. Connects lazily and reconnects by itself, so a
/// node starts even while Redis is down.
#[derive(Clone)]
pub struct RedisBoard {
    conn: ConnectionManager,
    prefix: String,
    /// `host:port/db`, for error messages (no password).
    endpoint: String,
}

impl RedisBoard {
    pub fn new(target: &RedisTarget, cluster: &str) -> Result<RedisBoard, DiscoveryError> {
        let endpoint = target.endpoint();
        let fail = |e: redis::RedisError| DiscoveryError::Redis {
            target: endpoint.clone(),
            message: e.to_string(),
        };
        let base = redis::ConnectionAddr::Tcp(target.host.clone(), target.port)
            .into_connection_info()
            .map_err(fail)?;
        let mut settings = base.redis_settings().clone().set_db(target.db);
        if let Some(user) = &target.username {
            settings = settings.set_username(user);
        }
        if let Some(pw) = target.effective_password() {
            settings = settings.set_password(pw);
        }
        let info = base.set_redis_settings(settings);
        let client = redis::Client::open(info).map_err(fail)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(Duration::from_secs(1)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_secs(2));
        let conn = ConnectionManager::new_lazy_with_config(client, config).map_err(fail)?;
        Ok(RedisBoard {
            conn,
            prefix: format!("herd:{cluster}:"),
            endpoint,
        })
    }

    fn err(&self, e: redis::RedisError) -> DiscoveryError {
        DiscoveryError::Redis {
            target: self.endpoint.clone(),
            message: e.to_string(),
        }
    }

    fn node_key(&self, id: NodeId) -> String {
        format!("{}node:{id}", self.prefix)
    }

    /// Publishes (or refreshes) this node's announcement for `ttl`.
    pub async fn announce(&self, a: &Announcement, ttl: Duration) -> Result<(), DiscoveryError> {
        let json = serde_json::to_string(a).map_err(|e| DiscoveryError::Redis {
            target: self.endpoint.clone(),
            message: format!("encode announcement: {e}"),
        })?;
        let mut conn = self.conn.clone();
        redis::cmd("SET")
            .arg(self.node_key(a.id))
            .arg(json)
            .arg("EX")
            .arg(ttl.as_secs().max(1))
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| self.err(e))
    }

    /// Removes this node's announcement (on leave).
    pub async fn withdraw(&self, id: NodeId) -> Result<(), DiscoveryError> {
        let mut conn = self.conn.clone();
        redis::cmd("DEL")
            .arg(self.node_key(id))
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| self.err(e))
    }

    /// Every node currently announced in this cluster.
    pub async fn peers(&self) -> Result<Vec<Announcement>, DiscoveryError> {
        let mut conn = self.conn.clone();
        let pattern = format!("{}node:*", self.prefix);
        let mut keys = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(200)
                .query_async(&mut conn)
                .await
                .map_err(|e| self.err(e))?;
            keys.extend(batch);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let values: Vec<Option<String>> = redis::cmd("MGET")
            .arg(&keys)
            .query_async(&mut conn)
            .await
            .map_err(|e| self.err(e))?;
        // A malformed entry (another version, manual edits) is skipped, not fatal.
        Ok(values
            .into_iter()
            .flatten()
            .filter_map(|v| serde_json::from_str(&v).ok())
            .collect())
    }

    /// Tries to take the bootstrap lock with `token`; true if taken.
    pub async fn try_lock_bootstrap(&self, token: &str) -> Result<bool, DiscoveryError> {
        let mut conn = self.conn.clone();
        let set: Option<String> = redis::cmd("SET")
            .arg(format!("{}bootstrap", self.prefix))
            .arg(token)
            .arg("NX")
            .arg("PX")
            .arg(BOOTSTRAP_LOCK_MS)
            .query_async(&mut conn)
            .await
            .map_err(|e| self.err(e))?;
        Ok(set.is_some())
    }

    /// Releases the bootstrap lock if `token` still owns it.
    pub async fn release_bootstrap(&self, token: &str) -> Result<bool, DiscoveryError> {
        let mut conn = self.conn.clone();
        let deleted: i64 = redis::Script::new(RELEASE_IF_OWNER)
            .key(format!("{}bootstrap", self.prefix))
            .arg(token)
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.err(e))?;
        Ok(deleted == 1)
    }

    /// How long the Redis server has been up (`INFO server`); `None` where INFO is not
    /// allowed or does not say.
    pub async fn uptime(&self) -> Result<Option<Duration>, DiscoveryError> {
        let mut conn = self.conn.clone();
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query_async(&mut conn)
            .await
            .map_err(|e| self.err(e))?;
        Ok(parse_uptime(&info))
    }

    /// The cluster's permanent id record, if the cluster was ever formed.
    pub async fn cluster_id(&self) -> Result<Option<ClusterIdRecord>, DiscoveryError> {
        let mut conn = self.conn.clone();
        let v: Option<String> = redis::cmd("GET")
            .arg(format!("{}cluster-id", self.prefix))
            .query_async(&mut conn)
            .await
            .map_err(|e| self.err(e))?;
        Ok(v.and_then(|v| serde_json::from_str(&v).ok()))
    }

    /// Writes the cluster id record unless one exists; true if this call wrote it.
    pub async fn claim_cluster_id(&self, record: &ClusterIdRecord) -> Result<bool, DiscoveryError> {
        let json = serde_json::to_string(record).map_err(|e| DiscoveryError::Redis {
            target: self.endpoint.clone(),
            message: format!("encode cluster id: {e}"),
        })?;
        let mut conn = self.conn.clone();
        let set: Option<String> = redis::cmd("SET")
            .arg(format!("{}cluster-id", self.prefix))
            .arg(json)
            .arg("NX")
            .query_async(&mut conn)
            .await
            .map_err(|e| self.err(e))?;
        Ok(set.is_some())
    }
}

fn parse_uptime(info: &str) -> Option<Duration> {
    info.lines()
        .find_map(|l| l.strip_prefix("uptime_in_seconds:"))
        .and_then(|v| v.trim().parse().ok())
        .map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptime_comes_from_the_server_section() {
        let info =
            "# Server\r\nredis_version:7.0.15\r\nuptime_in_seconds:42\r\nuptime_in_days:0\r\n";
        assert_eq!(parse_uptime(info), Some(Duration::from_secs(42)));
        assert_eq!(parse_uptime("# Server\r\n"), None);
    }
}
