//! System settings: hostname, DNS, environment, sysctl, kernel modules, timesyncd,
//! time zone and systemd units. Drop-in files are written atomically; live changes
//! (sysctl values, modprobe, daemon-reload, start) only when the root is `/`.

use super::{converge_file, Changes, StepCx, StepError};
use crate::host::Cmd;
use cairn_userdata::decode::values::valid_hostname;
use cairn_userdata::model::{
    AbsPath, Action, DnsSpec, EnvSpec, HostTemplate, HostnameSpec, HostsLine, KernelModule,
    KeyValue, Located, SystemctlSpec, TemplateValues,
};
use cairn_userdata::template::TemplateValue;

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
    let name = match &spec.template {
        None => spec.hostname.clone(),
        Some(t) => render_hostname(cx, t, &spec.hostname)?,
    };
    let body = format!("{name}\n");
    if let Some(c) = converge_file(
        cx,
        &abs("/etc/hostname")?,
        body.as_bytes(),
        0o644,
        Some((0, 0)),
    )? {
        changes.push(c);
    }
    let hosts = abs("/etc/hosts")?;
    let current = cx
        .host
        .read_opt(hosts.as_str())?
        .map(|t| String::from_utf8_lossy(&t).into_owned());
    let new = hosts_text(current.as_deref(), &name, spec.fqdn.as_deref(), spec.hosts);
    if current.as_deref() != Some(new.as_str()) {
        let mode = cx.host.meta(hosts.as_str())?.map_or(0o644, |m| m.mode);
        if let Some(c) = converge_file(cx, &hosts, new.as_bytes(), mode, Some((0, 0)))? {
            changes.push(c);
        }
    }
    if cx.host.is_live() {
        let current = nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default();
        if current != name {
            changes.push(format!("set the running hostname to {name}"));
            if !cx.dry_run {
                nix::unistd::sethostname(&name)
                    .map_err(|e| StepError::msg(format!("setting the hostname: {e}")))?;
            }
        }
    }
    Ok(changes)
}

/// The name a template gives on this target: the current name when the template could
/// have produced it (a random part is drawn once, not at every apply), else a new one.
fn render_hostname(cx: &StepCx, t: &HostTemplate, text: &str) -> Result<String, StepError> {
    let machine_id = machine_id(cx)?;
    if t.uses(TemplateValue::MachineId) && machine_id.is_empty() {
        return Err(StepError::msg(format!(
            "hostname `{text}` uses .MachineID, but the target has no machine id \
             (/etc/machine-id is missing, empty or `uninitialized`)"
        )));
    }
    let current = cx
        .host
        .read_opt("/etc/hostname")?
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    if !current.is_empty() && t.matches(&current, &machine_id) {
        return Ok(current);
    }
    let values = TemplateValues {
        machine_id,
        random: random_alnum(32)?,
        uuid: uuid_v4()?,
    };
    let name = t.render(&values);
    valid_hostname(&name)
        .map_err(|e| StepError::msg(format!("hostname `{text}` renders to `{name}`: {e}")))?;
    Ok(name)
}

/// The target's machine id (`/etc/machine-id`, else `/var/lib/dbus/machine-id`, as yip's
/// machineid library reads it); empty when there is none yet.
fn machine_id(cx: &StepCx) -> Result<String, StepError> {
    for path in ["/etc/machine-id", "/var/lib/dbus/machine-id"] {
        if let Some(b) = cx.host.read_opt(path)? {
            let id = String::from_utf8_lossy(&b).trim().to_string();
            if !id.is_empty() && id != "uninitialized" {
                return Ok(id);
            }
        }
    }
    Ok(String::new())
}

fn random_bytes(n: usize) -> Result<Vec<u8>, StepError> {
    let mut buf = vec![0u8; n];
    getrandom::getrandom(&mut buf)
        .map_err(|e| StepError::msg(format!("reading random bytes: {e}")))?;
    Ok(buf)
}

/// `.Random`: `n` characters from `[0-9a-z]` (yip's alphabet), without modulo bias.
fn random_alnum(n: usize) -> Result<String, StepError> {
    const ALPHABET: &[u8] = b"1234567890abcdefghijklmnopqrstuvwxyz";
    let mut out = String::with_capacity(n);
    while out.len() < n {
        for b in random_bytes(n)? {
            // 252 = 7 × 36: larger bytes would favour the first characters.
            if b < 252 && out.len() < n {
                out.push(char::from(ALPHABET[usize::from(b) % ALPHABET.len()]));
            }
        }
    }
    Ok(out)
}

/// `.UUID`: a random (version 4) UUID.
fn uuid_v4() -> Result<String, StepError> {
    let mut b = random_bytes(16)?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    ))
}

