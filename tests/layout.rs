//! The source layout holds: modules import only their own layer or lower ones (as `src/lib.rs` lists them), no import cycles, small files.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Non-test lines allowed in one source file.
const MAX_LINES: usize = 800;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Every `.rs` file under `dir`.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(rust_files(&p));
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// The layers `src/lib.rs` documents: module name → layer number.
fn layers() -> BTreeMap<String, usize> {
    let lib = read(&src().join("lib.rs"));
    let mut out = BTreeMap::new();
    for line in lib.lines() {
        let Some(rest) = line.strip_prefix("//! ") else {
            continue;
        };
        let Some((n, text)) = rest.split_once(". ") else {
            continue;
        };
        let Ok(n) = n.parse::<usize>() else { continue };
        let names = text.split(':').next().unwrap();
        for name in names.split(',') {
            let name = name.trim().trim_matches('`');
            assert!(
                out.insert(name.to_string(), n).is_none(),
                "{name} is listed twice in lib.rs"
            );
        }
    }
    out
}

/// Source lines that are code, not comments.
fn code_lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines().filter(|l| !l.trim_start().starts_with("//"))
}

/// The top-level modules a file names through `crate::`.
fn crate_refs(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in code_lines(text) {
        let mut rest = line;
        while let Some(i) = rest.find("crate::") {
            let after = &rest[i + "crate::".len()..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            // `crate::{a, b}` is not used in this crate; a bare name is a module.
            if !name.is_empty() {
                out.insert(name);
            }
            rest = after;
        }
    }
    out
}

/// The top-level module a file under `src/` belongs to.
fn top_module(file: &Path) -> String {
    let rel = file.strip_prefix(src()).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

#[test]
fn every_module_is_in_exactly_one_layer() {
    let layers = layers();
    let lib = read(&src().join("lib.rs"));
    let declared: BTreeSet<String> = lib
        .lines()
        .filter_map(|l| l.strip_prefix("pub mod "))
        .map(|m| m.trim_end_matches(';').to_string())
        .collect();
    let mut listed: BTreeSet<String> = layers.keys().cloned().collect();
    assert!(listed.remove("cli") && declared.contains("cli"));
    for m in &declared {
        assert!(
            layers.contains_key(m),
            "lib.rs declares `{m}` but lists it in no layer"
        );
    }
    for m in &listed {
        assert!(
            declared.contains(m),
            "lib.rs lists `{m}` in a layer but declares no such module"
        );
    }
}

#[test]
fn no_module_imports_one_above_it() {
    let layers = layers();
    let mut bad = Vec::new();
    for file in rust_files(&src()) {
        let me = top_module(&file);
        if me == "lib" || me == "main" {
            continue;
        }
        let mine = layers[&me];
        for other in crate_refs(&read(&file)) {
            if other == me {
                continue;
            }
            let Some(theirs) = layers.get(&other) else {
                bad.push(format!(
                    "{}: names crate::{other}, which no layer lists",
                    file.display()
                ));
                continue;
            };
            if *theirs < mine {
                bad.push(format!(
                    "{}: `{me}` (layer {mine}) imports `{other}` (layer {theirs}, above it)",
                    file.display()
                ));
            }
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

/// A cycle in `edges`, if any, as the path around it.
fn find_cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == n) {
            let mut c = path[i..].to_vec();
            c.push(n.to_string());
            return Some(c);
        }
        if done.contains(n) {
            return None;
        }
        path.push(n.to_string());
        for m in edges.get(n).into_iter().flatten() {
            if let Some(c) = visit(m, edges, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(n.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for n in edges.keys() {
        if let Some(c) = visit(n, edges, &mut Vec::new(), &mut done) {
            return Some(c);
        }
    }
    None
}

#[test]
fn top_level_modules_import_each_other_without_cycles() {
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in rust_files(&src()) {
        let me = top_module(&file);
        let refs = crate_refs(&read(&file));
        edges
            .entry(me.clone())
            .or_default()
            .extend(refs.into_iter().filter(|r| *r != me));
    }
    assert_eq!(find_cycle(&edges), None);
}

/// Files a parent declares as `#[cfg(test)] mod name;`: tests only.
fn test_only_files() -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    for file in rust_files(&src()) {
        let text = read(&file);
        let dir = if file
            .file_name()
            .is_some_and(|n| n == "mod.rs" || n == "lib.rs")
        {
            file.parent().unwrap().to_path_buf()
        } else {
            file.with_extension("")
        };
        let mut test_next = false;
        for line in text.lines().map(str::trim) {
            if line == "#[cfg(test)]" {
                test_next = true;
                continue;
            }
            if test_next
                && let Some(name) = line
                    .strip_prefix("mod ")
                    .or_else(|| line.strip_prefix("pub(crate) mod "))
                    .and_then(|n| n.strip_suffix(';'))
            {
                out.insert(dir.join(format!("{name}.rs")));
                out.insert(dir.join(name).join("mod.rs"));
            }
            test_next = false;
        }
    }
    out
}

/// Within each module directory, the files that name each other through
/// `super::` or the module's own path never form a cycle (`mod.rs`, which
/// declares and re-exports, and test-only files are left out).
#[test]
fn files_of_one_module_import_each_other_without_cycles() {
    let tests = test_only_files();
    let mut dirs: BTreeSet<PathBuf> = BTreeSet::new();
    for f in rust_files(&src()) {
        if f.file_name().is_some_and(|n| n == "mod.rs") {
            dirs.insert(f.parent().unwrap().to_path_buf());
        }
    }
    for dir in dirs {
        let module_path = format!(
            "crate::{}::",
            dir.strip_prefix(src())
                .unwrap()
                .to_string_lossy()
                .replace('/', "::")
        );
        let siblings: BTreeMap<String, PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "rs"))
            .filter(|p| !p.ends_with("mod.rs") && !tests.contains(p))
            .map(|p| (p.file_stem().unwrap().to_string_lossy().to_string(), p))
            .collect();
        let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (name, path) in &siblings {
            let text = read(path);
            // Test modules inside a file may reach anywhere; only code above them counts.
            let code = text.split("\n#[cfg(test)]").next().unwrap();
            for other in siblings.keys().filter(|o| *o != name) {
                let named = code_lines(code).any(|l| {
                    [format!("super::{other}"), format!("{module_path}{other}")]
                        .iter()
                        .any(|p| {
                            l.match_indices(p.as_str()).any(|(i, _)| {
                                let next = l[i + p.len()..].chars().next();
                                !next.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
                            })
                        })
                });
                if named {
                    edges.entry(name.clone()).or_default().insert(other.clone());
                }
            }
        }
        assert_eq!(find_cycle(&edges), None, "in {}", dir.display());
    }
}

#[test]
fn no_file_holds_more_than_800_lines_of_code() {
    let tests = test_only_files();
    let mut big = Vec::new();
    for file in rust_files(&src()) {
        if tests.contains(&file) {
            continue;
        }
        let text = read(&file);
        let code = text.split("\n#[cfg(test)]\nmod tests").next().unwrap();
        let n = code.lines().count();
        if n > MAX_LINES {
            big.push(format!("{}: {n} lines before its tests", file.display()));
        }
    }
    assert!(big.is_empty(), "{}", big.join("\n"));
}

#[test]
fn every_file_starts_with_a_one_line_doc() {
    let mut bad = Vec::new();
    for file in rust_files(&src()) {
        let text = read(&file);
        if !text.starts_with("//! ") {
            bad.push(file.display().to_string());
        }
    }
    assert!(bad.is_empty(), "no leading `//!` doc: {}", bad.join(", "));
}
