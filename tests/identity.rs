//! Apps as other users, with their own umask and rlimits (issue 16), and nothing of the
//! daemon's leaking to them: real processes under a real root daemon. These tests need root
//! (CI runs them as root) and fail, not skip, without it.

mod common;

use common::*;
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

const NOBODY: u32 = 65534;

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the identity tests switch users and need root (CI runs them as root)"
    );
}

/// The file instance 0 of `name` writes its output to.
fn log_file(h: &Herd, name: &str) -> std::path::PathBuf {
    let v = h.json(&["inspect", name, "--json"]);
    v["instances"][0]["log_file"]
        .as_str()
        .unwrap_or_else(|| panic!("no log_file in {v}"))
        .into()
}

/// Starts one app whose shell `script` prints lines and then sleeps, and returns what it
/// printed once a line `END` is there. `keys` are more app-file keys.
fn output_of(h: &Herd, name: &str, script: &str, keys: &str) -> Vec<String> {
    let file = h.app_file(
        &format!("{name}.toml"),
        &format!(
            "[[app]]\nname = \"{name}\"\ncommand = \"/bin/sh\"\nargs = [\"-c\", '''{script}; echo END; exec sleep 1000''']\n{keys}\n"
        ),
    );
    h.ok(&["start", &file]);
    let log = log_file(h, name);
    wait_until(&format!("{name} printed END"), SECS_10, || {
        read_lines(&log).iter().any(|l| l == "END")
    });
    read_lines(&log)
        .into_iter()
        .take_while(|l| l != "END")
        .collect()
}

/// The value printed after `key=` by `output_of`'s script.
fn field(lines: &[String], key: &str) -> String {
    let prefix = format!("{key}=");
    lines
        .iter()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {key}= in {lines:?}"))
        .to_string()
}

#[test]
fn an_app_with_user_runs_as_that_user_with_its_passwd_variables() {
    require_root();
    let h = Herd::up();
    let lines = output_of(
        &h,
        "web",
        "echo uid=$(id -u); echo gid=$(id -g); echo groups=$(id -G); echo home=$HOME; echo user=$USER; echo logname=$LOGNAME; echo shell=$SHELL",
        "user = \"nobody\"\ncwd = \"/\"",
    );
    assert_eq!(field(&lines, "uid"), NOBODY.to_string());
    assert_eq!(field(&lines, "gid"), NOBODY.to_string());
    // Root's supplementary groups are gone: only nobody's own.
    assert_eq!(field(&lines, "groups"), NOBODY.to_string());
    let pw = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(NOBODY))
        .unwrap()
        .unwrap();
    assert_eq!(field(&lines, "home"), pw.dir.display().to_string());
    assert_eq!(field(&lines, "user"), pw.name);
    assert_eq!(field(&lines, "logname"), pw.name);
    assert_eq!(field(&lines, "shell"), pw.shell.display().to_string());
    // inspect says who it runs as.
    let v = h.json(&["inspect", "web", "--json"]);
    assert_eq!(v["identity"]["user"], pw.name, "{v}");
    assert_eq!(v["identity"]["uid"], NOBODY, "{v}");
    assert_eq!(v["identity"]["gid"], NOBODY, "{v}");
    let text = h.ok(&["inspect", "web"]);
    assert!(
        text.contains(&format!("runs as user {} (uid {NOBODY})", pw.name)),
        "{text}"
    );
}

#[test]
fn the_apps_env_wins_over_the_passwd_variables() {
    require_root();
    let h = Herd::up();
    let lines = output_of(
        &h,
        "web",
        "echo home=$HOME; echo user=$USER",
        "user = \"nobody\"\ncwd = \"/\"\nenv = { HOME = \"/srv/web\" }",
    );
    assert_eq!(field(&lines, "home"), "/srv/web");
    assert_eq!(field(&lines, "user"), "nobody");
}

