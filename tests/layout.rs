//! The source's shape, checked: no module imports one that imports it back (shared types live
//! below everything that uses them), and functions stay short. Reads src/; needs no root.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Longest a function may be, in lines, signature and closing brace included.
const MAX_FUNCTION_LINES: usize = 80;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn files(dir: &Path, ext: &str, found: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("reading src") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            files(&path, ext, found);
        } else if path.extension().is_some_and(|e| e == ext) {
            found.push(path);
        }
    }
    found.sort();
}

/// `render/snapshot/json.rs` -> `render::snapshot::json`; `bpf/mod.rs` -> `bpf`.
fn module_of(file: &Path) -> String {
    let relative = file.strip_prefix(src()).expect("under src");
    let mut parts: Vec<String> = relative
        .with_extension("")
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if parts
        .last()
        .is_some_and(|p| p == "mod" || p == "lib" || p == "main")
    {
        parts.pop();
    }
    parts.join("::")
}

/// The paths a file names from the crate's root (`crate::a::b`, `use crate::{a, b::c}`) and
/// from its parent (`super::x`), as root-relative paths.
fn referenced_paths(text: &str, module: &str) -> Vec<String> {
    let parent = module.rsplit_once("::").map_or("", |(p, _)| p);
    let mut paths = Vec::new();
    for (prefix, base) in [("crate::", ""), ("super::", parent)] {
        let mut rest = text;
        while let Some(at) = rest.find(prefix) {
            let preceded_by_ident = rest[..at]
                .chars()
                .last()
                .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':');
            rest = &rest[at + prefix.len()..];
            if preceded_by_ident {
                continue;
            }
            for path in expand(rest) {
                paths.push(join(base, &path));
            }
        }
    }
    paths
}

fn join(base: &str, path: &str) -> String {
    match (base.is_empty(), path.is_empty()) {
        (true, _) => path.to_string(),
        (false, true) => base.to_string(),
        (false, false) => format!("{base}::{path}"),
    }
}

/// The paths at the start of `text`: `a::b::C` or a group `{a, b::{c, d}}`.
fn expand(text: &str) -> Vec<String> {
    if let Some(group) = text.strip_prefix('{') {
        let mut depth = 1;
        let mut end = 0;
        for (i, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                _ => {}
            }
            if depth == 0 {
                end = i;
                break;
            }
        }
        return split_top_level(&group[..end])
            .into_iter()
            .flat_map(|item| expand(item.trim()))
            .collect();
    }
    let path: String = text
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
        .collect();
    let path = path.trim_end_matches(':');
    let after = &text[path.len()..];
    if let Some(group) = after.strip_prefix("::{") {
        return expand(&format!("{{{group}"))
            .into_iter()
            .map(|inner| join(path, &inner))
            .collect();
    }
    vec![path.to_string()]
}

fn split_top_level(text: &str) -> Vec<&str> {
    let (mut depth, mut start, mut items) = (0, 0, Vec::new());
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&text[start..]);
    items
}

/// The module a path lands in: its longest prefix that is a module.
fn target(path: &str, modules: &BTreeSet<String>) -> Option<String> {
    let segments: Vec<&str> = path.split("::").collect();
    (1..=segments.len())
        .rev()
        .map(|n| segments[..n].join("::"))
        .find(|m| modules.contains(m))
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let mut rust = Vec::new();
    files(&src(), "rs", &mut rust);
    let modules: BTreeSet<String> = rust.iter().map(|f| module_of(f)).collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &rust {
        let module = module_of(file);
        let text = fs::read_to_string(file).expect("reading a source file");
        for path in referenced_paths(&text, &module) {
            let Some(to) = target(&path, &modules) else {
                continue;
            };
            // A folder's mod.rs is its children's interface: a child may use its ancestors.
            let ancestor = module.starts_with(&format!("{to}::")) || to.is_empty();
            if to != module && !ancestor {
                edges.entry(module.clone()).or_default().insert(to);
            }
        }
    }
    // Depth-first search for a path back to where it started.
    fn cycle_from(
        start: &str,
        at: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        seen: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        for next in edges.get(at).into_iter().flatten() {
            if next == start {
                let mut cycle = path.clone();
                cycle.push(next.clone());
                return Some(cycle);
            }
            if seen.insert(next.clone()) {
                path.push(next.clone());
                if let Some(cycle) = cycle_from(start, next, edges, path, seen) {
                    return Some(cycle);
                }
                path.pop();
            }
        }
        None
    }
    let cycles: Vec<String> = modules
        .iter()
        .filter_map(|m| {
            cycle_from(m, m, &edges, &mut vec![m.clone()], &mut BTreeSet::new())
                .map(|c| c.join(" -> "))
        })
        .collect();
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
    // The check itself must see imports: the session uses the BPF side.
    assert!(edges["session"].contains("bpf"), "{edges:?}");
}

