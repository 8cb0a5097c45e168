//! Connecting to a daemon: the local one over its Unix socket (trusted: the socket is 0600),
//! or a remote one over its TCP API with a bearer token (`--host`, `--token-file`), over TLS
//! when the host is `https://...` (checked against `--ca-file`).

use super::exit::{CliError, Code};
use crate::home::Home;
use anyhow::{Context, bail};
use herd_proto::supervisor::supervisor_client::SupervisorClient;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

pub type AuthChannel = InterceptedService<Channel, Bearer>;
pub type Client = SupervisorClient<AuthChannel>;

/// The TCP API's default port (`[api] listen`).
const DEFAULT_PORT: u16 = 9700;
const REMOTE_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// While a call is open (say `logs --follow` of a quiet app) the CLI pings a remote daemon, so
/// the daemon's idle timeout (`[api] idle_timeout_s`) does not cut it.
const REMOTE_PING_EVERY: Duration = Duration::from_secs(60);

/// The socket exists but this user may not use it (or a directory on the way to it).
#[derive(Debug, thiserror::Error)]
#[error(
    "permission denied on {path} (owned by {owner} uid {uid}, mode {mode:04o}): run herd as that user or with sudo"
)]
pub struct PermissionDenied {
    pub path: String,
    pub owner: String,
    pub uid: u32,
    pub mode: u32,
}

impl PermissionDenied {
    /// Names the first path on the way to `socket` that this user cannot pass: a directory it
    /// cannot search, else the socket it cannot write.
    fn find(socket: &Path) -> Option<PermissionDenied> {
        use nix::unistd::{AccessFlags, access};
        use std::os::unix::fs::MetadataExt;
        let mut dirs: Vec<&Path> = socket.ancestors().skip(1).collect();
        dirs.reverse();
        let blocker = dirs
            .into_iter()
            .find(|d| access(*d, AccessFlags::X_OK) == Err(nix::errno::Errno::EACCES))
            .or_else(|| {
                (access(socket, AccessFlags::W_OK) == Err(nix::errno::Errno::EACCES))
                    .then_some(socket)
            })?;
        let meta = std::fs::metadata(blocker).ok()?;
        let owner = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(meta.uid()))
            .ok()
            .flatten()
            .map_or_else(|| meta.uid().to_string(), |u| u.name);
        Some(PermissionDenied {
            path: blocker.display().to_string(),
            owner,
            uid: meta.uid(),
            mode: meta.mode() & 0o7777,
        })
    }
}

#[derive(Debug, thiserror::Error)]
#[error("herd is not running (no daemon answers on {socket}); start it with `herd up`")]
pub struct NotRunning {
    pub socket: String,
}

/// Where the CLI's requests go.
#[derive(Clone, Debug)]
pub enum Target {
    /// The daemon of this host's herd home.
    Local { socket: PathBuf },
    /// A daemon's TCP API: `http://host:port` and the `authorization` value to present.
    Remote {
        uri: String,
        token: MetadataValue<Ascii>,
        /// PEM of the CA that signed the daemon's certificate (TLS).
        ca: Option<Vec<u8>>,
    },
}

/// What the command line (or a context) says about the daemon to talk to.
#[derive(Debug, Default)]
pub struct RemoteArgs {
    pub host: Option<String>,
    pub token_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    /// The context these came from, named in errors about its files...
    pub context: Option<String>,
    /// ...except those typed on the command line over it.
    pub typed: Explicit,
}

impl RemoteArgs {
    /// The one place the daemon to talk to is chosen. Precedence: `--host` given on the
    /// command line (with its `--token-file`/`--ca-file`) > a context named by `--context` or
    /// `HERD_CONTEXT` > `HERD_HOST` > the current context > this host's socket. Flags given on
    /// the command line override a context's token and CA files. `local_only` commands (`up`,
    /// `kill`) ignore the current context, so a context never stops one from starting the
    /// local daemon.
    pub fn resolve(
        flags: RemoteArgs,
        explicit: Explicit,
        local_only: bool,
        env: impl Fn(&str) -> Option<String>,
    ) -> anyhow::Result<RemoteArgs> {
        if explicit.host {
            // No context is used: none is named in errors either.
            return Ok(RemoteArgs {
                context: None,
                ..flags
            });
        }
        let named = flags.context.clone();
        if named.is_none() && flags.host.is_some() {
            // HERD_HOST, with HERD_TOKEN_FILE / HERD_CA_FILE as before contexts.
            return Ok(flags);
        }
        if named.is_none() && local_only {
            return Ok(RemoteArgs::default());
        }
        let Some((name, c)) = super::context::chosen(named.as_deref(), env)? else {
            return Ok(RemoteArgs::default());
        };
        let pick = |flag: Option<PathBuf>, given: bool, ours: Option<PathBuf>| {
            if given { flag } else { ours }
        };
        Ok(RemoteArgs {
            host: Some(c.host),
            token_file: pick(flags.token_file, explicit.token_file, c.token_file),
            ca_file: pick(flags.ca_file, explicit.ca_file, c.ca_file),
            context: Some(name),
            typed: explicit,
        })
    }
}

