//! The web dashboard on the HTTP port: apps, one app (spec, exits, events, live log), nodes
//! with 90 day uptime cells, and a live event feed. Pages are rendered on the server
//! (`render`); a small script (`assets/app.js`) swaps in the fragments a Server-Sent Events
//! stream pushes, so a killed instance turns red and green again without a reload.
//!
//! Every read and action goes through the same gRPC service implementations the CLI calls,
//! in process, as the signed-in caller, after the same role table (`access::policy`) allowed
//! it: the dashboard shows what `herd ps --json` and `herd cluster apps --json` print and can do
//! only what the caller's token could do from the CLI. Sessions: `session`.
//!
//! Bounded: bodies are small (the router's limit), at most `MAX_STREAMS` live streams at once,
//! each fed through a short channel by a task that ends when the browser goes away.

pub mod render;
pub mod session;

use super::HttpState;
use crate::access::{Caller, policy};
use crate::cli::uptime::Report;
use crate::cluster::replies::{DeployedApp, StatusReply, Uptime};
use axum::Router;
use axum::extract::{ConnectInfo, Form, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use herd_proto::supervisor as pb;
use herd_proto::supervisor::cluster_admin_server::ClusterAdmin as _;
use herd_proto::supervisor::supervisor_server::Supervisor as _;
use serde::Deserialize;
use session::{COOKIE, SESSION_TTL, Viewer};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Request;
use tracing::info;

/// Live streams (apps, logs, events) open at once, over every browser.
pub const MAX_STREAMS: usize = 64;
/// How often the apps stream re-renders without an event (CPU, memory and uptime move).
const REFRESH: Duration = Duration::from_secs(2);
/// Log lines and events a page starts with.
const BACKLOG: u32 = 100;

const APP_JS: &str = include_str!("assets/app.js");
const STYLE_CSS: &str = include_str!("assets/style.css");

pub fn routes() -> Router<HttpState> {
    Router::new()
        .route("/", get(apps_page))
        .route("/app/{name}", get(app_page))
        .route("/nodes", get(nodes_page))
        .route("/events", get(events_page))
        .route("/login", get(login_link).post(login_form))
        .route("/logout", post(logout))
        .route("/assets/app.js", get(|| asset(APP_JS, "text/javascript")))
        .route("/assets/style.css", get(|| asset(STYLE_CSS, "text/css")))
        .route("/api/stream", get(apps_stream))
        .route("/api/events", get(events_stream))
        .route("/api/logs/{name}", get(logs_stream))
        .route("/api/apps/{name}/{action}", post(app_action))
        .route("/api/nodes/{node}/{action}", post(node_action))
}

async fn asset(body: &'static str, kind: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// An HTML page with the headers that keep it from being framed or running foreign script.
fn page(code: StatusCode, html: String) -> Response {
    let mut r = (code, html).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn session_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| kv.trim().strip_prefix(COOKIE)?.strip_prefix('='))
        .map(str::to_string)
}

/// The signed-in viewer of a request, if any.
fn viewer(s: &HttpState, headers: &HeaderMap, peer: SocketAddr) -> Option<Viewer> {
    let id = session_id(headers)?;
    s.logins
        .viewer(&s.auth, &id, Some(peer), tokio::time::Instant::now())
}

/// What a page or stream answers a request without a session.
fn login_needed(api: bool) -> Response {
    if api {
        (
            StatusCode::UNAUTHORIZED,
            "sign in first: this needs a dashboard session\n",
        )
            .into_response()
    } else {
        page(StatusCode::UNAUTHORIZED, render::login(None))
    }
}

/// A request refused before any work: the status and a line saying why.
struct Refusal(StatusCode, String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        (self.0, format!("{}\n", self.1)).into_response()
    }
}

/// The role table's verdict on `service`/`method` for this viewer.
fn allowed(viewer: &Viewer, service: &str, method: &str) -> Result<(), Refusal> {
    policy::check(
        viewer.caller.role,
        &format!("/{}{service}/{method}", policy::PACKAGE),
    )
    .map_err(|denied| Refusal(StatusCode::FORBIDDEN, denied.to_string()))
}

/// Why a request was not admitted.
enum Denied {
    /// No session: the sign-in form for a page (`api` false), 401 for a stream or action.
    SignIn {
        api: bool,
    },
    Refused(Refusal),
}

impl IntoResponse for Denied {
    fn into_response(self) -> Response {
        match self {
            Denied::SignIn { api } => login_needed(api),
            Denied::Refused(r) => r.into_response(),
        }
    }
}

