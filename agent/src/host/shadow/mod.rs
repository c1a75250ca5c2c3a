//! A native account writer: what Debian's shadow-utils 4.13 `useradd`, `groupadd` and
//! `usermod` (as `steps::users` invokes them) do to the target, without the subprocesses.
//!
//! A [`Session`] takes shadow-utils' lock (`/etc/.pwd.lock`), reads passwd, shadow,
//! group, gshadow, subuid and subgid once, applies any number of operations in memory
//! (with shadow-utils' id allocation, row formats and append order), then writes each
//! changed file once, atomically, with shadow-utils' `FILE-` backups, and finally creates
//! homes (copying the skeleton), mail spools and lastlog/faillog records in order.
//!
//! Anything it cannot reproduce exactly — an option or a file it does not read like
//! shadow-utils, a SELinux or tcb target, NSS sources besides local files, an operation
//! shadow-utils would refuse (so the error message is the real one) — is reported as
//! [`Unsupported`] before anything is written, and the caller runs the whole action with
//! shadow-utils instead. `CAIRN_ACCOUNTS=shadow-utils` forces that.

pub mod config;
pub mod db;
pub mod home;
pub mod ids;
pub mod lock;

use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;

pub use db::sync_together;

use config::{get_id, getlong, strtoday, LoginDefs, UseraddDefaults, DEFAULT_GROUP};
use db::{field_ok, Group, Gshadow, Passwd, Shadow, SubId, Table};
pub use home::Effect;
use ids::Kind;

use super::accounts::{Accounts, GroupEntry, PasswdEntry};
use super::fs::FsError;
use super::{Cmd, Host};

/// Why the native writer hands an action to shadow-utils.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsupported(pub String);

impl std::fmt::Display for Unsupported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn unsupported<T>(why: impl Into<String>) -> Result<T, Unsupported> {
    Err(Unsupported(why.into()))
}

/// Which implementation changes the account databases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// This module.
    Native,
    /// `useradd`/`usermod`/`groupadd`/`groupmod` subprocesses.
    ShadowUtils,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Native => "native",
            Backend::ShadowUtils => "shadow-utils",
        }
    }
}

/// A failure while writing (after planning succeeded).
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error("{0}")]
    Other(String),
}

/// `useradd` options, as `steps::users` passes them (cloud-init's set).
#[derive(Debug, Clone, Default)]
pub struct UserAdd {
    pub name: String,
    pub uid: Option<u32>,
    pub comment: Option<String>,
    /// `--groups`, comma-separated as on the command line (empty: not passed).
    pub groups: String,
    pub home: Option<String>,
    pub expiredate: Option<String>,
    pub inactive: Option<String>,
    pub no_log_init: bool,
    pub no_user_group: bool,
    pub password: Option<String>,
    /// `--gid`: a group name or number.
    pub gid: Option<String>,
    pub shell: Option<String>,
    pub system: bool,
    /// `-m` when true, `-M` when false.
    pub create_home: bool,
}

/// `usermod` options, as `steps::users` passes them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserMod {
    pub comment: Option<String>,
    pub shell: Option<String>,
    pub home: Option<String>,
    pub uid: Option<u32>,
    /// `--gid`: a group name or number.
    pub gid: Option<String>,
    /// `--append --groups LIST` (comma-separated).
    pub append_groups: Option<String>,
    pub password: Option<String>,
    pub lock: bool,
}

/// `groupadd` options.
#[derive(Debug, Clone, Default)]
pub struct GroupAdd {
    pub name: String,
    pub gid: Option<u32>,
    pub system: bool,
}

/// The `passwd` package whose tools this module reproduces: Debian's 4.13 (read once per
/// process from the host's dpkg database: the host's shadow-utils is the one `--root` runs).
fn host_has_debian_shadow_4_13() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        let Ok(status) = std::fs::read("/var/lib/dpkg/status") else {
            return false;
        };
        match std::str::from_utf8(&status) {
            Ok(text) => passwd_is_debian_4_13(text),
            Err(_) => passwd_is_debian_4_13(&String::from_utf8_lossy(&status)),
        }
    })
}

fn passwd_is_debian_4_13(status: &str) -> bool {
    let start = if status.starts_with("Package: passwd\n") {
        0
    } else {
        match status.find("\nPackage: passwd\n") {
            Some(i) => i + 1,
            None => return false,
        }
    };
    let para = &status[start..];
    let para = &para[..para.find("\n\n").unwrap_or(para.len())];
    para.lines().any(|l| l == "Status: install ok installed")
        && para.lines().any(|l| {
            l.strip_prefix("Version: 1:4.13+dfsg1-")
                .is_some_and(|rev| !rev.contains("ubuntu"))
        })
}

