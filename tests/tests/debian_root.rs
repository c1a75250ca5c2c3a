//! Cairn against a real Debian root (mmdebstrap, cached), with Debian's own cloud-init in a
//! twin root as the reference: real apt, real shadow-utils, real update-ca-certificates.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use cairn_tests::{agent, agent_binary, rows, snapshot, DebianRoot};

fn apply(root: &DebianRoot, doc: &str) -> (i32, String, String) {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), doc).unwrap();
    let root_arg = root.path().to_str().unwrap().to_string();
    agent(&["apply", "--root", &root_arg, file.path().to_str().unwrap()]).unwrap()
}

#[test]
fn apt_installs_a_real_package() {
    let root = DebianRoot::new().unwrap();
    let doc = "#cloud-config\npackages:\n  - hello\n";
    assert!(
        !root
            .read("var/lib/dpkg/status")
            .unwrap()
            .contains("Package: hello\n"),
        "hello must not be installed before"
    );
    let (code, out, err) = apply(&root, doc);
    assert_eq!(code, 0, "apply failed:\n{out}\n{err}");
    let status = root.read("var/lib/dpkg/status").unwrap();
    let para = status
        .split("\n\n")
        .find(|p| p.starts_with("Package: hello\n"))
        .expect("hello in dpkg status");
    assert!(para.contains("Status: install ok installed"), "{para}");
    assert!(root.path().join("usr/bin/hello").exists());
    // Second apply: nothing to install, nothing refreshed.
    let (code, out, err) = apply(&root, doc);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("0 step(s) changed"),
        "second apply changed something:\n{out}"
    );
}

/// The users/groups document both sides apply: a locked and an unlocked hash, a locked
/// user without password, a primary group, missing supplementary groups created on the fly,
/// a home outside /home, system users (one with groups), an explicit uid, expiry and
/// inactivity, `no_user_group`, `no_create_home`, `no_log_init`, groups with members (one
/// member missing), sudo and SSH keys.
const USERS_DOC: &str = r#"#cloud-config
groups:
  - admingroup: [root, sys]
  - cloud-users
  - devs: [root, nosuchuser]
users:
  - name: foobar
    gecos: Foo B. Bar
    primary_group: foobar
    groups: users
    lock_passwd: false
    passwd: $6$j212wezy$7H/1LT4f9/N3wpgNunhsIqtMj62OKiS3nyNwuizouQc3u7MbYCarYeAHWYPYb2FT.lbioDm2RrkJPb9BZMN1O/
  - name: barfoo
    gecos: Bar B. Foo
    sudo: "ALL=(ALL) NOPASSWD:ALL"
    groups: users, admin
    lock_passwd: true
    ssh_authorized_keys:
      - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKeyForBarfooOnlyForTestsAAAAAAAAAAAAAAAA barfoo@test
  - name: testuser
    gecos: Mr. Test
    homedir: /local/testdir
    sudo: ["ALL=(ALL) NOPASSWD:ALL"]
  - name: cloudy
    gecos: Magic Cloud App Daemon User
    inactive: '5'
    system: true
  - name: fizzbuzz
    shell: /bin/bash
    uid: 1500
    expiredate: '2032-09-01'
  - name: lockedhash
    passwd: $6$j212wezy$7H/1LT4f9/N3wpgNunhsIqtMj62OKiS3nyNwuizouQc3u7MbYCarYeAHWYPYb2FT.lbioDm2RrkJPb9BZMN1O/
  - name: nug
    gecos: No User Group
    no_user_group: true
  - name: nohome
    no_create_home: true
  - name: pguser
    primary_group: cloud-users
    groups: [devs, fresh-group]
  - name: svcacct
    system: true
    groups: [svc-group]
    shell: /usr/sbin/nologin
  - name: expiring
    uid: 2100
    inactive: '30'
    expiredate: '2030-01-15'
    no_log_init: true
"#;

/// The account backends Cairn has (`CAIRN_ACCOUNTS`).
const BACKENDS: [&str; 2] = ["native", "shadow-utils"];

