//! How a node finds its peers before it belongs to a Raft group: a Redis announcement board
//! (`redis://`) or a fixed seed list (`static:`). Discovery is only for forming and joining;
//! once a node is a member, the Raft membership is the truth and discovery may be down.

mod redis_board;

use std::fmt;
use std::str::FromStr;

use serde::Deserialize;
use serde::Serialize;

use crate::NodeId;

pub use redis_board::ClusterIdRecord;
pub use redis_board::RedisBoard;

/// Where to find peers. `Display`/`Debug` never show a password.
#[derive(Clone, PartialEq, Eq)]
pub enum Discovery {
    Redis(RedisTarget),
    /// Seed addresses (host:port) of cluster nodes.
    Static {
        seeds: Vec<String>,
    },
}

/// A Redis server to announce on.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisTarget {
    pub host: String,
    pub port: u16,
    pub db: i64,
    pub username: Option<String>,
    /// From the URL; when absent, `HERD_REDIS_PASSWORD` is used at connect time.
    pub password: Option<String>,
}

/// What a node announces about itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announcement {
    pub id: NodeId,
    pub advertise: String,
    pub version: String,
}

#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("discovery `{input}`: {reason}")]
    Parse { input: String, reason: String },
    #[error("redis at {target}: {message}")]
    Redis { target: String, message: String },
}

impl FromStr for Discovery {
    type Err = DiscoveryError;

    /// Parses `redis://[[user]:password@]host[:port][/db]` or `static:host:port[,host:port...]`.
    fn from_str(input: &str) -> Result<Discovery, DiscoveryError> {
        let fail = |reason: &str| DiscoveryError::Parse {
            input: redact_input(input),
            reason: reason.to_string(),
        };
        let input = input.trim();
        if let Some(rest) = input.strip_prefix("static:") {
            let seeds: Vec<String> = rest
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect();
            if seeds.is_empty() {
                return Err(fail(
                    "no seed addresses; expected static:host:port,host:port",
                ));
            }
            for s in &seeds {
                if split_host_port(s).is_none() {
                    return Err(fail(&format!("seed `{s}` is not host:port")));
                }
            }
            return Ok(Discovery::Static { seeds });
        }
        let Some(rest) = input.strip_prefix("redis://") else {
            return Err(fail(
                "expected redis://[:password@]host:port/db or static:host:port,...",
            ));
        };
        let (auth, hostpart) = match rest.rsplit_once('@') {
            Some((auth, host)) => (Some(auth), host),
            None => (None, rest),
        };
        let (username, password) = match auth {
            None => (None, None),
            Some(a) => match a.split_once(':') {
                Some((u, p)) => (non_empty(u), non_empty(p)),
                None => (non_empty(a), None),
            },
        };
        let (hostport, db) = match hostpart.split_once('/') {
            Some((hp, "")) => (hp, 0),
            Some((hp, db)) => (
                hp,
                db.parse()
                    .map_err(|_| fail(&format!("database `{db}` is not a number")))?,
            ),
            None => (hostpart, 0),
        };
        let (host, port) = if hostport.contains(':') {
            split_host_port(hostport).ok_or_else(|| fail("expected host:port"))?
        } else {
            (hostport.to_string(), 6379)
        };
        if host.is_empty() {
            return Err(fail("missing host"));
        }
        Ok(Discovery::Redis(RedisTarget {
            host,
            port,
            db,
            username,
            password,
        }))
    }
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

/// `host:port` (IPv6 hosts in brackets) with a numeric port.
pub(crate) fn split_host_port(s: &str) -> Option<(String, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (!host.is_empty()).then(|| (host.to_string(), port))
}

/// Hides anything between `redis://` and `@`, for error messages about unparsable input.
fn redact_input(input: &str) -> String {
    match (input.find("://"), input.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}***{}", &input[..s + 3], &input[at..]),
        _ => input.to_string(),
    }
}