/// Which of `--host`, `--token-file`, `--ca-file` were typed on the command line (not taken
/// from the environment).
#[derive(Clone, Copy, Debug, Default)]
pub struct Explicit {
    pub host: bool,
    pub token_file: bool,
    pub ca_file: bool,
}

impl Target {
    pub fn local(home: &Home) -> Target {
        Target::Local {
            socket: home.socket(),
        }
    }

    /// `--host` (or `HERD_HOST`) picks a remote daemon; its token comes from `--token-file`
    /// (or `HERD_TOKEN_FILE`), else `HERD_TOKEN`. `https://HOST` needs `--ca-file`.
    pub fn from_args(
        home: &Home,
        args: RemoteArgs,
        env: impl Fn(&str) -> Option<String>,
    ) -> anyhow::Result<Target> {
        let Some(host) = args
            .host
            .as_deref()
            .map(str::trim)
            .filter(|h| !h.is_empty())
        else {
            return Ok(Target::local(home));
        };
        let of_context = |what: &str, path: &Path, typed: bool| match &args.context {
            Some(c) if !typed => format!(
                "context `{c}`: cannot read its {what} {} (`herd context add {c} --host {host} ...` points it elsewhere)",
                path.display()
            ),
            _ => format!("cannot read the {what} {}", path.display()),
        };
        let token = match (&args.token_file, env("HERD_TOKEN")) {
            (Some(path), _) => std::fs::read_to_string(path)
                .with_context(|| of_context("token file", path, args.typed.token_file))?
                .trim()
                .to_string(),
            (None, Some(t)) => t.trim().to_string(),
            (None, None) => bail!(
                "--host {host} needs the daemon's API token: --token-file FILE (or HERD_TOKEN)"
            ),
        };
        let token = format!("Bearer {token}")
            .parse()
            .context("the token must be printable ASCII")?;
        let (scheme, authority) = match host.strip_prefix("https://") {
            Some(rest) => ("https", rest),
            None => ("http", host.strip_prefix("http://").unwrap_or(host)),
        };
        let authority = authority.trim_end_matches('/');
        let ca = match (scheme, &args.ca_file) {
            ("https", Some(path)) => {
                let typed = args.typed.ca_file;
                Some(std::fs::read(path).with_context(|| of_context("CA file", path, typed))?)
            }
            ("https", None) => bail!(
                "{host} is TLS: --ca-file FILE (or HERD_CA_FILE) names the CA that signed the daemon's certificate"
            ),
            _ => None,
        };
        let has_port = authority
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.ends_with(':') && p.parse::<u16>().is_ok());
        let uri = if has_port {
            format!("{scheme}://{authority}")
        } else {
            format!("{scheme}://{authority}:{DEFAULT_PORT}")
        };
        Ok(Target::Remote { uri, token, ca })
    }

    pub fn is_remote(&self) -> bool {
        matches!(self, Target::Remote { .. })
    }

    /// The daemon's address as a user would name it in an error.
    pub fn describe(&self) -> String {
        match self {
            Target::Local { socket } => socket.display().to_string(),
            Target::Remote { uri, .. } => uri.clone(),
        }
    }
}

/// Adds the bearer token to every call to a remote daemon.
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(token) = &self.0 {
            req.metadata_mut().insert("authorization", token.clone());
        }
        Ok(req)
    }
}

pub async fn connect(target: &Target) -> anyhow::Result<Client> {
    Ok(SupervisorClient::new(channel(target).await?).max_decoding_message_size(64 * 1024 * 1024))
}

/// A channel to the daemon, for any of its services.
pub async fn channel(target: &Target) -> anyhow::Result<AuthChannel> {
    match target {
        Target::Local { socket } => {
            let not_running = || NotRunning {
                socket: socket.display().to_string(),
            };
            // EACCES (here or on a directory above) is not "not running": say whose it is.
            if let Some(denied) = PermissionDenied::find(socket) {
                return Err(denied.into());
            }
            if !socket.exists() {
                return Err(not_running().into());
            }
            let endpoint = Endpoint::from_shared(format!("unix://{}", socket.display()))
                .context("bad socket path")?;
            match endpoint.connect().await {
                Ok(ch) => Ok(InterceptedService::new(ch, Bearer(None))),
                Err(_) => Err(not_running().into()),
            }
        }
        Target::Remote { uri, token, ca } => {
            let mut endpoint = Endpoint::from_shared(uri.clone())
                .with_context(|| format!("`{uri}` is not a host:port"))?
                .connect_timeout(REMOTE_CONNECT_TIMEOUT)
                .http2_keep_alive_interval(REMOTE_PING_EVERY)
                .keep_alive_while_idle(false)
                .tcp_nodelay(true);
            if let Some(ca) = ca {
                endpoint = endpoint
                    .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)))
                    .context("cannot set up TLS")?;
            }
            let ch = endpoint.connect().await.map_err(|e| {
                CliError::new(
                    Code::NotRunning,
                    herd_cluster::with_causes(&format!("no herd daemon answers at {uri}"), &e),
                )
            })?;
            Ok(InterceptedService::new(ch, Bearer(Some(token.clone()))))
        }
    }
}