/// Apply `doc` with one accounts backend, logging which backend handled each action.
fn apply_with(root: &DebianRoot, doc: &str, backend: &str) -> (i32, String, String) {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), doc).unwrap();
    let out = Command::new(agent_binary().unwrap())
        .args(["apply", "--root"])
        .arg(root.path())
        .arg(file.path())
        .env("CAIRN_ACCOUNTS", backend)
        .env("CAIRN_LOG", "cairn_agent::steps::users=debug")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Every account action of the run was handled by `backend` (and at least one ran).
fn assert_backend(stderr: &str, backend: &str) {
    let used: Vec<&str> = stderr
        .match_indices("backend=\"")
        .map(|(i, m)| {
            let rest = &stderr[i + m.len()..];
            &rest[..rest.find('"').unwrap()]
        })
        .collect();
    assert!(
        !used.is_empty() && used.iter().all(|b| *b == backend),
        "expected every account action on {backend}, got {used:?}:\n{stderr}"
    );
}

/// The account databases compared byte for byte.
const DATABASES: [&str; 6] = [
    "etc/passwd",
    "etc/shadow",
    "etc/group",
    "etc/gshadow",
    "etc/subuid",
    "etc/subgid",
];

/// `left` and `right` have the same account databases, row for row and byte for byte.
fn assert_same_databases(left: &DebianRoot, right: &DebianRoot, what: &str) {
    for file in DATABASES {
        let ours = left.read(file).unwrap();
        let theirs = right.read(file).unwrap();
        let (a, b) = (rows(&ours), rows(&theirs));
        for (name, row) in &a {
            assert_eq!(
                Some(row),
                b.get(name),
                "{file}: row for `{name}` differs ({what})"
            );
        }
        let only_right: Vec<_> = b.keys().filter(|k| !a.contains_key(*k)).collect();
        assert!(
            only_right.is_empty(),
            "{file}: only on the right: {only_right:?} ({what})"
        );
        assert_eq!(
            ours, theirs,
            "{file}: same rows, different bytes or order ({what})"
        );
    }
}

/// Paths, modes, owners and contents (not times) of trees inside a root.
fn trees(root: &DebianRoot, dirs: &[&str]) -> BTreeMap<PathBuf, (u32, u32, u32, String)> {
    let mut out = BTreeMap::new();
    for dir in dirs {
        let base = root.path().join(dir);
        if !base.exists() {
            continue;
        }
        for (p, e) in snapshot(&base).unwrap() {
            out.insert(Path::new(dir).join(p), (e.mode, e.uid, e.gid, e.content));
        }
        let m = std::fs::symlink_metadata(&base).unwrap();
        use std::os::unix::fs::MetadataExt;
        out.insert(
            PathBuf::from(dir),
            (m.mode(), m.uid(), m.gid(), "top".into()),
        );
    }
    out
}

/// Homes, mail spools and the login records useradd/usermod touch.
const TREES: [&str; 5] = ["home", "local", "srv", "var/mail", "var/log"];

fn assert_same_trees(left: &DebianRoot, right: &DebianRoot, what: &str) {
    let (a, b) = (trees(left, &TREES), trees(right, &TREES));
    let ignore = |p: &PathBuf| {
        // cloud-init's and Cairn's own logs differ by nature.
        let s = p.to_string_lossy();
        s.starts_with("var/log/") && !(s == "var/log/lastlog" || s == "var/log/faillog")
    };
    let a: BTreeMap<_, _> = a.into_iter().filter(|(p, _)| !ignore(p)).collect();
    let b: BTreeMap<_, _> = b.into_iter().filter(|(p, _)| !ignore(p)).collect();
    for (p, e) in &a {
        assert_eq!(Some(e), b.get(p), "{}: differs ({what})", p.display());
    }
    let only_right: Vec<_> = b.keys().filter(|k| !a.contains_key(*k)).collect();
    assert!(
        only_right.is_empty(),
        "only on the right: {only_right:?} ({what})"
    );
}

