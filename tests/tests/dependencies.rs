//! The crate boundaries docs/architecture.md promises, checked on the real dependency graph
//! (`cargo tree`, offline, from the repository's own Cargo.lock):
//!
//! * the hub and the installer do not depend on the agent (nor, through it, on sysinfo or
//!   the agent's HTTP stack; the installer has its own reqwest client for `install URL`);
//! * the user-data language depends on no network, async or system-inspection crate.

#![allow(clippy::expect_used)]

use std::path::Path;
use std::process::Command;

/// The normal (non-dev, non-build) dependency names of `package`, one per line.
fn tree(package: &str) -> Vec<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the workspace");
    let out = Command::new(cargo)
        .current_dir(workspace)
        .args([
            "tree",
            "--offline",
            "--locked",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--format",
            "{p}",
            "-p",
            package,
        ])
        .output()
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "cargo tree -p {package} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut names: Vec<String> = text
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect();
    names.sort();
    names.dedup();
    assert!(
        names.iter().any(|n| n == package),
        "cargo tree printed nothing for {package}: {text}"
    );
    names
}

fn assert_absent(package: &str, forbidden: &[&str]) {
    let names = tree(package);
    let found: Vec<&&str> = forbidden
        .iter()
        .filter(|f| names.iter().any(|n| n == **f))
        .collect();
    assert!(
        found.is_empty(),
        "{package} depends on {found:?}; docs/architecture.md says it must not"
    );
}

#[test]
fn hub_and_installer_do_not_depend_on_the_agent() {
    assert_absent("cairn-hub", &["cairn-agent", "sysinfo"]);
    assert_absent("cairn-installer", &["cairn-agent", "sysinfo"]);
}

#[test]
fn the_user_data_language_has_no_network_async_or_system_dependency() {
    assert_absent(
        "cairn-userdata",
        &[
            "cairn-agent",
            "tokio",
            "reqwest",
            "hyper",
            "sysinfo",
            "rustix",
            "nix",
        ],
    );
    // …and the check itself sees real edges: the agent does have them.
    let agent = tree("cairn-agent");
    for n in ["cairn-userdata", "tokio", "reqwest"] {
        assert!(agent.iter().any(|a| a == n), "cairn-agent without {n}?");
    }
}
