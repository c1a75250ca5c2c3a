//! What useradd/usermod do outside the databases, after writing them: home directories
//! (created component by component, then `/etc/skel` copied in with modes, owners, times,
//! symlinks and hard links like shadow-utils' `copy_tree`), mail spools, the
//! lastlog/faillog records of a uid, and re-owning a home when a uid or gid changes.

use std::fs::{self, File, OpenOptions, Permissions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::libc;
use nix::sys::stat::{utimensat, UtimensatFlags};
use nix::sys::time::TimeSpec;

use crate::host::Host;

const LASTLOG: &str = "/var/log/lastlog";
const FAILLOG: &str = "/var/log/faillog";
/// `sizeof (struct lastlog)` (glibc: int32 time, 32-byte line, 256-byte host).
const LASTLOG_SIZE: u64 = 292;
/// `sizeof (struct faillog)`: two shorts, 12 chars, then a time_t and a long.
const FAILLOG_SIZE: u64 = 16 + 2 * std::mem::size_of::<usize>() as u64;

/// One side effect, run in order after the databases are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// useradd: zero the faillog and lastlog records of a uid nobody had.
    ResetLogs { uid: u32, lastlog_max: u32 },
    /// useradd -m: the home and the skeleton.
    CreateHome {
        home: String,
        uid: u32,
        gid: u32,
        mode: u32,
        skel: String,
    },
    /// useradd with CREATE_MAIL_SPOOL=yes.
    CreateMail {
        path: String,
        uid: u32,
        gid: u32,
        mode: u32,
    },
    /// usermod -u: the mailbox follows the uid.
    ChownMail {
        path: String,
        old_uid: u32,
        new_uid: u32,
    },
    /// usermod -u: the lastlog/faillog records move to the new uid.
    MoveLogs {
        old: u32,
        new: u32,
        lastlog_max: u32,
    },
    /// usermod -u/-g: files in the home owned by the old ids get the new ones.
    ChownHome {
        home: String,
        old_uid: u32,
        new_uid: Option<u32>,
        old_gid: u32,
        new_gid: Option<u32>,
        uid_changed: bool,
    },
}

// String error: it becomes `CommitError::Other`, the message of the step that failed; the
// shadow module reports it and never branches on it.
pub fn apply(host: &Host, effect: &Effect) -> Result<(), String> {
    match effect {
        Effect::ResetLogs { uid, lastlog_max } => {
            if let Some(p) = log_path(host, FAILLOG) {
                reset_record(&p, *uid, FAILLOG_SIZE);
            }
            if uid <= lastlog_max {
                if let Some(p) = log_path(host, LASTLOG) {
                    reset_record(&p, *uid, LASTLOG_SIZE);
                }
            }
            Ok(())
        }
        Effect::CreateHome {
            home,
            uid,
            gid,
            mode,
            skel,
        } => create_home(host, home, *uid, *gid, *mode, skel),
        Effect::CreateMail {
            path,
            uid,
            gid,
            mode,
        } => {
            if let Some(p) = log_path(host, path) {
                create_mail(&p, *uid, *gid, *mode);
            }
            Ok(())
        }
        Effect::ChownMail {
            path,
            old_uid,
            new_uid,
        } => {
            if let Some(p) = log_path(host, path) {
                chown_mail(&p, *old_uid, *new_uid);
            }
            Ok(())
        }
        Effect::MoveLogs {
            old,
            new,
            lastlog_max,
        } => {
            if new <= lastlog_max {
                if let Some(p) = log_path(host, LASTLOG) {
                    move_record(&p, *old, *new, LASTLOG_SIZE, true);
                }
            }
            if let Some(p) = log_path(host, FAILLOG) {
                move_record(&p, *old, *new, FAILLOG_SIZE, false);
            }
            Ok(())
        }
        Effect::ChownHome {
            home,
            old_uid,
            new_uid,
            old_gid,
            new_gid,
            uid_changed,
        } => {
            let real = host.resolved_path(home).map_err(|e| e.to_string())?;
            let Ok(m) = fs::metadata(&real) else {
                return Ok(());
            };
            let owned = (*uid_changed && Some(m.uid()) == *new_uid) || m.uid() == *old_uid;
            if !owned {
                return Ok(());
            }
            chown_tree(&real, *old_uid, *new_uid, *old_gid, *new_gid)
                .map_err(|e| format!("changing the ownership of the home directory {home}: {e}"))
        }
    }
}

