//! Unpacking tar archives into the target in-process, through the seam's descriptor-based
//! writes (no tar(1), no path-based writes): every member is written with [`Host::stage`]
//! and renamed into place, so links in the target are resolved inside the root like for
//! any other write.
//!
//! A member must stay inside the directory it is unpacked into: absolute names and `..`
//! components are refused, a symbolic link must point (relatively) inside that directory
//! and is created only after every file, hard links and device or FIFO members are
//! refused. Owners are never taken from the archive (root when Cairn runs as root), and
//! modes keep only the permission bits (no setuid/setgid/sticky).
//!
//! With an expected sha256, the archive's bytes are hashed while they stream through and
//! nothing is renamed into place unless the digest matches.

use std::io::{self, Read};
use std::path::PathBuf;

use sha2::{Digest, Sha256};

use super::fs::{FsError, Staged};
use super::Host;

/// How the archive is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    None,
}

/// Why an archive was not unpacked.
#[derive(Debug, thiserror::Error)]
pub enum UntarError {
    #[error("reading the archive: {0}")]
    Read(#[source] io::Error),
    #[error("archive member `{name}` refused: {why}")]
    Refused { name: String, why: &'static str },
    #[error("writing {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error("the archive's sha256 is {actual}, not the verified {expected}: it changed after it was verified; nothing was unpacked")]
    Digest { expected: String, actual: String },
    #[error("the archive has no member `{0}`")]
    NoMember(String),
}

/// What [`unpack`] wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Unpacked {
    pub files: usize,
    pub dirs: usize,
    pub links: usize,
}

/// One member as read from the archive.
struct Member<'e> {
    name: Vec<u8>,
    kind: tar::EntryType,
    mode: u32,
    link: Option<Vec<u8>>,
    data: &'e mut dyn Read,
}

/// The bytes read through it, hashed.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

fn walk<R: Read>(
    reader: R,
    f: &mut dyn FnMut(Member<'_>) -> Result<(), UntarError>,
) -> Result<(), UntarError> {
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries().map_err(UntarError::Read)? {
        let mut entry = entry.map_err(UntarError::Read)?;
        let name = entry.path_bytes().into_owned();
        let kind = entry.header().entry_type();
        let mode = entry.header().mode().map_err(UntarError::Read)?;
        let link = entry.link_name_bytes().map(|l| l.into_owned());
        f(Member {
            name,
            kind,
            mode,
            link,
            data: &mut entry,
        })?;
    }
    Ok(())
}

/// Read the whole archive through `f`, hashing the raw bytes; returns the digest.
fn stream(
    archive: impl Read,
    compression: Compression,
    f: &mut dyn FnMut(Member<'_>) -> Result<(), UntarError>,
) -> Result<[u8; 32], UntarError> {
    let mut raw = Hashing {
        inner: archive,
        hasher: Sha256::new(),
    };
    match compression {
        Compression::Gzip => {
            let mut gz = flate2::read::GzDecoder::new(&mut raw);
            walk(&mut gz, f)?;
            io::copy(&mut gz, &mut io::sink()).map_err(UntarError::Read)?;
        }
        Compression::None => walk(&mut raw, f)?,
    }
    // Whatever follows the end-of-archive blocks is part of the verified file too.
    io::copy(&mut raw, &mut io::sink()).map_err(UntarError::Read)?;
    Ok(raw.hasher.finalize().into())
}

fn check_digest(actual: &[u8; 32], expected: Option<&[u8; 32]>) -> Result<(), UntarError> {
    match expected {
        Some(e) if e != actual => Err(UntarError::Digest {
            expected: hex::encode(e),
            actual: hex::encode(actual),
        }),
        _ => Ok(()),
    }
}

fn shown(name: &[u8]) -> String {
    String::from_utf8_lossy(name).into_owned()
}

/// A member's name as a relative path of normal components (`./` and empty components
/// dropped); `None` for the archive's root (`./`). Absolute names and `..` are refused.
fn relative(name: &[u8]) -> Result<Option<String>, UntarError> {
    let refuse = |why| UntarError::Refused {
        name: shown(name),
        why,
    };
    let text = std::str::from_utf8(name).map_err(|_| refuse("its name is not UTF-8"))?;
    if text.starts_with('/') {
        return Err(refuse("an absolute name would escape the directory"));
    }
    let mut parts = Vec::new();
    for c in text.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err(refuse("a `..` component would escape the directory")),
            c if c.contains('\0') => return Err(refuse("a NUL in its name")),
            c => parts.push(c),
        }
    }
    Ok((!parts.is_empty()).then(|| parts.join("/")))
}

/// A symbolic link member `rel` → `target` must stay inside the unpack directory.
fn check_link(name: &[u8], rel: &str, target: &[u8]) -> Result<(), UntarError> {
    let refuse = |why| UntarError::Refused {
        name: shown(name),
        why,
    };
    let target = std::str::from_utf8(target).map_err(|_| refuse("its link target is not UTF-8"))?;
    if target.is_empty() || target.contains('\0') {
        return Err(refuse("an empty link target"));
    }
    if target.starts_with('/') {
        return Err(refuse(
            "a symbolic link to an absolute path would escape the directory",
        ));
    }
    // Depth of the link's own directory, then walk the target from there.
    let mut depth = rel.split('/').count() as i64 - 1;
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                depth -= 1;
                if depth < 0 {
                    return Err(refuse("a symbolic link climbing out of the directory"));
                }
            }
            _ => depth += 1,
        }
    }
    Ok(())
}

