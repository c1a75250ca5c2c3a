//! The static binaries and the .deb/.rpm packages of packaging/: static, runnable on both
//! arches, right metadata; the .deb installs into a real Debian root where
//! `systemd-analyze verify` accepts every unit, enables the units, keeps state and conffile on
//! `dpkg -r` and leaves nothing on `dpkg -P`; the .rpm installs and erases with `rpm --root`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Instant;

use cairn_tests::{snapshot, DebianRoot};

/// The checkout this test was compiled from (not `cairn_tests::workspace()`: a library
/// compiled from another checkout sharing the target directory would point there).
fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

const UNITS: &[&str] = &[
    "cairn-agent.service",
    "cairn-stage-rootfs.service",
    "cairn-stage-initramfs.service",
    "cairn-stage-fs.service",
    "cairn-stage-boot.service",
    "cairn-stage-first-boot.service",
    "cairn-stage-network.service",
];

/// Where each unit is linked when enabled (its `WantedBy=`).
const WANTS: &[(&str, &str)] = &[
    ("cairn-agent.service", "multi-user.target.wants"),
    ("cairn-stage-rootfs.service", "sysinit.target.wants"),
    ("cairn-stage-initramfs.service", "sysinit.target.wants"),
    ("cairn-stage-fs.service", "sysinit.target.wants"),
    ("cairn-stage-boot.service", "multi-user.target.wants"),
    ("cairn-stage-first-boot.service", "multi-user.target.wants"),
    ("cairn-stage-network.service", "multi-user.target.wants"),
];

/// Run a command; panic with its output unless it exits 0. Returns stdout + stderr.
fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{text}",
        out.status
    );
    text
}

fn stdout(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The packages, built once per test binary by packaging/build-packages.sh (which runs
/// packaging/build-static.sh first: a no-op for cargo when the binaries are up to date).
/// `CAIRN_PACKAGING_NO_BUILD=1` packages the binaries already in target/dist as they are.
fn packages() -> &'static BTreeMap<String, PathBuf> {
    static PKGS: OnceLock<BTreeMap<String, PathBuf>> = OnceLock::new();
    PKGS.get_or_init(|| {
        let start = Instant::now();
        let mut cmd = Command::new(workspace().join("packaging/build-packages.sh"));
        if std::env::var_os("CAIRN_PACKAGING_NO_BUILD").is_some() {
            cmd.arg("--no-build");
        }
        let out = stdout(&mut cmd);
        eprintln!(
            "build-static.sh + build-packages.sh: {:.1} s",
            start.elapsed().as_secs_f64()
        );
        let map: BTreeMap<String, PathBuf> = out
            .lines()
            .filter(|l| l.ends_with(".deb") || l.ends_with(".rpm"))
            .map(|l| {
                let p = PathBuf::from(l.trim());
                (p.file_name().unwrap().to_string_lossy().into_owned(), p)
            })
            .collect();
        assert_eq!(
            map.len(),
            8,
            "expected 2 packages x 2 arches x 2 formats: {map:?}"
        );
        for (name, p) in &map {
            let size = std::fs::metadata(p).unwrap().len();
            eprintln!("{name}: {size} bytes");
        }
        map
    })
}

fn package(pkg: &str, arch: &str, ext: &str) -> PathBuf {
    packages()
        .iter()
        .find(|(name, _)| {
            name.starts_with(&format!("{pkg}{}", if ext == "deb" { "_" } else { "-" }))
                && name.ends_with(&format!("{arch}.{ext}"))
        })
        .map(|(_, p)| p.clone())
        .unwrap_or_else(|| panic!("no {pkg} {arch} .{ext} in {:?}", packages()))
}

fn version() -> String {
    let toml = std::fs::read_to_string(workspace().join("Cargo.toml")).unwrap();
    let section = toml.split("[workspace.package]").nth(1).unwrap();
    let line = section.lines().find(|l| l.starts_with("version")).unwrap();
    line.split('"').nth(1).unwrap().to_string()
}

#[test]
fn static_binaries_are_static_and_run_on_both_arches() {
    packages();
    // Where build-static.sh put them (it honours CAIRN_DIST and CARGO_TARGET_DIR).
    let dist = std::env::var_os("CAIRN_DIST")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("CARGO_TARGET_DIR").map(|t| PathBuf::from(t).join("dist")))
        .unwrap_or_else(|| workspace().join("target/dist"));
    let v = version();
    for (arch, file_arch) in [("x86_64", "x86-64"), ("aarch64", "ARM aarch64")] {
        for bin in ["cairn-agent", "cairn-installer"] {
            let path = dist.join(arch).join(bin);
            let desc = stdout(Command::new("file").arg("-b").arg(&path));
            assert!(
                desc.contains("statically linked") || desc.contains("static-pie linked"),
                "{}: not static: {desc}",
                path.display()
            );
            assert!(!desc.contains("interpreter"), "{}: {desc}", path.display());
            assert!(desc.contains(file_arch), "{}: {desc}", path.display());
            let out = if arch == "x86_64" {
                stdout(Command::new(&path).arg("--version"))
            } else {
                stdout(
                    Command::new("qemu-aarch64-static")
                        .arg(&path)
                        .arg("--version"),
                )
            };
            assert_eq!(out.trim(), format!("{bin} {v}"), "{}", path.display());
            eprintln!(
                "{}: {} bytes, {}",
                path.display(),
                std::fs::metadata(&path).unwrap().len(),
                desc.trim()
            );
        }
    }
}

