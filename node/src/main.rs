//! `herd`: the daemon (`herd up --foreground`) and the CLI that drives it.

mod api;
mod cli;
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
    let home = cli::home()?;
    match cli.command {
        Command::Up {
            foreground: true,
            detached,
            ..
        } => {
            init_tracing();
            daemon::run(home, detached)
        }
        Command::Up { json, .. } => cli::lifecycle::up(&home, json),
        Command::Kill => cli::lifecycle::kill(&home),
        command => {
            let rt = cli::lifecycle::current_thread()?;
            rt.block_on(async move {
                match command {
                    Command::Down { timeout, keep_apps } => {
                        cli::lifecycle::down(&home, timeout, keep_apps).await
                    }
                    Command::Ping { json } => cli::lifecycle::ping(&home, json).await,
                    other => {
                        let client = cli::client::connect(&home).await?;
                        cli::commands::run(client, other).await
                    }
                }
            })
        }
    }
}

/// The daemon logs structured events to stderr (`daemon.log` when detached).
/// `HERD_LOG` sets the filter (default `info`); `HERD_LOG_FORMAT=json` switches to JSON lines.
fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("HERD_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,h2=warn,tower=warn,hyper=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false);
    if std::env::var("HERD_LOG_FORMAT").is_ok_and(|v| v == "json") {
        builder.json().init();
    } else {
        builder.init();
    }
}
