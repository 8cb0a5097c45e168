//! The dashboard's HTML, rendered on the server with `maud` (every interpolated value is
//! escaped by construction). The same functions render a whole page and the fragments the live
//! stream pushes, so the first paint and every update come from one place.

use super::session::Viewer;
use crate::cli::uptime::Report;
use crate::cluster::replies::{DeployedApp, NodeView};
use maud::{DOCTYPE, Markup, PreEscaped, html};
use serde_json::Value;

/// The page around a view: navigation, who is signed in, the CSRF token for the script.
pub fn layout(title: &str, viewer: &Viewer, cluster: bool, body: Markup) -> String {
    let role = viewer.caller.role.as_str();
    let who = if viewer.caller.name.is_empty() {
        viewer.caller.by.clone()
    } else {
        viewer.caller.name.clone()
    };
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="csrf" content=(viewer.csrf);
                meta name="may-act" content=(viewer.may_act());
                title { "herd · " (title) }
                link rel="stylesheet" href="/assets/style.css";
                script src="/assets/app.js" defer {}
            }
            body {
                header {
                    strong { "herd" }
                    nav {
                        a href="/" { "Apps" }
                        @if cluster { a href="/nodes" { "Nodes" } }
                        a href="/events" { "Events" }
                    }
                    span.who { (who) " · " span #role { (role) } }
                    form method="post" action="/logout" {
                        input type="hidden" name="csrf" value=(viewer.csrf);
                        button type="submit" { "Sign out" }
                    }
                }
                div #flash role="status" {}
                main { (body) }
            }
        }
    }
    .into_string()
}

/// The login form: all a browser without a session ever sees.
pub fn login(error: Option<&str>) -> String {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { "herd · sign in" }
                link rel="stylesheet" href="/assets/style.css";
            }
            body.login {
                form #login method="post" action="/login" {
                    h1 { "herd" }
                    @if let Some(e) = error { p.error { (e) } }
                    label for="token" { "API token" }
                    input #token type="password" name="token" autocomplete="off" required autofocus;
                    button type="submit" { "Sign in" }
                    p.hint { "On the host, " code { "herd dashboard" } " prints a one-time sign-in link." }
                }
            }
        }
    }
    .into_string()
}

fn text(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn status_class(status: &str) -> &'static str {
    match status {
        "running" => "ok",
        "starting" | "stopping" | "reloading" | "awaiting_lease" => "warn",
        "stopped" => "idle",
        _ => "bad",
    }
}

fn bytes(v: &Value) -> String {
    v.as_u64()
        .map(crate::cli::output::bytes_text)
        .unwrap_or_else(|| "-".into())
}

/// The rows of the apps table, from the same JSON objects `herd ps --json` prints.
pub fn app_rows(instances: &[Value], viewer: &Viewer) -> String {
    let act = viewer.may_act();
    html! {
        @if instances.is_empty() {
            tr { td colspan="11" { "no apps; " code { "herd start FILE" } " registers some" } }
        }
        @for i in instances {
            @let name = i["name"].as_str().unwrap_or_default();
            @let status = i["status"].as_str().unwrap_or_default();
            tr data-app=(name) data-instance=(text(&i["instance"])) data-pid=(text(&i["pid"]))
               data-status=(status) data-restarts=(text(&i["restarts"])) {
                td { a href={ "/app/" (name) } { (name) } }
                td { (text(&i["instance"])) }
                td.pid { (text(&i["pid"])) }
                td { span class={ "status " (status_class(status)) } { (status) } }
                td { (text(&i["health"])) }
                td.restarts { (text(&i["restarts"])) }
                td { (i["uptime_s"].as_u64().map(crate::cli::output::duration_text).unwrap_or_else(|| "-".into())) }
                td { (i["cpu_percent"].as_f64().map(|c| format!("{c:.1}%")).unwrap_or_else(|| "-".into())) }
                td { (bytes(&i["rss_bytes"])) }
                td { (i.get("last_exit").filter(|e| !e.is_null()).map(|e| {
                        match (&e["code"], &e["signal"]) {
                            (Value::Number(c), _) => format!("code {c}"),
                            (_, Value::String(s)) => s.clone(),
                            _ => text(&e["reason"]),
                        }
                    }).unwrap_or_else(|| "-".into())) }
                td.actions {
                    @if act && i["instance"].as_u64() == Some(0) {
                        (app_actions(name))
                    }
                }
            }
        }
    }
    .into_string()
}

