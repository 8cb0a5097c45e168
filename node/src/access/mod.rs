//! Access control and secrets: who a caller is (`caller`, `tokens`), what each role may call
//! (`policy`), the door of the TCP API that applies both (`guard`), where tokens and sealed
//! secrets are kept (`store`: `access.json` standalone, the registry in a cluster), sealing
//! (`secrets`) and the `herd token` / `herd secret` service (`service`).
//!
//! The Unix socket is admin (its 0600 mode is the gate); the config's API token is admin;
//! every other token has the role it was made with.

pub mod caller;
pub mod guard;
pub mod policy;
pub mod sealing;
pub mod secret_watch;
pub mod secrets;
pub mod service;
pub mod store;
pub mod tokens;

pub use caller::Caller;
