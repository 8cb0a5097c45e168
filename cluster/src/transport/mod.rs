//! Node-to-node transport: one lazily connected gRPC channel per peer address, and the shared
//! secret every call presents and every server checks.

mod auth;
mod channels;
pub mod limits;
pub mod throttle;
pub mod tls;

pub(crate) use auth::ClientAuth;
pub(crate) use auth::ServerAuth;
pub use auth::constant_time_eq;
pub(crate) use channels::PeerChannels;
