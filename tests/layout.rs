//! The house rules of the source tree, checked on every run: within each crate of the workspace
//! the top-level modules import each other one way only (no cycle), and no product source file
//! grows past 700 lines of code (tests, comments and blank lines not counted).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_CODE_LINES: usize = 700;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The `src` folder of every crate of the workspace.
fn crate_sources() -> Vec<PathBuf> {
    let mut sources = vec![root().join("src")];
    let crates = std::fs::read_dir(root().join("crates")).expect("crates/ exists");
    for entry in crates {
        let src = entry.expect("readable crates/").path().join("src");
        if src.is_dir() {
            sources.push(src);
        }
    }
    sources.sort();
    sources
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("readable source folder") {
        let path = entry.expect("readable entry").path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

/// The top-level module a file belongs to (`src/registry/live.rs` → `registry`), or `None` for
/// the crate roots and binaries.
fn top_module(src: &Path, file: &Path) -> Option<String> {
    let relative = file.strip_prefix(src).ok()?;
    let first = relative.components().next()?.as_os_str().to_str()?;
    match first {
        "lib.rs" | "main.rs" | "bin" => None,
        name => Some(name.trim_end_matches(".rs").to_string()),
    }
}

/// The names after every `crate::` in `text` (`crate::{a, b::c}` gives `a` and `b`).
fn crate_references(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (at, _) in text.match_indices("crate::") {
        if text[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_') {
            continue; // `spinscale_crate::`, not ours
        }
        let rest = &text[at + "crate::".len()..];
        let Some(group) = rest.strip_prefix('{') else {
            names.insert(leading_name(rest));
            continue;
        };
        // Only the items at the group's own level: `crate::{a::{B, C}, d}` gives `a` and `d`.
        let mut depth = 0;
        let mut item_start = true;
        for (i, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => break,
                '}' => depth -= 1,
                ',' if depth == 0 => item_start = true,
                c if item_start && !c.is_whitespace() => {
                    names.insert(leading_name(&group[i..]));
                    item_start = false;
                }
                _ => {}
            }
        }
    }
    names.remove("");
    names
}

fn leading_name(text: &str) -> String {
    text.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect()
}

/// Code lines of a file: not blank, not a comment, and before its `#[cfg(test)]` module.
fn code_lines(text: &str) -> usize {
    text.lines()
        .take_while(|line| line.trim() != "#[cfg(test)]")
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with("//"))
        .count()
}

/// A cycle in `edges`, as the modules along it, if there is one.
fn find_cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|n| n == node) {
            let mut cycle = path[start..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in edges.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, edges, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    edges.keys().find_map(|node| visit(node, edges, &mut Vec::new(), &mut done))
}

#[test]
fn top_level_modules_import_each_other_one_way() {
    for src in crate_sources() {
        let files = rust_files(&src);
        let modules: BTreeSet<String> = files.iter().filter_map(|f| top_module(&src, f)).collect();
        let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for file in &files {
            let Some(module) = top_module(&src, file) else { continue };
            let text = std::fs::read_to_string(file).expect("readable source");
            let uses: Vec<String> =
                crate_references(&text).into_iter().filter(|m| modules.contains(m) && *m != module).collect();
            edges.entry(module).or_default().extend(uses);
        }
        assert_eq!(find_cycle(&edges), None, "a module cycle in {}: {edges:#?}", src.display());
    }
}

#[test]
fn the_cycle_check_finds_a_cycle() {
    let edges: BTreeMap<String, BTreeSet<String>> = [
        ("a".to_string(), BTreeSet::from(["b".to_string()])),
        ("b".to_string(), BTreeSet::from(["c".to_string()])),
        ("c".to_string(), BTreeSet::from(["a".to_string()])),
    ]
    .into();
    assert_eq!(find_cycle(&edges), Some(vec!["a", "b", "c", "a"].into_iter().map(String::from).collect()));
    assert_eq!(
        crate_references("use crate::{registry::{Registry, Target}, telemetry};\nspinscale_crate::x; crate::grpc::f()"),
        BTreeSet::from(["grpc".to_string(), "registry".to_string(), "telemetry".to_string()])
    );
}

#[test]
fn no_source_file_is_over_700_lines_of_code() {
    let mut too_long = Vec::new();
    for src in crate_sources() {
        for file in rust_files(&src) {
            let lines = code_lines(&std::fs::read_to_string(&file).expect("readable source"));
            if lines > MAX_CODE_LINES {
                too_long.push(format!("{} ({lines} lines of code)", file.display()));
            }
        }
    }
    assert!(too_long.is_empty(), "over {MAX_CODE_LINES} lines of code: {too_long:#?}");
}
