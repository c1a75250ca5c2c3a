#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Rules of the agent's layout that a reviewer would otherwise have to remember:
//!
//! * every subprocess goes through the host's command runner (`src/host/runner.rs`): no
//!   `Command::new` anywhere else in `src/`;
//! * the profile's `Flavor` enum is mapped to its implementation in one place
//!   (`src/kubernetes/flavor.rs`): no `Flavor::` anywhere else in `src/`.
//!
//! Unit-test modules (from a `#[cfg(test)]` line to the end of the file) are not scanned.
//! Each test lists every offender as `path:line: text`.

use std::path::{Path, PathBuf};

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Lines of `src/` (test modules excluded) containing `needle`, outside `allowed` files.
fn offenders(needle: &str, allowed: &[&str]) -> Vec<String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    files.sort();
    assert!(files.len() > 20, "found the agent's sources: {files:?}");
    let mut out = Vec::new();
    for f in files {
        let rel = f.strip_prefix(&src).unwrap().to_string_lossy().into_owned();
        if allowed.contains(&rel.as_str()) {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap();
        for (i, line) in text.lines().enumerate() {
            if line.trim_start().starts_with("#[cfg(test)]") {
                break;
            }
            let code = line.split("//").next().unwrap_or("");
            if code.contains(needle) {
                out.push(format!("src/{rel}:{}: {}", i + 1, line.trim()));
            }
        }
    }
    out
}

#[test]
fn every_subprocess_goes_through_the_host_runner() {
    let bad = offenders("Command::new", &["host/runner.rs"]);
    assert!(
        bad.is_empty(),
        "run commands through crate::host (Host::run_in_target / Runner), not std::process:\n{}",
        bad.join("\n")
    );
}

#[test]
fn the_flavor_enum_is_mapped_in_one_place() {
    let bad = offenders("Flavor::", &["kubernetes/flavor.rs"]);
    assert!(
        bad.is_empty(),
        "ask kubernetes::distribution(flavor) instead of matching the enum:\n{}",
        bad.join("\n")
    );
}

/// The scanner finds what it looks for (so an empty result above means something).
#[test]
fn the_scanner_sees_the_one_allowed_place() {
    assert!(!offenders("Command::new", &[]).is_empty());
    assert!(!offenders("Flavor::", &[]).is_empty());
}