/// `/etc/hosts` with the host name in place, per dialect (`current` is the file, if any).
///
/// - [`HostsLine::Loopback`] (yip, Kairos): the `127.0.0.1` line becomes
///   `127.0.0.1 localhost [other localhost aliases] [FQDN] NAME`, added when missing; a
///   Debian `127.0.1.1` line, when the image has one, is kept in step too (it would name the
///   old host otherwise).
/// - [`HostsLine::Debian`] (cloud-init): the `127.0.1.1` line becomes `127.0.1.1 [FQDN] SHORT`,
///   added after the `127.0.0.1` line when missing.
///
/// Every other line is kept as it is.
pub fn hosts_text(
    current: Option<&str>,
    name: &str,
    fqdn: Option<&str>,
    style: HostsLine,
) -> String {
    let short = name.split('.').next().unwrap_or(name);
    let debian_names = match fqdn {
        Some(f) if f != short => format!("{f} {short}"),
        _ => short.to_string(),
    };
    let loopback_names = match fqdn {
        Some(f) if f != name => format!("{f} {name}"),
        _ => name.to_string(),
    };
    let text = current.unwrap_or("");
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let first = |lines: &[String], addr: &str| {
        lines
            .iter()
            .position(|l| l.split_whitespace().next() == Some(addr))
    };
    let debian_line = format!("127.0.1.1\t{debian_names}");
    match style {
        HostsLine::Loopback => {
            let line = |old: Option<&str>| {
                let mut aliases: Vec<&str> = old
                    .map(|l| {
                        l.split('#')
                            .next()
                            .unwrap_or_default()
                            .split_whitespace()
                            .skip(1)
                            .filter(|a| a.starts_with("localhost"))
                            .collect()
                    })
                    .unwrap_or_default();
                if !aliases.contains(&"localhost") {
                    aliases.insert(0, "localhost");
                }
                format!("127.0.0.1\t{} {loopback_names}", aliases.join(" "))
            };
            match first(&lines, "127.0.0.1") {
                Some(i) => lines[i] = line(Some(&lines[i])),
                None => lines.insert(0, line(None)),
            }
            if let Some(i) = first(&lines, "127.0.1.1") {
                lines[i] = debian_line;
            }
        }
        HostsLine::Debian => match first(&lines, "127.0.1.1") {
            Some(i) => lines[i] = debian_line,
            None => match first(&lines, "127.0.0.1") {
                Some(i) => lines.insert(i + 1, debian_line),
                None => {
                    lines.insert(0, "127.0.0.1\tlocalhost".to_string());
                    lines.insert(1, debian_line);
                }
            },
        },
    }
    let mut out = lines.join("\n");
    out.push('\n');
    out
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

/// In a dry run: does the unit look already enabled / disabled / masked, judging by its
/// links in /etc/systemd/system (enabled: linked from some `*.wants` or `*.requires`
/// directory; masked: linked to /dev/null)?
fn dry_run_unit_done(cx: &StepCx, verb: &str, unit: &str) -> bool {
    let dir = "/etc/systemd/system";
    let masked = cx
        .host
        .read_link(&format!("{dir}/{unit}"))
        .ok()
        .flatten()
        .is_some_and(|t| t == std::path::Path::new("/dev/null"));
    let wanted = cx
        .host
        .read_dir(dir)
        .ok()
        .flatten()
        .unwrap_or_default()
        .iter()
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".wants") || n.ends_with(".requires"))
        .any(|n| cx.host.exists(&format!("{dir}/{n}/{unit}")));
    match verb {
        "enable" => wanted,
        "disable" => !wanted,
        _ => masked,
    }
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
            if cx.dry_run {
                // systemctl is not run in a dry run: the state is read from the unit's
                // links under /etc/systemd/system instead.
                if !dry_run_unit_done(cx, verb, &unit) {
                    changes.push(format!("would {verb} {unit}"));
                }
                continue;
            }
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
            if cx.dry_run {
                changes.push(format!("would start {unit} unless it is running"));
                continue;
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_lines_per_dialect() {
        let debian = "127.0.0.1\tlocalhost\n127.0.1.1\told\n::1\tlocalhost\n";
        assert_eq!(
            hosts_text(Some(debian), "n1", None, HostsLine::Loopback),
            "127.0.0.1\tlocalhost n1\n127.0.1.1\tn1\n::1\tlocalhost\n"
        );
        assert_eq!(
            hosts_text(Some(debian), "n1", Some("n1.example"), HostsLine::Debian),
            "127.0.0.1\tlocalhost\n127.0.1.1\tn1.example n1\n::1\tlocalhost\n"
        );
        assert_eq!(
            hosts_text(None, "n1", None, HostsLine::Loopback),
            "127.0.0.1\tlocalhost n1\n"
        );
        assert_eq!(
            hosts_text(Some(""), "n1", None, HostsLine::Debian),
            "127.0.0.1\tlocalhost\n127.0.1.1\tn1\n"
        );
        // Applying twice gives the same text.
        let once = hosts_text(Some(debian), "n1", None, HostsLine::Loopback);
        assert_eq!(
            hosts_text(Some(&once), "n1", None, HostsLine::Loopback),
            once
        );
        // Aliases of localhost stay, a trailing comment goes with the old name.
        assert_eq!(
            hosts_text(
                Some("127.0.0.1 localhost localhost4 old # was here\n"),
                "n2",
                None,
                HostsLine::Loopback
            ),
            "127.0.0.1\tlocalhost localhost4 n2\n"
        );
    }

    #[test]
    fn random_values_have_the_documented_shapes() {
        let r = random_alnum(32).unwrap();
        assert_eq!(r.len(), 32);
        assert!(r
            .chars()
            .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase()));
        let u = uuid_v4().unwrap();
        let re = regex::Regex::new(
            "^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$",
        )
        .unwrap();
        assert!(re.is_match(&u), "{u}");
    }
}
