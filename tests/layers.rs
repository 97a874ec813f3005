//! The layer check: reads every `crate::` path in `src/` (test modules excluded) and fails when
//! a module reaches up to a higher layer or when modules depend on each other in a cycle.
//! `scripts/check-layers.sh` runs it; docs/ARCHITECTURE.md draws the same layers.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level modules, lowest layer first. A module may use modules of its own layer or lower.
const LAYERS: &[&[&str]] = &[
    &["error", "clock", "state", "health", "exposition"],
    &["identity"],
    &["mapping"],
    &["config"],
    &["wire"],
    &["wg", "tun", "netstack"],
    &["node", "registry"],
    &["userspace"],
    &["services"],
    &["api"],
    &["daemon"],
    &["cli"],
];

fn layer_of(top: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&top))
}

/// `src/a/b.rs` → `a::b`; `src/a.rs` → `a`; `src/lib.rs` → `` (the crate root).
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts == ["lib"] || parts == ["main"] {
        return String::new();
    }
    parts.join("::")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The production part of a file: everything before its first `#[cfg(test)]` item, without
/// comments.
fn production_code(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let t = line.trim_start();
        if t.starts_with("#[cfg(test)]") {
            break;
        }
        if t.starts_with("//") {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Every `crate::a::b::…` path in `code`, as its segments.
fn crate_paths(code: &str) -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let before = rest[..i].chars().next_back();
        rest = &rest[i + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // e.g. `pilot_crate::`
        }
        let mut segs = Vec::new();
        let mut s = rest;
        loop {
            let end = s
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .unwrap_or(s.len());
            if end == 0 {
                break;
            }
            segs.push(s[..end].to_string());
            s = &s[end..];
            match s.strip_prefix("::") {
                Some(r) if r.starts_with(|c: char| c.is_alphanumeric() || c == '_') => s = r,
                _ => break,
            }
        }
        if !segs.is_empty() {
            paths.push(segs);
        }
    }
    paths
}

struct Graph {
    /// File module → the file modules it uses.
    edges: BTreeMap<String, BTreeSet<String>>,
}

fn build_graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(&src, f)).collect();
    let mut edges = BTreeMap::new();
    for f in &files {
        let from = module_of(&src, f);
        let code = production_code(&std::fs::read_to_string(f).unwrap());
        let mut to = BTreeSet::new();
        for path in crate_paths(&code) {
            // The longest prefix of the path that is a module file.
            let target = (1..=path.len())
                .rev()
                .map(|n| path[..n].join("::"))
                .find(|m| modules.contains(m));
            if let Some(t) = target {
                let related = t == from
                    || from.starts_with(&format!("{t}::"))
                    || t.starts_with(&format!("{from}::"));
                if !related {
                    to.insert(t);
                }
            }
        }
        edges.insert(from, to);
    }
    Graph { edges }
}

fn top(module: &str) -> &str {
    module.split("::").next().unwrap_or(module)
}

#[test]
fn every_top_level_module_has_a_layer() {
    let g = build_graph();
    let missing: BTreeSet<&str> = g
        .edges
        .keys()
        .map(|m| top(m))
        .filter(|t| !t.is_empty() && layer_of(t).is_none())
        .collect();
    assert!(
        missing.is_empty(),
        "modules without a layer in tests/layers.rs: {missing:?}"
    );
}

#[test]
fn no_module_uses_a_higher_layer() {
    let g = build_graph();
    let mut bad = Vec::new();
    for (from, tos) in &g.edges {
        let Some(lf) = layer_of(top(from)) else {
            continue;
        };
        for to in tos {
            if let Some(lt) = layer_of(top(to)) {
                if lt > lf {
                    bad.push(format!("{from} -> {to}"));
                }
            }
        }
    }
    assert!(bad.is_empty(), "arrows pointing up:\n{}", bad.join("\n"));
}

#[test]
fn modules_form_no_cycle() {
    let g = build_graph();
    // Tarjan-free: repeated depth-first search from every node, reporting the first cycle.
    fn visit(
        g: &Graph,
        m: &str,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = stack.iter().position(|s| s == m) {
            let mut cycle = stack[i..].to_vec();
            cycle.push(m.to_string());
            return Some(cycle);
        }
        if done.contains(m) {
            return None;
        }
        stack.push(m.to_string());
        for t in g.edges.get(m).into_iter().flatten() {
            if let Some(c) = visit(g, t, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        done.insert(m.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for m in g.edges.keys() {
        if let Some(cycle) = visit(&g, m, &mut Vec::new(), &mut done) {
            panic!("import cycle: {}", cycle.join(" -> "));
        }
    }
}

#[test]
fn the_checker_sees_paths_and_skips_tests() {
    let code = production_code(
        "use crate::wg::{DataPlane, Inner};\nfn f() { crate::node::trust::x(); }\n// crate::cli\n#[cfg(test)]\nmod tests { use crate::cli; }\n",
    );
    let paths = crate_paths(&code);
    assert_eq!(
        paths,
        vec![
            vec!["wg".to_string()],
            vec!["node".into(), "trust".into(), "x".into()]
        ]
    );
}
