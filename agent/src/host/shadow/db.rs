//! The account databases as shadow-utils' `commonio` keeps them: one row per line, rows
//! that were not touched written back byte for byte, touched rows re-formatted like
//! `putpwent`/`putspent`/`putgrent`/`putsgent`, new rows appended.
//!
//! Loading is strict: a file with anything this module does not read exactly like
//! shadow-utils (NIS `+`/`-` lines, blank or malformed lines, numbers C would read
//! differently, duplicate names, continuation lines, symlinks) is refused, and the caller
//! lets shadow-utils handle the whole action.
//!
//! Writing is commonio's: the previous content goes to `FILE-` (same owner, mode & 0664,
//! times kept), the new content to `FILE+` (same owner, mode & 0664), fsynced, renamed
//! over `FILE`.
//!
//! Every file operation is relative to the database's directory, opened once through the
//! host seam (resolved inside the root): `FILE`, `FILE-` and `FILE+` are opened, created
//! and renamed with `*at` calls, never following a link, owners and modes set on the
//! descriptors.

use std::ffi::{CStr, CString};
use std::fs::{File, FileTimes, Permissions};
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;

use super::config::canonical_decimal;
use super::Unsupported;
pub use crate::host::fs::sync_together;
use crate::host::fs::{err, FsError};
use crate::host::Host;

/// Longest passwd/shadow line shadow-utils parses (`PASSWD_ENTRY_MAX_LENGTH`).
pub const ENTRY_MAX: usize = 32768;

/// One kind of row.
pub trait Record: Clone {
    fn name(&self) -> &str;
    fn parse(line: &str) -> Option<Self>;
    fn render(&self) -> String;
    /// Would shadow-utils' put function accept this row (it refuses control characters)?
    fn writable(&self) -> bool;
}

/// No `:`/newline (they would split the row) and no control character (`valid_field`).
pub fn field_ok(s: &str) -> bool {
    !s.chars().any(|c| c == ':' || c.is_ascii_control())
}

fn list_ok(items: &[String]) -> bool {
    items.iter().all(|m| field_ok(m) && !m.contains(','))
}

fn parse_id(s: &str) -> Option<u32> {
    let v = canonical_decimal(s)?;
    u32::try_from(v).ok().filter(|v| *v != u32::MAX)
}

/// A comma list as shadow-utils splits it; `None` for empty members (never written by the
/// tools, and read differently by different parsers).
fn parse_list(s: &str) -> Option<Vec<String>> {
    if s.is_empty() {
        return Some(Vec::new());
    }
    let items: Vec<String> = s.split(',').map(str::to_string).collect();
    if items.iter().any(String::is_empty) {
        return None;
    }
    Some(items)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Passwd {
    pub name: String,
    pub passwd: String,
    pub uid: u32,
    pub gid: u32,
    pub gecos: String,
    pub dir: String,
    pub shell: String,
}

impl Record for Passwd {
    fn name(&self) -> &str {
        &self.name
    }
    fn parse(line: &str) -> Option<Self> {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() != 7 || f[0].is_empty() || line.len() >= ENTRY_MAX {
            return None;
        }
        Some(Passwd {
            name: f[0].into(),
            passwd: f[1].into(),
            uid: parse_id(f[2])?,
            gid: parse_id(f[3])?,
            gecos: f[4].into(),
            dir: f[5].into(),
            shell: f[6].into(),
        })
    }
    fn render(&self) -> String {
        format!(
            "{}:{}:{}:{}:{}:{}:{}",
            self.name, self.passwd, self.uid, self.gid, self.gecos, self.dir, self.shell
        )
    }
    fn writable(&self) -> bool {
        [
            &self.name,
            &self.passwd,
            &self.gecos,
            &self.dir,
            &self.shell,
        ]
        .iter()
        .all(|f| field_ok(f))
            && self.name.len()
                + self.passwd.len()
                + self.gecos.len()
                + self.dir.len()
                + self.shell.len()
                + 100
                <= ENTRY_MAX
    }
}

/// A shadow row; numbers are -1 when the field is empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shadow {
    pub name: String,
    pub pwd: String,
    pub lstchg: i64,
    pub min: i64,
    pub max: i64,
    pub warn: i64,
    pub inact: i64,
    pub expire: i64,
    pub flag: Option<u64>,
}

