//! Users, groups, SSH authorized keys and sudo rules.
//!
//! Account changes are decided once (`plan_groups`, `plan_users`) and carried out by
//! one of two backends with shadow-utils' semantics, the options cloud-init passes:
//!
//! - **native** ([`crate::host::shadow`]): the databases are read once under
//!   shadow-utils' lock, every operation of the action is applied in memory exactly as
//!   `useradd`/`usermod`/`groupadd` would, and each changed file is written once
//!   (atomically, with the `FILE-` backups); then homes are created from the skeleton;
//! - **shadow-utils**: `useradd`/`usermod`/`groupadd`/`groupmod` (`--root` when the target
//!   is not `/`), one command per operation, as cloud-init runs them.
//!
//! Native is used unless it cannot guarantee the same result (SELinux, tcb, NSS sources
//! besides files, unusual database lines, options or errors it leaves to the tools, a
//! host whose shadow-utils is not Debian's 4.13) or `CAIRN_ACCOUNTS=shadow-utils` is set;
//! then the whole action runs with shadow-utils. Existing users are converged: differing
//! gecos, shell, home, primary group, uid, missing supplementary groups, password and lock.

use sha_crypt::{sha512_check, sha512_simple, Sha512Params};

use super::{keys, Changes, StepCx, StepError};
use crate::host::accounts::Accounts;
use crate::host::shadow::{
    self, Backend, CommitError, GroupAdd, Session, Unsupported, UserAdd, UserMod,
};
use crate::host::{fs, Cmd, Host};
use cairn_userdata::model::{
    redact_url, AbsPath, AuthorizedKeysSpec, GroupSpec, KeySource, Password, UserSpec,
};

/// A shadow-utils command acting on the target's account files.
fn shadow_cmd(cx: &StepCx, program: &str) -> Cmd {
    let cmd = Cmd::new(program);
    if cx.host.is_live() {
        cmd
    } else {
        cmd.arg("--root").arg(cx.host.root().display().to_string())
    }
}

fn run(cx: &StepCx, cmd: Cmd) -> Result<(), StepError> {
    if !cx.dry_run {
        cx.host.runner().check(&cmd)?;
    }
    Ok(())
}

/// Why an account operation did not happen.
enum AcctError {
    Step(StepError),
    /// The native backend hands the whole action to shadow-utils.
    Unsupported(Unsupported),
}

impl From<StepError> for AcctError {
    fn from(e: StepError) -> Self {
        AcctError::Step(e)
    }
}

impl From<Unsupported> for AcctError {
    fn from(u: Unsupported) -> Self {
        AcctError::Unsupported(u)
    }
}

/// What the users/groups decisions need from a backend.
trait AccountBackend {
    fn kind(&self) -> Backend;
    /// The accounts as they stand (after this action's operations, when the backend can
    /// tell: the native one can even in a dry run).
    fn view(&mut self) -> &Accounts;
    fn groupadd(&mut self, g: &GroupAdd) -> Result<(), AcctError>;
    fn groupmod_gid(&mut self, name: &str, gid: u32) -> Result<(), AcctError>;
    fn useradd(&mut self, u: &UserAdd) -> Result<(), AcctError>;
    fn usermod(&mut self, name: &str, m: &UserMod) -> Result<(), AcctError>;
}

/// One command per operation.
struct ShadowUtils<'c, 'a> {
    cx: &'c mut StepCx<'a>,
}

fn groupadd_cmd(cx: &StepCx, g: &GroupAdd) -> Cmd {
    let mut cmd = shadow_cmd(cx, "groupadd");
    if let Some(gid) = g.gid {
        cmd = cmd.arg("--gid").arg(gid.to_string());
    }
    if g.system {
        cmd = cmd.arg("--system");
    }
    cmd.arg(&g.name)
}

