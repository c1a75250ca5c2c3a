//! What useradd/usermod do outside the databases, after writing them: home directories
//! (created component by component, then `/etc/skel` copied in with modes, owners, times,
//! symlinks and hard links like shadow-utils' `copy_tree`), mail spools, the
//! lastlog/faillog records of a uid, and re-owning a home when a uid or gid changes.
//!
//! Every operation goes through the host seam: the files are opened by [`Host`] (resolved
//! inside the root), and the home and skeleton trees are walked with `*at` calls relative
//! to their opened directories, never following a link, with owners, modes and times set on
//! descriptors or with `AT_SYMLINK_NOFOLLOW`.

use std::ffi::{CStr, CString, OsStr};
use std::fs::{File, Permissions};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::rc::Rc;

use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, Timespec, Timestamps, Uid};
use rustix::io::Errno;

use crate::host::fs::FsError;
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
            if let Some(f) = log_file(host, FAILLOG) {
                reset_record(&f, &host.shown(FAILLOG), *uid, FAILLOG_SIZE);
            }
            if uid <= lastlog_max {
                if let Some(f) = log_file(host, LASTLOG) {
                    reset_record(&f, &host.shown(LASTLOG), *uid, LASTLOG_SIZE);
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
            create_mail(host, path, *uid, *gid, *mode);
            Ok(())
        }
        Effect::ChownMail {
            path,
            old_uid,
            new_uid,
        } => {
            chown_mail(host, path, *old_uid, *new_uid);
            Ok(())
        }
        Effect::MoveLogs {
            old,
            new,
            lastlog_max,
        } => {
            if new <= lastlog_max {
                if let Some(f) = log_file(host, LASTLOG) {
                    move_record(&f, &host.shown(LASTLOG), *old, *new, LASTLOG_SIZE, true);
                }
            }
            if let Some(f) = log_file(host, FAILLOG) {
                move_record(&f, &host.shown(FAILLOG), *old, *new, FAILLOG_SIZE, false);
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
            let Some(dir) = host.open_dir(home, true).map_err(|e| e.to_string())? else {
                return Ok(());
            };
            let m = rustix::fs::fstat(&dir)
                .map_err(|e| format!("inspecting the home directory {home}: {e}"))?;
            let owned = (*uid_changed && Some(m.st_uid) == *new_uid) || m.st_uid == *old_uid;
            if !owned {
                return Ok(());
            }
            let ids = Ids {
                old_uid: *old_uid,
                new_uid: *new_uid,
                old_gid: *old_gid,
                new_gid: *new_gid,
            };
            chown_tree(&dir, &ids)
                .map_err(|e| format!("changing the ownership of the home directory {home}: {e}"))
        }
    }
}

/// A record file (lastlog, faillog) opened in place through the seam; `None` (logged when it
/// cannot be opened) when it does not exist: like shadow-utils, these files are best effort.
fn log_file(host: &Host, p: &str) -> Option<File> {
    match host.open_existing_rw(p) {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!("{p}: {e}");
            None
        }
    }
}

/// faillog_reset/lastlog_reset: only when the file already reaches past the record.
fn reset_record(f: &File, shown: &Path, uid: u32, size: u64) {
    let offset = u64::from(uid) * size;
    match f.metadata() {
        Ok(m) if m.len() > offset => {}
        _ => return,
    }
    let result = f
        .write_all_at(&vec![0u8; size as usize], offset)
        .and_then(|()| f.sync_all());
    if let Err(e) = result {
        tracing::warn!(
            "resetting the record of uid {uid} in {}: {e}",
            shown.display()
        );
    }
}

/// update_lastlog/update_faillog: copy the old uid's record to the new uid, or clear the
/// new uid's record when the old one has none.
fn move_record(f: &File, shown: &Path, old: u32, new: u32, size: u64, sync_reset: bool) {
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
            shown.display()
        );
    }
}

fn create_mail(host: &Host, path: &str, uid: u32, gid: u32, mode: u32) {
    let result = host.create_new(path, 0o000).and_then(|f| {
        let shown = host.shown(path);
        std::os::unix::fs::fchown(&f, Some(uid), Some(gid))
            .map_err(fs_err("changing owner of", &shown))?;
        f.set_permissions(Permissions::from_mode(mode))
            .map_err(fs_err("changing mode of", &shown))?;
        f.sync_all().map_err(fs_err("syncing", &shown))
    });
    if let Err(e) = result {
        tracing::warn!("creating mailbox file: {e}");
    }
}

fn chown_mail(host: &Host, path: &str, old_uid: u32, new_uid: u32) {
    let f = match host.open_read(path) {
        Ok(Some(f)) => f,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!("{e}");
            return;
        }
    };
    let shown = host.shown(path);
    match f.metadata() {
        Ok(m) if m.uid() == old_uid => {
            if let Err(e) = std::os::unix::fs::fchown(&f, Some(new_uid), None) {
                tracing::warn!("failed to change mailbox owner: {e}");
            }
        }
        Ok(_) => tracing::warn!("{} not owned by uid {old_uid}", shown.display()),
        Err(e) => tracing::warn!("fstat {}: {e}", shown.display()),
    }
}