/// faillog_reset/lastlog_reset: only when the file already reaches past the record.
/// The host path of a record file or mailbox (resolved inside the root, strictly); `None`
/// (logged) when it cannot be resolved: like shadow-utils, these side files are best effort.
fn log_path(host: &Host, p: &str) -> Option<PathBuf> {
    match host.resolved_path(p) {
        Ok(path) => Some(path),
        Err(e) => {
            tracing::warn!("{p}: {e}");
            None
        }
    }
}

fn reset_record(path: &Path, uid: u32, size: u64) {
    let offset = u64::from(uid) * size;
    match fs::metadata(path) {
        Ok(m) if m.len() > offset => {}
        _ => return,
    }
    let result = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .and_then(|f| {
            f.write_all_at(&vec![0u8; size as usize], offset)?;
            f.sync_all()
        });
    if let Err(e) = result {
        tracing::warn!(
            "resetting the record of uid {uid} in {}: {e}",
            path.display()
        );
    }
}

/// update_lastlog/update_faillog: copy the old uid's record to the new uid, or clear the
/// new uid's record when the old one has none.
fn move_record(path: &Path, old: u32, new: u32, size: u64, sync_reset: bool) {
    if fs::metadata(path).is_err() {
        return;
    }
    let Ok(f) = OpenOptions::new().read(true).write(true).open(path) else {
        tracing::warn!(
            "failed to copy the record of uid {old} in {}",
            path.display()
        );
        return;
    };
    let mut rec = vec![0u8; size as usize];
    let (o, n) = (u64::from(old) * size, u64::from(new) * size);
    let result = if f.read_exact_at(&mut rec, o).is_ok() {
        f.write_all_at(&rec, n).and_then(|()| f.sync_all())
    } else if f.read_exact_at(&mut rec, n).is_ok() {
        let zero = vec![0u8; size as usize];
        f.write_all_at(&zero, n)
            .and_then(|()| if sync_reset { f.sync_all() } else { Ok(()) })
    } else {
        Ok(())
    };
    if let Err(e) = result {
        tracing::warn!(
            "failed to copy the record of uid {old} to {new} in {}: {e}",
            path.display()
        );
    }
}

fn create_mail(path: &Path, uid: u32, gid: u32, mode: u32) {
    let result = OpenOptions::new()
        .write(true)
        .create_new(true)
        .truncate(true)
        .mode(0o000)
        .open(path)
        .and_then(|f| {
            std::os::unix::fs::fchown(&f, Some(uid), Some(gid))?;
            f.set_permissions(Permissions::from_mode(mode))?;
            f.sync_all()
        });
    if let Err(e) = result {
        tracing::warn!("creating mailbox file {}: {e}", path.display());
    }
}

fn chown_mail(path: &Path, old_uid: u32, new_uid: u32) {
    let f = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return,
        Err(e) => {
            tracing::warn!("{}: {e}", path.display());
            return;
        }
    };
    match f.metadata() {
        Ok(m) if m.uid() == old_uid => {
            if let Err(e) = std::os::unix::fs::fchown(&f, Some(new_uid), None) {
                tracing::warn!("failed to change mailbox owner: {e}");
            }
        }
        Ok(_) => tracing::warn!("{} not owned by uid {old_uid}", path.display()),
        Err(e) => tracing::warn!("fstat {}: {e}", path.display()),
    }
}