#[test]
fn package_metadata_and_contents_per_arch() {
    let v = version();
    for (arch, debarch) in [("x86_64", "amd64"), ("aarch64", "arm64")] {
        // .deb
        let deb = package("cairn-agent", debarch, "deb");
        let field = |f: &str| stdout(Command::new("dpkg-deb").arg("-f").arg(&deb).arg(f));
        assert_eq!(field("Architecture").trim(), debarch);
        assert_eq!(field("Package").trim(), "cairn-agent");
        assert_eq!(field("Version").trim(), format!("{v}-1"));
        let list = stdout(Command::new("dpkg-deb").arg("-c").arg(&deb));
        let mut want: Vec<String> = UNITS
            .iter()
            .map(|u| format!("./lib/systemd/system/{u}"))
            .collect();
        want.extend(
            [
                "./usr/bin/cairn-agent",
                "./etc/cairn/agent.yaml",
                "./usr/share/doc/cairn-agent/copyright",
                "./usr/share/doc/cairn-agent/changelog.Debian.gz",
            ]
            .map(String::from),
        );
        for w in &want {
            let line = list
                .lines()
                .find(|l| l.ends_with(&format!(" {w}")))
                .unwrap_or_else(|| panic!("{} lacks {w}:\n{list}", deb.display()));
            assert!(line.contains("root/root"), "{line}");
        }
        let conf = list
            .lines()
            .find(|l| l.ends_with(" ./etc/cairn/agent.yaml"))
            .unwrap();
        assert!(
            conf.starts_with("-rw-------"),
            "config must be 0600: {conf}"
        );
        let ctl = tempfile::tempdir().unwrap();
        run(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(ctl.path()));
        assert_eq!(
            std::fs::read_to_string(ctl.path().join("conffiles")).unwrap(),
            "/etc/cairn/agent.yaml\n"
        );
        for script in ["postinst", "prerm", "postrm"] {
            let p = ctl.path().join(script);
            let mode = std::fs::metadata(&p).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o755, "{script}");
            run(Command::new("sh").arg("-n").arg(&p));
        }
        // The binary inside is the right arch.
        let x = tempfile::tempdir().unwrap();
        run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(x.path()));
        let desc = stdout(
            Command::new("file")
                .arg("-b")
                .arg(x.path().join("usr/bin/cairn-agent")),
        );
        let file_arch = if arch == "x86_64" {
            "x86-64"
        } else {
            "ARM aarch64"
        };
        assert!(desc.contains(file_arch), "{desc}");

        let ideb = package("cairn-installer", debarch, "deb");
        assert_eq!(
            stdout(
                Command::new("dpkg-deb")
                    .arg("-f")
                    .arg(&ideb)
                    .arg("Architecture")
            )
            .trim(),
            debarch
        );
        let ilist = stdout(Command::new("dpkg-deb").arg("-c").arg(&ideb));
        assert!(ilist.contains(" ./usr/bin/cairn-installer"), "{ilist}");

        // .rpm
        let rpm = package("cairn-agent", arch, "rpm");
        let q = |args: &[&str]| {
            stdout(
                Command::new("rpm")
                    .args(["-qp", "--nosignature"])
                    .args(args)
                    .arg(&rpm),
            )
        };
        assert_eq!(q(&["--qf", "%{ARCH}"]), arch);
        assert_eq!(
            q(&["--qf", "%{NAME} %{VERSION}-%{RELEASE}"]),
            format!("cairn-agent {v}-1")
        );
        let files = q(&["-l"]);
        for u in UNITS {
            assert!(
                files.contains(&format!("/usr/lib/systemd/system/{u}\n")),
                "{u} missing:\n{files}"
            );
        }
        for f in [
            "/usr/bin/cairn-agent",
            "/etc/cairn/agent.yaml",
            "/usr/lib/systemd/system-preset/80-cairn.preset",
        ] {
            assert!(files.contains(&format!("{f}\n")), "{f} missing:\n{files}");
        }
        assert_eq!(q(&["--configfiles"]).trim(), "/etc/cairn/agent.yaml");
        let dump = q(&["--dump"]);
        let conf = dump
            .lines()
            .find(|l| l.starts_with("/etc/cairn/agent.yaml "))
            .unwrap();
        assert!(conf.contains(" 0100600 root root "), "{conf}");
        let scripts = q(&["--scripts"]);
        for s in [
            "postinstall scriptlet",
            "preuninstall scriptlet",
            "postuninstall scriptlet",
        ] {
            assert!(scripts.contains(s), "no {s}:\n{scripts}");
        }
        assert!(
            scripts.contains("systemctl --no-reload preset cairn-agent.service"),
            "{scripts}"
        );
        assert!(
            scripts.contains("systemctl --no-reload disable cairn-agent.service"),
            "{scripts}"
        );
        assert!(
            scripts.contains("try-restart cairn-agent.service"),
            "{scripts}"
        );
        let irpm = package("cairn-installer", arch, "rpm");
        let iarch = stdout(
            Command::new("rpm")
                .args(["-qp", "--nosignature", "--qf", "%{ARCH}"])
                .arg(&irpm),
        );
        assert_eq!(iarch, arch);
    }
}

