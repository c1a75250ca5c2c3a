//! File-system operations on the target, all relative to an open handle of its root.
//!
//! Nothing here opens a path string built by joining the root and a target path: every
//! operation first *resolves* the target path component by component from a descriptor of
//! the root (`openat(dir, name, O_PATH|O_NOFOLLOW)`), reading and following each symbolic
//! link itself, as if chrooted: an absolute link target starts again at the root and `..`
//! never climbs above it. The kernel is never handed a link to follow. Then the operation
//! acts on the directory descriptor that holds the last component (`*at` calls, no
//! following):
//!
//! - a link chain longer than [`MAX_LINKS`] fails with [`FsError::TooManyLinks`];
//! - a link is followed only when doing so cannot lead out of a directory that a non-root
//!   user controls (the systemd-tmpfiles rule, see [`FsError::UnsafeLink`]): on a live
//!   system `~alice/.ssh/authorized_keys -> /etc/shadow` is refused, whatever the uid;
//! - a whole-file write goes to a temp file created with `O_CREAT|O_EXCL|O_NOFOLLOW`, mode
//!   0600, under a random name in the already-opened parent directory; it gets its owner
//!   and mode on the open descriptor, is fsynced, renamed within that same directory
//!   descriptor (a rename replaces a link, never follows it), and the directory is fsynced:
//!   a crash leaves the old file or the new one, never a torn one;
//! - missing directories are made with `mkdirat`, one component at a time;
//! - modes and owners of existing files are changed on an open descriptor, after checking
//!   it is the regular file or directory that was resolved.
//!
//! docs/decisions.md ("Resolving paths inside the target root") explains the rule.

use std::ffi::{CStr, CString, OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, Uid};
use rustix::io::Errno;

use super::Host;

/// How many symbolic links one resolution may follow (Linux's own limit, `MAXSYMLINKS`).
pub const MAX_LINKS: u32 = 40;

/// How many times one resolution retries a component that changed under it (a directory
/// replaced between `stat` and `open`) before giving up.
const MAX_RETRIES: u32 = 100;

/// The largest file [`Host::read_opt`] reads into memory (files compared with what a step
/// wants, account databases, probes); bigger ones are streamed by their callers (downloads
/// and artifacts are hashed, never read whole).
pub const MAX_READ: u64 = 64 << 20;

/// Whole-file writes committed together hold this many temp files open at most.
const BATCH_CHUNK: usize = 256;

/// An error from a file-system operation on the target, with the path it concerns.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// An I/O error, with what was being done.
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Resolving the path inside the root met more than [`MAX_LINKS`] symbolic links.
    #[error(
        "{}: more than {MAX_LINKS} symbolic links to follow inside the target root; \
         refusing rather than letting the kernel follow the rest",
        path.display()
    )]
    TooManyLinks { path: PathBuf },
    /// Following a link would let a non-root user steer a write (see docs/decisions.md).
    #[error(
        "{}: refusing to follow the symbolic link {}: {why} (a link a non-root user \
         controls must not lead out of that user's directories)",
        path.display(),
        link.display()
    )]
    UnsafeLink {
        path: PathBuf,
        link: PathBuf,
        why: String,
    },
    /// A file too big to read into memory.
    #[error("{}: larger than the {} MiB Cairn reads into memory", path.display(), MAX_READ >> 20)]
    TooLarge { path: PathBuf },
    /// Changing the owner or mode of a file that has other names, in a directory a non-root
    /// user controls: the other name may be a system file.
    #[error(
        "{}: refusing to change the owner or mode of a file with {links} hard links in a \
         directory owned by uid {dir_uid}",
        path.display()
    )]
    HardLinked {
        path: PathBuf,
        links: u64,
        dir_uid: u32,
    },
}

impl FsError {
    /// The path does not exist (a component or the file itself).
    pub fn is_not_found(&self) -> bool {
        matches!(self, FsError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }
}

/// Wrap an `io::Error` with what was being done to which path.
pub fn err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> FsError + 'a {
    move |source| FsError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

fn errno<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(Errno) -> FsError + 'a {
    move |e| FsError::Io {
        action,
        path: path.to_path_buf(),
        source: e.into(),
    }
}

/// Current state of a path, for diffing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub is_dir: bool,
    pub is_file: bool,
    pub len: u64,
    pub mtime: i64,
}

impl Meta {
    fn of(st: &rustix::fs::Stat) -> Meta {
        let ty = FileType::from_raw_mode(st.st_mode);
        Meta {
            mode: st.st_mode & 0o7777,
            uid: st.st_uid,
            gid: st.st_gid,
            is_dir: ty == FileType::Directory,
            is_file: ty == FileType::RegularFile,
            len: st.st_size as u64,
            mtime: st.st_mtime,
        }
    }
}

/// How to resolve a path.
#[derive(Debug, Clone, Copy)]
struct Walk {
    /// Create missing directories on the way (0755, umask applied, owned by the caller).
    create: bool,
    /// Follow a symbolic link in the last component (inside the root, like the others).
    follow_last: bool,
}

const READ: Walk = Walk {
    create: false,
    follow_last: true,
};
const WRITE: Walk = Walk {
    create: true,
    follow_last: true,
};
const ENTRY: Walk = Walk {
    create: false,
    follow_last: false,
};

/// A resolved location: the opened directory holding the last component, and its name.
struct Loc {
    /// `O_PATH` descriptor of the directory.
    dir: OwnedFd,
    /// Owner of that directory.
    dir_uid: u32,
    /// The last component; `None` when the path resolved to `dir` itself (the root, or a
    /// link to a directory ending the path).
    name: Option<CString>,
    /// The host path of the directory, built from the names walked (for the path form).
    real_dir: PathBuf,
    /// The target path as asked, joined to the root, for messages.
    shown: PathBuf,
}

impl Loc {
    fn name(&self) -> Result<&CStr, FsError> {
        self.name.as_deref().ok_or_else(|| FsError::Io {
            action: "writing",
            path: self.shown.clone(),
            source: io::Error::from(io::ErrorKind::IsADirectory),
        })
    }

