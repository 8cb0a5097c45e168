//! Health probes: `http` (2xx/3xx), `tcp` (connects) or `exec` (exit 0), each with a timeout.
//! One task per instance process probes every `interval_s` — every second at most while the
//! instance has not been healthy yet, so readiness shows quickly. Failures count only after
//! `grace_s`; `failures` consecutive ones restart the instance. `{pid}` and `{instance}` in a
//! probe are replaced by the process's pid and instance index (exec probes also get
//! `HERD_PID` and `HERD_INSTANCE`), so a probe can address one process even when instances
//! share a listen socket.

use super::Supervisor;
use super::identity::Plan;
use super::instance::Status;
use super::machine::Input;
use super::spec::HealthSpec;
use http_body_util::Empty;
use hyper::body::Bytes;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::timeout;

fn expand(s: &str, pid: u32, index: u32) -> String {
    s.replace("{pid}", &pid.to_string())
        .replace("{instance}", &index.to_string())
}

/// Who an `exec` probe runs as: `None` for the daemon's user, else the app's (see
/// `Plan::prepare_probe`), or why the app's user cannot be had.
pub type ProbeUser = Result<Option<Arc<Plan>>, String>;

/// One probe. `Err` says what failed, for `herd health` and the events.
pub async fn probe(h: &HealthSpec, pid: u32, index: u32, who: &ProbeUser) -> Result<(), String> {
    let limit = h.timeout();
    let result = if let Some(url) = &h.http {
        timeout(limit, http_get(&expand(url, pid, index))).await
    } else if let Some(addr) = &h.tcp {
        let addr = expand(addr, pid, index);
        timeout(limit, async move {
            tokio::net::TcpStream::connect(&addr)
                .await
                .map(|_| ())
                .map_err(|e| format!("connect {addr}: {e}"))
        })
        .await
    } else if let Some(cmd) = &h.exec {
        let cmd: Vec<String> = cmd.iter().map(|c| expand(c, pid, index)).collect();
        let who = who
            .clone()
            .map_err(|e| format!("cannot run the probe as the app's user: {e}"))?;
        timeout(limit, exec(cmd, pid, index, who)).await
    } else {
        return Err("no probe configured".into());
    };
    result.unwrap_or_else(|_| Err(format!("timed out after {:.1}s", limit.as_secs_f64())))
}

async fn http_get(url: &str) -> Result<(), String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("bad URL {url}: {e}"))?;
    let host = uri
        .host()
        .ok_or_else(|| format!("no host in {url}"))?
        .to_string();
    let port = uri.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| format!("connect {host}:{port}: {e}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| format!("http: {e}"))?;
    let conn = tokio::spawn(conn);
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let req = hyper::Request::get(path)
        .header(hyper::header::HOST, format!("{host}:{port}"))
        .header(hyper::header::USER_AGENT, "herd-health")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("http: {e}"))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("http: {e}"));
    conn.abort();
    let status = resp?.status();
    if status.is_success() || status.is_redirection() {
        Ok(())
    } else {
        Err(format!("http status {}", status.as_u16()))
    }
}

async fn exec(
    cmd: Vec<String>,
    pid: u32,
    index: u32,
    who: Option<Arc<Plan>>,
) -> Result<(), String> {
    // The probe is the app's command too: none of herd's own variables reach it.
    let mut env: std::collections::BTreeMap<std::ffi::OsString, std::ffi::OsString> =
        std::env::vars_os()
            .filter(|(k, _)| !super::app_env::is_scrubbed(k))
            .collect();
    env.insert("HERD_PID".into(), pid.to_string().into());
    env.insert("HERD_INSTANCE".into(), index.to_string().into());
    if let Some(plan) = &who {
        env.extend(plan.env.iter().map(|(k, v)| ((*k).into(), v.into())));
    }
    let cannot = |e: std::io::Error| format!("cannot run {}: {e}", cmd[0]);
    // Spawned like an instance (`vfork`): a probe every second per app must not cost a fork
    // of the daemon each time.
    let status = super::vfork::run(&cmd, &env, who.as_deref())
        .await
        .map_err(cannot)?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("exited with {status}"))
    }
}

impl Supervisor {
    pub(super) fn start_probes(
        &self,
        name: String,
        index: u32,
        spawn_id: u64,
        pid: u32,
        h: HealthSpec,
        who: ProbeUser,
    ) {
        let me = self.clone();
        tokio::spawn(async move {
            let started = crate::supervisor::clock::monotonic();
            let fast = h.interval().min(Duration::from_secs(1));
            let mut healthy_once = false;
            loop {
                tokio::time::sleep(if healthy_once { h.interval() } else { fast }).await;
                let result = probe(&h, pid, index, &who).await;
                healthy_once |= result.is_ok();
                let counts = started.elapsed() >= h.grace();
                if !me.on_probe(&name, index, spawn_id, result, counts) {
                    return;
                }
            }
        });
    }

    /// Records a probe result; returns false once the probed process is no longer current.
    fn on_probe(
        &self,
        name: &str,
        index: u32,
        spawn_id: u64,
        result: Result<(), String>,
        counts: bool,
    ) -> bool {
        self.dispatch(name, index, spawn_id, Input::Probe { result, counts })
            .is_some_and(|i| matches!(i.status, Status::Starting | Status::Running))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(toml_text: &str) -> HealthSpec {
        toml::from_str(toml_text).unwrap()
    }

    #[tokio::test]
    async fn tcp_probe_tells_a_listening_port_from_a_closed_one() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        assert!(
            probe(&spec(&format!("tcp = \"{addr}\"")), 1, 0, &Ok(None))
                .await
                .is_ok()
        );
        // A bound socket that does not listen refuses connections and keeps the port ours
        // (dropping the listener would let a parallel test take the port).
        let closed = tokio::net::TcpSocket::new_v4().unwrap();
        closed.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let closed_addr = closed.local_addr().unwrap();
        assert!(
            probe(&spec(&format!("tcp = \"{closed_addr}\"")), 1, 0, &Ok(None))
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn exec_probe_sees_the_exit_code_and_the_placeholders() {
        assert!(
            probe(
                &spec("exec = [\"sh\", \"-c\", \"test {pid} = 42 && test $HERD_PID = 42\"]"),
                42,
                0,
                &Ok(None)
            )
            .await
            .is_ok()
        );
        let err = probe(&spec("exec = [\"false\"]"), 1, 0, &Ok(None))
            .await
            .unwrap_err();
        assert!(err.contains("exited"), "{err}");
        let err = probe(
            &spec("exec = [\"sleep\", \"5\"]\ntimeout_s = 0.1"),
            1,
            0,
            &Ok(None),
        )
        .await
        .unwrap_err();
        assert!(err.contains("timed out"), "{err}");
    }

    #[tokio::test]
    async fn http_probe_reads_the_status() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            for status in ["200 OK", "503 Service Unavailable"] {
                let (mut s, _) = l.accept().await.unwrap();
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n").as_bytes())
                    .await;
            }
        });
        let h = spec(&format!("http = \"http://{addr}/healthz\""));
        assert!(probe(&h, 1, 0, &Ok(None)).await.is_ok());
        assert_eq!(
            probe(&h, 1, 0, &Ok(None)).await.unwrap_err(),
            "http status 503"
        );
    }
}