#[test]
fn debs_are_lintian_clean() {
    // Tags that do not fit a static, debhelper-less package are overridden, each with its
    // reason, in packaging/deb/lintian/; anything else lintian reports fails here.
    let debs: Vec<PathBuf> = ["amd64", "arm64"]
        .iter()
        .flat_map(|a| {
            [
                package("cairn-agent", a, "deb"),
                package("cairn-installer", a, "deb"),
            ]
        })
        .collect();
    let out = Command::new("lintian")
        .args(["--fail-on", "error,warning"])
        .args(&debs)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let findings: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("E: ") || l.starts_with("W: "))
        .collect();
    assert!(
        out.status.success() && findings.is_empty(),
        "lintian ({}):\n{text}",
        out.status
    );
}

/// Paths of a root, minus the package manager's own bookkeeping (databases, logs, caches).
fn tree(root: &Path) -> BTreeMap<PathBuf, String> {
    snapshot(root)
        .unwrap()
        .into_iter()
        .filter(|(p, _)| {
            let s = p.to_string_lossy();
            !(s.starts_with("var/lib/dpkg/")
                || s.starts_with("var/lib/rpm")
                || s.starts_with("var/log/")
                || s.starts_with("var/cache/")
                || s.starts_with("tmp/")
                || s.starts_with("usr/lib/sysimage"))
        })
        .map(|(p, e)| {
            let kind = if e.content.starts_with("-> ") {
                e.content
            } else if e.content == "dir" {
                "dir".into()
            } else {
                "file".into()
            };
            (p, kind)
        })
        .collect()
}