    /// The last component's status, not following a link; `None` when it does not exist.
    fn stat(&self) -> Result<Option<rustix::fs::Stat>, FsError> {
        let r = match &self.name {
            Some(n) => rustix::fs::statat(&self.dir, n.as_c_str(), AtFlags::SYMLINK_NOFOLLOW),
            None => rustix::fs::fstat(&self.dir),
        };
        match r {
            Ok(st) => Ok(Some(st)),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(errno("inspecting", &self.shown)(e)),
        }
    }

    /// Open the last component (never following a link) with `flags`.
    fn open(&self, flags: OFlags, mode: u32) -> Result<OwnedFd, Errno> {
        let flags = flags | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY;
        match &self.name {
            Some(n) => {
                rustix::fs::openat(&self.dir, n.as_c_str(), flags, Mode::from_raw_mode(mode))
            }
            None => rustix::fs::openat(&self.dir, c".", flags, Mode::empty()),
        }
    }
}

fn components(p: &[u8]) -> Vec<OsString> {
    Path::new(OsStr::from_bytes(p))
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            _ => None,
        })
        .collect()
}

fn cstring(s: &OsStr, shown: &Path) -> Result<CString, FsError> {
    CString::new(s.as_bytes()).map_err(|_| FsError::Io {
        action: "resolving",
        path: shown.to_path_buf(),
        source: io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"),
    })
}