/// Functions (Rust `fn`, BPF C functions and programs) longer than the limit, outside tests.
fn long_functions(file: &Path) -> Vec<(String, usize)> {
    let text = fs::read_to_string(file).expect("reading a source file");
    let lines: Vec<&str> = text.lines().collect();
    let c = file.extension().is_some_and(|e| e == "c" || e == "h");
    let mut long = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if line.starts_with("#[cfg(test)]") {
            break; // tests come last in a file
        }
        let indent = line.len() - line.trim_start().len();
        let trimmed = line.trim_start();
        let starts = if c {
            indent == 0
                && (trimmed.starts_with("static ") || trimmed.starts_with("int "))
                && trimmed.contains('(')
                && !trimmed.ends_with(';')
        } else {
            let words = trimmed
                .trim_start_matches("pub(crate) ")
                .trim_start_matches("pub(super) ")
                .trim_start_matches("pub ")
                .trim_start_matches("const ")
                .trim_start_matches("unsafe ");
            words.starts_with("fn ")
        };
        if !starts {
            continue;
        }
        let close = format!("{}}}", &line[..indent]);
        let Some(end) = lines[i..].iter().position(|l| *l == close) else {
            continue;
        };
        // A declaration without a body (a trait's) ends at its semicolon first.
        if lines[i..=i + end]
            .iter()
            .any(|l| l.trim_end().ends_with(");"))
            && !c
        {
            let body_opens = lines[i..=i + end].iter().position(|l| l.ends_with('{'));
            let decl_ends = lines[i..=i + end].iter().position(|l| l.ends_with(';'));
            if decl_ends < body_opens {
                continue;
            }
        }
        if end + 1 > MAX_FUNCTION_LINES {
            let name = trimmed.split('(').next().unwrap_or(trimmed).to_string();
            long.push((name, end + 1));
        }
    }
    long
}

#[test]
fn functions_stay_short() {
    let mut sources = Vec::new();
    for ext in ["rs", "c", "h"] {
        files(&src(), ext, &mut sources);
    }
    let long: Vec<String> = sources
        .iter()
        .flat_map(|file| {
            long_functions(file)
                .into_iter()
                .map(move |(name, n)| format!("{}: {name}: {n} lines", file.display()))
        })
        .collect();
    assert!(
        long.is_empty(),
        "over {MAX_FUNCTION_LINES} lines:\n{}",
        long.join("\n")
    );
}

#[test]
fn the_checks_read_what_they_claim() {
    assert_eq!(
        expand("{a, b::{c, d::E}, f}; rest"),
        ["a", "b::c", "b::d::E", "f"]
    );
    assert_eq!(
        expand("table::tests::{socket, x};"),
        ["table::tests::socket", "table::tests::x"]
    );
    assert_eq!(
        referenced_paths(
            "use super::fields::X; use crate::a;",
            "render::snapshot::json"
        ),
        ["a", "render::snapshot::fields::X"]
    );
    let dir = std::env::temp_dir().join(format!("tcpstates-layout-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let file = dir.join("long.rs");
    let body = "    x();\n".repeat(MAX_FUNCTION_LINES);
    fs::write(
        &file,
        format!("fn short() {{\n}}\n\npub fn long() {{\n{body}}}\n"),
    )
    .unwrap();
    assert_eq!(
        long_functions(&file),
        [("pub fn long".to_string(), MAX_FUNCTION_LINES + 2)]
    );
    fs::remove_dir_all(&dir).unwrap();
}