fn selinux_target(host: &Host) -> bool {
    let config = host.read_text("/etc/selinux/config").unwrap_or_default();
    let enabled = config.lines().any(|l| {
        l.trim()
            .strip_prefix("SELINUX=")
            .map(|v| v.trim().to_ascii_lowercase())
            .is_some_and(|v| v == "enforcing" || v == "permissive")
    });
    let fs_present = if host.is_live() {
        Path::new("/sys/fs/selinux").exists()
    } else {
        host.exists("/sys/fs/selinux") || Path::new("/sys/fs/selinux/enforce").exists()
    };
    enabled || fs_present
}

/// The cheap reasons not to try the native writer at all (no database read yet).
pub fn refusal(host: &Host) -> Option<String> {
    match std::env::var("CAIRN_ACCOUNTS").as_deref() {
        Ok("shadow-utils") => return Some("CAIRN_ACCOUNTS=shadow-utils".into()),
        Ok("native") | Ok("") | Err(_) => {}
        Ok(other) => return Some(format!("unknown CAIRN_ACCOUNTS={other}")),
    }
    if !host_has_debian_shadow_4_13() {
        return Some("the host's shadow-utils is not Debian's 4.13".into());
    }
    if selinux_target(host) {
        return Some("SELinux target".into());
    }
    if host.exists("/etc/tcb") {
        return Some("tcb shadow (/etc/tcb)".into());
    }
    None
}

/// The sources NSS consults for `db` in the target's nsswitch.conf (`files` when absent).
fn nss_sources(text: &str, db: &str) -> Vec<String> {
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or_default();
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        if name.trim() != db {
            continue;
        }
        let mut out = Vec::new();
        let mut in_action = false;
        for tok in rest.split_whitespace() {
            if tok.starts_with('[') {
                in_action = !tok.ends_with(']');
                continue;
            }
            if in_action {
                in_action = !tok.ends_with(']');
                continue;
            }
            out.push(tok.to_string());
        }
        return out;
    }
    vec!["files".into()]
}

const USERDB_DIRS: [&str; 5] = [
    "/etc/userdb",
    "/run/userdb",
    "/run/host/userdb",
    "/usr/local/lib/userdb",
    "/usr/lib/userdb",
];

/// Lowest id nss-systemd may answer for besides local files (homed users, dynamic users).
const SYSTEMD_FOREIGN_IDS: u32 = 60001;

/// Every account database and setting one users/groups action needs, held under the
/// shadow-utils lock, edited in memory.
pub struct Session {
    live: bool,
    defs: LoginDefs,
    dflt: UseraddDefaults,
    passwd: Table<Passwd>,
    shadow: Table<Shadow>,
    group: Table<Group>,
    gshadow: Table<Gshadow>,
    subuid: Option<Table<SubId>>,
    subgid: Option<Table<SubId>>,
    effects: Vec<Effect>,
    today: i64,
    proc_ok: bool,
    tz_utc: bool,
    /// nss-systemd is consulted: ids from 60001 and its synthesized names may be taken.
    systemd_nss: bool,
    /// Per skeleton path: `Err(why not)`, the reason kept for the fallback's log line.
    skel_ok: HashMap<String, Result<(), home::SkelUnsupported>>,
    flush_passwd: bool,
    flush_group: bool,
    lock: Option<lock::PwdLock>,
}

fn read_opt(host: &Host, rel: &str) -> Option<Vec<u8>> {
    host.read_opt(rel).ok().flatten()
}

/// Is the effective time zone UTC (so `useradd -e YYYY-MM-DD`'s local midnight is that day)?
fn tz_is_utc(host: &Host) -> bool {
    const UTC: [&str; 12] = [
        "UTC",
        "UTC0",
        "UCT",
        "GMT",
        "GMT0",
        "GMT+0",
        "GMT-0",
        "Universal",
        "Zulu",
        "Greenwich",
        "Etc/UTC",
        "Etc/GMT",
    ];
    if let Some(tz) = std::env::var_os("TZ") {
        let tz = tz.to_string_lossy();
        let tz = tz.trim_start_matches(':');
        let tz = tz.strip_prefix("Etc/").unwrap_or(tz);
        return tz.is_empty() || UTC.contains(&tz);
    }
    match host.read_link("/etc/localtime") {
        Ok(Some(target)) => target
            .file_name()
            .is_some_and(|n| UTC.contains(&n.to_string_lossy().as_ref())),
        // No /etc/localtime at all is UTC; a regular file is not known to be.
        Ok(None) => matches!(host.meta("/etc/localtime"), Ok(None)),
        Err(_) => false,
    }
}

/// gettime()/DAY, honouring SOURCE_DATE_EPOCH like shadow-utils.
fn today() -> Result<i64, Unsupported> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let t = match std::env::var("SOURCE_DATE_EPOCH") {
        Err(_) => now,
        Ok(s) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => match s.parse::<u64>() {
            Ok(v) if v <= now => v,
            _ => now,
        },
        Ok(_) => return unsupported("SOURCE_DATE_EPOCH is not a plain number"),
    };
    let days = i64::try_from(t / 86_400).unwrap_or(i64::MAX);
    Ok(if days == 0 { -1 } else { days })
}

