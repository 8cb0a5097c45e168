//! `herd token ...` and `herd secret ...`: the Access service. A secret's value is read from
//! standard input, never from an argument (which `ps` would show to every user of the host).

use super::client::{Target, status_error};
use super::commands::format_time;
use super::output::{duration_text, print_json, reply_json, table};
use anyhow::Context;
use clap::Subcommand;
use herd_proto::supervisor as pb;
use herd_proto::supervisor::access_client::AccessClient;
use serde_json::Value;
use std::io::{Read, Write};

/// Largest secret value read from standard input.
const MAX_SECRET_BYTES: usize = 64 * 1024;

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Make a token; its secret is printed once (keep it in a 0600 file for --token-file).
    Create {
        /// viewer, operator or admin (see the README's roles table).
        #[arg(long)]
        role: String,
        /// Who or what it is for, shown by `token list` and in events (`by_name`).
        #[arg(long, default_value = "")]
        name: String,
        /// Lifetime, like `30d`, `12h`, `90m` (default: no expiry).
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: Option<std::time::Duration>,
    },
    /// Tokens: accessor, name, role, created, expires, last used (never a secret).
    #[command(alias = "ls")]
    List,
    /// Revoke a token by its accessor: every node refuses it from then on.
    Revoke { accessor: String },
}

#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Set a secret from standard input (`printf %s "$PASS" | herd secret put db/pass`).
    Put { name: String },
    /// Secrets: name, version, when set (never a value).
    #[command(alias = "ls")]
    List,
    /// Remove a secret (apps that name it are refused at their next start).
    Delete { name: String },
    /// Print a secret's value (admin only).
    Get { name: String },
}

fn when(v: &Value) -> String {
    v.as_u64().map_or("-".into(), format_time)
}

pub async fn tokens(target: &Target, command: TokenCommand, json: bool) -> anyhow::Result<()> {
    let mut c = AccessClient::new(super::client::channel(target).await?);
    match command {
        TokenCommand::Create { role, name, ttl } => {
            let v = reply_json(
                c.create_token(pb::CreateTokenRequest {
                    role,
                    name,
                    // Rounded up: `--ttl 1ms` lives a second, `--ttl 0s` is refused by the daemon.
                    ttl_s: ttl.map(|t| t.as_millis().div_ceil(1000) as u64),
                })
                .await
                .map_err(status_error)?,
            )?;
            if json {
                print_json(&v);
            } else {
                outln!(
                    "token {} ({}, role {}){}",
                    v["accessor"].as_str().unwrap_or("?"),
                    v["name"]
                        .as_str()
                        .filter(|n| !n.is_empty())
                        .unwrap_or("no name"),
                    v["role"].as_str().unwrap_or("?"),
                    match v["expires_ms"].as_u64() {
                        Some(e) => format!(", expires {}", format_time(e)),
                        None => String::new(),
                    }
                );
                outln!(
                    "secret (shown this once): {}",
                    v["secret"].as_str().unwrap_or("?")
                );
            }
        }
        TokenCommand::List => {
            let v = reply_json(
                c.list_tokens(pb::ListAccessRequest {})
                    .await
                    .map_err(status_error)?,
            )?;
            if json {
                print_json(&v);
                return Ok(());
            }
            let now = crate::supervisor::now_ms();
            let rows: Vec<Vec<String>> = v["tokens"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .map(|t| {
                    vec![
                        t["accessor"].as_str().unwrap_or("?").into(),
                        t["name"].as_str().unwrap_or("").into(),
                        t["role"].as_str().unwrap_or("?").into(),
                        t["state"].as_str().unwrap_or("?").into(),
                        when(&t["created_ms"]),
                        when(&t["expires_ms"]),
                        t["last_used_ms"].as_u64().map_or("-".into(), |u| {
                            format!("{} ago", duration_text(now.saturating_sub(u) / 1000))
                        }),
                    ]
                })
                .collect();
            table(
                &[
                    "ACCESSOR",
                    "NAME",
                    "ROLE",
                    "STATE",
                    "CREATED",
                    "EXPIRES",
                    "LAST USED",
                ],
                &rows,
            );
        }
        TokenCommand::Revoke { accessor } => {
            let v = reply_json(
                c.revoke_token(pb::NameRequest { name: accessor })
                    .await
                    .map_err(status_error)?,
            )?;
            if json {
                print_json(&v);
            } else if v["changed"] == Value::Bool(false) {
                outln!(
                    "token {} was revoked already",
                    v["revoked"].as_str().unwrap_or("?")
                );
            } else {
                outln!("token {} revoked", v["revoked"].as_str().unwrap_or("?"));
            }
        }
    }
    Ok(())
}

pub async fn secrets(target: &Target, command: SecretCommand, json: bool) -> anyhow::Result<()> {
    let mut c = AccessClient::new(super::client::channel(target).await?);
    match command {
        SecretCommand::Put { name } => {
            let mut value = Vec::new();
            std::io::stdin()
                .take(MAX_SECRET_BYTES as u64 + 1)
                .read_to_end(&mut value)
                .context("cannot read the secret's value from standard input")?;
            if value.len() > MAX_SECRET_BYTES {
                anyhow::bail!("the value is larger than {MAX_SECRET_BYTES} bytes");
            }
            let v = reply_json(
                c.put_secret(pb::PutSecretRequest { name, value })
                    .await
                    .map_err(status_error)?,
            )?;
            if json {
                print_json(&v);
            } else {
                outln!(
                    "secret {} {} (version {})",
                    v["name"].as_str().unwrap_or("?"),
                    if v["changed"] == false {
                        "unchanged"
                    } else {
                        "set"
                    },
                    v["version"]
                );
            }
        }
        SecretCommand::List => {
            let v = reply_json(
                c.list_secrets(pb::ListAccessRequest {})
                    .await
                    .map_err(status_error)?,
            )?;
            if json {
                print_json(&v);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = v["secrets"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .map(|s| {
                    vec![
                        s["name"].as_str().unwrap_or("?").into(),
                        s["version"].to_string(),
                        when(&s["set_ms"]),
                        s["set_by"].as_str().unwrap_or("").into(),
                    ]
                })
                .collect();
            table(&["NAME", "VERSION", "SET", "BY"], &rows);
        }
        SecretCommand::Delete { name } => {
            let v = reply_json(
                c.delete_secret(pb::NameRequest { name })
                    .await
                    .map_err(status_error)?,
            )?;
            if json {
                print_json(&v);
            } else {
                outln!("secret {} deleted", v["deleted"].as_str().unwrap_or("?"));
            }
        }
        SecretCommand::Get { name } => {
            let v = c
                .get_secret(pb::NameRequest { name })
                .await
                .map_err(status_error)?
                .into_inner();
            if json {
                print_json(&serde_json::json!({
                    "name": v.name,
                    "version": v.version,
                    "value": String::from_utf8_lossy(&v.value),
                }));
            } else {
                // The value as stored, byte for byte (no newline added).
                let mut out = std::io::stdout().lock();
                out.write_all(&v.value)?;
                out.flush()?;
            }
        }
    }
    Ok(())
}
