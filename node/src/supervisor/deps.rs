//! `depends_on` between apps: validation (unknown names, cycles), start/stop ordering, and
//! the tree `herd graph` prints.

use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// app → the apps it depends on.
pub type Edges = BTreeMap<String, Vec<String>>;

/// Rejects a dependency on an app that does not exist, and any cycle (named in order).
pub fn check(edges: &Edges) -> Result<(), String> {
    for (app, deps) in edges {
        if let Some(missing) = deps.iter().find(|d| !edges.contains_key(*d)) {
            return Err(format!(
                "app `{app}`: key `depends_on`: unknown app `{missing}`"
            ));
        }
    }
    // Depth-first search with colours: grey = on the current path.
    #[derive(Clone, Copy, PartialEq)]
    enum Colour {
        White,
        Grey,
        Black,
    }
    fn visit<'a>(
        n: &'a str,
        edges: &'a Edges,
        colour: &mut BTreeMap<&'a str, Colour>,
        path: &mut Vec<&'a str>,
    ) -> Result<(), String> {
        colour.insert(n, Colour::Grey);
        path.push(n);
        for d in edges.get(n).into_iter().flatten() {
            match colour.get(d.as_str()).copied().unwrap_or(Colour::White) {
                Colour::Grey => {
                    let start = path.iter().position(|p| *p == d).unwrap_or(0);
                    let mut cycle: Vec<&str> = path[start..].to_vec();
                    cycle.push(d);
                    return Err(format!(
                        "app `{}`: key `depends_on`: dependency cycle {}",
                        path[start],
                        cycle.join(" -> ")
                    ));
                }
                Colour::White => visit(d, edges, colour, path)?,
                Colour::Black => {}
            }
        }
        path.pop();
        colour.insert(n, Colour::Black);
        Ok(())
    }
    let mut colour = BTreeMap::new();
    for app in edges.keys() {
        if colour.get(app.as_str()).copied().unwrap_or(Colour::White) == Colour::White {
            visit(app, edges, &mut colour, &mut Vec::new())?;
        }
    }
    Ok(())
}

/// Groups apps into layers: layer 0 depends on nothing, layer n on apps of layers below n.
/// Stopping goes from the top layer down. Expects an acyclic graph (see `check`); apps
/// caught in a cycle anyway land in the last layer.
pub fn layers(edges: &Edges) -> Vec<Vec<String>> {
    let mut depth: BTreeMap<&str, usize> = BTreeMap::new();
    fn d<'a>(
        n: &'a str,
        edges: &'a Edges,
        depth: &mut BTreeMap<&'a str, usize>,
        guard: &mut BTreeSet<&'a str>,
    ) -> usize {
        if let Some(v) = depth.get(n) {
            return *v;
        }
        if !guard.insert(n) {
            return edges.len();
        }
        let v = edges
            .get(n)
            .into_iter()
            .flatten()
            .filter(|x| edges.contains_key(*x))
            .map(|x| d(x, edges, depth, guard) + 1)
            .max()
            .unwrap_or(0);
        guard.remove(n);
        depth.insert(n, v);
        v
    }
    for n in edges.keys() {
        d(n, edges, &mut depth, &mut BTreeSet::new());
    }
    let top = depth.values().copied().max().unwrap_or(0);
    let mut out = vec![Vec::new(); top + 1];
    for (n, v) in depth {
        out[v].push(n.to_string());
    }
    out.retain(|l| !l.is_empty());
    out
}

/// One app and what it depends on, recursively.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Node {
    pub name: String,
    pub depends_on: Vec<Node>,
}

pub fn tree(root: &str, edges: &Edges) -> Node {
    fn build(n: &str, edges: &Edges, path: &mut Vec<String>) -> Node {
        path.push(n.to_string());
        let mut depends_on = Vec::new();
        for d in edges.get(n).into_iter().flatten() {
            if !path.contains(d) {
                depends_on.push(build(d, edges, path));
            }
        }
        path.pop();
        Node {
            name: n.to_string(),
            depends_on,
        }
    }
    build(root, edges, &mut Vec::new())
}

/// Draws a tree the way `tree(1)` does.
pub fn render(node: &Node) -> String {
    fn walk(n: &Node, prefix: &str, out: &mut String) {
        for (i, c) in n.depends_on.iter().enumerate() {
            let last = i + 1 == n.depends_on.len();
            out.push_str(&format!(
                "{prefix}{}{}\n",
                if last { "└── " } else { "├── " },
                c.name
            ));
            walk(
                c,
                &format!("{prefix}{}", if last { "    " } else { "│   " }),
                out,
            );
        }
    }
    let mut out = format!("{}\n", node.name);
    walk(node, "", &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn edges(list: &[(&str, &[&str])]) -> Edges {
        list.iter()
            .map(|(a, d)| (a.to_string(), d.iter().map(|s| s.to_string()).collect()))
            .collect()
    }

    #[test]
    fn unknown_dependencies_and_cycles_are_named() {
        let e = edges(&[("web", &["api"]), ("api", &["db"])]);
        assert_eq!(
            check(&e).unwrap_err(),
            "app `api`: key `depends_on`: unknown app `db`"
        );
        let e = edges(&[("web", &["api"]), ("api", &["db"]), ("db", &["web"])]);
        assert_eq!(
            check(&e).unwrap_err(),
            "app `api`: key `depends_on`: dependency cycle api -> db -> web -> api"
        );
        assert!(
            check(&edges(&[
                ("web", &["api", "db"]),
                ("api", &["db"]),
                ("db", &[])
            ]))
            .is_ok()
        );
    }

    #[test]
    fn layers_put_dependencies_first() {
        let e = edges(&[
            ("web", &["api"]),
            ("api", &["db"]),
            ("db", &[]),
            ("cron", &[]),
        ]);
        assert_eq!(
            layers(&e),
            vec![
                vec!["cron".to_string(), "db".into()],
                vec!["api".into()],
                vec!["web".into()]
            ]
        );
    }

    #[test]
    fn graph_renders_as_a_tree() {
        let e = edges(&[
            ("web", &["api", "cache"]),
            ("api", &["db"]),
            ("db", &[]),
            ("cache", &[]),
        ]);
        assert_eq!(
            render(&tree("web", &e)),
            "web\n├── api\n│   └── db\n└── cache\n"
        );
    }
}
