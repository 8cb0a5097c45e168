//! The habits a shell user brings: completion scripts and man pages generated without a
//! daemon, and colour that follows `--color auto|always|never` and `NO_COLOR` (no-color.org).

mod common;

use common::cluster::*;
use common::*;
use std::process::Output;
use std::time::Duration;

const ESC: u8 = 0x1b;

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs herd with no home at all: these commands must not look for one.
fn no_home(args: &[&str]) -> Output {
    let out = std::process::Command::new(herd_bin())
        .args(args)
        .env("HERD_HOME", "/nonexistent/herd-home")
        .env_remove("NO_COLOR")
        .output()
        .expect("run herd");
    assert!(
        out.status.success(),
        "herd {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn completions_for_bash_zsh_and_fish_name_the_subcommands_without_a_daemon() {
    for shell in ["bash", "zsh", "fish"] {
        let script = stdout(&no_home(&["completions", shell]));
        for word in ["start", "cluster", "deploy", "color"] {
            assert!(script.contains(word), "{shell} script lacks {word}");
        }
        assert!(
            !script.contains("lease-keeper"),
            "{shell} script completes the hidden lease-keeper"
        );
    }
}

#[test]
fn the_bash_script_parses_and_completes_nested_subcommands() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("herd.bash");
    std::fs::write(&file, no_home(&["completions", "bash"]).stdout).unwrap();
    let syntax = std::process::Command::new("bash")
        .arg("-n")
        .arg(&file)
        .output()
        .expect("bash -n");
    assert!(
        syntax.status.success(),
        "bash -n: {}",
        String::from_utf8_lossy(&syntax.stderr)
    );
    // Calls the completion function as bash would for `herd cluster dep<TAB>` and
    // `herd --color <TAB>`.
    let probe = format!(
        "source {}; c() {{ COMP_WORDS=(\"$@\"); COMP_CWORD=$(($#-1)); _herd herd \"${{@: -1}}\" \"${{@: -2:1}}\"; echo \"${{COMPREPLY[*]}}\"; }}; c herd cluster dep; c herd --color ''",
        file.display()
    );
    let out = std::process::Command::new("bash")
        .args(["-c", &probe])
        .output()
        .expect("bash");
    let lines: Vec<String> = stdout(&out).lines().map(str::to_string).collect();
    assert_eq!(lines, ["deploy", "auto always never"], "{out:?}");
}

