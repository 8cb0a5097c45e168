//! The daemon's life: take the pid lock, read the config and the state, adopt what still
//! runs, serve the local API on the Unix socket, keep the state file, logs, metrics and
//! sweeps going, and on `down` (or SIGTERM/SIGINT) stop the apps, flush the state and remove
//! its files. SIGHUP re-reads the config.

use crate::access::guard::Door;
use crate::access::sealing::{self, KeySource};
use crate::access::secrets::Secrets;
use crate::access::service::{AccessApi, AccessServer};
use crate::access::store::AccessStore;
use crate::access::tokens::Authenticator;
use crate::api::remote::ApiConfig;
use crate::api::remote::server::{self, RoutesFor, TcpApi};
use crate::api::{Api, SupervisorServer};
use crate::cluster::admin::{Admin, ClusterAdminServer};
use crate::cluster::bridge::Bridge;
use crate::config::{ClusterCommit, ConfigHandle, DaemonConfig, LogLevelSetter};
use crate::home::Home;
use crate::hooks::HookRunner;
use crate::hooks::service::{HooksApi, HooksServer};
use crate::jobs::queue::JobsSection;
use crate::jobs::service::{JobsServer, JobsService};
use crate::state::Persisted;
use crate::state::pidlock::PidLock;
use crate::state::store::{Loaded, Rejection, StateFile};
use crate::supervisor::events::EventLog;
use crate::supervisor::marker::Marker;
use crate::supervisor::rotation::LogTarget;
use crate::supervisor::{SNAPSHOT_VERSION, Snapshot, Supervisor, logs, validate_snapshot};
use crate::systemd::notify::Notifier;
use anyhow::Context;
use herd_cluster::{ClusterConfig, ClusterNode};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::net::UnixListener;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::UnixListenerStream;
use tonic::service::Routes;
use tracing::{error, info, warn};

/// Transitions that arrive within this long of each other share one state write.
const STATE_COALESCE: Duration = Duration::from_millis(5);
/// A write of the state waits at least this many times as long as the last one took, so
/// writing a large state during a storm of transitions (1,000 apps starting) takes at most a
/// quarter of a core: a write costs O(apps), and back-to-back writes 5 ms apart made the
/// daemon spend a fifth of that start re-serializing the same 600 KB.
const STATE_DUTY: u32 = 3;
/// ... and at most this long, so a request still waits little for its change to be durable.
const STATE_COALESCE_MAX: Duration = Duration::from_millis(100);

/// How long transitions wait to share the next state write, after one that took `last`.
fn state_coalesce(last: Duration) -> Duration {
    last.saturating_mul(STATE_DUTY)
        .clamp(STATE_COALESCE, STATE_COALESCE_MAX)
}
/// How long calls still open on the socket at shutdown may take to end before they are cut.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(5);

