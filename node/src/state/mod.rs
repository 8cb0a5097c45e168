//! What must survive the daemon: the state file (atomic writes with a backup) and the pid
//! lock that makes one home belong to one daemon.

pub mod pidlock;
pub mod store;
