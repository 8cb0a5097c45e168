//! `herd run`, `herd jobs ...`, `herd pause`, `herd resume`: the Jobs service.

use super::client::{Target, status_error};
use super::output::{cell, print_json, reply_json, table};
use clap::Subcommand;
use herd_proto::supervisor as pb;
use herd_proto::supervisor::jobs_client::JobsClient;
use serde_json::Value;
use std::io::Write;

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// Every job: schedule, next tick, running and queued runs, last result (the default).
    #[command(alias = "ls")]
    List,
    /// A job's runs, oldest first: id, queued/started/finished, exit, reason, attempt.
    History {
        name: String,
        /// Only the newest N.
        #[arg(long, short = 'n')]
        lines: Option<u32>,
    },
    /// Drop a queued run, or stop a running one (reason `cancelled`).
    Cancel { run: u64 },
}

/// `herd run NAME [--wait] [--priority P] [-- ARGS...]`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The job (a `[[job]]` of an app file started with `herd start FILE`).
    pub name: String,
    /// Stream the run's output and exit with its exit code (128+N for signal N).
    #[arg(long)]
    pub wait: bool,
    /// This run's priority instead of the job's.
    #[arg(long, allow_negative_numbers = true)]
    pub priority: Option<i32>,
    /// Appended to the job's args.
    #[arg(last = true)]
    pub args: Vec<String>,
}

/// "exit 3", "SIGKILL", or "-".
fn exit_text(run: &Value) -> String {
    match (run["exit_code"].as_i64(), run["signal"].as_str()) {
        (Some(c), _) => format!("exit {c}"),
        (None, Some(s)) => s.to_string(),
        _ => "-".into(),
    }
}

pub async fn run(target: &Target, args: RunArgs, json: bool) -> anyhow::Result<()> {
    let mut c = JobsClient::new(super::client::channel(target).await?);
    let name = args.name.clone();
    let v = reply_json(
        c.run(pb::RunJobRequest {
            name: args.name,
            priority: args.priority,
            args: args.args,
        })
        .await
        .map_err(status_error)?,
    )?;
    if v["cluster"] == true {
        if json {
            print_json(&v);
        } else {
            outln!(
                "asked the cluster's master to run {name} (request {})",
                v["request"]
            );
        }
        if args.wait {
            anyhow::bail!(
                "--wait follows runs of this host's jobs; `herd jobs history {name}` shows the cluster's runs"
            );
        }
        return Ok(());
    }
    let id = v["id"].as_u64().unwrap_or(0);
    if !args.wait {
        if json {
            print_json(&v);
        } else {
            outln!("queued run {id} of {name}");
            if v["paused"] == true {
                eprintln!("job dispatching is paused: the run waits for `herd resume`");
            }
        }
        return Ok(());
    }
    if !json {
        eprintln!("run {id} of {name} queued; waiting for it");
    }
    let mut client = super::client::connect(target).await?;
    let mut stream = client
        .logs(pb::LogsRequest {
            name: name.clone(),
            lines: u32::MAX,
            follow: true,
            run: Some(id),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    let mut out = std::io::stdout().lock();
    while let Some(chunk) = stream.message().await.map_err(status_error)? {
        if json {
            continue;
        }
        if out.write_all(&chunk.data).is_err() {
            break;
        }
        let _ = out.flush();
    }
    drop(out);
    // The log ends with the run; its record is final once the daemon has judged it.
    let run = loop {
        let r = reply_json(
            c.get(pb::RunIdRequest { run: id })
                .await
                .map_err(status_error)?,
        )?;
        if r["state"] == "ended" {
            break r;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    if json {
        print_json(&run);
    } else {
        eprintln!(
            "run {id} of {name}: {} ({})",
            cell(&run["reason"]),
            exit_text(&run)
        );
    }
    let code = match (run["exit_code"].as_i64(), run["signal"].as_str()) {
        (Some(c), _) => c as i32,
        (None, Some(s)) => {
            crate::supervisor::spec::parse_signal(s).map_or(1, |sig| 128 + sig as i32)
        }
        _ => i32::from(run["reason"] != "succeeded"),
    };
    let _ = std::io::stdout().flush();
    std::process::exit(code);
}

pub async fn jobs(target: &Target, command: Option<JobsCommand>, json: bool) -> anyhow::Result<()> {
    let mut c = JobsClient::new(super::client::channel(target).await?);
    match command.unwrap_or(JobsCommand::List) {
        JobsCommand::List => {
            let v = reply_json(
                c.list(pb::ListRequest::default())
                    .await
                    .map_err(status_error)?,
            )?;
            if json {
                print_json(&v);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = v["jobs"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|j| {
                            let last = &j["last"];
                            vec![
                                cell(&j["name"]),
                                cell(&j["schedule"]),
                                cell(&j["next_tick"]),
                                j["running"].as_array().map_or(0, Vec::len).to_string(),
                                j["queued"].as_array().map_or(0, Vec::len).to_string(),
                                if last.is_null() {
                                    "-".into()
                                } else {
                                    format!("{} ({})", cell(&last["reason"]), exit_text(last))
                                },
                            ]
                        })
                        .collect()
                })
                .unwrap_or_default();
            table(
                &["JOB", "SCHEDULE", "NEXT", "RUNNING", "QUEUED", "LAST"],
                &rows,
            );
            if v["paused"] == true {
                outln!("dispatching is paused (`herd resume`)");
            }
        }
        JobsCommand::History { name, lines } => {
            let v = reply_json(
                c.history(pb::JobHistoryRequest {
                    name,
                    limit: lines.unwrap_or(0),
                })
                .await
                .map_err(status_error)?,
            )?;
            if json {
                print_json(&v);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = v["runs"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|r| {
                            vec![
                                cell(&r["id"]),
                                cell(&r["attempt"]),
                                cell(&r["trigger"]),
                                cell(&r["state"]),
                                cell(&r["started_at"]),
                                r["duration_ms"]
                                    .as_u64()
                                    .map_or("-".into(), |d| format!("{:.1}s", d as f64 / 1000.0)),
                                exit_text(r),
                                cell(&r["reason"]),
                                cell(&r["detail"]),
                            ]
                        })
                        .collect()
                })
                .unwrap_or_default();
            table(
                &[
                    "RUN", "ATTEMPT", "TRIGGER", "STATE", "STARTED", "TOOK", "EXIT", "REASON",
                    "DETAIL",
                ],
                &rows,
            );
        }
        JobsCommand::Cancel { run } => {
            let v = reply_json(
                c.cancel(pb::RunIdRequest { run })
                    .await
                    .map_err(status_error)?,
            )?;
            if json {
                print_json(&v);
            } else if v["state"] == "ended" {
                outln!("cancelled queued run {run}");
            } else {
                outln!("stopping run {run}");
            }
        }
    }
    Ok(())
}

pub async fn pause(target: &Target, paused: bool, json: bool) -> anyhow::Result<()> {
    let mut c = JobsClient::new(super::client::channel(target).await?);
    let req = pb::PauseRequest {};
    let v = if paused {
        reply_json(c.pause(req).await.map_err(status_error)?)?
    } else {
        reply_json(c.resume(req).await.map_err(status_error)?)?
    };
    if json {
        print_json(&v);
    } else if paused {
        outln!("job dispatching paused: running runs go on, ticks are skipped");
    } else {
        outln!("job dispatching resumed");
    }
    Ok(())
}
