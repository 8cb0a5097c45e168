//! herd's chaos suite: stands up real clusters, injects faults, checks invariants.
//!
//! The cluster does not exist yet (see the cluster-core issue); until then this binary only
//! says so, so that nobody mistakes it for a passing suite.
fn main() {
    eprintln!("herd-chaos: the cluster is not built yet; there is nothing to break");
    std::process::exit(2);
}
