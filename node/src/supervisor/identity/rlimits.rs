//! The `limits` key: resource limits (setrlimit) an instance starts with, each a number, the
//! word "infinity", or `{ soft = N, hard = N }`. Values are in setrlimit's own units (bytes
//! for `core`, `memlock` and `stack`, seconds for `cpu`), so what `herd inspect` shows is what
//! `/proc/PID/limits` shows. A limit not named is inherited from the daemon.

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use std::fmt;

/// One side (soft or hard) of a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Bound {
    Finite(u64),
    Infinity,
}

impl Bound {
    /// As setrlimit takes it (`rlim_t` is 64 bits on Linux, and `RLIM_INFINITY` its largest
    /// value, so a finite number never wraps).
    pub fn raw(self) -> libc::rlim_t {
        match self {
            Bound::Finite(n) => n,
            Bound::Infinity => libc::RLIM_INFINITY,
        }
    }

    pub fn from_raw(v: libc::rlim_t) -> Self {
        if v == libc::RLIM_INFINITY {
            Bound::Infinity
        } else {
            Bound::Finite(v)
        }
    }
}

impl fmt::Display for Bound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Bound::Finite(n) => write!(f, "{n}"),
            Bound::Infinity => f.write_str("infinity"),
        }
    }
}

impl Serialize for Bound {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Bound::Finite(n) => s.serialize_u64(*n),
            Bound::Infinity => s.serialize_str("infinity"),
        }
    }
}

struct BoundVisitor;

impl<'de> Visitor<'de> for BoundVisitor {
    type Value = Bound;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a non-negative number or \"infinity\"")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Bound, E> {
        Ok(Bound::Finite(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Bound, E> {
        u64::try_from(v).map(Bound::Finite).map_err(|_| {
            E::custom(format!(
                "{v} is negative; a limit is 0 or more, or \"infinity\""
            ))
        })
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Bound, E> {
        match v {
            "infinity" | "unlimited" => Ok(Bound::Infinity),
            _ => Err(E::custom(format!(
                "`{}` is neither a number nor \"infinity\"",
                v.escape_debug()
            ))),
        }
    }
}

impl<'de> Deserialize<'de> for Bound {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(BoundVisitor)
    }
}

/// A soft and a hard limit; one number in the app file sets both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rlimit {
    pub soft: Bound,
    pub hard: Bound,
}

impl Serialize for Rlimit {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.soft == self.hard {
            return self.soft.serialize(s);
        }
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry("soft", &self.soft)?;
        m.serialize_entry("hard", &self.hard)?;
        m.end()
    }
}

struct RlimitVisitor;

impl<'de> Visitor<'de> for RlimitVisitor {
    type Value = Rlimit;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a number, \"infinity\", or { soft = N, hard = N }")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Rlimit, E> {
        let b = BoundVisitor.visit_u64(v)?;
        Ok(Rlimit { soft: b, hard: b })
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Rlimit, E> {
        let b = BoundVisitor.visit_i64(v)?;
        Ok(Rlimit { soft: b, hard: b })
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Rlimit, E> {
        let b = BoundVisitor.visit_str(v)?;
        Ok(Rlimit { soft: b, hard: b })
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Rlimit, A::Error> {
        let (mut soft, mut hard) = (None, None);
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "soft" => soft = Some(map.next_value::<Bound>()?),
                "hard" => hard = Some(map.next_value::<Bound>()?),
                other => {
                    return Err(de::Error::custom(format!(
                        "unknown key `{}`; a limit table has `soft` and `hard`",
                        other.escape_debug()
                    )));
                }
            }
        }
        match (soft, hard) {
            (Some(soft), Some(hard)) => Ok(Rlimit { soft, hard }),
            _ => Err(de::Error::custom(
                "a limit table needs both `soft` and `hard` (or give one number for both)",
            )),
        }
    }
}

impl<'de> Deserialize<'de> for Rlimit {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(RlimitVisitor)
    }
}

/// `limits = { ... }`: the limits an app names. Any other key is refused.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Open files (`RLIMIT_NOFILE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nofile: Option<Rlimit>,
    /// Processes of the app's user (`RLIMIT_NPROC`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nproc: Option<Rlimit>,
    /// Core dump size, bytes (`RLIMIT_CORE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub core: Option<Rlimit>,
    /// Locked memory, bytes (`RLIMIT_MEMLOCK`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memlock: Option<Rlimit>,
    /// Stack size, bytes (`RLIMIT_STACK`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack: Option<Rlimit>,
    /// CPU time, seconds (`RLIMIT_CPU`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Rlimit>,
}

/// The resource a key names, for setrlimit.
#[cfg(target_env = "gnu")]
pub type Resource = libc::__rlimit_resource_t;
#[cfg(not(target_env = "gnu"))]
pub type Resource = libc::c_int;

/// Every key of `limits` and the resource it sets.
pub const RESOURCES: [(&str, Resource); 6] = [
    ("nofile", libc::RLIMIT_NOFILE),
    ("nproc", libc::RLIMIT_NPROC),
    ("core", libc::RLIMIT_CORE),
    ("memlock", libc::RLIMIT_MEMLOCK),
    ("stack", libc::RLIMIT_STACK),
    ("cpu", libc::RLIMIT_CPU),
];

impl Limits {
    pub fn is_empty(&self) -> bool {
        self.named().next().is_none()
    }

    /// The limit under `key` (one of `RESOURCES`), if set.
    pub fn get(&self, key: &str) -> Option<Rlimit> {
        match key {
            "nofile" => self.nofile,
            "nproc" => self.nproc,
            "core" => self.core,
            "memlock" => self.memlock,
            "stack" => self.stack,
            "cpu" => self.cpu,
            _ => None,
        }
    }