struct Ids {
    old_uid: u32,
    new_uid: Option<u32>,
    old_gid: u32,
    new_gid: Option<u32>,
}

impl Ids {
    fn pick(&self, uid: u32, gid: u32) -> (Option<Uid>, Option<Gid>) {
        (
            self.new_uid
                .filter(|_| uid == self.old_uid)
                .map(Uid::from_raw),
            self.new_gid
                .filter(|_| gid == self.old_gid)
                .map(Gid::from_raw),
        )
    }
}

/// The entries of the directory `dir` (without `.` and `..`).
fn names(dir: &OwnedFd) -> io::Result<Vec<CString>> {
    let mut v = Vec::new();
    for entry in rustix::fs::Dir::read_from(dir)? {
        let entry = entry?;
        let n = entry.file_name();
        if n.to_bytes() != b"." && n.to_bytes() != b".." {
            v.push(n.to_owned());
        }
    }
    Ok(v)
}

/// Open the subdirectory `name` of `dir`, never following a link.
fn open_sub(dir: &OwnedFd, name: &CStr) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// chown_tree: depth first, entries owned by the old ids get the new ones (links not
/// followed), the directory itself last. Every step is relative to an open directory.
fn chown_tree(dir: &OwnedFd, ids: &Ids) -> io::Result<()> {
    for name in names(dir)? {
        let st = rustix::fs::statat(dir, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW)?;
        if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
            chown_tree(&open_sub(dir, &name)?, ids)?;
        }
        let (u, g) = ids.pick(st.st_uid, st.st_gid);
        if u.is_some() || g.is_some() {
            rustix::fs::chownat(dir, name.as_c_str(), u, g, AtFlags::SYMLINK_NOFOLLOW)?;
        }
    }
    let st = rustix::fs::fstat(dir)?;
    let (u, g) = ids.pick(st.st_uid, st.st_gid);
    if u.is_some() || g.is_some() {
        rustix::fs::fchown(dir, u, g)?;
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
    // From here on everything is relative to the opened home and skeleton directories.
    let dst = host
        .open_dir(home, true)
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("the home directory {home} vanished after it was created"))?;
    let _ = rustix::fs::fchown(&dst, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)));
    if let Err(e) = rustix::fs::fchmod(&dst, Mode::from_raw_mode(mode)) {
        tracing::warn!("chmod on {home} failed: {e}");
    }
    let src = match host.open_dir(skel, false) {
        Ok(Some(src)) => src,
        Ok(None) => return Ok(()),
        Err(e) if is_not_dir(&e) => return Ok(()),
        Err(e) => return Err(e.to_string()),
    };
    let mut cx = Copy {
        src_orig: skel.as_bytes().to_vec(),
        dst_orig: home.as_bytes().to_vec(),
        uid: Uid::from_raw(uid),
        gid: Gid::from_raw(gid),
        links: Vec::new(),
    };
    // copy_tree's failures only stop the copy; useradd carries on without a word.
    if let Err(e) = cx.tree(&src, &Rc::new(dst), skel.as_bytes()) {
        tracing::debug!("copying {skel} into {home} stopped: {e}");
    }
    Ok(())
}

/// A skeleton that is a file or a link, not a directory: nothing to copy (useradd's rule).
fn is_not_dir(e: &FsError) -> bool {
    matches!(e, FsError::Io { source, .. }
        if source.raw_os_error() == Some(Errno::NOTDIR.raw_os_error())
            || source.raw_os_error() == Some(Errno::LOOP.raw_os_error()))
}

fn fs_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> FsError + 'a {
    crate::host::fs::err(action, path)
}

struct Link {
    dev: u64,
    ino: u64,
    left: u64,
    dir: Rc<OwnedFd>,
    name: CString,
}

struct Copy {
    src_orig: Vec<u8>,
    dst_orig: Vec<u8>,
    uid: Uid,
    gid: Gid,
    links: Vec<Link>,
}

fn stamps(st: &rustix::fs::Stat) -> Timestamps {
    Timestamps {
        last_access: Timespec {
            tv_sec: st.st_atime as _,
            tv_nsec: st.st_atime_nsec as _,
        },
        last_modification: Timespec {
            tv_sec: st.st_mtime as _,
            tv_nsec: st.st_mtime_nsec as _,
        },
    }
}

impl Copy {
    /// The entries of the opened `src` into the opened, existing directory `dst`
    /// (`src_full`: the path of `src` inside the target, for symlink rewriting and messages).
    fn tree(&mut self, src: &OwnedFd, dst: &Rc<OwnedFd>, src_full: &[u8]) -> io::Result<()> {
        for name in names(src)? {
            let mut full = src_full.to_vec();
            full.push(b'/');
            full.extend_from_slice(name.to_bytes());
            self.entry(src, dst, &name, &full)?;
        }
        Ok(())
    }

