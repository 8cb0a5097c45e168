//! What must survive the daemon: the state file (atomic writes with a backup) and the pid
//! lock that makes one home belong to one daemon.

pub mod pidlock;
pub mod private;
pub mod store;

/// What the state writer has achieved, published (a `watch`) to the requests that answer
/// only once their change is on disk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Persisted {
    /// The supervisor's transition counter that is on disk.
    pub saved: u64,
    /// The counter the last failed write tried to save, and why it failed; cleared by the
    /// next successful write.
    pub failed: Option<(u64, String)>,
}

impl Persisted {
    /// `Some(Ok)` once `target` is on disk, `Some(Err(why))` once a write that covered it
    /// failed, `None` while neither is known yet.
    pub fn outcome(&self, target: u64) -> Option<Result<(), String>> {
        if self.saved >= target {
            return Some(Ok(()));
        }
        match &self.failed {
            Some((tried, why)) if *tried >= target => Some(Err(why.clone())),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Persisted;

    #[test]
    fn a_failure_counts_only_for_the_changes_it_tried_to_save() {
        let mut p = Persisted {
            saved: 4,
            failed: Some((6, "No space left on device".into())),
        };
        assert_eq!(p.outcome(3), Some(Ok(())));
        assert_eq!(p.outcome(5), Some(Err("No space left on device".into())));
        assert_eq!(p.outcome(7), None, "a later change waits for its own write");
        p.saved = 7;
        p.failed = None;
        assert_eq!(p.outcome(7), Some(Ok(())));
    }
}
