//! `herd completions SHELL`: the shell's completion script, generated from the same clap
//! definition the CLI parses with, so it cannot drift from the commands. No daemon involved.

use clap::CommandFactory;
use clap_complete::Shell;

/// With `--json`: `{"shell": "bash", "script": "..."}`.
pub fn run(shell: Shell, json: bool) -> anyhow::Result<()> {
    let script = script(shell)?;
    if json {
        super::output::print_json(
            &serde_json::json!({ "shell": shell.to_string(), "script": script }),
        );
    } else {
        out!("{script}");
    }
    Ok(())
}

/// The script as text: generated into memory first, so a closed stdout ends quietly (see
/// `out!`) instead of failing halfway through the generator's own writes.
fn script(shell: Shell) -> anyhow::Result<String> {
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut visible(super::Cli::command()), "herd", &mut buf);
    Ok(String::from_utf8(buf)?)
}

/// `cmd` without its hidden subcommands (`lease-keeper`): clap_complete completes those too,
/// and clap cannot remove a subcommand, so the root is rebuilt from the visible ones. Built
/// first, so the copied subcommands already carry the global flags and `--help`/`--version`.
fn visible(mut cmd: clap::Command) -> clap::Command {
    cmd.build();
    let subcommands: Vec<clap::Command> = cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
        .cloned()
        .collect();
    clap::Command::new("herd")
        .version(env!("CARGO_PKG_VERSION"))
        .args(cmd.get_arguments().cloned())
        .disable_help_flag(true)
        .disable_version_flag(true)
        .subcommands(subcommands)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shell_script_names_nested_subcommands() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let s = script(shell).unwrap();
            for word in ["start", "cluster", "deploy", "completions"] {
                assert!(s.contains(word), "{shell} script lacks {word}");
            }
            assert!(
                !s.contains("lease-keeper"),
                "{shell} completes a hidden command"
            );
        }
    }
}
