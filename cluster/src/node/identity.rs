//! A node's Raft id: given by the operator, or chosen at random once and kept in
//! `data_dir/node_id`. A wiped data dir therefore means a new id — ids are never reused.

use std::io::Write;
use std::path::Path;

use crate::NodeId;
use crate::error::ClusterError;

pub(crate) fn resolve(configured: Option<u64>, data_dir: &Path) -> Result<NodeId, ClusterError> {
    if let Some(id) = configured {
        return Ok(NodeId(id));
    }
    let path = data_dir.join("node_id");
    let err = |what: &str, e: &dyn std::fmt::Display| ClusterError::Storage {
        path: path.clone(),
        message: format!("{what}: {e}"),
    };
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let id: u64 = text.trim().parse().map_err(|e| {
                err(
                    "node_id file does not hold a number; delete it to pick a new id",
                    &e,
                )
            })?;
            if id == 0 {
                return Err(err("node_id file", &"0 is not a valid id"));
            }
            Ok(NodeId(id))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(data_dir).map_err(|e| err("create data dir", &e))?;
            let id = loop {
                let id: u64 = rand::random();
                if id != 0 {
                    break id;
                }
            };
            // Write-then-rename so a crash never leaves a half-written id behind.
            let tmp = data_dir.join("node_id.tmp");
            let mut f = std::fs::File::create(&tmp).map_err(|e| err("create", &e))?;
            writeln!(f, "{id}").map_err(|e| err("write", &e))?;
            f.sync_all().map_err(|e| err("fsync", &e))?;
            std::fs::rename(&tmp, &path).map_err(|e| err("rename", &e))?;
            Ok(NodeId(id))
        }
        Err(e) => Err(err("read", &e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_id_is_chosen_once_and_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = resolve(None, dir.path()).expect("first");
        let b = resolve(None, dir.path()).expect("second");
        assert_eq!(a, b);
        assert_ne!(a, NodeId(0));
    }

    #[test]
    fn configured_id_wins() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(resolve(Some(7), dir.path()).expect("id"), NodeId(7));
    }
}
