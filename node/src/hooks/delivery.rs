//! One attempt at one delivery: a JSON POST to a webhook (http, or https checked against the
//! webpki roots) or a run of a program with the JSON on stdin. Each attempt is bounded by
//! the hook's `timeout_s`, reads at most a few KiB of what comes back, and leaves nothing
//! running behind it.
//!
//! The daemon runs as root: a hook's program gets none of its environment (a fixed `PATH`
//! and the `HERD_*` variables of the event only), no descriptor but stdin/stdout/stderr
//! (the daemon's own are close-on-exec), a process group of its own, and SIGKILL to that
//! group at the timeout.

use super::queue::Delivery;
use super::spec::Target;
use http_body_util::BodyExt;
use hyper::body::Bytes;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Most of a response body, or of a program's stderr, read (for the error message).
const MAX_REPLY: usize = 4096;
/// The `PATH` a hook's program gets.
pub const HOOK_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What an attempt needs besides the delivery.
pub struct Context<'a> {
    pub node: &'a str,
    pub timeout: Duration,
}

/// One attempt; `Err` says why it failed, in a line fit for a log and a dead letter.
pub async fn attempt(target: &Target, d: &Delivery, cx: &Context<'_>) -> Result<(), String> {
    let body = serde_json::to_vec(&d.payload).map_err(|e| format!("cannot encode: {e}"))?;
    match target {
        Target::Webhook { url, headers } => {
            match tokio::time::timeout(cx.timeout, post(url, headers, d, body)).await {
                Ok(r) => r,
                Err(_) => Err(format!("no answer within {} s", cx.timeout.as_secs())),
            }
        }
        Target::Exec(argv) => exec(argv, d, body, cx).await,
    }
}

async fn post(
    url: &http::Uri,
    headers: &[(http::HeaderName, http::HeaderValue)],
    d: &Delivery,
    body: Vec<u8>,
) -> Result<(), String> {
    let https = url.scheme_str() == Some("https");
    let host = url.host().ok_or("the URL has no host")?;
    // `[::1]` in a URL, `::1` to connect to.
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let port = url.port_u16().unwrap_or(if https { 443 } else { 80 });
    let authority = url.authority().map(|a| a.as_str()).unwrap_or(host);
    let path = url.path_and_query().map_or("/", |p| p.as_str());
    let mut req = hyper::Request::post(path)
        .header(hyper::header::HOST, authority)
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(
            hyper::header::USER_AGENT,
            concat!("herd-hooks/", env!("CARGO_PKG_VERSION")),
        )
        .header("x-herd-event", d.event.as_str())
        .header("x-herd-delivery", d.id.as_str());
    for (k, v) in headers {
        req = req.header(k, v);
    }
    let req = req
        .body(http_body_util::Full::new(Bytes::from(body)))
        .map_err(|e| format!("cannot build the request: {e}"))?;
    let stream = tokio::net::TcpStream::connect((bare, port))
        .await
        .map_err(|e| format!("cannot connect to {bare}:{port}: {e}"))?;
    let _ = stream.set_nodelay(true);
    if https {
        let name = tokio_rustls::rustls::pki_types::ServerName::try_from(bare.to_string())
            .map_err(|e| format!("`{bare}` is no TLS server name: {e}"))?;
        let tls = tls()?
            .connect(name, stream)
            .await
            .map_err(|e| format!("TLS with {bare}:{port} failed: {e}"))?;
        send(hyper_util::rt::TokioIo::new(tls), req).await
    } else {
        send(hyper_util::rt::TokioIo::new(stream), req).await
    }
}

async fn send<I>(io: I, req: hyper::Request<http_body_util::Full<Bytes>>) -> Result<(), String>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("HTTP handshake failed: {e}"))?;
    let conn = tokio::spawn(conn);
    let result = async {
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("the request failed: {e}"))?;
        let status = resp.status();
        let mut body = resp.into_body();
        let mut text = Vec::new();
        while text.len() < MAX_REPLY {
            match body.frame().await {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        text.extend_from_slice(&data[..data.len().min(MAX_REPLY - text.len())]);
                    }
                }
                _ => break,
            }
        }
        if status.is_success() {
            Ok(())
        } else {
            let text = String::from_utf8_lossy(&text);
            Err(format!("HTTP {status}: {}", one_line(&text, 200)))
        }
    }
    .await;
    conn.abort();
    result
}

/// The client TLS config, built once: the webpki roots, ring, HTTP/1.1.
fn tls() -> Result<tokio_rustls::TlsConnector, String> {
    use tokio_rustls::rustls;
    static CONNECTOR: OnceLock<Result<tokio_rustls::TlsConnector, String>> = OnceLock::new();
    CONNECTOR
        .get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
        })
        .clone()
}

async fn exec(
    argv: &[String],
    d: &Delivery,
    body: Vec<u8>,
    cx: &Context<'_>,
) -> Result<(), String> {
    use std::process::Stdio;
    let Some(program) = argv.first() else {
        return Err("the hook's `exec` is empty".into());
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(&argv[1..])
        .env_clear()
        .env("PATH", HOOK_PATH)
        .env("HERD_EVENT", &d.event)
        .env("HERD_APP", &d.app)
        .env(
            "HERD_INSTANCE",
            d.instance.map(|i| i.to_string()).unwrap_or_default(),
        )
        .env("HERD_NODE", cx.node)
        .env("HERD_HOOK", &d.hook)
        .env("HERD_DELIVERY", &d.id)
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    let pgid = child.id();
    let mut stdin = child.stdin.take();
    let mut stderr = child.stderr.take();
    let run = async {
        if let Some(mut s) = stdin.take() {
            // A program that does not read its stdin is no failure.
            let _ = s.write_all(&body).await;
        }
        let mut err = Vec::new();
        if let Some(s) = stderr.as_mut() {
            let _ = s.take(MAX_REPLY as u64).read_to_end(&mut err).await;
        }
        let status = child.wait().await;
        (status, err)
    };
    let outcome = tokio::time::timeout(cx.timeout, run).await;
    match outcome {
        Err(_) => {
            // Not reaped yet (the wait was cut short), so the group id is still this one's.
            if let Some(pgid) = pgid {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pgid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let _ = child.wait().await;
            Err(format!(
                "{program} ran longer than {} s and was killed",
                cx.timeout.as_secs()
            ))
        }
        Ok((Err(e), _)) => Err(format!("cannot wait for {program}: {e}")),
        Ok((Ok(status), _)) if status.success() => Ok(()),
        Ok((Ok(status), err)) => {
            let err = String::from_utf8_lossy(&err);
            Err(format!(
                "{program} failed ({status}): {}",
                one_line(&err, 200)
            ))
        }
    }
}

/// `text` on one line, at most `max` characters.
fn one_line(text: &str, max: usize) -> String {
    let flat: String = text
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(max)
        .collect();
    if flat.is_empty() {
        "(no output)".into()
    } else {
        flat
    }
}
