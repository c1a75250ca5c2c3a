//! Packages through the target's own package manager: apt, dnf, zypper or apk, chosen
//! from os-release. Only what differs is done: installed packages are read from the
//! package database, lists are refreshed when stale, upgrades only when some are pending.
//! Every call is non-interactive and waits (bounded) for a package-manager lock.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use super::{Changes, StepCx, StepError};
use crate::host::{Cmd, Host, OsRelease, RunError};
use cairn_userdata::model::{PackageRef, PackageSpec};

/// Touched (inside the target) after every successful refresh of the package lists.
pub const REFRESH_STAMP: &str = "/var/lib/cairn/packages-refreshed";
/// Package lists younger than this are not refreshed again.
pub const REFRESH_MAX_AGE: Duration = Duration::from_secs(3600);
/// How long to wait for another package manager's lock before failing.
pub const LOCK_WAIT: Duration = Duration::from_secs(300);
/// Longest a single package-manager run may take.
pub const PM_TIMEOUT: Duration = Duration::from_secs(3600);

/// Installed packages: name → version.
pub type Versions = HashMap<String, String>;

/// A package manager.
pub trait PackageBackend: Send + Sync {
    fn name(&self) -> &'static str;
    /// Installed packages: name → version.
    fn installed(&self, host: &Host) -> Result<Versions, StepError>;
    /// When the package lists were last refreshed, if known.
    fn lists_refreshed(&self, host: &Host) -> Option<SystemTime>;
    fn refresh(&self) -> Cmd;
    /// Does an upgrade have anything to do?
    fn upgrades_pending(&self, host: &Host) -> Result<bool, StepError>;
    fn upgrade(&self) -> Cmd;
    fn install(&self, pkgs: &[PackageRef]) -> Cmd;
    fn remove(&self, pkgs: &[String]) -> Cmd;
    /// The installed version of one package, asked after an install to check a pin
    /// (`None`: not installed). By default read from [`PackageBackend::installed`].
    fn installed_version(&self, host: &Host, name: &str) -> Result<Option<String>, StepError> {
        Ok(self.installed(host)?.remove(name))
    }
    /// Does this failure mean "another process holds the lock"? Read from the package
    /// manager's stderr: its exit status does not tell a held lock from any other failure
    /// (apt and dnf exit 1 or 100 for both), and this only decides whether to wait and try
    /// again — a wrong answer costs a retry or a clear error, never a wrong change.
    fn is_lock_error(&self, stderr: &str) -> bool;
}

pub fn backend_for(os: &OsRelease) -> Option<Box<dyn PackageBackend>> {
    for id in os.families() {
        match id {
            "debian" | "ubuntu" => return Some(Box::new(Apt)),
            "rhel" | "fedora" | "centos" | "rocky" | "almalinux" | "amzn" | "ol" => {
                return Some(Box::new(Dnf))
            }
            "suse" | "opensuse" | "sles" | "opensuse-leap" | "opensuse-tumbleweed" => {
                return Some(Box::new(Zypper))
            }
            "alpine" => return Some(Box::new(Apk)),
            _ => {}
        }
    }
    None
}

fn wants(installed: &HashMap<String, String>, p: &PackageRef) -> bool {
    match (installed.get(&p.name), &p.version) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(have), Some(want)) => !version_matches(have, want),
    }
}

/// A version with a trailing `*` matches by prefix (apt's `pkg=1.2*`).
fn version_matches(have: &str, want: &str) -> bool {
    match want.strip_suffix('*') {
        Some(prefix) => have.starts_with(prefix),
        None => have == want,
    }
}

