//! Why the CLI failed, as an exit code a script can act on. The codes are a contract (the
//! README's "Scripting herd" table): the same in text and `--json` mode, extend, never renumber.
//! Every failure maps here once, at the binary's edge (`main.rs`), through `code_of`.

use serde_json::json;

/// The documented exit codes (0 is success).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    /// Anything not listed below.
    Generic = 1,
    /// A bad command line (clap exits with it itself).
    Usage = 2,
    /// An unknown app, token accessor, secret, context or node.
    NotFound = 3,
    /// A role that may not do it, a missing or wrong token, no access to the socket.
    Refused = 4,
    /// No daemon answers: no socket, connection refused, or it is shutting down.
    NotRunning = 5,
    /// The request timeout, or a `--wait`/drain deadline, passed.
    TimedOut = 6,
}

impl Code {
    pub fn number(self) -> u8 {
        self as u8
    }

    /// What a gRPC status from the daemon (or from the transport under it) means for a script.
    pub fn of_status(s: &tonic::Status) -> Code {
        use tonic::Code as G;
        match s.code() {
            G::NotFound => Code::NotFound,
            G::PermissionDenied | G::Unauthenticated => Code::Refused,
            G::Unavailable => Code::NotRunning,
            G::DeadlineExceeded => Code::TimedOut,
            _ => Code::Generic,
        }
    }
}

/// A failure that knows its exit code. Errors without one exit with `Code::Generic`.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct CliError {
    pub code: Code,
    pub message: String,
}

impl CliError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// The exit code of `e`: the first error in its chain that knows one.
pub fn code_of(e: &anyhow::Error) -> Code {
    e.chain()
        .find_map(|cause| {
            if let Some(c) = cause.downcast_ref::<CliError>() {
                Some(c.code)
            } else if cause.is::<super::client::NotRunning>() {
                Some(Code::NotRunning)
            } else if cause.is::<super::client::PermissionDenied>() {
                Some(Code::Refused)
            } else {
                cause.downcast_ref::<tonic::Status>().map(Code::of_status)
            }
        })
        .unwrap_or(Code::Generic)
}

/// The one JSON document `--json` prints for a failure.
pub fn error_json(message: &str, code: Code) -> serde_json::Value {
    json!({ "error": message, "code": code.number() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn daemon_statuses_map_to_their_documented_codes() {
        let of = |s: tonic::Status| Code::of_status(&s).number();
        assert_eq!(of(tonic::Status::not_found("app `x` not found")), 3);
        assert_eq!(of(tonic::Status::permission_denied("viewer")), 4);
        assert_eq!(of(tonic::Status::unauthenticated("token")), 4);
        assert_eq!(of(tonic::Status::unavailable("shutting down")), 5);
        assert_eq!(of(tonic::Status::deadline_exceeded("late")), 6);
        assert_eq!(of(tonic::Status::invalid_argument("bad")), 1);
        assert_eq!(of(tonic::Status::internal("bug")), 1);
    }

    #[test]
    fn the_code_is_found_under_context_and_defaults_to_generic() {
        let e = anyhow::Error::new(CliError::new(Code::NotFound, "no context `x`"))
            .context("cannot switch");
        assert_eq!(code_of(&e), Code::NotFound);
        let e: anyhow::Error = Err::<(), _>(super::super::client::NotRunning {
            socket: "/s".into(),
        })
        .context("ps")
        .unwrap_err();
        assert_eq!(code_of(&e), Code::NotRunning);
        let denied = super::super::client::PermissionDenied {
            path: "/run/herd/daemon.sock".into(),
            owner: "root".into(),
            uid: 0,
            mode: 0o600,
        };
        assert_eq!(code_of(&denied.into()), Code::Refused);
        assert_eq!(code_of(&anyhow::anyhow!("something")), Code::Generic);
        assert_eq!(
            error_json("gone", Code::TimedOut),
            json!({ "error": "gone", "code": 6 })
        );
    }
}