/// A user listed as a member of a group in /etc/group, and that group's gid: the way to see
/// supplementary groups come from the group database. `None` on a host without one.
/// A user who is a member of a supplementary group, made here with the host's own tools
/// (`groupadd`, `useradd`, `usermod`) so the test needs nothing of the machine it runs on; both
/// are system entries without a home or a shell, and stay for later runs.
fn a_member_of_a_group() -> Option<(String, u32)> {
    const USER: &str = "herd-e2e";
    const GROUP: &str = "herd-e2e-sup";
    let run = |cmd: &str, args: &[&str]| {
        let out = std::process::Command::new(cmd).args(args).output();
        assert!(
            out.as_ref().is_ok_and(|o| o.status.success()),
            "{cmd} {args:?}: {out:?}"
        );
    };
    run("groupadd", &["-f", "--system", GROUP]);
    if nix::unistd::User::from_name(USER).ok().flatten().is_none() {
        run(
            "useradd",
            &[
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                USER,
            ],
        );
    }
    run("usermod", &["-a", "-G", GROUP, USER]);
    let gid = nix::unistd::Group::from_name(GROUP)
        .ok()
        .flatten()?
        .gid
        .as_raw();
    Some((USER.to_string(), gid))
}

#[test]
fn supplementary_groups_come_from_the_users_entry() {
    require_root();
    let (user, gid) = a_member_of_a_group().expect("the group just made");
    let h = Herd::up();
    let lines = output_of(
        &h,
        "web",
        "echo groups=$(id -G)",
        &format!("user = \"{user}\"\ncwd = \"/\""),
    );
    let groups: Vec<u32> = field(&lines, "groups")
        .split_whitespace()
        .map(|g| g.parse().unwrap())
        .collect();
    assert!(groups.contains(&gid), "{user} is not in {gid}: {groups:?}");
    assert!(
        !groups.contains(&0) || gid == 0,
        "root's group kept: {groups:?}"
    );
}

#[test]
fn group_sets_the_primary_group_instead_of_the_users() {
    require_root();
    let users_gid = nix::unistd::Group::from_name("users")
        .unwrap()
        .expect("a `users` group")
        .gid
        .as_raw();
    let h = Herd::up();
    let lines = output_of(
        &h,
        "web",
        "echo uid=$(id -u); echo gid=$(id -g); echo groups=$(id -G)",
        "user = \"nobody\"\ngroup = \"users\"\ncwd = \"/\"",
    );
    assert_eq!(field(&lines, "uid"), NOBODY.to_string());
    assert_eq!(field(&lines, "gid"), users_gid.to_string());
    assert!(
        !field(&lines, "groups").split_whitespace().any(|g| g == "0"),
        "{lines:?}"
    );
}

#[test]
fn umask_and_limits_apply_to_the_app() {
    require_root();
    let h = Herd::up();
    let lines = output_of(
        &h,
        "web",
        "echo umask=$(umask); echo nofile=$(ulimit -n); echo nofile_hard=$(ulimit -Hn); echo core=$(ulimit -c); echo core_hard=$(ulimit -Hc); echo cpu=$(ulimit -t)",
        "umask = \"027\"\nlimits = { nofile = { soft = 1000, hard = 4096 }, core = 1048576, cpu = \"infinity\" }",
    );
    // The daemon's own are 0022, its raised open-file limit, and (here) no core files.
    assert_eq!(field(&lines, "umask"), "0027");
    assert_eq!(field(&lines, "nofile"), "1000");
    assert_eq!(field(&lines, "nofile_hard"), "4096");
    // sh counts core sizes in 512-byte blocks.
    assert_eq!(field(&lines, "core"), "2048");
    assert_eq!(field(&lines, "core_hard"), "2048");
    assert_eq!(field(&lines, "cpu"), "unlimited");
    let v = h.json(&["inspect", "web", "--json"]);
    assert_eq!(v["identity"]["umask"], "027", "{v}");
    assert_eq!(v["identity"]["limits"]["nofile"]["soft"], 1000, "{v}");
    assert_eq!(v["identity"]["limits"]["nofile"]["hard"], 4096, "{v}");
    assert_eq!(v["identity"]["limits"]["core"]["from_app"], true, "{v}");
    assert_eq!(v["identity"]["limits"]["stack"]["from_app"], false, "{v}");
    let text = h.ok(&["inspect", "web"]);
    assert!(text.contains("umask 027"), "{text}");
    assert!(text.contains("nofile 1000/4096"), "{text}");
}