fn parse_age(s: &str) -> Option<i64> {
    if s.is_empty() {
        return Some(-1);
    }
    i64::try_from(canonical_decimal(s)?).ok()
}

fn age(v: i64) -> String {
    if v == -1 {
        String::new()
    } else {
        v.to_string()
    }
}

impl Record for Shadow {
    fn name(&self) -> &str {
        &self.name
    }
    fn parse(line: &str) -> Option<Self> {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() != 9 || f[0].is_empty() || line.len() >= ENTRY_MAX {
            return None;
        }
        Some(Shadow {
            name: f[0].into(),
            pwd: f[1].into(),
            lstchg: parse_age(f[2])?,
            min: parse_age(f[3])?,
            max: parse_age(f[4])?,
            warn: parse_age(f[5])?,
            inact: parse_age(f[6])?,
            expire: parse_age(f[7])?,
            flag: if f[8].is_empty() {
                None
            } else {
                Some(canonical_decimal(f[8])?)
            },
        })
    }
    fn render(&self) -> String {
        format!(
            "{}:{}:{}:{}:{}:{}:{}:{}:{}",
            self.name,
            self.pwd,
            age(self.lstchg),
            age(self.min),
            age(self.max),
            age(self.warn),
            age(self.inact),
            age(self.expire),
            self.flag.map(|f| f.to_string()).unwrap_or_default()
        )
    }
    fn writable(&self) -> bool {
        field_ok(&self.name)
            && field_ok(&self.pwd)
            && self.name.len() + self.pwd.len() + 1000 <= ENTRY_MAX
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub name: String,
    pub passwd: String,
    pub gid: u32,
    pub mem: Vec<String>,
}

impl Record for Group {
    fn name(&self) -> &str {
        &self.name
    }
    fn parse(line: &str) -> Option<Self> {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() != 4 || f[0].is_empty() || line.ends_with('\\') {
            return None;
        }
        Some(Group {
            name: f[0].into(),
            passwd: f[1].into(),
            gid: parse_id(f[2])?,
            mem: parse_list(f[3])?,
        })
    }
    fn render(&self) -> String {
        format!(
            "{}:{}:{}:{}",
            self.name,
            self.passwd,
            self.gid,
            self.mem.join(",")
        )
    }
    fn writable(&self) -> bool {
        field_ok(&self.name) && field_ok(&self.passwd) && list_ok(&self.mem)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gshadow {
    pub name: String,
    pub passwd: String,
    pub adm: Vec<String>,
    pub mem: Vec<String>,
}

impl Record for Gshadow {
    fn name(&self) -> &str {
        &self.name
    }
    fn parse(line: &str) -> Option<Self> {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() != 4 || f[0].is_empty() || line.ends_with('\\') {
            return None;
        }
        Some(Gshadow {
            name: f[0].into(),
            passwd: f[1].into(),
            adm: parse_list(f[2])?,
            mem: parse_list(f[3])?,
        })
    }
    fn render(&self) -> String {
        format!(
            "{}:{}:{}:{}",
            self.name,
            self.passwd,
            self.adm.join(","),
            self.mem.join(",")
        )
    }
    fn writable(&self) -> bool {
        field_ok(&self.name) && field_ok(&self.passwd) && list_ok(&self.adm) && list_ok(&self.mem)
    }
}

/// A `/etc/subuid` or `/etc/subgid` range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubId {
    pub owner: String,
    pub start: u64,
    pub count: u64,
}

impl Record for SubId {
    fn name(&self) -> &str {
        &self.owner
    }
    fn parse(line: &str) -> Option<Self> {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() != 3 || f[0].is_empty() || line.len() >= 1024 {
            return None;
        }
        Some(SubId {
            owner: f[0].into(),
            start: canonical_decimal(f[1])?,
            count: canonical_decimal(f[2])?,
        })
    }
    fn render(&self) -> String {
        format!("{}:{}:{}", self.owner, self.start, self.count)
    }
    fn writable(&self) -> bool {
        field_ok(&self.owner)
    }
}

#[derive(Debug, Clone)]
pub struct Row<R> {
    /// The line as read; `None` for a row added in this session.
    pub line: Option<String>,
    pub rec: R,
    /// Re-formatted when written (commonio's `changed`).
    pub dirty: bool,
}

/// What the file was when loaded: its bytes, owner, mode and times (for the backup).
#[derive(Debug, Clone)]
struct Original {
    bytes: Vec<u8>,
    mode: u32,
    uid: u32,
    gid: u32,
    atime: i64,
    mtime: i64,
}

#[derive(Debug, Clone)]
pub struct Table<R> {
    /// The path inside the target (`/etc/passwd`), for messages.
    pub rel: &'static str,
    /// The directory holding the database, opened through the seam.
    dir: Arc<OwnedFd>,
    /// The database's name in `dir`.
    name: CString,
    /// The host path of the database, for messages.
    shown: PathBuf,
    orig: Original,
    pub rows: Vec<Row<R>>,
    /// Something changed: the file is written on commit.
    pub changed: bool,
}

impl<R: Record> Table<R> {
    /// Load `rel` from the target; `Ok(None)` when it does not exist. `unique`: names must
    /// not repeat (every database but subuid/subgid).
    pub fn load(host: &Host, rel: &'static str, unique: bool) -> Result<Option<Self>, Unsupported> {
        let no = |e: &dyn std::fmt::Display| Unsupported(format!("{rel}: {e}"));
        let p = Path::new(rel);
        let (Some(parent), Some(file)) = (p.parent(), p.file_name()) else {
            return Err(Unsupported(format!("{rel} names no file")));
        };
        let dir = match host.open_dir(&parent.to_string_lossy(), true) {
            Ok(Some(dir)) => dir,
            Ok(None) => return Ok(None),
            Err(e) => return Err(no(&e)),
        };
        let name = CString::new(file.as_bytes()).map_err(|e| no(&e))?;
        let shown = host.shown(rel);
        // O_NOFOLLOW like shadow-utils: a link at the database is refused, not followed.
        let fd = match rustix::fs::openat(
            &dir,
            name.as_c_str(),
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => return Ok(None),
            Err(Errno::LOOP) => return Err(Unsupported(format!("{rel} is a symbolic link"))),
            Err(e) => return Err(no(&e)),
        };
        let meta = rustix::fs::fstat(&fd).map_err(|e| no(&e))?;
        if FileType::from_raw_mode(meta.st_mode) != FileType::RegularFile {
            return Err(Unsupported(format!("{rel} is not a regular file")));
        }
        let mut bytes = Vec::new();
        File::from(fd)
            .take(crate::host::fs::MAX_READ + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| no(&e))?;
        if bytes.len() as u64 > crate::host::fs::MAX_READ {
            return Err(Unsupported(format!("{rel} is too large")));
        }
        let text =
            std::str::from_utf8(&bytes).map_err(|_| Unsupported(format!("{rel} is not UTF-8")))?;
        if text.contains('\0') {
            return Err(Unsupported(format!("{rel} has a NUL byte")));
        }
        let mut lines: Vec<&str> = text.split('\n').collect();
        if lines.last() == Some(&"") {
            lines.pop();
        }
        let mut rows: Vec<Row<R>> = Vec::with_capacity(lines.len() + 8);
        let mut seen = std::collections::HashSet::new();
        for line in lines {
            if line.starts_with('+') || line.starts_with('-') {
                return Err(Unsupported(format!("{rel} has NIS entries")));
            }
            let rec = R::parse(line).ok_or_else(|| {
                Unsupported(format!("{rel}: a line shadow-utils reads differently"))
            })?;
            if unique && !seen.insert(rec.name().to_string()) {
                return Err(Unsupported(format!(
                    "{rel}: `{}` appears twice",
                    rec.name()
                )));
            }
            rows.push(Row {
                line: Some(line.to_string()),
                rec,
                dirty: false,
            });
        }
        Ok(Some(Table {
            rel,
            dir: Arc::new(dir),
            name,
            shown,
            orig: Original {
                bytes,
                mode: meta.st_mode & 0o7777,
                uid: meta.st_uid,
                gid: meta.st_gid,
                atime: meta.st_atime as i64,
                mtime: meta.st_mtime as i64,
            },
            rows,
            changed: false,
        }))
    }

