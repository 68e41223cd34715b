//! The layout promises of docs/architecture.md, checked on the source tree:
//! dependencies between the folders of `src/` point one way, the services
//! never use each other, domain code knows nothing of clap or stdout, every
//! folder says what it is, and no domain file grows past the size where one
//! concern has become several.

use std::path::{Path, PathBuf};

/// The layers, lowest first. A module may use its own layer's folder and any
/// lower layer, never a higher one nor a sibling of its own layer.
const LAYERS: &[&[&str]] = &[
    &["support"],
    &["bus", "llm"],
    &["context"],
    &["orchestrator", "designer"],
    &["console"],
    &["cmd"],
    &["cli"],
];

/// A domain file's ceiling, tests excluded: past it, split along its concerns.
const MAX_DOMAIN_LINES: usize = 620;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level part a file belongs to (`src/bus/runner/claim.rs` → `bus`).
fn part_of(path: &Path) -> String {
    let rel = path.strip_prefix(src()).expect("under src");
    let first = rel.components().next().expect("component");
    first
        .as_os_str()
        .to_string_lossy()
        .trim_end_matches(".rs")
        .to_string()
}

fn layer_of(part: &str) -> Option<(usize, usize)> {
    LAYERS.iter().enumerate().find_map(|(rank, names)| {
        names
            .iter()
            .position(|n| *n == part)
            .map(|index| (rank, index))
    })
}

/// The file without its unit-test module and without comments, where a path
/// in prose (`crate::cmd` in a doc line) is not a dependency.
fn code_of(path: &Path) -> String {
    let text = std::fs::read_to_string(path).expect("read");
    if path.file_name().is_some_and(|n| n == "tests.rs") {
        return String::new();
    }
    let text = text.split("#[cfg(test)]").next().unwrap_or_default();
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `crate::<part>` a piece of code names.
fn parts_used(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !out.contains(&name) {
            out.push(name);
        }
    }
    out
}

fn all_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    files.sort();
    files
}

#[test]
fn dependencies_point_down_and_services_never_use_each_other() {
    let mut wrong = Vec::new();
    for file in all_files() {
        let part = part_of(&file);
        let Some((rank, index)) = layer_of(&part) else {
            continue;
        };
        for used in parts_used(&code_of(&file)) {
            let Some((used_rank, used_index)) = layer_of(&used) else {
                continue;
            };
            let upward = used_rank > rank;
            let sideways = used_rank == rank && used_index != index;
            if upward || sideways {
                wrong.push(format!("{} uses crate::{used}", file.display()));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "dependencies that point the wrong way:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn domain_code_knows_nothing_of_clap_or_stdout() {
    let mut wrong = Vec::new();
    for file in all_files() {
        let part = part_of(&file);
        if matches!(part.as_str(), "cmd" | "cli" | "lib" | "main") {
            continue;
        }
        let code = code_of(&file);
        let is_io = file.ends_with("support/io.rs");
        let mut found: Vec<&str> = ["clap::", "std::io::stdout", "io::stdout()"]
            .into_iter()
            .filter(|needle| code.contains(needle))
            .collect();
        // `print!`/`println!` but not their stderr twins `eprint!`/`eprintln!`.
        for needle in ["print!(", "println!("] {
            if code
                .match_indices(needle)
                .any(|(at, _)| !code[..at].ends_with('e'))
            {
                found.push(needle);
            }
        }
        if is_io {
            found.retain(|needle| *needle == "clap::");
        }
        for needle in found {
            wrong.push(format!("{} contains {needle}", file.display()));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn every_folder_and_file_says_what_it_is() {
    let mut silent = Vec::new();
    for file in all_files() {
        let text = std::fs::read_to_string(&file).expect("read");
        if !text.starts_with("//!") {
            silent.push(file.display().to_string());
        }
    }
    assert!(
        silent.is_empty(),
        "files without a //! purpose line:\n{}",
        silent.join("\n")
    );
}

#[test]
fn no_domain_file_holds_several_concerns() {
    let mut large = Vec::new();
    for file in all_files() {
        if file.file_name().is_some_and(|n| n == "tests.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("read");
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        let lines = code.lines().count();
        if lines > MAX_DOMAIN_LINES {
            large.push(format!("{} has {lines} lines", file.display()));
        }
    }
    assert!(
        large.is_empty(),
        "split these along their concerns:\n{}",
        large.join("\n")
    );
}