/// Same options, in the same (sorted-by-key) order, as cloud-init's add_user.
fn useradd_cmd(cx: &StepCx, u: &UserAdd) -> Cmd {
    let mut cmd = shadow_cmd(cx, "useradd").arg(&u.name);
    if let Some(e) = &u.expiredate {
        cmd = cmd.arg("--expiredate").arg(e);
    }
    if let Some(g) = &u.comment {
        cmd = cmd.arg("--comment").arg(g);
    }
    if !u.groups.is_empty() {
        cmd = cmd.arg("--groups").arg(&u.groups);
    }
    if let Some(h) = &u.home {
        cmd = cmd.arg("--home").arg(h);
    }
    if let Some(i) = &u.inactive {
        cmd = cmd.arg("--inactive").arg(i);
    }
    if u.no_log_init {
        cmd = cmd.arg("--no-log-init");
    }
    if u.no_user_group {
        cmd = cmd.arg("--no-user-group");
    }
    if let Some(p) = &u.password {
        cmd = cmd.arg("--password").secret_arg(p);
    }
    if let Some(pg) = &u.gid {
        cmd = cmd.arg("--gid").arg(pg);
    }
    if let Some(s) = &u.shell {
        cmd = cmd.arg("--shell").arg(s);
    }
    if u.system {
        cmd = cmd.arg("--system");
    }
    if let Some(uid) = u.uid {
        cmd = cmd.arg("--uid").arg(uid.to_string());
    }
    cmd.arg(if u.create_home { "-m" } else { "-M" })
}

fn usermod_cmd(cx: &StepCx, name: &str, m: &UserMod) -> Cmd {
    let mut cmd = shadow_cmd(cx, "usermod");
    if let Some(g) = &m.comment {
        cmd = cmd.arg("--comment").arg(g);
    }
    if let Some(s) = &m.shell {
        cmd = cmd.arg("--shell").arg(s);
    }
    if let Some(h) = &m.home {
        cmd = cmd.arg("--home").arg(h);
    }
    if let Some(uid) = m.uid {
        cmd = cmd.arg("--uid").arg(uid.to_string());
    }
    if let Some(g) = &m.gid {
        cmd = cmd.arg("--gid").arg(g);
    }
    if let Some(groups) = &m.append_groups {
        cmd = cmd.arg("--append").arg("--groups").arg(groups);
    }
    if let Some(p) = &m.password {
        cmd = cmd.arg("--password").secret_arg(p.clone());
    }
    if m.lock {
        cmd = cmd.arg("--lock");
    }
    cmd.arg(name)
}

impl AccountBackend for ShadowUtils<'_, '_> {
    fn kind(&self) -> Backend {
        Backend::ShadowUtils
    }
    fn view(&mut self) -> &Accounts {
        self.cx.accounts()
    }
    fn groupadd(&mut self, g: &GroupAdd) -> Result<(), AcctError> {
        run(self.cx, groupadd_cmd(self.cx, g))?;
        self.cx.accounts_changed();
        Ok(())
    }
    fn groupmod_gid(&mut self, name: &str, gid: u32) -> Result<(), AcctError> {
        let cmd = shadow_cmd(self.cx, "groupmod")
            .arg("--gid")
            .arg(gid.to_string())
            .arg(name);
        run(self.cx, cmd)?;
        self.cx.accounts_changed();
        Ok(())
    }
    fn useradd(&mut self, u: &UserAdd) -> Result<(), AcctError> {
        run(self.cx, useradd_cmd(self.cx, u))?;
        self.cx.accounts_changed();
        Ok(())
    }
    fn usermod(&mut self, name: &str, m: &UserMod) -> Result<(), AcctError> {
        run(self.cx, usermod_cmd(self.cx, name, m))?;
        self.cx.accounts_changed();
        Ok(())
    }
}

/// Operations applied to an in-memory [`Session`], written by [`with_accounts`].
struct Native<'h> {
    host: &'h Host,
    session: Session,
    view: Option<Accounts>,
}