pub fn apply(cx: &mut StepCx, spec: &PackageSpec) -> Result<Changes, StepError> {
    let os = cx.host.os().clone();
    let backend = backend_for(&os).ok_or_else(|| {
        StepError::msg(format!(
            "no known package manager for OS `{}` (supported: apt, dnf, zypper, apk)",
            os.id
        ))
    })?;
    let installed = match backend.installed(cx.host) {
        Ok(installed) => installed,
        // Reading the rpm database takes a command, which a dry run does not run: every
        // package is then listed as one the step would install if it is missing.
        Err(StepError::Run(RunError::DryRun { .. })) if cx.dry_run => Versions::new(),
        Err(e) => return Err(e),
    };
    let to_install: Vec<PackageRef> = spec
        .install
        .iter()
        .filter(|p| wants(&installed, p))
        .cloned()
        .collect();
    let to_remove: Vec<String> = spec
        .remove
        .iter()
        .filter(|p| installed.contains_key(*p))
        .cloned()
        .collect();
    // A refresh that finds nothing new leaves the package manager's files untouched (apt
    // keeps their old mtimes), so Cairn also records when it last refreshed.
    let refreshed = backend
        .lists_refreshed(cx.host)
        .max(cx.host.modified(REFRESH_STAMP));
    let stale = refreshed
        .and_then(|t| t.elapsed().ok())
        .is_none_or(|age| age > REFRESH_MAX_AGE);
    let mut changes = Vec::new();
    // Refresh when asked and stale, or when installing onto stale lists.
    if stale && (spec.refresh || spec.upgrade || !to_install.is_empty()) {
        run_pm(cx, backend.as_ref(), backend.refresh())?;
        if !cx.dry_run {
            cx.host.write_atomic(REFRESH_STAMP, b"", 0o644, None)?;
        }
        changes.push(format!("refreshed {} package lists", backend.name()));
    }
    if spec.upgrade {
        if cx.dry_run {
            // Checking would touch apt's caches; a dry run must leave the root untouched.
            changes.push("upgrade installed packages, if any are pending".into());
        } else if backend.upgrades_pending(cx.host)? {
            run_pm(cx, backend.as_ref(), backend.upgrade())?;
            changes.push("upgraded installed packages".into());
        }
    }
    if !to_install.is_empty() {
        run_pm(cx, backend.as_ref(), backend.install(&to_install))?;
        if !cx.dry_run {
            verify_pins(cx.host, backend.as_ref(), &to_install)?;
        }
        let names: Vec<String> = to_install.iter().map(ToString::to_string).collect();
        changes.push(format!("installed {}", names.join(" ")));
    }
    if !to_remove.is_empty() {
        run_pm(cx, backend.as_ref(), backend.remove(&to_remove))?;
        changes.push(format!("removed {}", to_remove.join(" ")));
    }
    Ok(changes)
}

/// After an install: every pinned package must now be installed at its pinned version
/// (a package manager can exit 0 and leave another version in place), else the step fails
/// naming the package, the version wanted and the one installed.
fn verify_pins(
    host: &Host,
    backend: &dyn PackageBackend,
    installed: &[PackageRef],
) -> Result<(), StepError> {
    let mut wrong = Vec::new();
    for p in installed {
        let Some(want) = &p.version else { continue };
        match backend.installed_version(host, &p.name)? {
            Some(have) if version_matches(&have, want) => {}
            Some(have) => wrong.push(format!(
                "package `{}`: wanted version {want}, installed {have}",
                p.name
            )),
            None => wrong.push(format!(
                "package `{}`: wanted version {want}, not installed",
                p.name
            )),
        }
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(StepError::msg(format!(
            "{} did not install the pinned version: {}",
            backend.name(),
            wrong.join("; ")
        )))
    }
}