/// A name every shadow-utils build accepts the same way (Debian's rules are looser; for
/// anything outside this set, shadow-utils decides).
fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && name != "."
        && name != ".."
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// add_list: append unless already there.
fn add_member(list: &mut Vec<String>, name: &str) -> bool {
    if list.iter().any(|m| m == name) {
        false
    } else {
        list.push(name.to_string());
        true
    }
}

impl Session {
    /// Read the target's settings and databases (under the lock unless `dry_run`).
    pub fn open(host: &Host, dry_run: bool) -> Result<Session, Unsupported> {
        let defs = LoginDefs::parse(&read_opt(host, "/etc/login.defs").unwrap_or_default());
        if defs.bool("USE_TCB") {
            return unsupported("USE_TCB in login.defs");
        }
        if defs.unum("MAX_MEMBERS_PER_GROUP", 0) != 0 {
            return unsupported("MAX_MEMBERS_PER_GROUP splits groups");
        }
        for dir in [
            "/etc/shadow-maint/useradd-pre.d",
            "/etc/shadow-maint/useradd-post.d",
        ] {
            if host.exists(dir) || host.read_link(dir).ok().flatten().is_some() {
                return unsupported(format!("{dir} has hooks to run"));
            }
        }
        if host.exists("/sbin/pam_tally2") {
            return unsupported("pam_tally2 is installed");
        }
        let nss =
            String::from_utf8_lossy(&read_opt(host, "/etc/nsswitch.conf").unwrap_or_default())
                .into_owned();
        let mut systemd_nss = false;
        for db in ["passwd", "group"] {
            for src in nss_sources(&nss, db) {
                match src.as_str() {
                    "files" | "compat" => {}
                    "systemd" => systemd_nss = true,
                    other => return unsupported(format!("NSS {db} source `{other}`")),
                }
            }
        }
        if systemd_nss {
            if let Some(d) = USERDB_DIRS.iter().find(|d| host.exists(d)) {
                return unsupported(format!("nss-systemd with user records in {d}"));
            }
            if host.is_live() {
                let dynamic = std::fs::read_dir("/run/systemd/dynamic-uid")
                    .map(|mut d| d.next().is_some())
                    .unwrap_or(false);
                if dynamic || Path::new("/run/systemd/userdb/io.systemd.Home").exists() {
                    return unsupported("nss-systemd answers for dynamic or homed users");
                }
            }
        }
        let lock = if dry_run {
            None
        } else {
            Some(lock::PwdLock::acquire(host).map_err(|e| Unsupported(e.to_string()))?)
        };
        fn need<R: db::Record>(host: &Host, rel: &'static str) -> Result<Table<R>, Unsupported> {
            Table::load(host, rel, true)?
                .ok_or_else(|| Unsupported(format!("{rel} does not exist")))
        }
        let passwd = need(host, "/etc/passwd")?;
        let shadow = need(host, "/etc/shadow")?;
        let group = need(host, "/etc/group")?;
        let gshadow = need(host, "/etc/gshadow")?;
        let subuid = Table::load(host, "/etc/subuid", false)?;
        let subgid = Table::load(host, "/etc/subgid", false)?;
        let proc_ok = if host.is_live() {
            true
        } else {
            host.is_dir("/proc/self/fd")
        };
        Ok(Session {
            live: host.is_live(),
            dflt: UseraddDefaults::parse(read_opt(host, "/etc/default/useradd").as_deref()),
            defs,
            passwd,
            shadow,
            group,
            gshadow,
            subuid,
            subgid,
            effects: Vec::new(),
            today: today()?,
            proc_ok,
            tz_utc: tz_is_utc(host),
            systemd_nss,
            skel_ok: HashMap::new(),
            flush_passwd: false,
            flush_group: false,
            lock,
        })
    }

    /// The accounts as they are after the operations so far.
    pub fn accounts(&self) -> Accounts {
        Accounts {
            users: self
                .passwd
                .records()
                .map(|p| PasswdEntry {
                    name: p.name.clone(),
                    uid: p.uid,
                    gid: p.gid,
                    gecos: p.gecos.clone(),
                    home: p.dir.clone(),
                    shell: p.shell.clone(),
                })
                .collect(),
            groups: self
                .group
                .records()
                .map(|g| GroupEntry {
                    name: g.name.clone(),
                    gid: g.gid,
                    members: g.mem.clone(),
                })
                .collect(),
            shadow: self
                .shadow
                .records()
                .map(|s| (s.name.clone(), s.pwd.clone()))
                .collect(),
        }
    }

    /// Does any operation so far change something?
    pub fn has_changes(&self) -> bool {
        self.passwd.changed
            || self.shadow.changed
            || self.group.changed
            || self.gshadow.changed
            || self.subuid.as_ref().is_some_and(|t| t.changed)
            || self.subgid.as_ref().is_some_and(|t| t.changed)
            || !self.effects.is_empty()
    }