impl AccountBackend for Native<'_> {
    fn kind(&self) -> Backend {
        Backend::Native
    }
    fn view(&mut self) -> &Accounts {
        let session = &self.session;
        self.view.get_or_insert_with(|| session.accounts())
    }
    fn groupadd(&mut self, g: &GroupAdd) -> Result<(), AcctError> {
        self.view = None;
        Ok(self.session.groupadd(g)?)
    }
    fn groupmod_gid(&mut self, name: &str, gid: u32) -> Result<(), AcctError> {
        self.view = None;
        Ok(self.session.groupmod_gid(name, gid)?)
    }
    fn useradd(&mut self, u: &UserAdd) -> Result<(), AcctError> {
        self.view = None;
        Ok(self.session.useradd(self.host, u)?)
    }
    fn usermod(&mut self, name: &str, m: &UserMod) -> Result<(), AcctError> {
        self.view = None;
        Ok(self.session.usermod(name, m)?)
    }
}

/// Run `plan` with the native backend when it can guarantee shadow-utils' result, else
/// (or when it gives up part-way, before writing anything) with shadow-utils.
fn with_accounts<F>(cx: &mut StepCx, plan: F) -> Result<Changes, StepError>
where
    F: Fn(&mut dyn AccountBackend, bool) -> Result<Changes, AcctError>,
{
    let dry = cx.dry_run;
    let host = cx.host;
    let why = match shadow::refusal(host) {
        Some(why) => why,
        None => match Session::open(host, dry) {
            Err(Unsupported(why)) => why,
            Ok(session) => {
                let mut native = Native {
                    host,
                    session,
                    view: None,
                };
                match plan(&mut native, dry) {
                    Ok(changes) => {
                        if !dry && native.session.has_changes() {
                            native.session.commit(host).map_err(|e| match e {
                                CommitError::Fs(e) => StepError::Fs(e),
                                CommitError::Other(m) => StepError::msg(m),
                            })?;
                            cx.accounts_changed();
                        }
                        tracing::debug!(backend = "native", "account databases handled natively");
                        return Ok(changes);
                    }
                    Err(AcctError::Step(e)) => return Err(e),
                    Err(AcctError::Unsupported(Unsupported(why))) => why,
                }
            }
        },
    };
    tracing::debug!(backend = "shadow-utils", reason = %why, "account databases handled by shadow-utils");
    let mut backend = ShadowUtils { cx };
    plan(&mut backend, dry).map_err(|e| match e {
        AcctError::Step(e) => e,
        AcctError::Unsupported(u) => StepError::msg(u.0),
    })
}

pub fn groups(cx: &mut StepCx, specs: &[GroupSpec]) -> Result<Changes, StepError> {
    with_accounts(cx, |b, dry| plan_groups(b, specs, dry))
}

fn plan_groups(
    b: &mut dyn AccountBackend,
    specs: &[GroupSpec],
    dry_run: bool,
) -> Result<Changes, AcctError> {
    // In a dry run shadow-utils' view does not move; the native one does.
    let simulated = b.kind() == Backend::Native;
    let mut changes = Vec::new();
    for spec in specs {
        let existing = b.view().group(&spec.name).cloned();
        match existing {
            None => {
                b.groupadd(&GroupAdd {
                    name: spec.name.clone(),
                    gid: spec.gid,
                    system: spec.system,
                })?;
                changes.push(format!("created group {}", spec.name));
            }
            Some(g) => {
                if let Some(gid) = spec.gid.filter(|gid| *gid != g.gid) {
                    b.groupmod_gid(&spec.name, gid)?;
                    changes.push(format!("changed gid of group {} to {gid}", spec.name));
                }
            }
        }
        for member in &spec.members {
            let group_has = b
                .view()
                .group(&spec.name)
                .is_some_and(|g| g.members.contains(member));
            if group_has {
                continue;
            }
            if b.view().user(member).is_none() && (simulated || !dry_run) {
                // cloud-init skips members that do not exist, with a warning; so do we.
                tracing::warn!("not adding {member} to group {}: no such user", spec.name);
                continue;
            }
            b.usermod(
                member,
                &UserMod {
                    append_groups: Some(spec.name.clone()),
                    ..Default::default()
                },
            )?;
            changes.push(format!("added {member} to group {}", spec.name));
        }
    }
    Ok(changes)
}

