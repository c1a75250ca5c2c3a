#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Links planted in the target root must never make Cairn change anything outside it
//! (issue 13, defect 1). Every test keeps a sentinel tree *outside* the root, takes a
//! digest of it (`common::snapshot`: content, mode, owner, mtime of every entry) before,
//! applies, and checks it is identical after:
//!
//! - chains of 41 and 1,000 links (absolute, and relative ones climbing with `..`) planted
//!   under every kind of write: the step fails naming the path, nothing outside changes;
//! - links planted at every temp name the old scheme used (a predictable
//!   `.NAME.cairn-PID.tmp`, `.cairn-download-NAME.part`, `.localtime.cairn.tmp`);
//! - a thread swapping directories for links and planting temp-name links continuously
//!   while applies run;
//! - the same chains under home directories (native account writer), Cairn's state in
//!   the target (`state.json`, the apply lock) and the daemon's state directory.

mod common;

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use cairn_agent::artifacts::ArtifactCache;
use cairn_agent::host::Host;
use cairn_agent::kubernetes::place;
use cairn_agent::kubernetes::{Fetch, Placement};
use cairn_proto::profile::Arch;
use cairn_proto::EventKind;
use common::{assert_same, serve, sha256_hex, snapshot, Run, TestEnv};

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBxc7yzhOH9uWr0u3mOsD4Z9JjtsVbYtVuV0mG1Hh6mC alice@laptop";

/// A tree outside the root that no apply may touch.
struct Sentinel {
    dir: tempfile::TempDir,
}