    fn check_foreign_id(&self, id: u32) -> Result<(), Unsupported> {
        if self.systemd_nss && id >= SYSTEMD_FOREIGN_IDS {
            return unsupported(format!("id {id} may belong to nss-systemd"));
        }
        Ok(())
    }

    fn check_foreign_name(&self, name: &str) -> Result<(), Unsupported> {
        if self.systemd_nss && matches!(name, "root" | "nobody" | "nogroup") {
            return unsupported(format!("`{name}` may be synthesized by nss-systemd"));
        }
        Ok(())
    }

    /// getgrnam/getgrgid through NSS `files` (`getgr_nam_gid`: digits mean a gid).
    fn group_by_name_or_gid(&self, s: &str) -> Option<&Group> {
        if !s.is_empty() {
            if let Some(gid) = get_id(s) {
                return self.group.records().find(|g| g.gid == gid);
            }
        }
        self.group.find(s)
    }

    fn new_id(&self, kind: Kind, system: bool, preferred: Option<u32>) -> Result<u32, Unsupported> {
        let range = ids::range(&self.defs, kind, system)
            .ok_or_else(|| Unsupported("login.defs id ranges are invalid".into()))?;
        if self.systemd_nss && range.max >= SYSTEMD_FOREIGN_IDS {
            return unsupported("id range reaches ids nss-systemd may own");
        }
        let used: Vec<u32> = match kind {
            Kind::User => self.passwd.records().map(|p| p.uid).collect(),
            Kind::Group => self.group.records().map(|g| g.gid).collect(),
        };
        ids::find_new(&used, system, range, preferred)
            .ok_or_else(|| Unsupported("no free id in the range".into()))
    }

    /// find_new_sub_uids/gids (sorting the table like commonio_sort does).
    fn new_subrange(&mut self, uid: bool) -> Result<(u64, u64), Unsupported> {
        let (min_key, max_key, count_key) = if uid {
            ("SUB_UID_MIN", "SUB_UID_MAX", "SUB_UID_COUNT")
        } else {
            ("SUB_GID_MIN", "SUB_GID_MAX", "SUB_GID_COUNT")
        };
        let min = self.defs.ulong(min_key, 100_000);
        let max = self.defs.ulong(max_key, 600_100_000);
        let count = self.defs.ulong(count_key, 65536);
        let table = if uid {
            self.subuid.as_mut()
        } else {
            self.subgid.as_mut()
        };
        let Some(table) = table else {
            return unsupported("no subordinate id file");
        };
        if table.rows.len() > 1 {
            table.rows.sort_by(|a, b| {
                (a.rec.start, a.rec.count, a.rec.owner.as_bytes()).cmp(&(
                    b.rec.start,
                    b.rec.count,
                    b.rec.owner.as_bytes(),
                ))
            });
            table.changed = true;
        }
        let ranges: Vec<(u64, u64)> = table.records().map(|r| (r.start, r.count)).collect();
        let start = ids::find_free_subrange(&ranges, min, max, count)
            .ok_or_else(|| Unsupported("no free subordinate id range".into()))?;
        // The start comes back as a uid_t.
        let start32 = start as u32;
        if start32 == u32::MAX {
            return unsupported("no free subordinate id range");
        }
        Ok((u64::from(start32), count))
    }

    /// Does copy_tree copy this skeleton like we do? (cached per path)
    fn check_skel(&mut self, host: &Host, skel: &str) -> Result<(), Unsupported> {
        let proc_ok = self.proc_ok;
        self.skel_ok
            .entry(skel.to_string())
            .or_insert_with(|| home::skel_supported(host, skel, proc_ok))
            .clone()
            .map_err(|e| Unsupported(e.0))
    }

    fn mail_spool(&self) -> Option<String> {
        match (self.defs.str("MAIL_DIR"), self.defs.str("MAIL_FILE")) {
            (Some(d), _) => Some(d.to_string()),
            (None, None) => Some("/var/mail".into()),
            (None, Some(_)) => None,
        }
    }

    /// `groupadd [--gid N] [--system] NAME`.
    pub fn groupadd(&mut self, g: &GroupAdd) -> Result<(), Unsupported> {
        if !plain_name(&g.name) {
            return unsupported(format!("group name `{}`", g.name));
        }
        self.check_foreign_name(&g.name)?;
        if self.group.find(&g.name).is_some() {
            return unsupported(format!("group {} already exists", g.name));
        }
        let gid = match g.gid {
            Some(gid) => {
                self.check_foreign_id(gid)?;
                if gid == u32::MAX || self.group.records().any(|r| r.gid == gid) {
                    return unsupported(format!("GID {gid} is taken or invalid"));
                }
                gid
            }
            None => self.new_id(Kind::Group, g.system, None)?,
        };
        self.group.update(Group {
            name: g.name.clone(),
            passwd: "x".into(),
            gid,
            mem: Vec::new(),
        })?;
        self.gshadow.update(Gshadow {
            name: g.name.clone(),
            passwd: "!".into(),
            adm: Vec::new(),
            mem: Vec::new(),
        })?;
        self.flush_group = true;
        Ok(())
    }