#[test]
fn users_and_groups_match_cloud_init_field_by_field() {
    let reference = DebianRoot::new().unwrap();
    reference.cloud_init(USERS_DOC, "users_groups").unwrap();
    for backend in BACKENDS {
        let cairn = DebianRoot::new().unwrap();
        let (code, out, err) = apply_with(&cairn, USERS_DOC, backend);
        assert_eq!(code, 0, "cairn apply ({backend}) failed:\n{out}\n{err}");
        assert_backend(&err, backend);
        let what = format!("left Cairn with {backend}, right cloud-init");
        // passwd, shadow, group, gshadow, subuid and subgid: same rows, same bytes.
        assert_same_databases(&cairn, &reference, &what);
        // Homes (skeleton copies, modes, owners, SSH keys), mail spools, lastlog/faillog.
        assert_same_trees(&cairn, &reference, &what);
        for root in [&cairn, &reference] {
            assert!(root.path().join("home/foobar/.bashrc").exists());
            assert!(root.path().join("local/testdir/.bashrc").exists());
            assert!(!root.path().join("home/cloudy").exists());
            assert!(!root.path().join("home/nohome").exists());
        }
        // SSH keys: same key, dir 0700 and file 0600 owned by the user.
        use std::os::unix::fs::MetadataExt;
        let uid = rows(&cairn.read("etc/passwd").unwrap())["barfoo"][2]
            .parse::<u32>()
            .unwrap();
        let keys = cairn.path().join("home/barfoo/.ssh/authorized_keys");
        let m = std::fs::metadata(&keys).unwrap();
        assert_eq!((m.mode() & 0o777, m.uid()), (0o600, uid));
        let d = std::fs::metadata(keys.parent().unwrap()).unwrap();
        assert_eq!((d.mode() & 0o777, d.uid()), (0o700, uid));
        // Sudo rules: both grant the same rule; Cairn's drop-in passes visudo.
        let sudo = cairn.read("etc/sudoers.d/90-cairn-barfoo").unwrap();
        assert!(sudo.contains("barfoo ALL=(ALL) NOPASSWD:ALL"), "{sudo}");
        assert!(reference
            .read("etc/sudoers.d/90-cloud-init-users")
            .unwrap()
            .contains("barfoo ALL=(ALL) NOPASSWD:ALL"));
        cairn.chroot(&["visudo", "-c"]).unwrap();
        // And a second apply changes nothing.
        let (code, out, _) = apply_with(&cairn, USERS_DOC, backend);
        assert_eq!(code, 0);
        assert!(out.contains("0 step(s) changed"), "{backend}: {out}");
    }
}

const HASH_A: &str = "$6$j212wezy$7H/1LT4f9/N3wpgNunhsIqtMj62OKiS3nyNwuizouQc3u7MbYCarYeAHWYPYb2FT.lbioDm2RrkJPb9BZMN1O/";
const HASH_B: &str = "$6$cairnsalt$VyuLwe1Fp3s.HgYLNBPQG7fgAAJm3xxExEGvxk07bD8NetrIWuyQdoxky/mLeAMBh1dCttcpzumve7EanalfS.";

