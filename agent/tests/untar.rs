#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Archives unpacked into a target through the host seam (`cairn_agent::host::untar`):
//! hostile members (`..`, absolute names, symbolic links out, hard links, devices) are
//! refused with nothing written outside — nor, for a refused archive, inside — the
//! directory; a digest that does not match writes nothing; one member (Helm's
//! `linux-ARCH/helm`) is placed as a file, once.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use cairn_agent::host::untar::{self, Compression, UntarError};
use cairn_agent::host::Host;
use sha2::{Digest, Sha256};

/// One raw member: name (written as is, unchecked), type, content, link target.
struct Raw<'a> {
    name: &'a str,
    kind: tar::EntryType,
    data: &'a [u8],
    link: &'a str,
}

fn raw(name: &str, kind: tar::EntryType, data: &'static [u8], link: &str) -> Raw<'static> {
    // Leaked for the test's lifetime: tiny strings.
    Raw {
        name: Box::leak(name.to_string().into_boxed_str()),
        kind,
        data,
        link: Box::leak(link.to_string().into_boxed_str()),
    }
}

fn file(name: &str, data: &'static [u8]) -> Raw<'static> {
    raw(name, tar::EntryType::Regular, data, "")
}

/// A tar archive written header by header, bypassing the `tar` crate's own path checks
/// (a hostile archive is made by someone who does not use them).
fn archive(members: &[Raw]) -> Vec<u8> {
    let mut out = Vec::new();
    for m in members {
        let mut h = tar::Header::new_old();
        {
            let old = h.as_old_mut();
            old.name[..m.name.len()].copy_from_slice(m.name.as_bytes());
            old.linkname[..m.link.len()].copy_from_slice(m.link.as_bytes());
        }
        h.set_entry_type(m.kind);
        h.set_size(m.data.len() as u64);
        h.set_mode(0o755);
        h.set_mtime(0);
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(m.data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn sha(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// Every path under `dir`, relative, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            out.push(p.strip_prefix(dir).unwrap().display().to_string());
            if p.is_dir() && !p.is_symlink() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn hostile_members_are_refused_and_nothing_escapes() {
    use tar::EntryType::{Block, Char, Fifo, Link, Symlink};
    let cases: Vec<(&str, Vec<Raw>)> = vec![
        ("dot-dot", vec![file("ok", b"x"), file("../escaped", b"x")]),
        ("nested dot-dot", vec![file("a/../../escaped", b"x")]),
        ("absolute", vec![file("/escaped", b"x")]),
        (
            "symlink out then a file through it",
            vec![raw("l", Symlink, b"", "../.."), file("l/escaped", b"x")],
        ),
        ("absolute symlink", vec![raw("l", Symlink, b"", "/etc")]),
        ("hard link", vec![raw("h", Link, b"", "../../etc/passwd")]),
        ("char device", vec![raw("c", Char, b"", "")]),
        ("block device", vec![raw("b", Block, b"", "")]),
        ("fifo", vec![raw("f", Fifo, b"", "")]),
    ];
    for (what, members) in cases {
        let outside = tempfile::tempdir().unwrap();
        let root = outside.path().join("root");
        std::fs::create_dir(&root).unwrap();
        let host = Host::system(&root);
        let tgz = gzip(&archive(&members));
        let err = untar::unpack(
            &host,
            tgz.as_slice(),
            Compression::Gzip,
            "/opt/x",
            Some(&sha(&tgz)),
        )
        .expect_err(what);
        assert!(matches!(err, UntarError::Refused { .. }), "{what}: {err:?}");
        // Nothing beside the root, nothing written under the unpack dir.
        assert_eq!(
            listing(outside.path()),
            vec!["root", "root/opt", "root/opt/x"],
            "{what}"
        );
    }
}

#[test]
fn a_link_inside_the_directory_and_plain_files_are_unpacked() {
    let dir = tempfile::tempdir().unwrap();
    let host = Host::system(dir.path());
    let tgz = gzip(&archive(&[
        file("./bin/tool", b"#!/bin/sh\n"),
        raw("bin/alias", tar::EntryType::Symlink, b"", "tool"),
        raw("share/", tar::EntryType::Directory, b"", ""),
    ]));
    let done = untar::unpack(
        &host,
        tgz.as_slice(),
        Compression::Gzip,
        "/usr/local",
        Some(&sha(&tgz)),
    )
    .unwrap();
    assert_eq!((done.files, done.links, done.dirs), (1, 1, 1));
    let tool = dir.path().join("usr/local/bin/tool");
    assert_eq!(std::fs::read(&tool).unwrap(), b"#!/bin/sh\n");
    assert_eq!(
        tool.metadata().unwrap().permissions().mode() & 0o7777,
        0o755
    );
    assert_eq!(
        std::fs::read_link(dir.path().join("usr/local/bin/alias")).unwrap(),
        Path::new("tool")
    );
}

#[test]
fn an_archive_that_changed_after_verification_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let host = Host::system(dir.path());
    let tgz = gzip(&archive(&[file("bin/tool", b"new\n")]));
    let mut other = tgz.clone();
    other.push(0); // a byte more: another file
    let err = untar::unpack(
        &host,
        tgz.as_slice(),
        Compression::Gzip,
        "/d",
        Some(&sha(&other)),
    )
    .unwrap_err();
    assert!(matches!(err, UntarError::Digest { .. }), "{err:?}");
    assert!(!dir.path().join("d/bin/tool").exists());
    assert_eq!(listing(&dir.path().join("d/bin")), Vec::<String>::new());
}

#[test]
fn helms_binary_is_taken_from_its_release_tarball_once() {
    let dir = tempfile::tempdir().unwrap();
    let host = Host::system(dir.path());
    // get.helm.sh's layout: linux-ARCH/{helm,LICENSE,README.md}.
    let tgz = gzip(&archive(&[
        file("linux-arm64/helm", b"helm binary\n"),
        file("linux-arm64/LICENSE", b"license\n"),
        file("linux-arm64/README.md", b"readme\n"),
    ]));
    let place = || {
        untar::unpack_member(
            &host,
            tgz.as_slice(),
            Compression::Gzip,
            "linux-arm64/helm",
            "/usr/local/bin/helm",
            0o755,
            Some(&sha(&tgz)),
        )
    };
    assert!(place().unwrap(), "written the first time");
    let helm = dir.path().join("usr/local/bin/helm");
    assert_eq!(std::fs::read(&helm).unwrap(), b"helm binary\n");
    assert_eq!(
        helm.metadata().unwrap().permissions().mode() & 0o7777,
        0o755
    );
    assert_eq!(listing(&dir.path().join("usr/local/bin")), vec!["helm"]);
    let mtime = helm.metadata().unwrap().modified().unwrap();
    assert!(!place().unwrap(), "already in place: nothing written");
    assert_eq!(helm.metadata().unwrap().modified().unwrap(), mtime);
    // Another arch's member is not there.
    let err = untar::unpack_member(
        &host,
        tgz.as_slice(),
        Compression::Gzip,
        "linux-amd64/helm",
        "/usr/local/bin/helm",
        0o755,
        None,
    )
    .unwrap_err();
    assert!(matches!(err, UntarError::NoMember(_)), "{err:?}");
}