fn open_dir_flags() -> OFlags {
    OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

impl Host {
    /// The target path joined to the root, *not resolved*: for messages, and for handing a
    /// path to a command that runs chrooted into the target. Never open it.
    pub fn shown(&self, p: &str) -> PathBuf {
        self.root().join(p.trim_start_matches('/'))
    }

    fn open_root(&self) -> Result<(OwnedFd, u32), FsError> {
        let root = self.root();
        let fd = rustix::fs::open(
            root,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(errno("opening the target root", root))?;
        let uid = rustix::fs::fstat(&fd)
            .map_err(errno("inspecting the target root", root))?
            .st_uid;
        Ok((fd, uid))
    }

    /// Resolve `p` inside the root (see the module docs).
    fn resolve(&self, p: &str, walk: Walk) -> Result<Loc, FsError> {
        let shown = self.shown(p);
        let (root, root_uid) = self.open_root()?;
        // The directories entered below the root: descriptor, owner, name.
        let mut stack: Vec<(OwnedFd, u32, OsString)> = Vec::new();
        let mut pending = components(p.as_bytes());
        pending.reverse();
        let mut hops = 0u32;
        let mut retries = 0u32;
        let shown_link = |stack: &[(OwnedFd, u32, OsString)], name: &OsStr| -> PathBuf {
            let mut l = PathBuf::from("/");
            for (_, _, n) in stack {
                l.push(n);
            }
            l.push(name);
            l
        };
        let unsafe_link = |link: PathBuf, why: String| FsError::UnsafeLink {
            path: shown.clone(),
            link,
            why,
        };
        while let Some(part) = pending.pop() {
            let (cur, cur_uid) = match stack.last() {
                Some((fd, uid, _)) => (fd.as_fd(), *uid),
                None => (root.as_fd(), root_uid),
            };
            if part == ".." {
                if !stack.is_empty() {
                    let parent_uid = stack.len().checked_sub(2).map_or(root_uid, |i| stack[i].1);
                    if cur_uid != 0 && parent_uid != cur_uid {
                        return Err(unsafe_link(
                            shown_link(&stack, OsStr::new("..")),
                            format!(
                                "`..` climbs out of a directory owned by uid {cur_uid} into one \
                                 owned by uid {parent_uid}"
                            ),
                        ));
                    }
                    stack.pop();
                }
                continue;
            }
            let last = pending.is_empty();
            let name = cstring(&part, &shown)?;
            let real_dir = |stack: &[(OwnedFd, u32, OsString)]| {
                let mut d = self.root().to_path_buf();
                for (_, _, n) in stack {
                    d.push(n);
                }
                d
            };
            if last && !walk.follow_last {
                let real_dir = real_dir(&stack);
                let (dir, dir_uid) = match stack.pop() {
                    Some((fd, uid, _)) => (fd, uid),
                    None => (root, root_uid),
                };
                return Ok(Loc {
                    dir,
                    dir_uid,
                    name: Some(name),
                    real_dir,
                    shown,
                });
            }
            let st = match rustix::fs::statat(cur, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => Some(st),
                Err(Errno::NOENT) => None,
                Err(e) => return Err(errno("resolving", &shown)(e)),
            };
            let ty = st.as_ref().map(|s| FileType::from_raw_mode(s.st_mode));
            match (st, ty) {
                (Some(st), Some(FileType::Symlink)) => {
                    hops += 1;
                    if hops > MAX_LINKS {
                        return Err(FsError::TooManyLinks { path: shown });
                    }
                    if cur_uid != 0 && st.st_uid != cur_uid {
                        return Err(unsafe_link(
                            shown_link(&stack, &part),
                            format!(
                                "it is owned by uid {} in a directory owned by uid {cur_uid}",
                                st.st_uid
                            ),
                        ));
                    }
                    let target = rustix::fs::readlinkat(cur, name.as_c_str(), Vec::new())
                        .map_err(errno("reading the link in", &shown))?;
                    let target = target.as_bytes();
                    if target.starts_with(b"/") {
                        if cur_uid != 0 && root_uid != cur_uid {
                            return Err(unsafe_link(
                                shown_link(&stack, &part),
                                format!(
                                    "it is absolute and lies in a directory owned by uid {cur_uid}"
                                ),
                            ));
                        }
                        stack.clear();
                    }
                    let mut more = components(target);
                    more.reverse();
                    pending.extend(more);
                }
                (Some(_), Some(FileType::Directory)) if !last => {
                    match rustix::fs::openat(cur, name.as_c_str(), open_dir_flags(), Mode::empty())
                    {
                        Ok(fd) => {
                            let uid = rustix::fs::fstat(&fd)
                                .map_err(errno("resolving", &shown))?
                                .st_uid;
                            stack.push((fd, uid, part));
                        }
                        // Replaced between the stat and the open: look again.
                        Err(Errno::NOTDIR | Errno::LOOP | Errno::NOENT) => {
                            retries += 1;
                            if retries > MAX_RETRIES {
                                return Err(changing(&shown));
                            }
                            pending.push(part);
                        }
                        Err(e) => return Err(errno("resolving", &shown)(e)),
                    }
                }
                (None, _) if !last && walk.create => {
                    match rustix::fs::mkdirat(cur, name.as_c_str(), Mode::from_raw_mode(0o755)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => {
                            return Err(errno(
                                "creating directory",
                                &self.shown(&shown_link(&stack, &part).to_string_lossy()),
                            )(e))
                        }
                    }
                    retries += 1;
                    if retries > MAX_RETRIES {
                        return Err(changing(&shown));
                    }
                    pending.push(part);
                }
                (None, _) if !last => {
                    return Err(FsError::Io {
                        action: "resolving",
                        path: shown,
                        source: io::Error::from(io::ErrorKind::NotFound),
                    })
                }
                (_, _) if last => {
                    let real_dir = real_dir(&stack);
                    let (dir, dir_uid) = match stack.pop() {
                        Some((fd, uid, _)) => (fd, uid),
                        None => (root, root_uid),
                    };
                    return Ok(Loc {
                        dir,
                        dir_uid,
                        name: Some(name),
                        real_dir,
                        shown,
                    });
                }
                _ => {
                    return Err(FsError::Io {
                        action: "resolving",
                        path: shown,
                        source: io::Error::from(io::ErrorKind::NotADirectory),
                    })
                }
            }
        }
        // Every component consumed without a last name: the path is a directory itself.
        let real_dir = {
            let mut d = self.root().to_path_buf();
            for (_, _, n) in &stack {
                d.push(n);
            }
            d
        };
        let (dir, dir_uid) = match stack.pop() {
            Some((fd, uid, _)) => (fd, uid),
            None => (root, root_uid),
        };
        Ok(Loc {
            dir,
            dir_uid,
            name: None,
            real_dir,
            shown,
        })
    }

    /// The host path `p` resolves to inside the root, for code that still works by path
    /// (the directory an [`crate::artifacts::ArtifactCache`] is rooted at, which then goes
    /// through a seam of its own, and placement by `tar -C`). Resolution is as strict
    /// as for every other operation (link budget, unsafe links), but what is at the path can
    /// change after this returns: prefer the handle-based operations.
    pub fn resolved_path(&self, p: &str) -> Result<PathBuf, FsError> {
        let loc = self.resolve(p, READ).or_else(|e| {
            if e.is_not_found() {
                // A missing parent: resolve what exists, keep the rest as asked.
                self.resolve(p, ENTRY)
            } else {
                Err(e)
            }
        })?;
        Ok(match &loc.name {
            Some(n) => loc.real_dir.join(OsStr::from_bytes(n.as_bytes())),
            None => loc.real_dir,
        })
    }

    /// Status of `p` (links followed inside the root); `Ok(None)` when it does not exist.
    pub fn meta(&self, p: &str) -> Result<Option<Meta>, FsError> {
        match self.resolve(p, READ) {
            Ok(loc) => Ok(loc.stat()?.as_ref().map(Meta::of)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// When `p` was last modified, if it exists.
    pub fn modified(&self, p: &str) -> Option<std::time::SystemTime> {
        let m = self.meta(p).ok()??;
        let secs = u64::try_from(m.mtime).ok()?;
        Some(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
    }

    /// Does `p` exist in the target (a resolution error counts as no)?
    pub fn exists(&self, p: &str) -> bool {
        matches!(self.meta(p), Ok(Some(_)))
    }

    pub fn is_file(&self, p: &str) -> bool {
        matches!(self.meta(p), Ok(Some(m)) if m.is_file)
    }

    pub fn is_dir(&self, p: &str) -> bool {
        matches!(self.meta(p), Ok(Some(m)) if m.is_dir)
    }

    /// Open the regular file `p` for reading; `Ok(None)` when it does not exist.
    pub fn open_read(&self, p: &str) -> Result<Option<File>, FsError> {
        let loc = match self.resolve(p, READ) {
            Ok(loc) => loc,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        let fd = match loc.open(OFlags::RDONLY | OFlags::NONBLOCK, 0) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(None),
            Err(e) => return Err(errno("opening", &loc.shown)(e)),
        };
        let st = rustix::fs::fstat(&fd).map_err(errno("inspecting", &loc.shown))?;
        match FileType::from_raw_mode(st.st_mode) {
            FileType::RegularFile => {}
            FileType::Directory => {
                return Err(FsError::Io {
                    action: "reading",
                    path: loc.shown,
                    source: io::Error::from(io::ErrorKind::IsADirectory),
                })
            }
            _ => {
                return Err(FsError::Io {
                    action: "reading",
                    path: loc.shown,
                    source: io::Error::other("not a regular file"),
                })
            }
        }
        // Blocking again for the reads (O_NONBLOCK only kept a FIFO from hanging the open).
        let flags = rustix::fs::fcntl_getfl(&fd).map_err(errno("opening", &loc.shown))?;
        rustix::fs::fcntl_setfl(&fd, flags - OFlags::NONBLOCK)
            .map_err(errno("opening", &loc.shown))?;
        Ok(Some(File::from(fd)))
    }

    /// Read the regular file `p`; `Ok(None)` when it does not exist.
    pub fn read_opt(&self, p: &str) -> Result<Option<Vec<u8>>, FsError> {
        let Some(f) = self.open_read(p)? else {
            return Ok(None);
        };
        let mut buf = Vec::new();
        f.take(MAX_READ + 1)
            .read_to_end(&mut buf)
            .map_err(err("reading", &self.shown(p)))?;
        if buf.len() as u64 > MAX_READ {
            return Err(FsError::TooLarge {
                path: self.shown(p),
            });
        }
        Ok(Some(buf))
    }

    /// Read `p` as text; `None` when it is missing, unreadable or not UTF-8 (for the
    /// best-effort probes of the target: os-release, account files, hostname...).
    pub fn read_text(&self, p: &str) -> Option<String> {
        String::from_utf8(self.read_opt(p).ok()??).ok()
    }

    /// Create the missing directories above `p` (0755, owned by the caller).
    pub fn ensure_parents(&self, p: &str) -> Result<(), FsError> {
        self.resolve(p, WRITE).map(drop)
    }

    /// Atomically replace `p` with `content`, with `mode` and owner (see the module docs).
    pub fn write_atomic(
        &self,
        p: &str,
        content: &[u8],
        mode: u32,
        owner: Option<(u32, u32)>,
    ) -> Result<(), FsError> {
        let mut staged = self.stage(p)?;
        staged.write_all(content)?;
        staged.commit(mode, owner)
    }

    /// A temp file beside `p` (missing parents created) to write into, then
    /// [`Staged::commit`] over `p`. Dropped uncommitted, it is removed.
    pub fn stage(&self, p: &str) -> Result<Staged, FsError> {
        let loc = self.resolve(p, WRITE)?;
        Staged::new(loc)
    }

    /// Append `content` to `p` (created with `mode` if missing) and fsync it.
    pub fn append(&self, p: &str, content: &[u8], mode: u32) -> Result<(), FsError> {
        let loc = self.resolve(p, WRITE)?;
        loc.name()?;
        let fd = loc
            .open(OFlags::WRONLY | OFlags::APPEND | OFlags::CREATE, mode)
            .map_err(errno("opening for append", &loc.shown))?;
        let st = rustix::fs::fstat(&fd).map_err(errno("inspecting", &loc.shown))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Err(FsError::Io {
                action: "appending to",
                path: loc.shown,
                source: io::Error::other("not a regular file"),
            });
        }
        let mut f = File::from(fd);
        f.write_all(content)
            .map_err(err("appending to", &loc.shown))?;
        f.sync_all().map_err(err("syncing", &loc.shown))
    }

    /// Create the directory `p` (and missing parents, 0755) and set its mode exactly.
    pub fn create_dir(&self, p: &str, mode: u32) -> Result<(), FsError> {
        let loc = self.resolve(p, WRITE)?;
        if let Some(n) = &loc.name {
            match rustix::fs::mkdirat(&loc.dir, n.as_c_str(), Mode::from_raw_mode(mode)) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(errno("creating directory", &loc.shown)(e)),
            }
        }
        // mkdir's mode is filtered by the umask; set it exactly, on the directory itself.
        let fd = loc
            .open(OFlags::RDONLY | OFlags::DIRECTORY, 0)
            .map_err(errno("opening directory", &loc.shown))?;
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode))
            .map_err(errno("changing mode of", &loc.shown))
    }

    /// Create the directory `p` and any missing parent (0755, umask applied); an existing
    /// directory is left as it is.
    pub fn create_dir_all(&self, p: &str) -> Result<(), FsError> {
        let loc = self.resolve(p, WRITE)?;
        if let Some(n) = &loc.name {
            match rustix::fs::mkdirat(&loc.dir, n.as_c_str(), Mode::from_raw_mode(0o755)) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(errno("creating directory", &loc.shown)(e)),
            }
        }
        let m = loc.stat()?;
        if m.is_some_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Directory) {
            Ok(())
        } else {
            Err(errno("creating directory", &loc.shown)(Errno::NOTDIR))
        }
    }

    /// Open the existing regular file or directory `p` to change its attributes.
    fn open_attrs(&self, p: &str) -> Result<(OwnedFd, Loc), FsError> {
        let loc = self.resolve(p, READ)?;
        let before = loc
            .stat()?
            .ok_or_else(|| errno("changing attributes of", &loc.shown)(Errno::NOENT))?;
        let ty = FileType::from_raw_mode(before.st_mode);
        let flags = match ty {
            FileType::Directory => OFlags::RDONLY | OFlags::DIRECTORY,
            FileType::RegularFile => OFlags::RDONLY | OFlags::NONBLOCK,
            _ => {
                return Err(FsError::Io {
                    action: "changing attributes of",
                    path: loc.shown,
                    source: io::Error::other("not a regular file or directory"),
                })
            }
        };
        // st_nlink is u64 on x86_64 and u32 on aarch64.
        #[allow(clippy::useless_conversion)]
        let nlink = u64::from(before.st_nlink);
        if ty == FileType::RegularFile && nlink > 1 && loc.dir_uid != 0 {
            return Err(FsError::HardLinked {
                path: loc.shown,
                links: nlink,
                dir_uid: loc.dir_uid,
            });
        }
        let fd = loc
            .open(flags, 0)
            .map_err(errno("opening to change attributes of", &loc.shown))?;
        let now = rustix::fs::fstat(&fd).map_err(errno("inspecting", &loc.shown))?;
        if (now.st_dev, now.st_ino) != (before.st_dev, before.st_ino) {
            return Err(changing(&loc.shown));
        }
        Ok((fd, loc))
    }

    /// Set the mode of the existing file or directory `p` (on its descriptor).
    pub fn set_mode(&self, p: &str, mode: u32) -> Result<(), FsError> {
        let (fd, loc) = self.open_attrs(p)?;
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode))
            .map_err(errno("changing mode of", &loc.shown))
    }

    /// Set the owner of the existing file or directory `p` (on its descriptor).
    pub fn set_owner(&self, p: &str, uid: u32, gid: u32) -> Result<(), FsError> {
        let (fd, loc) = self.open_attrs(p)?;
        fchown(&fd, uid, gid).map_err(errno("changing owner of", &loc.shown))
    }

    /// Remove the file `p` (a link in its last component is followed inside the root, like
    /// every read and write); `Ok(false)` when it did not exist.
    pub fn remove_file(&self, p: &str) -> Result<bool, FsError> {
        let loc = match self.resolve(p, READ) {
            Ok(loc) => loc,
            Err(e) if e.is_not_found() => return Ok(false),
            Err(e) => return Err(e),
        };
        match rustix::fs::unlinkat(&loc.dir, loc.name()?, AtFlags::empty()) {
            Ok(()) => {
                sync_dir(&loc.dir);
                Ok(true)
            }
            Err(Errno::NOENT) => Ok(false),
            Err(e) => Err(errno("removing", &loc.shown)(e)),
        }
    }

    /// Names in the directory `p` (without `.` and `..`); `Ok(None)` when it is missing.
    pub fn read_dir(&self, p: &str) -> Result<Option<Vec<OsString>>, FsError> {
        let loc = match self.resolve(p, READ) {
            Ok(loc) => loc,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        let fd = match loc.open(OFlags::RDONLY | OFlags::DIRECTORY, 0) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(None),
            Err(e) => return Err(errno("listing", &loc.shown)(e)),
        };
        let dir = rustix::fs::Dir::new(fd).map_err(errno("listing", &loc.shown))?;
        let mut names = Vec::new();
        for entry in dir {
            let entry = entry.map_err(errno("listing", &loc.shown))?;
            let n = entry.file_name().to_bytes();
            if n != b"." && n != b".." {
                names.push(OsString::from_vec(n.to_vec()));
            }
        }
        names.sort();
        Ok(Some(names))
    }

    /// The target of the symbolic link `p` (its last component is not followed);
    /// `Ok(None)` when `p` is missing or not a link.
    pub fn read_link(&self, p: &str) -> Result<Option<PathBuf>, FsError> {
        let loc = match self.resolve(p, ENTRY) {
            Ok(loc) => loc,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        match rustix::fs::readlinkat(&loc.dir, loc.name()?, Vec::new()) {
            Ok(t) => Ok(Some(PathBuf::from(OsString::from_vec(t.into_bytes())))),
            Err(Errno::NOENT | Errno::INVAL) => Ok(None),
            Err(e) => Err(errno("reading the link", &loc.shown)(e)),
        }
    }

    /// Atomically make `p` a symbolic link to `target` (created under a random name in the
    /// same opened directory, renamed over `p`: whatever was at `p` is replaced, not followed).
    pub fn replace_symlink(&self, p: &str, target: &Path) -> Result<(), FsError> {
        let loc = self.resolve(
            p,
            Walk {
                create: true,
                follow_last: false,
            },
        )?;
        let name = loc.name()?.to_owned();
        for _ in 0..16 {
            let tmp = temp_name(&name)?;
            match rustix::fs::symlinkat(target, &loc.dir, tmp.as_c_str()) {
                Ok(()) => {}
                Err(Errno::EXIST) => continue,
                Err(e) => return Err(errno("creating link", &loc.shown)(e)),
            }
            if let Err(e) =
                rustix::fs::renameat(&loc.dir, tmp.as_c_str(), &loc.dir, name.as_c_str())
            {
                let _ = rustix::fs::unlinkat(&loc.dir, tmp.as_c_str(), AtFlags::empty());
                return Err(errno("renaming into place", &loc.shown)(e));
            }
            sync_dir(&loc.dir);
            return Ok(());
        }
        Err(errno("creating link", &loc.shown)(Errno::EXIST))
    }

    /// Open the regular file `p` for reading and writing, creating it with `mode` if
    /// missing (parents too), never truncating and never following a link in its last
    /// component: for lock files and resumable partial downloads.
    pub fn open_rw(&self, p: &str, mode: u32) -> Result<File, FsError> {
        let loc = self.resolve(p, WRITE)?;
        loc.name()?;
        let fd = loc
            .open(OFlags::RDWR | OFlags::CREATE | OFlags::NONBLOCK, mode)
            .map_err(errno("opening", &loc.shown))?;
        let st = rustix::fs::fstat(&fd).map_err(errno("inspecting", &loc.shown))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Err(FsError::Io {
                action: "opening",
                path: loc.shown,
                source: io::Error::other("not a regular file"),
            });
        }
        let flags = rustix::fs::fcntl_getfl(&fd).map_err(errno("opening", &loc.shown))?;
        rustix::fs::fcntl_setfl(&fd, flags - OFlags::NONBLOCK)
            .map_err(errno("opening", &loc.shown))?;
        Ok(File::from(fd))
    }

    /// Open the directory `p` for a caller that walks a tree itself with `*at` calls on the
    /// descriptor (home directories, the skeleton copy, re-owning a home). `follow_last`:
    /// whether a link in the last component is followed (inside the root, like every other
    /// link); when not, a link there is an error. `Ok(None)` when `p` does not exist.
    pub fn open_dir(&self, p: &str, follow_last: bool) -> Result<Option<OwnedFd>, FsError> {
        let walk = if follow_last { READ } else { ENTRY };
        let loc = match self.resolve(p, walk) {
            Ok(loc) => loc,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        match loc.open(OFlags::RDONLY | OFlags::DIRECTORY, 0) {
            Ok(fd) => Ok(Some(fd)),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(errno("opening directory", &loc.shown)(e)),
        }
    }

    /// Open the existing regular file `p` for reading and writing in place (never created,
    /// never truncated, a link in its last component followed only inside the root): for
    /// fixed-size record files such as lastlog. `Ok(None)` when it does not exist.
    pub fn open_existing_rw(&self, p: &str) -> Result<Option<File>, FsError> {
        let loc = match self.resolve(p, READ) {
            Ok(loc) => loc,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        loc.name()?;
        let fd = match loc.open(OFlags::RDWR | OFlags::NONBLOCK, 0) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(None),
            Err(e) => return Err(errno("opening", &loc.shown)(e)),
        };
        regular_blocking(fd, &loc.shown).map(Some)
    }

    /// Create the regular file `p` with `mode`, failing if anything (a link included) is
    /// already there (`O_CREAT|O_EXCL|O_NOFOLLOW` in the resolved parent; the parent must
    /// exist): for files made once, such as a mailbox, whose owner is then set on the
    /// returned descriptor.
    pub fn create_new(&self, p: &str, mode: u32) -> Result<File, FsError> {
        let loc = self.resolve(p, ENTRY)?;
        loc.name()?;
        let fd = loc
            .open(OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL, mode)
            .map_err(errno("creating", &loc.shown))?;
        Ok(File::from(fd))
    }

    /// Rename `from` to `to` (missing parents of `to` created); neither last component is
    /// followed: a link at `to` is replaced. Both directories are fsynced.
    pub fn rename(&self, from: &str, to: &str) -> Result<(), FsError> {
        let src = self.resolve(from, ENTRY)?;
        let dst = self.resolve(
            to,
            Walk {
                create: true,
                follow_last: false,
            },
        )?;
        rustix::fs::renameat(&src.dir, src.name()?, &dst.dir, dst.name()?)
            .map_err(errno("renaming into place", &dst.shown))?;
        sync_dir(&dst.dir);
        sync_dir(&src.dir);
        Ok(())
    }
}