/// What changed from `before` to `after`: (added, removed), paths only.
fn diff(
    before: &BTreeMap<PathBuf, String>,
    after: &BTreeMap<PathBuf, String>,
) -> (BTreeSet<String>, BTreeSet<String>) {
    let added = after
        .iter()
        .filter(|(p, k)| before.get(*p) != Some(k))
        .map(|(p, _)| p.display().to_string())
        .collect();
    let removed = before
        .keys()
        .filter(|p| !after.contains_key(*p))
        .map(|p| p.display().to_string())
        .collect();
    (added, removed)
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn enabled(root: &DebianRoot, unit: &str) -> String {
    let out = Command::new("chroot")
        .arg(root.path())
        .args(["systemctl", "is-enabled", unit])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Links of ours in /etc/systemd/system (enablement).
fn our_links(root: &Path) -> Vec<String> {
    let mut links = Vec::new();
    let etc = root.join("etc/systemd/system");
    for e in walk(&etc) {
        let rel = e.strip_prefix(root).unwrap().display().to_string();
        if rel.contains("cairn") {
            links.push(rel);
        }
    }
    links
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() && !p.is_symlink() {
                out.extend(walk(&p));
            }
            out.push(p);
        }
    }
    out
}

/// `systemd-analyze verify` inside the root: every unit file of ours, then the whole boot
/// transaction (default.target, which pulls the enabled units in: ordering cycles show up
/// there). It exits 0 on some problems (a cycle is "fixed" by dropping a job), so any line it
/// prints is a failure.
fn verify_units(root: &DebianRoot) {
    let mut args: Vec<String> = vec!["systemd-analyze".into(), "verify".into(), "--man=no".into()];
    args.extend(UNITS.iter().map(|u| format!("/lib/systemd/system/{u}")));
    let out = Command::new("chroot")
        .arg(root.path())
        .args(&args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.trim().is_empty(),
        "systemd-analyze verify ({}):\n{text}",
        out.status
    );
    for target in ["default.target", "sysinit.target", "basic.target"] {
        let out = Command::new("chroot")
            .arg(root.path())
            .args(["systemd-analyze", "verify", "--man=no", target])
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && text.trim().is_empty(),
            "systemd-analyze verify {target} ({}):\n{text}",
            out.status
        );
    }
}