    /// `groupmod --gid`: left to shadow-utils (it also rewrites primary gids in passwd).
    pub fn groupmod_gid(&mut self, name: &str, _gid: u32) -> Result<(), Unsupported> {
        unsupported(format!("changing the gid of group {name}"))
    }

    /// `useradd NAME [options]`, as `steps::users` runs it.
    pub fn useradd(&mut self, host: &Host, a: &UserAdd) -> Result<(), Unsupported> {
        let name = a.name.as_str();
        if !plain_name(name) {
            return unsupported(format!("user name `{name}`"));
        }
        self.check_foreign_name(name)?;
        // process_flags
        let comment = a.comment.clone().unwrap_or_default();
        let shell = a.shell.clone().unwrap_or_else(|| self.dflt.shell.clone());
        let home = a
            .home
            .clone()
            .unwrap_or_else(|| format!("{}/{name}", self.dflt.home));
        let password = a.password.clone().unwrap_or_else(|| "!".into());
        let shell_ok = shell.is_empty() || shell.starts_with('/') || shell.starts_with('*');
        if !field_ok(&comment) || !field_ok(&home) || !field_ok(&shell) || !field_ok(&password) {
            return unsupported("a field useradd would refuse");
        }
        if !home.starts_with('/') || !shell_ok {
            return unsupported("home or shell useradd would refuse");
        }
        let expire = strtoday(
            a.expiredate.as_deref().unwrap_or(&self.dflt.expire),
            self.tz_utc,
        )
        .filter(|v| *v >= -1)
        .ok_or_else(|| Unsupported("an expiry date read differently".into()))?;
        let inactive = match &a.inactive {
            Some(i) => getlong(i)
                .filter(|v| *v >= -1)
                .ok_or_else(|| Unsupported("an inactive period useradd would refuse".into()))?,
            None => self.dflt.inactive,
        };
        let mut user_gid = match &a.gid {
            Some(g) => {
                self.group_by_name_or_gid(g)
                    .ok_or_else(|| Unsupported(format!("group {g} does not exist")))?
                    .gid
            }
            None => {
                let mut gid = DEFAULT_GROUP;
                for raw in &self.dflt.groups {
                    if let Some(g) = self.group_by_name_or_gid(raw) {
                        gid = g.gid;
                    }
                }
                gid
            }
        };
        let own_group = a.gid.is_none() && !a.no_user_group && self.defs.bool("USERGROUPS_ENAB");
        let no_log = a.no_log_init || self.dflt.log_init == "no";
        let mut supplementary: Vec<String> = Vec::new();
        if !a.groups.is_empty() {
            for item in a.groups.split(',') {
                let g = self
                    .group_by_name_or_gid(item)
                    .ok_or_else(|| Unsupported(format!("group {item} does not exist")))?;
                supplementary.push(g.name.clone());
            }
        }
        let uid_min = self.defs.ulong("UID_MIN", 1000) as u32;
        let uid_max = self.defs.ulong("UID_MAX", 60000) as u32;
        let requested = a.uid.unwrap_or(0);
        let in_range = requested == 0 || (requested <= uid_max && requested >= uid_min);
        let subuid_count = self.defs.ulong("SUB_UID_COUNT", 65536);
        let subgid_count = self.defs.ulong("SUB_GID_COUNT", 65536);
        let sub_uid = subuid_count > 0 && self.subuid.is_some() && !a.system && in_range;
        let sub_gid = subgid_count > 0 && self.subgid.is_some() && !a.system && in_range;

        // main
        if self.passwd.find(name).is_some() {
            return unsupported(format!("user {name} already exists"));
        }
        if own_group && self.group.find(name).is_some() {
            return unsupported(format!("group {name} exists"));
        }
        let uid = match a.uid {
            None => self.new_id(Kind::User, a.system, None)?,
            Some(u) => {
                self.check_foreign_id(u)?;
                if u == u32::MAX || self.passwd.records().any(|p| p.uid == u) {
                    return unsupported(format!("UID {u} is not unique"));
                }
                u
            }
        };
        if own_group {
            user_gid = self.new_id(Kind::Group, a.system, Some(uid))?;
            self.group.update(Group {
                name: name.into(),
                passwd: "x".into(),
                gid: user_gid,
                mem: Vec::new(),
            })?;
            self.gshadow.update(Gshadow {
                name: name.into(),
                passwd: "!".into(),
                adm: Vec::new(),
                mem: Vec::new(),
            })?;
        }
        let subuids = if sub_uid && subuid_count != 0 {
            Some(self.new_subrange(true)?)
        } else {
            None
        };
        let subgids = if sub_gid && subgid_count != 0 {
            Some(self.new_subrange(false)?)
        } else {
            None
        };

        // usr_update
        let lastlog_max = self.defs.ulong("LASTLOG_UID_MAX", 0xFFFF_FFFF) as u32;
        let uid_free = !self.passwd.records().any(|p| p.uid == uid);
        let mut effects = Vec::new();
        if !no_log && uid_free {
            effects.push(Effect::ResetLogs { uid, lastlog_max });
        }
        self.passwd.update(Passwd {
            name: name.into(),
            passwd: "x".into(),
            uid,
            gid: user_gid,
            gecos: comment,
            dir: home.clone(),
            shell,
        })?;
        let age = |v: i64| v; // scale_age is the identity with day-based shadow aging
        let (min, max, warn, inact, expire) = if a.system {
            (-1, -1, -1, -1, -1)
        } else {
            (
                age(self.defs.num("PASS_MIN_DAYS", -1)),
                age(self.defs.num("PASS_MAX_DAYS", -1)),
                age(self.defs.num("PASS_WARN_AGE", -1)),
                age(inactive),
                age(expire),
            )
        };
        self.shadow.update(Shadow {
            name: name.into(),
            pwd: password,
            lstchg: self.today,
            min,
            max,
            warn,
            inact,
            expire,
            flag: None,
        })?;
        for (range, table) in [(subuids, &mut self.subuid), (subgids, &mut self.subgid)] {
            if let (Some((start, count)), Some(t)) = (range, table.as_mut()) {
                t.append(SubId {
                    owner: name.into(),
                    start,
                    count,
                })?;
            }
        }
        if !supplementary.is_empty() {
            self.add_to_groups(name, &supplementary, true)?;
        }

        // After the databases: the home, the mail spool.
        if a.create_home {
            self.check_skel(host, &self.dflt.skel.clone())?;
            // Through the seam: a link at the home is followed inside the root only.
            match host.read_link(&home) {
                Ok(Some(_)) if matches!(host.meta(&home), Ok(None)) => {
                    return unsupported(format!("{home} is a dangling symlink"));
                }
                Ok(_) => {}
                // A link chain too long, or one a user steers out of their directories: not
                // something to hand to useradd; creating the home refuses it and fails the
                // step, as useradd fails when it cannot create the home.
                Err(FsError::TooManyLinks { .. } | FsError::UnsafeLink { .. }) => {}
                Err(e) => return unsupported(format!("the home {home}: {e}")),
            }
            let mode =
                self.defs
                    .num("HOME_MODE", 0o777 & !self.defs.num("UMASK", 0o22)) as u32
                    & 0o7777;
            effects.push(Effect::CreateHome {
                home,
                uid,
                gid: user_gid,
                mode,
                skel: self.dflt.skel.clone(),
            });
        }
        if !a.system && self.dflt.create_mail_spool.eq_ignore_ascii_case("yes") {
            if let Some(spool) = self.mail_spool() {
                let (gid, mode) = match self.group.find("mail") {
                    Some(g) => (g.gid, 0o660),
                    None => (user_gid, 0o600),
                };
                effects.push(Effect::CreateMail {
                    path: format!("{spool}/{name}"),
                    uid,
                    gid,
                    mode,
                });
            }
        }
        self.effects.extend(effects);
        self.flush_passwd = true;
        self.flush_group = true;
        Ok(())
    }

