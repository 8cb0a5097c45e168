//! Which cgroup hierarchies this host has and where the daemon sits in each, read from
//! `/proc/self/mountinfo` and `/proc/self/cgroup` (kernel-written, so another user cannot
//! forge them). Pure parsing, tested on the texts of a hybrid and a unified host.

use std::path::{Path, PathBuf};

/// The controllers herd uses. `cpuacct` is not one: CPU time comes from `/proc`.
pub const CONTROLLERS: [&str; 3] = ["memory", "pids", "cpu"];

/// One mounted hierarchy and the daemon's own cgroup in it, as a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mounted {
    /// cgroup2 (`true`) or a cgroup v1 hierarchy.
    pub unified: bool,
    /// The v1 controllers mounted here (of `CONTROLLERS`); empty for cgroup2.
    pub controllers: Vec<String>,
    /// `<mount point>/<the daemon's cgroup>`.
    pub own_dir: PathBuf,
    /// The daemon's cgroup path in this hierarchy (`/`, `/system.slice/herd.service`).
    pub own_path: String,
}

/// Joins the two files: every cgroup mount whose hierarchy holds this process.
pub fn hierarchies(mountinfo: &str, self_cgroup: &str) -> Vec<Mounted> {
    let mut out = Vec::new();
    for line in mountinfo.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let pre: Vec<&str> = pre.split(' ').collect();
        let post: Vec<&str> = post.split(' ').collect();
        let (Some(root), Some(mount_point), Some(fstype), Some(super_opts)) =
            (pre.get(3), pre.get(4), post.first(), post.get(2))
        else {
            continue;
        };
        let mount_point = unescape(mount_point);
        let (controllers, own) = match *fstype {
            "cgroup2" => (Vec::new(), own_path(self_cgroup, None)),
            "cgroup" => {
                let ctls: Vec<String> = super_opts
                    .split(',')
                    .filter(|o| CONTROLLERS.contains(o))
                    .map(str::to_string)
                    .collect();
                let Some(first) = ctls.first() else {
                    continue;
                };
                let own = own_path(self_cgroup, Some(first));
                (ctls, own)
            }
            _ => continue,
        };
        if let Some(p) = own {
            out.push(Mounted {
                unified: controllers.is_empty(),
                controllers,
                own_dir: join(&mount_point, root, &p),
                own_path: p,
            });
        }
    }
    // A hierarchy mounted twice (bind mounts) counts once: the first mount wins.
    let mut seen: Vec<(bool, Vec<String>)> = Vec::new();
    out.retain(|m| {
        let key = (m.unified, m.controllers.clone());
        if seen.contains(&key) {
            false
        } else {
            seen.push(key);
            true
        }
    });
    out
}

/// The daemon's path in the cgroup2 hierarchy (`controller == None`, the `0::` line) or in
/// the v1 hierarchy holding `controller`.
fn own_path(self_cgroup: &str, controller: Option<&str>) -> Option<String> {
    self_cgroup.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (id, ctls, path) = (parts.next()?, parts.next()?, parts.next()?);
        let hit = match controller {
            None => id == "0" && ctls.is_empty(),
            Some(c) => ctls.split(',').any(|x| x == c),
        };
        hit.then(|| path.to_string())
    })
}

/// The directory of cgroup `path` in a hierarchy mounted at `mount_point` whose mount shows
/// the hierarchy from `root` (a container sees only its own subtree).
fn join(mount_point: &str, root: &str, path: &str) -> PathBuf {
    let rel = if root == "/" {
        path
    } else {
        path.strip_prefix(root).unwrap_or(path)
    };
    Path::new(mount_point).join(rel.trim_start_matches('/'))
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8)
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID_MOUNTS: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const HYBRID_SELF: &str = "\
9:name=systemd:/
8:pids:/
4:memory:/process_api/2b7a
2:cpuacct:/
1:cpu:/
0::/
";

    #[test]
    fn a_hybrid_host_has_three_v1_controllers_and_a_bare_cgroup2() {
        let h = hierarchies(HYBRID_MOUNTS, HYBRID_SELF);
        let v2: Vec<_> = h.iter().filter(|m| m.unified).collect();
        assert_eq!(v2.len(), 1);
        assert_eq!(v2[0].own_dir, Path::new("/sys/fs/cgroup/unified"));
        let mem = h
            .iter()
            .find(|m| m.controllers == ["memory"])
            .expect("memory");
        assert_eq!(
            mem.own_dir,
            Path::new("/sys/fs/cgroup/memory/process_api/2b7a")
        );
        assert!(h.iter().any(|m| m.controllers == ["pids"]));
        assert!(h.iter().any(|m| m.controllers == ["cpu"]));
        // cpuacct and name=systemd are not controllers herd uses.
        assert_eq!(h.len(), 4);
    }

    #[test]
    fn a_unified_host_under_systemd_and_a_comounted_cpu() {
        let mounts = "\
30 24 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate
";
        let h = hierarchies(mounts, "0::/system.slice/herd.service\n");
        assert_eq!(h.len(), 1);
        assert!(h[0].unified);
        assert_eq!(
            h[0].own_dir,
            Path::new("/sys/fs/cgroup/system.slice/herd.service")
        );
        let v1 = "50 31 0:40 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n";
        let h = hierarchies(v1, "3:cpu,cpuacct:/a\n");
        assert_eq!(h[0].controllers, ["cpu"]);
        assert_eq!(h[0].own_dir, Path::new("/sys/fs/cgroup/cpu,cpuacct/a"));
    }

    #[test]
    fn a_container_sees_its_subtree_from_the_mount_root() {
        let mounts = "60 50 0:26 /docker/abc /sys/fs/cgroup ro - cgroup2 cgroup2 rw\n";
        let h = hierarchies(mounts, "0::/docker/abc/inner\n");
        assert_eq!(h[0].own_dir, Path::new("/sys/fs/cgroup/inner"));
        assert_eq!(unescape("/a\\040b"), "/a b");
    }

    #[test]
    fn no_cgroup_mount_no_hierarchy() {
        assert!(hierarchies("22 1 0:5 / /proc rw - proc proc rw\n", "0::/\n").is_empty());
    }
}
