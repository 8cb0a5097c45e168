use super::*;
use crate::supervisor::backoff::RestartPolicy;
use crate::supervisor::spec::{AppSpec, parse_app_file};

fn import(files: &[(&str, &str)]) -> anyhow::Result<(Vec<AppSpec>, Vec<String>)> {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        let p = dir.path().join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    let (text, skipped) = super::import(&dir.path().join(files[0].0))?.finish()?;
    let specs = parse_app_file("out", &text, Path::new("/elsewhere")).unwrap();
    Ok((specs, skipped.iter().map(ToString::to_string).collect()))
}

#[test]
fn numprocs_are_instances_unless_the_processes_differ() {
    let (specs, _) = import(&[(
        "s.conf",
        "[program:q]\ncommand=sleep 60\nnumprocs=3\nprocess_name=%(program_name)s_%(process_num)d\n\
         [program:w]\ncommand=serve --port 80%(process_num)02d\nnumprocs=2\nnumprocs_start=1\n\
         process_name=%(program_name)s-%(process_num)d\nenvironment=N=\"%(process_num)d\"\n",
    )])
    .unwrap();
    let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["q", "w-1", "w-2"]);
    assert_eq!(specs[0].instances, 3);
    assert_eq!(specs[1].args, ["--port", "8001"]);
    assert_eq!(specs[2].env["N"], "2");
}

#[test]
fn includes_groups_and_priority_become_apps_and_depends_on() {
    let (specs, report) = import(&[
        (
            "etc/supervisord.conf",
            "[supervisord]\nenvironment=A=\"1\"\nlogfile=/x\n[program:db]\ncommand=db\npriority=1\n\
             [include]\nfiles = conf.d/*.conf other.ini\n",
        ),
        (
            "etc/conf.d/b.conf",
            "[program:b]\ncommand=b\n[group:g]\nprograms=b,c\npriority=5\n",
        ),
        (
            "etc/other.ini",
            "[program:c]\ncommand=c %(here)s\nenvironment=A=\"2\"\n",
        ),
    ])
    .unwrap();
    let by = |n: &str| specs.iter().find(|s| s.name == n).unwrap();
    assert_eq!(by("b").depends_on, ["db"]);
    assert_eq!(by("c").depends_on, ["db"]);
    assert!(by("db").depends_on.is_empty());
    assert_eq!(by("b").env["A"], "1");
    assert_eq!(by("c").env["A"], "2");
    assert!(by("c").args[0].ends_with("/etc"), "{:?}", by("c").args);
    assert_eq!(by("db").cwd.as_deref(), Some(Path::new("/")));
    assert!(
        report.iter().any(|l| l.starts_with(
            "supervisord: group \"g\": key \"programs\" not mapped: herd has no groups"
        )),
        "{report:?}"
    );
    assert!(
        report
            .iter()
            .any(|l| l.starts_with("supervisord: [supervisord]: key \"logfile\" not mapped")),
        "{report:?}"
    );
}

#[test]
fn autorestart_exitcodes_and_start_checks() {
    let (specs, report) = import(&[(
        "s.conf",
        "[program:a]\ncommand=a\nautorestart=unexpected\nexitcodes=0,2\nstartretries=5\nstartsecs=10\n\
         [program:b]\ncommand=b\nautorestart=false\nuser=nobody\nstopsignal=hup\nstopwaitsecs=30\n\
         [program:c]\ncommand=c\nstdout_logfile_maxbytes=1MB\nstdout_logfile_backups=0\nstopasgroup=false\n",
    )])
    .unwrap();
    assert_eq!(specs[0].restart, RestartPolicy::Always);
    assert_eq!(specs[0].stop_exit_codes, [0, 2]);
    assert_eq!((specs[0].max_restarts, specs[0].backoff_max_ms), (5, 5000));
    // delays 1+2+4+5+5 s and five runs under 10 s
    assert_eq!(specs[0].restart_window_s, 67);
    assert_eq!(specs[1].restart, RestartPolicy::Never);
    assert_eq!(
        (specs[1].stop_signal.as_str(), specs[1].stop_timeout_s),
        ("SIGHUP", 30)
    );
    assert_eq!(specs[2].restart, RestartPolicy::OnFailure);
    assert_eq!((specs[2].log_max_bytes, specs[2].log_files), (1 << 20, 1));
    let has = |n: &str| report.iter().any(|l| l.contains(n));
    // `user` carries over when this host has the user (and the importer may run apps as it).
    if nix::unistd::geteuid().is_root() {
        assert_eq!(specs[1].user.as_deref(), Some("nobody"), "{report:?}");
    } else {
        assert!(has("program \"b\": key \"user\" not mapped"), "{report:?}");
    }
    assert!(
        has(
            "program \"c\": key \"stopasgroup\" not mapped: herd always signals the whole process group"
        ),
        "{report:?}"
    );
}

#[test]
fn errors_name_the_file_section_and_key() {
    let err = |text: &str| import(&[("s.conf", text)]).unwrap_err().to_string();
    assert!(
        err("[program:a]\ndirectory=/\n")
            .ends_with("s.conf: [program:a] has no `command`; every program needs one")
    );
    assert!(err("[program:a]\ncommand=%(ENV_HERD_TEST_UNSET_VAR)s\n").contains(
        "s.conf: [program:a] key `command`: `%(ENV_HERD_TEST_UNSET_VAR)s` needs the environment variable HERD_TEST_UNSET_VAR"
    ));
    assert!(
        err("[program:a]\ncommand=a\nnumprocs=many\n")
            .contains("key `numprocs`: `many` is not a whole number")
    );
    assert!(
        err("[program:a]\ncommand=a\n[include]\nfiles=x.conf\n[program:a]\ncommand=b\n")
            .contains("appears twice")
    );
    assert!(err("[supervisord]\nlogfile=x\n").contains("no apps found"));
}
