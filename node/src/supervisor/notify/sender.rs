//! Whether a process may speak for an instance, from what the kernel says about it. The
//! credentials of a datagram (`SCM_CREDENTIALS`) are checked by the kernel: a process can
//! claim only its own pid and uid (root excepted, who may do anything anyway). A sender counts
//! when its uid is the app's and it is part of the instance: the process the app named with
//! `MAINPID=`, a member of the instance's process group, or a descendant of its leader (a
//! child that made a group of its own). A process named by `MAINPID=` must be in the group and
//! run as the app's user, read from `/proc`: otherwise any app could make herd watch someone
//! else's process, and a stop signal (sent to the group) would miss it. (A pid can be reused between the datagram and the check; the window is
//! that of systemd's own check, and the uid must still match.)

use crate::supervisor::adoption::read_uids;
use crate::supervisor::process::{read_proc_file, read_stat};

/// The instance a message must come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Instance {
    /// The group's id (the leader's pid).
    pub pgid: u32,
    pub main_pid: Option<u32>,
    /// The app's uid.
    pub uid: u32,
}

/// How far up the parent chain a descendant is looked for.
const MAX_DEPTH: usize = 32;

impl Instance {
    /// A datagram from `pid` running as `uid` (its kernel-checked credentials) counts.
    pub fn accepts(&self, pid: u32, uid: u32) -> bool {
        uid == self.uid && (self.main_pid == Some(pid) || self.contains(pid))
    }

    /// `pid` may become the instance's main process: alive, in the instance's process group
    /// (not merely a descendant: stop signals go to the group, and must reach it), and running
    /// as the app's user (real uid, from `/proc`).
    pub fn may_be_main(&self, pid: u32) -> bool {
        read_uids(pid).is_some_and(|(real, _)| real == self.uid)
            && read_stat(pid).is_some_and(|s| !s.is_gone() && s.pgrp == self.pgid)
    }

    /// `pid` lives in the instance's group, or descends from its leader.
    fn contains(&self, pid: u32) -> bool {
        let Some(stat) = read_stat(pid).filter(|s| !s.is_gone()) else {
            return false;
        };
        if stat.pgrp == self.pgid {
            return true;
        }
        let mut at = pid;
        for _ in 0..MAX_DEPTH {
            match parent_of(at) {
                Some(p) if p == self.pgid => return true,
                Some(p) if p > 1 => at = p,
                _ => return false,
            }
        }
        false
    }
}

/// The parent pid (field 4 of `/proc/PID/stat`).
fn parent_of(pid: u32) -> Option<u32> {
    let stat = read_proc_file(format!("/proc/{pid}/stat"))?;
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    rest.split_ascii_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn me() -> (u32, u32) {
        (std::process::id(), rustix::process::getuid().as_raw())
    }

    #[test]
    fn a_member_of_the_group_with_the_apps_uid_is_accepted() {
        let (pid, uid) = me();
        let pgid = read_stat(pid).unwrap().pgrp;
        let inst = Instance {
            pgid,
            main_pid: None,
            uid,
        };
        assert!(inst.accepts(pid, uid));
        assert!(inst.may_be_main(pid));
        assert!(!inst.accepts(pid, uid + 1), "another uid");
    }

    #[test]
    fn a_process_outside_the_instance_is_refused() {
        let (pid, uid) = me();
        // pid 1 leads no group of ours and is nobody's descendant.
        let inst = Instance {
            pgid: 1_000_000_000,
            main_pid: None,
            uid,
        };
        assert!(!inst.accepts(pid, uid));
        assert!(!inst.may_be_main(pid));
        // The declared main process counts even outside the group.
        let named = Instance {
            main_pid: Some(pid),
            ..inst
        };
        assert!(named.accepts(pid, uid));
    }

    #[test]
    fn a_child_in_a_group_of_its_own_descends_from_its_leader() {
        use std::os::unix::process::CommandExt;
        let (me, uid) = me();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .unwrap();
        let inst = Instance {
            pgid: me,
            main_pid: None,
            uid,
        };
        let (heard, main) = (inst.contains(child.id()), inst.may_be_main(child.id()));
        let _ = child.kill();
        let _ = child.wait();
        assert!(heard, "a descendant is heard");
        assert!(!main, "but outside the group it cannot be the main process");
    }
}