/// Run a package-manager command in the target, retrying while another process holds the
/// package-manager lock (up to [`LOCK_WAIT`]).
fn run_pm(cx: &StepCx, backend: &dyn PackageBackend, cmd: Cmd) -> Result<(), StepError> {
    if cx.dry_run {
        return Ok(());
    }
    let started = Instant::now();
    let mut delay = Duration::from_secs(1);
    loop {
        match cx.host.check_in_target(cmd.clone().timeout(PM_TIMEOUT)) {
            Ok(_) => return Ok(()),
            Err(RunError::Exit { stderr_tail, .. })
                if backend.is_lock_error(&stderr_tail) && started.elapsed() < LOCK_WAIT =>
            {
                tracing::info!("waiting for the {} lock: {stderr_tail}", backend.name());
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(15));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// A package database of the target, as text (missing is an error: the backend was chosen
/// because the target has it).
fn read_db(host: &Host, path: &str) -> Result<String, StepError> {
    let bytes = host
        .read_opt(path)?
        .ok_or_else(|| crate::host::fs::FsError::Io {
            action: "reading",
            path: host.shown(path),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        })?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The latest modification time of the entries of `dir` in the target whose names `keep`.
fn newest_in(host: &Host, dir: &str, keep: impl Fn(&str) -> bool) -> Option<SystemTime> {
    host.read_dir(dir)
        .ok()??
        .iter()
        .map(|n| n.to_string_lossy().into_owned())
        .filter(|n| keep(n))
        .filter_map(|n| host.modified(&format!("{dir}/{n}")))
        .max()
}

struct Apt;

impl Apt {
    fn base(verb: &str) -> Cmd {
        Cmd::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .args([
                "-o",
                &format!("DPkg::Lock::Timeout={}", LOCK_WAIT.as_secs()),
                "-o",
                "Dpkg::Options::=--force-confold",
                "-o",
                "Dpkg::Options::=--force-confdef",
                "--assume-yes",
                "--quiet",
            ])
            .arg(verb)
    }
}

impl PackageBackend for Apt {
    fn name(&self) -> &'static str {
        "apt"
    }

    fn installed(&self, host: &Host) -> Result<Versions, StepError> {
        let text = read_db(host, "/var/lib/dpkg/status")?;
        Ok(parse_dpkg_status(&text))
    }

    /// Asked of dpkg itself (`dpkg-query`) in the target, not of a file Cairn parses.
    fn installed_version(&self, host: &Host, name: &str) -> Result<Option<String>, StepError> {
        let out = host.run_in_target(
            Cmd::new("dpkg-query")
                .args([
                    "--show",
                    "--showformat=${db:Status-Status} ${Version}\\n",
                    "--",
                ])
                .arg(name),
        )?;
        if out.status != 0 {
            // dpkg-query exits 1 for a package it does not know.
            return Ok(None);
        }
        let text = out.stdout_str();
        Ok(text.lines().find_map(|l| {
            let (status, version) = l.split_once(' ')?;
            (status == "installed").then(|| version.trim().to_string())
        }))
    }

    fn lists_refreshed(&self, host: &Host) -> Option<SystemTime> {
        newest_in(host, "/var/lib/apt/lists", |n| {
            n.ends_with("Release") || n.ends_with("_Packages")
        })
    }

    fn refresh(&self) -> Cmd {
        Apt::base("update")
    }

    fn upgrades_pending(&self, host: &Host) -> Result<bool, StepError> {
        let out = host.check_in_target(
            Apt::base("dist-upgrade")
                .arg("--simulate")
                .arg("-o")
                .arg("Debug::NoLocking=1"),
        )?;
        Ok(out.stdout_str().lines().any(|l| l.starts_with("Inst ")))
    }

    fn upgrade(&self) -> Cmd {
        Apt::base("dist-upgrade")
    }

    fn install(&self, pkgs: &[PackageRef]) -> Cmd {
        Apt::base("install")
            .arg("--")
            .args(pkgs.iter().map(ToString::to_string))
    }

    fn remove(&self, pkgs: &[String]) -> Cmd {
        Apt::base("remove").arg("--").args(pkgs.iter().cloned())
    }

    fn is_lock_error(&self, stderr: &str) -> bool {
        stderr.contains("Could not get lock") || stderr.contains("Unable to acquire the dpkg")
    }
}

/// Installed packages from dpkg's status file.
pub fn parse_dpkg_status(text: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    for para in text.split("\n\n") {
        let mut name = None;
        let mut version = None;
        let mut ok = false;
        for line in para.lines() {
            if let Some(v) = line.strip_prefix("Package: ") {
                name = Some(v.trim().to_string());
            } else if let Some(v) = line.strip_prefix("Version: ") {
                version = Some(v.trim().to_string());
            } else if let Some(v) = line.strip_prefix("Status: ") {
                ok = v.trim().ends_with(" installed");
            }
        }
        if let (Some(n), true) = (name, ok) {
            out.insert(n, version.unwrap_or_default());
        }
    }
    out
}

fn rpm_installed(host: &Host) -> Result<Versions, StepError> {
    let out = host.check_in_target(Cmd::new("rpm").args([
        "-qa",
        "--queryformat",
        "%{NAME} %{VERSION}-%{RELEASE}\\n",
    ]))?;
    Ok(out
        .stdout_str()
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect())
}

struct Dnf;

impl PackageBackend for Dnf {
    fn name(&self) -> &'static str {
        "dnf"
    }
    fn installed(&self, host: &Host) -> Result<Versions, StepError> {
        rpm_installed(host)
    }
    fn lists_refreshed(&self, host: &Host) -> Option<SystemTime> {
        host.modified("/var/cache/dnf/last_makecache")
    }
    fn refresh(&self) -> Cmd {
        Cmd::new("dnf").args(["--assumeyes", "makecache"])
    }
    fn upgrades_pending(&self, host: &Host) -> Result<bool, StepError> {
        // `dnf check-update` exits 100 when updates are available.
        let out = host.run_in_target(Cmd::new("dnf").args(["--quiet", "check-update"]))?;
        Ok(out.status == 100)
    }
    fn upgrade(&self) -> Cmd {
        Cmd::new("dnf").args(["--assumeyes", "upgrade"])
    }
    fn install(&self, pkgs: &[PackageRef]) -> Cmd {
        Cmd::new("dnf")
            .args(["--assumeyes", "install", "--"])
            .args(pkgs.iter().map(|p| match &p.version {
                Some(v) => format!("{}-{v}", p.name),
                None => p.name.clone(),
            }))
    }
    fn remove(&self, pkgs: &[String]) -> Cmd {
        Cmd::new("dnf")
            .args(["--assumeyes", "remove", "--"])
            .args(pkgs.iter().cloned())
    }
    fn is_lock_error(&self, stderr: &str) -> bool {
        stderr.contains("Waiting for process") || stderr.contains("lock")
    }
}

struct Zypper;

impl PackageBackend for Zypper {
    fn name(&self) -> &'static str {
        "zypper"
    }
    fn installed(&self, host: &Host) -> Result<Versions, StepError> {
        rpm_installed(host)
    }
    fn lists_refreshed(&self, host: &Host) -> Option<SystemTime> {
        host.modified("/var/cache/zypp/raw")
    }
    fn refresh(&self) -> Cmd {
        zypper().arg("refresh")
    }
    fn upgrades_pending(&self, host: &Host) -> Result<bool, StepError> {
        let out = host.check_in_target(zypper().args(["list-updates"]))?;
        Ok(out.stdout_str().lines().any(|l| l.starts_with("v ")))
    }
    fn upgrade(&self) -> Cmd {
        zypper().arg("update")
    }
    fn install(&self, pkgs: &[PackageRef]) -> Cmd {
        zypper()
            .args(["install", "--"])
            .args(pkgs.iter().map(ToString::to_string))
    }
    fn remove(&self, pkgs: &[String]) -> Cmd {
        zypper().args(["remove", "--"]).args(pkgs.iter().cloned())
    }
    fn is_lock_error(&self, stderr: &str) -> bool {
        stderr.contains("System management is locked")
    }
}

fn zypper() -> Cmd {
    Cmd::new("zypper")
        .env("ZYPP_LOCK_TIMEOUT", LOCK_WAIT.as_secs().to_string())
        .arg("--non-interactive")
}

struct Apk;

impl PackageBackend for Apk {
    fn name(&self) -> &'static str {
        "apk"
    }
    fn installed(&self, host: &Host) -> Result<Versions, StepError> {
        let text = read_db(host, "/lib/apk/db/installed")?;
        let mut out = HashMap::new();
        for para in text.split("\n\n") {
            let mut name = None;
            let mut version = String::new();
            for line in para.lines() {
                if let Some(n) = line.strip_prefix("P:") {
                    name = Some(n.to_string());
                } else if let Some(v) = line.strip_prefix("V:") {
                    version = v.to_string();
                }
            }
            if let Some(n) = name {
                out.insert(n, version);
            }
        }
        Ok(out)
    }
    fn lists_refreshed(&self, host: &Host) -> Option<SystemTime> {
        newest_in(host, "/var/cache/apk", |_| true)
    }
    fn refresh(&self) -> Cmd {
        apk().arg("update")
    }
    fn upgrades_pending(&self, host: &Host) -> Result<bool, StepError> {
        let out = host.check_in_target(apk().args(["upgrade", "--simulate"]))?;
        Ok(out.stdout_str().lines().any(|l| l.contains("Upgrading")))
    }
    fn upgrade(&self) -> Cmd {
        apk().arg("upgrade")
    }
    fn install(&self, pkgs: &[PackageRef]) -> Cmd {
        apk()
            .args(["add", "--"])
            .args(pkgs.iter().map(ToString::to_string))
    }
    fn remove(&self, pkgs: &[String]) -> Cmd {
        apk().args(["del", "--"]).args(pkgs.iter().cloned())
    }
    fn is_lock_error(&self, stderr: &str) -> bool {
        stderr.contains("Unable to lock database")
    }
}