    /// useradd's grp_update (`rewrite`: every listed group is rewritten, member or not) and
    /// usermod's update_group + update_gshadow for `-a -G` (only groups gaining a member).
    fn add_to_groups(
        &mut self,
        user: &str,
        groups: &[String],
        rewrite: bool,
    ) -> Result<(), Unsupported> {
        let mut updates = Vec::new();
        for g in self.group.records() {
            if groups.contains(&g.name) && (rewrite || !g.mem.iter().any(|m| m == user)) {
                let mut n = g.clone();
                add_member(&mut n.mem, user);
                updates.push(n);
            }
        }
        for n in updates {
            self.group.update(n)?;
        }
        let mut updates = Vec::new();
        for s in self.gshadow.records() {
            if groups.contains(&s.name)
                && self.group.find(&s.name).is_some()
                && (rewrite || !s.mem.iter().any(|m| m == user))
            {
                let mut n = s.clone();
                add_member(&mut n.mem, user);
                updates.push(n);
            }
        }
        for n in updates {
            self.gshadow.update(n)?;
        }
        Ok(())
    }

    /// `usermod [options] NAME`, as `steps::users` runs it.
    pub fn usermod(&mut self, name: &str, m: &UserMod) -> Result<(), Unsupported> {
        for f in [&m.comment, &m.shell, &m.home, &m.password]
            .into_iter()
            .flatten()
        {
            if !field_ok(f) {
                return unsupported("a field usermod would refuse");
            }
        }
        if m.home.as_ref().is_some_and(|h| !h.starts_with('/')) {
            return unsupported("a relative home");
        }
        if m.shell
            .as_ref()
            .is_some_and(|s| !(s.is_empty() || s.starts_with('/') || s.starts_with('*')))
        {
            return unsupported("a shell usermod would refuse");
        }
        if m.lock && m.password.is_some() {
            return unsupported("-L and -p together");
        }
        let new_gid = match &m.gid {
            Some(g) => Some(
                self.group_by_name_or_gid(g)
                    .ok_or_else(|| Unsupported(format!("group {g} does not exist")))?
                    .gid,
            ),
            None => None,
        };
        let mut groups = Vec::new();
        if let Some(list) = &m.append_groups {
            if !list.is_empty() {
                for item in list.split(',') {
                    let g = self
                        .group_by_name_or_gid(item)
                        .ok_or_else(|| Unsupported(format!("group {item} does not exist")))?;
                    groups.push(g.name.clone());
                }
            }
        }
        let cur = self
            .passwd
            .find(name)
            .cloned()
            .ok_or_else(|| Unsupported(format!("user {name} does not exist")))?;
        // Options equal to the current values are dropped, as usermod does.
        let uflg = m.uid.filter(|u| *u != cur.uid);
        let gflg = new_gid.filter(|g| *g != cur.gid);
        let sflg = m.shell.clone().filter(|s| *s != cur.shell);
        let dflg = m.home.clone().filter(|h| *h != cur.dir);
        let cflg = m.comment.clone().filter(|c| *c != cur.gecos);
        let pflg = m.password.clone();
        let lflg = m.lock;
        let gflag = m.append_groups.is_some();
        if uflg.is_none()
            && gflg.is_none()
            && sflg.is_none()
            && dflg.is_none()
            && cflg.is_none()
            && pflg.is_none()
            && !lflg
            && !gflag
        {
            return Ok(());
        }
        if let Some(u) = uflg {
            self.check_foreign_id(u)?;
            if u == u32::MAX || self.passwd.records().any(|p| p.uid == u) {
                return unsupported(format!("UID {u} already exists"));
            }
        }
        if (uflg.is_some() || dflg.is_some()) && (self.live || self.proc_ok) {
            return unsupported("usermod checks running processes of the user");
        }
        let new_pw = |old: &str| -> String {
            if lflg && !old.starts_with('!') {
                format!("!{old}")
            } else if let Some(p) = &pflg {
                p.clone()
            } else {
                old.to_string()
            }
        };
        // usr_update
        let mut pw = cur.clone();
        if pw.passwd != "x" {
            pw.passwd = new_pw(&pw.passwd);
        }
        if let Some(u) = uflg {
            pw.uid = u;
        }
        if let Some(g) = gflg {
            pw.gid = g;
        }
        if let Some(c) = &cflg {
            pw.gecos = c.clone();
        }
        let new_home = dflg.as_ref().map(|h| {
            if h.len() > 1 && h.ends_with('/') {
                h[..h.len() - 1].to_string()
            } else {
                h.clone()
            }
        });
        if let Some(h) = &new_home {
            pw.dir = h.clone();
        }
        if let Some(s) = &sflg {
            pw.shell = s.clone();
        }
        let sp = self.shadow.find(name).cloned();
        if sp.is_none() && pflg.is_some() {
            return unsupported(format!("{name} has no shadow entry"));
        }
        if uflg.is_some()
            || gflg.is_some()
            || cflg.is_some()
            || dflg.is_some()
            || sflg.is_some()
            || pflg.is_some()
            || lflg
        {
            self.passwd.update(pw)?;
        }
        if let Some(mut sp) = sp {
            if pflg.is_some() || lflg {
                sp.pwd = new_pw(&sp.pwd);
                if pflg.is_some() {
                    sp.lstchg = self.today;
                }
                self.shadow.update(sp)?;
            }
        }
        if gflag && !groups.is_empty() {
            self.add_to_groups(name, &groups, false)?;
        }
        // After the databases.
        if let Some(u) = uflg {
            if let Some(spool) = self.mail_spool() {
                self.effects.push(Effect::ChownMail {
                    path: format!("{spool}/{name}"),
                    old_uid: cur.uid,
                    new_uid: u,
                });
            }
            self.effects.push(Effect::MoveLogs {
                old: cur.uid,
                new: u,
                lastlog_max: self.defs.ulong("LASTLOG_UID_MAX", 0xFFFF_FFFF) as u32,
            });
        }
        if uflg.is_some() || gflg.is_some() {
            self.effects.push(Effect::ChownHome {
                home: new_home.unwrap_or(cur.dir),
                old_uid: cur.uid,
                new_uid: uflg,
                old_gid: cur.gid,
                new_gid: gflg,
                uid_changed: uflg.is_some(),
            });
        }
        self.flush_passwd = true;
        self.flush_group = true;
        Ok(())
    }