    pub fn records(&self) -> impl Iterator<Item = &R> {
        self.rows.iter().map(|r| &r.rec)
    }

    pub fn find(&self, name: &str) -> Option<&R> {
        self.records().find(|r| r.name() == name)
    }

    /// commonio_update: replace the row of that name, or append a new one.
    pub fn update(&mut self, rec: R) -> Result<(), Unsupported> {
        if !rec.writable() {
            return Err(Unsupported(format!(
                "{}: a field shadow-utils would refuse",
                self.rel
            )));
        }
        self.changed = true;
        if let Some(row) = self.rows.iter_mut().find(|r| r.rec.name() == rec.name()) {
            row.rec = rec;
            row.dirty = true;
        } else {
            self.rows.push(Row {
                line: None,
                rec,
                dirty: true,
            });
        }
        Ok(())
    }

    /// commonio_append: always a new row at the end.
    pub fn append(&mut self, rec: R) -> Result<(), Unsupported> {
        if !rec.writable() {
            return Err(Unsupported(format!(
                "{}: a field shadow-utils would refuse",
                self.rel
            )));
        }
        self.changed = true;
        self.rows.push(Row {
            line: None,
            rec,
            dirty: true,
        });
        Ok(())
    }

    /// The file's content as commonio writes it.
    pub fn render(&self) -> Vec<u8> {
        let mut out = String::with_capacity(self.orig.bytes.len() + 256);
        for row in &self.rows {
            match (&row.line, row.dirty) {
                (Some(line), false) => out.push_str(line),
                _ => out.push_str(&row.rec.render()),
            }
            out.push('\n');
        }
        out.into_bytes()
    }

