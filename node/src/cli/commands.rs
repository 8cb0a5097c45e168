//! The app commands: each sends one request to the daemon and prints the answer.

use super::client::{Client, status_error};
use super::output::{self, print_instances, print_json};
use super::progress::Progress;
use super::{Command, is_app_file};
use crate::supervisor::spec::{AppSpec, parse_signal};
use anyhow::{Context, bail};
use herd_proto::supervisor as pb;
use serde_json::json;
use std::io::Write;
use std::path::Path;

pub async fn run(mut client: Client, command: Command, json: bool) -> anyhow::Result<()> {
    match command {
        Command::Start {
            target,
            name,
            instances,
            restart,
            command,
        } => {
            let req = match (target, name) {
                (Some(t), None) if is_app_file(&t) => file_request(&t)?,
                (Some(t), None) => {
                    let r = client
                        .start(pb::NameRequest { name: t })
                        .await
                        .map_err(status_error)?;
                    print_instances(&r.into_inner().instances, json);
                    return Ok(());
                }
                (None, Some(n)) => quick_request(&n, instances, restart, command)?,
                (Some(_), Some(_)) => bail!(
                    "give either an app file / name, or --name with a command after `--`, not both"
                ),
                (None, None) => bail!(
                    "nothing to start: `herd start FILE`, `herd start NAME` or `herd start --name NAME -- CMD ARGS...`"
                ),
            };
            // The daemon answers once every app of the file has started (or failed to).
            let progress = Progress::spinner(json, format!("starting {}", apps_in(&req)));
            let r = client.apply(req).await.map_err(status_error)?.into_inner();
            drop(progress);
            if !r.instances.is_empty() || r.jobs.is_empty() {
                print_instances(&r.instances, json);
            } else if json {
                print_json(&json!({ "jobs": r.jobs }));
            }
            if !json {
                for j in &r.jobs {
                    outln!("job {j} registered (`herd jobs`, `herd run {j}`)");
                }
            }
        }
        Command::Stop { name, timeout } => {
            let r = client
                .stop(pb::StopRequest {
                    name,
                    timeout_s: timeout,
                })
                .await
                .map_err(status_error)?;
            print_instances(&r.into_inner().instances, json);
        }
        Command::Restart { name } => {
            let r = client
                .restart(pb::NameRequest { name })
                .await
                .map_err(status_error)?;
            print_instances(&r.into_inner().instances, json);
        }
        Command::Delete { name, timeout } => {
            let r = client
                .delete(pb::StopRequest {
                    name,
                    timeout_s: timeout,
                })
                .await
                .map_err(status_error)?
                .into_inner();
            if json {
                print_json(&json!({ "deleted": r.deleted }));
            } else {
                for n in r.deleted {
                    outln!("deleted {n}");
                }
            }
        }
        Command::Scale { name, instances } => {
            let r = client
                .scale(pb::ScaleRequest { name, instances })
                .await
                .map_err(status_error)?;
            print_instances(&r.into_inner().instances, json);
        }
        Command::Ps { name } => {
            let r = client
                .list(pb::ListRequest {
                    name: name.unwrap_or_default(),
                })
                .await
                .map_err(status_error)?;
            print_instances(&r.into_inner().instances, json);
        }
        Command::Inspect { name } => inspect(&mut client, name, json).await?,
        Command::Reload { name } => {
            let r = client
                .reload(pb::NameRequest { name })
                .await
                .map_err(status_error)?;
            print_instances(&r.into_inner().instances, json);
        }
        Command::Health { name } => {
            let r = client
                .list(pb::ListRequest {
                    name: name.unwrap_or_default(),
                })
                .await
                .map_err(status_error)?;
            output::print_health(&r.into_inner().instances, json);
        }
        Command::Metrics { name } => {
            let r = client
                .metrics(pb::ListRequest {
                    name: name.unwrap_or_default(),
                })
                .await
                .map_err(status_error)?;
            output::print_metrics(&r.into_inner(), json);
        }
        Command::Events {
            name,
            lines,
            follow,
        } => {
            let req = pb::EventsRequest {
                name: name.unwrap_or_default(),
                lines,
                follow,
            };
            let mut stream = client.events(req).await.map_err(status_error)?.into_inner();
            while let Some(e) = stream.message().await.map_err(status_error)? {
                if json {
                    outln!("{}", e.json);
                } else {
                    outln!("{}", output::event_text(&e.json));
                }
            }
        }
        Command::Graph { name } => {
            let r = client
                .graph(pb::NameRequest { name })
                .await
                .map_err(status_error)?
                .into_inner();
            if json {
                let v: serde_json::Value = serde_json::from_str(&r.json).unwrap_or_default();
                print_json(&v);
            } else {
                out!("{}", r.text);
            }
        }
        Command::ReloadConfig => {
            let r = client
                .reload_config(pb::ReloadConfigRequest {})
                .await
                .map_err(status_error)?
                .into_inner();
            if json {
                print_json(&json!({ "file": r.file, "changed": r.changed }));
            } else if r.changed.is_empty() {
                outln!("config {} reloaded; nothing changed", r.file);
            } else {
                outln!(
                    "config {} reloaded; changed: {}",
                    r.file,
                    r.changed.join(", ")
                );
            }
        }
        Command::Watch { name, state } => {
            let on = state == super::WatchState::On;
            let r = client
                .watch(pb::WatchRequest { name, on })
                .await
                .map_err(status_error)?
                .into_inner();
            if json {
                print_json(&json!({ "name": r.name, "watching": r.watching }));
            } else {
                let now = if r.watching { "on" } else { "off" };
                outln!("{}: watching {now}", r.name);
            }
        }
        Command::Dashboard => {
            let r = client
                .dashboard_link(pb::DashboardLinkRequest {})
                .await
                .map_err(status_error)?
                .into_inner();
            if json {
                print_json(&json!({ "url": r.url, "expires_in_s": r.expires_in_s }));
            } else {
                outln!("{}", r.url);
                eprintln!(
                    "open it within {} s; it signs one browser in as admin, once",
                    r.expires_in_s
                );
            }
        }
        Command::Logs {
            name,
            lines,
            follow,
            run,
        } => logs(&mut client, name, lines, follow, run, json).await?,
        Command::Up { .. }
        | Command::Down { .. }
        | Command::Kill
        | Command::LeaseKeeper
        | Command::Ping
        | Command::Cluster(_)
        | Command::Token(_)
        | Command::Secret(_)
        | Command::Run(_)
        | Command::Jobs { .. }
        | Command::Pause
        | Command::Resume
        | Command::Hooks { .. }
        | Command::Import(_)
        | Command::Context(_)
        | Command::Completions { .. }
        | Command::Man { .. }
        | Command::Startup { .. }
        | Command::Unstartup => {
            unreachable!("lifecycle and daemon-less commands are dispatched in main")
        }
    }
    Ok(())
}

