//! Re-planning only what changed. An app a pass found settled (every instance stays, nothing
//! to unassign, no spread move) is settled again as long as its inputs are the same: its count
//! and placement rules, its assignments, moves and rolling-restart state, no crash relocation
//! asked for it, and the same node view (every node's status and labels, and which nodes
//! answered this master). Other apps' placements only change nodes' loads, which decide where
//! an instance goes but never whether a settled app needs anything, so skipping it leaves the
//! plan exactly as it was: the memo only saves work (the property test checks it).
//!
//! The memo lives in the master term, not in the registry: every replica still agrees on every
//! plan, with or without it.

use std::collections::BTreeMap;
use std::collections::BTreeSet;

use super::PlacementInput;
use crate::registry::App;
use crate::registry::NodeId;
use crate::registry::NodeStatus;
use crate::registry::OnDisconnect;
use crate::registry::Placement;
use crate::registry::Registry;

/// What decided that an app was settled.
#[derive(Clone, Debug, PartialEq)]
struct AppInputs {
    instances: u32,
    placement: Placement,
    on_disconnect: OnDisconnect,
    assignments: Option<BTreeMap<u32, NodeId>>,
    moves: Option<BTreeMap<u32, NodeId>>,
    restarting: bool,
}

impl AppInputs {
    fn of(reg: &Registry, name: &str, app: &App) -> AppInputs {
        AppInputs {
            instances: app.instances,
            placement: app.placement.clone(),
            on_disconnect: app.on_disconnect,
            assignments: reg.assignments.get(name).cloned(),
            moves: reg.moves.get(name).cloned(),
            restarting: restarting(reg, name),
        }
    }

    /// The same as `of` would make, without copying anything.
    fn unchanged(&self, reg: &Registry, name: &str, app: &App) -> bool {
        self.instances == app.instances
            && self.placement == app.placement
            && self.on_disconnect == app.on_disconnect
            && self.restarting == restarting(reg, name)
            && self.moves.as_ref() == reg.moves.get(name)
            && self.assignments.as_ref() == reg.assignments.get(name)
    }
}

fn restarting(reg: &Registry, name: &str) -> bool {
    reg.restarts
        .get(name)
        .is_some_and(|r| !r.pending.is_empty())
}

/// The nodes as placement sees them: id, status, labels, answered this master.
type NodeView = Vec<(NodeId, NodeStatus, BTreeMap<String, String>, bool)>;

/// Apps found settled by earlier passes, kept by the master from pass to pass.
#[derive(Debug, Default)]
pub struct PlacementMemo {
    nodes: NodeView,
    settled: BTreeMap<String, AppInputs>,
    /// Apps the latest pass planned (the rest were skipped as settled and unchanged).
    replanned: usize,
}

impl PlacementMemo {
    /// How many apps the latest pass planned; the others were settled and unchanged.
    pub fn replanned(&self) -> usize {
        self.replanned
    }

    /// At the start of a pass: forgets everything when the node view changed.
    pub(super) fn begin(&mut self, reg: &Registry, live: &BTreeSet<NodeId>) {
        self.replanned = 0;
        let same = self.nodes.len() == reg.nodes.len()
            && self.nodes.iter().zip(reg.nodes.values()).all(
                |((id, status, labels, heard), rec)| {
                    *id == rec.id
                        && *status == rec.status
                        && *heard == live.contains(&rec.id)
                        && *labels == rec.labels
                },
            );
        if !same {
            self.settled.clear();
            self.nodes = reg
                .nodes
                .values()
                .map(|rec| {
                    (
                        rec.id,
                        rec.status,
                        rec.labels.clone(),
                        live.contains(&rec.id),
                    )
                })
                .collect();
        }
    }

    /// Whether app `name` may be skipped: settled before, and nothing it depends on changed.
    pub(super) fn skip(
        &mut self,
        reg: &Registry,
        input: &PlacementInput,
        name: &str,
        app: &App,
    ) -> bool {
        let skip = self
            .settled
            .get(name)
            .is_some_and(|inputs| inputs.unchanged(reg, name, app))
            && !input.relocate.iter().any(|(r, _)| r.app == name);
        if !skip {
            self.replanned += 1;
        }
        skip
    }

    /// The pass wrote nothing for app `name` (`true`) or something (`false`).
    pub(super) fn record(&mut self, reg: &Registry, name: &str, app: &App, settled: bool) {
        if settled {
            if !self
                .settled
                .get(name)
                .is_some_and(|inputs| inputs.unchanged(reg, name, app))
            {
                self.settled
                    .insert(name.to_string(), AppInputs::of(reg, name, app));
            }
        } else {
            self.settled.remove(name);
        }
    }
}
