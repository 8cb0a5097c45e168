//! The `herd` command line: one binary is both the CLI and (with `up --foreground`) the daemon.

/// `println!` for the CLI's output: a closed stdout (`herd ps | head`) ends the command
/// quietly instead of panicking.
macro_rules! outln {
    ($($t:tt)*) => { $crate::cli::output::write_out(format_args!("{}\n", format_args!($($t)*))) };
}
macro_rules! out {
    ($($t:tt)*) => { $crate::cli::output::write_out(format_args!($($t)*)) };
}

pub mod access;
pub mod client;
pub mod cluster;
pub mod cluster_wait;
pub mod colour;
pub mod commands;
pub mod completions;
pub mod context;
pub mod daemon_ctl;
pub mod exit;
pub mod hooks;
pub mod import;
pub mod jobs;
pub mod man;
pub mod output;
pub mod progress;
pub mod startup;
pub mod uptime;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(
    name = "herd",
    version,
    about = "A clustered process supervisor",
    propagate_version = true
)]
pub struct Cli {
    /// Talk to the daemon at HOST[:PORT] over its TCP API (default port 9700) instead of
    /// this host's daemon. Needs its token.
    #[arg(long, global = true, env = "HERD_HOST", value_name = "HOST[:PORT]")]
    pub host: Option<String>,
    /// The file holding the remote daemon's API token (or set HERD_TOKEN).
    #[arg(long, global = true, env = "HERD_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// For `--host https://...`: the CA certificate (PEM) that signed the daemon's.
    #[arg(long, global = true, env = "HERD_CA_FILE", value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Give up when the daemon has not answered within SECS (default 30 for quick calls, no
    /// limit for those that wait: down, stop, delete, restart, scale, start, reload, -f, and
    /// cluster changes); 0: no limit.
    #[arg(long, global = true, env = "HERD_REQUEST_TIMEOUT", value_name = "SECS")]
    pub request_timeout: Option<u64>,
    /// Colour the output: auto (when stdout is a terminal and NO_COLOR is unset or empty),
    /// always, or never. An explicit always/never wins over NO_COLOR.
    #[arg(long, global = true, value_enum, value_name = "WHEN", default_value_t)]
    pub color: colour::When,
    /// Print exactly one JSON document on stdout (an error too: `{"error": ..., "code": N}`);
    /// `logs` and `events` print one JSON object per line. Exit codes are the same as in text
    /// mode (see the README's "Scripting herd").
    #[arg(long, global = true)]
    pub json: bool,
    /// Talk to the daemon of context NAME (`herd context add`) instead of the current one.
    #[arg(long, global = true, env = "HERD_CONTEXT", value_name = "NAME")]
    pub context: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the daemon (in the background unless --foreground).
    Up {
        #[arg(long)]
        foreground: bool,
        /// Internal: set by `herd up` on the daemon it launches.
        #[arg(long, hide = true)]
        detached: bool,
        /// The daemon config (default: $HERD_HOME/config.toml, optional).
        #[arg(long, env = "HERD_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Stop every app, flush the state and stop the daemon.
    Down {
        /// Seconds each app gets to stop before SIGKILL (default: the app's stop_timeout_s).
        #[arg(long)]
        timeout: Option<u64>,
        /// Leave the apps running (for a daemon upgrade); the next `herd up` adopts them.
        #[arg(long)]
        keep_apps: bool,
    },
    /// SIGKILL a hung daemon and clear its lock. Apps keep running.
    Kill,
    /// Internal: the daemon's singleton lease keeper (see `supervisor::lease`).
    #[command(hide = true)]
    LeaseKeeper,
    /// Is the daemon up? Prints its pid, version and uptime.
    Ping,
    /// Start apps: from an app file, a registered app by name, or `--name N -- CMD ARGS...`.
    Start {
        /// An app file (TOML with [[app]] tables) or the name of a registered app.
        target: Option<String>,
        /// Quick form: the app's name (the command follows `--`).
        #[arg(long)]
        name: Option<String>,
        #[arg(long, requires = "name")]
        instances: Option<u32>,
        /// Quick form: restart policy (always, on-failure, never).
        #[arg(long, requires = "name")]
        restart: Option<String>,
        /// Quick form: the command and its arguments.
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// Stop an app's instances (stop signal to each process group, SIGKILL after the timeout).
    Stop {
        name: String,
        #[arg(long)]
        timeout: Option<u64>,
    },
    /// Stop and start an app again; clears a `crashed` status.
    Restart { name: String },
    /// Stop an app and forget it (its log files stay).
    Delete {
        name: String,
        #[arg(long)]
        timeout: Option<u64>,
    },
    /// Change how many instances of an app run.
    Scale { name: String, instances: u32 },
    /// One row per instance.
    #[command(alias = "ls", alias = "list")]
    Ps { name: Option<String> },
    /// An app's spec, its instances and their last exits.
    Inspect { name: String },
    /// Replace an app's instances one at a time, each new one healthy before the old stops.
    Reload { name: String },
    /// Turn an app's file watch (its `watch` keys) on or off; kept across daemon restarts.
    Watch {
        name: String,
        #[arg(value_enum)]
        state: WatchState,
    },
    /// Probe state of every instance (or of one app's).
    Health { name: Option<String> },
    /// CPU and memory of the host, the daemon and each instance's process tree.
    Metrics { name: Option<String> },
    /// Lifecycle events (started, exited, restarting, crashed, health, ...), newest last.
    Events {
        name: Option<String>,
        #[arg(long, short = 'n', default_value_t = 50)]
        lines: u32,
        #[arg(long, short = 'f')]
        follow: bool,
    },
    /// The dependency tree of an app (`depends_on`).
    Graph { name: String },
    /// Re-read the daemon config (as SIGHUP does); a bad file is refused and the old one kept.
    ReloadConfig,
    /// A one-time link that signs this browser in to the web dashboard as admin (good for
    /// two minutes, once). Over the socket only: the daemon's own user asks for it.
    Dashboard,
    /// The cluster this daemon belongs to (see the README's Cluster section).
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// API tokens with roles (viewer, operator, admin): create, list, revoke.
    #[command(subcommand)]
    Token(access::TokenCommand),
    /// Secrets sealed at rest, for apps' env as `secret:NAME`: put, list, delete, get.
    #[command(subcommand)]
    Secret(access::SecretCommand),
    /// Hooks (webhooks and programs run on events): delivered, failed and pending per hook;
    /// `dead` lists the deliveries that gave up, `replay` sends them again.
    Hooks {
        #[command(subcommand)]
        command: Option<hooks::HooksCommand>,
    },
    /// Named remote daemons (host, token file, CA) to switch between, kept in
    /// ~/.config/herd/contexts.toml: add, use, list, remove. No daemon needed.
    #[command(subcommand)]
    Context(context::ContextCommand),
    /// Print a herd app file made from a PM2 ecosystem file or a supervisord.conf (no daemon
    /// needed); keys that could not be mapped are listed on stderr.
    #[command(subcommand)]
    Import(import::ImportCommand),
    /// Print a completion script for SHELL on stdout (no daemon needed), e.g.
    /// `herd completions bash > /etc/bash_completion.d/herd`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print herd's man page (roff) on stdout, or with --dir write one page per command
    /// (herd.1, herd-start.1, herd-cluster-deploy.1, ...). No daemon needed.
    Man {
        /// Write every page into DIR (created if missing) instead of printing herd(1).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Install the systemd unit that starts this daemon at boot (/etc/systemd/system/
    /// herd.service, with this binary and HERD_HOME), reload systemd and enable it now. No
    /// daemon needed. Without systemd, prints the unit and what to do.
    Startup {
        /// Run the daemon as USER (its ~/.herd unless HERD_HOME is set); default root.
        #[arg(long, value_name = "USER")]
        user: Option<String>,
        /// Only print the unit.
        #[arg(long)]
        print: bool,
    },
    /// Disable and remove the unit `herd startup` installed (a running daemon keeps running).
    Unstartup,
    /// An app's output (stdout and stderr), newest last; for a job, its latest run's (or
    /// --run ID's).
    Logs {
        name: String,
        #[arg(long, short = 'n', default_value_t = 50)]
        lines: u32,
        #[arg(long, short = 'f')]
        follow: bool,
        /// A job's run (see `herd jobs history NAME`).
        #[arg(long, value_name = "ID")]
        run: Option<u64>,
    },
    /// Queue a run of a job now and print its id; --wait streams its output and exits with
    /// its exit code.
    Run(jobs::RunArgs),
    /// Jobs (`[[job]]` tables): list, history NAME, cancel RUN.
    Jobs {
        #[command(subcommand)]
        command: Option<jobs::JobsCommand>,
    },
    /// Stop dispatching job runs (running ones go on; scheduled ticks are skipped).
    Pause,
    /// Dispatch job runs again.
    Resume,
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Cluster name, this node, leader, term, commit index, and every node with its health.
    Status,
    /// Every node: id, address, role (voter/standby/agent), health, heartbeat, instances,
    /// reachability, resources, version, labels.
    Nodes,
    /// Who leads, in which term.
    Leader,
    /// The leader hands over to another voter.
    StepDown,
    /// This node leaves the cluster cleanly.
    Leave,
    /// Register (or replace) the apps of an app file in the cluster registry.
    Deploy { file: String },
    /// Remove an app from the cluster registry.
    Undeploy { name: String },
    /// Move a node's instances elsewhere (start new, then stop old) and keep new ones off it;
    /// returns once nothing runs there (unless --no-wait).
    Drain {
        /// Node id or address.
        node: String,
        #[arg(long)]
        no_wait: bool,
        /// Give up waiting after this many seconds.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
    },
    /// Let a drained node take instances again.
    Undrain { node: String },
    /// Rolling restart of a deployed app, one node at a time.
    Restart {
        name: String,
        /// Wait until every instance runs again at the new generation.
        #[arg(long)]
        wait: bool,
        /// With --wait: give up after this many seconds (the restart itself goes on, and
        /// stays halted on an instance that does not come back).
        #[arg(long, default_value_t = 600)]
        timeout: u64,
    },
    /// Change how many instances of a deployed app the cluster runs.
    Scale { name: String, instances: u32 },
    /// Per-day uptime of each node (or one), as a bar of coloured cells like a status page.
    Uptime {
        /// A node id or address.
        node: Option<String>,
        #[arg(long, default_value_t = 30)]
        days: u32,
    },
    /// Deployed apps: desired instances, placement and where instances are assigned.
    Apps {
        /// Read this node's replica instead of asking the leader.
        #[arg(long)]
        stale: bool,
    },
}

/// `herd watch NAME on|off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WatchState {
    On,
    Off,
}

/// How long a quick call may take before the CLI gives up (a stopped or wedged daemon must not
/// hang a script).
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

impl Command {
    /// Calls that legitimately take as long as apps take to stop or start, or that follow.
    fn waits(&self) -> bool {
        match self {
            Command::Down { .. }
            | Command::Stop { .. }
            | Command::Delete { .. }
            | Command::Restart { .. }
            | Command::Scale { .. }
            | Command::Start { .. }
            | Command::Reload { .. } => true,
            Command::Logs { follow, .. } | Command::Events { follow, .. } => *follow,
            Command::Run(r) => r.wait,
            Command::Cluster(c) => !matches!(
                c,
                ClusterCommand::Status
                    | ClusterCommand::Nodes
                    | ClusterCommand::Leader
                    | ClusterCommand::Uptime { .. }
                    | ClusterCommand::Apps { .. }
            ),
            _ => false,
        }
    }
}

/// The request timeout of `command`: `--request-timeout` (0: none), else the default for
/// quick calls.
pub fn request_timeout(flag: Option<u64>, command: &Command) -> Option<Duration> {
    match flag {
        Some(0) => None,
        Some(s) => Some(Duration::from_secs(s)),
        None if command.waits() => None,
        None => Some(DEFAULT_REQUEST_TIMEOUT),
    }
}

/// Where the home is, for commands that touch its files directly.
pub fn home() -> anyhow::Result<crate::home::Home> {
    crate::home::Home::from_env()
}

/// An app file argument is anything that names an existing file or ends in `.toml`.
pub fn is_app_file(target: &str) -> bool {
    target.ends_with(".toml") || PathBuf::from(target).is_file()
}
