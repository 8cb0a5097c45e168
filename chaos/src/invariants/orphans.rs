//! Invariant 4: once `herd down` has returned on a node, no app process of that node's home is
//! left running (an orphan would keep ports, files and work alive with nobody watching).

use super::Check;
use super::secs;
use crate::history::History;

pub fn no_orphans_after_down(h: &History) -> Check {
    const NAME: &str = "4 no app process outlives `herd down`";
    if h.downs.is_empty() {
        return Check::no_data(NAME, "no `herd down` was run");
    }
    let mut evidence = Vec::new();
    for d in &h.downs {
        if !d.down_ok {
            evidence.push(format!(
                "`herd down` on node {} at {} failed: {}",
                d.node,
                secs(d.t_ms),
                d.down_error.as_deref().unwrap_or("no reason given")
            ));
        }
        for s in &d.survivors {
            evidence.push(format!(
                "node {}: pid {} ({}, app {}, HERD_HOME={}) still ran {} ms after `herd down` at {}",
                d.node,
                s.pid,
                s.cmdline,
                s.app.as_deref().unwrap_or("?"),
                s.herd_home,
                d.grace_ms,
                secs(d.t_ms)
            ));
        }
    }
    if evidence.is_empty() {
        Check::pass(
            NAME,
            format!("{} `herd down`s, no app process left behind", h.downs.len()),
        )
    } else {
        Check::fail(NAME, evidence)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::DownCheck;
    use crate::history::Survivor;
    use crate::invariants::Verdict;

    fn down(node: usize, survivors: Vec<Survivor>) -> DownCheck {
        DownCheck {
            t_ms: 60_000,
            node,
            down_ok: true,
            down_error: None,
            survivors,
            grace_ms: 1_000,
        }
    }

    #[test]
    fn clean_downs_pass() {
        let h = History {
            downs: vec![down(1, vec![]), down(2, vec![])],
            ..History::default()
        };
        assert_eq!(no_orphans_after_down(&h).verdict, Verdict::Pass);
    }

    #[test]
    fn an_orphan_fails_with_its_pid_and_home() {
        let orphan = Survivor {
            pid: 4242,
            herd_home: "/tmp/herd-chaos-x/h2".into(),
            app: Some("web@1".into()),
            cmdline: "python3 -m http.server".into(),
        };
        let h = History {
            downs: vec![down(1, vec![]), down(2, vec![orphan])],
            ..History::default()
        };
        let c = no_orphans_after_down(&h);
        assert_eq!(c.verdict, Verdict::Fail);
        assert!(
            c.evidence[0].contains("pid 4242")
                && c.evidence[0].contains("HERD_HOME=/tmp/herd-chaos-x/h2"),
            "{:?}",
            c.evidence
        );
    }

    #[test]
    fn a_failed_down_fails_and_no_down_is_no_data() {
        let mut d = down(3, vec![]);
        d.down_ok = false;
        d.down_error = Some("timed out after 30 s".into());
        let h = History {
            downs: vec![d],
            ..History::default()
        };
        assert_eq!(no_orphans_after_down(&h).verdict, Verdict::Fail);
        assert_eq!(
            no_orphans_after_down(&History::default()).verdict,
            Verdict::NoData
        );
    }
}