#[test]
fn a_file_the_app_creates_gets_its_umask_and_its_user() {
    require_root();
    let h = Herd::up();
    let dir = private_dir(Some(NOBODY));
    let made = dir.path().join("made");
    output_of(
        &h,
        "web",
        &format!("touch {}", made.display()),
        &format!(
            "user = \"nobody\"\numask = \"077\"\ncwd = \"{}\"",
            dir.path().display()
        ),
    );
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(&made).unwrap();
    assert_eq!((m.uid(), m.mode() & 0o777), (NOBODY, 0o600));
}

/// A directory of mode 0700 (tempfile's default mode follows the umask), owned by `owner`
/// (root's when `None`).
fn private_dir(owner: Option<u32>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    if let Some(uid) = owner {
        std::os::unix::fs::chown(dir.path(), Some(uid), Some(uid)).unwrap();
    }
    dir
}

#[test]
fn a_cwd_only_the_user_may_enter_works_and_one_it_may_not_is_refused() {
    require_root();
    let h = Herd::up();
    // Only nobody may enter this one.
    let private = private_dir(Some(NOBODY));
    let lines = output_of(
        &h,
        "mine",
        "echo pwd=$(pwd)",
        &format!("user = \"nobody\"\ncwd = \"{}\"", private.path().display()),
    );
    assert_eq!(field(&lines, "pwd"), private.path().display().to_string());
    // Root's 0700 directory: root could enter it, nobody may not, and the check is nobody's.
    let root_only = private_dir(None);
    let file = h.app_file(
        "theirs.toml",
        &format!(
            "[[app]]\nname = \"theirs\"\ncommand = \"sleep\"\nargs = [\"1000\"]\nuser = \"nobody\"\ncwd = \"{}\"\nrestart = \"never\"\n",
            root_only.path().display()
        ),
    );
    h.ok(&["start", &file]);
    let rows = h.wait_ps("theirs to fail", SECS_10, |rows| {
        rows.iter()
            .any(|r| r["name"] == "theirs" && r["last_exit"]["reason"].is_string())
    });
    let row = rows.iter().find(|r| r["name"] == "theirs").unwrap();
    assert!(row["pid"].is_null(), "it runs: {row}");
    let reason = row["last_exit"]["reason"].as_str().unwrap();
    assert!(
        reason.contains("starting as user `nobody`") && reason.contains("Permission denied"),
        "{reason}"
    );
    let log = std::fs::read_to_string(log_file(&h, "theirs")).unwrap();
    assert!(
        log.contains(&format!(
            "cannot enter cwd {} as user `nobody`",
            root_only.path().display()
        )),
        "{log}"
    );
}

#[test]
fn an_unknown_user_refuses_the_whole_file_and_nothing_starts() {
    require_root();
    let h = Herd::up();
    let file = h.app_file(
        "apps.toml",
        "[[app]]\nname = \"fine\"\ncommand = \"sleep\"\nargs = [\"1000\"]\n\n[[app]]\nname = \"bad\"\ncommand = \"sleep\"\nargs = [\"1000\"]\nuser = \"no-such-user-herd\"\n",
    );
    let err = h.fails(&["start", &file]);
    assert!(
        err.contains("apps.toml: app `bad`: key `user`: unknown user `no-such-user-herd`"),
        "{err}"
    );
    assert!(h.ps().is_empty(), "{:?}", h.ps());
    for (keys, want) in [
        (
            "umask = \"0o27\"",
            "key `umask`: `0o27` is not an octal umask",
        ),
        (
            "limits = { nofile = { soft = 10, hard = 5 } }",
            "key `limits`: nofile: the soft limit 10 is above the hard limit 5",
        ),
        (
            "group = \"no-such-group-herd\"",
            "key `group`: unknown group",
        ),
    ] {
        let file = h.app_file(
            "one.toml",
            &format!("[[app]]\nname = \"one\"\ncommand = \"sleep\"\n{keys}\n"),
        );
        let err = h.fails(&["start", &file]);
        assert!(err.contains(&format!("app `one`: {want}")), "{err}");
    }
    assert!(h.ps().is_empty(), "{:?}", h.ps());
}