impl RedisTarget {
    /// The password to authenticate with: the URL's, else `HERD_REDIS_PASSWORD`.
    pub(crate) fn effective_password(&self) -> Option<String> {
        self.password.clone().or_else(|| {
            std::env::var("HERD_REDIS_PASSWORD")
                .ok()
                .filter(|p| !p.is_empty())
        })
    }

    /// `host:port/db`, safe to log.
    pub fn endpoint(&self) -> String {
        format!("{}:{}/{}", self.host, self.port, self.db)
    }
}

impl fmt::Display for RedisTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let user = self.username.as_deref().unwrap_or("");
        if self.password.is_some() {
            write!(f, "redis://{user}:***@{}", self.endpoint())
        } else if !user.is_empty() {
            write!(f, "redis://{user}@{}", self.endpoint())
        } else {
            write!(f, "redis://{}", self.endpoint())
        }
    }
}

impl fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisTarget({self})")
    }
}

impl fmt::Display for Discovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Discovery::Redis(t) => t.fmt(f),
            Discovery::Static { seeds } => write!(f, "static:{}", seeds.join(",")),
        }
    }
}

impl fmt::Debug for Discovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Discovery({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redis(s: &str) -> RedisTarget {
        match s.parse::<Discovery>().expect("parses") {
            Discovery::Redis(t) => t,
            other => panic!("expected redis, got {other}"),
        }
    }

    #[test]
    fn parses_redis_url_with_password_and_db() {
        let t = redis("redis://:hunter2@10.0.0.5:6380/3");
        assert_eq!((t.host.as_str(), t.port, t.db), ("10.0.0.5", 6380, 3));
        assert_eq!(t.password.as_deref(), Some("hunter2"));
        assert_eq!(t.username, None);
    }

    #[test]
    fn redis_defaults_to_port_6379_and_db_0() {
        let t = redis("redis://cache.local");
        assert_eq!((t.host.as_str(), t.port, t.db), ("cache.local", 6379, 0));
        assert_eq!(t.password, None);
        let t = redis("redis://admin:pw@cache.local:7000/");
        assert_eq!(t.username.as_deref(), Some("admin"));
        assert_eq!((t.port, t.db), (7000, 0));
    }

    #[test]
    fn display_and_debug_never_show_the_password() {
        let d: Discovery = "redis://:hunter2@10.0.0.5:6379/0".parse().expect("parses");
        for shown in [d.to_string(), format!("{d:?}")] {
            assert!(!shown.contains("hunter2"), "{shown}");
            assert!(shown.contains("10.0.0.5:6379/0"), "{shown}");
        }
        assert_eq!(d.to_string(), "redis://:***@10.0.0.5:6379/0");
    }

    #[test]
    fn parse_errors_never_show_the_password() {
        let err = "redis://:hunter2@host:notaport/0"
            .parse::<Discovery>()
            .expect_err("bad port");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn parses_static_seed_lists() {
        let d: Discovery = "static:10.0.0.11:9700, 10.0.0.12:9700"
            .parse()
            .expect("parses");
        assert_eq!(
            d,
            Discovery::Static {
                seeds: vec!["10.0.0.11:9700".into(), "10.0.0.12:9700".into()]
            }
        );
        assert_eq!(d.to_string(), "static:10.0.0.11:9700,10.0.0.12:9700");
    }

    #[test]
    fn rejects_bad_inputs_with_a_reason() {
        for bad in [
            "static:",
            "static:host",
            "static:host:x",
            "consul://x",
            "redis://h:1/x",
            "redis://",
        ] {
            let err = bad.parse::<Discovery>().expect_err(bad);
            assert!(err.to_string().contains("discovery"), "{err}");
        }
    }

    #[test]
    fn split_host_port_handles_ipv6_brackets() {
        assert_eq!(split_host_port("[::1]:9700"), Some(("::1".into(), 9700)));
        assert_eq!(split_host_port("host"), None);
    }
}