#[test]
fn deb_installs_verifies_enables_removes_and_purges_cleanly() {
    let deb = package("cairn-agent", "amd64", "deb");
    let root = DebianRoot::new().unwrap();
    let start = Instant::now();
    // A unit of ours that the verifier must reject: proves it really checks in this root.
    {
        let bad = root
            .path()
            .join("lib/systemd/system/cairn-selftest.service");
        std::fs::write(
            &bad,
            "[Unit]\nAfter=cairn-nothing.service\nBogus=1\n[Service]\nExecStart=/usr/bin/nonexistent\n",
        )
        .unwrap();
        let out = Command::new("chroot")
            .arg(root.path())
            .args([
                "systemd-analyze",
                "verify",
                "--man=no",
                "/lib/systemd/system/cairn-selftest.service",
            ])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stderr);
        assert!(
            text.contains("Unknown key") && text.contains("not executable"),
            "{text}"
        );
        std::fs::remove_file(&bad).unwrap();
    }
    let before = tree(root.path());
    std::fs::copy(&deb, root.path().join("tmp/cairn-agent.deb")).unwrap();

    // Install: files in place, units enabled, nothing started (no systemd running here).
    let out = root
        .chroot(&["dpkg", "-i", "/tmp/cairn-agent.deb"])
        .unwrap();
    assert!(out.contains("units enabled"), "{out}");
    assert_eq!(
        root.chroot(&["cairn-agent", "--version"]).unwrap().trim(),
        format!("cairn-agent {}", version())
    );
    let meta = |rel: &str| std::fs::symlink_metadata(root.path().join(rel)).unwrap();
    assert_eq!(
        meta("etc/cairn/agent.yaml").permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(meta("var/lib/cairn").permissions().mode() & 0o777, 0o700);
    assert_eq!(
        meta("usr/bin/cairn-agent").permissions().mode() & 0o777,
        0o755
    );
    // The shipped config is valid user-data.
    root.chroot(&["cairn-agent", "validate", "/etc/cairn/agent.yaml"])
        .unwrap();
    verify_units(&root);
    for (unit, wants) in WANTS {
        assert_eq!(enabled(&root, unit), "enabled", "{unit}");
        let link = root
            .path()
            .join("etc/systemd/system")
            .join(wants)
            .join(unit);
        assert_eq!(
            std::fs::read_link(&link).unwrap(),
            Path::new("/lib/systemd/system").join(unit),
            "{}",
            link.display()
        );
    }
    let installed = tree(root.path());
    let (added, removed) = diff(&before, &installed);
    assert!(removed.is_empty(), "install removed {removed:?}");
    assert!(added.contains("usr/bin/cairn-agent"), "{added:?}");

    // The boot-stage unit really runs the stage from /oem (no systemd here: run its command).
    std::fs::create_dir_all(root.path().join("oem")).unwrap();
    std::fs::write(
        root.path().join("oem/10-test.yaml"),
        "stages:\n  boot:\n    - name: mark\n      files:\n        - path: /etc/cairn-boot-mark\n          content: booted\n          permissions: 0644\n",
    )
    .unwrap();
    let unit = std::fs::read_to_string(
        root.path()
            .join("lib/systemd/system/cairn-stage-boot.service"),
    )
    .unwrap();
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap();
    let argv: Vec<&str> = exec.split_whitespace().collect();
    root.chroot(&argv).unwrap();
    assert_eq!(
        std::fs::read_to_string(root.path().join("etc/cairn-boot-mark")).unwrap(),
        "booted"
    );
    std::fs::remove_file(root.path().join("etc/cairn-boot-mark")).unwrap();
    std::fs::remove_dir_all(root.path().join("oem")).unwrap();

    // Upgrade/reinstall: the administrator's choice (agent disabled) is kept; the config
    // edit is kept.
    root.chroot(&["systemctl", "disable", "cairn-agent.service"])
        .unwrap();
    let conf = root.path().join("etc/cairn/agent.yaml");
    let edited = format!(
        "{}\n# edited by the admin\n",
        std::fs::read_to_string(&conf).unwrap()
    );
    std::fs::write(&conf, &edited).unwrap();
    root.chroot(&["dpkg", "-i", "/tmp/cairn-agent.deb"])
        .unwrap();
    assert_eq!(enabled(&root, "cairn-agent.service"), "disabled");
    assert_eq!(enabled(&root, "cairn-stage-boot.service"), "enabled");
    assert_eq!(std::fs::read_to_string(&conf).unwrap(), edited);
    root.chroot(&["systemctl", "enable", "cairn-agent.service"])
        .unwrap();

    // State the daemon would have written.
    std::fs::write(root.path().join("var/lib/cairn/identity.json"), "{}").unwrap();

    // Remove: everything goes but the state directory and the conffile; units disabled.
    root.chroot(&["dpkg", "-r", "cairn-agent"]).unwrap();
    let removed_tree = tree(root.path());
    let (added, removed) = diff(&before, &removed_tree);
    assert!(
        removed.is_empty(),
        "remove deleted foreign paths {removed:?}"
    );
    // The state directory keeps whatever the agent wrote (identity, journal, locks).
    let outside_state: BTreeSet<String> = added
        .iter()
        .filter(|p| !p.starts_with("var/lib/cairn/"))
        .cloned()
        .collect();
    assert_eq!(
        outside_state,
        set(&["etc/cairn", "etc/cairn/agent.yaml", "var/lib/cairn"]),
        "after dpkg -r"
    );
    assert!(added.contains("var/lib/cairn/identity.json"), "{added:?}");
    assert!(
        added.contains("var/lib/cairn/.package-removed"),
        "{added:?}"
    );
    assert!(
        our_links(root.path()).is_empty(),
        "{:?}",
        our_links(root.path())
    );
    let status = root
        .chroot(&["dpkg-query", "-W", "-f=${Status}", "cairn-agent"])
        .unwrap();
    assert_eq!(status, "deinstall ok config-files");

    // Reinstall after remove: enabled again (remove disabled them, not the admin).
    root.chroot(&["dpkg", "-i", "/tmp/cairn-agent.deb"])
        .unwrap();
    for unit in UNITS {
        assert_eq!(enabled(&root, unit), "enabled", "{unit} after reinstall");
    }
    assert_eq!(std::fs::read_to_string(&conf).unwrap(), edited);
    assert!(root.path().join("var/lib/cairn/identity.json").exists());

    // Purge: nothing of ours is left.
    root.chroot(&["dpkg", "-P", "cairn-agent"]).unwrap();
    let purged = tree(root.path());
    let (added, removed) = diff(&before, &purged);
    assert!(added.is_empty(), "left after dpkg -P: {added:?}");
    assert!(
        removed.is_empty(),
        "purge deleted foreign paths {removed:?}"
    );
    let status = root.chroot(&["dpkg-query", "-W", "-f=${Status}", "cairn-agent"]);
    assert!(
        status.is_err()
            || status
                .as_ref()
                .unwrap()
                .starts_with("unknown ok not-installed"),
        "{status:?}"
    );
    eprintln!(
        "deb lifecycle in the chroot: {:.1} s",
        start.elapsed().as_secs_f64()
    );
}