    /// Write every changed database once: backups (`FILE-`) and new contents (`FILE+`) are
    /// written, all fsynced (concurrently, so the journal commits them together), then
    /// renamed into place in commonio's order (passwd, shadow, group, gshadow, subuid,
    /// subgid) and the directory synced. Then the lock is released, homes and the rest are
    /// done in operation order, and on a live root nscd/sssd are told.
    pub fn commit(mut self, host: &Host) -> Result<(), CommitError> {
        let tables: Vec<&dyn Stage> = [
            Some(&self.passwd as &dyn Stage),
            Some(&self.shadow as &dyn Stage),
            Some(&self.group as &dyn Stage),
            Some(&self.gshadow as &dyn Stage),
            self.subuid.as_ref().map(|t| t as &dyn Stage),
            self.subgid.as_ref().map(|t| t as &dyn Stage),
        ]
        .into_iter()
        .flatten()
        .filter(|t| t.changed())
        .collect();
        let mut staged = Vec::new();
        for t in &tables {
            match t.stage() {
                Ok(s) => staged.push(s),
                Err(e) => {
                    for t in &tables[..staged.len()] {
                        t.discard_staged();
                    }
                    return Err(e.into());
                }
            }
        }
        let files: Vec<(&std::fs::File, &Path)> = staged
            .iter()
            .flat_map(|s| {
                [
                    (&s.backup.0, s.backup.1.as_path()),
                    (&s.new.0, s.new.1.as_path()),
                ]
            })
            .collect();
        if let Err(e) = db::sync_together(&files) {
            for t in &tables {
                t.discard_staged();
            }
            return Err(e.into());
        }
        let mut synced: Vec<&Path> = Vec::new();
        for t in &tables {
            t.install()?;
        }
        drop(staged);
        for t in &tables {
            if !synced.contains(&t.dir()) {
                t.sync_dir();
                synced.push(t.dir());
            }
        }
        self.lock = None;
        for effect in &self.effects {
            home::apply(host, effect).map_err(CommitError::Other)?;
        }
        if self.live {
            flush_caches(host, self.flush_passwd, self.flush_group);
        }
        Ok(())
    }
}

