//! `herd`: the daemon (`herd up --foreground`) and the CLI that drives it.

mod access;
mod api;
mod cli;
mod cluster;
mod config;
mod daemon;
#[cfg(test)]
mod fuzz;
mod home;
mod http;
mod import;
mod state;
mod supervisor;
mod systemd;

use clap::{CommandFactory, FromArgMatches};
use cli::{Cli, Command};
use std::process::ExitCode;

fn main() -> ExitCode {
    // clap prints help and usage errors while parsing, so it learns --color from the raw args.
    let when = cli::colour::from_raw_args(std::env::args_os().skip(1));
    let matches = Cli::command().color(when.for_clap()).get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("herd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    if let Command::LeaseKeeper = cli.command {
        return Ok(supervisor::lease::keeper_main()?);
    }
    cli::colour::init(cli.color);
    // Importing and generating completions or man pages read and write files only: no home,
    // no daemon, no remote target.
    let command = match cli.command {
        Command::Import(c) => return cli::import::run(c),
        Command::Completions { shell } => return cli::completions::run(shell),
        Command::Man { dir } => return cli::man::run(dir.as_deref()),
        // Installing the boot unit writes /etc and runs systemctl; the daemon need not run.
        Command::Startup { user, print } => return cli::startup::startup(user.as_deref(), print),
        Command::Unstartup => return cli::startup::unstartup(),
        other => other,
    };
    let cli = Cli { command, ..cli };
    let home = cli::home()?;
    let remote = cli::client::RemoteArgs {
        host: cli.host.as_deref(),
        token_file: cli.token_file.as_ref(),
        ca_file: cli.ca_file.as_ref(),
    };
    let target = cli::client::Target::from_args(&home, remote, |k| std::env::var(k).ok())?;
    if target.is_remote() && matches!(cli.command, Command::Up { .. } | Command::Kill) {
        anyhow::bail!(
            "`herd up` and `herd kill` act on this host's daemon; run them on the remote host (--host is for a running daemon)"
        );
    }

    match cli.command {
        Command::Up {
            foreground: true,
            detached,
            config,
            ..
        } => daemon::run(home, detached, config),
        Command::Up { json, config, .. } => cli::daemon_ctl::up(&home, json, config),
        Command::Kill => cli::daemon_ctl::kill(&home),
        command => {
            let timeout = cli::request_timeout(cli.request_timeout, &command);
            let daemon = target.describe();
            let rt = cli::daemon_ctl::current_thread()?;
            let work = async move {
                match command {
                    Command::Down { timeout, keep_apps } => {
                        cli::daemon_ctl::down(&home, &target, timeout, keep_apps).await
                    }
                    Command::Ping { json } => cli::daemon_ctl::ping(&target, json).await,
                    Command::Cluster(c) => cli::cluster::run(&target, c).await,
                    Command::Token(c) => cli::access::tokens(&target, c).await,
                    Command::Secret(c) => cli::access::secrets(&target, c).await,
                    other => {
                        let client = cli::client::connect(&target).await?;
                        cli::commands::run(client, other).await
                    }
                }
            };
            rt.block_on(async move {
                let Some(limit) = timeout else {
                    return work.await;
                };
                tokio::time::timeout(limit, work).await.unwrap_or_else(|_| {
                    anyhow::bail!(
                        "the daemon at {daemon} did not answer within {} s (is it stopped or overloaded? --request-timeout SECS or HERD_REQUEST_TIMEOUT changes the limit)",
                        limit.as_secs()
                    )
                })
            })
        }
    }
}