#[test]
fn rpm_installs_enables_and_erases_in_a_root() {
    let rpm = package("cairn-agent", "x86_64", "rpm");
    // A Debian root as the rpm --root: it has the /bin/sh and systemctl the scriptlets run
    // (chrooted by rpm). --nodeps: nothing in that root's (empty) rpm database provides the
    // /bin/sh the scriptlets require. --dbpath: Debian's rpm defaults to ~/.rpmdb.
    let root = DebianRoot::new().unwrap();
    let start = Instant::now();
    let before = tree(root.path());
    let r = root.path().to_str().unwrap().to_string();
    run(Command::new("rpm").args(["--root", &r, "--dbpath", "/var/lib/rpm", "--initdb"]));
    run(Command::new("rpm")
        .args([
            "--root",
            &r,
            "--dbpath",
            "/var/lib/rpm",
            "--nodeps",
            "--nosignature",
            "-i",
        ])
        .arg(&rpm));
    let q = stdout(Command::new("rpm").args([
        "--root",
        &r,
        "--dbpath",
        "/var/lib/rpm",
        "-q",
        "cairn-agent",
    ]));
    assert!(q.starts_with("cairn-agent-"), "{q}");
    assert_eq!(
        root.chroot(&["cairn-agent", "--version"]).unwrap().trim(),
        format!("cairn-agent {}", version())
    );
    for (unit, _) in WANTS {
        assert_eq!(enabled(&root, unit), "enabled", "{unit} (preset by %post)");
    }
    let meta = std::fs::metadata(root.path().join("etc/cairn/agent.yaml")).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    // -V: every file as packaged (digest, mode, owner); --nodeps as for the install.
    run(Command::new("rpm").args([
        "--root",
        &r,
        "--dbpath",
        "/var/lib/rpm",
        "--nodeps",
        "-V",
        "cairn-agent",
    ]));
    std::fs::write(root.path().join("var/lib/cairn/identity.json"), "{}").unwrap();

    run(Command::new("rpm").args([
        "--root",
        &r,
        "--dbpath",
        "/var/lib/rpm",
        "--nodeps",
        "-e",
        "cairn-agent",
    ]));
    assert!(
        our_links(root.path()).is_empty(),
        "{:?}",
        our_links(root.path())
    );
    let (added, removed) = diff(&before, &tree(root.path()));
    assert!(
        removed.is_empty(),
        "erase deleted foreign paths {removed:?}"
    );
    // rpm has no purge: the host's state stays (documented in packaging/README.md).
    assert_eq!(
        added,
        set(&["var/lib/cairn", "var/lib/cairn/identity.json"]),
        "after rpm -e"
    );
    eprintln!(
        "rpm lifecycle in the root: {:.1} s",
        start.elapsed().as_secs_f64()
    );
}