    /// `FILE` with `suffix` appended, and its host path for messages.
    fn sibling(&self, suffix: &str) -> (CString, PathBuf) {
        let mut n = self.name.as_bytes().to_vec();
        n.extend_from_slice(suffix.as_bytes());
        let mut shown = self.shown.clone().into_os_string();
        shown.push(suffix);
        // `name` has no NUL, nor has the suffix.
        (CString::new(n).unwrap_or_default(), PathBuf::from(shown))
    }

    /// Write the backup (`FILE-`) and the new content (`FILE+`), not synced or renamed yet.
    pub fn stage(&self) -> Result<Staged, FsError> {
        let (backup_name, backup) = self.sibling("-");
        let mode = self.orig.mode & 0o664;
        let mut f = create_like(
            &self.dir,
            &backup_name,
            &backup,
            self.orig.uid,
            self.orig.gid,
            mode,
        )?;
        f.write_all(&self.orig.bytes)
            .map_err(err("writing", &backup))?;
        let secs = |s: i64| {
            SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(s).unwrap_or_default())
        };
        // utime(2) with whole seconds, like create_backup.
        let _ = f.set_times(
            FileTimes::new()
                .set_accessed(secs(self.orig.atime))
                .set_modified(secs(self.orig.mtime)),
        );
        let (staged_name, staged) = self.sibling("+");
        let mut n = create_like(
            &self.dir,
            &staged_name,
            &staged,
            self.orig.uid,
            self.orig.gid,
            mode,
        )?;
        if let Err(e) = n.write_all(&self.render()) {
            self.discard_staged();
            return Err(err("writing", &staged)(e));
        }
        Ok(Staged {
            backup: (f, backup),
            new: (n, staged),
        })
    }