/// Runs the daemon until it is told to stop. `detached`: started by `herd up`, whose pipe
/// on stderr is replaced by `daemon.log` once the socket answers.
pub fn run(home: Home, detached: bool, config_path: Option<PathBuf>) -> anyhow::Result<()> {
    seal_inherited_fds();
    // SAFETY: first thing, before the async runtime or any other thread exists.
    let notifier = unsafe { Notifier::from_env() };
    home.ensure()
        .with_context(|| format!("cannot use herd home {}", home.root().display()))?;
    let lock = PidLock::acquire(&home.pid_file())?;
    let required = config_path.is_some();
    let config_path = config_path.unwrap_or_else(|| home.config_file());
    let config = DaemonConfig::load(&config_path, required, |k| std::env::var(k).ok())
        .map_err(anyhow::Error::msg)?;
    // Checked before anything starts: a daemon with a broken [cluster] never runs half-configured.
    let cluster = match &config.cluster {
        Some(section) if section.enabled => Some(
            section
                .to_config(home.root(), |k| std::env::var(k).ok())
                .map_err(|e| anyhow::anyhow!("{}: {e}", config_path.display()))?,
        ),
        _ => None,
    };
    let api = config
        .api
        .clone()
        .unwrap_or_default()
        .to_config(|k| std::env::var(k).ok())
        .map_err(|e| anyhow::anyhow!("{}: {e}", config_path.display()))?;
    // One port for both when they share an address: the daemon serves the cluster's RPCs too.
    let shared_port = match (&api, &cluster) {
        (Some(a), Some(c)) => a.listen == c.listen,
        _ => false,
    };
    if shared_port
        && (api.as_ref().is_some_and(|a| a.tls.is_some())
            || cluster.as_ref().is_some_and(|c| c.tls.is_some()))
    {
        anyhow::bail!(
            "{}: with TLS, [api] needs its own port (the cluster's peers and the CLI speak different protocols on it); set [api] listen apart from [cluster] listen, e.g. 0.0.0.0:9701",
            config_path.display()
        );
    }
    let cluster = cluster.map(|mut c| {
        c.serve_rpc = !shared_port;
        c
    });
    let set_log_level = init_tracing(&config.log_level);
    raise_fd_limit();
    let state = StateFile::new(home.state_file());
    refuse_newer_state(&state)?;
    let snapshot = match state.load_validated(validate_state)? {
        Loaded::Fresh => None,
        Loaded::Primary(s) => Some(s),
        Loaded::Backup(s, why) => {
            eprintln!(
                "herd: {} is unreadable ({why}); starting from {}",
                state.path().display(),
                state.backup_path().display()
            );
            warn!(file = %state.path().display(), reason = %why, "state file unreadable; using the backup");
            Some(s)
        }
    };
    let config = ConfigHandle::new(config_path, required, config, set_log_level);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("herd")
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(serve(
        home.clone(),
        state,
        snapshot,
        Arc::new(config),
        cluster,
        api,
        Launch { detached, notifier },
    ));
    runtime.shutdown_timeout(Duration::from_secs(1));
    let _ = std::fs::remove_file(home.socket());
    lock.release();
    result
}

/// The checks a loaded `state.json` must pass: those of an app file and more
/// (`validate_snapshot`). A state written by a newer herd is refused (not replaced by the
/// backup, which would then overwrite it); anything else wrong makes the backup be tried.
fn validate_state(s: &Snapshot) -> Result<(), Rejection> {
    if s.version > SNAPSHOT_VERSION {
        return Err(Rejection::Refuse(newer_version(s.version.into())));
    }
    validate_snapshot(s).map_err(Rejection::Invalid)
}

fn newer_version(found: u64) -> String {
    format!(
        "it was written by a newer herd (state version {found}; this herd {} understands version {SNAPSHOT_VERSION} and below), so it is left untouched. Fix: run the newer herd, or move the file and its .bak aside to start from an empty state",
        env!("CARGO_PKG_VERSION")
    )
}

/// A newer herd's state may not even parse as this herd's `Snapshot`; look at its version
/// alone first, so such a file is refused rather than treated as unreadable (and replaced).
fn refuse_newer_state(state: &StateFile) -> anyhow::Result<()> {
    #[derive(serde::Deserialize)]
    struct Versioned {
        #[serde(default)]
        version: u64,
    }
    // The backup too: a newer herd's backup must not be taken for an unreadable one either.
    for path in [state.path().to_path_buf(), state.backup_path()] {
        let Ok(bytes) = crate::state::store::read_nofollow(&path) else {
            continue; // missing or unreadable: `load_validated` reports and falls back.
        };
        if let Ok(v) = serde_json::from_slice::<Versioned>(&bytes)
            && v.version > u64::from(SNAPSHOT_VERSION)
        {
            anyhow::bail!(
                "cannot use {}: {}",
                path.display(),
                newer_version(v.version)
            );
        }
    }
    Ok(())
}

/// How this daemon was started: by `herd up` (`detached`: it reports on a pipe, then logs to
/// `daemon.log`), and by systemd with `Type=notify` (`notifier`), or neither (foreground).
struct Launch {
    detached: bool,
    notifier: Option<Arc<Notifier>>,
}