/// Turns a gRPC error into the daemon's own message and the exit code its status means; a
/// transport failure names its cause (say, plain HTTP/2 sent to a TLS port: the daemon hangs
/// up) and counts as "not running".
pub fn status_error(s: tonic::Status) -> anyhow::Error {
    let mut msg = herd_cluster::with_causes(s.message(), &s);
    let mut code = Code::of_status(&s);
    // Only a transport failure carries a source; the daemon's own refusals do not.
    if std::error::Error::source(&s).is_some() {
        msg.push_str(" (is the daemon's API TLS? then use --host https://...)");
        code = Code::NotRunning;
    }
    CliError::new(code, msg).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(host: &str) -> String {
        let home = Home::at("/nonexistent".into());
        let args = RemoteArgs {
            host: Some(host.into()),
            ..RemoteArgs::default()
        };
        match Target::from_args(&home, args, |_| Some("t0k3n".into())).unwrap() {
            Target::Remote { uri, token, .. } => {
                assert_eq!(token.to_str().unwrap(), "Bearer t0k3n");
                uri
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_host_gets_the_default_port_and_an_http_scheme() {
        assert_eq!(remote("10.0.0.5"), "http://10.0.0.5:9700");
        assert_eq!(remote("10.0.0.5:9911"), "http://10.0.0.5:9911");
        assert_eq!(remote("http://box.lan:9800/"), "http://box.lan:9800");
        assert_eq!(remote("[::1]:9700"), "http://[::1]:9700");
    }

    #[test]
    fn a_remote_host_without_a_token_is_refused_and_no_host_is_local() {
        let home = Home::at("/h".into());
        let host = |h: &str| RemoteArgs {
            host: Some(h.into()),
            ..RemoteArgs::default()
        };
        let err = Target::from_args(&home, host("10.0.0.5"), |_| None).unwrap_err();
        assert!(err.to_string().contains("--token-file"), "{err}");
        let err =
            Target::from_args(&home, host("https://10.0.0.5"), |_| Some("t".into())).unwrap_err();
        assert!(err.to_string().contains("--ca-file"), "{err}");
        let local = Target::from_args(&home, RemoteArgs::default(), |_| Some("x".into())).unwrap();
        assert!(!local.is_remote());
    }

    #[test]
    fn flags_beat_a_named_context_which_beats_herd_host_which_beats_the_current_one() {
        use super::super::context::{Context, Contexts, save};
        let tmp = tempfile::tempdir().unwrap();
        let xdg = tmp.path().display().to_string();
        let mut all = Contexts {
            current: Some("cur".into()),
            ..Contexts::default()
        };
        for (name, host) in [("cur", "current:1"), ("named", "named:1")] {
            let c = Context {
                host: host.into(),
                token_file: Some(format!("/{name}.token").into()),
                ca_file: None,
            };
            all.contexts.insert(name.into(), c);
        }
        save(&tmp.path().join("herd"), &all).unwrap();
        let env = |k: &str| (k == "XDG_CONFIG_HOME").then(|| xdg.clone());
        let host = |flags: RemoteArgs, explicit: Explicit, local_only: bool| {
            let r = RemoteArgs::resolve(flags, explicit, local_only, env).unwrap();
            (r.host, r.token_file.map(|p| p.display().to_string()))
        };
        let typed = Explicit {
            host: true,
            ..Explicit::default()
        };
        let flags = |host: Option<&str>, context: Option<&str>| RemoteArgs {
            host: host.map(String::from),
            token_file: Some("/flag.token".into()),
            context: context.map(String::from),
            ..RemoteArgs::default()
        };
        let some = |h: &str, t: &str| (Some(h.to_string()), Some(t.to_string()));
        // A typed --host wins over everything.
        assert_eq!(
            host(flags(Some("flag:1"), Some("named")), typed, false),
            some("flag:1", "/flag.token")
        );
        // A named context beats HERD_HOST (a host not typed); its own token file is used.
        assert_eq!(
            host(
                flags(Some("env:1"), Some("named")),
                Explicit::default(),
                false
            ),
            some("named:1", "/named.token")
        );
        // HERD_HOST beats the current context.
        assert_eq!(
            host(flags(Some("env:1"), None), Explicit::default(), false),
            some("env:1", "/flag.token")
        );
        // Nothing else: the current context; a typed --token-file replaces its token file.
        assert_eq!(
            host(flags(None, None), Explicit::default(), false),
            some("current:1", "/cur.token")
        );
        let token_typed = Explicit {
            token_file: true,
            ..Explicit::default()
        };
        assert_eq!(
            host(flags(None, None), token_typed, false),
            some("current:1", "/flag.token")
        );
        // `up` and `kill` ignore the current context.
        assert_eq!(host(flags(None, None), Explicit::default(), true).0, None);
    }
}
