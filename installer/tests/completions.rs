#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Shell completions and man pages, generated from the command-line definition.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_cairn-installer");

#[test]
fn completions_and_man_pages_cover_every_public_subcommand() {
    let out = Command::new(BIN)
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let script = String::from_utf8(out.stdout).unwrap();
    for s in ["image", "iso", "install", "customize"] {
        assert!(script.contains(s), "bash completion lacks `{s}`");
    }
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .arg("manpages")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for s in ["image", "iso", "install", "customize"] {
        let page = std::fs::read_to_string(dir.path().join(format!("cairn-installer-{s}.1")))
            .unwrap_or_else(|e| panic!("no man page for `{s}`: {e}"));
        assert!(page.contains(".SH SYNOPSIS"), "{s}");
    }
    // The live environment's entry point is internal: no page, no completion.
    assert!(!dir.path().join("cairn-installer-live.1").exists());
}
