//! `herd hooks`, `herd hooks dead`, `herd hooks replay ID|--all`: the Hooks service.

use super::client::{Target, status_error};
use super::commands::format_time;
use super::output::{print_json, table};
use anyhow::Context;
use clap::Subcommand;
use herd_proto::supervisor as pb;
use herd_proto::supervisor::hooks_client::HooksClient;
use serde_json::Value;

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

fn parse(r: tonic::Response<pb::JsonReply>) -> anyhow::Result<Value> {
    serde_json::from_str(&r.into_inner().json).context("the daemon sent JSON that does not parse")
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub async fn run(target: &Target, command: Option<HooksCommand>, json: bool) -> anyhow::Result<()> {
    let mut c = HooksClient::new(super::client::channel(target).await?);
    match command {
        None => {
            let v = parse(c.list(pb::HooksRequest {}).await.map_err(status_error)?)?;
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
                        text(&h["name"]),
                        text(&h["target"]),
                        text(&h["delivered"]),
                        text(&h["failed"]),
                        text(&h["pending"]),
                        text(&h["dead"]),
                        text(&h["last_error"]),
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
            let v = parse(c.dead(pb::HooksRequest {}).await.map_err(status_error)?)?;
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
                        text(&d["id"]),
                        text(&d["hook"]),
                        text(&d["event"]),
                        format!("{}{instance}", text(&d["app"])),
                        d["dead_ms"].as_u64().map_or("-".into(), format_time),
                        text(&d["attempts"]),
                        text(&d["last_error"]),
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
            let v = parse(
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
                eprintln!("skipped {}: {}", text(&s["id"]), text(&s["reason"]));
            }
        }
    }
    Ok(())
}
