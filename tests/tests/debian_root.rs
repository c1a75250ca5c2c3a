//! Cairn against a real Debian root (mmdebstrap, cached), with Debian's own cloud-init in a
//! twin root as the reference: real apt, real shadow-utils, real update-ca-certificates.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use cairn_tests::{agent, rows, DebianRoot};

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

/// The users/groups document both sides apply.
const USERS_DOC: &str = r#"#cloud-config
groups:
  - admingroup: [root, sys]
  - cloud-users
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
"#;

#[test]
fn users_and_groups_match_cloud_init_field_by_field() {
    let cairn = DebianRoot::new().unwrap();
    let reference = DebianRoot::new().unwrap();
    let (code, out, err) = apply(&cairn, USERS_DOC);
    assert_eq!(code, 0, "cairn apply failed:\n{out}\n{err}");
    reference.cloud_init(USERS_DOC, "users_groups").unwrap();

    let users = [
        "foobar",
        "barfoo",
        "testuser",
        "cloudy",
        "fizzbuzz",
        "lockedhash",
    ];
    let groups = [
        "admingroup",
        "cloud-users",
        "foobar",
        "barfoo",
        "testuser",
        "cloudy",
        "fizzbuzz",
        "lockedhash",
        "users",
        "admin",
    ];
    for (file, names) in [
        ("etc/passwd", &users[..]),
        ("etc/shadow", &users[..]),
        ("etc/group", &groups[..]),
        ("etc/gshadow", &groups[..]),
    ] {
        let ours = rows(&cairn.read(file).unwrap());
        let theirs = rows(&reference.read(file).unwrap());
        for name in names {
            assert_eq!(
                ours.get(*name),
                theirs.get(*name),
                "{file}: row for `{name}` differs (left Cairn, right cloud-init)"
            );
        }
        // Nothing else was added by one side only.
        let ours_extra: Vec<_> = ours.keys().filter(|k| !theirs.contains_key(*k)).collect();
        let theirs_extra: Vec<_> = theirs.keys().filter(|k| !ours.contains_key(*k)).collect();
        assert!(
            ours_extra.is_empty() && theirs_extra.is_empty(),
            "{file}: only Cairn: {ours_extra:?}; only cloud-init: {theirs_extra:?}"
        );
    }
    // Homes populated from /etc/skel on both sides; system user without one.
    for root in [&cairn, &reference] {
        assert!(root.path().join("home/foobar/.bashrc").exists());
        assert!(root.path().join("local/testdir/.bashrc").exists());
        assert!(!root.path().join("home/cloudy").exists());
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
    assert_eq!(
        std::fs::read_to_string(&keys).unwrap().trim(),
        reference
            .read("home/barfoo/.ssh/authorized_keys")
            .unwrap()
            .trim()
    );
    // Sudo rules: both grant the same rule; Cairn's drop-in passes visudo.
    let sudo = cairn.read("etc/sudoers.d/90-cairn-barfoo").unwrap();
    assert!(sudo.contains("barfoo ALL=(ALL) NOPASSWD:ALL"), "{sudo}");
    assert!(reference
        .read("etc/sudoers.d/90-cloud-init-users")
        .unwrap()
        .contains("barfoo ALL=(ALL) NOPASSWD:ALL"));
    cairn.chroot(&["visudo", "-c"]).unwrap();
    // And a second apply changes nothing.
    let (code, out, _) = apply(&cairn, USERS_DOC);
    assert_eq!(code, 0);
    assert!(out.contains("0 step(s) changed"), "{out}");
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