fn env_var(pid: u32, name: &str) -> Option<String> {
    let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    let prefix = format!("{name}=");
    env.split(|b| *b == 0)
        .find_map(|v| v.strip_prefix(prefix.as_bytes()))
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

fn uid_of(pid: u32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A root process leading its own group that carries instance 0 of `app`'s variables and
/// the home's real marker: everything an instance has but its uid.
fn root_impostor(h: &Herd, app: &str, marker: &str) -> Child {
    let child = Command::new("sleep")
        .arg("1000")
        .env("HERD_HOME", h.home.path())
        .env("HERD_APP", app)
        .env("HERD_SLOT", "0")
        .env("HERD_MARKER", marker)
        .current_dir("/")
        .stdin(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("spawn the impostor");
    let pid = child.id();
    wait_until("the impostor runs sleep", SECS_10, || {
        env_var(pid, "HERD_APP").as_deref() == Some(app)
    });
    child
}

#[test]
fn an_app_running_as_its_user_is_adopted_and_a_process_of_another_uid_is_not() {
    require_root();
    let h = Herd::up();
    let file = h.app_file(
        "web.toml",
        "[[app]]\nname = \"web\"\ncommand = \"sleep\"\nargs = [\"1000\"]\nuser = \"nobody\"\ncwd = \"/\"\n",
    );
    h.ok(&["start", &file]);
    let pid = pid_of(&h.wait_status("web", 0, "running", SECS_10));
    wait_until("the instance runs as nobody", SECS_10, || {
        uid_of(pid) == NOBODY
    });
    // A daemon restart adopts it: same process.
    h.ok(&["kill"]);
    h.ok(&["up"]);
    assert_eq!(pid_of(&h.wait_status("web", 0, "running", SECS_10)), pid);
    // Now the instance dies while the daemon is away, and a root process that learnt the
    // marker (as any process of the app's user could) claims its slot.
    let marker = env_var(pid, "HERD_MARKER").expect("the instance's marker");
    h.ok(&["kill"]);
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    wait_until("the instance gone", SECS_10, || !alive(pid));
    let mut fake = root_impostor(&h, "web", &marker);
    h.ok(&["up"]);
    let row = h.wait_status("web", 0, "running", SECS_10);
    let new = pid_of(&row);
    let fake_pid = fake.id();
    let left_alone = fake.try_wait().unwrap().is_none() && alive(fake_pid);
    let _ = fake.kill();
    let _ = fake.wait();
    assert_ne!(new, fake_pid, "the root impostor was adopted as web: {row}");
    assert!(left_alone, "the impostor was signalled");
    wait_until("the new instance runs as nobody", SECS_10, || {
        uid_of(new) == NOBODY
    });
    let log = std::fs::read_to_string(h.path("daemon.log")).unwrap_or_default();
    assert!(
        log.contains("not as uid 65534, which app `web` runs as"),
        "{log}"
    );
}

#[test]
fn a_descriptor_the_daemon_inherited_does_not_reach_its_apps() {
    let h = Herd::new();
    let inherited = h.path("inherited");
    // The shell opens fd 7 without close-on-exec and execs `herd up` with it, as a careless
    // parent would; `herd up` passes it on to the daemon it launches.
    let out = Command::new("/bin/sh")
        .args(["-c", "exec \"$0\" up 7>>\"$1\""])
        .arg(herd_bin())
        .arg(&inherited)
        .env("HERD_HOME", h.home.path())
        .env_remove("HERD_LOG")
        .env("HERD_HTTP_LISTEN", "")
        .output()
        .expect("run herd up");
    assert!(
        out.status.success(),
        "herd up: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let daemon = h.daemon_pid().expect("the daemon's pid");
    let target = std::fs::read_link(format!("/proc/{daemon}/fd/7")).expect("the daemon has fd 7");
    assert_eq!(
        target, inherited,
        "the daemon's fd 7 is not the inherited file"
    );
    let lines = output_of(
        &h,
        "web",
        "if [ -e /proc/$$/fd/7 ]; then echo fd7=leaked; else echo fd7=closed; fi",
        "",
    );
    assert_eq!(field(&lines, "fd7"), "closed");
}

/// A home for a daemon that runs as nobody, with every command run as nobody too.
struct NobodyHerd(Herd);

impl NobodyHerd {
    fn up() -> Self {
        let h = Herd::new();
        std::os::unix::fs::chown(h.home.path(), Some(NOBODY), Some(NOBODY)).unwrap();
        let h = NobodyHerd(h);
        let out = h.run(&["up"]);
        assert!(
            out.status.success(),
            "herd up as nobody: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        h
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        let mut c = self.0.cmd(args);
        // As root, std drops the supplementary groups along with the uid.
        c.uid(NOBODY).gid(NOBODY).current_dir("/");
        c.output().expect("run herd as nobody")
    }
}

impl Drop for NobodyHerd {
    fn drop(&mut self) {
        let _ = self.run(&["down", "--timeout", "1"]);
        let _ = self.run(&["kill"]);
    }
}

#[test]
fn a_daemon_not_running_as_root_refuses_another_user_at_start() {
    require_root();
    let h = NobodyHerd::up();
    for (keys, want) in [
        (
            "user = \"root\"",
            "key `user`: herd runs as uid 65534, not as root",
        ),
        (
            "group = \"root\"",
            "key `group`: herd runs as gid 65534, not as root",
        ),
        (
            "limits = { nofile = \"infinity\" }",
            "key `limits`: nofile: the hard limit infinity is above the daemon's own",
        ),
    ] {
        let file = h.0.app_file(
            "apps.toml",
            &format!("[[app]]\nname = \"web\"\ncommand = \"sleep\"\nargs = [\"1000\"]\ncwd = \"/\"\n{keys}\n"),
        );
        std::os::unix::fs::chown(&file, Some(NOBODY), Some(NOBODY)).unwrap();
        let out = h.run(&["start", &file]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(want), "{keys}: {err}");
    }
    // Its own user is no switch at all, and allowed.
    let file = h.0.app_file(
        "own.toml",
        "[[app]]\nname = \"own\"\ncommand = \"sleep\"\nargs = [\"1000\"]\ncwd = \"/\"\nuser = \"nobody\"\numask = \"077\"\n",
    );
    std::os::unix::fs::chown(&file, Some(NOBODY), Some(NOBODY)).unwrap();
    let out = h.run(&["start", &file]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = h.run(&["ps", "--json"]);
    let rows: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.as_array().map(Vec::len), Some(1), "{rows}");
}

#[test]
fn an_exec_probe_runs_as_the_apps_user() {
    require_root();
    let h = Herd::up();
    let file = h.app_file(
        "web.toml",
        "[[app]]\nname = \"web\"\ncommand = \"sleep\"\nargs = [\"1000\"]\nuser = \"nobody\"\ncwd = \"/\"\n\n[app.health]\nexec = [\"sh\", \"-c\", \"test $(id -u) = 65534 && test $USER = nobody\"]\ninterval_s = 0.2\n",
    );
    h.ok(&["start", &file]);
    h.wait_ps("web healthy (its probe ran as nobody)", SECS_10, |rows| {
        rows.iter()
            .any(|r| r["name"] == "web" && r["health"] == "healthy")
    });
}

/// A bare command name is looked up in PATH as the app's user, as exec would for it: an entry
/// only root can reach (root's pyenv shims in /root, say) must not shadow one the user can
/// run. It did: the daemon resolved the name as root and the spawn failed with EACCES.
#[test]
fn a_bare_command_is_found_in_path_as_the_apps_user() {
    require_root();
    let h = Herd::up();
    let hidden = h.path("hidden");
    let open = tempfile::Builder::new()
        .prefix("herd-e2e-path-")
        .tempdir()
        .unwrap();
    std::fs::create_dir_all(&hidden).unwrap();
    let tool = |dir: &std::path::Path, says: &str| {
        let p = dir.join("herd-e2e-tool");
        std::fs::write(
            &p,
            format!("#!/bin/sh\necho {says}\necho END\nexec sleep 1000\n"),
        )
        .unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    tool(&hidden, "from-root-only");
    tool(open.path(), "from-anyone");
    std::fs::set_permissions(open.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let file = h.app_file(
        "tool.toml",
        &format!(
            "[[app]]\nname = \"tool\"\ncommand = \"herd-e2e-tool\"\nuser = \"nobody\"\ncwd = \"/\"\nenv = {{ PATH = \"{}:{}:/usr/bin:/bin\" }}\n",
            hidden.display(),
            open.path().display()
        ),
    );
    h.ok(&["start", &file]);
    let log = log_file(&h, "tool");
    wait_until("tool printed END", SECS_10, || {
        read_lines(&log).iter().any(|l| l == "END")
    });
    assert_eq!(read_lines(&log)[0], "from-anyone");
    // Root still finds the first one (no user: the daemon's own lookup).
    let root = h.app_file(
        "root.toml",
        &format!(
            "[[app]]\nname = \"roottool\"\ncommand = \"herd-e2e-tool\"\ncwd = \"/\"\nenv = {{ PATH = \"{}:{}:/usr/bin:/bin\" }}\n",
            hidden.display(),
            open.path().display()
        ),
    );
    h.ok(&["start", &root]);
    let log = log_file(&h, "roottool");
    wait_until("roottool printed END", SECS_10, || {
        read_lines(&log).iter().any(|l| l == "END")
    });
    assert_eq!(read_lines(&log)[0], "from-root-only");
}

/// Apps start with `clone(CLONE_VM | CLONE_VFORK)`: the child shares the daemon's memory until
/// it execs, so its identity switch must touch only itself, and every thread of the daemon
/// must still be root after starting apps as nobody. (The child uses raw system calls; glibc's
/// `setuid` walks the process's thread list and takes a lock in the shared memory. This test
/// passes with those wrappers too: their signals to the daemon's threads miss, as the child is
/// another process. It guards the outcome, whatever the child calls.)
#[test]
fn starting_apps_as_another_user_leaves_the_daemon_root() {
    require_root();
    let h = Herd::up();
    let file = h.app_file(
        "many.toml",
        "[[app]]\nname = \"as-nobody\"\ncommand = \"sleep\"\nargs = [\"1000\"]\nuser = \"nobody\"\ncwd = \"/\"\ninstances = 4\n",
    );
    h.ok(&["start", &file]);
    h.wait_ps("4 instances running as nobody", SECS_10, |rows| {
        rows.iter()
            .filter(|r| r["name"] == "as-nobody" && r["status"] == "running")
            .count()
            == 4
    });
    let daemon = h.daemon_pid().expect("the daemon's pid");
    let tasks = std::fs::read_dir(format!("/proc/{daemon}/task")).unwrap();
    let mut seen = 0;
    for task in tasks {
        let status = std::fs::read_to_string(task.unwrap().path().join("status")).unwrap();
        for key in ["Uid:", "Gid:"] {
            let line = status.lines().find(|l| l.starts_with(key)).unwrap();
            let ids: Vec<&str> = line.split_whitespace().skip(1).collect();
            assert_eq!(ids, ["0"; 4], "a daemon thread's {line}");
        }
        seen += 1;
    }
    assert!(seen > 1, "the daemon has {seen} thread(s)");
    // The app itself did switch.
    let pid = pid_of(&h.instance("as-nobody", 0));
    let uid = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(
        uid.lines()
            .any(|l| l.starts_with("Uid:") && l.contains(&NOBODY.to_string())),
        "{uid}"
    );
}
