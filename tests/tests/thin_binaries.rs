//! Every binary of the workspace is thin: its `main.rs` (and any `src/bin/*.rs`) only parses
//! the command line, sets up logging, calls its library and maps the result to an exit
//! status, so it stays under 100 lines. Logic belongs in the library, where it can be reused
//! and tested (docs/architecture.md, "Layout").

use std::path::{Path, PathBuf};

const MAX_LINES: usize = 100;

/// The repository: the parent of this crate.
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| panic!("{} has no parent", env!("CARGO_MANIFEST_DIR")))
}

/// Every binary entry point under `dir`: `src/main.rs` and `src/bin/*.rs`, skipping build
/// output and hidden directories.
fn entry_points(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries =
        std::fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
    for entry in entries {
        let entry = entry.unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let kind = entry
            .file_type()
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if kind.is_dir() {
            if name.starts_with('.') || name == "target" {
                continue;
            }
            entry_points(&path, out);
        } else if kind.is_file() && name.ends_with(".rs") {
            let parent = path.parent().and_then(Path::file_name);
            let in_src = parent.is_some_and(|p| p == "src");
            let in_bin = parent.is_some_and(|p| p == "bin")
                && path
                    .parent()
                    .and_then(Path::parent)
                    .and_then(Path::file_name)
                    .is_some_and(|p| p == "src");
            if (in_src && name == "main.rs") || in_bin {
                out.push(path);
            }
        }
    }
}

#[test]
fn every_main_rs_is_under_100_lines() {
    let root = repo_root();
    let mut found = Vec::new();
    entry_points(&root, &mut found);
    found.sort();
    // The walk must see the binaries we know of, or it proves nothing.
    for known in ["agent", "hub", "installer"] {
        let main = root.join(known).join("src/main.rs");
        assert!(
            found.contains(&main),
            "{} not found among {found:?}",
            main.display()
        );
    }
    let fat: Vec<String> = found
        .iter()
        .filter_map(|path| {
            let text = std::fs::read_to_string(path)
                .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            let lines = text.lines().count();
            (lines >= MAX_LINES).then(|| {
                format!(
                    "{}: {lines} lines",
                    path.strip_prefix(&root).unwrap_or(path).display()
                )
            })
        })
        .collect();
    assert!(
        fat.is_empty(),
        "binaries must stay thin (under {MAX_LINES} lines; move the logic into the library): {}",
        fat.join(", ")
    );
}