#[test]
fn existing_users_converge_the_same_with_both_backends() {
    let before = format!(
        r#"#cloud-config
users:
  - name: alice
    gecos: Alice
    shell: /bin/sh
    lock_passwd: false
    passwd: {HASH_A}
  - name: bob
    groups: [users]
  - name: carol
    primary_group: carol
    groups: [cdrom]
  - name: dave
    lock_passwd: false
    passwd: {HASH_A}
"#
    );
    // gecos, shell, home, password (alice); uid and added groups, one created on the fly
    // (bob); primary group and an added group (carol); lock (dave); a member added by a
    // top-level group (alice).
    let after = format!(
        r#"#cloud-config
groups:
  - cdrom: [alice]
users:
  - name: alice
    gecos: Alice Changed
    shell: /bin/bash
    homedir: /srv/alice
    lock_passwd: false
    passwd: {HASH_B}
  - name: bob
    uid: 2500
    groups: [users, audio, newgrp]
  - name: carol
    primary_group: staff
    groups: [cdrom, video]
  - name: dave
    passwd: {HASH_A}
"#
    );
    let roots: Vec<DebianRoot> = BACKENDS
        .iter()
        .map(|_| DebianRoot::new().unwrap())
        .collect();
    for root in &roots {
        // Mail spools and login records for the uid change to carry over.
        std::fs::write(
            root.path().join("etc/default/useradd"),
            "SHELL=/bin/sh\nCREATE_MAIL_SPOOL=yes\n",
        )
        .unwrap();
        let pattern = |n: usize, k: usize| {
            (0..n)
                .map(|i| ((i * k) % 251 + 1) as u8)
                .collect::<Vec<u8>>()
        };
        std::fs::write(root.path().join("var/log/lastlog"), pattern(292 * 3000, 7)).unwrap();
        std::fs::write(root.path().join("var/log/faillog"), pattern(32 * 3000, 3)).unwrap();
    }
    for (step, doc) in [("create", &before), ("converge", &after)] {
        for (root, backend) in roots.iter().zip(BACKENDS) {
            let (code, out, err) = apply_with(root, doc, backend);
            assert_eq!(code, 0, "{step} with {backend} failed:\n{out}\n{err}");
            assert_backend(&err, backend);
            if step == "converge" {
                assert!(out.contains("updated user alice"), "{out}");
            }
        }
        let what = format!("after {step}: left native, right shadow-utils");
        assert_same_databases(&roots[0], &roots[1], &what);
        assert_same_trees(&roots[0], &roots[1], &what);
    }
    let native = &roots[0];
    let passwd = rows(&native.read("etc/passwd").unwrap());
    assert_eq!(
        passwd["alice"][4..],
        ["Alice Changed", "/srv/alice", "/bin/bash"]
    );
    assert_eq!(passwd["bob"][2], "2500");
    assert_eq!(passwd["carol"][3], "50", "staff");
    let shadow = rows(&native.read("etc/shadow").unwrap());
    assert_eq!(shadow["alice"][1], HASH_B);
    assert_eq!(shadow["dave"][1], format!("!{HASH_A}"));
    let group = rows(&native.read("etc/group").unwrap());
    assert_eq!(group["newgrp"][3], "bob");
    assert_eq!(group["cdrom"][3], "carol,alice");
    // usermod re-owned bob's home (uid) and carol's (gid) and moved bob's mailbox.
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(native.path().join("home/bob/.profile")).unwrap();
    assert_eq!(m.uid(), 2500);
    let m = std::fs::metadata(native.path().join("home/carol/.profile")).unwrap();
    assert_eq!(m.gid(), 50);
    let m = std::fs::metadata(native.path().join("var/mail/bob")).unwrap();
    assert_eq!(m.uid(), 2500);
    for (root, backend) in roots.iter().zip(BACKENDS) {
        let (code, out, _) = apply_with(root, &after, backend);
        assert_eq!(code, 0);
        assert!(out.contains("0 step(s) changed"), "{backend}: {out}");
    }
}

fn make_ca(dir: &std::path::Path, cn: &str) -> String {
    let key = dir.join(format!("{cn}.key"));
    let crt = dir.join(format!("{cn}.crt"));
    let status = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30", "-subj",
        ])
        .arg(format!("/CN={cn}"))
        .args(["-addext", "basicConstraints=critical,CA:TRUE", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&crt)
        .output()
        .expect("openssl (installed by scripts/install-test-deps.sh)");
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    std::fs::read_to_string(crt).unwrap()
}

fn indent(pem: &str) -> String {
    pem.lines().map(|l| format!("      {l}\n")).collect()
}

#[test]
fn ca_certificate_lands_in_the_rebuilt_bundle() {
    let root = DebianRoot::new().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let pem = make_ca(tmp.path(), "cairn-test-ca");
    let doc = format!(
        "#cloud-config\nca_certs:\n  trusted:\n    - |\n{}",
        indent(&pem)
    );
    let bundle = root.path().join("etc/ssl/certs/ca-certificates.crt");
    let body: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(!std::fs::read_to_string(&bundle).unwrap().contains(&body));
    let (code, out, err) = apply(&root, &doc);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        std::fs::read_to_string(&bundle).unwrap().contains(&body),
        "CA not in bundle"
    );
    assert!(root
        .path()
        .join("usr/local/share/ca-certificates/cairn-ca-1.crt")
        .exists());
    // No change → the trust-store tool does not run again (bundle untouched).
    let before = std::fs::metadata(&bundle).unwrap().modified().unwrap();
    let (code, out, _) = apply(&root, &doc);
    assert_eq!(code, 0);
    assert!(out.contains("0 step(s) changed"), "{out}");
    assert_eq!(
        std::fs::metadata(&bundle).unwrap().modified().unwrap(),
        before
    );
}