fn join(dir: &str, rel: &str) -> String {
    format!("{}/{rel}", dir.trim_end_matches('/'))
}

fn owner() -> Option<(u32, u32)> {
    nix::unistd::geteuid().is_root().then_some((0, 0))
}

fn copy_into(staged: &mut Staged, data: &mut dyn Read) -> Result<(), UntarError> {
    let path = staged.shown().to_path_buf();
    io::copy(data, staged.file()).map_err(|source| UntarError::Write { path, source })?;
    Ok(())
}

/// Unpack the whole archive into the target directory `dir` (created if missing). With
/// `expected`, nothing is renamed into place unless the archive's sha256 matches.
pub fn unpack(
    host: &Host,
    archive: impl Read,
    compression: Compression,
    dir: &str,
    expected: Option<&[u8; 32]>,
) -> Result<Unpacked, UntarError> {
    host.create_dir_all(dir)?;
    let mut staged: Vec<(Staged, u32)> = Vec::new();
    let mut links: Vec<(String, PathBuf)> = Vec::new();
    let mut done = Unpacked::default();
    let digest = stream(archive, compression, &mut |m: Member<'_>| {
        let Some(rel) = relative(&m.name)? else {
            return Ok(());
        };
        let path = join(dir, &rel);
        let refuse = |why| UntarError::Refused {
            name: shown(&m.name),
            why,
        };
        match m.kind {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let mut s = host.stage(&path)?;
                copy_into(&mut s, m.data)?;
                staged.push((s, m.mode & 0o777));
            }
            tar::EntryType::Directory => {
                host.create_dir_all(&path)?;
                done.dirs += 1;
            }
            tar::EntryType::Symlink => {
                let target = m.link.ok_or(refuse("a symbolic link without a target"))?;
                check_link(&m.name, &rel, &target)?;
                let target = String::from_utf8(target).map_err(|_| refuse("a non-UTF-8 link"))?;
                links.push((path, PathBuf::from(target)));
            }
            tar::EntryType::Link => return Err(refuse("hard links are not unpacked")),
            _ => {
                return Err(refuse(
                    "only files, directories and symbolic links are unpacked",
                ))
            }
        }
        Ok(())
    })?;
    check_digest(&digest, expected)?;
    for (s, mode) in staged {
        s.commit(mode, owner())?;
        done.files += 1;
    }
    for (path, target) in links {
        host.replace_symlink(&path, &target)?;
        done.links += 1;
    }
    Ok(done)
}

/// Unpack the one regular-file member `member` (e.g. `linux-amd64/helm`) as the target
/// file `dest` with `mode`. With `expected`, it is renamed into place only if the
/// archive's sha256 matches. Returns false, writing nothing, when `dest` already has that
/// content and mode.
pub fn unpack_member(
    host: &Host,
    archive: impl Read,
    compression: Compression,
    member: &str,
    dest: &str,
    mode: u32,
    expected: Option<&[u8; 32]>,
) -> Result<bool, UntarError> {
    let want = relative(member.as_bytes())?;
    let mut found: Option<(Staged, [u8; 32])> = None;
    let digest = stream(archive, compression, &mut |m: Member<'_>| {
        if relative(&m.name).ok().flatten() != want || found.is_some() {
            return Ok(());
        }
        if !matches!(m.kind, tar::EntryType::Regular | tar::EntryType::Continuous) {
            return Err(UntarError::Refused {
                name: shown(&m.name),
                why: "it is not a regular file",
            });
        }
        let mut s = host.stage(dest)?;
        let mut hashing = Hashing {
            inner: m.data,
            hasher: Sha256::new(),
        };
        copy_into(&mut s, &mut hashing)?;
        found = Some((s, hashing.hasher.finalize().into()));
        Ok(())
    })?;
    check_digest(&digest, expected)?;
    let (staged, sha) = found.ok_or_else(|| UntarError::NoMember(member.to_string()))?;
    if let Some(meta) = host.meta(dest)? {
        if meta.is_file && meta.mode == mode {
            if let Some(current) = host.open_read(dest)? {
                let mut h = Hashing {
                    inner: current,
                    hasher: Sha256::new(),
                };
                io::copy(&mut h, &mut io::sink()).map_err(|source| UntarError::Write {
                    path: host.shown(dest),
                    source,
                })?;
                if <[u8; 32]>::from(h.hasher.finalize()) == sha {
                    return Ok(false);
                }
            }
        }
    }
    staged.commit(mode, owner())?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_stay_relative() {
        assert_eq!(
            relative(b"./bin/rke2").unwrap().as_deref(),
            Some("bin/rke2")
        );
        assert_eq!(relative(b"./").unwrap(), None);
        assert!(relative(b"/etc/passwd").is_err());
        assert!(relative(b"a/../../x").is_err());
    }

    #[test]
    fn links_stay_inside() {
        assert!(check_link(b"a/l", "a/l", b"../b").is_ok());
        assert!(check_link(b"a/l", "a/l", b"../../b").is_err());
        assert!(check_link(b"l", "l", b"/etc").is_err());
    }
}