fn hash_plain(name: &str, plain: &str) -> Result<String, StepError> {
    let params = Sha512Params::new(5000)
        .map_err(|_| StepError::msg("invalid password hashing parameters"))?;
    sha512_simple(plain, &params)
        .map_err(|_| StepError::msg(format!("hashing the password of {name}")))
}

/// The shadow password field wanted for `spec`, given what is there now.
fn wanted_password(spec: &UserSpec, current: Option<&str>) -> Result<Option<String>, StepError> {
    let base = match &spec.password {
        None => None,
        Some(Password::Hashed(h)) => Some(h.clone()),
        Some(Password::Plain(p)) => {
            // Keep the existing hash when it already matches, so re-applies change nothing.
            let cur = current.map(|c| c.trim_start_matches('!'));
            match cur {
                Some(c) if c.starts_with("$6$") && sha512_check(p, c).is_ok() => {
                    Some(c.to_string())
                }
                _ => Some(hash_plain(&spec.name, p)?),
            }
        }
    };
    Ok(base)
}

pub fn users(cx: &mut StepCx, specs: &[UserSpec]) -> Result<Changes, StepError> {
    let mut changes = with_accounts(cx, |b, dry| plan_users(b, specs, dry))?;
    let mut writes = Writes::default();
    for spec in specs {
        changes.extend(sudo_rules(cx, spec, &mut writes)?);
        if !spec.ssh_authorized_keys.is_empty() {
            changes.extend(add_keys(
                cx,
                &spec.name,
                &spec.ssh_authorized_keys,
                &mut writes,
            )?);
        }
        changes.extend(fetched_keys(
            cx,
            &spec.name,
            &spec.key_sources,
            &mut writes,
        )?);
    }
    writes.commit(cx)?;
    Ok(changes)
}

/// Fetch the keys of each source (`github:NAME`…) and add them for `user`. In a dry run
/// nothing is fetched: the fetch itself is reported.
fn fetched_keys(
    cx: &mut StepCx,
    user: &str,
    sources: &[KeySource],
    writes: &mut Writes,
) -> Result<Changes, StepError> {
    let mut changes = Vec::new();
    for source in sources {
        if cx.dry_run {
            changes.push(format!(
                "fetch the SSH keys of {} from {} for {user} (not fetched in a dry run)",
                source.provider,
                redact_url(&keys::url_of(source, cx.key_sources))
            ));
            continue;
        }
        let fetched = keys::fetch(source, cx.key_sources)?;
        changes.extend(add_keys(cx, user, &fetched, writes)?);
    }
    Ok(changes)
}

/// useradd's options for a new user `spec` with the initial shadow `password`.
fn user_add(spec: &UserSpec, password: Option<String>) -> UserAdd {
    UserAdd {
        name: spec.name.clone(),
        uid: spec.uid,
        comment: spec.gecos.clone(),
        groups: spec.groups.join(","),
        home: spec.homedir.as_ref().map(|h| h.as_str().to_string()),
        expiredate: spec.expiredate.clone(),
        inactive: spec.inactive.clone(),
        no_log_init: spec.no_log_init,
        no_user_group: spec.no_user_group,
        password,
        gid: spec.primary_group.clone(),
        shell: spec.shell.clone(),
        system: spec.system,
        // cloud-init creates the home (copying /etc/skel) unless no_create_home or system.
        create_home: !(spec.no_create_home || spec.system),
    }
}