async fn serve(
    home: Home,
    state: StateFile,
    snapshot: Option<Snapshot>,
    config: Arc<ConfigHandle>,
    cluster: Option<ClusterConfig>,
    api_cfg: Option<ApiConfig>,
    launch: Launch,
) -> anyhow::Result<()> {
    let Launch { detached, notifier } = launch;
    let socket = home.socket();
    let _ = std::fs::remove_file(&socket);
    // The socket is the only gate: created 0600 (umask), inside a 0700 home.
    let old_umask = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let listener = UnixListener::bind(&socket);
    nix::sys::stat::umask(old_umask);
    let listener = listener.with_context(|| format!("cannot listen on {}", socket.display()))?;

    // Bound before anything starts, so a taken port fails `herd up` with the reason.
    let tcp = match api_cfg {
        Some(a) => {
            let listener = server::bind_now(a.listen).map_err(anyhow::Error::msg)?;
            Some((a, listener))
        }
        None => None,
    };
    let http_section = config.get().http.unwrap_or_default();
    let http = match http_section
        .listen_addr(|k| std::env::var(k).ok())
        .map_err(anyhow::Error::msg)?
    {
        Some(addr) => Some((
            addr,
            crate::http::bind(addr).map_err(anyhow::Error::msg)?,
            http_section.tls().map_err(anyhow::Error::msg)?,
        )),
        None => None,
    };
    let shares_cluster_port = cluster.as_ref().is_some_and(|c| !c.serve_rpc);
    let cluster_listen = cluster.as_ref().map(|c| c.listen);

    // The proof that a process found after a crash is ours (see `supervisor::marker`);
    // read before detaching, so `herd up` reports a refused key file.
    let marker = Marker::load_or_create(home.root()).map_err(anyhow::Error::msg)?;
    // Tokens and sealed secrets: access.json standalone, the registry in a cluster.
    let access = match &cluster {
        Some(_) => AccessStore::clustered(home.root()),
        None => AccessStore::standalone(home.root()).map_err(anyhow::Error::msg)?,
    };
    // HERD_SECRETS_KEY is read here, once; like every HERD_* variable it never reaches an app.
    let secrets = Arc::new(Secrets::new(
        access.clone(),
        KeySource::new(home.root(), std::env::var(sealing::KEY_VAR).ok()),
    ));
    if detached {
        detach_stderr(&home)?;
    }
    let cfg = config.get();
    let (events, event_writer) =
        EventLog::new(home.events_file(), cfg.events_max_bytes, cfg.events_files);
    tokio::spawn(event_writer);
    // Before anything emits: every event from the first one on may reach a hook.
    let hooks = HookRunner::start(home.root(), home.logs_dir(), &events, config.subscribe());
    // Before any spawn or adoption: where instances' cgroups live (said once in the log).
    crate::supervisor::cgroup::install(home.root(), config.get().cgroups);
    let supervisor = Supervisor::new(home.logs_dir(), home.root().to_path_buf(), events, marker);
    supervisor.set_secrets(secrets.clone());
    crate::access::secret_watch::spawn(supervisor.clone(), secrets.clone());
    supervisor.restore(snapshot.unwrap_or_default());
    // Jobs read their queue after the supervisor has adopted what still runs.
    let jobs = crate::jobs::Jobs::load(
        home.root().join("jobs.json"),
        home.logs_dir(),
        supervisor.clone(),
        jobs_section(&config),
    )?;
    let state = Arc::new(Mutex::new(state));
    let (persisted_tx, persisted) = watch::channel(Persisted::default());
    let mut tasks = vec![
        tokio::spawn(write_state(
            supervisor.clone(),
            state.clone(),
            config.subscribe(),
            persisted_tx,
        )),
        tokio::spawn(sweep(supervisor.clone(), config.subscribe())),
        tokio::spawn(reload_on_sighup(config.clone())),
    ];
    let metrics_interval = interval_of(&config, |c| c.metrics_interval());
    let sup = supervisor.clone();
    // A cluster node reports the host's figures in every heartbeat: keep them fresh.
    let host_always = cluster.is_some();
    tasks.push(tokio::spawn(async move {
        sup.run_metrics(metrics_interval, host_always).await
    }));
    let sup = supervisor.clone();
    tasks.push(tokio::spawn(async move { sup.run_cron().await }));
    tasks.push(tokio::spawn(jobs.clone().run()));
    let sup = supervisor.clone();
    tasks.push(tokio::spawn(async move { sup.run_watch().await }));
    let sup = supervisor.clone();
    // Only a detached daemon writes daemon.log; in the foreground its output is the caller's.
    let daemon_log: Vec<LogTarget> = if detached {
        vec![(
            home.daemon_log(),
            cfg.daemon_log_max_bytes,
            cfg.daemon_log_files,
        )]
    } else {
        Vec::new()
    };
    tasks.push(tokio::spawn(async move {
        sup.run_log_rotation(daemon_log).await
    }));

    // Standalone mode starts no Raft, no discovery and opens no cluster port.
    let cluster = match cluster {
        Some(cfg) => {
            let node = ClusterNode::start(cfg)
                .await
                .context("cannot start the cluster node")?;
            // The agent turns this node's assignments into local apps (`app@index`).
            node.run_agent(Arc::new(
                Bridge::new(supervisor.clone()).with_jobs(jobs.clone()),
            ));
            let node = Arc::new(node);
            jobs.attach_cluster(node.clone());
            // The master's daemon records `node_offline` (for hooks and `herd events`).
            tasks.push(tokio::spawn(crate::cluster::offline::announce(
                Arc::downgrade(&node),
                supervisor.events().clone(),
            )));
            access.attach(node.clone());
            Some(node)
        }
        None => None,
    };

    let (shutdown_tx, mut shutdown_rx) = mpsc::channel::<()>(1);
    let api = Api::new(
        supervisor.clone(),
        home.root().display().to_string(),
        shutdown_tx,
        config.clone(),
        persisted.clone(),
    )
    .with_secrets(secrets.clone())
    .with_jobs(jobs.clone());
    let logins = Arc::new(crate::http::dashboard::session::Logins::default());
    let api = match &http {
        Some((_, listener, tls)) => match listener.local_addr() {
            Ok(bound) => {
                api.with_dashboard(logins.clone(), crate::http::link_base(bound, tls.is_some()))
            }
            Err(_) => api,
        },
        None => api,
    };
    let persisted_http = persisted;
    info!(pid = std::process::id(), home = %home.root().display(), version = env!("CARGO_PKG_VERSION"), "herd daemon up");

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let sup = supervisor.clone();
    let stopping = notifier.clone();
    let stop_signal = async move {
        let told = || {
            if let Some(n) = &stopping {
                n.stopping();
            }
        };
        tokio::select! {
            _ = shutdown_rx.recv() => {}
            _ = term.recv() => { info!("SIGTERM: stopping apps and exiting"); told(); sup.shutdown(false, None).await; }
            _ = int.recv() => { info!("SIGINT: stopping apps and exiting"); told(); sup.shutdown(false, None).await; }
        }
    };
    // The TCP API (and, on a shared port, the cluster's RPCs); a config reload re-applies it.
    let routes_api = api.clone();
    let routes_cluster = cluster.clone();
    let auth = Arc::new(Authenticator::new(
        Arc::new(RwLock::new(None)),
        access.clone(),
    ));
    let access_api = {
        let (auth, secrets, events) = (auth.clone(), secrets.clone(), supervisor.events().clone());
        move || {
            AccessServer::new(AccessApi::new(
                auth.clone(),
                secrets.clone(),
                events.clone(),
            ))
        }
    };
    let routes_access = access_api.clone();
    let routes_jobs = JobsServer::new(JobsService::new(jobs.clone()));
    let routes_events = supervisor.events().clone();
    let routes_secrets = secrets.clone();
    let routes_hooks = HooksApi::new(hooks.clone());
    // The standard gRPC services beside herd's own, so grpc_health_probe and grpcurl work:
    // health answers anyone (it says only "serving"), reflection needs a viewer token on TCP.
    let (health, health_service) = tonic_health::server::health_reporter();
    for service in crate::api::standard::SERVICES {
        health
            .set_service_status(service, tonic_health::ServingStatus::Serving)
            .await;
    }
    let reflection = crate::api::standard::reflection()?;
    let (routes_health, routes_reflection) = (health_service.clone(), reflection.clone());
    let routes: RoutesFor = Box::new(move |door: &Door| {
        match &routes_cluster {
            Some(node) if shares_cluster_port => node.rpc_routes(),
            _ => Routes::default(),
        }
        .add_service(routes_health.clone())
        .add_service(door.guard(routes_reflection.clone()))
        .add_service(door.guard(SupervisorServer::new(routes_api.clone())))
        .add_service(
            door.guard(ClusterAdminServer::new(
                Admin::new(routes_cluster.clone(), routes_events.clone())
                    .with_secrets(routes_secrets.clone()),
            )),
        )
        .add_service(door.guard(routes_access()))
        .add_service(door.guard(routes_jobs.clone()))
        .add_service(door.guard(HooksServer::new(routes_hooks.clone())))
    });
    let tcp_api = TcpApi::new(routes, auth.clone(), cluster_listen, shares_cluster_port);
    if let Some((cfg, listener)) = tcp {
        tcp_api
            .start(&cfg, listener)
            .map_err(anyhow::Error::msg)
            .context("cannot start the TCP API")?;
        info!(listen = %cfg.listen, cluster_rpc = shares_cluster_port, tls = cfg.tls.is_some(), "TCP API listening (token required)");
    }
    if let Some((addr, listener, tls)) = http {
        let https = tls.is_some();
        crate::http::serve(
            listener,
            tls,
            crate::http::HttpState {
                tls: https,
                supervisor: supervisor.clone(),
                api: api.clone(),
                admin: Arc::new(
                    Admin::new(cluster.clone(), supervisor.events().clone())
                        .with_secrets(secrets.clone()),
                ),
                logins,
                login_throttle: Arc::new(crate::api::remote::throttle::AuthThrottle::new(
                    "dashboard sign-in",
                )),
                streams: Arc::new(tokio::sync::Semaphore::new(
                    crate::http::dashboard::MAX_STREAMS,
                )),
                started: std::time::Instant::now(),
                persisted: persisted_http,
                cluster: cluster.clone(),
                auth: auth.clone(),
                metrics_need_token: !addr.ip().is_loopback() && !http_section.metrics_public,
            },
        )
        .map_err(anyhow::Error::msg)?;
    }
    let applier = tcp_api.clone();
    config.set_api_applier(Box::new(move |c: &DaemonConfig| {
        let api = c
            .api
            .clone()
            .unwrap_or_default()
            .to_config(|k| std::env::var(k).ok())?;
        applier.apply(api.as_ref())
    }));
    if let Some(node) = &cluster {
        // Weak: the daemon's shutdown takes the node back out of its Arc.
        let node = Arc::downgrade(node);
        config.set_cluster_applier(Box::new(move |c: &DaemonConfig| {
            let Some(node) = node.upgrade() else {
                return Ok(None);
            };
            let tls = match &c.cluster {
                Some(section) if section.enabled => section.peer_tls()?,
                _ => None,
            };
            let renewal = node
                .prepare_tls_renewal(tls.as_ref())
                .map_err(|e| format!("[cluster] {e}"))?;
            Ok(renewal.map(|r| -> ClusterCommit {
                Box::new(move || {
                    node.renew_tls(r);
                    vec!["cluster.tls".into()]
                })
            }))
        }));
    }
    // Shutting down: health says so first (the TCP API may answer a moment longer).
    let stop_signal = async move {
        stop_signal.await;
        for service in crate::api::standard::SERVICES {
            health
                .set_service_status(service, tonic_health::ServingStatus::NotServing)
                .await;
        }
    };
    // A client that keeps a stream open (a health watch, a stalled reflection call) must not
    // hold the daemon up: after the stop signal, open calls get a bounded moment to end.
    let (draining, drain_started) = tokio::sync::oneshot::channel::<()>();
    let stop_signal = async move {
        stop_signal.await;
        let _ = draining.send(());
    };
    // Under systemd: READY=1 once the server below answers, then status and watchdog pings
    // (a `herd down` is seen there as the supervisor closing: STOPPING=1).
    if let Some(n) = &notifier {
        tasks.push(tokio::spawn(crate::systemd::ready_when_serving(
            n.clone(),
            home.clone(),
            supervisor.clone(),
        )));
        tasks.push(tokio::spawn(n.clone().run(supervisor.clone())));
    }
    let server = tonic::transport::Server::builder()
        .add_service(health_service)
        .add_service(reflection)
        .add_service(SupervisorServer::new(api))
        .add_service(ClusterAdminServer::new(
            Admin::new(cluster.clone(), supervisor.events().clone()).with_secrets(secrets.clone()),
        ))
        .add_service(access_api())
        .add_service(JobsServer::new(JobsService::new(jobs)))
        .add_service(HooksServer::new(HooksApi::new(hooks)))
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), stop_signal);
    tokio::select! {
        served = server => served.context("the API server failed")?,
        () = async {
            if drain_started.await.is_ok() {
                tokio::time::sleep(SHUTDOWN_DRAIN).await;
            } else {
                std::future::pending::<()>().await;
            }
        } => {
            warn!(
                after_s = SHUTDOWN_DRAIN.as_secs(),
                "calls still open on the socket at shutdown; closing them"
            );
        }
    }

    // However the server ended, systemd hears that the daemon is going before it is gone.
    if let Some(n) = &notifier {
        n.stopping();
    }
    for t in tasks {
        t.abort();
    }
    if let Some(node) = cluster {
        match Arc::try_unwrap(node) {
            Ok(node) => node.shutdown().await,
            Err(_) => {
                warn!("the cluster node is still in use; leaving it to the runtime's shutdown")
            }
        }
    }
    // Last: a shared port carries the cluster's RPCs until the node has stopped.
    tcp_api.stop();
    let snapshot = supervisor.snapshot();
    let flushed = tokio::task::spawn_blocking(move || {
        state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .save(&snapshot)
    })
    .await;
    match flushed {
        Ok(Ok(())) => {
            // Apps that outlive the daemon (`herd kill`) keep theirs: only empty ones go.
            supervisor.release_host_dirs();
            info!("state flushed; herd daemon down")
        }
        Ok(Err(e)) => error!(error = %e, "final state flush failed"),
        Err(e) => error!(error = %e, "final state flush did not run"),
    }
    Ok(())
}