/// chown_tree: depth first, entries owned by the old ids get the new ones (links not
/// followed), the directory itself last.
fn chown_tree(
    dir: &Path,
    old_uid: u32,
    new_uid: Option<u32>,
    old_gid: u32,
    new_gid: Option<u32>,
) -> io::Result<()> {
    let handle = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(dir)?;
    let pick = |uid: u32, gid: u32| {
        (
            new_uid.filter(|_| uid == old_uid),
            new_gid.filter(|_| gid == old_gid),
        )
    };
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let m = fs::symlink_metadata(&path)?;
        if m.is_dir() {
            chown_tree(&path, old_uid, new_uid, old_gid, new_gid)?;
        }
        let (u, g) = pick(m.uid(), m.gid());
        if u.is_some() || g.is_some() {
            std::os::unix::fs::lchown(&path, u, g)?;
        }
    }
    let m = handle.metadata()?;
    let (u, g) = pick(m.uid(), m.gid());
    if u.is_some() || g.is_some() {
        std::os::unix::fs::fchown(&handle, u, g)?;
    }
    Ok(())
}

/// create_home + copy_tree.
fn create_home(
    host: &Host,
    home: &str,
    uid: u32,
    gid: u32,
    mode: u32,
    skel: &str,
    // String error: passed on by `apply` (above), only ever shown.
) -> Result<(), String> {
    if host.exists(home) {
        tracing::warn!("the home directory {home} already exists; not copying any file from the skeleton into it");
        return Ok(());
    }
    let mut inside = String::new();
    for part in home.split('/').filter(|p| !p.is_empty()) {
        inside.push('/');
        inside.push_str(part);
        if host.exists(&inside) {
            continue;
        }
        // Through the seam: mkdirat in the resolved parent, mode set on the descriptor.
        host.create_dir(&inside, 0o755)
            .map_err(|e| format!("cannot create directory {inside}: {e}"))?;
        if let Err(e) = host.set_owner(&inside, 0, 0) {
            tracing::warn!("chown on {inside} failed: {e}");
        }
    }
    // The skeleton copy below still works by path (see `Host::resolved_path`): the home was
    // just created by root, so no other user controls anything under it yet.
    let real = host.resolved_path(home).map_err(|e| e.to_string())?;
    let _ = std::os::unix::fs::chown(&real, Some(uid), Some(gid));
    if let Err(e) = fs::set_permissions(&real, Permissions::from_mode(mode)) {
        tracing::warn!("chmod on {home} failed: {e}");
    }
    let src = super::db::nofollow_path(host, skel).map_err(|e| e.to_string())?;
    let mut cx = Copy {
        src_orig: skel.as_bytes().to_vec(),
        dst_orig: home.as_bytes().to_vec(),
        uid,
        gid,
        links: Vec::new(),
    };
    // copy_tree's failures only stop the copy; useradd carries on without a word.
    if let Err(e) = cx.tree(&src, &real, skel.as_bytes()) {
        tracing::debug!("copying {skel} into {home} stopped: {e}");
    }
    Ok(())
}

struct Link {
    dev: u64,
    ino: u64,
    left: u64,
    dst: PathBuf,
}

struct Copy {
    src_orig: Vec<u8>,
    dst_orig: Vec<u8>,
    uid: u32,
    gid: u32,
    links: Vec<Link>,
}