fn plan_users(
    b: &mut dyn AccountBackend,
    specs: &[UserSpec],
    dry_run: bool,
) -> Result<Changes, AcctError> {
    let simulated = b.kind() == Backend::Native;
    let mut changes = Vec::new();
    for spec in specs {
        // cloud-init creates missing supplementary and primary groups first.
        let mut needed: Vec<&str> = spec.groups.iter().map(String::as_str).collect();
        if let Some(pg) = &spec.primary_group {
            needed.push(pg);
        }
        for g in needed {
            if b.view().group(g).is_none() {
                b.groupadd(&GroupAdd {
                    name: g.to_string(),
                    ..Default::default()
                })?;
                changes.push(format!("created group {g} for user {}", spec.name));
            }
        }
        let existing = b.view().user(&spec.name).cloned();
        let current_pw = b.view().shadow_password(&spec.name).map(str::to_string);
        let password = wanted_password(spec, current_pw.as_deref())?;
        match existing {
            None => {
                // A locked hash is written as `!HASH` by useradd itself (what cloud-init's
                // useradd + `passwd -l` leave), saving a usermod per user.
                let initial = match (&password, spec.lock_passwd) {
                    (Some(h), true) if !h.starts_with('!') => Some(format!("!{h}")),
                    (p, _) => p.clone(),
                };
                b.useradd(&user_add(spec, initial))?;
                changes.push(format!("created user {}", spec.name));
                let locked = b
                    .view()
                    .shadow_password(&spec.name)
                    .is_some_and(|p| p.starts_with('!'));
                if spec.lock_passwd && !locked {
                    b.usermod(
                        &spec.name,
                        &UserMod {
                            lock: true,
                            ..Default::default()
                        },
                    )?;
                }
            }
            Some(u) => {
                let mut m = UserMod::default();
                let mut what = Vec::new();
                if let Some(g) = spec.gecos.as_ref().filter(|g| **g != u.gecos) {
                    m.comment = Some(g.clone());
                    what.push("gecos");
                }
                if let Some(s) = spec.shell.as_ref().filter(|s| **s != u.shell) {
                    m.shell = Some(s.clone());
                    what.push("shell");
                }
                if let Some(h) = spec.homedir.as_ref().filter(|h| h.as_str() != u.home) {
                    m.home = Some(h.as_str().to_string());
                    what.push("home");
                }
                if let Some(uid) = spec.uid.filter(|id| *id != u.uid) {
                    m.uid = Some(uid);
                    what.push("uid");
                }
                if let Some(pg) = &spec.primary_group {
                    let gid = b.view().group(pg).map(|g| g.gid);
                    if gid != Some(u.gid) {
                        m.gid = Some(pg.clone());
                        what.push("primary group");
                    }
                }
                let have = b.view().supplementary(&spec.name).join(",");
                let missing: Vec<&str> = spec
                    .groups
                    .iter()
                    .map(String::as_str)
                    .filter(|g| !have.split(',').any(|h| h == *g))
                    .collect();
                if !missing.is_empty() {
                    m.append_groups = Some(missing.join(","));
                    what.push("groups");
                }
                let cur = current_pw.clone().unwrap_or_default();
                let cur_locked = cur.starts_with('!');
                if let Some(p) = &password {
                    let cur_hash = cur.trim_start_matches('!');
                    // A leading `!` is the lock, which lock_passwd decides: compare the
                    // hashes without it, or a locked hash (`!`, `!$6$…`) is rewritten on
                    // every apply.
                    if p.trim_start_matches('!') != cur_hash {
                        m.password = Some(p.clone());
                        what.push("password");
                    }
                }
                if !what.is_empty() {
                    b.usermod(&spec.name, &m)?;
                    changes.push(format!("updated user {}: {}", spec.name, what.join(", ")));
                }
                let now = b
                    .view()
                    .shadow_password(&spec.name)
                    .unwrap_or_default()
                    .to_string();
                let locked = if dry_run && !simulated {
                    cur_locked
                } else {
                    now.starts_with('!')
                };
                if spec.lock_passwd && !locked {
                    b.usermod(
                        &spec.name,
                        &UserMod {
                            lock: true,
                            ..Default::default()
                        },
                    )?;
                    changes.push(format!("locked password of {}", spec.name));
                }
            }
        }
    }
    Ok(changes)
}