#[test]
fn man_prints_herd_1_and_writes_one_page_per_command() {
    let page = stdout(&no_home(&["man"]));
    let first_macro = page
        .lines()
        .find(|l| l.starts_with(".TH") || l.starts_with(".SH"))
        .unwrap_or_default();
    assert!(first_macro.starts_with(".TH herd 1"), "{page}");
    assert!(
        page.contains("herd\\-cluster(1)"),
        "herd(1) lists no commands"
    );

    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("man1");
    no_home(&["man", "--dir", out_dir.to_str().unwrap()]);
    for (file, title) in [
        ("herd.1", ".TH herd 1"),
        ("herd-start.1", ".TH herd-start 1"),
        ("herd-cluster.1", ".TH herd-cluster 1"),
        ("herd-cluster-deploy.1", ".TH herd-cluster-deploy 1"),
        ("herd-completions.1", ".TH herd-completions 1"),
    ] {
        let text =
            std::fs::read_to_string(out_dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(text.contains(title), "{file} lacks {title}");
    }
    let deploy = std::fs::read_to_string(out_dir.join("herd-cluster-deploy.1")).unwrap();
    assert!(deploy.contains("herd cluster deploy"), "{deploy}");
    assert!(!out_dir.join("herd-lease-keeper.1").exists());
}

#[test]
fn an_unknown_color_is_a_usage_error_naming_the_values() {
    let h = Herd::new();
    let out = h.run(&["--color", "bogus", "ps"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bogus"), "{err}");
    assert!(err.contains("auto, always, never"), "{err}");
}

#[test]
fn the_color_flag_is_global_and_leaves_uncoloured_output_alone() {
    let h = Herd::up();
    h.ok(&["start", "--name", "nap", "--", "sleep", "1000"]);
    for args in [
        &["--color", "always", "ps"][..],
        &["ps", "--color", "never"][..],
    ] {
        let out = h.ok(args);
        assert!(out.contains("nap"), "herd {args:?}: {out}");
        assert!(!out.as_bytes().contains(&ESC), "herd {args:?}: {out:?}");
    }
}

/// `herd cluster uptime` draws its bars in colour; a one-node cluster is enough to see it.
#[test]
fn uptime_bars_follow_the_color_flag_and_no_color() {
    let node = Node::new(1, "static:{addr}", 1, "s3cret");
    wait_formed(&[&node], 1, 0);
    wait_until(
        "the master to record this node's uptime",
        Duration::from_secs(30),
        || {
            node.herd.json(&["cluster", "uptime", "--json"])["nodes"]
                .as_array()
                .is_some_and(|n| !n.is_empty())
        },
    );
    // On a terminal (`script` gives the command a pty) or into a pipe, with NO_COLOR unset
    // or set to `no_color`.
    let run = |terminal: bool, args: &[&str], no_color: Option<&str>| {
        let mut c = if terminal {
            let line = format!("{} {}", herd_bin(), args.join(" "));
            let mut c = std::process::Command::new("script");
            c.args(["-qec", &line, "/dev/null"])
                .env("HERD_HOME", node.herd.home.path())
                .env("HERD_HTTP_LISTEN", "")
                .env_remove("HERD_LOG");
            c
        } else {
            node.herd.cmd(args)
        };
        match no_color {
            Some(v) => c.env("NO_COLOR", v),
            None => c.env_remove("NO_COLOR"),
        };
        let out = c.output().expect("run herd");
        let text = stdout(&out);
        assert!(out.status.success(), "herd {args:?}: {out:?}");
        assert!(text.contains(&node.addr), "herd {args:?}: {text}");
        text
    };
    let coloured = |s: &str| s.as_bytes().contains(&ESC);
    let uptime = ["cluster", "uptime", "--days", "3"];
    let with = |flag: &'static str| -> Vec<&'static str> {
        let mut a = vec!["--color", flag];
        a.extend(uptime);
        a
    };

    // auto: colour on a terminal, not into a pipe; NO_COLOR (non-empty) turns it off.
    let tty = run(true, &uptime, None);
    assert!(coloured(&tty), "auto on a terminal: {tty:?}");
    assert!(
        coloured(&run(true, &uptime, Some(""))),
        "an empty NO_COLOR is unset"
    );
    let tty_no_color = run(true, &uptime, Some("1"));
    assert!(!coloured(&tty_no_color), "NO_COLOR=1: {tty_no_color:?}");
    assert!(!coloured(&run(false, &uptime, None)), "auto into a pipe");
    // An explicit flag wins over the terminal and the environment (no-color.org).
    assert!(coloured(&run(false, &with("always"), None)));
    assert!(coloured(&run(false, &with("always"), Some("1"))));
    let never = run(true, &with("never"), None);
    assert!(!coloured(&never), "--color never on a terminal: {never:?}");
}

/// clap prints help and usage errors before herd sees the parsed flag; they follow it too.
#[test]
fn help_and_usage_errors_follow_the_color_flag_on_a_terminal() {
    let on_terminal = |args: &str, no_color: Option<&str>| {
        let mut c = std::process::Command::new("script");
        c.args(["-qec", &format!("{} {args}", herd_bin()), "/dev/null"]);
        match no_color {
            Some(v) => c.env("NO_COLOR", v),
            None => c.env_remove("NO_COLOR"),
        };
        let out = c.output().expect("script");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let coloured = |s: &str| s.as_bytes().contains(&ESC);
    let help = on_terminal("--help", None);
    assert!(help.contains("Usage"), "{help}");
    assert!(
        coloured(&help),
        "clap's help is plain even on a terminal: {help:?}"
    );
    for args in ["--color never --help", "ps --color=never --bogus"] {
        let out = on_terminal(args, None);
        assert!(
            out.contains("Usage") || out.contains("error"),
            "{args}: {out}"
        );
        assert!(!coloured(&out), "herd {args}: {out:?}");
    }
    assert!(!coloured(&on_terminal("--help", Some("1"))), "NO_COLOR=1");
}
