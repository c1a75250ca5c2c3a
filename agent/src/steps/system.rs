//! System settings: hostname, DNS, environment, sysctl, kernel modules, timesyncd,
//! time zone and systemd units. Drop-in files are written atomically; live changes
//! (sysctl values, modprobe, daemon-reload, start) only when the root is `/`.

use super::{converge_file, Changes, StepCx, StepError};
use crate::host::Cmd;
use cairn_userdata::model::{
    AbsPath, Action, DnsSpec, EnvSpec, HostnameSpec, KernelModule, KeyValue, Located, SystemctlSpec,
};

fn abs(p: &str) -> Result<AbsPath, StepError> {
    AbsPath::parse(p).map_err(StepError::msg)
}

/// A file-name-safe form of a step or stage name.
pub fn slug(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    while out.contains("--") {
        out = out.replace("--", "-");
    }
    out.trim_matches('-').to_string()
}

pub fn hostname(cx: &mut StepCx, spec: &HostnameSpec) -> Result<Changes, StepError> {
    let mut changes = Vec::new();
    let body = format!("{}\n", spec.hostname);
    if let Some(c) = converge_file(
        cx,
        &abs("/etc/hostname")?,
        body.as_bytes(),
        0o644,
        Some((0, 0)),
    )? {
        changes.push(c);
    }
    // Keep the Debian-style 127.0.1.1 line (if there is one) in step with the name, so
    // sudo and friends can resolve it.
    let hosts = abs("/etc/hosts")?;
    if let Some(text) = cx.host.read_opt(hosts.as_str())? {
        let text = String::from_utf8_lossy(&text).into_owned();
        let short = spec.hostname.split('.').next().unwrap_or(&spec.hostname);
        let names = match &spec.fqdn {
            Some(f) if f != short => format!("{f} {short}"),
            _ => short.to_string(),
        };
        let mut replaced = false;
        let new: Vec<String> = text
            .lines()
            .map(|l| {
                if l.split_whitespace().next() == Some("127.0.1.1") && !replaced {
                    replaced = true;
                    format!("127.0.1.1\t{names}")
                } else {
                    l.to_string()
                }
            })
            .collect();
        if replaced {
            let mut new = new.join("\n");
            new.push('\n');
            let mode = cx.host.meta(hosts.as_str())?.map_or(0o644, |m| m.mode);
            if let Some(c) = converge_file(cx, &hosts, new.as_bytes(), mode, Some((0, 0)))? {
                changes.push(c);
            }
        }
    }
    if cx.host.is_live() {
        let current = nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default();
        if current != spec.hostname {
            changes.push(format!("set the running hostname to {}", spec.hostname));
            if !cx.dry_run {
                nix::unistd::sethostname(&spec.hostname)
                    .map_err(|e| StepError::msg(format!("setting the hostname: {e}")))?;
            }
        }
    }
    Ok(changes)
}

/// Where systemd-resolved keeps the resolv.conf files it owns; `/etc/resolv.conf` pointing
/// in here means resolved manages DNS and would overwrite anything written to its files.
const RESOLVED_RUNTIME: &str = "/run/systemd/resolve/";

/// The drop-in that carries `dns:` settings to systemd-resolved.
const RESOLVED_DROP_IN: &str = "/etc/systemd/resolved.conf.d/10-cairn-dns.conf";

pub fn dns(cx: &mut StepCx, spec: &DnsSpec) -> Result<Changes, StepError> {
    if spec.path.as_str() == "/etc/resolv.conf" {
        let link = cx.host.read_link("/etc/resolv.conf")?;
        if let Some(target) = link {
            let target = target.to_string_lossy().into_owned();
            if target.contains(RESOLVED_RUNTIME) {
                return dns_via_resolved(cx, spec);
            }
        }
    }
    let mut body = String::from("# Written by Cairn\n");
    for ns in &spec.nameservers {
        body.push_str(&format!("nameserver {ns}\n"));
    }
    if !spec.search.is_empty() {
        body.push_str(&format!("search {}\n", spec.search.join(" ")));
    }
    if !spec.options.is_empty() {
        body.push_str(&format!("options {}\n", spec.options.join(" ")));
    }
    Ok(
        converge_file(cx, &spec.path, body.as_bytes(), 0o644, Some((0, 0)))?
            .into_iter()
            .collect(),
    )
}