/// One sudoers drop-in per user (`/etc/sudoers.d/90-cairn-<user>`, mode 0440), checked
/// with `visudo -cf` when the target or the host has it.
fn sudo_rules(cx: &mut StepCx, spec: &UserSpec, writes: &mut Writes) -> Result<Changes, StepError> {
    let file_name = format!("90-cairn-{}", spec.name.replace('.', "_"));
    let path = AbsPath::parse(&format!("/etc/sudoers.d/{file_name}")).map_err(StepError::msg)?;
    if spec.sudo.0.is_empty() {
        return Ok(Vec::new());
    }
    let mut content = format!(
        "# Written by Cairn from user-data\n\n# User rules for {}\n",
        spec.name
    );
    for rule in &spec.sudo.0 {
        content.push_str(&format!("{} {}\n", spec.name, rule));
    }
    let real = path.as_str();
    if cx.host.read_opt(real)?.as_deref() == Some(content.as_bytes())
        && cx.host.meta(real)?.is_some_and(|m| m.mode == 0o440)
    {
        return Ok(Vec::new());
    }
    if !cx.dry_run {
        validate_sudoers(cx, &content)?;
    }
    let mut changes = Vec::new();
    if let Some(c) = writes.converge(cx, &path, content.as_bytes(), 0o440, (0, 0))? {
        changes.push(c);
    }
    changes.extend(ensure_includedir(cx)?);
    Ok(changes)
}

fn validate_sudoers(cx: &StepCx, content: &str) -> Result<(), StepError> {
    let in_target = cx.host.target_has("visudo");
    let on_host = !cx.host.is_live() && which("visudo");
    if !in_target && !on_host {
        return Ok(());
    }
    // Check a temp copy inside the target so the target's visudo can read it: a temp file
    // of the seam (random name, O_EXCL|O_NOFOLLOW in the opened /tmp), never committed,
    // removed when dropped.
    let out = if cx.host.is_dir("/tmp") {
        let mut tmp = cx.host.stage("/tmp/cairn-sudoers-check")?;
        tmp.write_all(content.as_bytes())?;
        tmp.file()
            .sync_all()
            .map_err(fs::err("syncing", tmp.shown()))?;
        if in_target {
            let inside = format!("/tmp/{}", tmp.temp_name().to_string_lossy());
            cx.host
                .run_in_target(Cmd::new("visudo").args(["-c", "-q", "-f"]).arg(inside))?
        } else {
            cx.host.runner().run(
                &Cmd::new("visudo")
                    .args(["-c", "-q", "-f"])
                    .arg(tmp.temp_host_path().display().to_string()),
            )?
        }
    } else {
        // No /tmp in the target: the host's visudo checks a copy in the host's temp dir.
        if !on_host {
            return Ok(());
        }
        let tmp = tempfile::Builder::new()
            .prefix(".cairn-sudoers-")
            .tempfile()
            .map_err(|e| StepError::msg(format!("creating a temp file for visudo: {e}")))?;
        // Written through the descriptor tempfile created (O_EXCL, random name), never by
        // reopening its path.
        std::io::Write::write_all(&mut tmp.as_file(), content.as_bytes())
            .map_err(fs::err("writing", tmp.path()))?;
        cx.host.runner().run(
            &Cmd::new("visudo")
                .args(["-c", "-q", "-f"])
                .arg(tmp.path().display().to_string()),
        )?
    };
    if out.status != 0 {
        return Err(StepError::msg(format!(
            "sudo rules rejected by visudo: {}",
            crate::host::runner::tail(&[out.stdout, out.stderr].concat())
        )));
    }
    Ok(())
}

fn which(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
}

/// Make sure /etc/sudoers reads /etc/sudoers.d (it does on every mainstream distro).
fn ensure_includedir(cx: &mut StepCx) -> Result<Changes, StepError> {
    let sudoers = "/etc/sudoers";
    let Some(text) = cx.host.read_opt(sudoers)? else {
        return Ok(Vec::new());
    };
    let text = String::from_utf8_lossy(&text);
    let has = text.lines().any(|l| {
        let t = l.trim();
        t.starts_with("#includedir /etc/sudoers.d") || t.starts_with("@includedir /etc/sudoers.d")
    });
    if has {
        return Ok(Vec::new());
    }
    if !cx.dry_run {
        cx.host
            .append(sudoers, b"\n#includedir /etc/sudoers.d\n", 0o440)?;
    }
    Ok(vec![
        "added #includedir /etc/sudoers.d to /etc/sudoers".into()
    ])
}