/// A database table of any row type, for committing them in one loop.
trait Stage {
    fn changed(&self) -> bool;
    fn stage(&self) -> Result<db::Staged, FsError>;
    fn discard_staged(&self);
    fn install(&self) -> Result<(), FsError>;
    fn dir(&self) -> &Path;
    fn sync_dir(&self);
}

impl<R: db::Record> Stage for Table<R> {
    fn changed(&self) -> bool {
        self.changed
    }
    fn stage(&self) -> Result<db::Staged, FsError> {
        Table::stage(self)
    }
    fn discard_staged(&self) {
        Table::discard_staged(self)
    }
    fn install(&self) -> Result<(), FsError> {
        Table::install(self)
    }
    fn dir(&self) -> &Path {
        Table::dir(self)
    }
    fn sync_dir(&self) {
        Table::sync_dir(self)
    }
}

/// nscd -i / sss_cache, as shadow-utils runs them after a change (only when installed).
fn flush_caches(host: &Host, passwd: bool, group: bool) {
    if Path::new("/usr/sbin/nscd").exists() {
        for (db, on) in [("passwd", passwd), ("group", group)] {
            if on {
                let _ = host
                    .runner()
                    .run(&Cmd::new("/usr/sbin/nscd").args(["-i", db]));
            }
        }
    }
    if Path::new("/usr/sbin/sss_cache").exists() && (passwd || group) {
        let flags = format!(
            "-{}{}",
            if passwd { "U" } else { "" },
            if group { "G" } else { "" }
        );
        let _ = host
            .runner()
            .run(&Cmd::new("/usr/sbin/sss_cache").arg(flags));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nsswitch_sources() {
        let t = "# x\npasswd:  files systemd\ngroup: files [NOTFOUND=return] ldap\n";
        assert_eq!(nss_sources(t, "passwd"), vec!["files", "systemd"]);
        assert_eq!(nss_sources(t, "group"), vec!["files", "ldap"]);
        assert_eq!(nss_sources(t, "shadow"), vec!["files"]);
    }

    #[test]
    fn debian_passwd_package() {
        let ok = "Package: adduser\nStatus: install ok installed\n\nPackage: passwd\nStatus: install ok installed\nVersion: 1:4.13+dfsg1-1+deb12u2\n\nPackage: z\n";
        assert!(passwd_is_debian_4_13(ok));
        assert!(!passwd_is_debian_4_13(&ok.replace("4.13+", "4.17+")));
        assert!(!passwd_is_debian_4_13(&ok.replace("deb12u2", "4ubuntu3")));
        assert!(!passwd_is_debian_4_13(&ok.replace(
            "install ok installed\nV",
            "deinstall ok config-files\nV"
        )));
        assert!(!passwd_is_debian_4_13(
            "Package: passwdqc\nVersion: 1:4.13+dfsg1-1\n"
        ));
    }

    #[test]
    fn plain_names() {
        assert!(plain_name("alice.b_c-1"));
        assert!(!plain_name("-x"));
        assert!(!plain_name("a b"));
        assert!(!plain_name(""));
        assert!(!plain_name(&"a".repeat(33)));
    }
}