/// `/etc/resolv.conf` is systemd-resolved's: writing the link's target would last until
/// resolved rewrites it. The servers and search domains go to a resolved.conf drop-in
/// instead, and a running resolved reloads it.
fn dns_via_resolved(cx: &mut StepCx, spec: &DnsSpec) -> Result<Changes, StepError> {
    if !spec.options.is_empty() {
        return Err(StepError::msg(format!(
            "/etc/resolv.conf is managed by systemd-resolved, which has no equivalent of \
             resolv.conf `options` ({}); remove them, or give `dns.path` to write a resolv.conf \
             of your own",
            spec.options.join(" ")
        )));
    }
    let mut body = String::from("# Written by Cairn from user-data (dns:)\n[Resolve]\n");
    if !spec.nameservers.is_empty() {
        body.push_str(&format!("DNS={}\n", spec.nameservers.join(" ")));
    }
    if !spec.search.is_empty() {
        body.push_str(&format!("Domains={}\n", spec.search.join(" ")));
    }
    let mut changes: Changes = converge_file(
        cx,
        &abs(RESOLVED_DROP_IN)?,
        body.as_bytes(),
        0o644,
        Some((0, 0)),
    )?
    .into_iter()
    .map(|c| format!("{c} (/etc/resolv.conf belongs to systemd-resolved)"))
    .collect();
    restart_if_running(cx, &mut changes, "systemd-resolved");
    Ok(changes)
}

/// After a change to a daemon's drop-in on a live system: `systemctl try-restart` (only a
/// running daemon is restarted; its failure is not the step's).
fn restart_if_running(cx: &StepCx, changes: &mut Changes, daemon: &str) {
    if !changes.is_empty() && cx.host.is_live() && !cx.dry_run {
        let unit = format!("{daemon}.service");
        let _ = cx
            .host
            .runner()
            .run(&Cmd::new("systemctl").args(["try-restart", unit.as_str()]));
        changes.push(format!("restarted {daemon} (if running)"));
    }
}

fn quote_env(v: &str) -> String {
    if v.chars()
        .any(|c| c.is_whitespace() || matches!(c, '"' | '\'' | '$' | '`' | '\\' | '#'))
    {
        format!(
            "\"{}\"",
            v.replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('$', "\\$")
                .replace('`', "\\`")
        )
    } else {
        v.to_string()
    }
}

/// Merge variables into an environment file, keeping lines for other variables.
pub fn environment(cx: &mut StepCx, spec: &EnvSpec) -> Result<Changes, StepError> {
    let current = cx.host.read_opt(spec.file.as_str())?.unwrap_or_default();
    let mut lines: Vec<String> = String::from_utf8_lossy(&current)
        .lines()
        .map(str::to_string)
        .collect();
    for kv in &spec.vars {
        let line = format!("{}={}", kv.key, quote_env(&kv.value));
        let pos = lines.iter().position(|l| {
            let l = l
                .trim_start()
                .strip_prefix("export ")
                .unwrap_or(l.trim_start());
            l.split_once('=').is_some_and(|(k, _)| k.trim() == kv.key)
        });
        match pos {
            Some(i) => lines[i] = line,
            None => lines.push(line),
        }
    }
    let mut body = lines.join("\n");
    body.push('\n');
    Ok(
        converge_file(cx, &spec.file, body.as_bytes(), 0o644, Some((0, 0)))?
            .into_iter()
            .collect(),
    )
}

fn sysctl_drop_in(key: &str) -> String {
    format!("/etc/sysctl.d/90-cairn-{}.conf", slug(key))
}

fn modules_drop_in(key: &str) -> String {
    format!("/etc/modules-load.d/cairn-{}.conf", slug(key))
}

/// The drop-in a step's action owns, named after the step's drop-in key (`stage/name`, see
/// [`StepCx::drop_in_key`]): what the engine removes once no step of the stage produces it
/// any more (a step renamed or deleted must not leave its sysctls or modules behind for
/// every later boot).
pub fn owned_drop_in(key: &str, action: &Action) -> Option<String> {
    match action {
        Action::Sysctl(kvs) if !kvs.is_empty() => Some(sysctl_drop_in(key)),
        Action::Modules(mods) if !mods.is_empty() => Some(modules_drop_in(key)),
        _ => None,
    }
}