impl Sentinel {
    fn new() -> Sentinel {
        let dir = tempfile::Builder::new()
            .prefix("cairn-sentinel-")
            .tempdir()
            .unwrap();
        let d = dir.path();
        std::fs::write(d.join("victim"), b"do not touch\n").unwrap();
        std::fs::create_dir_all(d.join("etc/sysctl.d")).unwrap();
        std::fs::write(d.join("etc/shadow"), b"root:secret:::::::\n").unwrap();
        std::fs::create_dir_all(d.join(".ssh")).unwrap();
        std::fs::write(
            d.join(".ssh/authorized_keys"),
            b"ssh-ed25519 AAAA mallory\n",
        )
        .unwrap();
        std::fs::write(d.join("x"), b"x\n").unwrap();
        Sentinel { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn victim(&self) -> PathBuf {
        self.path().join("victim")
    }

    fn digest(&self) -> std::collections::BTreeMap<PathBuf, common::Entry> {
        snapshot(self.path())
    }
}

#[derive(Clone, Copy, Debug)]
enum Style {
    /// Every link absolute (`/c/l2`), the last one to the sentinel's absolute host path.
    Absolute,
    /// Every link relative, the last one climbing with `..` far above the root.
    Relative,
}

/// Plant a chain of `n` links in `root`: the first at `at` (a path inside the root), the
/// others in `/c`, the last pointing at `dest` (a host path outside the root).
fn plant_chain(root: &Path, at: &str, n: usize, dest: &Path, style: Style) {
    let inside = |p: &str| root.join(p.trim_start_matches('/'));
    std::fs::create_dir_all(inside("/c")).unwrap();
    if let Some(parent) = inside(at).parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    let climb = "../".repeat(root.components().count() + 8);
    let dest_rel = dest.strip_prefix("/").unwrap().display().to_string();
    for i in 1..=n {
        let link = if i == 1 {
            inside(at)
        } else {
            inside(&format!("/c/l{i}"))
        };
        let target = match (style, i == n) {
            (Style::Absolute, true) => dest.display().to_string(),
            (Style::Relative, true) => format!("{climb}{dest_rel}"),
            (Style::Absolute, false) => format!("/c/l{}", i + 1),
            // From `at`'s directory to /c: climb to the root first.
            (Style::Relative, false) if i == 1 => format!("{climb}c/l{}", i + 1),
            (Style::Relative, false) => format!("l{}", i + 1),
        };
        symlink(&target, &link).unwrap();
    }
}

fn assert_refused(run: &Run, step: &str) {
    let e = run.step(step);
    assert_eq!(e.kind, EventKind::StepFailed, "{}", run.describe());
    assert!(
        e.message.contains("more than 40 symbolic links"),
        "the step names the link budget: {}",
        e.message
    );
}

/// One kind of write, as user-data, with the place where its chain is planted.
struct Kind {
    name: &'static str,
    /// Where the first link goes.
    at: &'static str,
    /// The user-data (`{URL}` and `{SHA}` filled in for downloads).
    yaml: &'static str,
    /// Set up the root before planting (accounts for SSH keys).
    prepare: fn(&TestEnv),
}

fn no_prep(_: &TestEnv) {}

fn alice(env: &TestEnv) {
    env.write(
        "/etc/passwd",
        "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n",
    );
    env.write("/etc/group", "root:x:0:\nalice:x:1000:\n");
    std::fs::create_dir_all(env.p("/home/alice")).unwrap();
}

fn kinds() -> Vec<Kind> {
    vec![
        Kind {
            name: "files (a link in the parent)",
            at: "/etc/app",
            yaml: "stages:\n  boot:\n    - name: w\n      files:\n        - path: /etc/app/x\n          content: planted\n",
            prepare: no_prep,
        },
        Kind {
            name: "files (the file itself a link)",
            at: "/etc/app.conf",
            yaml: "stages:\n  boot:\n    - name: w\n      files:\n        - path: /etc/app.conf\n          content: planted\n          permissions: 0600\n",
            prepare: no_prep,
        },
        Kind {
            name: "files (append)",
            at: "/etc/app.conf",
            yaml: "stages:\n  boot:\n    - name: w\n      files:\n        - path: /etc/app.conf\n          content: planted\n          append: true\n",
            prepare: no_prep,
        },
        Kind {
            name: "directories",
            at: "/srv/data",
            yaml: "stages:\n  boot:\n    - name: w\n      directories:\n        - path: /srv/data/newdir\n          permissions: 0700\n          owner: 1000\n",
            prepare: no_prep,
        },
        Kind {
            name: "directories (the directory itself a link)",
            at: "/srv/data",
            yaml: "stages:\n  boot:\n    - name: w\n      directories:\n        - path: /srv/data\n          permissions: 0777\n          owner: 1000\n",
            prepare: no_prep,
        },
        Kind {
            name: "SSH keys",
            at: "/home/alice/.ssh",
            yaml: "stages:\n  boot:\n    - name: w\n      authorized_keys:\n        alice:\n          - {KEY}\n",
            prepare: alice,
        },
        Kind {
            name: "drop-ins",
            at: "/etc/sysctl.d",
            yaml: "stages:\n  boot:\n    - name: w\n      sysctl:\n        vm.swappiness: \"10\"\n",
            prepare: no_prep,
        },
        Kind {
            name: "downloads",
            at: "/opt/dl",
            yaml: "stages:\n  boot:\n    - name: w\n      downloads:\n        - url: {URL}\n          path: /opt/dl/x\n          sha256: {SHA}\n",
            prepare: no_prep,
        },
    ]
}

fn body() -> Vec<u8> {
    b"downloaded body\n".repeat(100)
}

fn run_kind(kind: &Kind, n: usize, style: Style) {
    let sentinel = Sentinel::new();
    let env = TestEnv::empty();
    (kind.prepare)(&env);
    plant_chain(&env.root, kind.at, n, sentinel.path(), style);
    let (url, _) = serve("/x", body());
    let yaml = kind
        .yaml
        .replace("{KEY}", KEY)
        .replace("{URL}", &format!("{url}/x"))
        .replace("{SHA}", &sha256_hex(&body()));
    let before = sentinel.digest();
    let run = env.apply_yaml("w.yaml", &yaml);
    assert!(
        !run.outcome.ok(),
        "{} through {n} {style:?} links must fail:\n{}",
        kind.name,
        run.describe()
    );
    assert_refused(&run, "w");
    assert_same(&before, &sentinel.digest());
}

#[test]
fn a_chain_of_41_links_fails_every_kind_of_write_and_changes_nothing_outside() {
    for kind in kinds() {
        for style in [Style::Absolute, Style::Relative] {
            run_kind(&kind, 41, style);
        }
    }
}

#[test]
fn a_chain_of_1000_links_fails_every_kind_of_write_and_changes_nothing_outside() {
    for kind in kinds() {
        for style in [Style::Absolute, Style::Relative] {
            run_kind(&kind, 1000, style);
        }
    }
}

/// An artifact in a fresh cache, and the `Fetch` that places it.
fn cached(dir: &Path, place: Placement) -> (ArtifactCache, Fetch) {
    let src = dir.join("src");
    std::fs::write(&src, body()).unwrap();
    let cache = ArtifactCache::new(dir.join("cache"));
    let sha: [u8; 32] = hex::decode(sha256_hex(&body()))
        .unwrap()
        .try_into()
        .unwrap();
    cache.import_file(&src, &sha).unwrap();
    let f = Fetch {
        name: "k3s".into(),
        arch: Arch::Amd64,
        url: "https://example.invalid/k3s".into(),
        sha256: sha256_hex(&body()),
        size: None,
        place,
    };
    (cache, f)
}

#[test]
fn artifact_placement_through_long_chains_fails_and_changes_nothing_outside() {
    let placements = [
        (
            "/usr/local/bin",
            Placement::Binary {
                path: "/usr/local/bin/k3s".into(),
                mode: 0o755,
            },
        ),
        (
            "/usr/local/bin/k3s",
            Placement::Binary {
                path: "/usr/local/bin/k3s".into(),
                mode: 0o755,
            },
        ),
        (
            "/var/lib/images",
            Placement::Into {
                dir: "/var/lib/images".into(),
                file: "k3s.tar".into(),
            },
        ),
    ];
    for n in [41, 1000] {
        for style in [Style::Absolute, Style::Relative] {
            for (at, placement) in &placements {
                let sentinel = Sentinel::new();
                let work = tempfile::tempdir().unwrap();
                let (cache, f) = cached(work.path(), placement.clone());
                let env = TestEnv::empty();
                plant_chain(&env.root, at, n, sentinel.path(), style);
                let before = sentinel.digest();
                let host = Host::system(&env.root);
                let e = place::place(&host, &cache, &f, None)
                    .unwrap_err()
                    .to_string();
                assert!(e.contains("more than 40 symbolic links"), "{at}: {e}");
                assert_same(&before, &sentinel.digest());
            }
        }
    }
}

#[test]
fn artifact_cache_links_never_lead_out_of_the_cache() {
    for n in [41, 1000] {
        for style in [Style::Absolute, Style::Relative] {
            for at in ["/partial", "/sha256"] {
                let sentinel = Sentinel::new();
                let work = tempfile::tempdir().unwrap();
                let cache_dir = work.path().join("cache");
                std::fs::create_dir_all(&cache_dir).unwrap();
                plant_chain(&cache_dir, at, n, sentinel.path(), style);
                let before = sentinel.digest();
                let (url, _) = serve("/x", body());
                let cache = ArtifactCache::new(&cache_dir);
                let sha: [u8; 32] = hex::decode(sha256_hex(&body()))
                    .unwrap()
                    .try_into()
                    .unwrap();
                let art = cairn_agent::artifacts::ArtifactRef {
                    url: format!("{url}/x"),
                    sha256: sha,
                };
                let opts = cairn_agent::artifacts::FetchOptions {
                    attempts: 1,
                    ..Default::default()
                };
                let e = cache.fetch(&art, &opts, &mut |_| {}).unwrap_err();
                assert!(
                    e.to_string().contains("more than 40 symbolic links"),
                    "{at}: {e}"
                );
                let src = work.path().join("src");
                std::fs::write(&src, body()).unwrap();
                let imported = cache.import_file(&src, &sha);
                if at == "/sha256" {
                    let e = imported.unwrap_err();
                    assert!(
                        e.to_string().contains("more than 40 symbolic links"),
                        "{at}: {e}"
                    );
                } else {
                    // Imports do not go through partial/: the artifact lands in the cache.
                    let p = imported.unwrap();
                    assert!(p.starts_with(&cache_dir), "{}", p.display());
                    assert_eq!(std::fs::read(p).unwrap(), body());
                }
                assert_same(&before, &sentinel.digest());
            }
        }
    }
}

/// User-data writing one of each kind of file into directories of the root.
fn every_write(url: &str) -> String {
    format!(
        "stages:
  boot:
    - name: files
      files:
        - path: /etc/app/x.conf
          content: new
          permissions: 0600
          owner: 1000
        - path: /etc/app/y.conf
          content: appended
          append: true
      directories:
        - path: /etc/app/sub
          permissions: 0700
      authorized_keys:
        alice:
          - {KEY}
      sysctl:
        vm.swappiness: \"10\"
      downloads:
        - url: {url}
          path: /etc/app/dl
          sha256: {sha}
",
        sha = sha256_hex(&body())
    )
}

#[test]
fn links_at_the_old_predictable_temp_names_are_never_followed() {
    let sentinel = Sentinel::new();
    let env = TestEnv::empty();
    alice(&env);
    std::fs::create_dir_all(env.p("/etc/app")).unwrap();
    std::fs::create_dir_all(env.p("/etc/sysctl.d")).unwrap();
    std::fs::create_dir_all(env.p("/home/alice/.ssh")).unwrap();
    let pid = std::process::id();
    let victim = sentinel.victim();
    for (dir, name) in [
        ("/etc/app", "x.conf"),
        ("/etc/app", "y.conf"),
        ("/etc/sysctl.d", "90-cairn-boot_files.conf"),
        ("/etc/sysctl.d", "90-cairn-boot-files.conf"),
        ("/home/alice/.ssh", "authorized_keys"),
        ("/var/lib/cairn", "state.json"),
    ] {
        std::fs::create_dir_all(env.p(dir)).unwrap();
        symlink(&victim, env.p(&format!("{dir}/.{name}.cairn-{pid}.tmp"))).unwrap();
    }
    symlink(&victim, env.p("/etc/app/.cairn-download-dl.part")).unwrap();
    symlink(&victim, env.p("/etc/.localtime.cairn.tmp")).unwrap();
    let (url, _) = serve("/x", body());
    let before = sentinel.digest();
    let run = env.apply_yaml("w.yaml", &every_write(&format!("{url}/x")));
    let run = run.ok();
    assert_eq!(env.read("/etc/app/x.conf"), "new");
    assert_eq!(env.mode("/etc/app/x.conf"), 0o600);
    assert_eq!(std::fs::read(env.p("/etc/app/dl")).unwrap(), body());
    assert!(env
        .read("/home/alice/.ssh/authorized_keys")
        .contains("alice@laptop"));
    assert!(run.outcome.changed > 0);
    assert_same(&before, &sentinel.digest());
}

/// A thread that, until told to stop, keeps swapping `/etc/app` between a real directory
/// and links leading out (absolute and climbing), and planting links at old temp names.
fn racer(root: PathBuf, dest: PathBuf, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let app = root.join("etc/app");
        let real = root.join("etc/app.real");
        let climb = "../".repeat(root.components().count() + 8);
        let rel = format!("{climb}{}", dest.strip_prefix("/").unwrap().display());
        let pid = std::process::id();
        let mut swaps = 0u64;
        while !stop.load(Ordering::Relaxed) {
            for target in [dest.display().to_string(), rel.clone()] {
                // Directory out, link in (for a moment), then back.
                if std::fs::rename(&app, &real).is_ok() {
                    let _ = symlink(&target, &app);
                    std::thread::sleep(std::time::Duration::from_millis(1));
                    let _ = std::fs::remove_file(&app);
                    let _ = std::fs::rename(&real, &app);
                    swaps += 1;
                }
                // Temp-name links aim at a file outside (a directory could not be opened).
                let file = format!("{target}/victim");
                for name in ["x.conf", "y.conf", "dl"] {
                    let _ = symlink(&file, app.join(format!(".{name}.cairn-{pid}.tmp")));
                }
                let _ = symlink(&file, app.join(".cairn-download-dl.part"));
                let ssh = root.join("home/alice/.ssh");
                let _ = symlink(&file, ssh.join(format!(".authorized_keys.cairn-{pid}.tmp")));
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
        swaps
    })
}

#[test]
fn links_planted_continuously_while_applying_change_nothing_outside() {
    let sentinel = Sentinel::new();
    let env = TestEnv::empty();
    alice(&env);
    std::fs::create_dir_all(env.p("/etc/app")).unwrap();
    let (url, _) = serve("/x", body());
    let yaml = every_write(&format!("{url}/x"));
    let before = sentinel.digest();
    let stop = Arc::new(AtomicBool::new(false));
    let handle = racer(
        env.root.clone(),
        sentinel.path().to_path_buf(),
        stop.clone(),
    );
    let started = std::time::Instant::now();
    let mut runs = 0;
    while runs < 200 && started.elapsed() < std::time::Duration::from_secs(8) {
        // A run may fail (a directory vanished under it): only what is outside matters.
        let _ = env.apply_yaml("w.yaml", &yaml);
        runs += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let swaps = handle.join().unwrap();
    assert!(
        runs >= 5 && swaps > 0,
        "the race ran ({runs} applies, {swaps} swaps)"
    );
    assert_same(&before, &sentinel.digest());
}

/// On a device the root is `/`: a link inside it is "inside", so confinement alone would
/// let `~alice/.ssh/authorized_keys -> /etc/shadow` through. Links a non-root user owns in
/// their own directories may not lead out of them (docs/decisions.md).
#[test]
fn a_users_link_to_a_system_file_is_refused() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root: it gives files to uid 1000"
    );
    for (target, shape) in [
        ("/etc/shadow", "absolute"),
        ("../../../etc/shadow", "climbing"),
    ] {
        let env = TestEnv::empty();
        alice(&env);
        env.write("/etc/shadow", "root:secret:::::::\n");
        std::fs::create_dir_all(env.p("/home/alice/.ssh")).unwrap();
        for p in ["/home/alice", "/home/alice/.ssh"] {
            std::os::unix::fs::chown(env.p(p), Some(1000), Some(1000)).unwrap();
        }
        let link = env.p("/home/alice/.ssh/authorized_keys");
        symlink(target, &link).unwrap();
        std::os::unix::fs::lchown(&link, Some(1000), Some(1000)).unwrap();
        let before = snapshot(&env.p("/etc"));
        let yaml = format!(
            "stages:\n  boot:\n    - name: w\n      authorized_keys:\n        alice:\n          - {KEY}\n"
        );
        let run = env.apply_yaml("w.yaml", &yaml);
        let e = run.step("w");
        assert_eq!(e.kind, EventKind::StepFailed, "{shape}: {}", run.describe());
        assert!(
            e.message.contains("refusing to follow the symbolic link"),
            "{shape}: {}",
            e.message
        );
        assert_same(&before, &snapshot(&env.p("/etc")));
    }
}

/// Home directories made for a new user (the native account writer): a chain planted at
/// the parent of the home fails the step; nothing outside the root changes.
#[test]
fn home_directories_through_long_chains_fail_and_change_nothing_outside() {
    common::require("useradd");
    for n in [41, 1000] {
        for style in [Style::Absolute, Style::Relative] {
            let sentinel = Sentinel::new();
            let env = TestEnv::new();
            let _ = std::fs::remove_dir_all(env.p("/srv/homes"));
            plant_chain(&env.root, "/srv/homes", n, sentinel.path(), style);
            let before = sentinel.digest();
            let run = env.apply_yaml(
                "w.yaml",
                "#cloud-config\nusers:\n  - name: bob\n    homedir: /srv/homes/bob\n    shell: /bin/sh\n",
            );
            assert!(!run.outcome.ok(), "{n} {style:?}: {}", run.describe());
            let failed = run.outcome.failed.as_ref().unwrap();
            assert!(
                failed.message.contains("more than 40 symbolic links"),
                "{n} {style:?}: {}",
                failed.message
            );
            assert_same(&before, &sentinel.digest());
        }
    }
}

/// Cairn's own state in the target (`/var/lib/cairn/state.json`, saved after a drop-in
/// step) and its apply lock: chains planted at either fail the apply, nothing outside
/// changes.
#[test]
fn cairn_state_in_the_target_through_long_chains_fails_and_changes_nothing_outside() {
    for n in [41, 1000] {
        for style in [Style::Absolute, Style::Relative] {
            for at in ["/var/lib/cairn/state.json", "/var/lib/cairn/apply.lock"] {
                let sentinel = Sentinel::new();
                let env = TestEnv::empty();
                plant_chain(&env.root, at, n, sentinel.path(), style);
                let before = sentinel.digest();
                let run = env.apply_yaml(
                    "w.yaml",
                    "stages:\n  boot:\n    - name: w\n      sysctl:\n        vm.swappiness: \"10\"\n",
                );
                assert!(!run.outcome.ok(), "{at} {n} {style:?}: {}", run.describe());
                let failed = run.outcome.failed.as_ref().unwrap();
                assert!(
                    failed.message.contains("more than 40 symbolic links"),
                    "{at} {n} {style:?}: {}",
                    failed.message
                );
                assert_same(&before, &sentinel.digest());
            }
        }
    }
}

/// The daemon's state directory (identity, profile, journal, spool): a chain planted at
/// a state file fails the write, a link planted at the directory or its spool is refused
/// when the directory is set up; nothing outside changes.
#[test]
fn daemon_state_files_through_long_chains_fail_and_change_nothing_outside() {
    use cairn_agent::daemon::store::{write_atomic, StateDir};
    for n in [41, 1000] {
        for style in [Style::Absolute, Style::Relative] {
            for name in ["identity.json", "profile.json", "status.json", "seq"] {
                let sentinel = Sentinel::new();
                let work = tempfile::tempdir().unwrap();
                let state = StateDir::new(work.path().join("state"));
                state.create().unwrap();
                plant_chain(&state.dir, &format!("/{name}"), n, sentinel.path(), style);
                let before = sentinel.digest();
                let e = write_atomic(&state.dir.join(name), b"{}\n").unwrap_err();
                assert!(
                    e.to_string().contains("more than 40 symbolic links"),
                    "{name}: {e}"
                );
                assert_same(&before, &sentinel.digest());
            }
        }
    }
    // The directory itself a link someone else owns, or its spool any link, to a directory
    // outside: refused, and the outside directory's mode is not changed to 0700.
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test needs root: it gives a link to uid 1000"
    );
    for at in ["state", "state/spool"] {
        let sentinel = Sentinel::new();
        let work = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(work.path().join("state")).unwrap();
        let _ = std::fs::remove_dir(work.path().join(at));
        symlink(sentinel.path(), work.path().join(at)).unwrap();
        if at == "state" {
            std::os::unix::fs::lchown(work.path().join(at), Some(1000), Some(1000)).unwrap();
        }
        let before = sentinel.digest();
        let e = StateDir::new(work.path().join("state"))
            .create()
            .unwrap_err();
        assert!(e.to_string().contains("state directory"), "{at}: {e}");
        assert_same(&before, &sentinel.digest());
    }
    // A link the operator made (owned by this user) to persistent storage is used.
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("persistent");
    std::fs::create_dir_all(&data).unwrap();
    symlink(&data, work.path().join("state")).unwrap();
    StateDir::new(work.path().join("state")).create().unwrap();
    use std::os::unix::fs::PermissionsExt;
    for d in [data.clone(), data.join("spool")] {
        let mode = std::fs::metadata(&d).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{}", d.display());
    }
}