fn app_actions(name: &str) -> Markup {
    html! {
        @for action in ["restart", "stop", "start"] {
            button type="button" data-action={ "/api/apps/" (name) "/" (action) } { (action) }
        }
    }
}

/// The apps table around its rows.
pub fn apps_table(rows: &str) -> Markup {
    html! {
        table #apps {
            thead { tr {
                th { "App" } th { "Inst" } th { "PID" } th { "Status" } th { "Health" }
                th { "Restarts" } th { "Uptime" } th { "CPU" } th { "Memory" } th { "Last exit" } th {}
            } }
            tbody #apps-body data-stream="/api/stream" { (PreEscaped(rows)) }
        }
    }
}

/// The cluster's apps: desired, placed and running, and where each instance runs.
pub fn cluster_apps(apps: &[DeployedApp]) -> String {
    html! {
        @if apps.is_empty() {
            p { "nothing deployed; " code { "herd cluster deploy FILE" } " places apps on nodes" }
        } @else {
            table #cluster-apps-table {
                thead { tr { th { "App" } th { "Desired" } th { "Placed" } th { "Running" } th { "Where" } } }
                tbody {
                    @for a in apps {
                        @let running = a.running.as_ref().map(|r| r.iter().filter(|i| i.status == "running").count());
                        tr data-app=(a.name) data-desired=(a.desired) data-placed=(a.assignments.len())
                           data-running=(running.map(|r| r.to_string()).unwrap_or_default()) {
                            td { (a.name) }
                            td { (a.desired) }
                            td { (a.assignments.len()) }
                            td { (running.map(|r| r.to_string()).unwrap_or_else(|| "-".into())) }
                            td {
                                @for (instance, node) in &a.assignments {
                                    span.where { "#" (instance) " → node " (node) }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    .into_string()
}

/// A node's reported resources for people: CPUs, load and memory.
fn resources(r: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(c) = r["cpus"].as_u64() {
        parts.push(format!("{c} CPUs"));
    }
    if let Some(l) = r["load1"].as_f64() {
        parts.push(format!("load {l:.2}"));
    }
    if let (Some(used), Some(total)) = (r["mem_used_bytes"].as_u64(), r["mem_total_bytes"].as_u64())
    {
        parts.push(format!(
            "mem {} / {}",
            crate::cli::output::bytes_text(used),
            crate::cli::output::bytes_text(total)
        ));
    }
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(" · ")
    }
}

fn cell_class(percent: Option<f64>) -> &'static str {
    match percent {
        None => "none",
        Some(p) if p >= 99.9 => "ok",
        Some(p) if p >= 95.0 => "warn",
        Some(_) => "bad",
    }
}

fn day_label(day: u64, day_ms: u64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(day.saturating_mul(day_ms));
    let stamp = humantime::format_rfc3339_seconds(at).to_string();
    if day_ms == 86_400_000 {
        stamp[..10].to_string()
    } else {
        stamp
    }
}

/// The nodes table: health, role, labels, instances, resources, version and a row of day
/// cells from the same report `herd cluster uptime --json` prints.
pub fn nodes(nodes: &[NodeView], uptime: &Report, day_ms: u64, viewer: &Viewer) -> String {
    let report = uptime.to_json();
    let days_of = |id: u64| {
        report["nodes"]
            .as_array()
            .and_then(|ns| ns.iter().find(|n| n["id"].as_u64() == Some(id)))
            .cloned()
    };
    html! {
        table #nodes {
            thead { tr {
                th { "Node" } th { "Address" } th { "Role" } th { "Health" } th { "Labels" }
                th { "Instances" } th { "Resources" } th { "Version" } th { "Uptime (90 days)" } th {}
            } }
            tbody {
                @for n in nodes {
                    @let up = days_of(n.id.get());
                    @let health = n.health.map(|h| serde_json::to_value(h).ok().map(|v| text(&v)).unwrap_or_default()).unwrap_or_else(|| "-".into());
                    tr data-node=(n.id.get()) data-addr=(n.addr) data-health=(health) {
                        td { (n.id.get()) }
                        td { (n.addr) }
                        td { (n.role) }
                        td { span class={ "status " (if health == "online" { "ok" } else if health == "draining" { "warn" } else { "bad" }) } { (health) } }
                        td { @for (k, v) in &n.labels { span.label { (k) "=" (v) } } }
                        td { (n.instances.map(|i| i.to_string()).unwrap_or_else(|| "-".into())) }
                        td.resources title=(n.resources.to_string()) { (resources(&n.resources)) }
                        td { (n.version.clone().unwrap_or_else(|| "-".into())) }
                        td.uptime {
                            @if let Some(u) = &up {
                                span.cells {
                                    @for d in u["days"].as_array().into_iter().flatten() {
                                        @let p = d["uptime_percent"].as_f64();
                                        @let label = format!("{}: {}", day_label(d["day"].as_u64().unwrap_or_default(), day_ms),
                                            p.map(|p| format!("{p:.2} %")).unwrap_or_else(|| "no samples".into()));
                                        span class={ "day " (cell_class(p)) } title=(label)
                                            data-day=(text(&d["day"])) data-percent=(p.map(|p| format!("{p:.4}")).unwrap_or_default()) {}
                                    }
                                }
                                span.overall { (u["uptime_percent"].as_f64().map(|p| format!("{p:.2} %")).unwrap_or_else(|| "no data".into())) }
                            }
                        }
                        td.actions {
                            @if viewer.may_act() {
                                @if health == "draining" {
                                    button type="button" data-action={ "/api/nodes/" (n.id.get()) "/undrain" } { "undrain" }
                                } @else {
                                    button type="button" data-action={ "/api/nodes/" (n.id.get()) "/drain" } { "drain" }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    .into_string()
}

/// One app: its actions, instances, recent exits, spec, events and a live log tail.
pub fn app_page(
    name: &str,
    desired: &str,
    spec: &Value,
    instances: &[(Value, Vec<Value>)],
    events: &[String],
    viewer: &Viewer,
) -> Markup {
    html! {
        h1 { (name) " " small { "desired: " (desired) } }
        @if viewer.may_act() {
            div.toolbar {
                (app_actions(name))
                label { "instances " input #scale type="number" min="0" max="1000" value=(instances.len()); }
                button type="button" data-scale={ "/api/apps/" (name) "/scale" } { "scale" }
            }
        }
        h2 { "Instances" }
        table {
            thead { tr { th { "Inst" } th { "PID" } th { "Status" } th { "Restarts" } th { "Recent exits" } } }
            tbody {
                @for (i, exits) in instances {
                    tr {
                        td { (text(&i["instance"])) }
                        td { (text(&i["pid"])) }
                        td { span class={ "status " (status_class(i["status"].as_str().unwrap_or_default())) } { (text(&i["status"])) } }
                        td { (text(&i["restarts"])) }
                        td { @for e in exits { span.exit title=(e.to_string()) { (text(&e["reason"])) } " " } }
                    }
                }
            }
        }
        h2 { "Log" }
        pre #log data-app=(name) {}
        h2 { "Events" }
        ol #events data-app=(name) {
            @for e in events.iter().rev() { li { (e) } }
        }
        h2 { "Spec" }
        pre.spec { (serde_json::to_string_pretty(spec).unwrap_or_default()) }
    }
}

/// The live event feed (filled by the stream).
pub fn events_page() -> Markup {
    html! {
        h1 { "Events" }
        ol #events {}
    }
}
