//! The README's "see it work" command, `./demo.sh`, run as a newcomer would (no terminal on
//! stdin, so it does not wait for Enter): it must succeed and show the stage engine's
//! second apply changing nothing, then the fleet round trip through a real hub.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::{Command, Stdio};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

#[test]
fn demo_applies_the_examples_then_a_hub_profile_through_the_daemon() {
    assert!(
        nix_is_root(),
        "demo.sh needs root (it makes a throwaway root and runs the daemon for it); run the \
         tests as root, as scripts/test.sh does"
    );
    let out = Command::new(repo().join("demo.sh"))
        .current_dir(repo())
        .env("CAIRN_DEMO_BUILD", "debug")
        .env_remove("CAIRN_HUB_DB")
        .stdin(Stdio::null())
        .output()
        .expect("running demo.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let all = format!("stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        out.status.success(),
        "demo.sh failed ({}):\n{all}",
        out.status
    );
    // Part 1: the second apply changes nothing.
    assert!(
        stdout.contains("0 step(s) changed, "),
        "no idempotent second apply:\n{all}"
    );
    // Part 2: registered, applied the profile, reported it; the hub shows it.
    assert!(stdout.contains("profile edge-os v1 applied"), "{all}");
    let host_row = stdout
        .lines()
        .find(|l| l.contains("shop-demo-01"))
        .unwrap_or_else(|| panic!("the hub lists no shop-demo-01:\n{all}"));
    assert!(
        host_row.contains("applied") && host_row.contains("edge-os v1"),
        "{host_row}"
    );
    assert!(
        stdout.contains("profile_applied"),
        "no events listed:\n{all}"
    );
    assert!(stdout.contains("shopadmin:x:"), "{all}");
    assert!(
        stdout.contains("Managed by Cairn: profile edge-os"),
        "{all}"
    );
    // The profile must not take away the settings the device's own user-data made.
    assert!(
        !stdout.contains("removed /etc/sysctl.d")
            && !stdout.contains("removed /etc/modules-load.d"),
        "the profile swept the device's drop-ins:\n{all}"
    );
    // The throwaway root is left for inspection; clean it up here.
    if let Some(root) = stdout
        .lines()
        .find_map(|l| l.strip_prefix("==> throwaway root: "))
    {
        if root.starts_with("/tmp/cairn-demo.") {
            let _ = std::fs::remove_dir_all(root);
        }
    }
}

fn nix_is_root() -> bool {
    // `id -u` keeps this crate free of a libc dependency for one call.
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}