/// `[jobs]` of the config, following reloads.
fn jobs_section(config: &ConfigHandle) -> watch::Receiver<JobsSection> {
    let mut cfg = config.subscribe();
    let of = |c: &DaemonConfig| c.jobs.clone().unwrap_or_default();
    let (tx, rx) = watch::channel(of(&cfg.borrow_and_update()));
    tokio::spawn(async move {
        while cfg.changed().await.is_ok() {
            let s = of(&cfg.borrow_and_update());
            tx.send_if_modified(|v| {
                let changed = *v != s;
                *v = s;
                changed
            });
        }
    });
    rx
}

/// A watch of one duration derived from the config, following reloads.
fn interval_of(
    config: &ConfigHandle,
    f: fn(&DaemonConfig) -> Duration,
) -> watch::Receiver<Duration> {
    let mut cfg = config.subscribe();
    let (tx, rx) = watch::channel(f(&cfg.borrow_and_update()));
    tokio::spawn(async move {
        while cfg.changed().await.is_ok() {
            let d = f(&cfg.borrow_and_update());
            tx.send_if_modified(|v| std::mem::replace(v, d) != d);
        }
    });
    rx
}

/// Writes the state after every transition — transitions a few ms apart share one write —
/// and at least every `state_flush_s`. `persisted` carries the last transition counter on
/// disk, or the counter a write failed to save and why, so a request answers only once its
/// change is durable, or says it is not. A failed write is logged and retried every second;
/// nothing else stops (apps keep running; everything is saved once the disk accepts writes).
async fn write_state(
    supervisor: Supervisor,
    file: Arc<Mutex<StateFile>>,
    config: watch::Receiver<DaemonConfig>,
    persisted: watch::Sender<Persisted>,
) {
    let mut changes = supervisor.subscribe();
    let mut failing = false;
    let path = file
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .path()
        .display()
        .to_string();
    let mut last_write = Duration::ZERO;
    loop {
        let wait = if failing {
            Duration::from_secs(1)
        } else {
            config.borrow().state_flush()
        };
        tokio::select! {
            r = changes.changed() => {
                if r.is_err() { return }
                tokio::time::sleep(state_coalesce(last_write)).await;
            }
            _ = tokio::time::sleep(wait) => {}
        }
        let version = *changes.borrow_and_update();
        let began = std::time::Instant::now();
        let snapshot = supervisor.snapshot();
        let file = file.clone();
        let result = tokio::task::spawn_blocking(move || {
            file.lock()
                .unwrap_or_else(|p| p.into_inner())
                .save(&snapshot)
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(format!("the write task failed: {e}"))));
        last_write = began.elapsed();
        match result {
            Ok(()) => {
                if failing {
                    info!(file = %path, version, "state write recovered");
                }
                failing = false;
                persisted.send_replace(Persisted {
                    saved: version,
                    failed: None,
                });
            }
            Err(e) => {
                if !failing {
                    error!(file = %path, error = %e, "cannot write the state file; retrying every second, apps keep running");
                }
                failing = true;
                let why = format!("{e} (writing {path})");
                persisted.send_modify(|p| p.failed = Some((version, why)));
            }
        }
    }
}