    /// Every limit set, with its key and resource.
    pub fn named(&self) -> impl Iterator<Item = (&'static str, Resource, Rlimit)> + '_ {
        RESOURCES
            .into_iter()
            .filter_map(|(k, r)| Some((k, r, self.get(k)?)))
    }

    /// What any host would refuse: a soft limit above its hard limit.
    pub fn validate(&self) -> Result<(), String> {
        for (key, _, l) in self.named() {
            if l.soft > l.hard {
                return Err(format!(
                    "{key}: the soft limit {} is above the hard limit {}; soft must be at most hard",
                    l.soft, l.hard
                ));
            }
        }
        Ok(())
    }

    /// What this host would refuse at every start: a hard limit above the daemon's own when
    /// the daemon cannot raise it (not root), and more open files than the kernel allows
    /// (`fs.nr_open`).
    pub fn check_host(&self, privileged: bool) -> Result<(), String> {
        for (key, resource, l) in self.named() {
            let mut current = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            // SAFETY: getrlimit writes one rlimit into the struct it is given.
            if unsafe { libc::getrlimit(resource, &mut current) } != 0 {
                continue;
            }
            let own_hard = Bound::from_raw(current.rlim_max);
            if !privileged && l.hard > own_hard {
                return Err(format!(
                    "{key}: the hard limit {} is above the daemon's own ({own_hard}), which only root may raise; lower it or run herd as root",
                    l.hard
                ));
            }
            if key == "nofile"
                && let Some(max) = nr_open()
                && l.hard > Bound::Finite(max)
            {
                return Err(format!(
                    "nofile: {} is more open files than this kernel allows (fs.nr_open = {max}); use at most {max}",
                    l.hard
                ));
            }
        }
        Ok(())
    }
}

fn nr_open() -> Option<u64> {
    std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// One setrlimit, prepared before the fork, with what to say if the child cannot make it.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub resource: Resource,
    pub limit: libc::rlimit,
    pub failure: Vec<u8>,
}

pub fn prepare(limits: &Limits) -> Vec<Prepared> {
    limits
        .named()
        .map(|(key, resource, l)| Prepared {
            resource,
            limit: libc::rlimit {
                rlim_cur: l.soft.raw(),
                rlim_max: l.hard.raw(),
            },
            failure: format!(
                "herd: cannot set limits.{key} to soft {} hard {}\n",
                l.soft, l.hard
            )
            .into_bytes(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct File {
        limits: Limits,
    }

    fn parse(text: &str) -> Result<Limits, String> {
        toml::from_str::<File>(text)
            .map(|f| f.limits)
            .map_err(|e| e.message().to_string())
    }

    #[test]
    fn a_number_infinity_or_a_table() {
        let l = parse(
            "limits = { nofile = 4096, core = \"infinity\", stack = { soft = 8388608, hard = \"infinity\" } }",
        )
        .unwrap();
        let both = |b| Rlimit { soft: b, hard: b };
        assert_eq!(l.nofile, Some(both(Bound::Finite(4096))));
        assert_eq!(l.core, Some(both(Bound::Infinity)));
        assert_eq!(
            l.stack,
            Some(Rlimit {
                soft: Bound::Finite(8_388_608),
                hard: Bound::Infinity
            })
        );
        assert_eq!(l.nproc, None);
        l.validate().unwrap();
    }

    #[test]
    fn json_round_trip_keeps_the_written_form() {
        let l =
            parse("limits = { nofile = 10, cpu = { soft = 1, hard = 2 }, core = \"infinity\" }")
                .unwrap();
        let json = serde_json::to_string(&l).unwrap();
        assert_eq!(
            json,
            r#"{"nofile":10,"core":"infinity","cpu":{"soft":1,"hard":2}}"#
        );
        assert_eq!(serde_json::from_str::<Limits>(&json).unwrap(), l);
    }

    #[test]
    fn bad_values_are_named() {
        assert!(
            parse("limits = { nofile = -1 }")
                .unwrap_err()
                .contains("negative")
        );
        assert!(
            parse("limits = { nofile = \"lots\" }")
                .unwrap_err()
                .contains("`lots` is neither a number nor \"infinity\"")
        );
        assert!(
            parse("limits = { nofiles = 1 }")
                .unwrap_err()
                .contains("nofiles")
        );
        assert!(
            parse("limits = { core = { soft = 1 } }")
                .unwrap_err()
                .contains("both `soft` and `hard`")
        );
        assert!(
            parse("limits = { core = { soft = 1, hard = 2, max = 3 } }")
                .unwrap_err()
                .contains("unknown key `max`")
        );
    }

    #[test]
    fn soft_above_hard_is_refused() {
        let l = parse("limits = { nofile = { soft = 10, hard = 5 } }").unwrap();
        assert!(
            l.validate()
                .unwrap_err()
                .contains("nofile: the soft limit 10 is above the hard limit 5")
        );
        let l = parse("limits = { cpu = { soft = \"infinity\", hard = 5 } }").unwrap();
        assert!(l.validate().is_err());
    }

    #[test]
    fn huge_numbers_saturate_to_infinity() {
        assert_eq!(Bound::Finite(u64::MAX).raw(), libc::RLIM_INFINITY);
        assert_eq!(Bound::Finite(7).raw(), 7);
        assert_eq!(Bound::from_raw(libc::RLIM_INFINITY), Bound::Infinity);
    }

    #[test]
    fn more_open_files_than_the_kernel_allows_is_refused() {
        let l = parse("limits = { nofile = 9223372036854775807 }").unwrap();
        assert!(l.check_host(true).unwrap_err().contains("fs.nr_open"));
        let l = parse("limits = { nofile = 64 }").unwrap();
        l.check_host(true).unwrap();
    }
}