    fn entry(
        &mut self,
        src: &OwnedFd,
        dst: &Rc<OwnedFd>,
        name: &CStr,
        src_full: &[u8],
    ) -> io::Result<()> {
        let Ok(st) = rustix::fs::statat(src, name, AtFlags::SYMLINK_NOFOLLOW) else {
            return Ok(());
        };
        let ft = FileType::from_raw_mode(st.st_mode);
        let perms = Mode::from_raw_mode(st.st_mode & 0o7777);
        if ft == FileType::Directory {
            rustix::fs::mkdirat(dst.as_ref(), name, Mode::from_raw_mode(0o700))?;
            let d = Rc::new(open_sub(dst, name)?);
            rustix::fs::fchown(d.as_ref(), Some(self.uid), Some(self.gid))?;
            rustix::fs::fchmod(d.as_ref(), perms)?;
            self.tree(&open_sub(src, name)?, &d, src_full)?;
            return Ok(rustix::fs::futimens(d.as_ref(), &stamps(&st))?);
        }
        if ft == FileType::Symlink {
            let target = rustix::fs::readlinkat(src, name, Vec::new())?;
            let mut t = target.as_bytes().to_vec();
            if t.starts_with(&self.src_orig) {
                let mut n = self.dst_orig.clone();
                n.extend_from_slice(&t[self.src_orig.len()..]);
                t = n;
            }
            rustix::fs::symlinkat(OsStr::from_bytes(&t), dst.as_ref(), name)?;
            rustix::fs::chownat(
                dst.as_ref(),
                name,
                Some(self.uid),
                Some(self.gid),
                AtFlags::SYMLINK_NOFOLLOW,
            )?;
            return Ok(rustix::fs::utimensat(
                dst.as_ref(),
                name,
                &stamps(&st),
                AtFlags::SYMLINK_NOFOLLOW,
            )?);
        }
        // st_nlink is u64 on x86_64 and u32 on aarch64.
        #[allow(clippy::useless_conversion)]
        let nlink = u64::from(st.st_nlink);
        let (dev, ino) = (st.st_dev, st.st_ino);
        if let Some(i) = self.links.iter().position(|l| l.dev == dev && l.ino == ino) {
            let l = &self.links[i];
            rustix::fs::linkat(
                l.dir.as_ref(),
                l.name.as_c_str(),
                dst.as_ref(),
                name,
                AtFlags::empty(),
            )?;
            self.links[i].left -= 1;
            if self.links[i].left == 0 {
                self.links.remove(i);
            }
            return Ok(());
        }
        if nlink > 1 {
            self.links.push(Link {
                dev,
                ino,
                left: nlink,
                dir: dst.clone(),
                name: name.to_owned(),
            });
        }
        if ft != FileType::RegularFile {
            return Err(io::Error::other(format!(
                "{} is a special file",
                String::from_utf8_lossy(src_full)
            )));
        }
        let input = rustix::fs::openat(
            src,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let now = rustix::fs::fstat(&input)?;
        if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino) {
            return Err(io::Error::other(format!(
                "{} changed while it was being copied",
                String::from_utf8_lossy(src_full)
            )));
        }
        let out = rustix::fs::openat(
            dst.as_ref(),
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )?;
        rustix::fs::fchown(&out, Some(self.uid), Some(self.gid))?;
        rustix::fs::fchmod(&out, perms)?;
        let mut out = File::from(out);
        io::copy(&mut File::from(input), &mut out)?;
        Ok(rustix::fs::futimens(&out, &stamps(&st))?)
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
    let src = match host.open_dir(skel, false) {
        Ok(Some(src)) => src,
        Ok(None) => return Ok(()),
        Err(e) if is_not_dir(&e) => return Ok(()),
        Err(e) => return Err(no(e.to_string())),
    };
    let mut stack = vec![(src, skel.to_string())];
    while let Some((dir, shown)) = stack.pop() {
        let Ok(entries) = names(&dir) else {
            return Err(no(format!("cannot read {shown}")));
        };
        for name in entries {
            let Ok(st) = rustix::fs::statat(&dir, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW)
            else {
                continue;
            };
            match FileType::from_raw_mode(st.st_mode) {
                FileType::Directory => {
                    if !proc_ok {
                        return Err(no(format!(
                            "{skel} has subdirectories and the target has no /proc"
                        )));
                    }
                    let sub = format!("{shown}/{}", name.to_string_lossy());
                    let Ok(fd) = open_sub(&dir, &name) else {
                        return Err(no(format!("cannot read {sub}")));
                    };
                    stack.push((fd, sub));
                }
                FileType::RegularFile | FileType::Symlink => {}
                _ => return Err(no(format!("{skel} has special files"))),
            }
        }
    }
    Ok(())
}