async fn sweep(supervisor: Supervisor, config: watch::Receiver<DaemonConfig>) {
    loop {
        let every = config.borrow().recovery_sweep();
        tokio::time::sleep(every).await;
        let found = supervisor.sweep();
        if found > 0 {
            info!(found, "recovery sweep handled vanished instances");
        }
    }
}

async fn reload_on_sighup(config: Arc<ConfigHandle>) {
    let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        return;
    };
    while hup.recv().await.is_some() {
        info!(file = %config.path().display(), "SIGHUP: reloading the config");
        let c = config.clone();
        let _ = tokio::task::spawn_blocking(move || c.reload()).await;
    }
}

/// Marks every descriptor the daemon inherited (3 and up: whatever the shell, a CI runner or
/// a parent left open without close-on-exec) close-on-exec, so none of them reaches an app:
/// an inherited pipe or file would otherwise pass to every instance, across the user switch
/// of an app with `user`. herd's own descriptors are close-on-exec already (Rust opens them
/// so); listen sockets reach an app only by `dup2` in the child. Runs first in `run`.
pub fn seal_inherited_fds() {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        warn!("cannot list /proc/self/fd; descriptors the daemon inherited may pass to apps");
        return;
    };
    // Collected first: the directory's own descriptor is among those listed.
    let fds: Vec<i32> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd > 2)
        .collect();
    for fd in fds {
        // SAFETY: fcntl on a descriptor number; one that closed meanwhile is EBADF, no more.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags >= 0 && flags & libc::FD_CLOEXEC == 0 {
                libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
            }
        }
    }
}