/// kubeadm host preparation against a real Debian root: the plan's `kubernetes.before` and
/// `kubernetes` stages install Debian's containerd with real apt, and real containerd reads
/// the config.toml Cairn wrote (CRI enabled, systemd cgroups for runc, the pause image).
#[test]
fn kubeadm_host_prep_installs_debian_containerd_which_reads_our_config() {
    use std::sync::Arc;

    use cairn_agent::engine::{self, ApplyOptions};
    use cairn_agent::events::Emitter;
    use cairn_agent::host::{Host, SystemRunner};
    use cairn_agent::kubernetes::{self, Target};
    use cairn_proto::profile::{Arch, Artifact, CniLayer, CniType, Flavor, KubernetesLayer, Role};

    let art = |name: &str| Artifact {
        name: name.into(),
        arch: Arch::Amd64,
        url: format!("https://dl.test/{name}"),
        sha256: hex::encode(<sha2::Sha256 as sha2::Digest>::digest(name.as_bytes())),
        size: None,
    };
    let layer = KubernetesLayer {
        flavor: Flavor::Kubeadm,
        version: "v1.31.4".into(),
        role: Role::Server,
        server: None,
        token: Some("abcdef.0123456789abcdef".into()),
        values: serde_json::Value::Null,
        artifacts: ["kubeadm", "kubelet", "kubectl", "crictl", "cni-plugins"]
            .into_iter()
            .map(art)
            .collect(),
        components: Default::default(),
        sha256: Default::default(),
    };
    let cni = CniLayer {
        cni: CniType::Flannel,
        version: "v0.25.6".into(),
        pod_cidr: None,
        values: serde_json::Value::Null,
        artifacts: Vec::new(),
        components: Default::default(),
        sha256: Default::default(),
    };
    let plan = kubernetes::plan(&layer, &cni, &Target::new("amd64", "edge-1").unwrap()).unwrap();
    assert_eq!(
        plan.packages,
        ["containerd"],
        "no containerd artifact: Debian's"
    );

    let root = DebianRoot::new().unwrap();
    let host = Host::new(root.path(), Arc::new(SystemRunner));
    let opts = ApplyOptions {
        stages: vec!["kubernetes".into()],
        dry_run: false,
        owner: engine::Owner::Kubernetes,
    };
    let outcome = engine::apply(&plan.into_config(), &host, &opts, &mut Emitter::new("test"));
    assert!(outcome.ok(), "{:?}", outcome.failed);
    let status = root.read("var/lib/dpkg/status").unwrap();
    assert!(
        status.contains("Package: containerd\nStatus: install ok installed"),
        "containerd not installed by apt"
    );
    // Real containerd parses the file and keeps what kubeadm needs.
    let dump = root
        .chroot(&[
            "containerd",
            "--config",
            "/etc/containerd/config.toml",
            "config",
            "dump",
        ])
        .unwrap();
    assert!(dump.contains("SystemdCgroup = true"), "{dump}");
    assert!(
        dump.contains("sandbox_image = \"registry.k8s.io/pause:3.10\""),
        "{dump}"
    );
    assert!(!dump.contains("disabled_plugins = [\"cri\"]"), "{dump}");
    // Enabled for the next boot (nothing is started in a root other than /).
    for unit in ["containerd.service", "kubelet.service"] {
        let wants = root
            .path()
            .join("etc/systemd/system/multi-user.target.wants")
            .join(unit);
        // The link points inside the root (absolute): look at the link, not its target.
        assert!(
            wants.symlink_metadata().is_ok(),
            "{unit} not enabled: {}\n{:?}",
            root.chroot(&["find", "/etc/systemd/system"])
                .unwrap_or_default(),
            outcome.changes
        );
    }
    // Idempotent against the real root too.
    let again = engine::apply(
        &kubernetes::plan(&layer, &cni, &Target::new("amd64", "edge-1").unwrap())
            .unwrap()
            .into_config(),
        &host,
        &opts,
        &mut Emitter::new("test"),
    );
    assert!(again.ok(), "{:?}", again.failed);
    assert_eq!(again.changed, 0, "{:?}", again.changes);
}

