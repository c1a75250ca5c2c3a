#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Hostile user-data: documents that are small on disk but huge once read (one alias of a
//! large scalar repeated, gzip+base64 bodies that inflate to gigabytes), device files named as
//! user-data, and account fields `useradd` would refuse. Each is refused with its location,
//! and the agent's peak RSS stays under 256 MiB while refusing it (measured: the children's
//! `ru_maxrss`, so every `cairn-agent` this test binary runs counts).

mod common;

use std::io::Write;
use std::path::Path;

use base64::Engine;
use common::{cli, stdout};

/// The agent's memory budget for refusing hostile input.
const RSS_LIMIT_KIB: i64 = 256 * 1024;

/// Peak RSS of every child process waited for so far, in KiB.
fn children_peak_rss_kib() -> i64 {
    nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)
        .unwrap()
        .max_rss()
}

/// `a: &a "<scalar_bytes of x>"` then `aliases` references to it: under 8 MiB on disk,
/// gigabytes when expanded. A node budget alone counts each alias as one node.
pub fn string_alias_bomb(scalar_bytes: usize, aliases: usize) -> String {
    let mut doc = String::from("#cloud-config\nbootcmd:\n  - &a \"");
    doc.push_str(&"x".repeat(scalar_bytes));
    doc.push_str("\"\n");
    for _ in 0..aliases {
        doc.push_str("  - *a\n");
    }
    doc
}

/// `entries` write_files bodies, each `each_mib` MiB of zeros gzipped and base64-encoded.
pub fn gzip_bomb(entries: usize, each_mib: usize) -> String {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let chunk = vec![0u8; 1024 * 1024];
    for _ in 0..each_mib {
        gz.write_all(&chunk).unwrap();
    }
    let b64 = base64::engine::general_purpose::STANDARD.encode(gz.finish().unwrap());
    let mut doc = String::from("#cloud-config\nwrite_files:\n");
    for i in 0..entries {
        doc.push_str(&format!(
            "  - path: /var/bomb/{i}\n    encoding: gz+b64\n    content: {b64}\n"
        ));
    }
    doc
}

fn validate_refuses(file: &Path, expect: &str) -> String {
    let out = cli(["validate", file.to_str().unwrap()]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let line = text
        .lines()
        .find(|l| l.contains(": error: ") && l.contains(expect))
        .unwrap_or_else(|| panic!("no error mentioning `{expect}` in:\n{text}"))
        .to_owned();
    // FILE:LINE:COL: error: …
    let prefix = format!("{}:", file.display());
    let rest = line.strip_prefix(&prefix).unwrap();
    let mut parts = rest.splitn(3, ':');
    let line_no: usize = parts.next().unwrap().parse().unwrap();
    let col: usize = parts.next().unwrap().parse().unwrap();
    assert!(line_no >= 1 && col >= 1, "{line}");
    line
}

#[test]
fn a_string_alias_bomb_is_refused_at_the_alias_within_the_memory_budget() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bomb.yaml");
    // 4 MiB scalar, 1,000 aliases: 4 MB on disk, 4 GB expanded.
    let doc = string_alias_bomb(4 * 1024 * 1024, 1000);
    assert!(doc.len() < 8 * 1024 * 1024);
    std::fs::write(&file, &doc).unwrap();
    let line = validate_refuses(&file, "alias");
    // The scalar (line 3) and two aliases fit in 16 MiB; the third alias (line 6) does not.
    assert!(line.contains(":6:5: error:"), "{line}");
    let rss = children_peak_rss_kib();
    assert!(rss < RSS_LIMIT_KIB, "peak RSS {rss} KiB");
    // Applying it (into a throwaway root) is refused the same way, nothing written.
    let root = dir.path().join("root");
    std::fs::create_dir(&root).unwrap();
    let out = cli([
        "apply",
        "--root",
        root.to_str().unwrap(),
        file.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(std::fs::read_dir(&root).unwrap().count(), 0);
    let rss = children_peak_rss_kib();
    assert!(rss < RSS_LIMIT_KIB, "peak RSS {rss} KiB");
}

#[test]
fn a_gzip_bomb_is_refused_at_the_entry_that_exceeds_the_document_budget() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gz.yaml");
    // 60 entries × 48 MiB of zeros: each under the per-file limit, 2.8 GiB together.
    let doc = gzip_bomb(60, 48);
    assert!(doc.len() < 8 * 1024 * 1024, "{}", doc.len());
    std::fs::write(&file, &doc).unwrap();
    let line = validate_refuses(&file, "add up to more than");
    // Entry 0 (content on line 5) fits in 64 MiB, entry 1's content (line 8) does not.
    assert!(line.contains(":8:14: error:"), "{line}");
    let rss = children_peak_rss_kib();
    assert!(rss < RSS_LIMIT_KIB, "peak RSS {rss} KiB");
}

#[test]
fn the_budgets_span_every_file_of_a_load() {
    let dir = tempfile::tempdir().unwrap();
    // Each file fits alone (48 MiB); together they do not.
    for name in ["a.yaml", "b.yaml"] {
        std::fs::write(dir.path().join(name), gzip_bomb(1, 48)).unwrap();
    }
    let out = cli(["validate", dir.path().to_str().unwrap()]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("b.yaml:5:14: error: decoded file contents add up"),
        "{text}"
    );
    let one = dir.path().join("a.yaml");
    let out = cli(["validate", one.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
}

#[test]
fn a_device_named_as_user_data_is_read_with_a_bound() {
    let started = std::time::Instant::now();
    let out = cli(["validate", "/dev/zero"]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned() + &stdout(&out);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("larger than 8388608 bytes"), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    let rss = children_peak_rss_kib();
    assert!(rss < RSS_LIMIT_KIB, "peak RSS {rss} KiB");
}

#[test]
fn account_fields_useradd_refuses_are_refused_at_validate() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("users.yaml");
    std::fs::write(
        &file,
        "#cloud-config\nusers:\n  - name: alice\n    gecos: \"Alice: admin\"\n  - name: bob\n    homedir: \"/home/b\\nob\"\n  - name: carol\n    shell: \"/bin/sh:x\"\n",
    )
    .unwrap();
    let out = cli(["validate", file.to_str().unwrap()]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    for at in [":4:12: error:", ":6:14: error:", ":8:12: error:"] {
        assert!(text.contains(at), "no error at {at} in:\n{text}");
    }
}
