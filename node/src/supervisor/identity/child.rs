//! What the child does between fork and exec for an app's identity keys, prepared in the
//! daemon before the fork: the child itself only makes async-signal-safe calls on that data,
//! in the order setrlimit → setgroups → setgid → setuid → umask → chdir.

use super::super::spec::{AppSpec, nul_in};
use super::{parse_umask, privileged, resolve, rlimits, users, validate};
use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;

/// What the child does between fork and exec, prepared before the fork.
#[derive(Debug)]
pub struct Plan {
    rlimits: Vec<rlimits::Prepared>,
    ids: Option<Ids>,
    umask: Option<libc::mode_t>,
    /// Entered after the switch (so permission is checked as the app's user).
    chdir: Option<(CString, Vec<u8>)>,
    /// The variables the passwd entry gives (`HOME`, `USER`, `LOGNAME`, `SHELL`).
    pub env: Vec<(&'static str, String)>,
    /// Who the child becomes, for the error a failed start reports.
    pub who: String,
}

#[derive(Debug)]
struct Ids {
    uid: libc::uid_t,
    gid: libc::gid_t,
    groups: Vec<libc::gid_t>,
    message: Vec<u8>,
}

impl Plan {
    /// The plan for one spawn of `spec`, or `None` when the app sets no identity key (the
    /// child then runs exactly as before: the daemon's ids, umask and limits).
    pub fn prepare(spec: &AppSpec) -> io::Result<Option<Plan>> {
        let invalid = |(key, why): (&str, String)| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("key `{key}`: {why}"))
        };
        if spec.user.is_none()
            && spec.group.is_none()
            && spec.umask.is_none()
            && spec.limits.is_empty()
        {
            return Ok(None);
        }
        validate(spec).map_err(invalid)?;
        let resolved = resolve(spec).map_err(invalid)?;
        let rlimits = rlimits::prepare(&spec.limits);
        let umask = match &spec.umask {
            Some(u) => Some(parse_umask(u).map_err(|why| invalid(("umask", why)))? as libc::mode_t),
            None => None,
        };
        let who = match &resolved {
            Some(r) => format!(
                "user `{}` (uid {}) group `{}` (gid {})",
                r.account
                    .as_ref()
                    .map_or_else(|| users::user_name(r.uid), |a| a.name.clone()),
                r.uid,
                r.group,
                r.gid
            ),
            None => "the daemon's user".to_string(),
        };
        // Only a root daemon switches ids; a non-root one got here only if they are its own.
        let switch = resolved.as_ref().filter(|_| privileged());
        let ids = switch.map(|r| Ids {
            uid: r.uid,
            gid: r.gid,
            groups: r.groups.clone(),
            message: format!("herd: cannot become {who}\n").into_bytes(),
        });
        let chdir = match (&spec.cwd, switch) {
            (Some(cwd), Some(_)) => {
                let c = CString::new(cwd.as_os_str().as_bytes())
                    .map_err(|_| invalid(("cwd", nul_in(&cwd.to_string_lossy()))))?;
                let msg = format!(
                    "herd: cannot enter cwd {} as {who}; give the user access or set `cwd` to a directory it may enter\n",
                    cwd.display()
                );
                Some((c, msg.into_bytes()))
            }
            _ => None,
        };
        let env = resolved
            .as_ref()
            .and_then(|r| r.account.as_ref())
            .map(|a| {
                let mut env = vec![
                    ("HOME", a.home.clone()),
                    ("USER", a.name.clone()),
                    ("LOGNAME", a.name.clone()),
                ];
                if !a.shell.is_empty() {
                    env.push(("SHELL", a.shell.clone()));
                }
                env
            })
            .unwrap_or_default();
        Ok(Some(Plan {
            rlimits,
            ids,
            umask,
            chdir,
            env,
            who,
        }))
    }

    /// The plan for an `exec` health probe of `spec`: the app's ids and passwd variables
    /// only (no limits, umask or cwd: the probe checks the app, it is not the app), or `None`
    /// when there is nothing to switch (no `user`/`group`, or a non-root daemon).
    pub fn prepare_probe(spec: &AppSpec) -> io::Result<Option<Plan>> {
        let Some(plan) = Plan::prepare(spec)? else {
            return Ok(None);
        };
        if !plan.switches() {
            return Ok(None);
        }
        Ok(Some(Plan {
            rlimits: Vec::new(),
            umask: None,
            chdir: None,
            ..plan
        }))
    }

    /// Whether the child switches to other ids (a root daemon, an app with `user` or `group`).
    pub fn switches(&self) -> bool {
        self.ids.is_some()
    }

    /// Whether the plan enters the cwd itself (the spawner must then not chdir as root first).
    pub fn enters_cwd(&self) -> bool {
        self.chdir.is_some()
    }

    /// Runs in the child between fork (or vfork) and exec: only async-signal-safe calls, no
    /// allocation, nothing that touches process-wide state.
    /// A failing step writes which one to fd 2 (the instance's log) and returns its errno.
    pub fn apply_in_child(&self) -> io::Result<()> {
        for p in &self.rlimits {
            // SAFETY: setrlimit reads one rlimit struct.
            if unsafe { libc::setrlimit(p.resource, &p.limit) } != 0 {
                return Err(failed(&p.failure));
            }
        }
        if let Some(ids) = &self.ids {
            // Raw system calls, not glibc's wrappers: those make every thread of the process
            // switch, and a child spawned with CLONE_VM (`vfork`) would reach the daemon's.
            // SAFETY: setgroups reads `len` gids from a live slice; setgid/setuid take ids.
            unsafe {
                if libc::syscall(libc::SYS_setgroups, ids.groups.len(), ids.groups.as_ptr()) != 0
                    || libc::syscall(libc::SYS_setgid, ids.gid) != 0
                    || libc::syscall(libc::SYS_setuid, ids.uid) != 0
                {
                    return Err(failed(&ids.message));
                }
            }
        }
        if let Some(mask) = self.umask {
            // SAFETY: umask cannot fail.
            unsafe { libc::umask(mask) };
        }
        if let Some((dir, msg)) = &self.chdir {
            // SAFETY: a NUL-terminated path prepared before the fork.
            if unsafe { libc::chdir(dir.as_ptr()) } != 0 {
                return Err(failed(msg));
            }
        }
        Ok(())
    }
}

/// The errno of the step that just failed, after saying which step it was on fd 2.
fn failed(msg: &[u8]) -> io::Error {
    let e = io::Error::last_os_error();
    // SAFETY: write(2) of a live buffer; its result does not matter (the errno goes back).
    unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
    e
}