/// Names and contents of the files under `dir` in the root (sorted).
fn dir_listing(root: &DebianRoot, dir: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let full = root.path().join(dir);
    if let Ok(entries) = std::fs::read_dir(&full) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let content = std::fs::read(e.path())
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_else(|err| format!("<unreadable: {err}>"));
            out.insert(name, content);
        }
    }
    out
}

/// apt inside the root can still read its sources and lists (no network needed), and
/// refresh them from the mirrors (network, as `apt_installs_a_real_package` needs).
fn assert_apt_works(root: &DebianRoot) {
    let policy = root.chroot(&["apt-cache", "policy", "hello"]).unwrap();
    assert!(policy.contains("Candidate:"), "{policy}");
    root.chroot(&["apt-get", "update"]).unwrap();
}

#[test]
fn a_pin_to_a_missing_version_fails_naming_package_and_version() {
    let root = DebianRoot::new().unwrap();
    let missing = "9.9.9-cairn-nonexistent";
    let doc = format!("#cloud-config\npackages:\n  - [hello, \"{missing}\"]\n");
    let (code, out, err) = apply(&root, &doc);
    assert_ne!(code, 0, "a pin apt cannot satisfy must fail:\n{out}\n{err}");
    let all = format!("{out}\n{err}");
    let failed: Vec<&str> = all
        .lines()
        .filter(|l| l.contains("hello") && l.contains(missing))
        .collect();
    assert!(
        !failed.is_empty(),
        "no line names hello and {missing}:\n{all}"
    );
    assert!(
        !root
            .read("var/lib/dpkg/status")
            .unwrap()
            .contains("Package: hello\n"),
        "hello must not be installed by a failed pin"
    );
    // The failure left apt usable: the lists read, refresh, and an unpinned install works.
    assert_apt_works(&root);
    let (code, out, err) = apply(&root, "#cloud-config\npackages:\n  - hello\n");
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(root.path().join("usr/bin/hello").exists());
}

#[test]
fn a_ppa_source_on_debian_fails_and_leaves_apt_sources_unchanged() {
    let root = DebianRoot::new().unwrap();
    let sources_before = dir_listing(&root, "etc/apt/sources.list.d");
    let keys_before = dir_listing(&root, "etc/apt/trusted.gpg.d");
    let doc = "#cloud-config
apt:
  sources:
    deadsnakes.list:
      source: ppa:deadsnakes/ppa
      key: |
        -----BEGIN PGP PUBLIC KEY BLOCK-----

        mQINBGZ0ZXN0
        -----END PGP PUBLIC KEY BLOCK-----
packages:
  - hello
";
    let (code, out, err) = apply(&root, doc);
    assert_ne!(code, 0, "a ppa: source on Debian must fail:\n{out}\n{err}");
    let all = format!("{out}\n{err}");
    assert!(
        all.lines()
            .any(|l| l.contains("`deadsnakes.list`") && l.contains("ppa:deadsnakes/ppa")),
        "no line names the entry:\n{all}"
    );
    assert_eq!(
        dir_listing(&root, "etc/apt/sources.list.d"),
        sources_before,
        "sources.list.d changed"
    );
    assert_eq!(
        dir_listing(&root, "etc/apt/trusted.gpg.d"),
        keys_before,
        "trusted.gpg.d changed"
    );
    // The later package step did not run (fail-fast), and apt is intact.
    assert!(!root.path().join("usr/bin/hello").exists());
    assert_apt_works(&root);
}
