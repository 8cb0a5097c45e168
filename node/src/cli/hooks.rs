//! `herd hooks`, `herd hooks dead`, `herd hooks replay ID|--all`: the Hooks service.

use super::client::{Target, status_error};
use super::commands::format_time;
use super::output::{cell, print_json, reply_json, table};
use clap::Subcommand;
use herd_proto::supervisor as pb;
use herd_proto::supervisor::hooks_client::HooksClient;

#[derive(Debug, Subcommand)]
pub enum HooksCommand {
    /// Deliveries that used all their attempts (or found the queue full): id, hook, event,
    /// app, attempts, last error.
    Dead,
    /// Put dead letters back into their hooks' queues (each is then tried again, with a fresh
    /// count of attempts).
    #[command(group(clap::ArgGroup::new("which").required(true).args(["id", "all"])))]
    Replay {
        /// A dead letter's id (`herd hooks dead` lists them).
        id: Option<String>,
        /// Every dead letter.
        #[arg(long)]
        all: bool,
    },
}

pub async fn run(target: &Target, command: Option<HooksCommand>, json: bool) -> anyhow::Result<()> {
    let mut c = HooksClient::new(super::client::channel(target).await?);
    match command {
        None => {
            let v = reply_json(c.list(pb::HooksRequest {}).await.map_err(status_error)?)?;
            if json {
                print_json(&v);
                return Ok(());
            }
            let hooks = v["hooks"].as_array().map(Vec::as_slice).unwrap_or_default();
            if hooks.is_empty() {
                outln!(
                    "no hooks; add [[hook]] tables to the daemon's config.toml (see the README's Hooks section)"
                );
                return Ok(());
            }
            let rows: Vec<Vec<String>> = hooks
                .iter()
                .map(|h| {
                    vec![
                        cell(&h["name"]),
                        cell(&h["target"]),
                        cell(&h["delivered"]),
                        cell(&h["failed"]),
                        cell(&h["pending"]),
                        cell(&h["dead"]),
                        cell(&h["last_error"]),
                    ]
                })
                .collect();
            table(
                &[
                    "HOOK",
                    "TARGET",
                    "DELIVERED",
                    "FAILED",
                    "PENDING",
                    "DEAD",
                    "LAST ERROR",
                ],
                &rows,
            );
            if let Some(n) = v["dropped_events"].as_u64().filter(|n| *n > 0) {
                eprintln!("{n} events found the hooks' queue full and reached no hook");
            }
        }
        Some(HooksCommand::Dead) => {
            let v = reply_json(c.dead(pb::HooksRequest {}).await.map_err(status_error)?)?;
            if json {
                print_json(&v);
                return Ok(());
            }
            let dead = v["dead"].as_array().map(Vec::as_slice).unwrap_or_default();
            if dead.is_empty() {
                outln!("no dead letters");
                return Ok(());
            }
            let rows: Vec<Vec<String>> = dead
                .iter()
                .map(|d| {
                    let instance = d["instance"]
                        .as_u64()
                        .map_or(String::new(), |i| format!("/{i}"));
                    vec![
                        cell(&d["id"]),
                        cell(&d["hook"]),
                        cell(&d["event"]),
                        format!("{}{instance}", cell(&d["app"])),
                        d["dead_ms"].as_u64().map_or("-".into(), format_time),
                        cell(&d["attempts"]),
                        cell(&d["last_error"]),
                    ]
                })
                .collect();
            table(
                &[
                    "ID",
                    "HOOK",
                    "EVENT",
                    "APP",
                    "FAILED",
                    "ATTEMPTS",
                    "LAST ERROR",
                ],
                &rows,
            );
        }
        Some(HooksCommand::Replay { id, all }) => {
            let v = reply_json(
                c.replay(pb::ReplayRequest {
                    id: id.unwrap_or_default(),
                    all,
                })
                .await
                .map_err(status_error)?,
            )?;
            if json {
                print_json(&v);
                return Ok(());
            }
            let replayed = v["replayed"].as_array().map_or(0, Vec::len);
            outln!(
                "{replayed} dead letter{} queued again",
                if replayed == 1 { "" } else { "s" }
            );
            for s in v["skipped"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                eprintln!("skipped {}: {}", cell(&s["id"]), cell(&s["reason"]));
            }
        }
    }
    Ok(())
}