fn times(path: &Path, m: &fs::Metadata) -> io::Result<()> {
    utimensat(
        None,
        path,
        &TimeSpec::new(m.atime(), m.atime_nsec()),
        &TimeSpec::new(m.mtime(), m.mtime_nsec()),
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(io::Error::from)
}

impl Copy {
    /// The entries of `src` into the existing directory `dst` (`src_full`: the path of
    /// `src` inside the target, for symlink rewriting and hard links).
    fn tree(&mut self, src: &Path, dst: &Path, src_full: &[u8]) -> io::Result<()> {
        let m = fs::symlink_metadata(src)?;
        if !m.is_dir() {
            return Err(io::Error::other("not a directory"));
        }
        for entry in fs::read_dir(src)? {
            let name = entry?.file_name();
            let mut full = src_full.to_vec();
            full.push(b'/');
            full.extend_from_slice(name.as_bytes());
            self.entry(&src.join(&name), &dst.join(&name), &full)?;
        }
        Ok(())
    }

    fn entry(&mut self, src: &Path, dst: &Path, src_full: &[u8]) -> io::Result<()> {
        let Ok(m) = fs::symlink_metadata(src) else {
            return Ok(());
        };
        let ft = m.file_type();
        if ft.is_dir() {
            fs::DirBuilder::new().mode(0o700).create(dst)?;
            std::os::unix::fs::lchown(dst, Some(self.uid), Some(self.gid))?;
            fs::set_permissions(dst, Permissions::from_mode(m.mode() & 0o7777))?;
            self.tree(src, dst, src_full)?;
            return times(dst, &m);
        }
        if ft.is_symlink() {
            let target = fs::read_link(src)?;
            let mut t = target.as_os_str().as_bytes().to_vec();
            if t.starts_with(&self.src_orig) {
                let mut n = self.dst_orig.clone();
                n.extend_from_slice(&t[self.src_orig.len()..]);
                t = n;
            }
            std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(&t), dst)?;
            std::os::unix::fs::lchown(dst, Some(self.uid), Some(self.gid))?;
            return times(dst, &m);
        }
        if let Some(i) = self
            .links
            .iter()
            .position(|l| l.dev == m.dev() && l.ino == m.ino())
        {
            fs::hard_link(&self.links[i].dst, dst)?;
            self.links[i].left -= 1;
            if self.links[i].left == 0 {
                self.links.remove(i);
            }
            return Ok(());
        }
        if m.nlink() > 1 {
            self.links.push(Link {
                dev: m.dev(),
                ino: m.ino(),
                left: m.nlink(),
                dst: dst.to_path_buf(),
            });
        }
        if !ft.is_file() {
            return Err(io::Error::other(format!(
                "{} is a special file",
                String::from_utf8_lossy(src_full)
            )));
        }
        let mut input = File::open(src)?;
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(dst)?;
        std::os::unix::fs::fchown(&out, Some(self.uid), Some(self.gid))?;
        out.set_permissions(Permissions::from_mode(m.mode() & 0o7777))?;
        io::copy(&mut input, &mut out)?;
        drop(out);
        times(dst, &m)
    }
}

/// Why a skeleton is left to useradd: said in the log line of the fallback.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SkelUnsupported(pub String);

/// Would copy_tree copy `skel` the same way we do? Subdirectories need `/proc` in the
/// target (glibc's fchmodat(AT_SYMLINK_NOFOLLOW) goes through /proc/self/fd: without it,
/// useradd --root stops the copy at the first subdirectory); special files are left to
/// useradd.
pub fn skel_supported(host: &Host, skel: &str, proc_ok: bool) -> Result<(), SkelUnsupported> {
    let no = |why: String| SkelUnsupported(why);
    let src = super::db::nofollow_path(host, skel).map_err(|e| no(e.to_string()))?;
    let Ok(m) = fs::symlink_metadata(&src) else {
        return Ok(());
    };
    if !m.is_dir() {
        return Ok(());
    }
    let mut stack = vec![src];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            return Err(no(format!("cannot read {}", dir.display())));
        };
        for e in entries.flatten() {
            let Ok(m) = fs::symlink_metadata(e.path()) else {
                continue;
            };
            let ft = m.file_type();
            if ft.is_dir() {
                if !proc_ok {
                    return Err(no(format!(
                        "{skel} has subdirectories and the target has no /proc"
                    )));
                }
                stack.push(e.path());
            } else if !ft.is_file() && !ft.is_symlink() {
                return Err(no(format!("{skel} has special files")));
            }
        }
    }
    Ok(())
}
