//! `herd man [--dir DIR]`: roff man pages generated from the clap definition, herd(1) on
//! stdout or one page per command in DIR (herd.1, herd-start.1, herd-cluster-deploy.1, ...).
//! Hidden commands get no page. No daemon involved.

use anyhow::Context;
use clap::CommandFactory;
use std::path::Path;

/// With `--json`: `{"page": "..."}`, or `{"written": DIR}`.
pub fn run(dir: Option<&Path>, json: bool) -> anyhow::Result<()> {
    match dir {
        None if json => super::output::print_json(&serde_json::json!({ "page": page()? })),
        None => out!("{}", page()?),
        Some(dir) => {
            write_pages(dir)?;
            if json {
                super::output::print_json(&serde_json::json!({ "written": dir }));
            } else {
                eprintln!("wrote the man pages to {}", dir.display());
            }
        }
    }
    Ok(())
}

/// The command tree the pages describe: without clap's `help` subcommand, which is no
/// command of herd's and would get a page (and a SEE ALSO entry) of its own.
fn tree() -> clap::Command {
    let mut cmd = super::Cli::command().disable_help_subcommand(true);
    cmd.build();
    cmd
}

/// One page; every page names herd and its version as its source (clap_mangen would name
/// the subcommand alone: "deploy 0.1.0").
fn man(cmd: clap::Command) -> clap_mangen::Man {
    clap_mangen::Man::new(cmd).source(format!("herd {}", env!("CARGO_PKG_VERSION")))
}

/// herd(1): the top-level page, which lists the commands.
fn page() -> anyhow::Result<String> {
    let mut buf = Vec::new();
    man(tree()).render(&mut buf)?;
    Ok(String::from_utf8(buf)?)
}

fn write_pages(dir: &Path) -> anyhow::Result<()> {
    fn write(cmd: &clap::Command, dir: &Path) -> std::io::Result<()> {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            write(sub, dir)?;
        }
        man(cmd.clone()).generate_to(dir).map(drop)
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    write(&tree(), dir).with_context(|| format!("cannot write the man pages to {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_are_named_by_command_path_and_skip_hidden_commands() {
        let dir = tempfile::tempdir().unwrap();
        write_pages(dir.path()).unwrap();
        for name in [
            "herd.1",
            "herd-start.1",
            "herd-cluster-deploy.1",
            "herd-man.1",
        ] {
            let text = std::fs::read_to_string(dir.path().join(name))
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let title = format!(".TH {} 1", name.trim_end_matches(".1"));
            assert!(text.contains(&title), "{name} lacks {title}: {text}");
            let source = format!("\"herd {}\"", env!("CARGO_PKG_VERSION"));
            assert!(text.contains(&source), "{name} lacks {source}: {text}");
        }
        assert!(!dir.path().join("herd-lease-keeper.1").exists());
        assert!(!dir.path().join("herd-help.1").exists());
        let page = page().unwrap();
        assert!(page.contains(".TH herd 1"));
        assert!(page.contains("herd\\-cluster(1)"), "{page}");
        assert!(!page.contains("herd\\-help(1)"), "{page}");
    }
}
