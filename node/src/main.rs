//! `herd`: the daemon (`herd up --foreground`) and the CLI that drives it.

mod api;
mod cli;
mod cluster;
mod config;
mod daemon;
mod home;
mod state;
mod supervisor;

use clap::Parser;
use cli::{Cli, Command};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
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
    let home = cli::home()?;

    match cli.command {
        Command::Up {
            foreground: true,
            detached,
            config,
            ..
        } => daemon::run(home, detached, config),
        Command::Up { json, config, .. } => cli::lifecycle::up(&home, json, config),
        Command::Kill => cli::lifecycle::kill(&home),
        command => {
            let rt = cli::lifecycle::current_thread()?;
            rt.block_on(async move {
                match command {
                    Command::Down { timeout, keep_apps } => {
                        cli::lifecycle::down(&home, timeout, keep_apps).await
                    }
                    Command::Ping { json } => cli::lifecycle::ping(&home, json).await,
                    Command::Cluster(c) => cli::cluster::run(&home, c).await,
                    other => {
                        let client = cli::client::connect(&home).await?;
                        cli::commands::run(client, other).await
                    }
                }
            })
        }
    }
}
