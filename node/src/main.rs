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
mod hooks;
mod http;
mod import;
mod jobs;
mod state;
mod supervisor;
mod systemd;

use clap::{CommandFactory, FromArgMatches};
use cli::{Cli, Command};
use std::process::ExitCode;

/// The binary's edge: every failure leaves through here as its documented exit code
/// (`cli::exit`), and in `--json` mode also as one JSON object on stdout.
fn main() -> ExitCode {
    // clap prints help and usage errors while parsing, so it learns --color from the raw args.
    let when = cli::colour::from_raw_args(std::env::args_os().skip(1));
    let json = std::env::args_os()
        .skip(1)
        .take_while(|a| a != "--")
        .any(|a| a == "--json");
    let matches = match Cli::command().color(when.for_clap()).try_get_matches() {
        Ok(m) => m,
        Err(e) => usage_error(e, json),
    };
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| usage_error(e, json));
    // Which remote flags were typed (not taken from the environment): they beat a context.
    let typed = |id: &str| matches.value_source(id) == Some(clap::parser::ValueSource::CommandLine);
    let explicit = cli::client::Explicit {
        host: typed("host"),
        token_file: typed("token_file"),
        ca_file: typed("ca_file"),
    };
    let json = cli.json;
    match run(cli, explicit) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let code = cli::exit::code_of(&e);
            let message = format!("{e:#}");
            if json {
                cli::output::print_json(&cli::exit::error_json(&message, code));
            }
            eprintln!("herd: {message}");
            ExitCode::from(code.number())
        }
    }
}

/// A bad command line: clap's message and exit code 2; with `--json` also the JSON error.
fn usage_error(e: clap::Error, json: bool) -> ! {
    use clap::error::ErrorKind;
    let message = match e.kind() {
        // Asked for: not an error.
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => None,
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            Some("a command is required; `herd --help` lists them".to_string())
        }
        _ => {
            let rendered = e.render().to_string();
            let first = rendered.lines().next().unwrap_or("bad command line");
            Some(first.strip_prefix("error: ").unwrap_or(first).to_string())
        }
    };
    if let Some(message) = message.filter(|_| json) {
        cli::output::print_json(&cli::exit::error_json(&message, cli::exit::Code::Usage));
    }
    e.exit()
}

fn run(cli: Cli, explicit: cli::client::Explicit) -> anyhow::Result<()> {
    if let Command::LeaseKeeper = cli.command {
        return Ok(supervisor::lease::keeper_main()?);
    }
    cli::colour::init(cli.color);
    // Importing and generating completions or man pages read and write files only: no home,
    // no daemon, no remote target.
    let json = cli.json;
    let command = match cli.command {
        Command::Import(c) => return cli::import::run(c, json),
        // Contexts are this user's files; the global --host/--token-file/--ca-file name what
        // `context add` stores.
        Command::Context(c) => {
            let add = cli::context::AddArgs {
                host: cli.host.as_deref(),
                token_file: cli.token_file.as_deref(),
                ca_file: cli.ca_file.as_deref(),
            };
            return cli::context::run(c, add, json, |k| std::env::var(k).ok());
        }
        Command::Completions { shell } => return cli::completions::run(shell, json),
        Command::Man { dir } => return cli::man::run(dir.as_deref(), json),
        // Installing the boot unit writes /etc and runs systemctl; the daemon need not run.
        Command::Startup { user, print } => {
            return cli::startup::startup(user.as_deref(), print, json);
        }
        Command::Unstartup => return cli::startup::unstartup(json),
        other => other,
    };
    let cli = Cli { command, ..cli };
    let home = cli::home()?;
    let flags = cli::client::RemoteArgs {
        host: cli.host.clone(),
        token_file: cli.token_file.clone(),
        ca_file: cli.ca_file.clone(),
        context: cli.context.clone(),
        typed: explicit,
    };
    let local_only = matches!(cli.command, Command::Up { .. } | Command::Kill);
    let env = |k: &str| std::env::var(k).ok();
    let remote = cli::client::RemoteArgs::resolve(flags, explicit, local_only, env)?;
    let target = cli::client::Target::from_args(&home, remote, env)?;
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
        Command::Up { config, .. } => cli::daemon_ctl::up(&home, json, config),
        Command::Kill => cli::daemon_ctl::kill(&home, json),
        command => {
            let timeout = cli::request_timeout(cli.request_timeout, &command);
            let daemon = target.describe();
            let rt = cli::daemon_ctl::current_thread()?;
            let work = async move {
                match command {
                    Command::Down { timeout, keep_apps } => {
                        cli::daemon_ctl::down(&home, &target, timeout, keep_apps, json).await
                    }
                    Command::Ping => cli::daemon_ctl::ping(&target, json).await,
                    Command::Cluster(c) => cli::cluster::run(&target, c, json).await,
                    Command::Token(c) => cli::access::tokens(&target, c, json).await,
                    Command::Secret(c) => cli::access::secrets(&target, c, json).await,
                    Command::Run(r) => cli::jobs::run(&target, r, json).await,
                    Command::Jobs { command } => cli::jobs::jobs(&target, command, json).await,
                    Command::Pause => cli::jobs::pause(&target, true, json).await,
                    Command::Resume => cli::jobs::pause(&target, false, json).await,
                    Command::Hooks { command } => cli::hooks::run(&target, command, json).await,
                    other => {
                        let client = cli::client::connect(&target).await?;
                        cli::commands::run(client, other, json).await
                    }
                }
            };
            rt.block_on(async move {
                let Some(limit) = timeout else {
                    return work.await;
                };
                tokio::time::timeout(limit, work).await.unwrap_or_else(|_| {
                    Err(cli::exit::CliError::new(
                        cli::exit::Code::TimedOut,
                        format!(
                            "the daemon at {daemon} did not answer within {} s (is it stopped or overloaded? --request-timeout SECS or HERD_REQUEST_TIMEOUT changes the limit)",
                            limit.as_secs()
                        ),
                    )
                    .into())
                })
            })
        }
    }
}
