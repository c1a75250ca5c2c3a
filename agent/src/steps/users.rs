//! Users, groups, SSH authorized keys and sudo rules, with shadow-utils.
//!
//! Accounts are created and modified with `useradd`/`usermod`/`groupadd` (`--root` when
//! the target is not `/`), exactly as cloud-init calls them, so passwd/group/shadow rows
//! come out field for field the same. Existing users are converged: differing gecos,
//! shell, home, primary group, uid, missing supplementary groups, password and lock.

use sha_crypt::{sha512_check, sha512_simple, Sha512Params};

use super::{converge_file, Changes, StepCx, StepError};
use crate::host::{fs, Cmd};
use crate::model::{AbsPath, AuthorizedKeysSpec, GroupSpec, Password, UserSemantics, UserSpec};

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

pub fn groups(cx: &mut StepCx, specs: &[GroupSpec]) -> Result<Changes, StepError> {
    let mut changes = Vec::new();
    for spec in specs {
        let existing = cx.accounts().group(&spec.name).cloned();
        match existing {
            None => {
                let mut cmd = shadow_cmd(cx, "groupadd");
                if let Some(gid) = spec.gid {
                    cmd = cmd.arg("--gid").arg(gid.to_string());
                }
                if spec.system {
                    cmd = cmd.arg("--system");
                }
                run(cx, cmd.arg(&spec.name))?;
                changes.push(format!("created group {}", spec.name));
                cx.accounts_changed();
            }
            Some(g) => {
                if let Some(gid) = spec.gid.filter(|gid| *gid != g.gid) {
                    run(
                        cx,
                        shadow_cmd(cx, "groupmod")
                            .arg("--gid")
                            .arg(gid.to_string())
                            .arg(&spec.name),
                    )?;
                    changes.push(format!("changed gid of group {} to {gid}", spec.name));
                    cx.accounts_changed();
                }
            }
        }
        for member in &spec.members {
            let group_has = cx
                .accounts()
                .group(&spec.name)
                .is_some_and(|g| g.members.contains(member));
            if group_has {
                continue;
            }
            if cx.accounts().user(member).is_none() && !cx.dry_run {
                // cloud-init skips members that do not exist, with a warning; so do we.
                tracing::warn!("not adding {member} to group {}: no such user", spec.name);
                continue;
            }
            run(
                cx,
                shadow_cmd(cx, "usermod")
                    .args(["-a", "-G"])
                    .arg(&spec.name)
                    .arg(member),
            )?;
            changes.push(format!("added {member} to group {}", spec.name));
            cx.accounts_changed();
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
    let mut changes = Vec::new();
    for spec in specs {
        // cloud-init creates missing supplementary and primary groups first.
        let mut needed: Vec<&str> = spec.groups.iter().map(String::as_str).collect();
        if let Some(pg) = &spec.primary_group {
            needed.push(pg);
        }
        for g in needed {
            if cx.accounts().group(g).is_none() {
                run(cx, shadow_cmd(cx, "groupadd").arg(g))?;
                changes.push(format!("created group {g} for user {}", spec.name));
                cx.accounts_changed();
            }
        }
        let existing = cx.accounts().user(&spec.name).cloned();
        let current_pw = cx
            .accounts()
            .shadow_password(&spec.name)
            .map(str::to_string);
        let password = wanted_password(spec, current_pw.as_deref())?;
        match existing {
            None => {
                // A locked hash is written as `!HASH` by useradd itself (what cloud-init's
                // useradd + `passwd -l` leave), saving a usermod per user.
                let initial = match (&password, spec.lock_passwd) {
                    (Some(h), true) if !h.starts_with('!') => Some(format!("!{h}")),
                    (p, _) => p.clone(),
                };
                create_user(cx, spec, initial.as_deref())?;
                changes.push(format!("created user {}", spec.name));
                cx.accounts_changed();
                let locked = cx
                    .accounts()
                    .shadow_password(&spec.name)
                    .is_some_and(|p| p.starts_with('!'));
                if spec.lock_passwd && !locked {
                    run(cx, shadow_cmd(cx, "usermod").arg("--lock").arg(&spec.name))?;
                }
            }
            Some(u) => {
                let mut cmd = shadow_cmd(cx, "usermod");
                let mut what = Vec::new();
                if let Some(g) = spec.gecos.as_ref().filter(|g| **g != u.gecos) {
                    cmd = cmd.arg("--comment").arg(g);
                    what.push("gecos");
                }
                if let Some(s) = spec.shell.as_ref().filter(|s| **s != u.shell) {
                    cmd = cmd.arg("--shell").arg(s);
                    what.push("shell");
                }
                if let Some(h) = spec.homedir.as_ref().filter(|h| h.as_str() != u.home) {
                    cmd = cmd.arg("--home").arg(h.as_str());
                    what.push("home");
                }
                if let Some(uid) = spec.uid.filter(|id| *id != u.uid) {
                    cmd = cmd.arg("--uid").arg(uid.to_string());
                    what.push("uid");
                }
                if let Some(pg) = &spec.primary_group {
                    let gid = cx.accounts().group(pg).map(|g| g.gid);
                    if gid != Some(u.gid) {
                        cmd = cmd.arg("--gid").arg(pg);
                        what.push("primary group");
                    }
                }
                let have = cx.accounts().supplementary(&spec.name).join(",");
                let missing: Vec<&str> = spec
                    .groups
                    .iter()
                    .map(String::as_str)
                    .filter(|g| !have.split(',').any(|h| h == *g))
                    .collect();
                if !missing.is_empty() {
                    cmd = cmd.arg("--append").arg("--groups").arg(missing.join(","));
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
                        cmd = cmd.arg("--password").secret_arg(p.clone());
                        what.push("password");
                    }
                }
                if !what.is_empty() {
                    run(cx, cmd.arg(&spec.name))?;
                    changes.push(format!("updated user {}: {}", spec.name, what.join(", ")));
                    cx.accounts_changed();
                }
                let now = cx
                    .accounts()
                    .shadow_password(&spec.name)
                    .unwrap_or_default()
                    .to_string();
                let locked = if cx.dry_run {
                    cur_locked
                } else {
                    now.starts_with('!')
                };
                if spec.lock_passwd && !locked {
                    run(cx, shadow_cmd(cx, "usermod").arg("--lock").arg(&spec.name))?;
                    changes.push(format!("locked password of {}", spec.name));
                    cx.accounts_changed();
                }
            }
        }
        changes.extend(sudo_rules(cx, spec)?);
        if !spec.ssh_authorized_keys.is_empty() {
            changes.extend(add_keys(cx, &spec.name, &spec.ssh_authorized_keys)?);
        }
    }
    Ok(changes)
}

fn create_user(cx: &StepCx, spec: &UserSpec, password: Option<&str>) -> Result<(), StepError> {
    // Same options, in the same (sorted-by-key) order, as cloud-init's add_user.
    let mut cmd = shadow_cmd(cx, "useradd").arg(&spec.name);
    if let Some(e) = &spec.expiredate {
        cmd = cmd.arg("--expiredate").arg(e);
    }
    if let Some(g) = &spec.gecos {
        cmd = cmd.arg("--comment").arg(g);
    }
    if !spec.groups.is_empty() {
        cmd = cmd.arg("--groups").arg(spec.groups.join(","));
    }
    if let Some(h) = &spec.homedir {
        cmd = cmd.arg("--home").arg(h.as_str());
    }
    if let Some(i) = &spec.inactive {
        cmd = cmd.arg("--inactive").arg(i);
    }
    if spec.no_log_init {
        cmd = cmd.arg("--no-log-init");
    }
    if spec.no_user_group {
        cmd = cmd.arg("--no-user-group");
    }
    if let Some(p) = password {
        cmd = cmd.arg("--password").secret_arg(p);
    }
    if let Some(pg) = &spec.primary_group {
        cmd = cmd.arg("--gid").arg(pg);
    }
    if let Some(s) = &spec.shell {
        cmd = cmd.arg("--shell").arg(s);
    }
    if spec.system {
        cmd = cmd.arg("--system");
    }
    if let Some(uid) = spec.uid {
        cmd = cmd.arg("--uid").arg(uid.to_string());
    }
    // yip gives new users /bin/sh-less defaults from useradd; cloud-init creates the home
    // (copying /etc/skel) unless no_create_home or system.
    let create_home = !(spec.no_create_home || spec.system);
    cmd = cmd.arg(if create_home { "-m" } else { "-M" });
    if spec.semantics == UserSemantics::Yip && spec.shell.is_none() {
        // yip's default shell comes from useradd defaults too; nothing to add.
    }
    run(cx, cmd)
}

/// One sudoers drop-in per user (`/etc/sudoers.d/90-cairn-<user>`, mode 0440), checked
/// with `visudo -cf` when the target or the host has it.
fn sudo_rules(cx: &mut StepCx, spec: &UserSpec) -> Result<Changes, StepError> {
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
    let real = cx.path(&path);
    if fs::read_opt(&real)?.as_deref() == Some(content.as_bytes())
        && fs::meta(&real).is_some_and(|m| m.mode == 0o440)
    {
        return Ok(Vec::new());
    }
    if !cx.dry_run {
        validate_sudoers(cx, &content)?;
    }
    let mut changes = Vec::new();
    if let Some(c) = converge_file(cx, &path, content.as_bytes(), 0o440, Some((0, 0)))? {
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
    // Check a temp copy inside the target so the target's visudo can read it.
    let dir = cx.host.path_str("/tmp");
    let tmp = tempfile::Builder::new()
        .prefix(".cairn-sudoers-")
        .tempfile_in(if dir.is_dir() {
            dir
        } else {
            std::env::temp_dir()
        })
        .map_err(|e| StepError::msg(format!("creating a temp file for visudo: {e}")))?;
    std::fs::write(tmp.path(), content).map_err(fs::err("writing", tmp.path()))?;
    let out = if in_target {
        let inside = format!(
            "/{}",
            tmp.path()
                .strip_prefix(cx.host.root())
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        );
        cx.host
            .run_in_target(Cmd::new("visudo").args(["-c", "-q", "-f"]).arg(inside))?
    } else {
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
    let sudoers = cx.host.path_str("/etc/sudoers");
    let Some(text) = fs::read_opt(&sudoers)? else {
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
        fs::append(&sudoers, b"\n#includedir /etc/sudoers.d\n", 0o440)?;
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
    for spec in specs {
        changes.extend(add_keys(cx, &spec.user, &spec.keys)?);
    }
    Ok(changes)
}

/// Add missing keys to `~user/.ssh/authorized_keys` (dir 0700, file 0600, owned by the
/// user); keys already there are kept, in order.
fn add_keys(cx: &mut StepCx, user: &str, keys: &[String]) -> Result<Changes, StepError> {
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
    let real_dir = cx.path(&ssh_dir);
    match fs::meta(&real_dir) {
        None => {
            changes.push(format!("created {ssh_dir} (0700)"));
            if !cx.dry_run {
                fs::create_dir(&real_dir, 0o700)?;
                fs::set_owner(&real_dir, entry.uid, entry.gid)?;
            }
        }
        Some(m) if m.mode != 0o700 || m.uid != entry.uid || m.gid != entry.gid => {
            changes.push(format!("fixed mode/owner of {ssh_dir}"));
            if !cx.dry_run {
                fs::set_mode(&real_dir, 0o700)?;
                fs::set_owner(&real_dir, entry.uid, entry.gid)?;
            }
        }
        Some(_) => {}
    }
    let current = fs::read_opt(&cx.path(&file))?.unwrap_or_default();
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
    if converge_file(
        cx,
        &file,
        content.as_bytes(),
        0o600,
        Some((entry.uid, entry.gid)),
    )?
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