/// The account databases' backup and staging names (`FILE-`, `FILE+`, fixed by
/// shadow-utils) planted as links out of the root: never followed; the step fails.
#[test]
fn links_at_the_account_databases_staging_names_are_never_followed() {
    common::require("useradd");
    let sentinel = Sentinel::new();
    let env = TestEnv::new();
    for db in ["passwd", "shadow", "group", "gshadow"] {
        for suffix in ["-", "+"] {
            let at = env.p(&format!("/etc/{db}{suffix}"));
            let _ = std::fs::remove_file(&at);
            symlink(sentinel.victim(), &at).unwrap();
        }
    }
    let before = sentinel.digest();
    let run = env.apply_yaml(
        "w.yaml",
        "#cloud-config\nusers:\n  - name: bob\n    shell: /bin/sh\n",
    );
    assert!(!run.outcome.ok(), "{}", run.describe());
    let failed = run.outcome.failed.as_ref().unwrap();
    assert!(
        failed.message.contains("/etc/passwd-"),
        "the native writer refuses the first planted name: {}",
        failed.message
    );
    assert_same(&before, &sentinel.digest());
    assert!(env.passwd("bob").is_none(), "no half-written account");
}

/// Re-owning a home after a uid change (`usermod -u`): a home that is a long chain out of
/// the root fails the step and nothing outside changes.
#[test]
fn re_owning_a_home_through_long_chains_fails_and_changes_nothing_outside() {
    common::require("useradd");
    for n in [41, 1000] {
        for style in [Style::Absolute, Style::Relative] {
            let sentinel = Sentinel::new();
            let env = TestEnv::new();
            let run = env.apply_yaml(
                "a.yaml",
                "#cloud-config\nusers:\n  - name: carol\n    uid: 1500\n    homedir: /srv/carol\n    shell: /bin/sh\n",
            );
            let run = run.ok();
            assert!(run.outcome.ok());
            std::fs::remove_dir_all(env.p("/srv/carol")).unwrap();
            plant_chain(&env.root, "/srv/carol", n, sentinel.path(), style);
            let before = sentinel.digest();
            let run = env.apply_yaml(
                "b.yaml",
                "#cloud-config\nusers:\n  - name: carol\n    uid: 1600\n    homedir: /srv/carol\n    shell: /bin/sh\n",
            );
            assert!(!run.outcome.ok(), "{n} {style:?}: {}", run.describe());
            let failed = run.outcome.failed.as_ref().unwrap();
            assert!(
                failed.message.contains("more than 40 symbolic links"),
                "{n} {style:?}: {}",
                failed.message
            );
            assert_same(&before, &sentinel.digest());
        }
    }
}