pub fn authorized_keys(
    cx: &mut StepCx,
    specs: &[AuthorizedKeysSpec],
) -> Result<Changes, StepError> {
    let mut changes = Vec::new();
    let mut writes = Writes::default();
    for spec in specs {
        if !spec.keys.is_empty() || spec.sources.is_empty() {
            changes.extend(add_keys(cx, &spec.user, &spec.keys, &mut writes)?);
        }
        changes.extend(fetched_keys(cx, &spec.user, &spec.sources, &mut writes)?);
    }
    writes.commit(cx)?;
    Ok(changes)
}

/// Files of one users action (sudo drop-ins, `authorized_keys`), written at its end and made
/// durable together (see [`fs::WriteBatch`]).
#[derive(Default)]
struct Writes(fs::WriteBatch);

impl Writes {
    /// `steps::converge_file` with the write queued: the change line when content, mode or owner
    /// differ (mode and owner alone are fixed at once).
    fn converge(
        &mut self,
        cx: &StepCx,
        path: &AbsPath,
        content: &[u8],
        mode: u32,
        owner: (u32, u32),
    ) -> Result<Option<String>, StepError> {
        super::converge_queued(cx, &mut self.0, path, content, mode, Some(owner))
    }

    fn commit(&mut self, cx: &StepCx) -> Result<(), StepError> {
        Ok(self.0.commit(cx.host)?)
    }
}

/// Add missing keys to `~user/.ssh/authorized_keys` (dir 0700, file 0600, owned by the
/// user); keys already there are kept, in order. The file is queued in `writes`.
fn add_keys(
    cx: &mut StepCx,
    user: &str,
    keys: &[String],
    writes: &mut Writes,
) -> Result<Changes, StepError> {
    let Some(entry) = cx.accounts().user(user).cloned() else {
        if cx.dry_run {
            return Ok(vec![format!(
                "authorized {} SSH key(s) for {user}",
                keys.len()
            )]);
        }
        return Err(StepError::msg(format!(
            "user `{user}` does not exist in the target"
        )));
    };
    let home =
        AbsPath::parse(&entry.home).map_err(|e| StepError::msg(format!("home of {user}: {e}")))?;
    let ssh_dir = AbsPath::parse(&format!("{}/.ssh", home.as_str())).map_err(StepError::msg)?;
    let file =
        AbsPath::parse(&format!("{}/authorized_keys", ssh_dir.as_str())).map_err(StepError::msg)?;
    let mut changes = Vec::new();
    let real_dir = ssh_dir.as_str();
    match cx.host.meta(real_dir)? {
        None => {
            changes.push(format!("created {ssh_dir} (0700)"));
            if !cx.dry_run {
                cx.host.create_dir(real_dir, 0o700)?;
                cx.host.set_owner(real_dir, entry.uid, entry.gid)?;
            }
        }
        Some(m) if m.mode != 0o700 || m.uid != entry.uid || m.gid != entry.gid => {
            changes.push(format!("fixed mode/owner of {ssh_dir}"));
            if !cx.dry_run {
                cx.host.set_mode(real_dir, 0o700)?;
                cx.host.set_owner(real_dir, entry.uid, entry.gid)?;
            }
        }
        Some(_) => {}
    }
    let current = cx.host.read_opt(file.as_str())?.unwrap_or_default();
    let current = String::from_utf8_lossy(&current).into_owned();
    let mut lines: Vec<String> = current.lines().map(str::to_string).collect();
    let mut added = 0;
    for k in keys {
        if !lines.iter().any(|l| l.trim() == k.trim()) {
            lines.push(k.clone());
            added += 1;
        }
    }
    let mut content = lines.join("\n");
    if !content.is_empty() {
        content.push('\n');
    }
    let owner = (entry.uid, entry.gid);
    if writes
        .converge(cx, &file, content.as_bytes(), 0o600, owner)?
        .is_some()
    {
        changes.push(if added > 0 {
            format!("authorized {added} SSH key(s) for {user}")
        } else {
            format!("fixed mode/owner of {file}")
        });
    }
    Ok(changes)
}