/// "the 40 apps of apps.toml", for a progress line (just "apps.toml" if it does not parse).
fn apps_in(req: &pb::ApplyRequest) -> String {
    match toml::from_str::<toml::Value>(&req.toml) {
        Ok(v) => {
            let n = v.get("app").and_then(|a| a.as_array()).map_or(0, Vec::len);
            format!(
                "the {n} app{} of {}",
                if n == 1 { "" } else { "s" },
                req.source
            )
        }
        Err(_) => req.source.clone(),
    }
}

pub fn file_request(path: &str) -> anyhow::Result<pb::ApplyRequest> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read app file {path}"))?;
    let abs = std::path::absolute(path).with_context(|| format!("cannot resolve {path}"))?;
    let base = abs.parent().unwrap_or(Path::new("/")).display().to_string();
    Ok(pb::ApplyRequest {
        source: path.to_string(),
        base_dir: base,
        toml: text,
    })
}

/// `herd start --name N -- CMD ARGS...` becomes a one-app file, so it goes through exactly
/// the same validation as a file.
fn quick_request(
    name: &str,
    instances: Option<u32>,
    restart: Option<String>,
    command: Vec<String>,
) -> anyhow::Result<pb::ApplyRequest> {
    let mut words = command.into_iter();
    let Some(program) = words.next() else {
        bail!(
            "--name {name} needs a command after `--`, e.g. `herd start --name {name} -- python3 -m http.server`"
        );
    };
    let mut spec = AppSpec::quick(name, &program, words.collect());
    if let Some(n) = instances {
        spec.instances = n;
    }
    if let Some(r) = restart {
        spec.restart = serde_json::from_value(json!(r))
            .map_err(|_| anyhow::anyhow!("--restart `{r}`: use always, on-failure or never"))?;
    }
    debug_assert!(parse_signal(&spec.stop_signal).is_some());
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let toml = toml::to_string(&FileOf { app: vec![spec] }).context("cannot encode the app")?;
    Ok(pb::ApplyRequest {
        source: "<command line>".into(),
        base_dir: cwd.display().to_string(),
        toml,
    })
}