fn apk() -> Cmd {
    Cmd::new("apk")
        .args(["--no-progress", "--wait"])
        .arg(LOCK_WAIT.as_secs().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A runner double: `apt-get` succeeds without installing anything, `dpkg-query`
    /// reports what the test says is installed; every command is recorded.
    struct AptDouble {
        dpkg_query: &'static str,
        calls: std::sync::Mutex<Vec<String>>,
    }

    impl crate::host::Runner for AptDouble {
        fn run(&self, cmd: &Cmd) -> Result<crate::host::Output, RunError> {
            let argv = cmd.display();
            self.calls.lock().unwrap().push(argv.clone());
            let (status, stdout) = if argv.contains("dpkg-query") {
                if self.dpkg_query.is_empty() {
                    (1, "")
                } else {
                    (0, self.dpkg_query)
                }
            } else {
                (0, "")
            };
            Ok(crate::host::Output {
                status,
                stdout: stdout.as_bytes().to_vec(),
                stderr: Vec::new(),
            })
        }
    }

    fn pin_step(dpkg_query: &'static str) -> (Result<Changes, StepError>, Vec<String>) {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::create_dir_all(root.join("var/lib/dpkg")).unwrap();
        std::fs::write(root.join("etc/os-release"), "ID=debian\n").unwrap();
        std::fs::write(
            root.join("var/lib/dpkg/status"),
            "Package: hello\nStatus: install ok installed\nVersion: 2.10-3\n\n",
        )
        .unwrap();
        let runner = std::sync::Arc::new(AptDouble {
            dpkg_query,
            calls: Default::default(),
        });
        let host = Host::new(root, runner.clone());
        let mut state = crate::state::State::default();
        let mut cx = StepCx::new(
            &host,
            false,
            &mut state,
            "boot/pkgs".into(),
            cairn_userdata::model::Frequency::Always,
            String::new(),
        );
        let spec = PackageSpec {
            install: vec![PackageRef {
                name: "hello".into(),
                version: Some("2.12-1".into()),
            }],
            ..PackageSpec::default()
        };
        let result = apply(&mut cx, &spec);
        let calls = runner.calls.lock().unwrap().clone();
        (result, calls)
    }

    #[test]
    fn a_pin_apt_did_not_install_fails_naming_the_versions() {
        let (result, calls) = pin_step("installed 2.10-3\n");
        let err = result.expect_err("the pin was not installed").to_string();
        assert!(err.contains("`hello`"), "{err}");
        assert!(err.contains("wanted version 2.12-1"), "{err}");
        assert!(err.contains("installed 2.10-3"), "{err}");
        assert!(
            calls.iter().any(|c| c.contains("dpkg-query")),
            "the version is asked of dpkg: {calls:?}"
        );
        let (result, _) = pin_step("");
        let err = result.expect_err("not installed at all").to_string();
        assert!(
            err.contains("wanted version 2.12-1, not installed"),
            "{err}"
        );
    }

    #[test]
    fn a_pin_apt_installed_passes() {
        let (result, _) = pin_step("installed 2.12-1\n");
        let changes = result.unwrap();
        assert!(
            changes.iter().any(|c| c == "installed hello=2.12-1"),
            "{changes:?}"
        );
    }

    #[test]
    fn dpkg_status_parsing() {
        let s = "Package: hello\nStatus: install ok installed\nVersion: 2.10-3\n\nPackage: gone\nStatus: deinstall ok config-files\nVersion: 1\n";
        let m = parse_dpkg_status(s);
        assert_eq!(m.get("hello").map(String::as_str), Some("2.10-3"));
        assert!(!m.contains_key("gone"));
    }

    #[test]
    fn wanted_versions() {
        let mut inst = HashMap::new();
        inst.insert("a".to_string(), "1.2.3-1".to_string());
        let p = |n: &str, v: Option<&str>| PackageRef {
            name: n.into(),
            version: v.map(Into::into),
        };
        assert!(!wants(&inst, &p("a", None)));
        assert!(!wants(&inst, &p("a", Some("1.2*"))));
        assert!(wants(&inst, &p("a", Some("2.0"))));
        assert!(wants(&inst, &p("b", None)));
    }

    #[test]
    fn backends_by_os_family() {
        let os = |t: &str| OsRelease::parse(t);
        assert_eq!(backend_for(&os("ID=debian")).unwrap().name(), "apt");
        assert_eq!(
            backend_for(&os("ID=rocky\nID_LIKE=\"rhel centos fedora\""))
                .unwrap()
                .name(),
            "dnf"
        );
        assert_eq!(
            backend_for(&os("ID=opensuse-leap\nID_LIKE=\"suse opensuse\""))
                .unwrap()
                .name(),
            "zypper"
        );
        assert_eq!(backend_for(&os("ID=alpine")).unwrap().name(), "apk");
        assert!(backend_for(&os("ID=plan9")).is_none());
        let install = Apt.install(&[PackageRef {
            name: "hello".into(),
            version: None,
        }]);
        assert_eq!(install.args.last().map(String::as_str), Some("hello"));
        assert!(install.args.contains(&"--".to_string()));
    }
}
