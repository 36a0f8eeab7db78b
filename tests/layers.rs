//! The shape of the house: every module of `src/` imports only the layers below it, so there are
//! no import circles, no arrows running back up, and front ends never import each other or touch
//! an engine adapter. This reads the source (every `crate::…` path in every file) and fails on
//! the first import that the table below does not allow; `docs/ARCHITECTURE.md` explains the
//! layers.

// Tests fail by panicking, with the reason: unwrapping is how they say so.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// What each top-level module may import from the crate. A module not listed here fails the
/// test, so a new one has to be placed deliberately.
fn allowed() -> BTreeMap<&'static str, &'static [&'static str]> {
    // Bottom: the shared vocabulary and process isolation import nothing.
    const DOMAIN: &[&str] = &[];
    const ISOLATION: &[&str] = &[];
    const CONFIG: &[&str] = &["domain"];
    const HARDWARE: &[&str] = &["config", "domain", "isolation"];
    const MODELS: &[&str] = &["config", "domain", "hardware", "isolation"];
    const STORE: &[&str] = &["config", "domain"];
    const ENGINES: &[&str] = &["domain", "isolation"];
    const SUPERVISOR: &[&str] = &[
        "config",
        "domain",
        "engines",
        "hardware",
        "isolation",
        "models",
    ];
    const CHAT: &[&str] = &["config", "domain", "models", "store", "supervisor"];
    const UI: &[&str] = &["config", "domain", "models", "store", "supervisor"];
    // Front ends: everything below them except the engine adapters; never each other.
    const FRONT: &[&str] = &[
        "chat",
        "config",
        "domain",
        "hardware",
        "models",
        "store",
        "supervisor",
        "ui",
    ];
    const CLI: &[&str] = &["batch", "commands", "config", "mcp", "serve", "shell", "ui"];
    BTreeMap::from([
        ("domain", DOMAIN),
        ("isolation", ISOLATION),
        ("config", CONFIG),
        ("hardware", HARDWARE),
        ("models", MODELS),
        ("store", STORE),
        ("engines", ENGINES),
        ("supervisor", SUPERVISOR),
        ("chat", CHAT),
        ("ui", UI),
        ("shell", FRONT),
        ("commands", FRONT),
        ("mcp", FRONT),
        ("batch", FRONT),
        ("serve", FRONT),
        ("cli", CLI),
        ("lib", &[]),
        ("main", &[]),
    ])
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file of `src/` belongs to.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).expect("under src");
    let first = rel
        .components()
        .next()
        .expect("a component")
        .as_os_str()
        .to_string_lossy()
        .into_owned();
    first.trim_end_matches(".rs").to_string()
}

/// Every top-level module named by a `crate::` path in `text` (comments skipped).
fn imports(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            // `gemmactl::` paths in src are not imports of the crate itself; only `crate::`.
            let before = &rest[..at];
            rest = &rest[at + "crate::".len()..];
            if before.ends_with(|c: char| c.is_alphanumeric() || c == '_') {
                continue;
            }
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.insert(name);
            }
            // `crate::{a, b}` groups.
            if let Some(group) = rest.strip_prefix('{') {
                let group = group.split('}').next().unwrap_or("");
                for part in group.split(',') {
                    let name: String = part
                        .trim()
                        .chars()
                        .take_while(|c| c.is_alphanumeric() || *c == '_')
                        .collect();
                    if !name.is_empty() {
                        found.insert(name);
                    }
                }
            }
        }
    }
    found
}

#[test]
fn every_module_imports_only_the_layers_below_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let table = allowed();
    let mut wrong = Vec::new();
    for file in &files {
        let module = module_of(&src, file);
        let Some(may) = table.get(module.as_str()) else {
            wrong.push(format!(
                "{}: module `{module}` has no place in the layer table of tests/layers.rs",
                file.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(file).expect("read source");
        for import in imports(&text) {
            if import == module {
                continue;
            }
            if !may.contains(&import.as_str()) {
                wrong.push(format!(
                    "{}: `{module}` imports `crate::{import}`, which is not below it",
                    file.strip_prefix(&src).unwrap_or(file).display()
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "layering broken:\n{}", wrong.join("\n"));
}

#[test]
fn the_reader_sees_paths_and_groups_but_not_comments() {
    let text = "use crate::store::Store;\nuse crate::{config, domain::Role};\n// crate::shell is only mentioned\nlet x = crate::ui::say;\n";
    let found = imports(text);
    assert_eq!(
        found,
        BTreeSet::from(["store", "config", "domain", "ui"].map(String::from))
    );
}

#[test]
fn the_table_has_no_circle() {
    // A module reaching itself through the table would be a circle the file check cannot see.
    let table = allowed();
    for start in table.keys() {
        let mut stack: Vec<&str> = table[start].to_vec();
        let mut seen = BTreeSet::new();
        while let Some(m) = stack.pop() {
            assert_ne!(m, *start, "the layer table lets `{start}` reach itself");
            if seen.insert(m) {
                stack.extend(table.get(m).copied().unwrap_or(&[]));
            }
        }
    }
}