    /// Remove a staged `FILE+` that will not be installed.
    pub fn discard_staged(&self) {
        let (staged, _) = self.sibling("+");
        let _ = rustix::fs::unlinkat(self.dir.as_ref(), staged.as_c_str(), AtFlags::empty());
    }

    /// Rename the staged `FILE+` over the database, within the opened directory.
    pub fn install(&self) -> Result<(), FsError> {
        let (staged, _) = self.sibling("+");
        rustix::fs::renameat(
            self.dir.as_ref(),
            staged.as_c_str(),
            self.dir.as_ref(),
            self.name.as_c_str(),
        )
        .map_err(|e| err("renaming into place", &self.shown)(e.into()))
    }

    /// The host path of the database's directory (to sync each directory once).
    pub fn dir(&self) -> &Path {
        self.shown.parent().unwrap_or(Path::new("/"))
    }

    /// fsync the database's directory (best effort, after the renames).
    pub fn sync_dir(&self) {
        if let Ok(d) = rustix::fs::openat(
            self.dir.as_ref(),
            c".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            let _ = rustix::fs::fsync(&d);
        }
    }
}

/// A database's backup and new content, written but not yet durable nor in place (the
/// paths are for messages).
#[derive(Debug)]
pub struct Staged {
    pub backup: (File, PathBuf),
    pub new: (File, PathBuf),
}

/// `fopen_set_perms`: created in the opened directory with no permissions, never through a
/// link (`O_NOFOLLOW`), then owner and mode on the descriptor.
fn create_like(
    dir: &OwnedFd,
    name: &CStr,
    shown: &Path,
    uid: u32,
    gid: u32,
    mode: u32,
) -> Result<File, FsError> {
    let fd = rustix::fs::openat(
        dir,
        name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| err("creating", shown)(e.into()))?;
    let f = File::from(fd);
    std::os::unix::fs::fchown(&f, Some(uid), Some(gid)).map_err(err("changing owner of", shown))?;
    f.set_permissions(Permissions::from_mode(mode))
        .map_err(err("changing mode of", shown))?;
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip_and_strictness() {
        let p = Passwd::parse("root:x:0:0:root:/root:/bin/bash").unwrap();
        assert_eq!(p.render(), "root:x:0:0:root:/root:/bin/bash");
        assert!(Passwd::parse("root:x:00:0:root:/root:/bin/bash").is_none());
        assert!(Passwd::parse("root:x:0:0:root:/root").is_none());
        let s = Shadow::parse("bob:!:20000:0:99999:7:::").unwrap();
        assert_eq!(s.render(), "bob:!:20000:0:99999:7:::");
        assert_eq!((s.inact, s.flag), (-1, None));
        assert!(Shadow::parse("bob:!:20000:0:99999:7::::").is_none());
        let g = Group::parse("sudo:x:27:a,b").unwrap();
        assert_eq!(g.mem, vec!["a", "b"]);
        assert!(Group::parse("sudo:x:27:a,,b").is_none());
        assert_eq!(Group::parse("e:x:1:").unwrap().mem.len(), 0);
        let gs = Gshadow::parse("sudo:!:adm:a,b").unwrap();
        assert_eq!(gs.render(), "sudo:!:adm:a,b");
        let r = SubId::parse("alice:100000:65536").unwrap();
        assert_eq!(r.render(), "alice:100000:65536");
        assert!(!Passwd {
            gecos: "a\tb".into(),
            ..p
        }
        .writable());
    }
}