/// Remove the drop-ins a stage recorded before that none of its steps owns now. Only files
/// still marked as written by Cairn are deleted. Returns the change lines.
pub fn sweep_drop_ins(
    host: &crate::host::Host,
    dry_run: bool,
    before: &std::collections::BTreeSet<String>,
    now: &std::collections::BTreeSet<String>,
) -> Result<Changes, StepError> {
    let mut changes = Vec::new();
    for stale in before.difference(now) {
        let real = abs(stale)?;
        let ours = host
            .read_opt(real.as_str())?
            .is_some_and(|b| b.starts_with(b"# Written by Cairn"));
        if ours {
            changes.push(format!("removed {stale} (no step writes it any more)"));
            if !dry_run {
                host.remove_file(real.as_str())?;
            }
        }
    }
    Ok(changes)
}

pub fn sysctl(cx: &mut StepCx, kvs: &[KeyValue]) -> Result<Changes, StepError> {
    if kvs.is_empty() {
        return Ok(Vec::new());
    }
    let name = sysctl_drop_in(&cx.drop_in_key);
    let mut body = String::from("# Written by Cairn from user-data\n");
    for kv in kvs {
        body.push_str(&format!("{} = {}\n", kv.key, kv.value));
    }
    let mut changes: Changes =
        converge_file(cx, &abs(&name)?, body.as_bytes(), 0o644, Some((0, 0)))?
            .into_iter()
            .collect();
    if cx.host.is_live() {
        for kv in kvs {
            let proc = format!("/proc/sys/{}", kv.key.replace('.', "/"));
            let current = std::fs::read_to_string(&proc).unwrap_or_default();
            let norm = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
            if norm(&current) != norm(&kv.value) {
                changes.push(format!("set {} = {} (live)", kv.key, kv.value));
                if !cx.dry_run {
                    std::fs::write(&proc, &kv.value).map_err(|e| {
                        StepError::msg(format!(
                            "setting sysctl {} (line {}): {e}",
                            kv.key, kv.location.pos.line
                        ))
                    })?;
                }
            }
        }
    }
    Ok(changes)
}

pub fn modules(cx: &mut StepCx, mods: &[KernelModule]) -> Result<Changes, StepError> {
    if mods.is_empty() {
        return Ok(Vec::new());
    }
    let mut changes = Vec::new();
    let name = modules_drop_in(&cx.drop_in_key);
    let mut body = String::from("# Written by Cairn from user-data\n");
    body.extend(mods.iter().map(|m| format!("{}\n", m.name)));
    changes.extend(converge_file(
        cx,
        &abs(&name)?,
        body.as_bytes(),
        0o644,
        Some((0, 0)),
    )?);
    for m in mods.iter().filter(|m| !m.params.is_empty()) {
        let path = format!("/etc/modprobe.d/cairn-{}.conf", m.name);
        let body = format!("options {} {}\n", m.name, m.params.join(" "));
        changes.extend(converge_file(
            cx,
            &abs(&path)?,
            body.as_bytes(),
            0o644,
            Some((0, 0)),
        )?);
    }
    if cx.host.is_live() {
        let loaded = std::fs::read_to_string("/proc/modules").unwrap_or_default();
        for m in mods {
            let kname = m.name.replace('-', "_");
            if !loaded
                .lines()
                .any(|l| l.split_whitespace().next() == Some(kname.as_str()))
            {
                changes.push(format!("loaded kernel module {}", m.name));
                if !cx.dry_run {
                    cx.host.runner().check(
                        &Cmd::new("modprobe")
                            .arg(&m.name)
                            .args(m.params.iter().cloned()),
                    )?;
                }
            }
        }
    }
    Ok(changes)
}

pub fn timesyncd(cx: &mut StepCx, kvs: &[KeyValue]) -> Result<Changes, StepError> {
    let mut body = String::from("# Written by Cairn from user-data\n[Time]\n");
    for kv in kvs {
        body.push_str(&format!("{}={}\n", kv.key, kv.value));
    }
    let path = abs("/etc/systemd/timesyncd.conf.d/10-cairn.conf")?;
    let mut changes: Changes = converge_file(cx, &path, body.as_bytes(), 0o644, Some((0, 0)))?
        .into_iter()
        .collect();
    restart_if_running(cx, &mut changes, "systemd-timesyncd");
    Ok(changes)
}