/// The signed-in viewer of a page (`api`: a stream or action) whom the role table lets call
/// every `(service, method)` of `checks`.
fn admitted(
    s: &HttpState,
    headers: &HeaderMap,
    peer: SocketAddr,
    api: bool,
    checks: &[(&str, &str)],
) -> Result<Viewer, Denied> {
    let v = viewer(s, headers, peer).ok_or(Denied::SignIn { api })?;
    for (service, method) in checks {
        allowed(&v, service, method).map_err(Denied::Refused)?;
    }
    Ok(v)
}

fn as_caller<T>(caller: &Caller, msg: T) -> Request<T> {
    let mut req = Request::new(msg);
    req.extensions_mut().insert(caller.clone());
    req
}

fn status_response(e: tonic::Status) -> Response {
    let code = match e.code() {
        tonic::Code::NotFound => StatusCode::NOT_FOUND,
        tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition => StatusCode::BAD_REQUEST,
        tonic::Code::PermissionDenied => StatusCode::FORBIDDEN,
        tonic::Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (code, format!("{}\n", e.message())).into_response()
}

/// Every local instance as `herd ps --json` prints it.
async fn instances(
    s: &HttpState,
    caller: &Caller,
) -> Result<Vec<serde_json::Value>, tonic::Status> {
    let reply = s
        .api
        .list(as_caller(caller, pb::ListRequest::default()))
        .await?;
    Ok(reply
        .into_inner()
        .instances
        .iter()
        .map(crate::cli::output::instance_json)
        .collect())
}

/// The cluster's apps as `herd cluster apps --json` prints them (`None` standalone).
async fn cluster_apps(s: &HttpState, caller: &Caller) -> Option<Vec<DeployedApp>> {
    s.cluster.as_ref()?;
    let reply = s
        .admin
        .apps(as_caller(caller, pb::ClusterRequest { stale: false }))
        .await
        .ok()?;
    serde_json::from_str(&reply.into_inner().json).ok()
}

async fn apps_page(
    State(s): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let v = match admitted(&s, &headers, peer, false, &[("Supervisor", "List")]) {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    let rows = match instances(&s, &v.caller).await {
        Ok(list) => render::app_rows(&list, &v),
        Err(e) => return status_response(e),
    };
    let cluster = match cluster_apps(&s, &v.caller).await {
        Some(apps) => Some(render::cluster_apps(&apps)),
        None if s.cluster.is_some() => Some("<p>the cluster did not answer</p>".to_string()),
        None => None,
    };
    let body = maud::html! {
        h1 { "Apps on this node" }
        (render::apps_table(&rows))
        @if let Some(c) = cluster {
            h2 { "Cluster apps" }
            section #cluster-apps { (maud::PreEscaped(c)) }
        }
    };
    page(
        StatusCode::OK,
        render::layout("apps", &v, s.cluster.is_some(), body),
    )
}

async fn app_page(
    State(s): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    let v = match admitted(&s, &headers, peer, false, &[("Supervisor", "Inspect")]) {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    let inspect = match s
        .api
        .inspect(as_caller(&v.caller, pb::NameRequest { name: name.clone() }))
        .await
    {
        Ok(r) => r.into_inner(),
        Err(e) => return status_response(e),
    };
    let spec = serde_json::from_str(&inspect.spec_json).unwrap_or_default();
    let instances: Vec<_> = inspect
        .instances
        .iter()
        .map(|d| {
            (
                d.info
                    .as_ref()
                    .map(crate::cli::output::instance_json)
                    .unwrap_or_default(),
                d.exits
                    .iter()
                    .rev()
                    .take(10)
                    .map(crate::cli::output::exit_json)
                    .collect(),
            )
        })
        .collect();
    let events = recent_events(&s, &v.caller, &name).await;
    let body = render::app_page(&name, &inspect.desired, &spec, &instances, &events, &v);
    page(
        StatusCode::OK,
        render::layout(&name, &v, s.cluster.is_some(), body),
    )
}

/// The app's last events, as `herd events NAME` prints them.
async fn recent_events(s: &HttpState, caller: &Caller, name: &str) -> Vec<String> {
    let req = pb::EventsRequest {
        name: name.to_string(),
        lines: 50,
        follow: false,
    };
    let Ok(reply) = s.api.events(as_caller(caller, req)).await else {
        return Vec::new();
    };
    let mut stream = reply.into_inner();
    let mut out = Vec::new();
    while let Some(Ok(line)) = stream.next().await {
        out.push(crate::cli::output::event_text(&line.json));
    }
    out
}

async fn nodes_page(
    State(s): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let checks = [("ClusterAdmin", "Status"), ("ClusterAdmin", "Uptime")];
    let v = match admitted(&s, &headers, peer, false, &checks) {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    if s.cluster.is_none() {
        let body = maud::html! { h1 { "Nodes" } p { "this daemon runs standalone" } };
        return page(StatusCode::OK, render::layout("nodes", &v, false, body));
    }
    let status = s
        .admin
        .status(as_caller(&v.caller, pb::ClusterRequest { stale: false }))
        .await
        .map(|r| serde_json::from_str::<StatusReply>(&r.into_inner().json));
    let uptime = s
        .admin
        .uptime(as_caller(&v.caller, pb::ClusterRequest { stale: false }))
        .await
        .map(|r| serde_json::from_str::<Uptime>(&r.into_inner().json));
    let (status, uptime) = match (status, uptime) {
        (Ok(Ok(st)), Ok(Ok(up))) => (st, up),
        (Err(e), _) | (_, Err(e)) => return status_response(e),
        _ => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                "unreadable cluster reply\n",
            )
                .into_response();
        }
    };
    let report = Report::of(&uptime, None, 90, crate::supervisor::now_ms());
    let body = maud::html! {
        h1 { "Nodes" }
        p { "leader: " (status.status.leader_id.map(|l| l.to_string()).unwrap_or_else(|| "none".into()))
            " · term " (status.status.term) }
        (maud::PreEscaped(render::nodes(&status.nodes, &report, uptime.day_ms, &v)))
    };
    page(StatusCode::OK, render::layout("nodes", &v, true, body))
}

async fn events_page(
    State(s): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let v = match admitted(&s, &headers, peer, false, &[("Supervisor", "Events")]) {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    page(
        StatusCode::OK,
        render::layout("events", &v, s.cluster.is_some(), render::events_page()),
    )
}

fn session_cookie(id: &str, tls: bool) -> HeaderValue {
    let secure = if tls { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        SESSION_TTL.as_secs()
    ))
    .unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn signed_in(id: &str, tls: bool) -> Response {
    let mut r = Redirect::to("/").into_response();
    r.headers_mut()
        .insert(header::SET_COOKIE, session_cookie(id, tls));
    r
}

#[derive(Deserialize)]
struct Once {
    once: Option<String>,
}

/// `GET /login` shows the form; `GET /login?once=CODE` spends a one-time link.
async fn login_link(
    State(s): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(q): Query<Once>,
) -> Response {
    let Some(code) = q.once else {
        return page(StatusCode::OK, render::login(None));
    };
    match s.logins.redeem(&code, tokio::time::Instant::now()) {
        Some(id) => {
            info!(%peer, "dashboard sign-in through a one-time link");
            signed_in(&id, s.tls)
        }
        None => page(
            StatusCode::UNAUTHORIZED,
            render::login(Some(
                "this sign-in link was used already or has expired; run `herd dashboard` for a new one",
            )),
        ),
    }
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

async fn login_form(
    State(s): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Form(form): Form<LoginForm>,
) -> Response {
    let now = tokio::time::Instant::now();
    let key = crate::api::remote::throttle::PeerKey::of(peer.ip());
    if let Some(left) = s.login_throttle.penalty_left(key, now) {
        s.login_throttle
            .refused(peer.ip(), "dashboard sign-in during a penalty", now);
        return page(
            StatusCode::TOO_MANY_REQUESTS,
            render::login(Some(&format!(
                "too many wrong tokens from {}: try again in {} s",
                peer.ip(),
                left.as_secs().max(1)
            ))),
        );
    }
    match s.logins.login(&s.auth, &form.token, Some(peer), now) {
        Ok(id) => {
            s.login_throttle.succeeded(peer.ip());
            info!(%peer, "dashboard sign-in with a token");
            signed_in(&id, s.tls)
        }
        Err(why) => {
            s.login_throttle.failed(peer.ip(), why.message(), now);
            page(
                StatusCode::UNAUTHORIZED,
                render::login(Some("that token is not valid here")),
            )
        }
    }
}

#[derive(Deserialize)]
struct LogoutForm {
    csrf: String,
}

async fn logout(
    State(s): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<LogoutForm>,
) -> Response {
    if let (Some(id), Some(v)) = (session_id(&headers), viewer(&s, &headers, peer))
        && herd_cluster::constant_time_eq(form.csrf.as_bytes(), v.csrf.as_bytes())
    {
        s.logins.logout(&id);
    }
    let mut r = Redirect::to("/login").into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("herd_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    r
}

/// The viewer of a POST whose `x-herd-csrf` header matches its session's token.
fn acting(s: &HttpState, headers: &HeaderMap, peer: SocketAddr) -> Result<Viewer, Refusal> {
    let v = viewer(s, headers, peer).ok_or_else(|| {
        Refusal(
            StatusCode::UNAUTHORIZED,
            "sign in first: this needs a dashboard session".into(),
        )
    })?;
    let sent = headers
        .get("x-herd-csrf")
        .map(|h| h.as_bytes())
        .unwrap_or_default();
    if !herd_cluster::constant_time_eq(sent, v.csrf.as_bytes()) {
        return Err(Refusal(
            StatusCode::FORBIDDEN,
            "missing or wrong CSRF token: reload the page".into(),
        ));
    }
    Ok(v)
}

#[derive(Deserialize)]
struct ScaleQuery {
    instances: Option<u32>,
}

async fn app_action(
    State(s): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path((name, action)): Path<(String, String)>,
    Query(q): Query<ScaleQuery>,
) -> Response {
    let v = match acting(&s, &headers, peer) {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    let method = match action.as_str() {
        "restart" => "Restart",
        "stop" => "Stop",
        "start" => "Start",
        "scale" => "Scale",
        _ => return (StatusCode::NOT_FOUND, "no such action\n").into_response(),
    };
    if let Err(r) = allowed(&v, "Supervisor", method) {
        return r.into_response();
    }
    let c = &v.caller;
    let name_req = || pb::NameRequest { name: name.clone() };
    let done = match method {
        "Restart" => s.api.restart(as_caller(c, name_req())).await.map(drop),
        "Start" => s.api.start(as_caller(c, name_req())).await.map(drop),
        "Stop" => {
            let req = pb::StopRequest {
                name: name.clone(),
                timeout_s: None,
            };
            s.api.stop(as_caller(c, req)).await.map(drop)
        }
        _ => {
            let Some(instances) = q.instances else {
                return (StatusCode::BAD_REQUEST, "scale needs ?instances=N\n").into_response();
            };
            let req = pb::ScaleRequest {
                name: name.clone(),
                instances,
            };
            s.api.scale(as_caller(c, req)).await.map(drop)
        }
    };
    match done {
        Ok(()) => (StatusCode::OK, format!("{action}: {name}\n")).into_response(),
        Err(e) => status_response(e),
    }
}

async fn node_action(
    State(s): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path((node, action)): Path<(String, String)>,
) -> Response {
    let v = match acting(&s, &headers, peer) {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    let drain = match action.as_str() {
        "drain" => true,
        "undrain" => false,
        _ => return (StatusCode::NOT_FOUND, "no such action\n").into_response(),
    };
    if let Err(r) = allowed(&v, "ClusterAdmin", "Drain") {
        return r.into_response();
    }
    let req = pb::DrainRequest {
        node: node.clone(),
        drain: Some(drain),
    };
    match s.admin.drain(as_caller(&v.caller, req)).await {
        Ok(_) => (StatusCode::OK, format!("{action}: node {node}\n")).into_response(),
        Err(e) => status_response(e),
    }
}

/// A live stream: refused when `MAX_STREAMS` are open; `feed` sends until the browser leaves.
fn stream<F, Fut>(s: &HttpState, feed: F) -> Response
where
    F: FnOnce(mpsc::Sender<Event>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Ok(permit) = s.streams.clone().try_acquire_owned() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "too many live dashboard streams are open\n",
        )
            .into_response();
    };
    let (tx, rx) = mpsc::channel::<Event>(8);
    tokio::spawn(async move {
        let _permit = permit;
        feed(tx).await;
    });
    let events = ReceiverStream::new(rx).map(Ok::<_, Infallible>);
    Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response()
}

/// A gRPC reply stream as a live stream of `kind` events, each item as the JSON `data` makes.
fn forward<T, S>(
    s: &HttpState,
    items: S,
    kind: &'static str,
    data: fn(T) -> serde_json::Value,
) -> Response
where
    S: tokio_stream::Stream<Item = Result<T, tonic::Status>> + Send + Unpin + 'static,
    T: Send + 'static,
{
    stream(s, move |tx| async move {
        let mut items = items;
        while let Some(Ok(item)) = items.next().await {
            let event = Event::default().event(kind).data(data(item).to_string());
            if tx.send(event).await.is_err() {
                return;
            }
        }
    })
}

/// The apps table's rows (and the cluster's apps), pushed on every event and every few
/// seconds when they changed.
async fn apps_stream(
    State(s): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    const LIST: &[(&str, &str)] = &[("Supervisor", "List")];
    if let Err(r) = admitted(&s, &headers, peer, true, LIST) {
        return r.into_response();
    }
    let state = s.clone();
    stream(&s, move |tx| async move {
        let mut events = state.supervisor.events().subscribe();
        let mut tick = tokio::time::interval(REFRESH);
        let (mut last_apps, mut last_cluster) = (String::new(), String::new());
        loop {
            // The session may have ended (signed out, token revoked or demoted) since it began.
            let Ok(v) = admitted(&state, &headers, peer, true, LIST) else {
                return;
            };
            if let Ok(list) = instances(&state, &v.caller).await {
                let rows = render::app_rows(&list, &v);
                if rows != last_apps {
                    if tx
                        .send(Event::default().event("apps").data(&rows))
                        .await
                        .is_err()
                    {
                        return;
                    }
                    last_apps = rows;
                }
            }
            if let Some(apps) = cluster_apps(&state, &v.caller).await {
                let html = render::cluster_apps(&apps);
                if html != last_cluster {
                    if tx
                        .send(Event::default().event("cluster").data(&html))
                        .await
                        .is_err()
                    {
                        return;
                    }
                    last_cluster = html;
                }
            }
            tokio::select! {
                got = events.recv() => {
                    if matches!(got, Err(tokio::sync::broadcast::error::RecvError::Closed)) {
                        return;
                    }
                    // A burst (exit, restarting, started) gives one render.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    while events.try_recv().is_ok() {}
                }
                _ = tick.tick() => {}
                () = tx.closed() => return,
            }
        }
    })
}

#[derive(Deserialize)]
struct AppQuery {
    app: Option<String>,
}

/// Events as they happen (the last ones first), each with the line `herd events` prints.
async fn events_stream(
    State(s): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(q): Query<AppQuery>,
) -> Response {
    let v = match admitted(&s, &headers, peer, true, &[("Supervisor", "Events")]) {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    let req = pb::EventsRequest {
        name: q.app.unwrap_or_default(),
        lines: BACKLOG,
        follow: true,
    };
    let lines = match s.api.events(as_caller(&v.caller, req)).await {
        Ok(r) => r.into_inner(),
        Err(e) => return status_response(e),
    };
    forward(&s, lines, "event", |line: pb::EventLine| {
        serde_json::json!({
            "text": crate::cli::output::event_text(&line.json),
            "event": serde_json::from_str::<serde_json::Value>(&line.json).unwrap_or_default(),
        })
    })
}

/// An app's log as `herd logs -f NAME` follows it: the last lines, then new ones.
async fn logs_stream(
    State(s): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Response {
    let v = match admitted(&s, &headers, peer, true, &[("Supervisor", "Logs")]) {
        Ok(v) => v,
        Err(r) => return r.into_response(),
    };
    let req = pb::LogsRequest {
        name,
        lines: BACKLOG,
        follow: true,
        run: None,
    };
    let chunks = match s.api.logs(as_caller(&v.caller, req)).await {
        Ok(r) => r.into_inner(),
        Err(e) => return status_response(e),
    };
    forward(&s, chunks, "log", |chunk: pb::LogChunk| {
        serde_json::json!({
            "instance": chunk.instance,
            "text": String::from_utf8_lossy(&chunk.data),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_session_cookie_is_found_among_others() {
        let mut h = HeaderMap::new();
        h.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; herd_session=abc; b=2"),
        );
        assert_eq!(session_id(&h).as_deref(), Some("abc"));
        let mut other = HeaderMap::new();
        other.append(
            header::COOKIE,
            HeaderValue::from_static("herd_sessionx=abc"),
        );
        assert_eq!(session_id(&other), None);
    }

    #[test]
    fn the_cookie_is_http_only_and_same_site_strict() {
        let c = session_cookie("abc", false);
        let c = c.to_str().unwrap();
        assert!(
            c.contains("HttpOnly") && c.contains("SameSite=Strict"),
            "{c}"
        );
        assert!(!c.contains("Secure"));
        assert!(
            session_cookie("abc", true)
                .to_str()
                .unwrap()
                .contains("; Secure")
        );
    }
}