#[derive(serde::Serialize)]
struct FileOf {
    app: Vec<AppSpec>,
}

async fn inspect(client: &mut Client, name: String, json: bool) -> anyhow::Result<()> {
    let r = client
        .inspect(pb::NameRequest { name: name.clone() })
        .await
        .map_err(status_error)?
        .into_inner();
    let spec: serde_json::Value =
        serde_json::from_str(&r.spec_json).unwrap_or(serde_json::Value::Null);
    // An older daemon sends no identity.
    let identity: serde_json::Value =
        serde_json::from_str(&r.identity_json).unwrap_or(serde_json::Value::Null);
    if json {
        let instances: Vec<_> = r
            .instances
            .iter()
            .map(|d| {
                let mut v = d
                    .info
                    .as_ref()
                    .map(output::instance_json)
                    .unwrap_or_default();
                v["exits"] = d.exits.iter().map(output::exit_json).collect();
                v["log_file"] = json!(d.log_file);
                v
            })
            .collect();
        print_json(&json!({
            "name": name,
            "desired": r.desired,
            "spec": spec,
            "identity": identity,
            "watching": r.watching,
            "instances": instances,
        }));
        return Ok(());
    }
    outln!("app {name} (desired: {})", r.desired);
    if spec.get("watch").is_some() {
        outln!("  watching: {}", if r.watching { "on" } else { "off" });
    }
    if let Ok(t) = toml::to_string(&spec) {
        for line in t.lines() {
            outln!("  {line}");
        }
    }
    for line in output::identity_lines(&identity) {
        outln!("{line}");
    }
    for d in &r.instances {
        let Some(i) = &d.info else { continue };
        outln!(
            "instance {}: {} pid {} restarts {} log {}",
            i.instance,
            i.status,
            i.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
            i.restarts,
            d.log_file
        );
        if let Some(text) = &i.status_text {
            outln!("  status (from the app): {text}");
        }
        for e in d.exits.iter().rev() {
            let how = match (&e.code, &e.signal) {
                (Some(c), _) => format!("code {c}"),
                (None, Some(s)) => s.clone(),
                (None, None) => "-".into(),
            };
            outln!("  {}  {how:<10} {}", format_time(e.at_unix_ms), e.reason);
        }
    }
    Ok(())
}

pub fn format_time(ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(t).to_string()
}

async fn logs(
    client: &mut Client,
    name: String,
    lines: u32,
    follow: bool,
    run: Option<u64>,
    json: bool,
) -> anyhow::Result<()> {
    let mut stream = client
        .logs(pb::LogsRequest {
            name,
            lines,
            follow,
            run,
        })
        .await
        .map_err(status_error)?
        .into_inner();
    let mut out = std::io::stdout().lock();
    while let Some(chunk) = stream.message().await.map_err(status_error)? {
        if json {
            for line in String::from_utf8_lossy(&chunk.data).lines() {
                let _ = writeln!(
                    out,
                    "{}",
                    json!({ "instance": chunk.instance, "line": line })
                );
            }
        } else if out.write_all(&chunk.data).is_err() {
            break;
        }
        let _ = out.flush();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_are_printed_in_utc() {
        assert_eq!(super::format_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(
            super::format_time(1_795_305_600_000),
            "2026-11-22T00:00:00Z"
        );
    }
}