/// Every instance holds a pidfd in the daemon; the default soft limit of 1024 descriptors
/// would cap a host at about a thousand instances.
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
        && let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
    {
        warn!(soft, hard, error = %e, "cannot raise the open-file limit");
    }
}

/// The daemon logs structured events to stderr (`daemon.log` when detached), filtered by the
/// config's `log_level`; `HERD_LOG_FORMAT=json` switches to JSON lines. Returns how to change
/// the filter later (config reload).
fn init_tracing(level: &str) -> LogLevelSetter {
    use tracing_subscriber::prelude::*;
    use tracing_subscriber::{EnvFilter, reload};
    // openraft warns on every failed heartbeat to a down peer (20 a second): keep those out.
    let with_quiet_deps = |l: &str| {
        format!("{l},h2=warn,tower=warn,hyper=warn,openraft=warn,openraft::core::heartbeat=error")
    };
    let filter =
        EnvFilter::try_new(with_quiet_deps(level)).unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(false);
    if std::env::var("HERD_LOG_FORMAT").is_ok_and(|v| v == "json") {
        tracing_subscriber::registry()
            .with(filter)
            .with(fmt.json())
            .init();
    } else {
        tracing_subscriber::registry().with(filter).with(fmt).init();
    }
    Box::new(move |l: &str| {
        let f =
            EnvFilter::try_new(with_quiet_deps(l)).map_err(|e| format!("log_level `{l}`: {e}"))?;
        handle.reload(f).map_err(|e| e.to_string())
    })
}

/// What a detached daemon says on its startup pipe once it serves (see `cli::daemon_ctl::up`).
pub const READY_LINE: &str = "herd-daemon-ready";

/// Says it is ready, then points stdout/stderr at `daemon.log`, which closes the pipe
/// `herd up` is reading.
fn detach_stderr(home: &Home) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::fd::AsFd;
    let log = logs::open_append(&home.daemon_log()).context("cannot open daemon.log")?;
    let _ = std::io::stdout().flush();
    let _ = writeln!(std::io::stderr(), "{READY_LINE}");
    let _ = std::io::stderr().flush();
    nix::unistd::dup2_stdout(log.as_fd()).context("cannot redirect stdout")?;
    nix::unistd::dup2_stderr(log.as_fd()).context("cannot redirect stderr")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_writes_wait_longer_after_a_slow_write_but_not_without_bound() {
        assert_eq!(state_coalesce(Duration::ZERO), STATE_COALESCE);
        assert_eq!(state_coalesce(Duration::from_millis(1)), STATE_COALESCE);
        assert_eq!(
            state_coalesce(Duration::from_millis(10)),
            Duration::from_millis(30)
        );
        assert_eq!(state_coalesce(Duration::from_secs(5)), STATE_COALESCE_MAX);
    }
}