pub fn timezone(cx: &mut StepCx, tz: &Located<String>) -> Result<Changes, StepError> {
    let zone = format!("/usr/share/zoneinfo/{}", tz.value);
    if !cx.host.is_file(&zone) {
        return Err(StepError::msg(format!(
            "time zone `{}` is not in the target's /usr/share/zoneinfo (is tzdata installed?)",
            tz.value
        )));
    }
    let mut changes = Vec::new();
    // Debian-family systems also keep the name in /etc/timezone.
    if cx.host.os().is_like("debian") || cx.host.exists("/etc/timezone") {
        changes.extend(converge_file(
            cx,
            &abs("/etc/timezone")?,
            format!("{}\n", tz.value).as_bytes(),
            0o644,
            Some((0, 0)),
        )?);
    }
    let current = cx.host.read_link("/etc/localtime")?;
    let target = std::path::PathBuf::from(&zone);
    if current.as_deref() != Some(target.as_path()) {
        changes.push(format!("linked /etc/localtime to {zone}"));
        if !cx.dry_run {
            cx.host.replace_symlink("/etc/localtime", &target)?;
        }
    }
    Ok(changes)
}

fn unit_name(s: &str) -> String {
    if s.contains('.') {
        s.to_string()
    } else {
        format!("{s}.service")
    }
}

fn systemctl_cmd(cx: &StepCx) -> Cmd {
    let cmd = Cmd::new("systemctl");
    if cx.host.is_live() {
        cmd
    } else {
        cmd.arg(format!("--root={}", cx.host.root().display()))
    }
}

fn unit_state(cx: &StepCx, unit: &str) -> Result<String, StepError> {
    let out = cx
        .host
        .runner()
        .run(&systemctl_cmd(cx).arg("is-enabled").arg(unit))?;
    let state = out.stdout_str().trim().to_string();
    if state.is_empty() && out.status != 0 {
        let err = crate::host::runner::tail(&out.stderr);
        // systemd before 254 reports a unit without a unit file as an error instead of
        // printing `not-found`; disabling it is then done and masking it still works.
        if err.contains("No such file or directory") {
            return Ok("not-found".into());
        }
        return Err(StepError::msg(format!("unit {unit}: {err}")));
    }
    Ok(state)
}

pub fn systemctl(cx: &mut StepCx, spec: &SystemctlSpec) -> Result<Changes, StepError> {
    let mut changes = Vec::new();
    let mut reload = false;
    for ov in &spec.overrides {
        let path = abs(&format!(
            "/etc/systemd/system/{}.d/{}",
            unit_name(&ov.service),
            ov.name
        ))?;
        if let Some(c) = converge_file(cx, &path, ov.content.as_bytes(), 0o644, Some((0, 0)))? {
            changes.push(c);
            reload = true;
        }
    }
    if reload && cx.host.is_live() && !cx.dry_run {
        cx.host
            .runner()
            .check(&Cmd::new("systemctl").arg("daemon-reload"))?;
        changes.push("reloaded systemd".into());
    }
    let verbs: [(&str, &Vec<String>, &[&str]); 3] = [
        (
            "enable",
            &spec.enable,
            &[
                "enabled",
                "enabled-runtime",
                "static",
                "alias",
                "indirect",
                "generated",
            ],
        ),
        (
            "disable",
            &spec.disable,
            &["disabled", "static", "masked", "not-found"],
        ),
        ("mask", &spec.mask, &["masked", "masked-runtime"]),
    ];
    for (verb, units, done_states) in verbs {
        for u in units {
            let unit = unit_name(u);
            let state = unit_state(cx, &unit)?;
            if done_states.contains(&state.as_str()) {
                continue;
            }
            let done = if verb == "mask" {
                "masked"
            } else {
                &format!("{verb}d")
            };
            changes.push(format!("{done} {unit}"));
            if !cx.dry_run {
                cx.host
                    .runner()
                    .check(&systemctl_cmd(cx).arg(verb).arg(&unit))?;
            }
        }
    }
    if cx.host.is_live() {
        for u in &spec.start {
            let unit = unit_name(u);
            let out = cx.host.runner().run(
                &Cmd::new("systemctl")
                    .args(["is-active", "--quiet"])
                    .arg(&unit),
            )?;
            if out.status != 0 {
                changes.push(format!("started {unit}"));
                if !cx.dry_run {
                    cx.host
                        .runner()
                        .check(&Cmd::new("systemctl").arg("start").arg(&unit))?;
                }
            }
        }
    }
    Ok(changes)
}