/// Check `fd` (opened `O_NONBLOCK`) is a regular file and make it blocking again.
fn regular_blocking(fd: OwnedFd, shown: &Path) -> Result<File, FsError> {
    let st = rustix::fs::fstat(&fd).map_err(errno("inspecting", shown))?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err(FsError::Io {
            action: "opening",
            path: shown.to_path_buf(),
            source: io::Error::other("not a regular file"),
        });
    }
    let flags = rustix::fs::fcntl_getfl(&fd).map_err(errno("opening", shown))?;
    rustix::fs::fcntl_setfl(&fd, flags - OFlags::NONBLOCK).map_err(errno("opening", shown))?;
    Ok(File::from(fd))
}

fn changing(shown: &Path) -> FsError {
    FsError::Io {
        action: "resolving",
        path: shown.to_path_buf(),
        source: io::Error::other("the path kept changing while it was being resolved"),
    }
}

fn fchown(fd: impl AsFd, uid: u32, gid: u32) -> Result<(), Errno> {
    rustix::fs::fchown(fd, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
}

/// fsync a directory given by an `O_PATH` descriptor (best effort, like the write it
/// follows: a failed directory sync does not undo the rename).
fn sync_dir(dir: &OwnedFd) {
    if let Ok(d) = rustix::fs::openat(
        dir,
        c".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        let _ = rustix::fs::fsync(&d);
    }
}

/// `.NAME.cairn-RANDOM.tmp`: hidden, beside the target (so the rename is atomic), and not
/// guessable (128 random bits), so nobody can plant something at that name beforehand.
fn temp_name(name: &CStr) -> Result<CString, FsError> {
    let mut r = [0u8; 16];
    getrandom::getrandom(&mut r).map_err(|e| FsError::Io {
        action: "choosing a temp name for",
        path: PathBuf::from(OsStr::from_bytes(name.to_bytes())),
        source: io::Error::other(e.to_string()),
    })?;
    // Keep within NAME_MAX (255) whatever the length of the target's name.
    let base = name.to_bytes();
    let base = &base[..base.len().min(200)];
    let mut t = Vec::with_capacity(base.len() + 50);
    t.push(b'.');
    t.extend_from_slice(base);
    t.extend_from_slice(b".cairn-");
    t.extend_from_slice(hex::encode(r).as_bytes());
    t.extend_from_slice(b".tmp");
    CString::new(t).map_err(|_| FsError::Io {
        action: "choosing a temp name for",
        path: PathBuf::from(OsStr::from_bytes(name.to_bytes())),
        source: io::Error::new(io::ErrorKind::InvalidInput, "NUL in name"),
    })
}

/// A temp file created in the opened directory of its destination, renamed over it by
/// [`Staged::commit`]; removed when dropped uncommitted.
pub struct Staged {
    dir: OwnedFd,
    /// Host path of `dir`, for [`Staged::temp_host_path`].
    real_dir: PathBuf,
    tmp: CString,
    name: CString,
    file: File,
    shown: PathBuf,
    done: bool,
}

impl Staged {
    fn new(loc: Loc) -> Result<Staged, FsError> {
        Staged::new_with(loc, temp_name)
    }

    /// [`Staged::new`] with the temp names drawn from `next` (tests force a collision).
    fn new_with(
        loc: Loc,
        mut next: impl FnMut(&CStr) -> Result<CString, FsError>,
    ) -> Result<Staged, FsError> {
        let name = loc.name()?.to_owned();
        for _ in 0..16 {
            let tmp = next(&name)?;
            match rustix::fs::openat(
                &loc.dir,
                tmp.as_c_str(),
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            ) {
                Ok(fd) => {
                    return Ok(Staged {
                        dir: loc.dir,
                        real_dir: loc.real_dir,
                        tmp,
                        name,
                        file: File::from(fd),
                        shown: loc.shown,
                        done: false,
                    })
                }
                Err(Errno::EXIST) => continue,
                Err(e) => return Err(errno("creating a temp file for", &loc.shown)(e)),
            }
        }
        Err(errno("creating a temp file for", &loc.shown)(Errno::EXIST))
    }

    /// The destination, for messages.
    pub fn shown(&self) -> &Path {
        &self.shown
    }

    /// The temp file's name (in the destination's directory).
    pub fn temp_name(&self) -> &OsStr {
        OsStr::from_bytes(self.tmp.as_bytes())
    }

    /// The temp file's host path, only to hand to a command that checks it (`visudo -c`).
    pub fn temp_host_path(&self) -> PathBuf {
        self.real_dir.join(self.temp_name())
    }

    /// The open temp file.
    pub fn file(&mut self) -> &mut File {
        &mut self.file
    }

    pub fn write_all(&mut self, content: &[u8]) -> Result<(), FsError> {
        self.file
            .write_all(content)
            .map_err(err("writing", &self.shown))
    }

    /// Give the temp file its owner and mode (on the descriptor).
    pub fn set_attrs(&mut self, mode: u32, owner: Option<(u32, u32)>) -> Result<(), FsError> {
        if let Some((uid, gid)) = owner {
            fchown(&self.file, uid, gid).map_err(errno("changing owner of", &self.shown))?;
        }
        rustix::fs::fchmod(&self.file, Mode::from_raw_mode(mode))
            .map_err(errno("changing mode of", &self.shown))
    }

    /// Rename the (already synced) temp file over the destination, then sync the directory.
    fn rename(mut self) -> Result<(), FsError> {
        rustix::fs::renameat(
            &self.dir,
            self.tmp.as_c_str(),
            &self.dir,
            self.name.as_c_str(),
        )
        .map_err(errno("renaming into place", &self.shown))?;
        self.done = true;
        sync_dir(&self.dir);
        Ok(())
    }

    /// Owner and mode, fsync, rename over the destination, directory fsync.
    pub fn commit(mut self, mode: u32, owner: Option<(u32, u32)>) -> Result<(), FsError> {
        self.set_attrs(mode, owner)?;
        self.file.sync_all().map_err(err("syncing", &self.shown))?;
        self.rename()
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.done {
            let _ = rustix::fs::unlinkat(&self.dir, self.tmp.as_c_str(), AtFlags::empty());
        }
    }
}

/// fsync every file, concurrently: the filesystem can then make them durable in one
/// journal commit instead of one commit per file (each file is still synced before it is
/// renamed into place).
pub fn sync_together(files: &[(&File, &Path)]) -> Result<(), FsError> {
    if files.len() <= 1 {
        for (f, p) in files {
            f.sync_all().map_err(err("syncing", p))?;
        }
        return Ok(());
    }
    std::thread::scope(|s| {
        let handles: Vec<_> = files
            .iter()
            .map(|(f, p)| s.spawn(move || f.sync_all().map_err(err("syncing", p))))
            .collect();
        let mut result = Ok(());
        for h in handles {
            let r = h.join().unwrap_or_else(|_| {
                Err(FsError::Io {
                    action: "syncing",
                    path: PathBuf::new(),
                    source: std::io::Error::other("sync thread panicked"),
                })
            });
            if result.is_ok() {
                result = r;
            }
        }
        result
    })
}

/// Whole-file writes collected and made durable together: each file still lands atomically
/// (temp file with its owner and mode, fsync, rename, directory fsync), but the fsyncs run
/// concurrently so the filesystem commits them at once instead of one journal commit each.
/// Within a chunk of [`BATCH_CHUNK`] files, nothing is renamed into place unless every temp
/// file was written and synced.
#[derive(Default)]
pub struct WriteBatch(Vec<Queued>);

struct Queued {
    path: String,
    content: Vec<u8>,
    mode: u32,
    owner: Option<(u32, u32)>,
}

impl WriteBatch {
    /// Is the target path `path` waiting in the batch? (Read it again only after
    /// [`WriteBatch::commit`].)
    pub fn holds(&self, path: &str) -> bool {
        self.0.iter().any(|q| q.path == path)
    }

    /// Queue a write of `content` to the target path `path` (parents are created now).
    pub fn push(
        &mut self,
        host: &Host,
        path: &str,
        content: Vec<u8>,
        mode: u32,
        owner: Option<(u32, u32)>,
    ) -> Result<(), FsError> {
        host.ensure_parents(path)?;
        self.0.push(Queued {
            path: path.to_string(),
            content,
            mode,
            owner,
        });
        Ok(())
    }

    /// Write, sync and rename every queued file; on failure no temp file is left behind.
    pub fn commit(&mut self, host: &Host) -> Result<(), FsError> {
        let queued: Vec<Queued> = self.0.drain(..).collect();
        for chunk in queued.chunks(BATCH_CHUNK) {
            let mut staged = Vec::with_capacity(chunk.len());
            for q in chunk {
                let mut s = host.stage(&q.path)?;
                s.write_all(&q.content)?;
                s.set_attrs(q.mode, q.owner)?;
                staged.push(s);
            }
            let files: Vec<(&File, &Path)> = staged
                .iter()
                .map(|s| (&s.file, s.shown.as_path()))
                .collect();
            sync_together(&files)?;
            for s in staged {
                s.rename()?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn host(d: &tempfile::TempDir) -> Host {
        Host::system(d.path())
    }

    #[test]
    fn atomic_write_sets_mode_and_leaves_no_temp() {
        let d = tempfile::tempdir().unwrap();
        let h = host(&d);
        h.write_atomic("/a/b/c.conf", b"x=1\n", 0o640, None)
            .unwrap();
        let p = d.path().join("a/b/c.conf");
        assert_eq!(std::fs::read(&p).unwrap(), b"x=1\n");
        assert_eq!(h.meta("/a/b/c.conf").unwrap().unwrap().mode, 0o640);
        h.write_atomic("/a/b/c.conf", b"x=2\n", 0o644, None)
            .unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"x=2\n");
        let names: Vec<_> = std::fs::read_dir(p.parent().unwrap()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temp file left behind");
    }

    #[test]
    fn links_resolve_inside_the_root() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::create_dir_all(root.join("real/etc")).unwrap();
        symlink("/real/etc", root.join("etc")).unwrap();
        symlink("../../../../../../tmp", root.join("real/etc/escape")).unwrap();
        let h = host(&d);
        assert_eq!(
            h.resolved_path("/etc/hostname").unwrap(),
            root.join("real/etc/hostname")
        );
        h.write_atomic("/etc/escape/x", b"in", 0o644, None).unwrap();
        assert_eq!(std::fs::read(root.join("tmp/x")).unwrap(), b"in");
    }

    /// A chain of `n` links inside `root`, the last pointing to `last`.
    fn chain(root: &Path, n: usize, last: &Path) -> PathBuf {
        std::fs::create_dir_all(root.join("c")).unwrap();
        symlink(last, root.join(format!("c/l{n}"))).unwrap();
        for i in (1..n).rev() {
            symlink(format!("/c/l{}", i + 1), root.join(format!("c/l{i}"))).unwrap();
        }
        PathBuf::from("/c/l1")
    }

    #[test]
    fn a_long_chain_fails_and_writes_nothing_outside() {
        let outside = tempfile::tempdir().unwrap();
        let d = tempfile::tempdir().unwrap();
        let start = chain(d.path(), 41, outside.path());
        let h = host(&d);
        let p = format!("{}/planted", start.display());
        let e = h.write_atomic(&p, b"x", 0o644, None).unwrap_err();
        assert!(matches!(e, FsError::TooManyLinks { .. }), "{e}");
        assert!(e.to_string().contains("/c/l1/planted"), "{e}");
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
        // 40 links are followed (inside the root).
        let d2 = tempfile::tempdir().unwrap();
        let start = chain(d2.path(), 40, outside.path());
        let h2 = host(&d2);
        h2.write_atomic(&format!("{}/ok", start.display()), b"x", 0o644, None)
            .unwrap();
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
        let inside = d2.path().join(outside.path().strip_prefix("/").unwrap());
        assert_eq!(std::fs::read(inside.join("ok")).unwrap(), b"x");
    }

    #[test]
    fn a_planted_temp_name_is_never_followed() {
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("etc")).unwrap();
        // The old predictable name.
        symlink(
            &victim,
            d.path()
                .join(format!("etc/.x.conf.cairn-{}.tmp", std::process::id())),
        )
        .unwrap();
        let h = host(&d);
        h.write_atomic("/etc/x.conf", b"new", 0o600, Some((0, 0)))
            .unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        assert_eq!(std::fs::read(d.path().join("etc/x.conf")).unwrap(), b"new");
    }

    #[test]
    fn a_final_link_is_replaced_by_rename_not_followed_out() {
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        let d = tempfile::tempdir().unwrap();
        symlink(&victim, d.path().join("f")).unwrap();
        let h = host(&d);
        // Followed inside the root: the write lands at root/<victim path>.
        h.write_atomic("/f", b"new", 0o644, None).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        h.set_mode("/f", 0o600).unwrap();
        assert_ne!(
            std::fs::metadata(&victim).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(h.remove_file("/f").unwrap());
        assert!(victim.exists());
    }

    #[test]
    fn user_controlled_links_are_refused() {
        if !nix::unistd::geteuid().is_root() {
            panic!("this test needs root (it chowns files to another uid)");
        }
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::create_dir_all(root.join("home/alice/.ssh")).unwrap();
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/shadow"), b"secret").unwrap();
        for p in ["home/alice", "home/alice/.ssh"] {
            std::os::unix::fs::chown(root.join(p), Some(1000), Some(1000)).unwrap();
        }
        let h = host(&d);
        // Absolute link in alice's directory.
        symlink("/etc/shadow", root.join("home/alice/.ssh/authorized_keys")).unwrap();
        std::os::unix::fs::lchown(
            root.join("home/alice/.ssh/authorized_keys"),
            Some(1000),
            Some(1000),
        )
        .unwrap();
        let e = h
            .write_atomic(
                "/home/alice/.ssh/authorized_keys",
                b"k",
                0o600,
                Some((1000, 1000)),
            )
            .unwrap_err();
        assert!(matches!(e, FsError::UnsafeLink { .. }), "{e}");
        // Relative link climbing out.
        std::fs::remove_file(root.join("home/alice/.ssh/authorized_keys")).unwrap();
        symlink(
            "../../../etc/shadow",
            root.join("home/alice/.ssh/authorized_keys"),
        )
        .unwrap();
        std::os::unix::fs::lchown(
            root.join("home/alice/.ssh/authorized_keys"),
            Some(1000),
            Some(1000),
        )
        .unwrap();
        let e = h
            .set_owner("/home/alice/.ssh/authorized_keys", 1000, 1000)
            .unwrap_err();
        assert!(matches!(e, FsError::UnsafeLink { .. }), "{e}");
        assert_eq!(std::fs::read(root.join("etc/shadow")).unwrap(), b"secret");
        assert_eq!(std::fs::metadata(root.join("etc/shadow")).unwrap().uid(), 0);
        // A link of alice's pointing further down her own tree is fine.
        std::fs::remove_file(root.join("home/alice/.ssh/authorized_keys")).unwrap();
        std::fs::create_dir(root.join("home/alice/.ssh/keys")).unwrap();
        std::os::unix::fs::chown(root.join("home/alice/.ssh/keys"), Some(1000), Some(1000))
            .unwrap();
        symlink("keys/ak", root.join("home/alice/.ssh/authorized_keys")).unwrap();
        std::os::unix::fs::lchown(
            root.join("home/alice/.ssh/authorized_keys"),
            Some(1000),
            Some(1000),
        )
        .unwrap();
        h.write_atomic(
            "/home/alice/.ssh/authorized_keys",
            b"k",
            0o600,
            Some((1000, 1000)),
        )
        .unwrap();
        assert_eq!(
            std::fs::read(root.join("home/alice/.ssh/keys/ak")).unwrap(),
            b"k"
        );
        // A hard link to a system file in alice's directory keeps its owner.
        std::fs::hard_link(root.join("etc/shadow"), root.join("home/alice/.ssh/hl")).unwrap();
        let e = h.set_owner("/home/alice/.ssh/hl", 1000, 1000).unwrap_err();
        assert!(matches!(e, FsError::HardLinked { .. }), "{e}");
    }

    #[test]
    fn a_link_at_the_chosen_temp_name_is_skipped_never_followed() {
        let outside = tempfile::tempdir().unwrap();
        let victim = outside.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("etc")).unwrap();
        let h = host(&d);
        // Whatever name the scheme picks, a link already there is never opened: the
        // create is O_EXCL|O_NOFOLLOW, so it fails and the next name is tried.
        let planted = CString::new(".x.conf.cairn-0123456789abcdef0123456789abcdef.tmp").unwrap();
        for target in [victim.clone(), PathBuf::from("/nonexistent/dangling")] {
            let link = d
                .path()
                .join("etc")
                .join(OsStr::from_bytes(planted.as_bytes()));
            let _ = std::fs::remove_file(&link);
            symlink(&target, &link).unwrap();
            let mut names = vec![temp_name(c"x.conf").unwrap(), planted.clone()];
            let loc = h.resolve("/etc/x.conf", WRITE).unwrap();
            let mut staged = Staged::new_with(loc, |_| Ok(names.pop().unwrap())).unwrap();
            assert_ne!(staged.temp_name(), OsStr::from_bytes(planted.as_bytes()));
            staged.write_all(b"new").unwrap();
            staged.commit(0o640, Some((0, 0))).unwrap();
            assert!(std::fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink());
        }
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        assert!(!Path::new("/nonexistent/dangling").exists());
        assert_eq!(std::fs::read(d.path().join("etc/x.conf")).unwrap(), b"new");
        // Names are not predictable: two draws differ.
        assert_ne!(temp_name(c"x").unwrap(), temp_name(c"x").unwrap());
    }

    #[test]
    fn directories_are_created_component_by_component() {
        let d = tempfile::tempdir().unwrap();
        let h = host(&d);
        h.create_dir("/var/lib/x", 0o700).unwrap();
        assert_eq!(h.meta("/var/lib/x").unwrap().unwrap().mode, 0o700);
        assert!(h.is_dir("/var/lib"));
        h.create_dir("/var/lib/x", 0o750).unwrap();
        assert_eq!(h.meta("/var/lib/x").unwrap().unwrap().mode, 0o750);
        assert_eq!(
            h.read_dir("/var/lib").unwrap().unwrap(),
            vec![OsString::from("x")]
        );
        assert_eq!(h.read_dir("/nope").unwrap(), None);
        assert_eq!(h.read_opt("/nope/x").unwrap(), None);
    }

    use std::os::unix::fs::{MetadataExt, PermissionsExt};
}
